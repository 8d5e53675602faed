"""The fitter's contract (issue 28): one-line errors for bad input, convergence reported,
one compilation per problem shape, unidentified parameters never shown as numbers, and
prediction checks of every fit, in the report too. Pure numpy/JAX on synthetic data."""

import html
import json

import jax
import numpy as np
import pytest

from analysis import fit, predict, report, template
from tinyscale import cli
from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError

SIZES = np.geomspace(1e4, 1e7, 12)


def _law(n, e=1.5, a=40.0, alpha=0.3, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return (e + a * np.asarray(n) ** -alpha) * np.exp(rng.normal(0, noise, np.size(n)))


@pytest.mark.parametrize("change, says", [
    ({"loss": np.r_[_law(SIZES)[:-1], np.nan]}, "loss[11] is nan"),
    ({"loss": np.r_[np.inf, _law(SIZES)[1:]]}, "loss[0] is inf"),
    ({"params_n": np.r_[0.0, SIZES[1:]]}, "params_n[0] is 0"),
    ({"loss": -_law(SIZES)}, "12 of 12 values are not finite and positive"),
    ({"loss": _law(SIZES)[:-1]}, "params_n has 12, loss has 11 values"),
    ({"params_n": SIZES[:4], "loss": _law(SIZES)[:4]}, "4 points for the 3 parameters"),
    ({"bootstrap": 1}, "bootstrap = 1 resamples"),
    ({"bootstrap": 99}, "at least 100"),
])
def test_bad_input_is_refused_in_one_line(change, says):
    args = {"params_n": SIZES, "loss": _law(SIZES), "bootstrap": 100} | change
    with pytest.raises(fit.FitInputError) as error:
        fit.fit_power_law(**args)
    message = str(error.value)
    assert says in message and "\n" not in message and "diverged" not in message
    assert isinstance(error.value, ValueError) and isinstance(error.value, TinyscaleError)


def test_bad_input_to_l_of_n_and_d_and_to_analyze(capsys):
    with pytest.raises(fit.FitInputError, match="tokens_d has 11"):
        fit.fit_chinchilla(SIZES, SIZES[:-1], _law(SIZES))
    with pytest.raises(fit.FitInputError, match="6 points for the 5 parameters of L"):
        fit.fit_chinchilla(SIZES[:6], SIZES[:6], _law(SIZES[:6]))
    # the CLI: one line, exit 2, before reading the sweep
    assert cli.main(["analyze", "/nonexistent/sweep", "--bootstrap", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinyscale: error: bootstrap = 50") and "\n" not in err


def test_the_tied_law_fits_one_exponent_for_n_and_d():
    """L(N, D) with alpha = beta: recovered within its interval; the Fit carries beta = alpha
    (law() and the report read it); 5 points are too few for its 4 parameters."""
    n, d = np.meshgrid(np.geomspace(1e7, 4e8, 4), np.geomspace(20, 640, 3))
    n, d = n.ravel(), (n * d).ravel()  # tokens per parameter 20-640, as Gadre et al. sweep
    rng = np.random.default_rng(0)
    loss = (1.8 + 150 / n**0.27 + 280 / d**0.27) * np.exp(rng.normal(0, 0.003, n.size))
    result = fit.fit_chinchilla(n, d, loss, bootstrap=100, tied=True)
    assert set(result.params) == {"E", "A", "B", "alpha", "beta"}
    assert result.params["beta"] == result.params["alpha"]
    assert [s["beta"] for s in result.samples] == [s["alpha"] for s in result.samples]
    lo, hi = result.intervals["alpha"]
    assert lo <= 0.27 <= hi and abs(result.params["alpha"] - 0.27) < 0.03, result.params
    assert result.convergence.ok, result.convergence.describe()
    assert result.predict(1e9, 2e10) == pytest.approx(1.8 + 150 / 1e9**0.27 + 280 / 2e10**0.27,
                                                      rel=0.01)
    with pytest.raises(fit.FitInputError, match="5 points for the 4 parameters of L"):
        fit.fit_chinchilla(n[:5], d[:5], loss[:5], tied=True)


def _compilations(call):
    """How many programs JAX traced while `call()` ran (a jit cache miss traces)."""
    seen = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            seen.append(event)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        call()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return len(seen)


def test_a_second_fit_of_the_same_shape_compiles_nothing():
    fit.fit_power_law(SIZES, _law(SIZES), bootstrap=100)  # compiles (or finds) its programs
    solved = fit._solve._cache_size()
    assert _compilations(lambda: fit.fit_power_law(SIZES, _law(SIZES, seed=1) * 1.1,
                                                   bootstrap=100)) == 0
    # fewer points (padded to the same 16) and another bootstrap reuse the programs too
    assert _compilations(lambda: fit.fit_power_law(SIZES[:-2], _law(SIZES[:-2]),
                                                   bootstrap=250)) == 0
    assert fit._solve._cache_size() == solved


def test_a_well_posed_fit_converges_and_is_identified():
    result = fit.fit_power_law(SIZES, _law(SIZES), bootstrap=200)
    c = result.convergence
    assert c.status == "converged" and c.gradient_norm <= fit.GRAD_TOL and c.ok
    assert c.restarts_agree == c.restarts == fit.RESTARTS
    assert c.bootstrap == 200 and c.bootstrap_converged >= 190
    assert result.identified, result.not_identified
    lo, hi = result.intervals["alpha"]
    assert result.describe("alpha") == f"{result.params['alpha']:.3g} ({lo:.3g}–{hi:.3g})"
    assert "converged after" in c.describe() and "of 200 resamples converged" in c.describe()


def test_unidentified_parameters_say_why_and_show_no_number():
    # no irreducible loss: E runs to its bound 0
    pure = fit.fit_power_law(SIZES, _law(SIZES, e=0.0, noise=0.0), bootstrap=100)
    assert "E" in pure.not_identified and "lower bound" in pure.not_identified["E"]
    assert pure.describe("E").startswith("not identified: ") and not pure.identified
    # four sizes over one decade, 5% noise: the quickstart's case
    few = np.repeat(np.geomspace(2e4, 2e5, 4), 2)
    loose = fit.fit_power_law(few, _law(few, e=1.2, a=30, noise=0.05, seed=3), bootstrap=100)
    assert {"alpha", "E"} & set(loose.not_identified), (loose.params, loose.intervals)
    for name, why in loose.not_identified.items():
        assert loose.describe(name) == f"not identified: {why}"
        assert f"{loose.params[name]:.3g} (" not in loose.describe(name)
    # no bootstrap: no interval to judge by, so nothing is shown as identified
    assert set(fit.fit_power_law(SIZES, _law(SIZES), bootstrap=0).not_identified) == \
        {"E", "A", "alpha"}


def test_prediction_checks_of_l_of_n_and_of_l_of_n_and_d():
    loss = _law(SIZES)
    loss[-1] = 1.5 + 40 * 1e7 ** -0.3  # the held-out size measured without noise
    check = predict.power_law("all", SIZES, loss, bootstrap=200)
    assert check.held_out.startswith("N = 10,000,000") and check.inside, check
    assert abs(check.predicted - loss[-1]) < 0.05
    # a law that bends after the sizes fitted: the held-out size falls outside
    bent = _law(SIZES, noise=0.002)
    bent[-1] *= 1.3
    assert predict.power_law("all", SIZES, bent, bootstrap=200).inside is False
    few = predict.power_law("all", SIZES[:5], _law(SIZES[:5]), bootstrap=200)
    assert few.predicted is None and "too few points left: 4" in few.note
    n, d = np.meshgrid(np.geomspace(2e4, 8e5, 4), np.geomspace(3e6, 3e7, 3))
    n, d = n.ravel(), d.ravel()
    rng = np.random.default_rng(0)
    loss = (1.8 + 400 / n**0.35 + 900 / d**0.3) * np.exp(rng.normal(0, 0.005, n.size))
    largest = np.argmax(n * d)  # measured without noise
    loss[largest] = 1.8 + 400 / n[largest]**0.35 + 900 / d[largest]**0.3
    [check] = predict.chinchilla(n, d, loss, bootstrap=200)
    assert check.held_out.startswith("C = 6ND") and check.inside, check
    assert check.measured == pytest.approx(loss[np.argmax(n * d)])


def test_prediction_check_of_an_emergence_curve():
    params = np.geomspace(1e4, 1e6, 7)
    values = 1 / (1 + np.exp(-4 * (np.log10(params) - 5)))
    noisy = values + np.random.default_rng(0).normal(0, 0.02, values.size)
    check = predict.logistic("coherence, all depths", params, noisy, bootstrap=200)
    assert check.measured == pytest.approx(noisy[-1])
    assert abs(check.predicted - values[-1]) < 0.05
    assert check.interval[0] <= check.predicted <= check.interval[1]
    few = predict.logistic("coherence", params[:4], values[:4], bootstrap=200)
    assert few.predicted is None and "too few cells left: 3" in few.note


def _sweep(root, widths):
    """A finished sweep, one run per width at depth 1: held-out loss on a power law in
    the parameters, coherence rising with them."""
    record = {"spec": "x.py", "runs": []}
    for i, width in enumerate(widths):
        c = config_lib.get_config()
        c.model.update(d_model=width, n_layers=1, n_heads=max(1, width // 16))
        name = f"d{width}"
        record["runs"].append({"index": i, "name": name, "config": c.to_dict()})
        run = root / "runs" / name
        run.mkdir(parents=True)
        (run / "state.json").write_text(json.dumps({"state": "done", "attempts": 1}))
        loss = 1.2 + 2.0 * (width / 16) ** -0.8 * (1 + 0.01 * (-1) ** i)
        (run / "metrics.jsonl").write_text(json.dumps(
            {"step": 100, "tokens": 2e5, "train_loss": loss, "eval_loss": loss}) + "\n")
        coherence = float(1 / (1 + np.exp(-(width - 48) / 10)))
        (run / "eval.json").write_text(json.dumps({
            "loss": loss, "coherence": coherence, "coherence_se": 0.02}))
    (root / "sweep.json").write_text(json.dumps(record))
    return root


def test_the_report_has_a_prediction_panel_and_marks_what_it_cannot_fit(tmp_path):
    r = report.compute(str(_sweep(tmp_path / "six", (16, 24, 32, 48, 64, 96))),
                       bootstrap=100)
    rows = r.predictions.set_index("fit")
    assert list(r.predictions.columns[:6]) == ["fit", "held out", "predicted",
                                               "95% interval", "measured", "inside?"]
    assert rows.loc["L(N), all", "held out"].startswith("N = ")
    assert np.isfinite(rows.loc["L(N), all", "predicted"])
    assert "emergence: coherence, all depths" in rows.index
    page = template.page(r, [], [])
    panel = page[page.index("<h2>Prediction check"):page.index("<h2>Emergence")]
    assert html.escape(predict.summary(r.predictions)) in panel and "L(N), all" in panel
    # four runs: no L(N) fit (3 parameters need 5 points), no prediction; both said
    small = report.compute(str(_sweep(tmp_path / "four", (16, 32, 64, 96))), bootstrap=100)
    assert small.fit_results == {}
    assert small.fits.loc[0, "α"] == "not identified: 4 runs for 3 parameters (5 needed)"
    assert "too few points left" in small.predictions.set_index("fit").loc[
        "L(N), all", "note"]
    assert "checks have too few points left" in template.page(small, [], [])
