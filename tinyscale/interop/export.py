"""`tinyscale export RUN --format hf --out DIR`: a trained run as a Hugging Face checkpoint.

DIR gets config.json for the matching transformers class -- `GPTNeoForCausalLM`
(gpt_neo), `PhiForCausalLM` (phi), `LlamaForCausalLM` (llama, all layers global),
`MistralForCausalLM` (llama, all layers local: the sliding window) or
`MixtralForCausalLM` (llama with experts) -- model.safetensors, and the run's tokenizer
twice: the sentencepiece model itself (tokenizer.model) and a `tokenizers` BPE/Unigram
built from it (tokenizer.json, loaded by `AutoTokenizer`), which encodes as
sentencepiece does. A shape no transformers class has (a llama mixing local and global
layers, a parallel block outside phi, a µP run) is refused with one line. The inverse of
tinyscale/interop/hf.py: exporting and loading back gives the same logits (tests).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from tinyscale.config import SENTENCEPIECE_TOKENIZERS, attention_types
from tinyscale.errors import TinyscaleError
from tinyscale.model.spec import ModelSpec
from tinyscale.train import trained


def _arch(c) -> str:
    m = c.model
    kinds = set(attention_types(m))
    if m.parametrization != "standard":
        raise TinyscaleError("a model.parametrization=mup run multiplies its logits by "
                             "1/m and scales attention by 1/d_head, which no Hugging Face "
                             "class does: export a run of the standard parametrization.")
    if m.family == "gpt_neo":
        if m.parallel_block:
            raise TinyscaleError("a gpt_neo run with model.parallel_block has no Hugging Face "
                                 "class: export a run without it.")
        return "GPTNeoForCausalLM"
    if m.family == "phi":
        if kinds != {"global"}:
            raise TinyscaleError("PhiForCausalLM has no local attention: export a phi run "
                                 "with model.attention_pattern=global.")
        return "PhiForCausalLM"
    if m.parallel_block or kinds == {"global", "local"}:
        raise TinyscaleError("a llama run with model.parallel_block or with both local and "
                             "global layers has no Hugging Face class: Llama, Mistral and "
                             "Mixtral have all-global or all-local layers.")
    if m.n_experts:
        return "MixtralForCausalLM"
    return "MistralForCausalLM" if kinds == {"local"} else "LlamaForCausalLM"


def hf_config(c, vocab_size: int) -> dict:
    """config.json of the Hugging Face class that holds this run's model."""
    m, arch = c.model, _arch(c)
    common = {"architectures": [arch], "vocab_size": vocab_size, "bos_token_id": 1,
              "eos_token_id": 2, "torch_dtype": "float32",
              "max_position_embeddings": m.max_seq_len}
    if arch == "GPTNeoForCausalLM":
        return {**common, "model_type": "gpt_neo", "hidden_size": m.d_model,
                "num_layers": m.n_layers, "num_heads": m.n_heads,
                "intermediate_size": m.d_ff or 4 * m.d_model, "window_size": m.window_size,
                "attention_types": [[[kind], 1] for kind in attention_types(m)],
                "activation_function": "gelu_new", "layer_norm_epsilon": m.norm_eps,
                "resid_dropout": 0.0, "embed_dropout": 0.0, "attention_dropout": 0.0,
                "tie_word_embeddings": True}
    spec = ModelSpec.from_config(m, vocab_size)
    rope = {"rope_type": "default", "rope_theta": m.rope_theta}
    out = {**common, "hidden_size": m.d_model, "num_hidden_layers": m.n_layers,
           "num_attention_heads": m.n_heads, "num_key_value_heads": spec.n_kv_heads,
           "intermediate_size": spec.d_ff, "rope_theta": m.rope_theta,
           "tie_word_embeddings": spec.tie_embeddings, "attention_dropout": 0.0}
    if arch == "PhiForCausalLM":
        fraction = spec.rotary_dims / spec.head_size
        return {**out, "model_type": "phi", "hidden_act": "gelu_new",
                "layer_norm_eps": m.norm_eps, "partial_rotary_factor": fraction,
                "rope_parameters": {**rope, "partial_rotary_factor": fraction},
                "qk_layernorm": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0}
    out.update({"hidden_act": "silu", "rms_norm_eps": m.norm_eps, "rope_parameters": rope,
                "head_dim": spec.head_size, "attention_bias": False})
    if spec.rotary_dims != spec.head_size:
        raise TinyscaleError("Llama, Mistral and Mixtral rotate every dim of a head: export "
                             "a llama run with model.rotary_fraction=1.")
    window = m.window_size if set(attention_types(m)) == {"local"} else None
    if arch == "LlamaForCausalLM":
        return {**out, "model_type": "llama", "mlp_bias": False}
    if arch == "MistralForCausalLM":
        return {**out, "model_type": "mistral", "sliding_window": window}
    return {**out, "model_type": "mixtral", "sliding_window": window,
            "num_local_experts": m.n_experts, "num_experts_per_tok": m.experts_per_token,
            "router_aux_loss_coef": m.router_aux_coef, "output_router_logits": False,
            "router_jitter_noise": 0.0}


