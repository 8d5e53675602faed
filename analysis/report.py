"""`tinyscale analyze SWEEP_DIR`: report.html (figures embedded), PNGs and the CSV.
One file: the report's tables and steps, read in the order the report shows them.

Three steps, each its own function: `compute` (fits, emergence, comparisons: numbers
only), `draw` (the figures), and `template.page` (the HTML). Paths go through
etils.epath, so the sweep and the output may be on gs://.
"""

from __future__ import annotations

import dataclasses
import io
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from etils import epath
from scipy import stats

from analysis import (
    architectures,
    budgets,
    by_data,
    compare,
    confounds,
    emergence,
    fit,
    goodput,
    plots,
    predict,
    runs,
    template,
)
from analysis import provenance as provenance_lib

METRICS = ("grammar", "grammar_prefix", "consistency", "consistency_above_chance", "completion",
           "coherence", "instruction")
JUDGE = ("judge_grammar", "judge_creativity", "judge_consistency", "judge_plot")


@dataclasses.dataclass
class Results:
    sweep_dir: str
    threshold: float
    df: pd.DataFrame                # every run x eval step (analysis.runs.load)
    final: pd.DataFrame             # one row per finished run
    missing: pd.DataFrame           # runs not finished
    runs: pd.DataFrame              # the table of runs
    fit_results: dict               # family -> fit.Fit
    fits: pd.DataFrame              # its table
    crossings: list                 # emergence.Crossing
    emergence: pd.DataFrame         # its table
    pairs: pd.DataFrame             # one block vs deep at matched parameters
    one_vs_deep_statement: str
    curves: pd.DataFrame            # depth k vs 1 from fitted curves: emergence N ratios
    loss_curves: pd.DataFrame       # depth k vs 1: loss difference at equal N
    judge: pd.DataFrame | None      # the LLM judge's grades, when one was used
    judge_agreement: pd.DataFrame | None  # offline metric vs the judge's matching grade
    fluency_on_synthstories: str    # what fluency does on SynthStories here ("": n/a)
    present: list                   # coherence metrics present in the results
    seeds: dict                     # {runs per shape: number of shapes}
    spread: pd.DataFrame            # seed-to-seed spread of each metric (shapes with >1 run)
    everything: pd.DataFrame        # df with the runs' branches (analysis.runs.load)
    budgets: budgets.Budgets | None  # L(N, D), IsoFLOP, frontier (>= 2 budgets per size)
    by_architecture: architectures.ByArchitecture | None  # > 1 architecture in the sweep
    by_data: by_data.ByData | None  # > 1 data setting in the sweep
    every_df: pd.DataFrame          # df of every run, whatever its architecture and data
    baseline: list                  # the architecture / data the depth analyses read
    external: pd.DataFrame          # eval --hf models: reference points, not in the fits
    diagnostics: pd.DataFrame       # per run: completion length/EOS/truncation/loops, ...
    goodput: goodput.Panel | None   # where the sweep's hours went (None: no records)
    # what moves with N, and emergence at fixed D / along the frontier (analysis.confounds)
    confounds: confounds.Panel | None = None
    provenance: provenance_lib.Panel | None = None  # code, versions, devices of the runs
    predictions: pd.DataFrame = None  # each fit refitted without its largest size (predict)

    n_runs = property(lambda self: self.every_df["run"].nunique())
    n_final = property(lambda self: len(self.final))


def _fits(final, bootstrap):
    """L(N) of each family with enough runs (predict.fit_rows says why the others have none)."""
    return {name: fit.fit_power_law(g["params"], g["eval_loss"], bootstrap=bootstrap)
            for name, g in predict.families(final) if len(g) >= predict.L_N_PARAMS + 2}


def _runs_table(df, final, present) -> pd.DataFrame:
    shown = ["run", "state", "architecture", "data", "width", "depth", "heads", "params",
             "params_active", "params_non_embedding",
             "tokens", "eval_loss", "eval_loss_se", *present,
             *[f"{m}_se" for m in ("coherence",) if m in final]]
    table = df.sort_values("step").drop_duplicates("run", keep="last")
    table = table[[c for c in shown if c in table]].sort_values(["depth", "width"])
    for column in ("architecture", "data"):
        if column in table and table[column].nunique() < 2:
            table = table.drop(columns=column)  # one value: said nowhere else
    if "params_active" in table and (table["params_active"] == table["params"]).all():
        table = table.drop(columns="params_active")  # no experts: active = total
    return table.rename(columns={"params_non_embedding": "non-emb params",
                                 "params_active": "active",
                                 "grammar_prefix": "gram. prefix", "coherence_se": "coh. SE",
                                 "eval_loss_se": "loss SE",
                                 "consistency_above_chance": "cons. above chance"})


