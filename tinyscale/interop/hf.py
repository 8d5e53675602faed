"""Load Hugging Face checkpoints into tinyscale: GPT-Neo (e.g. roneneldan/TinyStories-*),
Phi (`PhiForCausalLM`: the parallel block with partial rotary embeddings), and the
Llama family -- `LlamaForCausalLM`, `MistralForCausalLM` (sliding-window attention,
grouped KV heads) and `MixtralForCausalLM` (a mixture of experts) -- into `llama`.

A checkpoint is a local directory in the Hugging Face layout: `config.json` plus
`model.safetensors` or `pytorch_model.bin`.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.errors import TinyscaleError
from tinyscale.model.params import Params
from tinyscale.model.spec import ModelSpec


def gpt_neo_config(hf: dict) -> ml_collections.ConfigDict:
    """A tinyscale config whose model matches a Hugging Face GPTNeoConfig dict."""
    c = config_lib.get_config()
    m = c.model
    m.family, m.d_model = "gpt_neo", hf["hidden_size"]
    m.n_layers, m.n_heads = hf["num_layers"], hf["num_heads"]
    m.d_ff = hf.get("intermediate_size") or 4 * hf["hidden_size"]
    m.max_seq_len, m.window_size = hf["max_position_embeddings"], hf["window_size"]
    types = [t for pattern, times in hf["attention_types"] for t in pattern * times]
    m.attention_pattern = ",".join(types)
    m.norm_eps, m.tie_embeddings = hf.get("layer_norm_epsilon", 1e-5), True
    c.data.vocab_size = hf["vocab_size"]
    if hf.get("activation_function", "gelu_new") != "gelu_new":
        raise TinyscaleError(f"activation {hf['activation_function']} is not supported: "
                             "tinyscale's GPT-Neo uses gelu_new.")
    return c


def phi_config(hf: dict) -> ml_collections.ConfigDict:
    """A tinyscale config whose model matches a Hugging Face PhiConfig dict."""
    c = config_lib.get_config()
    m = c.model
    rope = hf.get("rope_parameters") or {}
    m.family, m.d_model = "phi", hf["hidden_size"]
    m.n_layers, m.n_heads = hf["num_hidden_layers"], hf["num_attention_heads"]
    m.n_kv_heads = hf.get("num_key_value_heads") or hf["num_attention_heads"]
    m.d_ff, m.max_seq_len = hf["intermediate_size"], hf["max_position_embeddings"]
    m.window_size = m.max_seq_len
    m.rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    m.rotary_fraction = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5))
    m.norm_eps, m.tie_embeddings = hf.get("layer_norm_eps", 1e-5), False
    c.data.vocab_size = hf["vocab_size"]
    unsupported = [k for k, ok in (("hidden_act", hf.get("hidden_act", "gelu_new") == "gelu_new"),
                                   ("qk_layernorm", not hf.get("qk_layernorm", False)),
                                   ("rope_type", rope.get("rope_type", "default") == "default"))
                   if not ok]
    if unsupported:
        raise TinyscaleError(f"this Phi checkpoint's {unsupported[0]} is not supported: "
                             "tinyscale's phi has gelu_new, no q/k LayerNorm, plain RoPE.")
    return c


def llama_config(hf: dict) -> ml_collections.ConfigDict:
    """A tinyscale config matching a Hugging Face Llama, Mistral or Mixtral config dict."""
    c = config_lib.get_config()
    m = c.model
    rope = hf.get("rope_parameters") or {}
    m.family, m.d_model = "llama", hf["hidden_size"]
    m.n_layers, m.n_heads = hf["num_hidden_layers"], hf["num_attention_heads"]
    m.n_kv_heads = hf.get("num_key_value_heads") or hf["num_attention_heads"]
    m.d_ff, m.max_seq_len = hf["intermediate_size"], hf["max_position_embeddings"]
    m.rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    m.norm_eps, m.tie_embeddings = hf.get("rms_norm_eps", 1e-6), hf.get(
        "tie_word_embeddings", False)
    window = hf.get("sliding_window")
    m.attention_pattern, m.window_size = ("local", window) if window else ("global",
                                                                           m.max_seq_len)
    if hf.get("num_local_experts"):
        m.n_experts, m.experts_per_token = hf["num_local_experts"], hf["num_experts_per_tok"]
        m.router_aux_coef = hf.get("router_aux_loss_coef", m.router_aux_coef)
    c.data.vocab_size = hf["vocab_size"]
    head_dim = hf.get("head_dim") or m.d_model // m.n_heads
    unsupported = [k for k, ok in (
        ("hidden_act", hf.get("hidden_act", "silu") == "silu"),
        ("head_dim", head_dim * m.n_heads == m.d_model),
        ("attention_bias", not hf.get("attention_bias", False)),
        ("mlp_bias", not hf.get("mlp_bias", False)),
        ("rope_type", rope.get("rope_type", "default") == "default")) if not ok]
    if unsupported:
        raise TinyscaleError(f"this checkpoint's {unsupported[0]} is not supported: "
                             "tinyscale's llama has SiLU, head_dim = hidden / heads, no "
                             "biases, plain RoPE.")
    return c


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a Hugging Face checkpoint directory, as numpy arrays."""
    safetensors = os.path.join(path, "model.safetensors")
    if os.path.exists(safetensors):
        from safetensors.numpy import load_file  # optional: the hf extra
        return load_file(safetensors)
    bin_path = os.path.join(path, "pytorch_model.bin")
    if os.path.exists(bin_path):
        import torch  # optional: the hf extra
        return {k: v.float().numpy() for k, v in
                torch.load(bin_path, map_location="cpu", weights_only=True).items()}
    raise TinyscaleError(f"{path} holds no model.safetensors or pytorch_model.bin: point "
                         "it at a Hugging Face checkpoint directory.")


