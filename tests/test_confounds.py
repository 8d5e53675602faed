"""Confounds (analysis/confounds.py): N moving with D, with the learning rate, depth with
width -- detected, said, and emergence read at a fixed D. Run tables are built directly
(analysis.runs.load's columns), and once as a sweep directory for the report: no training."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import confounds, report, template


def sweep(tokens, lr=None, depth=None, every=250_000, seeds=(0, 1)):
    """(every eval row, the finished runs) of widths -> final token counts: held-out loss at
    each eval step, grammar at the end, emerging near N = 10^4.8 whatever D is."""
    rows = []
    for width, final_tokens in tokens.items():
        layers = (depth or {}).get(width, 2)
        n = 12 * layers * width * width + 512 * width
        steps = np.arange(every, final_tokens + 1, every)
        for seed in seeds:
            for d in steps:
                end = bool(d == steps[-1])
                row = {"run": f"d{width}-L{layers}-s{seed}", "width": width, "depth": layers,
                       "heads": 2, "params": n, "tokens": int(d), "flops": 6.0 * n * d,
                       "eval_loss": 1 + 3e3 / n ** 0.5 + 2e5 / d ** 0.7, "final": end,
                       "branch_of": None, "state": "done",
                       "train.lr": (lr or {}).get(width, 1e-2)}
                if end:
                    row["grammar"] = float(1 / (1 + np.exp(-(np.log10(n) - 4.8) * 6)))
                rows.append(row)
    df = pd.DataFrame(rows)
    return df, df[df["final"]].reset_index(drop=True)


GROWING = {16: 500_000, 32: 1_000_000, 64: 2_000_000, 96: 3_000_000}  # the quickstart's
FIXED = dict.fromkeys(GROWING, 1_000_000)


def test_tokens_growing_with_width_are_a_confound_and_emergence_is_read_at_one_d():
    df, final = sweep(GROWING)
    panel = confounds.compute(df, final, ["grammar", "eval_loss"], bootstrap=50)
    tokens = panel.tokens_confounded
    assert tokens is not None and tokens.rho == pytest.approx(1.0)
    line = panel.line()
    assert "D (tokens) rises with N (parameters)" in line and "ρ = +1.00" in line
    assert "also emergence by D" in line
    # held-out loss: every size has an eval at 500K tokens (the smallest size's end)
    assert panel.headline
    iso, at = panel.iso("eval_loss")
    assert at == 500_000 and iso.status == "crossed"
    reading = next(r for r in panel.readings if r.metric == "eval_loss")
    assert reading.measurements == 8 and reading.before_end == 6  # 2 runs end at 500K
    # grammar was evaluated only at each run's end: no common D, and the line says how
    assert panel.iso("grammar") == (None, None)
    assert "grammar: no token count at which every size was evaluated" in line


def test_a_fixed_token_budget_is_no_confound():
    df, final = sweep(FIXED)
    panel = confounds.compute(df, final, ["grammar", "eval_loss"], bootstrap=50)
    assert panel.confounds == [] and not panel.headline and panel.readings == []
    assert panel.line().startswith("No confound found across the 8 finished runs")
    assert "D (tokens) is fixed at 1,000,000" in panel.line()


def test_learning_rate_with_n_and_depth_with_width_are_detected():
    df, final = sweep(FIXED, lr={16: 3e-2, 32: 1e-2, 64: 5e-3, 96: 3e-3},
                      depth={16: 1, 32: 2, 64: 4, 96: 8})
    found = {(c.x, c.y): c for c in confounds.detect(final)[0]}
    assert set(found) == {("params", "train.lr"), ("width", "depth")}
    assert found["params", "train.lr"].rho == pytest.approx(-1.0)
    lr = found["params", "train.lr"].sentence()
    assert lr.startswith("The learning rate falls as N (parameters) grows") and \
        "ρ = -1.00" in lr and "0.03 at N = " in lr
    assert found["width", "depth"].sentence().startswith("Depth rises with width")
    # one learning rate for the widest only (2 distinct values): still set by N
    _, final = sweep(FIXED, lr={96: 5e-3})
    (lr_only,) = confounds.detect(final)[0]
    assert lr_only.y == "train.lr" and lr_only.function == "y of x"


def test_a_grid_and_a_budgets_sweep_are_clear():
    """Every width at every depth, and every size at several budgets: nothing moves with N."""
    _, final = sweep({16: 1_000_000, 32: 1_000_000}, depth={16: 1, 32: 1})
    _, deep_final = sweep({16: 1_000_000, 32: 1_000_000}, depth={16: 4, 32: 4})
    grid = pd.concat([final, deep_final], ignore_index=True)
    assert confounds.detect(grid)[0] == []
    rows = [sweep({w: t}, seeds=(s,))[1].assign(run=f"d{w}-{t}-s{s}")
            for w in (16, 32, 64) for t in (500_000, 1_000_000) for s in (0, 1)]
    budgets = pd.concat(rows, ignore_index=True)
    assert confounds.detect(budgets)[0] == []


def test_emergence_along_the_frontier_with_budgets():
    """Three sizes at three budgets each (branches of one run): the frontier's cells and the
    metric's crossing along them."""
    finals = []
    for width, n in ((16, 2e4), (32, 6e4), (64, 2e5)):
        for tokens in (250_000, 500_000, 1_000_000):
            loss = 1 + 50 / n ** 0.3 + 300 / tokens ** 0.4
            finals.append({"run": f"d{width}" + ("" if tokens == 1_000_000 else
                                                 f"/branches/{tokens}"),
                           "branch_of": None if tokens == 1_000_000 else f"d{width}",
                           "width": width, "depth": 2, "heads": 2, "params": n,
                           "tokens": tokens, "flops": 6 * n * tokens, "eval_loss": loss,
                           "grammar": float(1 / (1 + np.exp(-(np.log10(n) - 4.8) * 6))),
                           "final": True,
                           "state": "done", "flops_per_token": 6 * n, "trained_flops": 0.0})
    everything = pd.DataFrame(finals)
    final = everything[everything["branch_of"].isna()]
    panel = confounds.compute(everything, final, ["grammar"], bootstrap=50)
    cells = panel.frontier
    assert len(cells) >= 3 and cells["eval_loss"].is_monotonic_decreasing
    assert cells["flops"].is_monotonic_increasing
    (along,) = panel.along_frontier
    assert along.family == "frontier" and along.metric == "grammar"
    assert along.status == "crossed" and 3e4 < along.params < 1.2e5  # 10^4.8 = 63,000


