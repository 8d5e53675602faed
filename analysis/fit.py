"""Scaling-law fits: L(N) = E + A N^-alpha, and L(N, D) = E + A/N^alpha + B/D^beta.
Over 300 lines: the fit, its input checks, its convergence and its identification read
together (one Fit record carries all three).

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

Compiled once per problem shape: the points are padded to the next power of two (the
padding weighs 0) and starts are solved ROWS at a time (the grid's survivors, then the
resamples in blocks of ROWS), so every fit of one law with up to 2^k points, whatever
its bootstrap, runs the same two programs: the grid's screen and the ROWS-start solve.

A fit says how it converged (`Convergence`: the optimizer's status, the final gradient
norm, whether the best restarts agree) and which parameters the data do not identify
(`Fit.not_identified`, with the reason): a 95% interval of A, B or E spanning more than
a decade; an exponent whose interval reaches 0 or, applied across the measured range of
N (or D), moves the power-law term by more than a factor of 10 (the same decade rule,
read where the exponent acts); E at a bound (below E_FLOOR of the smallest loss, or above
the smallest loss); fewer than 3 distinct sizes (budgets) for an exponent; equally good
optima at different values. Bad input is refused with `FitInputError`, one sentence.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from tinyscale.errors import TinyscaleError

DELTA = 1e-3
# Besiroglu et al.'s grid of starts: alpha, beta in {0, .5, .., 2}; e in {-1, -.5, .., 1};
# a, b in {0, 5, .., 25}.
GRID = {"a": np.arange(0, 26, 5.0), "b": np.arange(0, 26, 5.0), "e": np.arange(-1, 1.01, 0.5),
        "alpha": np.arange(0, 2.01, 0.5), "beta": np.arange(0, 2.01, 0.5)}
MIN_BOOTSTRAP = 100  # fewer resamples cannot place a 2.5th / 97.5th percentile
DECADE = 10.0        # an interval wider than this factor: the parameter is not identified
E_FLOOR = 1e-3       # E below this share of the smallest loss: at its bound, 0
SAME = 1e-6          # optima within this relative objective are equally good
AGREE_TOL = 1e-3     # ... and agree when their log-coefficients and exponents are this close
RESTARTS = 5         # the best restarts compared


class FitInputError(TinyscaleError, ValueError):
    """Input a fit cannot use: one sentence naming the argument and the fix."""


def _huber(r):
    a = jnp.abs(r)
    return jnp.where(a <= DELTA, 0.5 * r**2, DELTA * (a - 0.5 * DELTA))


def _objective_nd(theta, log_n, log_d, log_loss, weight):
    a, b, e, alpha, beta = theta
    pred = jax.nn.logsumexp(jnp.stack([a - alpha * log_n, b - beta * log_d,
                                       jnp.full_like(log_n, e)]), axis=0)
    return jnp.sum(weight * _huber(pred - log_loss))


def _objective_tied(theta, log_n, log_d, log_loss, weight):
    a, b, e, alpha = theta
    return _objective_nd(jnp.stack([a, b, e, alpha, alpha]), log_n, log_d, log_loss, weight)


def _objective_n(theta, log_n, log_d, log_loss, weight):
    a, e, alpha = theta
    pred = jnp.logaddexp(a - alpha * log_n, e)
    return jnp.sum(weight * _huber(pred - log_loss))


MAX_ITER = 1000     # Newton steps per start (a far start on Chinchilla's data needs ~300)
GRAD_TOL = 1e-10
MAX_DAMPING = 1e12  # no step this short lowers the objective: stalled
SCREEN_ITER, ROWS = 30, 64  # the grid: every start for 30 steps, the best ROWS to the end
STATUS = ("converged", "iteration cap", "stalled")


def _newton(objective, x0, data, weight, max_iter):
    """Levenberg-Marquardt from `x0`: solve (H + lam I) step = -g, keep the step only if the
    objective falls (then lam shrinks), else grow lam. Stops at `max_iter`, a tiny
    gradient or a damping so large no step is left; (x, f, steps, |g|, lam)."""
    f = lambda x: objective(x, *data, weight)  # noqa: E731
    grad, hess, eye = jax.grad(f), jax.hessian(f), jnp.eye(x0.shape[0])

    def cond(state):
        i, _, _, g, lam = state
        return (i < max_iter) & (jnp.linalg.norm(g) > GRAD_TOL) & (lam < MAX_DAMPING)

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
    i, x, fx, g, lam = jax.lax.while_loop(cond, body, init)
    return x, fx, i, jnp.linalg.norm(g), lam


@functools.partial(jax.jit, static_argnums=(0, 4))
def _solve(objective, starts, data, weights, max_iter):
    """Newton from each start (rows of `starts`) with per-start point weights, all at once.
    Compiled once per objective, shape and iteration cap: the data are arguments."""
    return jax.vmap(lambda x0, w: _newton(objective, x0, data, w, max_iter))(starts, weights)


def _status(steps, grad_norm, damping, max_iter) -> np.ndarray:
    """Per start: 0 converged (tiny gradient), 1 hit the iteration cap, 2 stalled."""
    return np.where(grad_norm <= GRAD_TOL, 0, np.where(damping >= MAX_DAMPING, 2,
                                                        np.where(steps >= max_iter, 1, 2)))


def _solve_rows(objective, starts, data, weights):
    """`_solve` to convergence in blocks of ROWS starts (the last padded with starts of
    zero weight, which stop at once): one program for any number of starts."""
    out = []
    for i in range(0, len(starts), ROWS):
        x0, w = starts[i:i + ROWS], weights[i:i + ROWS]
        pad = ROWS - len(x0)
        x0 = np.concatenate([x0, np.repeat(x0[:1], pad, 0)])
        w = np.concatenate([w, np.zeros((pad, w.shape[1]))])
        result = _solve(objective, x0, data, w, MAX_ITER)
        out.append([np.asarray(r)[:ROWS - pad] for r in result])
    x, fx, steps, grad_norm, damping = (np.concatenate(c) for c in zip(*out))
    return x, fx, _status(steps, grad_norm, damping, MAX_ITER), steps, grad_norm


@dataclasses.dataclass
class Convergence:
    status: str             # the best start's: converged | iteration cap | stalled
    steps: int              # its Newton steps
    gradient_norm: float    # |gradient| of the objective at the optimum
    restarts_agree: int     # of the best RESTARTS optima, those at the best one (itself too)
    restarts: int           # how many were compared
    bootstrap_converged: int = 0  # resamples whose fit converged
    bootstrap: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "converged" and self.restarts_agree >= min(2, self.restarts)

    def describe(self) -> str:
        text = (f"{self.status} after {self.steps} Newton steps (gradient norm "
                f"{self.gradient_norm:.1e}); {self.restarts_agree} of the best {self.restarts} "
                "restarts agree on the optimum")
        if self.bootstrap:
            text += f"; {self.bootstrap_converged} of {self.bootstrap} resamples converged"
        return text


@dataclasses.dataclass
class Fit:
    params: dict[str, float]           # E, A, B, alpha, beta (or E, A, alpha)
    intervals: dict[str, tuple]        # 95% bootstrap intervals (2.5, 97.5 percentiles)
    std_errors: dict[str, float]       # bootstrap standard deviations
    n_points: int
    loss: float                        # the objective at the optimum
    samples: list = dataclasses.field(default_factory=list)  # the bootstrap fits' params
    convergence: Convergence | None = None
    not_identified: dict[str, str] = dataclasses.field(default_factory=dict)  # name: why

    @property
    def identified(self) -> bool:
        return not self.not_identified

    def predict(self, params_n, tokens_d=None):
        return law(self.params, params_n, tokens_d)

    def predict_samples(self, params_n, tokens_d=None) -> np.ndarray:
        """The law at (N, D) for every bootstrap fit: rows are resamples."""
        with np.errstate(over="ignore", invalid="ignore"):
            return np.array([law(s, params_n, tokens_d) for s in self.samples])

    def describe(self, name: str, digits: int = 3) -> str:
        """'0.348 (0.33–0.37)', or 'not identified: <reason>': never a number for a
        parameter the data do not identify."""
        if name in self.not_identified:
            return f"not identified: {self.not_identified[name]}"
        text = f"{self.params[name]:.{digits}g}"
        if name in self.intervals:
            text += " ({:.{d}g}–{:.{d}g})".format(*self.intervals[name], d=digits)
        return text


def law(p: dict, params_n, tokens_d=None):
    """E + A/N^alpha (+ B/D^beta) for the parameters `p`."""
    out = p["E"] + p["A"] / np.asarray(params_n, float) ** p["alpha"]
    if "B" in p and tokens_d is not None:
        out = out + p["B"] / np.asarray(tokens_d, float) ** p["beta"]
    return out


def _check(columns: dict, n_params: int, bootstrap, law_name: str) -> int:
    """The number of points, or FitInputError naming what is wrong with the input."""
    lengths = {k: np.size(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        said = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise FitInputError(f"{said} values: pass one value per run to each.")
    for name, values in columns.items():
        try:
            v = np.asarray(values, float).ravel()
        except (TypeError, ValueError):
            raise FitInputError(f"{name} holds values that are not numbers: pass numbers "
                                "only.") from None
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise FitInputError(
                f"{name}[{i}] is {v[i]:g} ({int(bad.sum())} of {v.size} values are not finite "
                f"and positive): drop those runs before fitting (the law is fitted in logs).")
    n = next(iter(lengths.values()))
    if n < n_params + 2:
        raise FitInputError(f"{n} points for the {n_params} parameters of {law_name}: a fit "
                            f"needs at least {n_params + 2}; add runs.")
    check_bootstrap(bootstrap)
    return n


def check_bootstrap(bootstrap) -> None:
    """FitInputError unless `bootstrap` is 0 (no intervals) or >= MIN_BOOTSTRAP."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or \
            bootstrap < 0 or 0 < bootstrap < MIN_BOOTSTRAP:
        raise FitInputError(f"bootstrap = {bootstrap!r} resamples cannot place a 95% "
                            f"interval: use 0 (no intervals) or at least {MIN_BOOTSTRAP}.")


