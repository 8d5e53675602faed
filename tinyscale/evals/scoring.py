"""The scores of story completions, metric by metric.

Each completion's offline metrics (coherence.py; grammar of real English through Link
Grammar; the instructions it followed), the reference LM's fluency and context use
(`ReferenceScores`), creativity (distinct-n with bootstrap standard errors, novelty,
MAUVE), and the means, standard errors and chance baselines over completions that
run.py writes into eval.json.
"""

from __future__ import annotations

import math
import re

import numpy as np

from tinyscale.data.synthstories import instruct
from tinyscale.evals import MissingOptional, coherence, creativity, mauve
from tinyscale.evals.linkgrammar import LinkGrammar
from tinyscale.model.reference_lm import ReferenceLM


def english_grammar(say=print):
    """(parses, linked_share) of Link Grammar, or (NaN, None) and a note when it is not
    installed."""
    try:
        lg = LinkGrammar()
    except MissingOptional as missing:
        say(f"note: {missing}")
        return (lambda _: np.nan), None
    return lg.parses, lg.linked_share


def score(dataset: str, prompt_set, completions, say=print) -> list[dict]:
    """Per-completion scores; optional parts that are missing are skipped, and said so.
    Row i reads completion i after prompt i (the chance rows pass other prompts'
    completions); the prompt's reference continuation sets the length target."""
    if dataset == "synthstories":
        rows = [coherence.synth_scores(p.story_text, text, ended, p.reference)
                for p, (text, ended) in zip(prompt_set, completions, strict=True)]
    else:
        grammar, linked = english_grammar(say)
        rows = [coherence.english_scores(p.story_text, text, ended, grammar, linked,
                                         p.reference)
                for p, (text, ended) in zip(prompt_set, completions, strict=True)]
    for p, (text, _), row in zip(prompt_set, completions, rows, strict=True):
        if p.instructions is not None:  # instruct data: how many of them it followed
            row["instruction"] = instruct.score(p.instructions, p.story_text, text,
                                                english=dataset != "synthstories")
    return rows


def distinct_sentences(text: str) -> str:
    """The text with every sentence that repeats an earlier one (ignoring case) dropped."""
    seen, kept = set(), []
    for sentence in re.findall(r'[^.!?]*[.!?]+"?|[^.!?]+$', text):
        key = " ".join(sentence.lower().split())
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence.strip())
    return (" " if text[:1].isspace() else "") + " ".join(kept)


CONTEXT_CHARS, TEXT_CHARS = 1024, 512  # what the reference LM reads of prompt, completion


class ReferenceScores:
    """log p_ref(completion | prompt) per token for (completion, prompt) index pairs,
    each pair computed once, in batches. The reference LM reads the last CONTEXT_CHARS
    characters of the prompt and the first TEXT_CHARS of the completion's distinct
    sentences: the whole beginning of a TinyStories-length story (where its characters
    and their genders are introduced) and the completion's next sentences, at bounded
    cost (docs/results.md compares shorter windows). A sentence
    that repeats an earlier one is dropped first: any LM finds a loop easy to predict (a
    small model's loops would outscore a larger model's varied stories); `completion`
    penalises the loop itself."""

    def __init__(self, lm, prompt_set, completions, batch: int = 16):
        self.lm, self.batch, self.cache = lm, batch, {}
        self.texts = [distinct_sentences(text)[:TEXT_CHARS] for text, _ in completions]
        self.contexts = [p.text[-CONTEXT_CHARS:] for p in prompt_set]

    def logp(self, pairs: list[tuple[int, int]]) -> np.ndarray:
        todo = sorted({pair for pair in pairs if pair not in self.cache})
        for i in range(0, len(todo), self.batch):
            chunk = todo[i:i + self.batch]
            values = self.lm.mean_logp([self.texts[c] for c, _ in chunk],
                                       [self.contexts[p] for _, p in chunk])
            self.cache.update(zip(chunk, values, strict=True))
        return np.array([self.cache[pair] for pair in pairs], float)


def load_reference_lm(cache_dir: str, say=print):
    """The reference LM, or None (and a note) when it is not installed."""
    try:
        return ReferenceLM(cache_dir=cache_dir)
    except MissingOptional as missing:
        say(f"note: {missing}")
        return None


def add_fluency(rows, scores: ReferenceScores, limit: int) -> None:
    """Reference-LM fluency of the first `limit` completions (the others get none)."""
    count = min(limit, len(rows))
    logp = scores.logp([(i, i) for i in range(count)])
    for row, value in zip(rows[:count], logp, strict=True):
        row["fluency"] = float(np.exp(value)) if np.isfinite(value) else 0.0  # the
        # geometric-mean token probability, in [0, 1]
        row["reference_logp"] = float(value)


