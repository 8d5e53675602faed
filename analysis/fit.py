"""Scaling-law fits: L(N) = E + A N^-alpha, and L(N, D) = E + A/N^alpha + B/D^beta.

Both are fitted as Hoffmann et al. (2022) and Besiroglu et al. (2024) do: in log space
with the log-sum-exp form  log L = LSE(a - alpha log N, b - beta log D, e)  (A = e^a,
B = e^b, E = e^e), minimising the *summed* Huber loss (delta = 1e-3) of the log-loss
residuals from a grid of starting points, keeping the best. Confidence intervals come
from bootstrap resamples of the points, each started from the full-data optimum.

Where those papers run L-BFGS from each start in turn, every start (and every bootstrap
resample) here is solved at once: a damped Newton method (Levenberg-Marquardt on the exact
5x5 Hessian) under `jax.vmap`, in float64. On the Chinchilla data it reaches the same
optimum as scipy's L-BFGS-B and objectives no higher on resamples (tests/test_analysis.py);
`bench/fit.py` times it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

DELTA = 1e-3
# Besiroglu et al.'s grid of starts: alpha, beta in {0, .5, .., 2}; e in {-1, -.5, .., 1};
# a, b in {0, 5, .., 25}.
GRID = {"a": np.arange(0, 26, 5.0), "b": np.arange(0, 26, 5.0), "e": np.arange(-1, 1.01, 0.5),
        "alpha": np.arange(0, 2.01, 0.5), "beta": np.arange(0, 2.01, 0.5)}


def _huber(r):
    a = jnp.abs(r)
    return jnp.where(a <= DELTA, 0.5 * r**2, DELTA * (a - 0.5 * DELTA))


def _objective_nd(theta, log_n, log_d, log_loss, weight):
    a, b, e, alpha, beta = theta
    pred = jax.nn.logsumexp(jnp.stack([a - alpha * log_n, b - beta * log_d,
                                       jnp.full_like(log_n, e)]), axis=0)
    return jnp.sum(weight * _huber(pred - log_loss))


def _objective_n(theta, log_n, log_d, log_loss, weight):
    a, e, alpha = theta
    pred = jnp.logaddexp(a - alpha * log_n, e)
    return jnp.sum(weight * _huber(pred - log_loss))


MAX_ITER = 1000     # Newton steps per start (a far start on Chinchilla's data needs ~300)
GRAD_TOL = 1e-10
SCREEN_ITER, KEEP = 30, 64  # the grid: every start for 30 steps, the best 64 to the end


def _newton(objective, x0, data, weight, max_iter):
    """Levenberg-Marquardt from `x0`: solve (H + lam I) step = -g, keep the step only if the
    objective falls (then lam shrinks), else grow lam. Stops at MAX_ITER or a tiny gradient."""
    f = lambda x: objective(x, *data, weight)  # noqa: E731
    grad, hess, eye = jax.grad(f), jax.hessian(f), jnp.eye(x0.shape[0])

    def cond(state):
        i, _, _, g, lam = state
        return (i < max_iter) & (jnp.linalg.norm(g) > GRAD_TOL) & (lam < 1e12)

    def body(state):
        i, x, fx, g, lam = state
        trial = x + jnp.linalg.solve(hess(x) + lam * eye, -g)
        f_trial = f(trial)
        better = jnp.isfinite(f_trial) & (f_trial < fx)
        # the gradient is carried: evaluated once per accepted step, not again in cond
        g = jax.lax.cond(better, grad, lambda _: g, trial)
        return (i + 1, jnp.where(better, trial, x), jnp.where(better, f_trial, fx), g,
                jnp.where(better, lam * 0.3, lam * 10.0))

    init = (0, x0, f(x0), grad(x0), jnp.asarray(1e-3, x0.dtype))
    _, x, fx, _, _ = jax.lax.while_loop(cond, body, init)
    return x, fx


@functools.partial(jax.jit, static_argnums=(0, 4))
def _solve(objective, starts, data, weights, max_iter=MAX_ITER):
    """Newton from each start (rows of `starts`) with per-start point weights, all at once.
    Compiled once per objective, shape of the problem and iteration cap: the data are
    arguments, so a second fit of as many points reuses the program."""
    return jax.vmap(lambda x0, w: _newton(objective, x0, data, w, max_iter))(starts, weights)


@dataclasses.dataclass
class Fit:
    params: dict[str, float]           # E, A, B, alpha, beta (or E, A, alpha)
    intervals: dict[str, tuple]        # 95% bootstrap intervals (2.5, 97.5 percentiles)
    std_errors: dict[str, float]       # bootstrap standard deviations
    n_points: int
    loss: float                        # the objective at the optimum
    samples: list = dataclasses.field(default_factory=list)  # the bootstrap fits' params

    def predict(self, params_n, tokens_d=None):
        p = self.params
        out = p["E"] + p["A"] / np.asarray(params_n, float) ** p["alpha"]
        if "B" in p and tokens_d is not None:
            out = out + p["B"] / np.asarray(tokens_d, float) ** p["beta"]
        return out


def _grid_search(objective, starts, data, n):
    """Every start of the grid at once for a few steps, the most promising to convergence;
    the best finite optimum."""
    x, values = _solve(objective, jnp.asarray(starts), data, jnp.ones((len(starts), n)),
                       SCREEN_ITER)
    keep = np.argsort(np.where(np.isfinite(values), np.asarray(values), np.inf))[:KEEP]
    x, values = _solve(objective, x[keep], data, jnp.ones((len(keep), n)))
    values = np.where(np.isfinite(values), np.asarray(values), np.inf)
    if not np.isfinite(values).any():
        raise FloatingPointError("the scaling-law fit diverged from every starting point")
    best = int(np.argmin(values))
    return x[best], float(values[best])


def _fit(kind, log_n, log_d, log_loss, bootstrap, seed, starts):
    objective = _objective_nd if kind == "nd" else _objective_n
    data = tuple(jnp.asarray(x) for x in (log_n, log_d, log_loss))
    n = len(log_loss)
    best, value = _grid_search(objective, starts, data, n)
    if not bootstrap:
        return np.asarray(best), np.zeros((0, len(best))), float(value)
    rng = np.random.default_rng(seed)
    # a resample is a multiset of the points: weight i = how often point i was drawn
    draws = rng.integers(0, n, (bootstrap, n))
    weights = np.stack([np.bincount(row, minlength=n) for row in draws]).astype(float)
    boot, _ = _solve(objective, jnp.broadcast_to(best, (bootstrap, len(best))), data,
                     jnp.asarray(weights))
    return np.asarray(best), np.asarray(boot), float(value)


def _package(names, best, boot, n, loss) -> Fit:
    def natural(theta):
        out = dict(zip(names, theta, strict=True))
        for log_name, name in (("a", "A"), ("b", "B"), ("e", "E")):
            if log_name in out:
                out[name] = np.exp(out.pop(log_name))
        return out
    params = {k: float(v) for k, v in natural(best).items()}
    with np.errstate(over="ignore"):  # exp of a far resample's log-coefficient
        samples = [s for s in (natural(t) for t in boot if np.all(np.isfinite(t)))
                   if all(np.isfinite(v) for v in s.values())]
    intervals = {k: tuple(np.percentile([s[k] for s in samples], [2.5, 97.5]))
                 for k in params} if samples else {}
    errors = {k: float(np.std([s[k] for s in samples], ddof=1)) for k in params} \
        if len(samples) > 1 else {}
    return Fit(params, intervals, errors, n, loss, samples)


def fit_chinchilla(params_n, tokens_d, loss, bootstrap: int = 1000, seed: int = 0) -> Fit:
    """L(N, D) = E + A/N^alpha + B/D^beta on every (N, D, loss) point."""
    with jax.enable_x64(True):
        starts = np.array(list(itertools.product(*GRID.values())))
        best, boot, value = _fit("nd", np.log(params_n), np.log(tokens_d), np.log(loss),
                                 bootstrap, seed, starts)
    return _package(["a", "b", "e", "alpha", "beta"], best, boot, len(loss), value)


def fit_power_law(params_n, loss, bootstrap: int = 1000, seed: int = 0) -> Fit:
    """L(N) = E + A N^-alpha on final losses (one point per run)."""
    with jax.enable_x64(True):
        starts = np.array(list(itertools.product(GRID["a"], np.arange(-1, 1.01, 0.5),
                                                 GRID["alpha"])))
        log_n = np.log(np.asarray(params_n, float))
        best, boot, value = _fit("n", log_n, np.zeros_like(log_n), np.log(loss), bootstrap,
                                 seed, starts)
    return _package(["a", "e", "alpha"], best, boot, len(loss), value)