# What each completion diagnostic is called in the report, in order: how long the model
# writes and how it stops (so "stops after 5-10 words" shows at a glance), then how
# varied and how new its stories are, and how close to real ones.
DIAGNOSTICS = {"words": "words", "ended": "ended (EOS)", "truncated": "cut by budget",
               "looping": "looping", "length_ratio": "length / reference",
               "context_use": "LM context use (nats/token)",
               "context_use_above_chance": "context use above chance",
               "consistency_entity": "entity consistency",
               "distinct_1": "distinct-1", "distinct_2": "distinct-2",
               "distinct_3": "distinct-3", "novelty": "novelty (8-grams)", "mauve": "MAUVE"}


def _diagnostics(final: pd.DataFrame, present: list) -> pd.DataFrame:
    """Per finished run (and reference model): the completion diagnostics it has, with
    their standard errors, beside its coherence."""
    keys = [k for k in DIAGNOSTICS if k in final and final[k].notna().any()]
    if final.empty or not keys:
        return pd.DataFrame()
    cols = {"run": final["run"], "params": final["params"]}
    if "coherence" in final:
        cols["coherence"] = final["coherence"]
    for k in keys:
        se = final[f"{k}_se"] if f"{k}_se" in final else None
        cols[DIAGNOSTICS[k]] = [f"{v:.3g}" + (f" ± {e:.2g}" if se is not None and
                                              pd.notna(e) else "")
                                if pd.notna(v) else "" for v, e in zip(
                                    final[k], se if se is not None else [None] * len(final))]
    return pd.DataFrame(cols).sort_values("params").reset_index(drop=True)


def _judge_table(final) -> pd.DataFrame | None:
    grades = [c for c in JUDGE if c in final and final[c].notna().any()]
    if not grades:
        return None
    table = final[["run", "params", *grades] + (
        ["judge_age_group"] if "judge_age_group" in final else [])].copy()
    for c in grades:
        table[c] = table[c] * 10  # stored in [0, 1], the rubric is out of 10
    return table.sort_values("params").rename(columns=lambda c: c.replace("judge_", ""))


# Each offline metric beside the judge's grade that asks the same question.
MATCHING = (("grammar", "judge_grammar"), ("grammar_prefix", "judge_grammar"),
            ("consistency", "judge_consistency"),
            ("consistency_above_chance", "judge_consistency"), ("coherence", "judge_plot"))


def _judge_agreement(final) -> pd.DataFrame | None:
    """Across runs: Spearman and Pearson correlation of each offline metric with the
    judge's matching grade, with the number of runs graded."""
    rows = []
    for metric, grade in MATCHING:
        if metric not in final or grade not in final:
            continue
        both = final[[metric, grade]].dropna()
        if len(both) < 3 or both[metric].nunique() < 2 or both[grade].nunique() < 2:
            continue
        rows.append({"offline metric": metric, "judge grade": grade.replace("judge_", ""),
                     "runs": len(both),
                     "spearman": stats.spearmanr(both[metric], both[grade]).statistic,
                     "pearson": stats.pearsonr(both[metric], both[grade]).statistic})
    return pd.DataFrame(rows) if rows else None


def _spread(final, metrics) -> pd.DataFrame:
    """Per metric: the mean over shapes with several runs (seeds) of the standard
    deviation between them, and how many shapes that is."""
    if final.empty:
        return pd.DataFrame()
    keys = [k for k in emergence.SHAPE if k in final]
    multi = final.groupby(keys).filter(lambda g: len(g) > 1)
    if multi.empty:
        return pd.DataFrame()
    rows = [{"metric": m, "seed-to-seed SD": multi.groupby(keys)[m].std(ddof=1).mean(),
             "shapes": multi.groupby(keys).ngroups} for m in metrics if m in multi]
    return pd.DataFrame(rows)


