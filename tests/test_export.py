"""`tinyscale export --format hf`: a trained run loads in transformers (offline, from the
directory) with tinyscale's logits, and its tokenizer encodes as the run's own."""

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_train import SMOKE, cache  # noqa: F401

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAMILIES = {
    "LlamaForCausalLM": (),
    "MistralForCausalLM": ("--config.model.attention_pattern=local",
                           "--config.model.window_size=16", "--config.model.n_kv_heads=1"),
    "MixtralForCausalLM": ("--config.model.n_experts=4", "--config.model.experts_per_token=2"),
    "GPTNeoForCausalLM": ("--config.model.family=gpt_neo", "--config.model.window_size=16"),
    "PhiForCausalLM": ("--config.model.family=phi", "--config.model.rotary_fraction=0.5"),
}


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_an_export_loads_in_transformers_with_the_same_logits(cache, tmp_path, arch):  # noqa: F811
    run, out = tmp_path / "run", tmp_path / "hf"
    result = run_cli("train", "--config", SMOKE, "--workdir", str(run),
                     f"--config.data.cache_dir={cache}", "--config.train.steps=5",
                     "--config.eval.at_end=false", *FAMILIES[arch])
    assert result.returncode == 0, result.stderr
    result = run_cli("export", str(run), "--format", "hf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["architectures"] == [arch]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == arch

    from tinyscale import trained
    t = trained.load(str(run), say=lambda m: None)
    tokens = np.random.default_rng(0).integers(0, t.meta["vocab_size"], (2, 40))
    ours = np.asarray(t.params.model(t.arrays)(tokens))
    with torch.no_grad():
        theirs = hf(torch.tensor(tokens)).logits.numpy()
    print(f"\n{arch}: max |logit difference| {np.abs(ours - theirs).max():.2e}")
    assert np.abs(ours - theirs).max() <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "Once upon a time, Lily and Tom found a  big red ball.\nThey played all day!"
    assert tok(text, add_special_tokens=False)["input_ids"] == t.sp.encode(text)
    again = run_cli("export", str(run), "--format", "hf", "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr  # nothing overwritten


def test_a_shape_without_a_transformers_class_is_one_line(cache, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    result = run_cli("train", "--config", SMOKE, "--workdir", str(run),
                     f"--config.data.cache_dir={cache}", "--config.train.steps=2",
                     "--config.eval.at_end=false", "--config.model.parallel_block=true")
    assert result.returncode == 0, result.stderr
    result = run_cli("export", str(run), "--out", str(tmp_path / "hf"))
    assert result.returncode == 2 and "parallel_block" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "hf").exists()
