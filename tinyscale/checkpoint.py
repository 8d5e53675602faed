"""Checkpoints with orbax: async saves, the newest K kept, half-written ones cleaned up.

A checkpoint holds the parameters, the optimizer state and the step; the data position
is the step (batches are a pure function of it). Restoring takes the shardings of the
state it is given, so a run resumes onto whatever mesh it runs on now.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory, keep: int, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))

    def restore(self, state_like, step: int | None = None):
        """The checkpoint at `step` (default: newest), laid out like `state_like`."""
        step = self.latest_step() if step is None else step
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