def _fluency_on_synthstories(final: pd.DataFrame, bootstrap: int, seed: int = 0) -> str:
    """What the reference LM's fluency does across this sweep's runs on SynthStories: its
    range and its rank correlation with held-out loss, with a bootstrap interval."""
    both = final[["fluency", "eval_loss"]].dropna()
    if len(both) < 3 or both["fluency"].nunique() < 2:
        return (f"Fluency was measured on {len(both)} finished runs, too few to say whether "
                "it ranks them as held-out loss does.")
    rho = stats.spearmanr(both["fluency"], both["eval_loss"]).statistic
    rng, draws = np.random.default_rng(seed), []
    for _ in range(bootstrap):
        pick = both.iloc[rng.integers(0, len(both), len(both))]
        if pick["fluency"].nunique() > 1 and pick["eval_loss"].nunique() > 1:
            draws.append(stats.spearmanr(pick["fluency"], pick["eval_loss"]).statistic)
    lo, hi = np.percentile(draws, [2.5, 97.5]) if len(draws) >= 20 else (np.nan, np.nan)
    interval = f" (95% interval {lo:+.2f} to {hi:+.2f})" if np.isfinite(lo) else ""
    verdict = ("too few resamples to say which way it ranks them" if not np.isfinite(hi) else
               "it falls as loss rises: it ranks these runs as held-out loss does" if hi < 0
               else "it rises with loss: it ranks these runs against held-out loss" if lo > 0
               else "this sweep cannot tell whether it ranks these runs as held-out loss "
               "does (the interval holds 0)")
    return (f"Across the {len(both)} finished runs, fluency spans {both['fluency'].min():.3f}–"
            f"{both['fluency'].max():.3f} and its rank correlation with held-out loss is "
            f"ρ = {rho:+.2f}{interval}: {verdict}.")


