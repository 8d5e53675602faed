"""`tinyscale export --format hf`: a trained run loads in transformers (offline, from the
directory) with tinyscale's logits, and its tokenizer encodes as the run's own."""

import json

import jax
import numpy as np
import pytest

from tests.conftest import RUN_FEW_TIMES, run_cli
from tests.test_train import SMOKE, cache  # noqa: F401
from tinyscale.train import trained

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
def test_an_export_loads_in_transformers_with_the_same_logits(cache, tmp_path, arch,  # noqa: F811
                                                              command):
    run, out = tmp_path / "run", tmp_path / "hf"
    result = command("train", "--config", SMOKE, "--workdir", str(run),
                     f"--config.data.cache_dir={cache}", "--config.train.steps=5",
                     "--config.eval.at_end=false", *FAMILIES[arch])
    assert result.returncode == 0, result.stderr
    result = command("export", str(run), "--format", "hf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["architectures"] == [arch]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == arch
    t = trained.load(str(run), say=lambda m: None)
    tokens = np.random.default_rng(0).integers(0, t.meta["vocab_size"], (2, 40))
    forward = jax.jit(lambda arrays, x: t.params.model(arrays)(x),  # one program, run once
                      compiler_options=RUN_FEW_TIMES)
    ours = np.asarray(forward(t.arrays, tokens))
    with torch.no_grad():
        theirs = hf(torch.tensor(tokens)).logits.numpy()
    print(f"\n{arch}: max |logit difference| {np.abs(ours - theirs).max():.2e}")
    assert np.abs(ours - theirs).max() <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "Once upon a time, Lily and Tom found a  big red ball.\nThey played all day!"
    assert tok(text, add_special_tokens=False)["input_ids"] == t.sp.encode(text)
    again = command("export", str(run), "--format", "hf", "--out", str(out))
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


def test_eval_hf_scores_a_local_gpt_neo_beside_the_sweep(cache, tmp_path):  # noqa: F811
    """A GPT-Neo made here (random weights, a BPE tokenizer trained on SynthStories,
    saved in the Hugging Face layout) is scored on the sweep's prompts with the sweep's
    metrics, and `analyze` lists it among the runs."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tinyscale import config as config_lib
    from tinyscale.data.synthstories import generate
    hf_dir, sweep = tmp_path / "tiny-neo", tmp_path / "sweep"
    stories = [s.text for s in generate.stories(300, seed=0)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = __import__("tokenizers").decoders.ByteLevel()
    tok.train_from_iterator(stories, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok,
                                                eos_token="<|endoftext|>", unk_token="<unk>")
    fast.save_pretrained(hf_dir)
    torch.manual_seed(0)
    cfg = transformers.GPTNeoConfig(vocab_size=len(fast), hidden_size=32, num_layers=2,
                                    num_heads=2, max_position_embeddings=128, window_size=64,
                                    attention_types=[[["global", "local"], 1]],
                                    eos_token_id=fast.eos_token_id)
    transformers.GPTNeoForCausalLM(cfg).save_pretrained(hf_dir)
    base = config_lib.get_config()
    base.data.update(cache_dir=cache, train_stories=1500, eval_stories=100, vocab_size=512)
    base.eval.update(prompts=6, max_new_tokens=24, fluency=False)
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(
        {"spec": "none", "arg": "", "source": "", "base": base.to_dict(), "runs": []}))
    result = run_cli("eval", "--hf", str(hf_dir), "--sweep", str(sweep))
    assert result.returncode == 0, result.stderr
    run = sweep / "external" / "tiny-neo"
    scores = json.loads((run / "eval.json").read_text())
    assert scores["n_completions"] == 6 and 0 <= scores["coherence"] <= 1
    assert "consistency_above_chance" in scores
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(s["continuation"] for s in samples[:1])
    state = json.loads((run / "state.json").read_text())
    assert state["state"] == "done" and state["hf_source"] == str(hf_dir)
    from analysis import runs
    final = runs.final(runs.load(str(sweep)))
    assert list(final["run"]) == ["external/tiny-neo"]
    assert final["architecture"].iloc[0] == "gpt_neo"
    assert final["params"].iloc[0] == sum(p.numel() for p in
                                          transformers.GPTNeoForCausalLM(cfg).parameters())
    again = run_cli("eval", "--hf", str(hf_dir), "--sweep", str(sweep))
    assert again.returncode == 2 and "already scored" in again.stderr
    from analysis import report  # a reference point, never a data point of the fits
    results = report.compute(str(sweep), bootstrap=0)
    assert results.final.empty and list(results.external["run"]) == ["external/tiny-neo"]
    assert report.compute(str(sweep), bootstrap=0, include_external=True).n_final == 1


def test_a_top_k_tokenizer_run_is_refused_in_one_line(tmp_path, refused):
    """A run on GPT-Neo's top-K tokenizer: no Hugging Face tokenizer.json expresses the
    cut, so export says so before reading or writing anything."""
    from tinyscale import config as config_lib
    c = config_lib.get_config()
    c.data.update(tokenizer="gpt_neo_top10k", vocab_size=2000)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(c.to_dict()))
    result = refused("export", str(run), "--format", "hf", "--out", str(tmp_path / "hf"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "data.tokenizer" in result.stderr
    assert not (tmp_path / "hf").exists()
