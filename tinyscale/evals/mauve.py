"""MAUVE (Pillutla et al. 2021) between a run's completions and the prompts' true
continuations, on the reference LM's features (reference_lm.ReferenceLM.features).

MAUVE quantises the two samples' features together (l2-normalised, PCA to 90% of the
variance, k-means into about n/10 buckets) and compares the two histograms through the
divergence frontier: near 1 when the completions are spread over the clusters as the
true continuations are, near 0 when they sit in clusters of their own. The k-means
seed moves the score; `mauve_with_spread` reports the mean and standard error over
seeds. That spread is the quantisation's alone: the sampling noise of n completions
is on top of it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np

from tinyscale.evals import MissingOptional
from tinyscale.model.reference_lm import ReferenceLM

INSTALL = "pip install mauve-text faiss-cpu scikit-learn"
SEEDS = (0, 1, 2, 3, 4)


# what mauve-text imports only to featurise text with GPT-2, which tinyscale never asks
# of it (it is given features): ~4 of its ~5.6 s of import
_FEATURISER_ONLY = ("torch", "transformers")


def _compute_mauve():
    """mauve.compute_mauve, imported with torch and transformers hidden unless this process
    has them already (mauve-text then leaves its text path out). What it needs is
    imported first, unhidden: scipy looks torch up in sys.modules as it imports."""
    try:
        import faiss  # noqa: F401  optional (the eval extra), as are the two below
        import sklearn.decomposition  # noqa: F401
        import sklearn.metrics  # noqa: F401
        hidden = [m for m in _FEATURISER_ONLY if m not in sys.modules]
        sys.modules.update(dict.fromkeys(hidden))  # None there: `import torch` raises
        try:
            import mauve  # optional: mauve-text
        finally:
            for m in hidden:
                del sys.modules[m]
    except ImportError:
        raise MissingOptional(f"mauve-text is not installed (MAUVE is skipped): {INSTALL}") \
            from None
    return mauve.compute_mauve


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: faiss's k-means warns from C++ whenever a cluster gets
    fewer than 39 points, which n/10 buckets of 2n points always do."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _one_thread():
    """faiss's k-means on one thread: a few hundred points gain nothing from more, and
    OpenMP threads that wait for a busy core slow it many times over."""
    import faiss  # optional, with mauve-text: installed where mauve imported
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def buckets(n: int) -> int:
    """MAUVE's own rule: n/10 clusters for n samples a side, at least 2."""
    return max(2, round(n / 10))


def mauve_score(p_feats: np.ndarray, q_feats: np.ndarray, seed: int = 0) -> float:
    """MAUVE of features `p_feats` [n, d] against `q_feats` [m, d], k-means seeded by
    `seed`; in [0, 1], higher is closer."""
    compute = _compute_mauve()
    p, q = np.asarray(p_feats, np.float32), np.asarray(q_feats, np.float32)
    if min(len(p), len(q)) < 2:
        raise ValueError(f"MAUVE needs at least 2 samples a side, not {len(p)} and {len(q)}")
    with _quiet_stderr(), _one_thread():
        out = compute(p_features=p, q_features=q, num_buckets=buckets(min(len(p), len(q))),
                      seed=seed, verbose=False)
    return float(out.mauve)


def mauve_with_spread(p_feats: np.ndarray, q_feats: np.ndarray,
                      seeds=SEEDS) -> tuple[float, float]:
    """(mean, standard error) of MAUVE over the k-means `seeds`."""
    scores = np.array([mauve_score(p_feats, q_feats, s) for s in seeds])
    se = scores.std(ddof=1) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0
    return float(scores.mean()), float(se)


def cut(text: str, max_chars: int) -> str:
    """The first `max_chars` characters of `text`, ending before a word that would be
    cut (a last token inside a word would be read as a different word)."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    if head[-1].isalnum() and text[max_chars].isalnum():  # inside a word: drop it
        space = max(head.rfind(" "), head.rfind("\n"))
        head = head[:space] if space > 0 else head
    return head.rstrip()


def mauve_of_texts(completions: list[str], references: list[str],
                   contexts: list[str] | None = None, lm=None, cache_dir: str | None = None,
                   max_chars: int = 256, context_chars: int = 128, seeds=SEEDS) -> dict:
    """MAUVE of `completions` against `references` (the same prompts' true
    continuations), both cut to their first `max_chars` characters so that length is
    not what separates them, each read after the last `context_chars` characters of its
    prompt (`contexts`) by the reference LM (`lm`, or one loaded with `cache_dir`).
    {"mauve", "mauve_se" (over k-means seeds), "mauve_n"}; MissingOptional when
    mauve-text or the reference LM is not installed."""
    _compute_mauve()  # before the slow part: say what is missing first
    if lm is None:
        lm = ReferenceLM(cache_dir=cache_dir)
    contexts = [c[-context_chars:] for c in contexts] if contexts else None
    p = lm.features([cut(t, max_chars) for t in completions], contexts)
    q = lm.features([cut(t, max_chars) for t in references], contexts)
    mean, se = mauve_with_spread(p, q, seeds)
    return {"mauve": mean, "mauve_se": se, "mauve_n": len(completions)}