def _padded(columns, n):
    """The columns padded with zeros to the next power of two (>= 8), and the weights that
    keep the padding out of the objective."""
    size = max(8, 1 << (n - 1).bit_length())
    mask = np.zeros(size)
    mask[:n] = 1.0
    return tuple(jnp.asarray(np.pad(c, (0, size - n))) for c in columns), mask


def _fit(kind, log_n, log_d, log_loss, bootstrap, seed, starts):
    objective = {"nd": _objective_nd, "tied": _objective_tied, "n": _objective_n}[kind]
    n = len(log_loss)
    data, mask = _padded((log_n, log_d, log_loss), n)
    x, values, *_ = _solve(objective, jnp.asarray(starts), data,
                           jnp.asarray(np.broadcast_to(mask, (len(starts), len(mask)))),
                           SCREEN_ITER)
    values = np.asarray(values)
    keep = np.argsort(np.where(np.isfinite(values), values, np.inf))[:ROWS]
    x, values, status, steps, grad_norm = _solve_rows(
        objective, np.asarray(x)[keep], data, np.broadcast_to(mask, (len(keep), len(mask))))
    values = np.where(np.isfinite(values) & np.isfinite(x).all(1), values, np.inf)
    if not np.isfinite(values).any():
        raise FloatingPointError("the scaling-law fit diverged from every starting point")
    order = np.argsort(values)
    best = order[0]
    top = [i for i in order[:RESTARTS] if np.isfinite(values[i])]
    same = [i for i in order if values[i] <= values[best] + SAME * max(abs(values[best]), 1e-12)]
    agree = sum(np.max(np.abs(x[i] - x[best])) <= AGREE_TOL for i in top
                if i in same)
    convergence = Convergence(STATUS[status[best]], int(steps[best]), float(grad_norm[best]),
                              int(agree), len(top))
    if not bootstrap:
        return x[best], np.zeros((0, x.shape[1])), float(values[best]), convergence, x[same]
    rng = np.random.default_rng(seed)
    # a resample is a multiset of the points: weight i = how often point i was drawn
    draws = rng.integers(0, n, (bootstrap, n))
    weights = np.zeros((bootstrap, len(mask)))
    for row, drawn in zip(weights, draws):
        row[:n] = np.bincount(drawn, minlength=n)
    boot, _, boot_status, *_ = _solve_rows(objective, np.broadcast_to(x[best], (bootstrap,
                                                                               x.shape[1])),
                                           data, weights)
    convergence.bootstrap, convergence.bootstrap_converged = bootstrap, int(
        (boot_status == 0).sum())
    return x[best], boot, float(values[best]), convergence, x[same]


