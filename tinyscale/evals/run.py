"""`tinyscale eval RUN_DIR`: held-out loss, story completions and their scores.

Writes eval.json (every metric with its standard error, and the settings used) and
samples.jsonl (each prompt, completion and its scores) into the run directory.
"""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np

from tinyscale import sample, steps, trained
from tinyscale.data import generated, pipeline, tokenizer
from tinyscale.data.synthstories import instruct
from tinyscale.evals import MissingOptional, coherence, prompts
from tinyscale.rundir import RunDir, write_atomic


def _prompt_set(t: trained.Trained):
    c, data = t.config, generated.source(t.config.data, t.meta)
    if data.dataset == "synthstories":
        return prompts.synth_prompts(c.eval.prompts, data.synth_seed, data.synth_richness,
                                     data.instruct)
    if c.eval.prompts_file:
        return prompts.load_paper_prompts(c.eval.prompts_file)[:c.eval.prompts]
    from tinyscale.data import tinystories
    builder = tinystories.from_config(data)
    return prompts.text_prompts(tinystories.texts(builder, "validation"), c.eval.prompts,
                                data.instruct)


def held_out_loss(t: trained.Trained, mesh) -> dict:
    c = t.config
    data = pipeline.Batches(t.data_dir, "eval", c.train.seq_len, c.train.batch_size, c.seed)
    loss, bpb, se = steps.held_out(steps.make_eval_step(t.params), t.arrays, data,
                                   c.eval.batches, mesh, t.meta["bytes_per_token"])
    return {"loss": loss, "loss_se": se, "bits_per_byte": bpb}


