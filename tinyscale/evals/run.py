"""`tinyscale eval RUN_DIR`: held-out loss, story completions and their scores.

Writes eval.json (every metric with its standard error, and the settings used) and
samples.jsonl (each prompt, completion and its scores) into the run directory. The
metrics themselves, one by one, are in scoring.py.
"""

from __future__ import annotations

import hashlib
import json
import sys

from tinyscale.data import generated, pipeline, tinystories, tokenizer
from tinyscale.errors import TinyscaleError
from tinyscale.evals import coherence, prompts
from tinyscale.evals.judge import CRITERIA, Judge
from tinyscale.evals.scoring import (
    ReferenceScores,
    add_chance,
    add_context_use,
    add_creativity,
    add_fluency,
    load_reference_lm,
    score,
    summarize,
)
from tinyscale.model import sample
from tinyscale.storage import write_atomic
from tinyscale.train import steps, trained
from tinyscale.train.rundir import RunDir

PROMPTS_FILE = "prompts.jsonl"  # <sweep>/prompts.jsonl: the real-text prompts of a sweep


def _sweep_of(run: RunDir):
    """The sweep directory of a run (<sweep>/runs/<name>) or of a model scored beside
    it (<sweep>/external/<name>), or None."""
    parent = run.path.parent
    if run.sweep_dir is not None:
        return run.sweep_dir
    if parent.name == "external" and (parent.parent / "sweep.json").exists():
        return parent.parent
    return None


def _real_prompts(t) -> list[prompts.Prompt]:
    c, data = t.config, generated.source(t.config.data, t.meta)
    if c.eval.prompts_file:
        return prompts.load_paper_prompts(c.eval.prompts_file)[:c.eval.prompts]
    builder = tinystories.from_config(data)
    return prompts.text_prompts(tinystories.texts(builder, "validation"), c.eval.prompts,
                                data.instruct)


def _prompt_set(t: trained.Trained, run: RunDir, say=print):
    """The prompts to complete. SynthStories' are built from the corpus seed (the same for
    every run of a sweep by construction); real-text prompts are stored in the sweep the
    first time one of its runs is evaluated, and every later run (and `eval --hf` model)
    reads them from there, so all are scored on the same prompts."""
    c, data = t.config, generated.source(t.config.data, t.meta)
    if data.dataset == "synthstories":
        return prompts.synth_prompts(c.eval.prompts, data.synth_seed, data.synth_richness,
                                     data.instruct)
    sweep = _sweep_of(run)
    stored = sweep / PROMPTS_FILE if sweep is not None else None
    if stored is not None and stored.exists():
        try:
            prompt_set = prompts.read_stored(stored.read_text())
        except (ValueError, KeyError, TypeError):
            raise TinyscaleError(f"{stored} is damaged: delete it (the sweep's runs will be "
                                 "scored on prompts cut again from the validation split)."
                                 ) from None
        if len(prompt_set) != c.eval.prompts:
            say(f"note: scoring the {len(prompt_set)} prompts stored in {stored}, not "
                f"config.eval.prompts={c.eval.prompts}: every run of a sweep is scored on "
                "the same prompts")
        return prompt_set
    prompt_set = _real_prompts(t)
    if stored is not None:
        write_atomic(stored, prompts.stored(prompt_set))
    return prompt_set


def held_out_loss(t: trained.Trained, mesh) -> dict:
    c = t.config
    data = pipeline.Batches(t.data_dir, "eval", c.train.seq_len, c.train.batch_size, c.seed)
    eval_step = steps.make_eval_step(t.params, c.train.quick_compile)
    loss, bpb, se = steps.held_out(eval_step, t.arrays, data, c.eval.batches, mesh,
                                   t.meta["bytes_per_token"])
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
    s = sample.Sampling(new, e.temperature, 0, 1.0, e.beams, eos, t.config.train.quick_compile)
    outs = sample.generate(t.params.model, t.arrays, ids, s, seed=t.config.seed,
                           prompt_length=keep)
    results = []
    for prompt_ids, out in zip(ids, outs, strict=True):
        body = [i for i in prompt_ids if i != eos]
        prefix, full = sp.decode(body), sp.decode(body + out)
        results.append((full[len(prefix):] if full.startswith(prefix) else sp.decode(out),
                        len(out) < new))
    return results