def _set(variable, value: np.ndarray) -> None:
    current = variable[...]
    if current.shape != value.shape:
        raise TinyscaleError(f"checkpoint tensor of shape {value.shape} does not fit a "
                             f"parameter of shape {current.shape}.")
    variable[...] = jax.device_put(value.astype(current.dtype), current.sharding)


def load_gpt_neo_weights(model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy GPT-Neo weights into a tinyscale `gpt_neo` Transformer of the same shape."""
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    _set(model.embed.embedding, sd["wte.weight"])
    _set(model.positions.embedding, sd["wpe.weight"])
    for i, block in enumerate(model.blocks):
        p = f"h.{i}."
        for norm, name in ((block.norm_attn, "ln_1"), (block.norm_mlp, "ln_2")):
            _set(norm.scale, sd[p + name + ".weight"])
            _set(norm.bias, sd[p + name + ".bias"])
        attn = p + "attn.attention."
        for dense, name in ((block.attn.query, "q_proj"), (block.attn.key, "k_proj"),
                            (block.attn.value, "v_proj"), (block.attn.out, "out_proj")):
            _set(dense.kernel, sd[attn + name + ".weight"].T)
        _set(block.attn.out.bias, sd[attn + "out_proj.bias"])
        for dense, name in ((block.mlp.up, "c_fc"), (block.mlp.down, "c_proj")):
            _set(dense.kernel, sd[p + "mlp." + name + ".weight"].T)
            _set(dense.bias, sd[p + "mlp." + name + ".bias"])
    _set(model.norm.scale, sd["ln_f.weight"])
    _set(model.norm.bias, sd["ln_f.bias"])


def load_phi_weights(model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy Phi weights into a tinyscale `phi` Transformer of the same shape."""
    sd = {k.removeprefix("model."): v for k, v in state_dict.items()}
    _set(model.embed.embedding, sd["embed_tokens.weight"])

    def dense(layer, name):
        _set(layer.kernel, sd[name + ".weight"].T)
        _set(layer.bias, sd[name + ".bias"])
    for i, block in enumerate(model.blocks):
        p = f"layers.{i}."
        _set(block.norm_attn.scale, sd[p + "input_layernorm.weight"])
        _set(block.norm_attn.bias, sd[p + "input_layernorm.bias"])
        for layer, name in ((block.attn.query, "q_proj"), (block.attn.key, "k_proj"),
                            (block.attn.value, "v_proj"), (block.attn.out, "dense")):
            dense(layer, p + "self_attn." + name)
        dense(block.mlp.up, p + "mlp.fc1")
        dense(block.mlp.down, p + "mlp.fc2")
    _set(model.norm.scale, sd["final_layernorm.weight"])
    _set(model.norm.bias, sd["final_layernorm.bias"])
    dense(model.head, "lm_head")


def load_llama_weights(model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy Llama / Mistral / Mixtral weights into a tinyscale `llama` Transformer.
    Experts come in transformers' fused layout (mlp.experts.gate_up_proj [E, 2F, D],
    down_proj [E, D, F]) or the original one (block_sparse_moe.experts.N.w1/w2/w3)."""
    sd = {k.removeprefix("model."): v for k, v in state_dict.items()}
    _set(model.embed.embedding, sd["embed_tokens.weight"])
    for i, block in enumerate(model.blocks):
        p = f"layers.{i}."
        _set(block.norm_attn.scale, sd[p + "input_layernorm.weight"])
        _set(block.norm_mlp.scale, sd[p + "post_attention_layernorm.weight"])
        for dense, name in ((block.attn.query, "q_proj"), (block.attn.key, "k_proj"),
                            (block.attn.value, "v_proj"), (block.attn.out, "o_proj")):
            _set(dense.kernel, sd[p + "self_attn." + name + ".weight"].T)
        mlp = block.mlp
        if not hasattr(mlp, "router"):
            for dense, name in ((mlp.gate, "gate_proj"), (mlp.up, "up_proj"),
                                (mlp.down, "down_proj")):
                _set(dense.kernel, sd[p + "mlp." + name + ".weight"].T)
            continue
        if p + "mlp.experts.gate_up_proj" in sd:
            router = sd[p + "mlp.gate.weight"]
            gate, up = np.split(sd[p + "mlp.experts.gate_up_proj"], 2, axis=1)  # [E, F, D]
            down = sd[p + "mlp.experts.down_proj"]  # [E, D, F]
        else:
            q = p + "block_sparse_moe."
            router = sd[q + "gate.weight"]
            n = router.shape[0]
            gate, down, up = (np.stack([sd[f"{q}experts.{e}.{w}.weight"] for e in range(n)])
                              for w in ("w1", "w2", "w3"))
        _set(mlp.router.kernel, router.T)
        _set(mlp.gate, gate.transpose(0, 2, 1))
        _set(mlp.up, up.transpose(0, 2, 1))
        _set(mlp.down, down.transpose(0, 2, 1))
    _set(model.norm.scale, sd["norm.weight"])
    if not model.spec.tie_embeddings:
        _set(model.head.kernel, state_dict["lm_head.weight"].T)


def _load(path: str, to_config, load_weights, mesh=None):
    """(config, model) of a Hugging Face checkpoint directory, through `to_config` (its
    config.json -> a tinyscale config) and `load_weights` (model, state dict)."""

    with open(os.path.join(path, "config.json")) as f:
        c = to_config(json.load(f))
    mesh = mesh or parallel.make_mesh(c)
    params = Params(ModelSpec.from_config(c.model, c.data.vocab_size), mesh, 0)
    model = params.model(params.initial)  # every array is then replaced by the file's
    load_weights(model, read_state_dict(path))
    return c, model


def load_phi(path: str, mesh=None):
    """(config, model) for a Hugging Face Phi checkpoint directory."""
    return _load(path, phi_config, load_phi_weights, mesh)


def load_gpt_neo(path: str, mesh=None):
    """(config, model) for a Hugging Face GPT-Neo checkpoint directory."""
    return _load(path, gpt_neo_config, load_gpt_neo_weights, mesh)


def load_llama(path: str, mesh=None):
    """(config, model) for a Hugging Face Llama, Mistral or Mixtral checkpoint directory."""
    return _load(path, llama_config, load_llama_weights, mesh)
