"""Hugging Face interop (GPT-Neo, Phi, Llama, Mistral, Mixtral) and the published
parameter counts."""

import json

import numpy as np
import pytest

from tests.conftest import one_program
from tinyscale.interop.hf import gpt_neo_config, load_gpt_neo, load_llama, load_phi
from tinyscale.model import counting
from tinyscale.model.spec import ModelSpec

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def logits(model, tokens) -> np.ndarray:
    forward, state = one_program(model)
    return np.asarray(forward(state, tokens))


def hf_config(hidden, layers, heads, vocab=50257, positions=2048, window=256):
    return {"hidden_size": hidden, "num_layers": layers, "num_heads": heads,
            "vocab_size": vocab, "max_position_embeddings": positions,
            "window_size": window, "attention_types": [[["global", "local"], layers // 2]]
            if layers > 1 else [[["global"], 1]], "intermediate_size": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "resid_dropout": 0.0, "embed_dropout": 0.0, "attention_dropout": 0.0}


def test_logits_match_hugging_face_gpt_neo(tmp_path):
    cfg = hf_config(hidden=64, layers=4, heads=4, vocab=300, positions=64, window=8)
    torch.manual_seed(0)
    hf = transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(**cfg)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every tensor is tested
        for name, p in hf.named_parameters():
            if "ln" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    tokens = np.random.default_rng(0).integers(0, 300, (2, 40))  # longer than the window
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    _, model = load_gpt_neo(str(tmp_path))
    got = logits(model, tokens)
    print(f"\nmax |logit difference| vs Hugging Face: {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() <= 1e-4


def _perturb(hf, names):
    """Non-trivial norms and biases, so that every tensor is tested."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if any(n in name for n in names):
                p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("rotary", [0.4, 1.0])
def test_logits_match_hugging_face_phi(tmp_path, rotary):
    """Phi's parallel block and partial rotary embeddings (Phi-2: 0.4 of each head),
    with grouped KV heads, against transformers' PhiForCausalLM."""
    torch.manual_seed(0)
    cfg = transformers.PhiConfig(
        vocab_size=300, hidden_size=80, intermediate_size=200, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        partial_rotary_factor=rotary, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0)
    hf = transformers.PhiForCausalLM(cfg).eval()
    _perturb(hf, ("layernorm", "bias"))
    hf.save_pretrained(tmp_path)
    tokens = np.random.default_rng(0).integers(0, 300, (2, 40))
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    c, model = load_phi(str(tmp_path))
    assert c.model.rotary_fraction == rotary
    got = logits(model, tokens)
    print(f"\nmax |logit difference| vs Hugging Face Phi: {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() <= 1e-4
    counts = counting.parameter_counts(ModelSpec.from_config(c.model, 300))
    assert counts["total"] == sum(p.numel() for p in hf.parameters())


LLAMA_LIKE = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=False)


@pytest.mark.parametrize("kind", ["llama", "mistral", "mixtral"])
def test_logits_match_hugging_face_llama_mistral_mixtral(tmp_path, kind):
    """Llama; Mistral's sliding window (8, over 40 tokens) with grouped KV heads;
    Mixtral's experts and router (4 experts, top 2, with the window) -- against
    transformers' own modules, with random weights and perturbed norms."""
    torch.manual_seed(0)
    if kind == "llama":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_LIKE))
    elif kind == "mistral":
        hf = transformers.MistralForCausalLM(transformers.MistralConfig(
            **LLAMA_LIKE, sliding_window=8))
    else:
        hf = transformers.MixtralForCausalLM(transformers.MixtralConfig(
            **LLAMA_LIKE, sliding_window=8, num_local_experts=4, num_experts_per_tok=2))
    hf = hf.eval()
    _perturb(hf, ("norm",))
    hf.save_pretrained(tmp_path)
    tokens = np.random.default_rng(0).integers(0, 300, (2, 40))
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    c, model = load_llama(str(tmp_path))
    assert c.model.attention_pattern == ("global" if kind == "llama" else "local")
    got = logits(model, tokens)
    print(f"\nmax |logit difference| vs Hugging Face {kind}: {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() <= 1e-4
    counts = counting.parameter_counts(ModelSpec.from_config(c.model, 300))
    assert counts["total"] == sum(p.numel() for p in hf.parameters())
    if kind == "mixtral":  # one token uses 2 of the 4 experts of each layer
        expert = 3 * 64 * 96
        assert counts["active"] == counts["total"] - 3 * 2 * expert


# The released TinyStories models (Hugging Face roneneldan/TinyStories-*): GPT-Neo,
# vocabulary 50257, 2048 positions. TinyStories-1M's published total is 3,745,984.
RELEASED = {"1M": (64, 8, 16), "3M": (128, 8, 16), "8M": (256, 8, 16),
            "28M": (512, 8, 16), "33M": (768, 4, 16), "1Layer-21M": (1024, 1, 16),
            "2Layers-33M": (1024, 2, 16)}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_tinystories_counts(name):
    hidden, layers, heads = RELEASED[name]
    cfg = hf_config(hidden, layers, heads)
    c = gpt_neo_config(json.loads(json.dumps(cfg)))
    ours = counting.parameter_counts(ModelSpec.from_config(c.model, 50257))["total"]
    with torch.device("meta"):
        hf = transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(**cfg))
    assert ours == sum(p.numel() for p in hf.parameters())
    if name == "1M":
        assert ours == 3_745_984


# llama2.c's stories models (karpathy/llama2.c README): dim, layers, heads, vocabulary
# 32000, tied embeddings, MLP width 2/3 of 4*dim rounded up to 32; published as 15M,
# 42M and 110M parameters. Checked against Hugging Face's Llama, an independent count.
LLAMA2C = {"stories15M": (288, 6, 6, 15), "stories42M": (512, 8, 8, 42),
           "stories110M": (768, 12, 12, 110)}


@pytest.mark.parametrize("name", sorted(LLAMA2C))
def test_llama2c_counts(name):
    from tinyscale import config as config_lib
    dim, layers, heads, millions = LLAMA2C[name]
    c = config_lib.get_config()
    c.model.update(family="llama", d_model=dim, n_layers=layers, n_heads=heads)
    spec = ModelSpec.from_config(c.model, 32000)
    ours = counting.parameter_counts(spec)["total"]
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=32000, hidden_size=dim, intermediate_size=spec.d_ff,
            num_hidden_layers=layers, num_attention_heads=heads, tie_word_embeddings=True))
    assert ours == sum(p.numel() for p in hf.parameters())
    assert round(ours / 1e6) == millions