def baseline(final: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs the depth analyses read (fits, emergence, one block vs deep) and what was
    chosen: with several architectures or data settings, those of the plain one (the
    family alone; the plain corpus), else the most common -- runs of one shape and
    different settings are not seeds of one point. The others are compared in the 'By
    architecture' and 'By data' sections."""
    keep, chosen = pd.Series(True, index=final.index), []
    for column, plain in (("architecture", lambda v: " " not in v),
                          ("data", lambda v: v == by_data.PLAIN)):
        if column in final and final[column].nunique() > 1:
            values = final[column]
            candidates = [v for v in values.unique() if plain(v)]
            pick = candidates[0] if len(candidates) == 1 else values.value_counts().idxmax()
            keep &= values == pick
            chosen.append(f"{column} {pick}")
    return final[keep], chosen


def compute(sweep_dir: str, threshold: float = 0.5, bootstrap: int = 300,
            include_external: bool = False) -> Results:
    """Every number of the report, from the run directories. Models scored with `eval
    --hf` (external/) are reference points, listed apart and kept out of every fit and
    curve unless `include_external`."""
    fit.check_bootstrap(bootstrap)  # 1-99 resamples: one line before any work
    loaded = runs.load(sweep_dir)
    external = runs.final(loaded[loaded["external"]]) if "external" in loaded else \
        loaded.iloc[:0]
    everything = loaded if include_external else loaded[~loaded["external"]]
    df = everything[everything["branch_of"].isna()]  # branches: the token-budget analysis
    every_final = runs.final(df)
    final, chosen = baseline(every_final)
    missing = df.drop_duplicates("run")
    missing = missing[missing["state"] != "done"][["run", "state", "attempts", "error"]]
    fits = _fits(final, bootstrap) if len(final) >= 3 else {}
    present = [m for m in METRICS if m in every_final and every_final[m].notna().any()]
    continuous = [m for m in ("eval_loss", "fluency") if m in final]
    samples = runs.samples(sweep_dir, every_final["run"]) if len(every_final) else {}
    crossings = emergence.table(final, present + continuous, threshold, bootstrap, samples) \
        if len(final) >= 2 else []
    pairs = compare.matched_pairs(final) if len(final) else pd.DataFrame()
    curves = compare.curve_differences(final, present, threshold, bootstrap, samples) \
        if len(final) >= 4 else pd.DataFrame()
    loss_curves = compare.loss_differences(final, bootstrap) if len(final) >= 4 \
        else pd.DataFrame()
    emergence_rows = [{"metric": c.metric, "family": c.family, "emergence": c.describe()}
                      for c in crossings]
    synth = "fluency" in final and "data.dataset" in final and \
        set(final["data.dataset"]) == {"synthstories"}
    results = Results(str(sweep_dir), threshold, df[df["run"].isin(final["run"]) |
                                                  ~df["run"].isin(every_final["run"])],
                   final, missing,
                   _runs_table(df, every_final, present), fits, predict.fit_rows(final, fits),
                   crossings,
                   pd.DataFrame(emergence_rows), pairs, compare.statement(pairs), curves,
                   loss_curves,
                   _judge_table(final), _judge_agreement(final),
                   _fluency_on_synthstories(final, bootstrap) if synth else "", present,
                   emergence.seeds_per_cell(final), _spread(final, present + continuous),
                   everything, budgets.compute(runs.final(everything), bootstrap),
                   architectures.compute(every_final, present + continuous, threshold,
                                         bootstrap, samples) if len(final) >= 2 else None,
                   by_data.compute(every_final, present + continuous, threshold, bootstrap,
                                   samples) if len(final) >= 2 else None, df, chosen,
                   external, _diagnostics(pd.concat([every_final, external]), present),
                   goodput.compute(sweep_dir))
    results.confounds = confounds.compute(everything, final, present + continuous, threshold,
                                          bootstrap)
    results.provenance = provenance_lib.compute(everything)
    results.predictions = predict.table(predict.checks(
        final, results.budgets.points if results.budgets else None, crossings, bootstrap,
        samples))
    return results


def draw(r: Results) -> dict:
    """{name: matplotlib figure} of the results."""
    figures = {}
    if r.n_final:
        if any(m in r.present for m in plots.STAGES):
            figures["stages"] = plots.stages(r.df, r.crossings, r.threshold)
        figures["loss_vs_params"] = plots.loss_vs_params(r.df, r.fit_results)
        if "words" in r.final and r.final["words"].notna().any():
            figures["writing"] = plots.writing(r.df)
        for m in r.present:
            figures[f"{m}_vs_params"] = plots.metric_vs_params(r.df, m, r.crossings,
                                                               r.threshold)
        figures["heatmap_loss"] = plots.heatmap(r.df, "eval_loss")
        if "coherence" in r.final:
            figures["heatmap_coherence"] = plots.heatmap(r.df, "coherence")
        if not r.pairs.empty:
            figures["one_vs_deep"] = plots.one_vs_deep(r.pairs)
        if r.judge is not None:
            figures["judge_vs_params"] = plots.judge_vs_params(r.final, JUDGE)
    if r.by_architecture is not None:
        for m in r.present:
            figures[f"{m}_by_architecture"] = plots.by_architecture(
                r.every_df, m, r.by_architecture.crossings, r.threshold)
    if r.by_data is not None:
        for m in r.present + ["eval_loss"]:
            figures[f"{m}_by_data"] = plots.by_setting(
                r.every_df, m, "data", "params", r.by_data.crossings, "{}",
                None if m == "eval_loss" else r.threshold, "parameters")
    if r.budgets is not None:
        figures["isoflop"] = plots.isoflop(r.budgets)
        figures["frontier"] = plots.frontier(r.budgets)
    if r.df["eval_loss"].notna().any():
        figures["training_curves"] = plots.training_curves(r.df)
    if r.goodput is not None:
        figures["goodput"] = goodput.figure(r.goodput)
    return figures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _sample_columns(sweep_dir: epath.Path, final) -> list[tuple[str, list[dict]]]:
    """First completions of the smallest, a middle and the largest finished model."""
    if final.empty:
        return []
    ordered = final.sort_values("params")
    picks = dict.fromkeys([ordered.iloc[0]["run"], ordered.iloc[len(ordered) // 2]["run"],
                           ordered.iloc[-1]["run"]])
    columns = []
    for name in picks:
        path = sweep_dir / "runs" / name / "samples.jsonl"
        if not path.exists():
            path = sweep_dir / "samples.jsonl"  # a single run directory
        lines = path.read_text().splitlines()[:2] if path.exists() else []
        columns.append((name, [json.loads(x) for x in lines]))
    return columns


def build(sweep_dir: str, out_dir: str | None = None, threshold: float = 0.5,
          bootstrap: int = 300, include_external: bool = False) -> str:
    """Write report.html, figures/*.png and runs.csv; the report's path."""
    return write(compute(sweep_dir, threshold, bootstrap, include_external), out_dir)


def write(results: Results, out_dir: str | None = None) -> str:
    """report.html, figures/*.png and runs.csv of computed `results`; the report's path."""
    sweep_dir = results.sweep_dir
    out = epath.Path(out_dir or sweep_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "runs.csv").write_text(results.everything.to_csv(index=False))
    images = []
    for name, fig in draw(results).items():
        png = _png(fig)
        (out / "figures" / f"{name}.png").write_bytes(png)
        images.append(template.figure(name, png))
    page = template.page(results, images, _sample_columns(epath.Path(sweep_dir),
                                                          results.final))
    (out / "report.html").write_text(page)
    return str(out / "report.html")
