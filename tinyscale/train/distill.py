"""Distillation (DistilBERT's recipe, for decoders): a finished run teaches a new one.

With `train.teacher` (a finished run's directory, same tokenizer), the training loss is

    weight * T^2 * KL(teacher_T || student_T) + (1 - weight) * cross-entropy

with weight = `train.distill_weight`, T = `train.distill_temperature`, and p_T the
softmax of logits / T (the T^2 keeps the soft term's gradients on the scale of the hard
term's as T changes: Hinton et al., 2015). The teacher's forward pass runs inside the
same jitted step, on the student's mesh with its own parameters' shardings, without
gradients; its parameters are an argument of the step (not a constant baked into it).
The metrics keep "loss" the plain cross-entropy, so a distilled run is compared with
others on the same number, and add "distill_kl".
"""

from __future__ import annotations

import functools

from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError
from tinyscale.model import counting
from tinyscale.model.spec import ModelSpec
from tinyscale.train import trained
from tinyscale.train.losses import Teacher
from tinyscale.train.rundir import RunDir


@functools.cache
def forward_flops(teacher: str, seq_len: int) -> float:
    """FLOPs per token of the teacher run's forward pass, from its config.json (0 when
    there is no teacher, or no run there yet: a plan may be made before it is trained)."""
    if not teacher:
        return 0.0
    run = RunDir(teacher)
    saved = run.read_json(run.config) if run.path.is_dir() else None
    if saved is None:
        return 0.0
    c = config_lib.from_saved(saved)
    return counting.flops_per_token(ModelSpec.from_config(c.model, c.data.vocab_size),
                                    seq_len) / 3  # training counts forward + backward


def check(c) -> None:
    """Refuse a train.teacher that is not a finished run (before anything is written)."""
    if not c.train.teacher:
        return
    run = RunDir(c.train.teacher)
    state = run.state().get("state") if run.path.is_dir() else None
    if state != "done":
        said = f"its state is {state}" if state else "it holds no run"
        raise TinyscaleError(
            f"config.train.teacher={c.train.teacher!r} is not a finished run ({said}): give "
            "the directory of a run that trained to the end, or train it first.")


def load(c, mesh, student_meta: dict) -> Teacher | None:
    """The teacher of config `c` on `mesh`, checked: a finished run with the student's
    tokenizer. None without train.teacher."""
    if not c.train.teacher:
        return None
    check(c)
    path = c.train.teacher
    teacher = trained.load(path, mesh=mesh, say=lambda m: None)
    mine, theirs = student_meta.get("tokenizer_sha256"), teacher.meta.get("tokenizer_sha256")
    if teacher.meta["vocab_size"] != student_meta["vocab_size"] or mine != theirs:
        raise TinyscaleError(
            f"config.train.teacher={path!r} was trained with another tokenizer (vocabulary "
            f"{teacher.meta['vocab_size']}, this run's {student_meta['vocab_size']}): a "
            "teacher's logits are over its own tokens; use a teacher trained on the same "
            "data settings (config.data.vocab_size, tokenizer, corpus).")
    t = c.train
    forward = counting.flops_per_token(teacher.params.spec, t.seq_len) / 3  # of 6N-style
    return Teacher(teacher.params, teacher.arrays, t.distill_weight, t.distill_temperature,
                   str(path), forward)
