"""Creativity of a run's completions: distinct-n and novelty against the training data.

* `distinct_n`: unique word n-grams over all word n-grams across a run's completions
  (Li et al. 2016): low when the completions repeat themselves or each other.
* `NgramIndex.novelty`: the share of a completion's word 8-grams that occur nowhere in
  the training split: 0 for text copied from a training story, near 1 for new text.
  The index holds a 64-bit hash of every word 8-gram of the training split's stories,
  sorted and unique, built once per prepared data directory and kept beside its
  train.bin (the data directory never changes once prepared, so neither does the index).

Words, for both: lower-cased runs of letters, digits and inner apostrophes (’ as ');
punctuation is ignored, and n-grams never cross from one story or completion to the next.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import time

import numpy as np
import sentencepiece as spm

from tinyscale.data import pipeline

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
HASH_VERSION = 1  # part of the index's file name: bump when the hashing changes
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: the n-gram polynomial's base


def words(text: str) -> list[str]:
    """Lower-cased words: runs of letters and digits, with the apostrophes inside them
    (don't, Tom's; a quotation's single quotes are not part of its words)."""
    return _WORD.findall(text.lower().replace("’", "'"))


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over `texts` (NaN when there are none)."""
    seen, total = set(), 0
    for text in texts:
        grams = ngrams(words(text), n)
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else math.nan


class Distinct:
    """distinct-n of any resample of `texts` -- `of(indices)`, repeats allowed -- equal to
    distinct_n([texts[i] for i in indices], n), each text's n-grams found once (a
    bootstrap re-reads none of them)."""

    def __init__(self, texts: list[str], n: int):
        ids: dict = {}
        self.grams = [np.array([ids.setdefault(g, len(ids)) for g in ngrams(words(t), n)],
                               np.int64) for t in texts]
        self.counts = np.array([len(g) for g in self.grams], np.int64)

    def of(self, indices: np.ndarray) -> float:
        total = int(self.counts[indices].sum())
        if not total:
            return math.nan
        seen = np.unique(np.concatenate([self.grams[i] for i in np.unique(indices)]))
        return len(seen) / total


class _WordHashes:
    """A stable 64-bit hash per word (Python's own hash() changes between processes)."""

    def __init__(self):
        self.cache: dict[str, int] = {}

    def __call__(self, tokens) -> np.ndarray:
        """Hashes of `tokens` (a sequence of words), as uint64: each distinct word hashed
        once, the rest dictionary lookups (no pandas: importing it cost every evaluation
        more than the lookups of a whole training split)."""
        cache = self.cache
        for word in set(tokens).difference(cache):
            cache[word] = int.from_bytes(
                hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return np.fromiter(map(cache.__getitem__, tokens), np.uint64, len(tokens))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the 64 output bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """The hash of every run of `n` consecutive words (uint64; arithmetic wraps mod 2^64)."""
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    h = np.zeros(count, np.uint64)
    for i in range(n):
        h = h * _MULT + word_hashes[i:i + count]
    return _mix(h)


def sorted_unique(hashes: np.ndarray) -> np.ndarray:
    """np.unique by sorting (np.unique itself is many times slower on uint64 in numpy 2)."""
    s = np.sort(hashes)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _training_stories(data_dir: str, chunk_tokens: int = 1 << 22):
    """The training split's stories, decoded with the data's tokenizer, in lists of texts
    (train.bin holds every story's ids followed by EOS)."""
    eos = pipeline.load_meta(data_dir)["eos_id"]
    tok = pipeline.load_tokenizer(data_dir)
    stream = pipeline.tokens(data_dir, "train")
    start, size = 0, chunk_tokens
    while start < len(stream):
        block = np.asarray(stream[start:start + size])
        ends = np.flatnonzero(block == eos)
        if start + len(block) < len(stream):  # more follows: stop at the last story's end
            if not len(ends):  # one story longer than the block
                size *= 2
                continue
            block, ends = block[:ends[-1] + 1], ends[:-1]
        else:  # the last story may lack its EOS
            ends = ends[ends < len(block) - 1]
        stories = [s[:-1].tolist() if s[-1] == eos else s.tolist()
                   for s in np.split(block, ends + 1)]
        if isinstance(tok, spm.SentencePieceProcessor):  # decodes a batch in C++
            yield tok.decode(stories)
        else:  # topk.TopK: one story at a time
            yield [tok.decode(s) for s in stories]
        start += len(block)
        size = chunk_tokens


def _hash_stories(texts: list[str], n: int, word_hash: _WordHashes) -> np.ndarray:
    """Sorted unique hashes of the word n-grams inside each of `texts`."""
    per_text = [words(t) for t in texts]
    lengths = np.fromiter(map(len, per_text), np.int64, len(per_text))
    flat = list(itertools.chain.from_iterable(per_text))
    if len(flat) < n:
        return np.zeros(0, np.uint64)
    owner = np.repeat(np.arange(len(per_text)), lengths)
    inside = owner[:len(flat) - n + 1] == owner[n - 1:]  # n-grams within one text
    return sorted_unique(ngram_hashes(word_hash(flat), n)[inside])


class NgramIndex:
    """The set of word n-grams (as 64-bit hashes) of a prepared data dir's training split."""

    def __init__(self, hashes: np.ndarray, n: int = 8, built: bool = False,
                 path: str | None = None):
        """`hashes`: sorted, unique uint64 (memory-mapped when loaded from its file)."""
        self.hashes, self.n, self.built, self.path = hashes, n, built, path
        self._word_hash = _WordHashes()

    @staticmethod
    def path_for(data_dir: str, n: int = 8) -> str:
        """Where the index of `data_dir` lives: keyed by the data (tokenizer hash, token
        count) and the hashing, so a re-prepared folder never reads an old index."""
        meta = pipeline.load_meta(data_dir)
        train = meta["splits"]["train"]
        key = hashlib.sha256(f"{HASH_VERSION}/{n}/{meta.get('tokenizer_sha256')}/"
                             f"{train['tokens']}/{train['stories']}".encode()).hexdigest()[:12]
        return os.path.join(data_dir, f"ngrams{n}-{key}.npy")

    @classmethod
    def build(cls, data_dir: str, n: int = 8) -> NgramIndex:
        """Hash every word n-gram of the training split (in memory; nothing written)."""
        word_hash, parts = _WordHashes(), []
        for texts in _training_stories(data_dir):
            parts.append(_hash_stories(texts, n, word_hash))
            # merge like a binary counter: each hash is re-sorted O(log chunks) times, and
            # the n-grams that many chunks share are held about once
            while len(parts) > 1 and len(parts[-2]) <= 2 * len(parts[-1]):
                parts[-2:] = [sorted_unique(np.concatenate(parts[-2:]))]
        hashes = sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        return cls(hashes, n, built=True)

    @classmethod
    def build_or_load(cls, data_dir: str, n: int = 8, say=print) -> NgramIndex:
        """The index of `data_dir`'s training split: read from beside the data, or built
        and saved there (atomically: two processes may build it at once; both write the
        same array, the last rename wins). A folder that cannot be written to gets an
        index in memory only."""
        data_dir = os.path.expanduser(data_dir)
        path = cls.path_for(data_dir, n)
        if os.path.exists(path):
            try:
                hashes = np.load(path, mmap_mode="r")
                if hashes.dtype == np.uint64 and hashes.ndim == 1:
                    return cls(hashes, n, path=path)
            except (ValueError, OSError):
                pass
            say(f"novelty: {path} is damaged; building it again")
        tokens = pipeline.load_meta(data_dir)["splits"]["train"]["tokens"]
        say(f"novelty: indexing the word {n}-grams of the training split ({tokens:,} tokens)")
        start = time.time()
        index = cls.build(data_dir, n)
        tmp = f"{path}.tmp-{os.getpid()}.npy"
        try:
            np.save(tmp, index.hashes)
            os.replace(tmp, path)
            index.path = path
        except OSError as error:
            say(f"note: the novelty index could not be saved in {data_dir} ({error}); "
                "it is kept in memory for this evaluation only")
            if os.path.exists(tmp):
                os.remove(tmp)
        say(f"novelty: {len(index.hashes):,} distinct {n}-grams "
            f"({index.hashes.nbytes / 1e6:.1f} MB) in {time.time() - start:.1f} s")
        return index

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hash is in the index (bool array)."""
        if not len(self.hashes):
            return np.zeros(len(hashes), bool)
        at = np.searchsorted(self.hashes, hashes)
        return np.asarray(self.hashes[np.minimum(at, len(self.hashes) - 1)]) == hashes

    def novelty(self, text: str) -> float:
        """The share of `text`'s word n-grams found nowhere in the training split (NaN for
        a text of fewer than n words)."""
        tokens = words(text)
        if len(tokens) < self.n:
            return math.nan
        return float(1.0 - self.contains(ngram_hashes(self._word_hash(tokens), self.n)).mean())


def summary(texts: list[str], index: NgramIndex | None = None) -> dict:
    """A run's creativity metrics over its completions: distinct_1..3 and, with an index,
    novelty (mean over completions of at least n words, with its standard error),
    novelty_n (how many completions that is) and copied (the share of those holding at
    least one n-gram of the training split)."""
    out = {f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)}
    if index is not None:
        values = np.array([index.novelty(t) for t in texts], float)
        values = values[np.isfinite(values)]
        out["novelty_n"] = len(values)
        if len(values):
            out["novelty"] = float(values.mean())
            out["novelty_se"] = float(values.std(ddof=1) / math.sqrt(len(values))) \
                if len(values) > 1 else 0.0
            out["copied"] = float((values < 1.0).mean())
    return out