def _natural(names, theta) -> dict:
    out = dict(zip(names, theta, strict=True))
    for log_name, name in (("a", "A"), ("b", "B"), ("e", "E")):
        if log_name in out:
            out[name] = np.exp(out.pop(log_name))
    if "B" in out and "beta" not in out:  # the tied law: one exponent for N and D
        out["beta"] = out["alpha"]
    return out


SYMBOL = {"alpha": ("α", "N"), "beta": ("β", "D")}


def _identify(fit: Fit, equal_optima: list[dict], ranges: dict, min_loss: float,
              bootstrap: int) -> dict[str, str]:
    """{parameter: why the data do not identify it} (the rules: the module's docstring)."""
    reasons = {}
    for name, value in fit.params.items():
        why = []
        if name in SYMBOL:
            symbol, axis = SYMBOL[name]
            lo_x, hi_x = ranges[axis]
            distinct = ranges[f"{axis} values"]
            if distinct < 3:
                why.append(f"{distinct} distinct {axis} values fit no exponent (3 needed)")
        if not bootstrap:
            why.append("no bootstrap interval (bootstrap = 0)")
        elif name not in fit.intervals:
            why.append("no resample gave a finite fit")
        else:
            lo, hi = fit.intervals[name]
            span = f"95% interval {lo:.3g}–{hi:.3g}"
            if name not in SYMBOL and (lo <= 0 or hi > DECADE * lo):
                why.append(f"{span} spans more than a decade")
            elif name in SYMBOL and lo <= 0:
                why.append(f"{span} reaches 0")
            elif name in SYMBOL and (hi - lo) * np.log10(hi_x / lo_x) > np.log10(DECADE):
                why.append(f"{span} moves {axis}^-{symbol} by more than {DECADE:g}x across "
                           f"the measured {axis} ({lo_x:.3g}–{hi_x:.3g})")
        if name == "E" and value < E_FLOOR * min_loss:
            why.append(f"E = {value:.2g} is at its lower bound, 0")
        elif name == "E" and value >= min_loss:
            why.append(f"E = {value:.3g} is above the smallest measured loss {min_loss:.3g}")
        spread = [o[name] for o in equal_optima]
        # as the restarts are compared: exponents absolutely, coefficients in logs
        differ = (max(spread) - min(spread) if name in SYMBOL else
                  np.log(max(spread) / min(spread))) if len(spread) > 1 else 0.0
        if differ > AGREE_TOL:
            why.append(f"equally good optima from {min(spread):.3g} to {max(spread):.3g}")
        if why:
            reasons[name] = "; ".join(why)
    return reasons


