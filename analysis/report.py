"""`tinyscale analyze SWEEP_DIR`: report.html (figures embedded), PNGs and the CSV."""

from __future__ import annotations

import base64
import html
import io
import json
import os

import matplotlib.pyplot as plt

from analysis import compare, emergence, fit, plots, runs

METRICS = ("grammar", "grammar_prefix", "consistency", "completion", "coherence")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _table(frame, floats=3) -> str:
    """An HTML table: integers with thousands separators, floats to `floats` significant
    digits, cells on one line, scrolling sideways when wider than the page."""
    ints = {c: "{:,}".format for c in frame.columns if frame[c].dtype.kind in "iu"}
    body = frame.to_html(index=False, float_format=lambda v: f"{v:.{floats}g}",
                         formatters=ints, na_rep="–", border=0, classes="t")
    return f"<div class='scroll'>{body}</div>"


def _fits(final, bootstrap):
    out = {}
    groups = [("all", final)] + [(f"depth {d}", g) for d, g in final.groupby("depth")]
    for name, g in groups:
        g = g.dropna(subset=["eval_loss"])
        if len(g) >= 3:
            out[name] = fit.fit_power_law(g["params"], g["eval_loss"], bootstrap=bootstrap)
    return out


def _tail(prompt: str, size: int = 160) -> str:
    """The prompt's last `size` characters, starting at a word: '…' marks the cut."""
    if len(prompt) <= size:
        return prompt
    return "…" + prompt[-size:].split(" ", 1)[-1]


def _samples(sweep_dir, final) -> str:
    """First completions of the smallest, a middle and the largest finished model."""
    if final.empty:
        return "<p>No finished run yet.</p>"
    ordered = final.sort_values("params")
    picks = list(dict.fromkeys([ordered.iloc[0]["run"], ordered.iloc[len(ordered) // 2]["run"],
                                ordered.iloc[-1]["run"]]))
    columns = []
    for name in picks:
        path = os.path.join(sweep_dir, "runs", name, "samples.jsonl")
        if not os.path.exists(path):
            path = os.path.join(sweep_dir, "samples.jsonl")
        lines = open(path).read().splitlines()[:2] if os.path.exists(path) else []
        items = [json.loads(x) for x in lines]
        body = "".join(f"<p><i>{html.escape(_tail(s['prompt']))}</i><b>"
                       f"{html.escape(s.get('continuation', ''))}</b></p>" for s in items)
        columns.append(f"<td><h4>{html.escape(name)}</h4>{body}</td>")
    return f"<table class='samples'><tr>{''.join(columns)}</tr></table>"


def _fluency_note(final) -> str:
    if "fluency" not in final or "data.dataset" not in final or \
            set(final["data.dataset"]) != {"synthstories"}:
        return ""
    return ("<p><b>Fluency on SynthStories.</b> The reference LM (SmolLM2-135M) does not rank "
            "models on this corpus: its random word pairings ('a striped village') are "
            "improbable English, so true continuations score about as low as the weakest "
            "models (measured: 0.068 for true continuations, 0.03-0.08 for quickstart models "
            "of every size). Read eval loss and grammar_prefix as the continuous metrics "
            "here; fluency is meant for real English (TinyStories).</p>")


def build(sweep_dir: str, out_dir: str | None = None, threshold: float = 0.5,
          bootstrap: int = 300) -> str:
    """Write report.html, figures/*.png and runs.csv; the report's path."""
    out_dir = out_dir or sweep_dir
    df = runs.load(sweep_dir)
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    df.to_csv(os.path.join(out_dir, "runs.csv"), index=False)
    final = runs.final(df)
    missing = df.drop_duplicates("run")
    missing = missing[missing["state"] != "done"][["run", "state", "attempts", "error"]]
    fits = _fits(final, bootstrap) if len(final) >= 3 else {}
    present = [m for m in METRICS if m in final]
    crossings = emergence.table(final, present + [m for m in ("eval_loss", "fluency")
                                                  if m in final], threshold, bootstrap) \
        if len(final) >= 2 else []
    pairs = compare.matched_pairs(final) if len(final) else compare.pd.DataFrame()
    figures = {}
    if len(final):
        figures["loss_vs_params"] = plots.loss_vs_params(df, fits)
        for m in present:
            figures[f"{m}_vs_params"] = plots.metric_vs_params(df, m, crossings, threshold)
        figures["heatmap_loss"] = plots.heatmap(df, "eval_loss")
        if "coherence" in final:
            figures["heatmap_coherence"] = plots.heatmap(df, "coherence")
        if not pairs.empty:
            figures["one_vs_deep"] = plots.one_vs_deep(pairs)
    if df["eval_loss"].notna().any():
        figures["training_curves"] = plots.training_curves(df)
    images = []
    for name, fig in figures.items():
        png = _png(fig)
        with open(os.path.join(out_dir, "figures", f"{name}.png"), "wb") as f:
            f.write(png)
        images.append(f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64,"
                      f"{base64.b64encode(png).decode()}'><figcaption>{name}</figcaption>"
                      "</figure>")
    fit_rows = [{"family": k, **{p: v.params[p] for p in ("E", "A", "alpha")},
                 **{f"{p} 95%": "{:.3g}–{:.3g}".format(*v.intervals[p])
                    for p in ("E", "alpha") if p in v.intervals}, "runs": v.n_points}
                for k, v in fits.items()]
    emergence_rows = [{"metric": c.metric, "family": c.family, "emergence": c.describe()}
                      for c in crossings]
    shown = ["run", "state", "width", "depth", "heads", "params", "params_non_embedding",
             "tokens", "eval_loss", *present, *[f"{m}_se" for m in ("coherence",) if m in final]]
    table_runs = df.sort_values("step").drop_duplicates("run", keep="last")
    table_runs = table_runs[[c for c in shown if c in table_runs]].sort_values(["depth", "width"])
    table_runs = table_runs.rename(columns={"params_non_embedding": "non-emb params",
                                            "grammar_prefix": "gram. prefix",
                                            "coherence_se": "coh. SE"})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tinyscale report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}}
