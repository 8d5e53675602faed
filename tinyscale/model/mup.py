"""µP, the maximal update parametrization for Adam (Yang et al., 2022, "Tensor Programs V"),
in the form the `mup` package and EleutherAI / Cerebras's practitioner's guide use:
model.parametrization = mup, relative to a base width (model.mup_base_width), with
m = d_model / base width:

* hidden (matrix-like) weights -- the attention's query, key, value and output
  projections, the MLP's and the experts' matrices -- start at std / sqrt(m) and their
  Adam learning rate is lr / m (`lr_scales`; AdamW's decoupled decay scales with it);
* the router of a mixture of experts (width in, a fixed number of experts out) is an
  output layer: std / m at init, lr / m (Tensor Programs V, table 3);
* embeddings, positions, norms and biases (vector-like) keep the base init and lr;
* the logits are multiplied by 1 / m (`output_multiplier`, the `mup` package's
  MuReadout / MuSharedReadout: it holds for tied embeddings and an untied head alike,
  and in the fused cross-entropy, which reads the same output projection);
* attention logits are scaled by 1 / d_head instead of 1 / sqrt(d_head) (GPT-Neo's
  unscaled logits too).

One m serves every hidden matrix, the MLP's down projection included: d_ff follows
d_model (model.d_ff = 0) in every family. At the base width (m = 1) µP is the standard
parametrization but for the 1 / d_head attention. Under model.parametrization =
standard every function here returns what the model had before µP existed, exactly.
"""

from __future__ import annotations

import math

from tinyscale.model.spec import ModelSpec

HIDDEN, OUTPUT, VECTOR = "hidden", "output", "vector"  # the roles of `role`


def is_mup(spec: ModelSpec) -> bool:
    return spec.parametrization == "mup"


def width_mult(spec: ModelSpec) -> float:
    """m = d_model / model.mup_base_width under µP; 1 under the standard parametrization."""
    return spec.d_model / spec.mup_base_width if is_mup(spec) else 1.0


def init_std(spec: ModelSpec, std: float, role: str = HIDDEN) -> float:
    """The init std of a weight whose standard std is `std`: / sqrt(m) for a hidden
    matrix, / m for an output layer (the router), unchanged for vectors and standard."""
    if not is_mup(spec) or role == VECTOR:
        return std
    m = width_mult(spec)
    return std / math.sqrt(m) if role == HIDDEN else std / m


def attention_scale(spec: ModelSpec) -> float:
    """The attention logits' scale: 1 / d_head under µP; standard: 1 / sqrt(d_head), and
    GPT-Neo's 1 (it does not scale its logits)."""
    if is_mup(spec):
        return 1.0 / spec.head_size
    return 1.0 if spec.family == "gpt_neo" else 1.0 / math.sqrt(spec.head_size)


def output_multiplier(spec: ModelSpec) -> float | None:
    """The logits' multiplier, 1 / m, under µP; None (no multiply at all) standard."""
    return 1.0 / width_mult(spec) if is_mup(spec) else None


def role(key: str, ndim: int) -> str:
    """A parameter's role from its flat name ("blocks/0/attn/query/kernel") and rank."""
    parts = key.split("/")
    if parts[0] != "blocks" or ndim < 2 or parts[-1] in ("bias", "scale", "embedding"):
        return VECTOR  # embeddings, an untied head (the multiplier), norms, biases
    return OUTPUT if "router" in parts else HIDDEN


def lr_scales(spec: ModelSpec, arrays: dict) -> dict[str, float] | None:
    """Each parameter's Adam learning-rate multiplier (1 / m for hidden matrices and the
    router, 1 for the rest), keyed like `arrays` (the flat parameters, or their shapes);
    None under the standard parametrization (the optimizer is then left as it was)."""
    if not is_mup(spec):
        return None
    m = width_mult(spec)
    return {k: 1.0 if role(k, len(v.shape)) == VECTOR else 1.0 / m for k, v in arrays.items()}
