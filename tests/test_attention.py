"""model.attention and model.dtype: each attention implementation against the blocked XLA
attention (the splash kernel in Pallas's interpreter on CPU; cuDNN and splash on their
own devices when present), the choice by platform, and the refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyscale import config as config_lib
from tinyscale.config import check as config_check
from tinyscale.errors import TinyscaleError
from tinyscale.model.attention import causal_attention, fused_attention, splash_attention
from tinyscale.model.spec import ModelSpec, attention_implementation, compute_dtype

from .conftest import RUN_FEW_TIMES, SMOKE

PLATFORM = jax.default_backend()


def values_and_grads(attention, q, k, v, weights):
    """(sum(weights * attention(q, k, v)), its gradients w.r.t. q, k, v), jitted."""
    loss = lambda q, k, v: jnp.sum(weights * attention(q, k, v).astype(jnp.float32))  # noqa: E731
    return jax.tree.leaves(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)),
                                   compiler_options=RUN_FEW_TIMES)(q, k, v))


def inputs(t, kv_heads, dtype=jnp.float32, heads=4, head_size=16):
    rng = np.random.default_rng(0)  # numpy's: no random-number program to compile
    q = jnp.asarray(rng.standard_normal((2, t, heads, head_size)), dtype)
    k, v = (jnp.asarray(rng.standard_normal((2, t, kv_heads, head_size)), dtype)
            for _ in range(2))
    return q, k, v, jnp.asarray(rng.standard_normal(q.shape), jnp.float32)


@pytest.mark.parametrize("window, kv_heads", [(None, 4), (100, 2), (None, 1)])
def test_splash_kernel_equals_blocked_attention(window, kv_heads):
    """The Pallas splash kernel as the TPU path calls it (MQA per KV head, its local
    mask, its own backward pass), run by Pallas's interpreter: two blocks of 128, a
    window spanning them, grouped and single KV heads; values and gradients."""
    q, k, v, w = inputs(256, kv_heads)
    want = values_and_grads(lambda *x: causal_attention(*x, 0.3, window), q, k, v, w)
    got = values_and_grads(lambda *x: splash_attention(*x, 0.3, window, interpret=True),
                           q, k, v, w)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, atol=5e-5, rtol=5e-5)


def test_splash_leaves_sequences_it_cannot_block_to_xla():
    q, k, v, _ = inputs(96, 2)
    np.testing.assert_array_equal(splash_attention(q, k, v, 0.3, 5, interpret=True),
                                  causal_attention(q, k, v, 0.3, 5))


@pytest.mark.parametrize("platform, dtype, head_size, want", [
    ("cpu", "auto", 16, ("float32", "xla")),
    ("gpu", "auto", 16, ("bfloat16", "cudnn")),
    ("gpu", "auto", 12, ("bfloat16", "xla")),      # cuDNN: a multiple of 8 only
    ("gpu", "auto", 256, ("bfloat16", "xla")),     # and at most 128 (before Hopper)
    ("gpu", "float32", 16, ("float32", "xla")),    # cuDNN's kernel takes no float32
    ("tpu", "auto", 16, ("bfloat16", "splash")),
    ("tpu", "float32", 16, ("float32", "splash")),
    ("cpu", "bfloat16", 16, ("bfloat16", "xla")),
])
def test_auto_picks_by_platform(platform, dtype, head_size, want):
    resolved = compute_dtype(dtype, platform)
    assert (resolved, attention_implementation("auto", platform, resolved, head_size)) == want
    c = config_lib.get_config()
    c.model.update(dtype=dtype, d_model=4 * head_size, n_heads=4)
    spec = ModelSpec.from_config(config_check.validate(c).model, 256).on(platform)
    assert (spec.dtype, spec.attention) == want and spec.param_dtype == "float32"


def test_defaults_on_this_machine_are_the_ones_stated():
    """The config states the accelerator defaults; on CPU they are today's float32 and
    blocked attention (the bitwise tests of training hold unchanged)."""
    m = config_lib.get_config().model
    assert (m.dtype, m.param_dtype, m.attention) == ("auto", "float32", "auto")
    spec = ModelSpec.from_config(m, 256).on()
    assert spec.param_dtype == "float32"
    if PLATFORM == "cpu":
        assert (spec.dtype, spec.attention) == ("float32", "xla")


@pytest.mark.parametrize("attention, platform, dtype, head_size, words", [
    ("cudnn", "cpu", "float32", 16, "needs an NVIDIA GPU"),
    ("cudnn", "tpu", "bfloat16", 16, "needs an NVIDIA GPU"),
    ("splash", "gpu", "bfloat16", 16, "needs a TPU"),
    ("cudnn", "gpu", "float32", 16, "model.dtype=bfloat16"),
    ("cudnn", "gpu", "bfloat16", 20, "multiple of 8"),
])
def test_a_kernel_the_device_cannot_run_is_refused(attention, platform, dtype, head_size,
                                                    words):
    with pytest.raises(TinyscaleError, match="config.model.attention") as error:
        attention_implementation(attention, platform, dtype, head_size)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_attention_is_refused_by_the_config_check():
    c = config_lib.get_config()
    c.model.attention = "flash"
    with pytest.raises(TinyscaleError) as error:
        config_check.validate(c)
    assert str(error.value) == ("config.model.attention='flash' is invalid: choose one of "
                                "auto, xla, cudnn, splash.")


@pytest.mark.skipif(PLATFORM == "gpu", reason="cudnn runs here")
def test_cudnn_on_a_machine_without_gpu_stops_training_before_it_starts(refused, tmp_path):
    workdir = tmp_path / "run"
    result = refused("train", "--config", SMOKE, "--workdir", workdir,
                     f"--config.data.cache_dir={tmp_path}", "--config.model.attention=cudnn")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert f"config.model.attention='cudnn' needs an NVIDIA GPU, and JAX runs on " \
           f"{PLATFORM} here" in result.stderr
    assert not workdir.exists() and list(tmp_path.iterdir()) == []  # no data prepared


def test_saved_float32_configs_read_as_auto():
    """Run directories from before model.dtype=auto hold its old default, float32: they
    resume and relaunch under today's default, which is float32 on CPU."""
    saved = config_lib.get_config().to_dict()
    saved["config_version"], saved["model"]["dtype"] = 2, "float32"
    del saved["model"]["attention"]
    config = config_lib.from_saved(saved)
    assert (config.model.dtype, config.model.attention) == ("auto", "auto")
    saved["config_version"] = 3  # float32 chosen since: kept
    assert config_lib.from_saved(saved).model.dtype == "float32"