def write_sweep(root, tokens):
    """A sweep directory (sweep.json, runs/*) whose runs end at `tokens` by width."""
    from tinyscale import config as config_lib
    record = {"spec": "x.py", "runs": []}
    for i, (width, final_tokens) in enumerate(tokens.items()):
        c = config_lib.get_config()
        c.model.update(d_model=width, n_layers=2, n_heads=2)
        c.train.update(batch_size=8, seq_len=256)
        name = f"d{width}"
        record["runs"].append({"index": i, "name": name, "config": c.to_dict()})
        run = root / "runs" / name
        run.mkdir(parents=True)
        (run / "state.json").write_text(json.dumps({"state": "done", "attempts": 1}))
        per_step = 8 * 256
        steps = range(100, final_tokens // per_step + 1, 100)
        (run / "metrics.jsonl").write_text("".join(json.dumps(
            {"step": s, "tokens": s * per_step, "train_loss": 3.0,
             "eval_loss": 1 + 30 / width + 3e4 / (s * per_step) ** 0.7}) + "\n"
            for s in steps))
        coherence = float(1 / (1 + np.exp(-(width - 40) / 8)))
        (run / "eval.json").write_text(json.dumps({"grammar": coherence,
                                                   "coherence": coherence}))
    (root / "sweep.json").write_text(json.dumps(record))
    return root


def test_the_report_makes_the_iso_token_reading_its_headline(tmp_path):
    sweep_dir = write_sweep(tmp_path, {16: 204_800, 32: 409_600, 64: 819_200, 128: 1_638_400})
    r = report.compute(str(sweep_dir), bootstrap=100)
    assert r.confounds.headline
    page = template.page(r, [], [])
    assert "<b>Confounds.</b> D (tokens) rises with N (parameters)" in page
    assert "At a fixed token budget (the headline)" in page
    assert "At each run's own budget (confounded: D (tokens) rises with N" in page
    assert page.index("the headline") < page.index("own budget (confounded")
    fixed = report.compute(str(write_sweep(tmp_path / "fixed", dict.fromkeys(
        (16, 32, 64, 128), 409_600))), bootstrap=100)
    assert not fixed.confounds.headline and not fixed.confounds.confounds
