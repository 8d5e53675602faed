"""A run's final evaluation, once it has trained: eval.json for its last step.

With config.eval.at_end, the full evaluation (tinyscale/evals/run.py: held-out loss,
story completions and their scores) of the final parameters; on several hosts every one
first hands process 0 those parameters, which it evaluates alone on its own devices
while the others wait at a barrier. Without it, eval.json holds the held-out loss the
loop measured at the last step. A failed evaluation is kept on the run (eval.json
holds the error): the model is trained and the run stays done.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from tinyscale import parallel
from tinyscale.train import trained
from tinyscale.train.rundir import RunDir


def final_evaluation(run: RunDir, step: int, arrays, c, data_dir: str, lead: bool, say,
                     full, named: bool = False) -> bool:
    """The run's eval.json for the final step (kept if a run stopped in its branches has
    it); False when its evaluation failed. `arrays`: the run's final parameters;
    `full`: the full evaluation, (workdir, step, say, loaded) -> its result
    (tinyscale.evals.run.evaluate, handed down by the command, so that training does not
    depend on evaluation); `named`: say the run's path (one of several runs)."""
    evaluated, many = True, jax.process_count() > 1
    done = run.read_json(run.eval) or {}
    finished = done.get("step") == step and "error" not in done
    if many:  # process 0's reading: another process may already see what 0 writes below,
        # skip the barrier and leave 0 waiting at it
        finished = bool(multihost_utils.broadcast_one_to_all(np.int32(finished)))
    if finished:
        return True
    # Several hosts: every one hands process 0 the final parameters, which it then
    # evaluates alone on its own devices while the others wait at a barrier.
    host_arrays = multihost_utils.process_allgather(arrays, tiled=True) \
        if many and c.eval.at_end else None
    if lead:
        final = run.read_metrics()[-1]
        if c.eval.at_end:
            evaluated = evaluate(run, step, data_dir, say, full, host_arrays, named)
        else:
            run.write_json(run.eval, {
                "step": step, "loss": final.get("eval_loss"),
                "loss_se": final.get("eval_loss_se"), "bits_per_byte": final.get("eval_bpb")})
    parallel.barrier(f"evaluated-{run.path}-{step}")
    return evaluated


def evaluate(run: RunDir, step: int, data_dir: str, say, full,
             host_arrays: dict | None = None, named: bool = False) -> bool:
    """The run's full evaluation; a failure is kept on the run, not lost with it.
    `host_arrays`: the final parameters in host memory (multi-host: evaluated on
    this process's own devices, not read back from the checkpoint)."""
    say(f"{run.path}: evaluating story completions..." if named
        else "evaluating story completions...")
    try:
        workdir = str(run.path)
        loaded = None if host_arrays is None else trained.on_local_devices(
            workdir, step, host_arrays, data_dir)
        result = full(workdir, step, say=say, loaded=loaded)
    except Exception as error:  # the model is trained: keep it done, say why no eval
        run.write_json(run.eval, {"step": step, "error": repr(error)})
        say(f"evaluation failed: {error}; the model is trained and kept: fix that, then "
            "run `tinyscale eval` on the run")
        return False
    say(f"coherence {result['coherence']:.3f}  grammar {result['grammar']:.3f}  "
        f"consistency {result['consistency']:.3f}")
    return True
