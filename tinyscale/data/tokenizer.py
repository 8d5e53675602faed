"""Sentencepiece tokenizers trained on a corpus's training split, cached by settings."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from collections.abc import Iterable

import sentencepiece as spm

from tinyscale.errors import TinyscaleError

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2  # EOS separates stories in the token stream


def train(texts: Iterable[str], vocab_size: int, model_type: str, sample_mb: int) -> bytes:
    """Train a sentencepiece model on up to `sample_mb` MB of `texts`; the model bytes.

    Normalisation is off so that decode(encode(text)) == text for every character
    seen in training.
    """
    budget = sample_mb * 1_000_000

    def sample():
        used = 0
        for text in texts:
            if used >= budget:
                return
            used += len(text.encode())
            yield text

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sample(), model_writer=model, vocab_size=vocab_size,
            model_type=model_type, character_coverage=1.0, normalization_rule_name="identity",
            remove_extra_whitespaces=False, split_digits=True, max_sentence_length=1 << 16,
            unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1, num_threads=os.cpu_count(),
            minloglevel=2)
    except RuntimeError as error:
        if "Vocabulary size" in str(error) or "vocab_size" in str(error):
            raise TinyscaleError(
                f"config.data.vocab_size={vocab_size} is too large for this corpus: "
                f"lower --config.data.vocab_size ({error})") from None
        raise
    return model.getvalue()


def cached(texts: Iterable[str], corpus_key: str, vocab_size: int, model_type: str,
           sample_mb: int, cache_dir: str) -> str:
    """Path of the tokenizer for (corpus, settings), training it on first use."""
    key = hashlib.sha256(
        f"{corpus_key}/{vocab_size}/{model_type}/{sample_mb}".encode()).hexdigest()[:16]
    path = os.path.join(os.path.expanduser(cache_dir), "tokenizers", f"{key}.model")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        model = train(texts, vocab_size, model_type, sample_mb)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(model)
        os.replace(tmp, path)
    return path


def load(path: str) -> spm.SentencePieceProcessor:
    if not os.path.exists(path):
        raise TinyscaleError(f"no tokenizer at {path}: run `tinyscale data prepare` first.")
    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as error:
        raise TinyscaleError(f"the tokenizer {path} is damaged ({str(error)[:80]}): delete it "
                             "and run `tinyscale data prepare` again.") from None


def encode_batches(sp: spm.SentencePieceProcessor, texts: Iterable[str], chunk: int = 2048):
    """Yield (token ids per text, bytes per text) for chunks of texts, EOS appended."""
    it = iter(texts)
    while batch := list(itertools.islice(it, chunk)):
        ids = sp.encode(batch, num_threads=os.cpu_count())
        yield [x + [EOS_ID] for x in ids], [len(t.encode()) for t in batch]