def _package(names, n, best, boot, loss, convergence, optima, ranges, min_loss,
             bootstrap) -> Fit:
    params = {k: float(v) for k, v in _natural(names, best).items()}
    with np.errstate(over="ignore"):  # exp of a far resample's log-coefficient
        samples = [s for s in (_natural(names, t) for t in boot if np.all(np.isfinite(t)))
                   if all(np.isfinite(v) for v in s.values())]
        equal = [_natural(names, t) for t in optima]
    intervals = {k: tuple(np.percentile([s[k] for s in samples], [2.5, 97.5]))
                 for k in params} if samples else {}
    errors = {k: float(np.std([s[k] for s in samples], ddof=1)) for k in params} \
        if len(samples) > 1 else {}
    fit = Fit(params, intervals, errors, n, loss, samples, convergence)
    fit.not_identified = _identify(fit, equal, ranges, min_loss, bootstrap)
    return fit


def _ranges(**columns) -> dict:
    out = {}
    for axis, v in columns.items():
        v = np.asarray(v, float)
        out[axis] = (float(v.min()), float(v.max()))
        out[f"{axis} values"] = len(np.unique(v))
    return out


def fit_chinchilla(params_n, tokens_d, loss, bootstrap: int = 1000, seed: int = 0,
                   tied: bool = False) -> Fit:
    """L(N, D) = E + A/N^alpha + B/D^beta on every (N, D, loss) point; `tied=True` fits one
    exponent for both, alpha = beta (as Muennighoff et al. 2023 and Gadre et al. 2024 do),
    from the same grid less its beta axis; its Fit still carries beta (= alpha)."""
    names = ["a", "b", "e", "alpha"] + ([] if tied else ["beta"])
    n = _check({"params_n": params_n, "tokens_d": tokens_d, "loss": loss}, len(names),
               bootstrap, "L(N, D) with alpha = beta" if tied else "L(N, D)")
    params_n, tokens_d, loss = (np.asarray(v, float).ravel()
                                for v in (params_n, tokens_d, loss))
    with jax.enable_x64(True):
        starts = np.array(list(itertools.product(*(GRID[k] for k in names))))
        result = _fit("tied" if tied else "nd", np.log(params_n), np.log(tokens_d),
                      np.log(loss), bootstrap, seed, starts)
    return _package(names, n, *result, _ranges(N=params_n, D=tokens_d), float(loss.min()),
                    bootstrap)


def fit_power_law(params_n, loss, bootstrap: int = 1000, seed: int = 0) -> Fit:
    """L(N) = E + A N^-alpha on final losses (one point per run)."""
    n = _check({"params_n": params_n, "loss": loss}, 3, bootstrap, "L(N)")
    params_n, loss = (np.asarray(v, float).ravel() for v in (params_n, loss))
    with jax.enable_x64(True):
        starts = np.array(list(itertools.product(GRID["a"], np.arange(-1, 1.01, 0.5),
                                                 GRID["alpha"])))
        log_n = np.log(params_n)
        result = _fit("n", log_n, np.zeros_like(log_n), np.log(loss), bootstrap, seed,
                      starts)
    return _package(["a", "e", "alpha"], n, *result, _ranges(N=params_n), float(loss.min()),
                    bootstrap)