def complete(t: trained.Trained, prompt_set) -> list[tuple[str, bool]]:
    """(completion text, ended with EOS) for each prompt."""
    sp, e = t.sp, t.config.eval
    eos = getattr(t, "eos_id", tokenizer.EOS_ID)  # a Hugging Face model's own (hf.py)
    # Stay inside the positions the model knows (learned positions have no others):
    # at most half the context for new tokens, the prompt's last tokens for the rest.
    limit = t.config.model.max_seq_len
    new = min(e.max_new_tokens, limit // 2)
    keep = limit - new
    ids = [([eos] + sp.encode(p.text))[-keep:] for p in prompt_set]
    s = sample.Sampling(new, e.temperature, 0, 1.0, e.beams, eos)
    outs = sample.generate(t.params.model, t.arrays, ids, s, seed=t.config.seed,
                           prompt_length=keep)
    results = []
    for prompt_ids, out in zip(ids, outs, strict=True):
        body = [i for i in prompt_ids if i != eos]
        prefix, full = sp.decode(body), sp.decode(body + out)
        results.append((full[len(prefix):] if full.startswith(prefix) else sp.decode(out),
                        len(out) < new))
    return results


def score(dataset: str, prompt_set, completions, say=print) -> list[dict]:
    """Per-completion scores; optional parts that are missing are skipped, and said so."""
    if dataset == "synthstories":
        rows = [coherence.synth_scores(p.story_text, text, ended)
                for p, (text, ended) in zip(prompt_set, completions, strict=True)]
    else:
        try:
            from tinyscale.evals.linkgrammar import LinkGrammar
            lg = LinkGrammar()
            grammar, linked = lg.parses, lg.linked_share
        except MissingOptional as missing:
            say(f"note: {missing}")
            grammar, linked = (lambda _: np.nan), None
        rows = [coherence.english_scores(p.story_text, text, ended, grammar, linked)
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


def add_fluency(rows, prompt_set, completions, limit: int, cache_dir: str,
                say=print) -> None:
    """Reference-LM fluency of the first `limit` completions (the others get none).

    The reference LM reads the last 128 characters of the prompt and the first 256 of
    the completion's distinct sentences: enough context for a story's next sentences, and
    bounded cost. A sentence that repeats an earlier one is dropped first: any LM finds a
    loop easy to predict (a small model's loops would outscore a larger model's varied
    stories; the README's Evaluation section has the numbers); `completion` penalises
    the loop itself.
    """
    try:
        from tinyscale.evals.reference_lm import ReferenceLM, fluency
        lm = ReferenceLM(cache_dir=cache_dir)
    except MissingOptional as missing:
        say(f"note: {missing}")
        return
    texts = [distinct_sentences(text)[:256] for text, _ in completions[:limit]]
    contexts = [p.text[-128:] for p in prompt_set[:limit]]
    logp = np.concatenate([lm.mean_logp(texts[i:i + 16], contexts[i:i + 16])
                           for i in range(0, len(texts), 16)]) if texts else []
    for row, value in zip(rows, logp, strict=False):
        row["fluency"] = float(fluency(value)) if np.isfinite(value) else 0.0
        row["reference_logp"] = float(value)


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


def add_chance(result: dict, rows: list[dict], chance_rows: list[dict]) -> None:
    """Each metric's chance baseline (prompts read with other prompts' completions) into
    `result` as <metric>_chance, into each row as <metric>_chance, and consistency
    above chance with its standard error (of the paired per-prompt differences)."""
    for row, other in zip(rows, chance_rows, strict=True):
        row.update({f"{m}_chance": other[m] for m in coherence.METRICS if m in other})
        if "instruction" in other:  # another story's continuation, read for these
            row["instruction_chance"] = other["instruction"]  # instructions
    values = np.array([r.get("instruction_chance", np.nan) for r in rows], float)
    if np.isfinite(values).any():  # NaN: no instruction left open after the prompt
        result["instruction_chance"] = float(np.nanmean(values))
    for m in coherence.METRICS:
        values = np.array([r[f"{m}_chance"] for r in rows if f"{m}_chance" in r], float)
        if len(values) and np.isfinite(values).all():
            result[f"{m}_chance"] = float(values.mean())
    chance = result.get("consistency_chance")
    if chance is None or "consistency" not in result:
        return
    result["consistency_above_chance"] = coherence.above_chance(result["consistency"], chance)
    diffs = np.array([r["consistency"] - r["consistency_chance"] for r in rows], float)
    result["consistency_above_chance_se"] = float(
        diffs.std(ddof=1) / math.sqrt(len(diffs)) / (1.0 - chance)) \
        if len(diffs) > 1 and chance < 1.0 else 0.0


def _judge(c, prompt_set, completions, rows, say) -> int:
    """Add the judge's grades to `rows`; the number of completions left ungraded."""
    from tinyscale.evals.judge import CRITERIA, Judge
    judge = Judge(c.eval.judge_url, c.eval.judge_model, c.eval.judge_key_env,
                  c.eval.judge_concurrency, retries=c.eval.judge_retries)
    say(f"judge: grading {len(rows)} completions with {c.eval.judge_model} at "
        f"{c.eval.judge_url}")
    grades = judge.grade_all([(p.text, text) for p, (text, _) in
                              zip(prompt_set, completions, strict=True)])
    for row, g in zip(rows, grades, strict=True):
        row.update({f"judge_{k}": g[k] / 10 for k in CRITERIA} if g else {})
        if g:
            row["judge_age_group"] = g["age_group"]
    failed = sum(g is None for g in grades)
    if failed:
        say(f"judge: {failed} of {len(grades)} completions got no grade (last error: "
            f"{judge.last_error or 'answers without grades'}): check config.eval.judge_url "
            f"and the key in ${c.eval.judge_key_env}")
    return failed


def evaluate(workdir: str, step: int | None = None, say=print,
             overrides: dict[str, str] | None = None,
             loaded: trained.Trained | None = None) -> dict:
    """Evaluate the run at `step` (default: newest); eval.json for the newest checkpoint,
    eval-step<N>.json (and samples-step<N>.jsonl) for an earlier one, so an evaluation of
    the past never replaces the run's final result. `overrides` may set eval.* knobs;
    `loaded` is the run already in memory (its checkpoint is not read again)."""
    if loaded is None:
        config = trained.saved_config(workdir, overrides)
        loaded = trained.load(workdir, step, config=config, say=say)
    t = loaded
    run = RunDir(workdir)
    mesh = next(iter(t.arrays.values())).sharding.mesh  # where the parameters live
    result = {"step": t.step, **held_out_loss(t, mesh)}
    return write_evaluation(t, run, result, say)


def write_evaluation(t, run: RunDir, result: dict, say=print) -> dict:
    """Complete the prompts, score the completions, write eval.json and samples.jsonl
    (eval-step<N>.* for an earlier step) into `run`; `result` holds the losses."""
    c = t.config
    prompt_set = _prompt_set(t)
    completions = complete(t, prompt_set)
    dataset = generated.source(c.data, t.meta).dataset
    rows = score(dataset, prompt_set, completions, say)
    if c.eval.fluency:
        add_fluency(rows, prompt_set, completions, c.eval.fluency_prompts, c.data.cache_dir,
                    say)
    if c.eval.judge_url:
        result["judge_failed"] = _judge(c, prompt_set, completions, rows, say)
    result.update(summarize(rows))
    add_chance(result, rows, score(dataset, prompt_set, [
        completions[j] for j in coherence.chance_pairs(len(completions))], say))
    ages = [r["judge_age_group"] for r in rows if "judge_age_group" in r]
    if ages:
        result["judge_age_group"] = max(set(ages), key=ages.count)
    result["settings"] = {k: c.eval[k] for k in (
        "prompts", "max_new_tokens", "temperature", "beams", "fluency", "judge_model")}
    result["settings"]["judge"] = bool(c.eval.judge_url)
    result["n_completions"] = len(rows)
    at = None if t.newest else t.step
    run.write_json(run.eval_file(at), result)
    write_atomic(run.samples_file(at), "".join(json.dumps(
        {"prompt": p.text, "continuation": text, "ended": ended, "reference": p.reference, **row})
        + "\n" for p, (text, ended), row in zip(prompt_set, completions, rows, strict=True)))
    result["written"] = str(run.eval_file(at))
    return result


def print_summary(result: dict, file=sys.stdout) -> None:
    keys = ["loss", "bits_per_byte", *coherence.METRICS, "consistency_above_chance",
            "fluency"]
    for key in keys + [k for k in result if k.startswith("judge_") and not k.endswith("_se")
                       and k != "judge_failed"]:
        if key in result:
            se, chance = result.get(f"{key}_se"), result.get(f"{key}_chance")
            print(f"{key:<24} {result[key]:.4f}" + (f" ± {se:.4f}" if se is not None else "")
                  + (f"   (chance {chance:.4f})" if chance is not None else ""), file=file)
