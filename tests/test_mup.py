"""µP (model.parametrization=mup, tinyscale/model/mup.py) and `sweep tune-lr`
(tinyscale/launch/tune.py).

* The coordinate check (Yang et al., 2022; the `mup` package's coord check): widths
  32, 128 and 256, SEEDS inits each, ADAM_STEPS steps of the train step and optimizer every run
  uses on the smoke corpus; after each step t, on a held-out batch, the mean |x_t| and
  the mean |x_t - x_0| (what the steps changed) of the residual stream after each block
  and of the logits, averaged over the inits. µP keeps both flat across widths at every
  t; the standard parametrization lets the change grow with width. One init's values
  at t = 3 spread by up to a factor 2.3 at one width (finite-width noise), more than the
  bound: hence the mean over inits. `pytest tests/test_mup.py -k coordinate -s` prints
  the table (docs/results.md).
* Learning-rate transfer: `sweep tune-lr` on widths 64 and 256 of the smoke corpus
  (tests/data/mup_sweep.py, 5 rates packed per width) picks best rates a factor of at
  most 2 apart under µP; the same run checks `sweep tune-lr` end to end and `sweep run`
  reading its rates.
* The choice of the best rate (pure numpy).
* Standard runs are unchanged: tests/test_train.py's and tests/test_pack.py's exactness
  tests (bit-identical resume, packed = solo) run the standard parametrization, and
  `test_standard_init_and_logits_are_what_they_were` checks the values directly.
"""

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT, RUN_FEW_TIMES, SMOKE, env, run_cli  # noqa: F401
from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.config import file as config_file
from tinyscale.data import pipeline
from tinyscale.launch import plan, tune
from tinyscale.model import mup
from tinyscale.model.spec import ModelSpec
from tinyscale.train import checkpoint, optim, packed, steps

WIDTHS, HEAD, LAYERS = (32, 128, 256), 16, 2  # 8x in width; d64 is µP's base
VOCAB, SEQ, BATCH, ADAM_STEPS, LR, SEEDS = 512, 32, 8, 3, 1e-2, 4  # VOCAB: the smoke corpus's
# µP holds the coordinates flat to within finite-width noise (measured: at most x1.4
# between any two widths); the standard parametrization's change grows with width
# (x3.8-x140 from d32 to d256, docs/results.md): the two bounds leave a wide gap.
FLAT, GROWS = 1.6, 3.0
# the standard parametrization's growth is checked over its first two steps: at t = 3
# its widest model's logits stop growing (they saturate, as its loss stops falling)
GROWS_UNTIL = 2
LAYER_NAMES = tuple(f"block {i}" for i in range(LAYERS)) + ("logits",)
MUP_SWEEP = os.path.join(ROOT, "tests", "data", "mup_sweep.py")


def _config(width: int, parametrization: str):
    c = config_lib.get_config()
    c.model.update(d_model=width, n_layers=LAYERS, n_heads=width // HEAD, max_seq_len=SEQ,
                   parametrization=parametrization, mup_base_width=64)
    c.train.update(lr=LR, schedule="constant", warmup_steps=0, seq_len=SEQ, batch_size=BATCH)
    return c


def coordinates(width: int, parametrization: str, batches_TBT, probe_BT) -> dict:
    """{"size", "change"}: [ADAM_STEPS, layers] arrays, the mean |x_t| and mean |x_t - x_0|
    after step t = 1.. of each of LAYER_NAMES on the held-out `probe_BT`, averaged over
    SEEDS inits of the model of `width` (one program per shape, run once per init, the steps
    scanned), trained by the train step and optimizer every run uses on `batches_TBT`."""
    c = _config(width, parametrization)
    spec = ModelSpec.from_config(c.model, VOCAB)
    inits = [steps.Params(spec, parallel.make_mesh(c), seed) for seed in range(SEEDS)]
    params = inits[0]
    tx = optim.optimizer(c.train, ADAM_STEPS, mup.lr_scales(spec, params.initial))
    step = steps.step_fn(params, 1)
    positions_BT = jnp.broadcast_to(jnp.arange(probe_BT.shape[1]), probe_BT.shape)

    def layers(arrays):
        model, out = params.model(arrays), []
        x_BTD = model.embed(probe_BT)
        for block in model.blocks:
            x_BTD = block(x_BTD, positions_BT)
            out.append(x_BTD)
        return out + [model(probe_BT)]

    def trajectory(arrays):
        initial = layers(arrays)

        def one(carry, batch_BT):
            arrays, opt_state, _ = step(*carry, batch_BT, tx)
            now = layers(arrays)
            return (arrays, opt_state), (
                jnp.stack([jnp.abs(x).mean() for x in now]),
                jnp.stack([jnp.abs(x - x0).mean() for x, x0 in zip(now, initial)]))
        return jax.lax.scan(one, (arrays, tx.init(arrays)), batches_TBT)[1]

    # a few runs of a small program: compiled as the inits are (conftest.RUN_FEW_TIMES)
    each = jax.jit(trajectory, compiler_options=RUN_FEW_TIMES)
    size, change = zip(*(each(p.initial) for p in inits))
    return {"size": np.mean(size, axis=0), "change": np.mean(change, axis=0)}


