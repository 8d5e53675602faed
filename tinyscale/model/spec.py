"""The model's shape (`ModelSpec`): every dimension and choice the layers are built from,
resolved from config.model and the vocabulary size; and the one place where the
device decides the compute dtype and the attention kernel (`ModelSpec.on`)."""

from __future__ import annotations

import dataclasses

import jax

from tinyscale.config import attention_types
from tinyscale.errors import TinyscaleError

# cuDNN's flash attention (jax._src.cudnn.fused_attention_stablehlo.check_is_flash_attention):
# bf16/fp16 inputs, a head size that is a multiple of 8 and at most 128 before Hopper
# (256 from Hopper on; 128 here, so one rule holds on every GPU)
CUDNN_DTYPES, CUDNN_MAX_HEAD = ("bfloat16",), 128


def compute_dtype(dtype: str, platform: str) -> str:
    """model.dtype on `platform` (jax.default_backend()): auto is float32 on CPU, where
    bfloat16 is no faster (DESIGN.md), and bfloat16 on accelerators (gpu, tpu)."""
    if dtype != "auto":
        return dtype
    return "float32" if platform == "cpu" else "bfloat16"


def attention_implementation(attention: str, platform: str, dtype: str,
                             head_size: int) -> str:
    """model.attention on `platform` with compute `dtype` (resolved): xla, cudnn or splash.

    auto picks cudnn on a GPU when cuDNN's kernel takes the shape and dtype (else xla),
    splash on a TPU, xla on CPU. A kernel named explicitly that this device or shape
    cannot run is a TinyscaleError naming the knob."""
    cudnn_fits = dtype in CUDNN_DTYPES and head_size % 8 == 0 and head_size <= CUDNN_MAX_HEAD
    if attention == "auto":
        return {"gpu": "cudnn" if cudnn_fits else "xla", "tpu": "splash"}.get(platform, "xla")
    needs = {"cudnn": "gpu", "splash": "tpu"}.get(attention)
    if needs and platform != needs:
        device = {"gpu": "an NVIDIA GPU", "tpu": "a TPU"}[needs]
        raise TinyscaleError(f"config.model.attention={attention!r} needs {device}, and JAX "
                             f"runs on {platform} here: use auto or xla.")
    if attention == "cudnn" and not cudnn_fits:
        raise TinyscaleError(
            f"config.model.attention='cudnn' cannot run compute dtype {dtype} with heads of "
            f"{head_size} dims: cuDNN's kernel takes bfloat16 (set --config.model.dtype="
            f"bfloat16 or auto) and a head size (d_model / n_heads) that is a multiple of 8, "
            f"at most {CUDNN_MAX_HEAD}; or use --config.model.attention=xla.")
    return attention


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model's shape, resolved from config.model and the vocabulary size."""

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    max_seq_len: int
    window_size: int
    attention_types: tuple[str, ...]  # per layer: global | local
    rope_theta: float
    rotary_dims: int  # dims of each head that RoPE rotates (0: no RoPE, gpt_neo)
    parallel_block: bool
    norm_eps: float
    tie_embeddings: bool
    dtype: str
    param_dtype: str
    n_experts: int = 0          # > 0: Mixtral's sparse MLP of this many experts (MoE)
    experts_per_token: int = 2  # top-k
    router_aux_coef: float = 0.0  # the training loss's weights of the router losses
    router_z_coef: float = 0.0
    attention: str = "auto"     # auto | xla | cudnn | splash (`on` resolves auto)
    parametrization: str = "standard"  # standard | mup (model/mup.py)
    mup_base_width: int = 64    # mup: the d_model whose init and learning rates are the base

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_heads

    def on(self, platform: str | None = None) -> ModelSpec:
        """This spec with model.dtype and model.attention resolved for `platform` (default:
        the one JAX runs on); what a model is built from (Transformer). Planning and
        counting never call it, so they start no device."""
        platform = platform or jax.default_backend()
        dtype = compute_dtype(self.dtype, platform)
        attention = attention_implementation(self.attention, platform, dtype, self.head_size)
        return dataclasses.replace(self, dtype=dtype, attention=attention)

    @classmethod
    def from_config(cls, m, vocab_size: int) -> ModelSpec:
        if m.d_ff:
            d_ff = m.d_ff
        elif m.family in ("gpt_neo", "phi"):
            d_ff = 4 * m.d_model
        else:  # llama2.c: 2/3 of 4*d, rounded up to a multiple of 32
            d_ff = 32 * -(-int(8 * m.d_model / 3) // 32)
        types = attention_types(m)
        rotary = 0 if m.family == "gpt_neo" else int(m.d_model // m.n_heads *
                                                      m.rotary_fraction)
        parallel = m.family == "phi" or bool(m.parallel_block)
        return cls(m.family, vocab_size, m.d_model, m.n_layers, m.n_heads,
                   m.n_kv_heads or m.n_heads, d_ff, m.max_seq_len, m.window_size, types,
                   m.rope_theta, rotary, parallel, m.norm_eps,
                   m.tie_embeddings and m.family != "phi", m.dtype, m.param_dtype,
                   m.n_experts, m.experts_per_token, m.router_aux_coef, m.router_z_coef,
                   m.attention, parametrization=m.parametrization,
                   mup_base_width=m.mup_base_width)