figure{{display:inline-block;margin:.5em;width:520px}} img{{width:100%}}
table.t{{border-collapse:collapse;font-size:13px;margin:.5em 0}}
table.t td,table.t th{{border-bottom:1px solid #ddd;padding:2px 6px;text-align:right;
white-space:nowrap}} div.scroll{{overflow-x:auto}}
table.samples td{{vertical-align:top;width:33%;font-size:13px;padding:0 8px}}</style></head>
<body><h1>tinyscale report: {html.escape(str(sweep_dir))}</h1>
<p>{len(df['run'].unique())} runs, {len(final)} finished and evaluated.
{"" if missing.empty else f"<b>Not finished ({len(missing)})</b>: the report covers the "
 f"finished runs only."}</p>
{"" if missing.empty else _table(missing)}
<h2>Runs</h2>{_table(table_runs)}
<h2>Scaling law L(N) = E + A·N<sup>−α</sup></h2>
{_table(compare.pd.DataFrame(fit_rows)) if fit_rows else "<p>Too few finished runs.</p>"}
<h2>Emergence (threshold {threshold})</h2>
<p>Where each metric crosses the threshold, by depth family (logistic fit in log N,
bootstrap interval). Continuous metrics (loss, fluency) are scaled to [0, 1] and shown
beside the thresholded ones: a sharp jump in one but a smooth trend in the other means
the sharpness comes from the metric.</p>
{_table(compare.pd.DataFrame(emergence_rows)) if emergence_rows else "<p>–</p>"}
{_fluency_note(final)}
<h2>One block vs deep</h2><p>{html.escape(compare.statement(pairs))}</p>
{_table(pairs) if not pairs.empty else ""}
<h2>Figures</h2>{''.join(images)}
<h2>Sample completions (prompt in italics)</h2>{_samples(sweep_dir, final)}
</body></html>"""
    path = os.path.join(out_dir, "report.html")
    with open(path, "w") as f:
        f.write(page)
    return path
