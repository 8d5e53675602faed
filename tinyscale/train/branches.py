"""Token budgets by branching: one warmup-stable-decay run, one cool-down per budget.

Hagele et al. (2024) found that a wsd run's cool-down, forked from the stable phase of a
longer run, lands where a cosine run of that length does. Here the identity is exact: the
stable phase of a wsd run does not depend on the run's length (warmup, then train.lr), and
batches are a pure function of the step, so the state of a run to budget D at the step its
cool-down starts *is* the state of any longer run at that step.

A run with `train.schedule=wsd` and `train.branches=(D1, D2, ...)` trains to train.tokens
once. At the step where a wsd run to Di would start its cool-down it saves its state as the
first checkpoint of `<run>/branches/<Di>/`, a run directory like any other: config.json
(train.tokens=Di), metrics.jsonl up to the fork, state.json naming `branched_from`. When the
run has trained and been evaluated, each branch trains its cool-down and is evaluated; the
run is `done` when all its branches are. A branch resumes like a run (it is one), and it
equals the separately trained wsd run to Di step for step (tests/test_train.py).
"""

from __future__ import annotations

import dataclasses
import json

from tinyscale import config as config_lib
from tinyscale.storage import is_remote, write_atomic
from tinyscale.train.checkpoint import Checkpoints
from tinyscale.train.rundir import BRANCHES as FOLDER
from tinyscale.train.rundir import RunDir


@dataclasses.dataclass(frozen=True)
class Branch:
    tokens: int        # the budget, as given in train.branches
    steps: int         # its length in steps
    fork: int          # the step whose state it starts from (the end of its stable phase)
    config: object     # its own config: the run's, with train.tokens = tokens
    rundir: RunDir


def config_for(c, tokens: int):
    """The config of the branch of `c` at `tokens`: a plain wsd run to that budget."""
    b = config_lib.from_saved(c.to_dict())
    b.train.update(tokens=int(tokens), steps=0, branches=())
    b.output.workdir = str(directory(c.output.workdir, tokens))
    return b


def directory(workdir, tokens: int):
    return RunDir(workdir).path / FOLDER / str(int(tokens))


def of(c) -> list[Branch]:
    """The branches of the run configured by `c` (validated), in the order they fork."""
    t = c.train
    out = []
    for tokens in t.branches:
        steps = config_lib.branch_steps(c, tokens)
        fork = config_lib.cooldown_start(steps, t.warmup_steps, t.decay_fraction)
        out.append(Branch(int(tokens), steps, fork, config_for(c, tokens),
                          RunDir(directory(c.output.workdir, tokens))))
    return sorted(out, key=lambda b: b.fork)


def list_dirs(run_path) -> list:
    """The branch directories under a run directory, smallest budget first."""
    folder = RunDir(run_path).path / FOLDER
    if not folder.exists():
        return []
    found = [p for p in folder.iterdir() if p.name.isdigit() and (p / "config.json").exists()]
    return sorted(found, key=lambda p: int(p.name))


def fork(branch: Branch, step: int, state, run: RunDir, lead: bool) -> bool:
    """Save the run's `state` at `step` (= branch.fork) as the branch's first checkpoint,
    with its config.json, the run's metrics up to the fork, and state.json. Nothing is done
    when the branch has a checkpoint already (the run resumed from before its fork: the
    state is the same)."""
    target = branch.rundir
    folder = target.checkpoints if is_remote(target.path) else target.checkpoints.resolve()
    if lead:
        target.write_json(target.config, branch.config.to_dict())
    ckpt = Checkpoints(folder, branch.config.train.keep_checkpoints)
    try:
        if ckpt.steps():
            return False
        if lead:
            prefix = [m for m in run.read_metrics() if m["step"] <= step]
            write_atomic(target.metrics, "".join(json.dumps(m) + "\n" for m in prefix))
            target.set_state("pending", step=step, total_steps=branch.steps,
                             branched_from={"run": run.path.name, "step": step})
        ckpt.save(step, state)
        ckpt.wait()
        return True
    finally:
        ckpt.close()
