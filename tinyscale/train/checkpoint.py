"""Checkpoints with orbax: async saves, the newest K kept, damaged ones set aside.

A checkpoint holds the parameters, the optimizer state and the step; the data position
is the step (batches are a pure function of it). Restoring takes the shardings of the
state it is given, so a run resumes onto whatever mesh it runs on now.

A checkpoint is trusted only once it restores: one that does not (a file deleted, a
disk that lost a write, a folder emptied) is skipped for the next older one. Training
(which writes) renames it `damaged-<step>` — kept, out of orbax's sight, so that the run
saves that step again; a reader (`read_only`: eval, sample, export) changes nothing in
the run and only names it.

orbax infers a folder's layout from the step folders it sees: one emptied folder makes
it ask for named items (`Composite`), which it refuses otherwise, so a restore that is
refused for want of one is tried again as `Composite(default=...)` -- the layout `save`
writes (<step>/default). Without that, one emptied folder made every good checkpoint
fail to restore too.
"""

from __future__ import annotations

import logging

import jax
import orbax.checkpoint as ocp
from etils import epath

from tinyscale.errors import TinyscaleError

ITEM = "default"  # the item name orbax gives a single PyTree save


class Checkpoints:
    def __init__(self, directory, keep: int, async_save: bool = True,
                 read_only: bool = False):
        """`read_only`: for readers of a run -- nothing is created, deleted or renamed."""
        self.directory, self.read_only = directory, read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep, create=not read_only,
            cleanup_tmp_directories=not read_only, enable_async_checkpointing=async_save,
            read_only=read_only, save_interval_steps=0 if read_only else 1,
            # orbax's multi-process barriers are named alike for every manager: the K runs
            # of a packed group (or a run and its branch) saving at once would meet in one
            # barrier and fail or deadlock; the run's name (<run>/checkpoints) tells them apart
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=epath.Path(directory).parent.name))
        absl = logging.getLogger("absl")
        level = absl.level
        if read_only:  # orbax warns "Given directory is read only" on every reader
            absl.setLevel(logging.ERROR)
        try:
            self.manager = ocp.CheckpointManager(directory, options=options)
        finally:
            absl.setLevel(level)

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
        try:
            return self.manager.restore(step, args=args)
        except ValueError as error:  # orbax read the folder as holding named items
            if "Composite" not in str(error):
                raise
            return self.manager.restore(step, args=ocp.args.Composite(**{ITEM: args}))[ITEM]

    def restore_good(self, state_like, step: int | None = None, say=print):
        """(step, state) of the newest checkpoint that restores; damaged newer ones are
        named in one line each (and set aside, unless read-only). (None, None) when there
        is none.

        With `step` given, that checkpoint or a one-line error."""
        for candidate in reversed(self.steps()) if step is None else [step]:
            try:
                return candidate, self.restore(state_like, candidate)
            except Exception as error:  # orbax and tensorstore raise many types for this
                if step is not None:
                    raise TinyscaleError(f"checkpoint {candidate} in {self.directory} is "
                                         f"damaged ({type(error).__name__}): pick another "
                                         f"--step from {self.steps()}.") from None
                if self.read_only:
                    say(f"checkpoint {candidate} of {self.directory} does not restore "
                        f"({type(error).__name__}); left as it is, trying the one before")
                else:
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


def restore_common(ckpts: list[Checkpoints], state_like, says: list) -> tuple[int, list] | None:
    """(step, the state of each of `ckpts` there) at the newest step every one of them has
    a checkpoint of that restores, or None. A damaged one is set aside (and named through
    its `says` entry), and the step before tried."""
    common = set.intersection(*(set(ck.steps()) for ck in ckpts))
    for step in sorted(common, reverse=True):
        states = []
        for ck, say in zip(ckpts, says, strict=True):
            try:
                states.append(ck.restore(state_like, step))
            except Exception as error:  # a damaged one: set aside, try the step before
                ck._set_aside(step, error, say)
        if len(states) == len(ckpts):
            return step, states
    return None
