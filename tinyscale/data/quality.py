"""Data quality as a knob: noise put into the training split, and filters that take it out.

`data.noise` replaces that share of the training stories by corrupted ones (the
corruptions of `synthstories/corrupt.py`, applied everywhere they can be in the story,
one kind per story drawn from `data.noise_kinds`); which stories, and how, is a pure
function of (`data.noise_seed`, the story's index). `data.filter` scores every training
story and keeps the best `data.filter_keep` share, as Phi kept "textbook-quality" text:

* `grammar` (SynthStories): the share of a story's sentences that the corpus grammar
  accepts with no consistency error (names, pronouns, objects) -- exact;
* `reference_lm` (any English): the story's mean log-likelihood per token under the
  reference LM (SmolLM2-135M, `model/reference_lm.py`), scored in batches.

Scores are cached under `data.cache_dir/scores/`, keyed by the corpus (noise included)
and the filter, so other `filter_keep` shares reuse them, and saved with the prepared
data (filter.npz: each story's score, kept or not, corrupted or not). The prepared data's meta.json
records the noise (how many stories, of which kind) and the filter (kept, its cost, and
its precision and recall at removing the stories the noise corrupted). The eval split is
never touched: held-out loss is measured on clean text.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
from tqdm import tqdm

from tinyscale.config import noise_kinds as kinds
from tinyscale.data import location
from tinyscale.data.synthstories.corrupt import CORRUPTIONS
from tinyscale.data.synthstories.validate import validate
from tinyscale.model.reference_lm import ReferenceLM

LM_BATCH = 16  # stories per reference-LM batch (sorted by length: little padding)


def noisy_mask(d, count: int) -> np.ndarray:
    """Which of `count` training stories the noise corrupts: exactly round(noise x count),
    drawn by data.noise_seed."""
    chosen = np.random.default_rng([d.noise_seed, count]).permutation(count)
    mask = np.zeros(count, bool)
    mask[chosen[:round(d.noise * count)]] = True
    return mask


def _corrupted(text: str, index: int, d, names: tuple[str, ...]) -> tuple[str, str | None]:
    """(story `index` corrupted, the corruption applied; None if none has anything to
    change in it)."""
    rng = random.Random((d.noise_seed << 40) + index)
    order = list(names)
    rng.shuffle(order)
    for kind in order:  # the first kind that has something to corrupt in this story
        out = CORRUPTIONS[kind](text, rng, sites=None)
        if out is not None and out != text:
            return out, kind
    return text, None


class Training:
    """The training split after noise and filtering: `texts()` re-iterable, `count`,
    and `report` (what goes into meta.json)."""

    def __init__(self, source: Callable[[], Iterable[str]], count: int, c,
                 progress: bool = True):
        self.source, self.c, self.d = source, c, c.data
        self.names = kinds(self.d) if self.d.noise else ()
        self.mask = noisy_mask(self.d, count)
        self.report: dict = {}
        self.kept: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        labels = None
        if self.d.noise:
            labels = [kind for _, kind in self._noisy()]
            counts = {k: labels.count(k) for k in self.names}
            self.report["noise"] = {"share": self.d.noise, "kinds": list(self.names),
                                    "seed": self.d.noise_seed,
                                    "corrupted": sum(counts.values()), "stories": len(labels),
                                    "by_kind": counts}
        if self.d.filter != "none":
            scores, cost = self._scores(progress)
            self.scores = scores
            n_keep = max(1, round(self.d.filter_keep * len(scores)))
            order = np.argsort(-scores, kind="stable")  # best first; ties: corpus order
            self.kept = np.zeros(len(scores), bool)
            self.kept[order[:n_keep]] = True
            self.report["filter"] = {"method": self.d.filter, "keep": self.d.filter_keep,
                                     "scored": len(scores), "kept": int(n_keep), **cost,
                                     **_recovery(self.kept, labels)}
        self.count = int(self.kept.sum()) if self.kept is not None else count

    def save(self, folder: str) -> None:
        """Next to the prepared data: filter.npz, every training story's score, whether
        it was kept, and whether the noise corrupted it (`corrupted`)."""
        if self.scores is not None:
            np.savez(os.path.join(folder, "filter.npz"), scores=self.scores, kept=self.kept,
                     corrupted=self.mask if self.names else np.zeros(len(self.kept), bool))

    def _noisy(self):
        for i, text in enumerate(self.source()):
            yield _corrupted(text, i, self.d, self.names) if self.names and self.mask[i] \
                else (text, None)

    def texts(self):
        for i, (text, _) in enumerate(self._noisy()):
            if self.kept is None or self.kept[i]:
                yield text

    def _scores(self, progress: bool) -> tuple[np.ndarray, dict]:
        values = {"corpus": location.data_key(self.c, filtered=False),
                  "filter": self.d.filter}
        key = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        path = os.path.join(os.path.expanduser(self.d.cache_dir), "scores", f"{key}.npz")
        if os.path.exists(path):
            with np.load(path) as saved:
                return saved["scores"], json.loads(str(saved["cost"]))
        texts = [text for text, _ in self._noisy()]
        start = time.perf_counter()
        scorer = {"grammar": grammar_scores, "reference_lm": self._lm_scores}[self.d.filter]
        scores = scorer(texts, progress)
        seconds = time.perf_counter() - start
        cost = {"score_seconds": round(seconds, 2),
                "stories_per_s": round(len(texts) / max(seconds, 1e-9), 1)}
        if progress:
            print(f"scored {len(texts):,} stories with the {self.d.filter} filter in "
                  f"{seconds:.1f} s ({_rate(cost['stories_per_s'])} stories/s)",
                  file=sys.stderr)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, scores=scores, cost=json.dumps(cost))
        os.replace(tmp, path)
        return scores, cost

    def _lm_scores(self, texts: list[str], progress: bool) -> np.ndarray:
        lm = ReferenceLM(cache_dir=self.d.cache_dir)
        return reference_lm_scores(lm, texts, progress)


def _bar(total: int, desc: str, progress: bool):
    return tqdm(total=total, desc=desc, unit=" stories", disable=not progress,
                file=sys.stderr, mininterval=0.5)


def grammar_scores(texts: list[str], progress: bool = False) -> np.ndarray:
    """Per story: the share of its sentences the SynthStories grammar accepts with no
    consistency error."""
    scores = np.empty(len(texts))
    with _bar(len(texts), "grammar filter", progress) as bar:
        for i, text in enumerate(texts):
            sentences = validate(text).sentences
            scores[i] = np.mean([s.grammatical and not s.errors for s in sentences]) \
                if sentences else 0.0
            bar.update(1)
    return scores


def reference_lm_scores(lm, texts: list[str], progress: bool = False,
                        batch: int = LM_BATCH) -> np.ndarray:
    """Per story: mean log-likelihood per token under the reference LM `lm`, in batches
    of stories of similar length."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    scores = np.empty(len(texts))
    with _bar(len(texts), "reference-LM filter", progress) as bar:
        for start in range(0, len(texts), batch):
            index = order[start:start + batch]
            scores[index] = lm.mean_logp([texts[i] for i in index])
            bar.update(len(index))
    return np.nan_to_num(scores, nan=-np.inf)