@pytest.fixture(scope="module")
def coordinate_table(smoke_cache):
    c = config_file.load(SMOKE)
    c.data.cache_dir = smoke_cache
    data_dir = pipeline.prepare(c, progress=False)
    assert pipeline.load_meta(data_dir)["vocab_size"] == VOCAB
    train = pipeline.Batches(data_dir, "train", SEQ, BATCH, 0, 0, 1)
    batches_TBT = jnp.asarray(np.stack([train.batch(i) for i in range(ADAM_STEPS)]))
    probe_BT = jnp.asarray(pipeline.Batches(data_dir, "eval", SEQ, BATCH, 0, 0, 1)
                           .eval_batch(0)[:, :-1])
    table = {p: {w: coordinates(w, p, batches_TBT, probe_BT) for w in WIDTHS}
             for p in ("mup", "standard")}
    for what in ("change", "size"):  # the table of docs/results.md
        print("\nmean |x_t - x_0|" if what == "change" else "\nmean |x_t|",
              f"after t Adam steps (lr {LR}), mean of {SEEDS} inits:")
        print("| parametrization | layer | t | " + " | ".join(f"d{w}" for w in WIDTHS)
              + " | widest / narrowest |")
        for p, rows in table.items():
            for j, layer in enumerate(LAYER_NAMES):
                for t in range(ADAM_STEPS):
                    values = [rows[w][what][t, j] for w in WIDTHS]
                    print(f"| {p} | {layer} | {t + 1} | "
                          + " | ".join(f"{v:.3g}" for v in values)
                          + f" | {values[-1] / values[0]:.2f} |")
    return table


def test_coordinate_check_flat_under_mup_growing_under_standard(coordinate_table):
    for j, layer in enumerate(LAYER_NAMES):
        for t in range(ADAM_STEPS):
            for what in ("size", "change"):
                mup_scale = [coordinate_table["mup"][w][what][t, j] for w in WIDTHS]
                assert max(mup_scale) / min(mup_scale) < FLAT, (layer, t + 1, what, mup_scale)
            if t < GROWS_UNTIL:
                standard = [coordinate_table["standard"][w]["change"][t, j] for w in WIDTHS]
                assert standard[-1] / standard[0] > GROWS, (layer, t + 1, standard)
                assert np.all(np.diff(standard) > 0), (layer, t + 1, standard)


def test_mup_scales_by_role():
    c = _config(256, "mup")
    spec = ModelSpec.from_config(c.model, VOCAB)
    arrays = steps.Params(spec, parallel.make_mesh(c), 0, materialize=False).initial
    scales = mup.lr_scales(spec, arrays)
    assert mup.width_mult(spec) == 4.0 and mup.attention_scale(spec) == 1 / HEAD
    assert scales["embed/embedding"] == 1.0 and scales["norm/scale"] == 1.0
    assert scales["blocks/0/attn/query/kernel"] == 0.25
    assert scales["blocks/1/mlp/down/kernel"] == 0.25
    assert scales["blocks/0/norm_attn/scale"] == 1.0
    # every matrix inside a block is hidden; nothing else is
    assert {k for k, v in scales.items() if v != 1.0} == {
        k for k, v in arrays.items() if k.startswith("blocks/") and len(v.shape) == 2}
    assert mup.lr_scales(ModelSpec.from_config(_config(256, "standard").model, VOCAB),
                         arrays) is None


