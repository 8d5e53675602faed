"""Load Hugging Face GPT-Neo checkpoints (e.g. roneneldan/TinyStories-*) into tinyscale.

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
from tinyscale.errors import TinyscaleError


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


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a Hugging Face checkpoint directory, as numpy arrays."""
    safetensors = os.path.join(path, "model.safetensors")
    if os.path.exists(safetensors):
        from safetensors.numpy import load_file
        return load_file(safetensors)
    bin_path = os.path.join(path, "pytorch_model.bin")
    if os.path.exists(bin_path):
        import torch
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


def load_gpt_neo(path: str, mesh=None):
    """(config, model) for a Hugging Face GPT-Neo checkpoint directory."""
    from flax import nnx

    from tinyscale import parallel
    from tinyscale.model import ModelSpec, Transformer
    with open(os.path.join(path, "config.json")) as f:
        c = gpt_neo_config(json.load(f))
    mesh = mesh or parallel.make_mesh(c)
    with parallel.using(mesh):
        model = Transformer(ModelSpec.from_config(c.model, c.data.vocab_size),
                            rngs=nnx.Rngs(0))
    load_gpt_neo_weights(model, read_state_dict(path))
    return c, model
