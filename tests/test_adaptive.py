"""`tinyscale sweep next`: the adaptive choice of runs (analysis/adaptive.py,
analysis/next_runs.py) on sweeps whose runs are written, not trained (a logistic ground
truth plus seed and prompt noise), and one proposal trained end to end."""

import json
import math
import os

import numpy as np
import pytest

from analysis import adaptive, emergence, next_runs, report, runs
from tests.conftest import run_cli
from tinyscale.launch import plan
from tinyscale.launch.sweepdir import SweepDir
from tinyscale.model import counting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "data", "tiny_sweep.py")
WIDTHS = (8, 16, 32, 64, 128)


def _params(width: int) -> float:
    base, _ = plan.expand(TINY + ":1")
    values = plan.apply(base, {"model.d_model": width, "model.n_layers": 1,
                               "model.n_heads": 2}, "test", "w")
    return counting.of_config(values)["total"]


CROSSING = math.sqrt(_params(32) * _params(64))  # the ground truth's N at 0.5


def write_sweep(root, widths=WIDTHS, seeds=(0,), steepness=4.0, offset=0.0, state="done",
                seed=0):
    """A sweep directory of tiny_sweep.py runs that were never trained: each run's
    coherence per prompt is drawn around sigmoid(steepness (log10 N - log10 CROSSING))
    (+ offset, + a seed-to-seed deviation)."""
    rng = np.random.default_rng(seed)
    shapes = [{"model.d_model": w, "model.n_layers": 1, "model.n_heads": 2, "seed": s}
              for w in widths for s in seeds]
    base, _ = plan.expand(TINY + ":1")
    runs = [plan.Run(i, plan.run_name(o), o, plan.apply(base, o, TINY, plan.run_name(o)))
            for i, o in enumerate(shapes)]
    SweepDir(str(root)).create(TINY, base, runs)
    for run in runs:
        path = root / "runs" / run.name
        path.mkdir(parents=True)
        (path / "state.json").write_text(json.dumps({"state": state, "attempts": 1}))
        (path / "metrics.jsonl").write_text(json.dumps(
            {"step": 30, "tokens": 15360, "eval_loss": 3.0, "train_loss": 3.0}) + "\n")
        n = counting.of_config(run.values)["total"]
        p = 1 / (1 + math.exp(-steepness * (math.log10(n) - math.log10(CROSSING)))) + offset
        p = float(np.clip(p + rng.normal(0, 0.04), 0.01, 0.99))
        prompts = rng.binomial(1, p, 48).astype(float)
        (path / "samples.jsonl").write_text("".join(
            json.dumps({"prompt": "Once", "continuation": " upon", "coherence": v}) + "\n"
            for v in prompts))
        (path / "eval.json").write_text(json.dumps({"loss": 3.0, "coherence": prompts.mean()}))
    return root


def one_final(sweep):
    return runs.final(runs.load(str(sweep)))


def test_the_fast_refit_agrees_with_the_report_interval(tmp_path):
    sweep = write_sweep(tmp_path / "s", seeds=(0, 1))
    final, _ = report.baseline(runs.final(runs.load(str(sweep))))
    samples = runs.samples(str(sweep), final["run"])
    crossing = emergence.table(final, ["coherence"], 0.5, 300, samples)[0]
    family = adaptive.Family.of("depth 1", final, "coherence", samples)
    estimate = adaptive.expected_width(family, [])
    assert crossing.status == "crossed"
    assert estimate == pytest.approx(next_runs.decades(crossing.interval), rel=0.35)
    assert 0 < family.sd_prompt <= family.sd_seed < 0.2 and family.sd_prompt < 0.1


def _family(sweep):
    final, _ = report.baseline(one_final(sweep))
    return adaptive.Family.of("depth 1", final, "coherence",
                              runs.samples(str(sweep), final["run"]))


def _candidate(width: int, flops: float = 1.0) -> adaptive.Candidate:
    return adaptive.Candidate(f"d{width}", "depth 1", (1, width, 2, _params(width)),
                              _params(width), flops)


def test_at_equal_cost_the_choice_is_at_the_crossing_not_at_far_sizes(tmp_path):
    family = _family(write_sweep(tmp_path / "s"))
    options = [_candidate(w) for w in (4, 12, 24, 44, 88, 256)]
    pick, = adaptive.select({"depth 1": family}, lambda chosen: options,
                            budget=math.inf, max_picks=1)
    assert pick.candidate.cell[1] in (24, 44), pick  # the crossing lies between d32 and d64
    near = adaptive.expected_width(family, [_candidate(44)])
    assert near < adaptive.expected_width(family, [])
    assert near < adaptive.expected_width(family, [_candidate(4)])
    assert near < adaptive.expected_width(family, [_candidate(256)])


