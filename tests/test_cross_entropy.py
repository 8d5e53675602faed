"""The fused output projection + cross-entropy equals the unfused loss, value and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyscale import parallel
from tinyscale.model.spec import ModelSpec
from tinyscale.train import losses as cross_entropy
from tinyscale.train import steps
from tinyscale.train.losses import mean_cross_entropy

from .conftest import RUN_FEW_TIMES
from .test_model import VARIANTS, config


def unfused(x_BTD, w_VD, bias_V, targets_BT):
    logits = jnp.einsum("btd,vd->btv", x_BTD, w_VD, preferred_element_type=jnp.float32)
    if bias_V is not None:
        logits = logits + bias_V
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, targets_BT[..., None], -1).mean()


@pytest.mark.parametrize("chunk_rows", [512, 24, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_loss_and_gradients_equal_the_unfused(monkeypatch, chunk_rows, with_bias):
    """One chunk, several (24 rows: 3 of T's 24 positions per row of 8), one position each."""
    monkeypatch.setattr(cross_entropy, "CPU_CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(0)  # numpy's: no random-number program to compile
    x = jnp.asarray(rng.standard_normal((8, 24, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((100, 16)) * 0.3, jnp.float32)
    bias = jnp.asarray(rng.standard_normal(100), jnp.float32) if with_bias else None
    targets = jnp.asarray(rng.integers(0, 100, (8, 24)), jnp.int32)
    argnums = (0, 1, 2) if with_bias else (0, 1)

    def grads(f):
        loss = jax.value_and_grad(lambda x, w, b: f(x, w, b, targets), argnums)
        return jax.jit(loss, compiler_options=RUN_FEW_TIMES)(x, w, bias)
    (l1, g1), (l2, g2) = grads(unfused), grads(mean_cross_entropy)
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    for a, b in zip(g2, g1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # not differentiated: the forward alone (no gradients computed), same value
    forward = jax.jit(mean_cross_entropy, compiler_options=RUN_FEW_TIMES)
    np.testing.assert_allclose(forward(x, w, bias, targets), l1, rtol=1e-6)


def test_bfloat16_inputs_get_bfloat16_gradients():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((50, 16)), jnp.bfloat16)
    targets = jnp.zeros((2, 8), jnp.int32)
    dx, dw = jax.jit(jax.grad(lambda x, w: mean_cross_entropy(x, w, None, targets),
                              (0, 1)), compiler_options=RUN_FEW_TIMES)(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    ref = jax.jit(jax.grad(lambda x, w: unfused(x.astype(jnp.float32), w.astype(jnp.float32),
                                                None, targets), (0, 1)),
                  compiler_options=RUN_FEW_TIMES)(x, w)
    np.testing.assert_allclose(dw.astype(np.float32), ref[1], rtol=0.05, atol=1e-3)


# The heads the fused loss meets: tied (llama), untied (llama with grouped KV heads),
# untied with a bias (phi), and a mixture of experts (its router's statistics beside the
# loss). The other variants differ only before the last hidden state, which both losses
# take from the same code (tests/test_model.py checks those bodies); for the same reason
# one block is enough (a second only repeats the first's gradients, at twice the compile).
HEADS = [{**VARIANTS[i], "n_layers": 1} for i in (0, 1, 4, 7)]


@pytest.mark.parametrize("variant", HEADS)
def test_train_loss_equals_mean_token_loss(monkeypatch, variant):
    """The model's training loss (fused; tied, untied and biased heads) against the
    per-token losses that evaluation uses, with gradients for every parameter."""
    monkeypatch.setattr(cross_entropy, "CPU_CHUNK_ROWS", 32)  # several chunks
    c = config(**variant)
    mesh = parallel.make_mesh(c)
    params = steps.Params(ModelSpec.from_config(c.model, 256), mesh, seed=0)
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 33)), jnp.int32)
    with jax.set_mesh(mesh):  # each loss and its gradients as one program, as in training
        l1, g1 = jax.jit(jax.value_and_grad(
            lambda a: steps.token_losses(params.model(a), batch).mean()),
            compiler_options=RUN_FEW_TIMES)(params.initial)
        l2, g2 = jax.jit(jax.value_and_grad(
            lambda a: steps.mean_loss(params.model(a), batch)[0]),
            compiler_options=RUN_FEW_TIMES)(params.initial)
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    for key in g1:
        np.testing.assert_allclose(g2[key], g1[key], rtol=1e-4, atol=1e-7, err_msg=key)