def _recovery(kept: np.ndarray, labels: list | None) -> dict:
    """How well the filter found the corrupted stories: precision (of the stories it
    removed, the share corrupted) and recall (of the corrupted, the share removed)."""
    if not labels:
        return {}
    corrupted = np.array([label is not None for label in labels])
    removed = ~kept
    hits = int((removed & corrupted).sum())
    return {"precision": hits / max(1, int(removed.sum())) if removed.any() else None,
            "recall": hits / int(corrupted.sum()) if corrupted.any() else None,
            "removed": int(removed.sum()), "removed_corrupted": hits}


def describe(meta: dict) -> str:
    """One line about the noise and filter of prepared data (for `data show`), or ""."""
    parts = []
    if "noise" in meta:
        n = meta["noise"]
        parts.append(f"noise: {n['corrupted']:,} of {n['stories']:,} training stories "
                     f"corrupted ({', '.join(f'{k} {v}' for k, v in n['by_kind'].items())})")
    if "filter" in meta:
        f = meta["filter"]
        line = (f"filter {f['method']}: kept {f['kept']:,} of {f['scored']:,} "
                f"(scored at {_rate(f['stories_per_s'])} stories/s)")
        if f.get("precision") is not None:
            line += f", precision {f['precision']:.3f}, recall {f['recall']:.3f}"
        parts.append(line)
    if "generated" in meta:
        g = meta["generated"]
        parts.append(f"generated by {g['from']} (step {g['step']}): {g['stories']:,} stories "
                     f"at temperature {g['temperature']}, top-p {g['top_p']}, "
                     f"{g['ended']:.0%} ended, {_rate(g['stories_per_s'])} stories/s")
    if "quality" in meta:
        q = meta["quality"]
        parts.append(f"validator: grammatical sentences {q['grammar']:.3f}, consistent "
                     f"mentions {q.get('mentions', float('nan')):.3f}, consistent stories "
                     f"{q['consistency']:.3f}, valid stories {q['valid']:.3f}")
    return "; ".join(parts)


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 10 else f"{per_s:.2f}"