@pytest.mark.skipif(PLATFORM != "gpu", reason="needs a GPU")
@pytest.mark.parametrize("window, kv_heads", [(None, 4), (100, 2)])
def test_cudnn_equals_blocked_attention_on_a_gpu(window, kv_heads):
    """bfloat16 inputs, as the model gives them; both compute their logits in float32."""
    q, k, v, w = inputs(256, kv_heads, jnp.bfloat16, head_size=64)
    want = values_and_grads(lambda *x: causal_attention(*x, 0.125, window), q, k, v, w)
    got = values_and_grads(lambda *x: fused_attention(*x, 0.125, window, "cudnn"), q, k, v, w)
    for a, b in zip(want, got):
        np.testing.assert_allclose(np.float32(b), np.float32(a), atol=3e-2, rtol=3e-2)


@pytest.mark.skipif(PLATFORM != "tpu", reason="needs a TPU")
@pytest.mark.parametrize("window, kv_heads", [(None, 4), (100, 2)])
def test_splash_equals_blocked_attention_on_a_tpu(window, kv_heads):
    q, k, v, w = inputs(256, kv_heads, head_size=128)
    want = values_and_grads(lambda *x: causal_attention(*x, 0.1, window), q, k, v, w)
    got = values_and_grads(lambda *x: splash_attention(*x, 0.1, window), q, k, v, w)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, atol=2e-2, rtol=2e-2)  # TPU matmuls: bf16 passes