def state_dict(c, arrays: dict) -> dict[str, np.ndarray]:
    """The run's parameters under the Hugging Face class's tensor names."""
    a = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    n, family = c.model.n_layers, c.model.family
    out = {}

    def linear(hf, ours, bias=False):
        out[hf + ".weight"] = a[ours + "/kernel"].T
        if bias:
            out[hf + ".bias"] = a[ours + "/bias"]
    if family == "gpt_neo":
        out["transformer.wte.weight"] = a["embed/embedding"]
        out["transformer.wpe.weight"] = a["positions/embedding"]
        for i in range(n):
            p, q = f"transformer.h.{i}.", f"blocks/{i}/"
            for hf, ours in (("ln_1", "norm_attn"), ("ln_2", "norm_mlp")):
                out[p + hf + ".weight"], out[p + hf + ".bias"] = a[q + ours + "/scale"], \
                    a[q + ours + "/bias"]
            for hf, ours in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
                linear(p + "attn.attention." + hf, q + "attn/" + ours)
            linear(p + "attn.attention.out_proj", q + "attn/out", bias=True)
            linear(p + "mlp.c_fc", q + "mlp/up", bias=True)
            linear(p + "mlp.c_proj", q + "mlp/down", bias=True)
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = a["norm/scale"], \
            a["norm/bias"]
        out["lm_head.weight"] = a["embed/embedding"]
        return out
    out["model.embed_tokens.weight"] = a["embed/embedding"]
    phi = family == "phi"
    for i in range(n):
        p, q = f"model.layers.{i}.", f"blocks/{i}/"
        out[p + "input_layernorm.weight"] = a[q + "norm_attn/scale"]
        if phi:
            out[p + "input_layernorm.bias"] = a[q + "norm_attn/bias"]
        else:
            out[p + "post_attention_layernorm.weight"] = a[q + "norm_mlp/scale"]
        for hf, ours in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"),
                         ("dense" if phi else "o_proj", "out")):
            linear(p + "self_attn." + hf, q + "attn/" + ours, bias=phi)
        if phi:
            linear(p + "mlp.fc1", q + "mlp/up", bias=True)
            linear(p + "mlp.fc2", q + "mlp/down", bias=True)
        elif c.model.n_experts:
            out[p + "mlp.gate.weight"] = a[q + "mlp/router/kernel"].T
            out[p + "mlp.experts.gate_up_proj"] = np.concatenate(
                [a[q + "mlp/gate"], a[q + "mlp/up"]], axis=2).transpose(0, 2, 1)
            out[p + "mlp.experts.down_proj"] = a[q + "mlp/down"].transpose(0, 2, 1)
        else:
            for hf in ("gate", "up", "down"):
                linear(p + f"mlp.{hf}_proj", q + f"mlp/{hf}")
    out["model.final_layernorm.weight" if phi else "model.norm.weight"] = a["norm/scale"]
    if phi:
        out["model.final_layernorm.bias"] = a["norm/bias"]
    if "head/kernel" in a:
        linear("lm_head", "head", bias=phi)
    else:
        out["lm_head.weight"] = a["embed/embedding"]
    return out


def tokenizer_files(sp_model: str, out_dir: str) -> None:
    """tokenizer.model (the sentencepiece model) and tokenizer.json + its config: a
    `tokenizers` model built from it that encodes as sentencepiece does."""

    from tokenizers import (  # optional: the eval/tokenizers extra
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
    )
    from transformers import PreTrainedTokenizerFast  # optional: the hf extra
    from transformers.convert_slow_tokenizer import SentencePieceExtractor  # optional: the hf extra
    shutil.copyfile(sp_model, os.path.join(out_dir, "tokenizer.model"))
    extractor = SentencePieceExtractor(sp_model)
    if extractor.proto.trainer_spec.model_type == 1:  # unigram
        kw = extractor.extract(models.Unigram)
        model = models.Unigram(kw["vocab"], unk_id=kw["unk_id"])
    else:
        kw = extractor.extract(models.BPE)
        model = models.BPE(vocab=kw["vocab"], merges=kw["merges"], unk_token="<unk>",
                           fuse_unk=True)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(out_dir)


def export_hf(run_dir: str, out_dir: str, step: int | None = None, say=print) -> str:
    """Write the run (its newest checkpoint, or `step`) as a Hugging Face checkpoint."""
    config = trained.saved_config(run_dir)
    _arch(config)  # a shape no class holds: one line, before anything is read or written
    if config.data.tokenizer not in SENTENCEPIECE_TOKENIZERS or config.data.tokenizer_file:
        raise TinyscaleError(
            f"export --format hf writes sentencepiece tokenizers only; this run's is "
            f"config.data.tokenizer={config.data.tokenizer!r}"
            f"{' with a tokenizer_file' if config.data.tokenizer_file else ''} (a top-K cut "
            "that no Hugging Face tokenizer.json can express): train with data.tokenizer=bpe "
            "or unigram to export.")
    inside = os.path.relpath(os.path.abspath(out_dir), os.path.abspath(run_dir))
    if not inside.startswith(".."):  # the run's own files are the trainer's alone
        raise TinyscaleError(f"--out {out_dir} is inside the run directory {run_dir}: give "
                             "a place beside it, e.g. --out "
                             f"{os.path.normpath(run_dir)}-hf (a reader writes nothing into "
                             "a run).")
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise TinyscaleError(f"--out {out_dir} is not empty: give a new directory (nothing "
                             "is overwritten).")
    try:
        import transformers  # noqa: F401  # optional: the hf extra
        from safetensors.numpy import save_file  # optional: the hf extra
    except ImportError:
        raise TinyscaleError("export --format hf needs transformers and safetensors: "
                             "pip install 'tinyscale[hf]'.") from None
    run = trained.load(run_dir, step, config=config, say=say)
    vocab = run.meta["vocab_size"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(config, vocab), f, indent=2)
    tensors = {k: np.ascontiguousarray(v) for k, v in state_dict(config, run.arrays).items()}
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    tokenizer_files(os.path.join(run.data_dir, "tokenizer.model"), out_dir)
    say(f"wrote {out_dir}: {hf_config(config, vocab)['architectures'][0]} from "
        f"{run_dir} step {run.step}, {sum(x.size for x in tensors.values()):,} parameters")
    return out_dir
