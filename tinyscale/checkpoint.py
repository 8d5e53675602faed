"""Checkpoints with orbax: async saves, the newest K kept, damaged ones set aside.

A checkpoint holds the parameters, the optimizer state and the step; the data position
is the step (batches are a pure function of it). Restoring takes the shardings of the
state it is given, so a run resumes onto whatever mesh it runs on now.

A checkpoint is trusted only once it restores: one that does not (a file deleted, a
disk that lost a write) is renamed `damaged-<step>` — kept, out of orbax's sight — and
the next older one is tried.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp

from tinyscale.errors import TinyscaleError


class Checkpoints:
    def __init__(self, directory, keep: int, async_save: bool = True):
        self.directory = directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        self.manager.save(step, args=ocp.args.PyTreeSave(state))

    def restore(self, state_like, step: int):
        """The checkpoint at `step`, laid out like `state_like` (a subtree of what was
        saved, e.g. only {"params": ...}, restores only that part)."""
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
        args = ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)
        return self.manager.restore(step, args=args)

    def restore_good(self, state_like, step: int | None = None, say=print):
        """(step, state) of the newest checkpoint that restores; damaged
        newer ones are set aside with a message. (None, None) when there is none.

        With `step` given, that checkpoint or a one-line error."""
        for candidate in reversed(self.steps()) if step is None else [step]:
            try:
                return candidate, self.restore(state_like, candidate)
            except Exception as error:  # orbax and tensorstore raise many types for this
                if step is not None:
                    raise TinyscaleError(f"checkpoint {candidate} in {self.directory} is "
                                         f"damaged ({type(error).__name__}): pick another "
                                         f"--step from {self.steps()}.") from None
                self._set_aside(candidate, error, say)
        return None, None

    def _set_aside(self, step: int, error: Exception, say) -> None:
        damaged = self.directory / f"damaged-{step}"
        (self.directory / str(step)).rename(damaged)
        self.manager.reload()
        say(f"checkpoint {step} does not restore ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:120] if str(error) else ''}); kept as {damaged}, "
            "using the previous one")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
