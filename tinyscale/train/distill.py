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

import dataclasses
import functools

import jax
import jax.numpy as jnp

from tinyscale.errors import TinyscaleError


@dataclasses.dataclass(frozen=True)
class Teacher:
    params: object          # steps.Params of the teacher's shape (hashable by identity)
    arrays: dict            # its parameters, on the student's mesh
    weight: float
    temperature: float
    run: str                # the teacher's run directory
    flops_per_token: float  # its forward pass, per token


def kl(student_x_BTD, w_VD, bias_V, teacher_logits_BTV, temperature: float) -> jax.Array:
    """Mean over tokens of KL(softmax(teacher / T) || softmax(student / T))."""
    logits_BTV = jnp.einsum("btd,vd->btv", student_x_BTD, w_VD,
                            preferred_element_type=jnp.float32)
    if bias_V is not None:
        logits_BTV = logits_BTV + bias_V.astype(jnp.float32)
    student_BTV = jax.nn.log_softmax(logits_BTV / temperature)
    teacher_BTV = jax.nn.log_softmax(
        jax.lax.stop_gradient(teacher_logits_BTV).astype(jnp.float32) / temperature)
    per_token = jnp.sum(jnp.exp(teacher_BTV) * (teacher_BTV - student_BTV), axis=-1)
    return per_token.mean()


@functools.cache
def forward_flops(teacher: str, seq_len: int) -> float:
    """FLOPs per token of the teacher run's forward pass, from its config.json (0 when
    there is no teacher, or no run there yet: a plan may be made before it is trained)."""
    if not teacher:
        return 0.0
    from tinyscale import config as config_lib
    from tinyscale.model import counting
    from tinyscale.model.transformer import ModelSpec
    from tinyscale.train.rundir import RunDir
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
    from tinyscale.train.rundir import RunDir
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
    from tinyscale.model import counting
    from tinyscale.train import trained
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