def _judge(c, prompt_set, completions, rows, say) -> int:
    """Add the judge's grades to `rows`; the number of completions left ungraded."""
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
    changed = {}
    if loaded is None:
        config = trained.saved_config(workdir, overrides)
        own = trained.saved_config(workdir).eval
        changed = {f"eval.{k}": config.eval[k] for k in config.eval if config.eval[k] != own[k]}
        loaded = trained.load(workdir, step, config=config, say=say)
    t = loaded
    run = RunDir(workdir)
    mesh = next(iter(t.arrays.values())).sharding.mesh  # where the parameters live
    result = {"step": t.step, **held_out_loss(t, mesh)}
    if changed:  # other settings than the run's: beside its own evaluation, never over it
        result["overrides"] = changed
        variant = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
        shown = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        say(f"eval settings other than the run's ({shown}): written as "
            f"eval-...-{variant}.json; the run's own evaluation is left as it is")
        return write_evaluation(t, run, result, say, variant)
    return write_evaluation(t, run, result, say)


def write_evaluation(t, run: RunDir, result: dict, say=print, variant: str = "") -> dict:
    """Complete the prompts, score the completions, write eval.json and samples.jsonl
    (eval-step<N>.* for an earlier step; *-<variant>.* for other eval settings) into
    `run`; `result` holds the losses."""
    c = t.config
    prompt_set = _prompt_set(t, run, say)
    completions = complete(t, prompt_set)
    dataset = generated.source(c.data, t.meta).dataset
    rows = score(dataset, prompt_set, completions, say)
    chance_rows = score(dataset, prompt_set, [
        completions[j] for j in coherence.chance_pairs(len(completions))], say)
    english = dataset != "synthstories"
    lm = load_reference_lm(c.data.cache_dir, say) if c.eval.fluency or english else None
    if lm is not None:
        lm_scores = ReferenceScores(lm, prompt_set, completions)
        if english:
            add_context_use(rows, chance_rows, lm_scores)
        if c.eval.fluency:
            add_fluency(rows, lm_scores, c.eval.fluency_prompts)
    if c.eval.judge_url:
        result["judge_failed"] = _judge(c, prompt_set, completions, rows, say)
    result.update(summarize(rows))
    add_chance(result, rows, chance_rows)
    result.update(add_creativity(t, prompt_set, completions, lm if english else None, say))
    ages = [r["judge_age_group"] for r in rows if "judge_age_group" in r]
    if ages:
        result["judge_age_group"] = max(set(ages), key=ages.count)
    result["settings"] = {k: c.eval[k] for k in (
        "prompts", "max_new_tokens", "temperature", "beams", "fluency", "judge_model",
        "novelty", "mauve")}
    result["settings"]["judge"] = bool(c.eval.judge_url)
    result["n_completions"] = len(rows)
    at = None if t.newest else t.step
    run.write_json(run.eval_file(at, variant), result)
    write_atomic(run.samples_file(at, variant), "".join(json.dumps(
        {"prompt": p.text, "continuation": text, "eos": ended, "reference": p.reference, **row})
        + "\n" for p, (text, ended), row in zip(prompt_set, completions, rows, strict=True)))
    result["written"] = str(run.eval_file(at, variant))
    return result


def print_summary(result: dict, file=sys.stdout) -> None:
    keys = ["loss", "bits_per_byte", *coherence.METRICS, "consistency_above_chance",
            "consistency_entity", "context_use", "context_use_above_chance", "fluency",
            *coherence.DIAGNOSTICS, "distinct_1", "distinct_2", "distinct_3", "novelty",
            "mauve"]
    for key in keys + [k for k in result if k.startswith("judge_") and not k.endswith("_se")
                       and k != "judge_failed"]:
        if key in result:
            se, chance = result.get(f"{key}_se"), result.get(f"{key}_chance")
            print(f"{key:<24} {result[key]:.4f}" + (f" ± {se:.4f}" if se is not None else "")
                  + (f"   (chance {chance:.4f})" if chance is not None else ""), file=file)