def test_standard_init_and_logits_are_what_they_were():
    """Standard: the 0.02 init (0.02 / sqrt(2L) on the residual outputs), logits with no
    multiplier; µP at the base width: the same init and logits but for attention."""
    c = _config(64, "standard")
    spec = ModelSpec.from_config(c.model, VOCAB)
    mesh = parallel.make_mesh(c)
    standard = steps.Params(spec, mesh, 0)
    assert mup.output_multiplier(spec) is None
    assert mup.attention_scale(spec) == 1 / math.sqrt(HEAD)
    assert np.std(standard.initial["blocks/0/attn/query/kernel"]) == pytest.approx(0.02, 0.05)
    assert np.std(standard.initial["blocks/0/mlp/down/kernel"]) == pytest.approx(
        0.02 / math.sqrt(2 * LAYERS), 0.05)
    based = steps.Params(ModelSpec.from_config(_config(64, "mup").model, VOCAB), mesh, 0)
    for key, value in standard.initial.items():  # m = 1: bit for bit the same init
        np.testing.assert_array_equal(np.asarray(value), np.asarray(based.initial[key]))
    wide = steps.Params(ModelSpec.from_config(_config(256, "mup").model, VOCAB), mesh, 0)
    assert np.std(wide.initial["blocks/0/attn/query/kernel"]) == pytest.approx(0.01, 0.05)
    w_standard, _ = standard.model(standard.initial).output_projection()
    w_wide, _ = wide.model(wide.initial).output_projection()
    np.testing.assert_array_equal(w_standard, standard.initial["embed/embedding"])
    np.testing.assert_allclose(w_wide, wide.initial["embed/embedding"] / 4, rtol=1e-6)


def test_mup_packs_like_solo_and_resumes_from_a_checkpoint_exactly(tmp_path):
    """K = 2 learning rates packed step as each alone (the per-parameter rates inside the
    packed optimizer too); a µP state saved and restored goes on bit for bit."""
    c = _config(32, "mup")
    c.model.n_layers = 1  # what is checked is the optimizer's state, not depth
    # runs of 4 steps: compiled quickly (train.quick_compile)
    c.train.update(lr=3e-3, schedule="cosine", warmup_steps=2, quick_compile=True)
    spec, mesh = ModelSpec.from_config(c.model, VOCAB), parallel.make_mesh(c)
    params, total, lrs = steps.Params(spec, mesh, 0), 4, (3e-3, 2e-2)
    rng = np.random.default_rng(0)
    batches = jnp.asarray(rng.integers(0, VOCAB, (total, BATCH, SEQ + 1)), jnp.int32)
    solo, step = {}, steps.make_train_step(params, c.train, total)  # one program for both
    for lr in lrs:
        c.train.lr = lr
        tx = optim.optimizer(c.train, total, mup.lr_scales(spec, params.initial))
        numbers = optim.stacked([optim.numbers(c.train, total)])  # as the trainer has them
        arrays = jax.tree.map(jnp.copy, params.initial)
        state, losses = tx.init(arrays), []
        for i in range(total):
            arrays, state, out = step(arrays, state, batches[i], numbers)
            losses.append(float(out["loss"]))
        solo[lr] = losses, arrays
        if lr != lrs[0]:
            continue
        # again (the same compiled step), saved after step 2 and restored into fresh
        # buffers: it goes on as the uninterrupted run, bit for bit
        arrays = jax.tree.map(jnp.copy, params.initial)
        state = tx.init(arrays)
        for i in range(total):
            if i == 2:
                ckpt = checkpoint.Checkpoints(tmp_path / "ckpt", 2, async_save=False)
                ckpt.save(i, {"params": arrays, "opt_state": state})
                like = {"params": params.initial, "opt_state": tx.init(params.initial)}
                restored = ckpt.restore(like, i)
                ckpt.close()
                arrays, state = restored["params"], restored["opt_state"]
            arrays, state, _ = step(arrays, state, batches[i], numbers)
        for key in arrays:
            np.testing.assert_array_equal(arrays[key], solo[lr][1][key])
    train_step, init_opt = packed.make_steps(params, c.train, total)
    scalars = optim.stacked([{**optim.numbers(c.train, total), "lr": lr} for lr in lrs])
    arrays_K = packed.stack([params.initial, params.initial], mesh)
    state_K = init_opt(arrays_K, scalars)
    for i in range(total):
        arrays_K, state_K, out = train_step(arrays_K, state_K, jnp.stack([batches[i]] * 2),
                                            scalars)
        for k, lr in enumerate(lrs):
            assert float(out["loss"][k]) == pytest.approx(solo[lr][0][i], abs=1e-5)


# ---- choosing the best rate (pure numpy) ---------------------------------------------

def test_choose_finds_the_vertex_with_an_interval_and_flags_the_edge():
    rng = np.random.default_rng(1)
    lrs = list(np.geomspace(1e-3, 6.4e-2, 7))  # a factor 2 apart
    true = 9e-3
    curve = 1.5 + 0.05 * (np.log(lrs) - np.log(true)) ** 2
    losses_KS = curve[:, None] + rng.normal(0, 0.05, (1, 400)) + rng.normal(0, 0.01, (7, 400))
    result = tune.choose(lrs, losses_KS, 500)
    low, high = result["interval"]
    assert low <= result["lr"] <= high and low <= true <= high
    assert result["lr"] == pytest.approx(true, rel=0.25) and result["edge"] is None
    assert high / low < 4  # sub-grid resolution from 400 paired sequences
    losses_KS[-2:] = np.inf  # the two highest rates diverged
    assert tune.choose(lrs, losses_KS, 200)["eval_loss"][-1] is None
    rising = tune.choose(lrs, np.linspace(1, 2, 7)[:, None] + np.zeros((7, 10)), 200)
    assert rising["edge"] == "low" and rising["lr"] == lrs[0]