def context_pairs(count: int) -> tuple[list[int], list[int]]:
    """(the other prompt a true row's completion is also read after, the other prompt a
    chance row's completion is also read after): never the row's own prompt, and for a
    chance row never the prompt its completion was written for (when count > 2)."""
    chance = coherence.chance_pairs(count)
    return chance, [(i + 1) % count if count > 2 else chance[i] for i in range(count)]


def add_context_use(rows, chance_rows, scores: ReferenceScores) -> None:
    """Consistency from the reference LM (real English): for each row, the pointwise
    mutual information log p_ref(c | its prompt) - log p_ref(c | another prompt) per
    token, folded into consistency and coherence (`coherence.with_context`)."""
    n = len(rows)
    other, chance_other = context_pairs(n)
    chance = coherence.chance_pairs(n)
    own = scores.logp([(i, i) for i in range(n)])
    off = scores.logp([(i, other[i]) for i in range(n)])
    chance_own = scores.logp([(chance[i], i) for i in range(n)])
    chance_off = scores.logp([(chance[i], chance_other[i]) for i in range(n)])
    for row, value in zip(rows, own - off, strict=True):
        coherence.with_context(row, value if np.isfinite(value) else 0.0)
    for row, value in zip(chance_rows, chance_own - chance_off, strict=True):
        coherence.with_context(row, value if np.isfinite(value) else 0.0)


def bootstrap_se(statistic, n: int, resamples: int = 200, seed: int = 0) -> float:
    """Standard error of a statistic of the whole list of `n` completions (distinct-n),
    from resampling them: statistic(indices of a resample)."""
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    return float(np.std(values, ddof=1))


def add_creativity(t, prompt_set, completions, lm, say=print) -> dict:
    """distinct-1/2/3 (with bootstrap standard errors), novelty against the run's
    training split (when it has one), and MAUVE against the true continuations (real
    English, when the reference LM and mauve-text are installed)."""
    e, texts = t.config.eval, [text for text, _ in completions]
    data_dir = getattr(t, "data_dir", None)  # eval --hf models have no training split
    index = creativity.NgramIndex.build_or_load(data_dir, say=say) \
        if e.novelty and data_dir and "train" in t.meta["splits"] else None
    out = creativity.summary(texts, index)
    for n in (1, 2, 3):
        out[f"distinct_{n}_se"] = bootstrap_se(creativity.Distinct(texts, n).of, len(texts))
    if e.mauve and lm is not None:
        try:
            out.update(mauve.mauve_of_texts(texts, [p.reference for p in prompt_set],
                                            [p.text for p in prompt_set], lm=lm))
        except MissingOptional as missing:
            say(f"note: {missing}")
    return out


def summarize(rows: list[dict]) -> dict:
    """Mean and standard error of every metric over completions."""
    out = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows if isinstance(r.get(key), (int, float))], float)
        values = values[np.isfinite(values)]
        if len(values):
            out[key] = float(values.mean())
            out[f"{key}_se"] = float(values.std(ddof=1) / math.sqrt(len(values))) \
                if len(values) > 1 else 0.0
    return out


CHANCE = (*coherence.METRICS, "consistency_entity", "context_use")


def add_chance(result: dict, rows: list[dict], chance_rows: list[dict]) -> None:
    """Each metric's chance baseline (prompts read with other prompts' completions) into
    `result` and into each row as <metric>_chance, and each consistency signal above
    chance with its standard error (of the paired per-prompt differences):
    (value - chance) / (1 - chance) for the shares, value - chance for context_use."""
    for row, other in zip(rows, chance_rows, strict=True):
        row.update({f"{m}_chance": other[m] for m in CHANCE if m in other})
        if "instruction" in other:  # another story's continuation, read for these
            row["instruction_chance"] = other["instruction"]  # instructions
    values = np.array([r.get("instruction_chance", np.nan) for r in rows], float)
    if np.isfinite(values).any():  # NaN: no instruction left open after the prompt
        result["instruction_chance"] = float(np.nanmean(values))
    for m in CHANCE:
        values = np.array([r[f"{m}_chance"] for r in rows if f"{m}_chance" in r], float)
        if len(values) and np.isfinite(values).all():
            result[f"{m}_chance"] = float(values.mean())
    for m in ("consistency", "consistency_entity", "context_use"):
        chance = result.get(f"{m}_chance")
        if chance is None or m not in result:
            continue
        scale = 1.0 if m == "context_use" else 1.0 - chance
        diffs = np.array([r[m] - r[f"{m}_chance"] for r in rows], float)
        result[f"{m}_above_chance"] = float(np.mean(diffs)) if m == "context_use" \
            else coherence.above_chance(float(np.mean([r[m] for r in rows])), chance)
        result[f"{m}_above_chance_se"] = float(
            diffs.std(ddof=1) / math.sqrt(len(diffs)) / scale) \
            if len(diffs) > 1 and scale > 0 else 0.0