def test_the_proposal_keeps_the_budget_and_narrows_the_interval(tmp_path):
    sweep = write_sweep(tmp_path / "s")
    options = next_runs.Candidates(SweepDir(str(sweep)), one_final(sweep), ["depth 1"])([])
    assert {c.cell[1] for c in options} == {4, 8, 12, 16, 24, 32, 44, 64, 88, 128, 256}
    budget = 2 * next(c.flops for c in options if c.cell[1] == 44)
    p = next_runs.propose(str(sweep), budget=budget)
    assert p.metric == "coherence" and p.picks
    assert p.spent <= budget and sum(k.candidate.flops for k in p.picks) == p.spent
    assert p.picks[0].width_after < p.estimates["depth 1"]
    assert all(b.width_after <= a.width_after for a, b in zip(p.picks, p.picks[1:]))
    names = {r["name"] for r in SweepDir(str(sweep)).runs()}
    assert not any(k.candidate.name in names for k in p.picks)


@pytest.mark.parametrize("budget, says", [
    ("0", "--budget: 0 is not a positive number"),
    ("--budget=-3e12", "--budget: -3e12 is not a positive number"),
    ("lots", "--budget: 'lots' is not a positive number"),
    ("nan", "--budget nan is not a positive number of FLOPs"),
    ("1", "--budget 1 is below the cheapest candidate")])
def test_bad_budgets_are_one_line_and_exit_2(tmp_path, refused, budget, says):
    sweep = write_sweep(tmp_path / "s")
    out = refused("sweep", "next", sweep, *(
        [budget] if budget.startswith("--") else ["--budget", budget]))
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_sweeps_without_finished_runs_or_a_crossing_are_refused(tmp_path, refused):
    pending = write_sweep(tmp_path / "pending", state="pending")
    out = refused("sweep", "next", pending, "--budget", "1e12")
    assert out.returncode == 2 and "holds no finished run yet" in out.stderr
    below = write_sweep(tmp_path / "below", offset=-0.9)
    out = refused("sweep", "next", below, "--budget", "1e12")
    assert out.returncode == 2 and "no emergence metric crosses 0.5" in out.stderr
    assert "not reached below" in out.stderr
    out = refused("sweep", "next", below, "--budget", "1e12", "--metric", "grammar")
    assert out.returncode == 2 and "--metric grammar is not measured" in out.stderr
    out = refused("sweep", "next", tmp_path / "nothing", "--budget", "1e12")
    assert out.returncode == 2 and "holds no sweep.json" in out.stderr
    for out in (refused("sweep", "next", pending, "--budget", "1e12"),):
        assert len(out.stderr.strip().splitlines()) == 1


def test_sweep_next_prints_the_table_and_with_run_trains_it(tmp_path, command, env,
                                                             monkeypatch):
    monkeypatch.setenv("TINYSCALE_TEST_CACHE", env["TINYSCALE_TEST_CACHE"])
    sweep = write_sweep(tmp_path / "s")
    before = (sweep / "sweep.json").read_text()
    costs = sorted(c.flops for c in next_runs.Candidates(
        SweepDir(str(sweep)), one_final(sweep), ["depth 1"])([]))
    # the smallest budget for which one run is proposed: one run to train
    budget = next(b for b in costs if len(next_runs.propose(str(sweep), b).picks) == 1)
    out = command("sweep", "next", sweep, "--budget", f"{budget:.17g}")
    assert out.returncode == 0, out.stderr
    assert "widest emergence interval: coherence" in out.stdout
    assert f"train them: tinyscale sweep next {sweep} --budget" in out.stdout
    assert (sweep / "sweep.json").read_text() == before  # a proposal writes nothing
    lines = out.stdout.splitlines()
    name = lines[next(i for i, x in enumerate(lines) if x.startswith("----")) + 1].split()[0]
    out = run_cli("sweep", "next", str(sweep), "--budget", f"{budget:.17g}", "--run", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((sweep / "sweep.json").read_text())
    assert [r["name"] for r in record["runs"]][-1] == name and len(record["runs"]) == 6
    assert record["runs"][:5] == json.loads(before)["runs"]  # the old runs untouched
    assert record["spec"] == str(sweep / "next" / "next-1.py")
    assert json.loads((sweep / "runs" / name / "state.json").read_text())["state"] == "done"
    assert (sweep / "runs" / name / "eval.json").exists()