# ---- sweep tune-lr ------------------------------------------------------------------

def test_tune_lr_refuses_bad_input(refused, tmp_path, smoke_cache):
    out = refused("sweep", "tune-lr", SMOKE, "--sweep-dir", tmp_path / "s",
                  "--config.tune.lrs=2")
    assert out.returncode == 2 and "config.tune.lrs=2" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = refused("sweep", "tune-lr", SMOKE, "--sweep-dir", tmp_path / "s",
                  "--config.tune.lr_min=0.1", "--config.tune.lr_max=0.01")
    assert out.returncode == 2 and "tune.lr_max" in out.stderr
    varies = os.path.join(ROOT, "tests", "data", "tiny_sweep.py") + ":pack"
    out = refused("sweep", "tune-lr", varies, "--sweep-dir", tmp_path / "s")
    assert out.returncode == 2 and "drop train.lr from sweep()" in out.stderr
    assert not (tmp_path / "s").exists()  # nothing written


@pytest.fixture(scope="module")
def transfer(env, tmp_path_factory):  # noqa: F811
    """(sweep dir, CompletedProcess) of `sweep tune-lr` on tests/data/mup_sweep.py:mup:
    widths 64 and 256, 5 rates packed per width, the two packs side by side."""
    path = tmp_path_factory.mktemp("transfer") / "mup"
    began = time.perf_counter()
    result = run_cli("sweep", "tune-lr", MUP_SWEEP + ":mup", "--sweep-dir", str(path),
                     "--parallel", "2", env=env)
    print(f"\nsweep tune-lr {MUP_SWEEP}:mup, {time.perf_counter() - began:.1f} s:\n"
          f"{result.stdout}")
    assert result.returncode == 0, result.stderr
    return path, result


@pytest.mark.slow
def test_mup_learning_rate_transfers_from_d64_to_d256(transfer):
    path, result = transfer
    shapes = json.loads((path / "tuned_lr.json").read_text())["shapes"]
    best = {r["shape"]: r for r in shapes.values()}
    small, large = best["d64-h4"], best["d256-h16"]
    assert small["edge"] is None and large["edge"] is None, result.stdout
    assert 0.5 <= large["lr"] / small["lr"] <= 2.0, result.stdout


def test_tune_lr_packs_each_shape_and_writes_rates_sweep_run_uses(transfer, command, env):  # noqa: F811
    path, result = transfer
    assert result.stderr.count("packed as one program with 4 more") == 2
    record = json.loads((path / "tuned_lr.json").read_text())
    assert [r["shape"] for r in record["shapes"].values()] == ["d64-h4", "d256-h16"]
    assert set(result.stdout.split()) >= {"d64-h4:", "d256-h16:"}
    for r in record["shapes"].values():
        low, high = r["interval"]
        assert r["grid"][0] <= low <= r["lr"] <= high <= r["grid"][-1]
        assert r["states"] == ["done"] * 5 and r["sequences"] == 8 * 8  # batches x batch
        for name, loss in zip(r["runs"], r["eval_loss"], strict=True):  # the loop's own
            last = json.loads((path / "tune-lr" / "runs" / name / "metrics.jsonl")
                              .read_text().splitlines()[-1])
            assert last["step"] == r["steps"] == 60
            assert loss == pytest.approx(last["eval_loss"], abs=1e-5)
    # `sweep run` into the same dir trains each run at its shape's rate
    spec = MUP_SWEEP + ":mup"
    out = command("sweep", "run", spec, "--sweep-dir", path, "--dry-run", env=env)
    assert out.returncode == 0 and "train.lr of 2 runs from" in out.stderr, out.stderr
    with pytest.MonkeyPatch.context() as patch:  # the sweep file reads the cache from env
        patch.setenv("TINYSCALE_TEST_CACHE", env["TINYSCALE_TEST_CACHE"])
        runs = tune.apply(str(path), plan.expand(spec)[1], lambda m: None)
    assert [r.values.train.lr for r in runs] == [r["lr"] for r in record["shapes"].values()]
    # a shape it has no rate for is refused, not trained at another rate (an override
    # of what sweep() itself sets, such as quickstart's model.n_layers, changes nothing)
    out = command("sweep", "run", spec, "--sweep-dir", path, "--dry-run",
                  "--config.model.n_layers=2", env=env)
    assert out.returncode == 2 and "has no tuned learning rate" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
