"""The HTML of report.html: tables and the page, filled from `report.Results`.

Over 300 lines: one short function and paragraph per panel of the page, in page order."""

from __future__ import annotations

import base64
import html

import pandas as pd

from analysis import predict
from analysis.architectures import matched_summary
from analysis.plots import STAGES

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}
figure{display:inline-block;margin:.5em;width:520px} img{width:100%}
table.t{border-collapse:collapse;font-size:13px;margin:.5em 0}
table.t td,table.t th{border-bottom:1px solid #ddd;padding:2px 6px;text-align:right;
white-space:nowrap} div.scroll{overflow-x:auto}
table.samples td{vertical-align:top;width:33%;font-size:13px;padding:0 8px}"""

EMERGENCE = """<p>Where each metric crosses the threshold, by depth family (logistic fit in
log N, bootstrap interval). Continuous metrics (loss, fluency) are scaled to [0, 1] and
shown beside the thresholded ones: a sharp jump in one but a smooth trend in the other
means the sharpness comes from the metric. Consistency is read against its chance
baseline, measured on each run: the same completions read after other prompts (the
dashed lines of its figure). A completion that mentions no one breaks no rule, so raw
consistency is high even for a model that ignores its prompt; consistency_above_chance
= (consistency − chance) / (1 − chance) is 0 for such a model and 1 when every mention
fits the story, and its threshold is the midpoint between chance and ceiling.</p>"""

FLUENCY_ON_SYNTHSTORIES = """<p><b>Fluency on SynthStories.</b> {}
Fluency is the reference LM's (SmolLM2-135M) probability of a completion, meant for real
English; what it measured on SynthStories elsewhere, true continuations included, is in
docs/metrics.md ("Fluency, the reference LM and the judge"). Held-out loss and
grammar_prefix are the corpus's own continuous metrics.</p>"""

JUDGE = """<p>Grades out of 10 from the LLM judge (the paper's rubric,
<code>config.eval.judge_*</code>), means over each run's completions; the age group is the
most common one it gave.</p>"""

CURVES = """<p><b>From the fitted curves.</b> For each metric, the parameters at which
depth k crosses the threshold over those at which depth 1 does (below 1: the deeper
stack gets there with fewer parameters), with a 95% interval from resampling shapes,
seeds and prompts of both families; the verdict says which way it points, or that
the sweep cannot tell.</p>"""

LOSS_CURVES = """<p>Held-out loss of depth k minus depth 1 at equal N (the middle of the
range both cover, from a line in log loss against log N per family), with a 95%
interval.</p>"""

DIAGNOSTICS = """<p>How each model writes (means over its completions, ± standard error):
how many words, the share that ended with EOS after a finished sentence, the share cut by
<code>eval.max_new_tokens</code>, the share looping (a quarter or more of their word
4-grams repeat an earlier one), words over the reference continuation's. A model that
"stops after 5–10 words" shows here as few words and a low length ratio with a high EOS
share. Real English adds the reference LM's context use (nats per token a completion
gains from its own prompt over another's) and the entity tracker's consistency;
creativity: distinct-n across completions, novelty (the share of 8-grams not in the
training split) and MAUVE against the true continuations.</p>"""

EXTERNAL = """<p>Models scored with <code>tinyscale eval --hf</code> on the same prompts.
They are reference points: no fit, curve or emergence point of this report uses them
(<code>tinyscale analyze --include-external</code> fits them with the runs).</p>"""

AGREEMENT = """<p>Do the offline metrics agree with the judge? Across runs, each offline
metric against the judge's grade that asks the same question (rank and linear
correlation; runs = runs graded).</p>"""


def table(frame: pd.DataFrame, floats: int = 3) -> str:
    """An HTML table: integers with thousands separators, floats to `floats` significant
    digits, cells on one line, scrolling sideways when wider than the page."""
    if frame is None or frame.empty:
        return "<p>–</p>"
    ints = {c: "{:,}".format for c in frame.columns if frame[c].dtype.kind in "iu"}
    body = frame.to_html(index=False, float_format=lambda v: f"{v:.{floats}g}",
                         formatters=ints, na_rep="–", border=0, classes="t")
    return f"<div class='scroll'>{body}</div>"


def figure(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{name}</figcaption></figure>")


def tail(prompt: str, size: int = 160) -> str:
    """The prompt's last `size` characters, starting at a word: '…' marks the cut."""
    if len(prompt) <= size:
        return prompt
    return "…" + prompt[-size:].split(" ", 1)[-1]


def samples(columns: list[tuple[str, list[dict]]]) -> str:
    """Side by side: each run's first completions (prompt in italics)."""
    if not columns:
        return "<p>No finished run yet.</p>"
    cells = []
    for name, items in columns:
        body = "".join(f"<p><i>{html.escape(tail(s['prompt']))}</i><b>"
                       f"{html.escape(s.get('continuation', ''))}</b></p>" for s in items)
        cells.append(f"<td><h4>{html.escape(name)}</h4>{body}</td>")
    return f"<table class='samples'><tr>{''.join(cells)}</tr></table>"


def seeds(r) -> str:
    """How many seeds each point has, and how far seeds of one shape disagree."""
    if not r.seeds:
        return ""
    counts = ", ".join(f"{cells} shape{'s' * (cells > 1)} with {k} run{'s' * (k > 1)}"
                       for k, cells in r.seeds.items())
    text = (f"<p><b>Seeds.</b> {counts}. Intervals resample shapes, the runs (seeds) of "
            "each shape, and the prompts of each run.")
    if r.spread.empty:
        return text + " No shape has more than one run, so the seed-to-seed spread is " \
            "unknown here and the intervals hold the prompts' spread only.</p>"
    return text + " Seed-to-seed standard deviation, mean over shapes:</p>" + table(r.spread)


def stages(r) -> str:
    """The stages of coherence in the order the sweep finds them (all depths together):
    at a fixed token budget where that is the headline (analysis.confounds)."""
    found = {c.metric: c for c in r.crossings if c.family == "all depths" and c.metric in STAGES}
    if not found:
        return ""
    where = dict.fromkeys(found, "")
    if r.confounds is not None and r.confounds.headline:
        for metric in found:
            iso, tokens = r.confounds.iso(metric)
            found[metric], where[metric] = (iso, f" (at D = {tokens:,.0f} tokens)") if iso \
                else (found[metric], " (at each run's own budget: confounded with D)")
    crossed = sorted((c for c in found.values() if c.status == "crossed"), key=lambda c: c.params)
    parts = [f"{html.escape(c.metric)} at {c.describe()}{where[c.metric]}" for c in crossed]
    parts += [f"{html.escape(c.metric)}: {c.describe()}{where[c.metric]}"
              for c in found.values() if c.status != "crossed"]
    return ("<p><b>Stages</b> (all depths together, in the order they emerge): "
            + "; ".join(parts) + ".</p>")


ISO_TOKEN = """<p>Emergence read at one token count D for every size: for each metric, the
largest D (within 5%) at which every size was measured (held-out loss at each eval step,
earlier checkpoints' evaluations, final evaluations of runs and branches); measurements
taken before their run's schedule ended are counted.</p>"""

FRONTIER = """<p>Along the compute-optimal frontier: the (N, D) cells (means over seeds) whose
held-out loss is below that of every cell of less compute, and where each metric crosses
the threshold along them.</p>"""


def emergence(r) -> str:
    """The emergence tables: confounds first; at fixed D as the headline when D moves
    with N (analysis.confounds), then at the runs' own budgets, labelled."""
    p = r.confounds
    own = table(r.emergence)
    if p is None:
        return own
    out = f"<p><b>Confounds.</b> {html.escape(p.line())}</p>" if p.line() else ""
    iso = p.table()
    if p.headline:
        label = html.escape(p.tokens_confounded.trend())
        out += (f"<h3>At a fixed token budget (the headline)</h3>{ISO_TOKEN}{table(iso)}"
                f"<h3>At each run's own budget (confounded: {label})</h3>{own}")
    else:
        out += own + (f"<h3>At a fixed token budget</h3>{ISO_TOKEN}{table(iso)}"
                      if not iso.empty else "")
    if p.along_frontier:
        out += f"<h3>Along the compute-optimal frontier</h3>{FRONTIER}" \
            f"{table(p.frontier_table())}"
    return out


PROVENANCE = """<p>What trained the runs (each run's provenance.json): the git commit and
whether the checkout had uncommitted changes, package versions, Python and devices; one
row per distinct combination. A run resumed in another setting lists each.</p>"""


def provenance(r) -> str:
    p = r.provenance
    if p is None:
        return ""
    return f"<h2>Provenance</h2>{PROVENANCE}<p>{html.escape(p.line)}</p>{table(p.table)}"


BUDGETS = """<p>Every finished run and branch is an (N, D) point; L(N, D) = E + A/N<sup>α</sup>
+ B/D<sup>β</sup> is fitted to their final held-out losses (bootstrap over the points).
Compute is counted as the runs count it (training FLOPs per token, fitted as a power of N
over these shapes), and the frontier gives, for each compute budget, the size that the
fitted law says reaches the lowest loss.</p>"""


ARCHITECTURES = """<p>Each run's architecture is read from its knobs (family, block,
attention, experts; depth is a size). Where each metric emerges for each architecture,
against the parameters a token uses (<i>active</i>: a mixture's top-k experts only) and
against all of them (<i>total</i>), with 95% intervals resampling shapes, seeds and
prompts. Overlapping intervals mean this sweep cannot tell the architectures apart.</p>"""


MATCHED = """<p>At matched parameters: each run set against the plain run of its family
(same depth, same seed) nearest in active and, separately, in total parameters; the mean
difference (this architecture minus plain) over the pairs with its 95% interval. Lower
loss and higher coherence are better.</p>"""


def baseline(r) -> str:
    """Which runs the depth sections read, when the sweep holds several settings."""
    if not r.baseline:
        return ""
    return (f"<p>The scaling-law, emergence and one-block-vs-deep sections read the "
            f"{r.n_final} finished runs of {html.escape(' and '.join(r.baseline))}; the "
            "other settings are set against them under <i>By architecture</i> and <i>By "
            "data</i>.</p>")


def by_architecture(r) -> str:
    a = r.by_architecture
    if a is None:
        return ""
    summary = matched_summary(a.matched)
    return (f"<h2>By architecture</h2>{ARCHITECTURES}{table(a.table)}"
            + (f"{MATCHED}{table(summary)}" if not summary.empty else ""))


DATA = """<p>Each run's data setting is read from its data knobs (noise, filter, a
generated corpus, a teacher's logits). Where each metric emerges under each setting, with
95% intervals resampling shapes, seeds and prompts; then, against the plain corpus, the
ratio of the parameter counts at which the setting and the plain corpus cross the
threshold (below 1: the setting needs fewer parameters, a saving of 1 − ratio), with its
bootstrap interval and a verdict.</p>"""


def by_data(r) -> str:
    b = r.by_data
    if b is None:
        return ""
    return (f"<h2>By data</h2>{DATA}{table(b.table)}"
            + (table(b.savings) if not b.savings.empty else
               "<p>No setting has runs of both it and the plain corpus crossing.</p>"))


def budgets(r) -> str:
    b = r.budgets
    if b is None:
        return ""
    return (f"<h2>Token budgets: L(N, D)</h2>{BUDGETS}<p>{html.escape(b.statement())}</p>"
            f"{table(b.table)}{table(b.frontier)}")


PREDICTION = """<p>Each fit refitted without its largest size (L(N, D): without the points
of the largest compute C = 6ND; emergence: without the largest-N cell) predicts what it
did not see, with the refit's 95% bootstrap interval. A law that extrapolates one size
should hold its measurement inside; a fit left with fewer points than its parameters + 2
says so.</p>"""


def prediction(r) -> str:
    if r.predictions is None:
        return ""
    return (f"<h2>Prediction check</h2>{PREDICTION}"
            f"<p>{html.escape(predict.summary(r.predictions))}</p>{table(r.predictions)}")


GOODPUT = """<p>Where the sweep's slot time went: the launches' windows times their slots
(<code>&lt;sweep&gt;/launches/</code>), split by what the runs' attempts did
(<code>goodput.jsonl</code>): training steps kept, compiling, held-out and final
evaluation, waiting for data, blocked by checkpoints, starting up, steps trained again
after a preemption (lost), and slots with no worker training (idle: creating or setting
up a slice, starting a worker). Per run: its attempts' seconds (a packed run: its share
of the program).</p>"""


def goodput(r) -> str:
    g = r.goodput
    if g is None:
        return ""
    return f"<h2>Goodput</h2>{GOODPUT}<p>{html.escape(g.line)}</p>{table(g.table)}"


def page(r, images: list[str], sample_columns) -> str:
    """The whole report for results `r` (analysis.report.Results)."""
    unfinished = "" if r.missing.empty else (
        f"<b>Not finished ({len(r.missing)})</b>: the report covers the finished runs only."
        + table(r.missing))
    judge = f"<h2>LLM judge</h2>{JUDGE}{table(r.judge)}" if r.judge is not None else ""
    if r.judge_agreement is not None:
        judge += f"{AGREEMENT}{table(r.judge_agreement)}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tinyscale report</title>
<style>{STYLE}</style></head>
<body><h1>tinyscale report: {html.escape(str(r.sweep_dir))}</h1>
<p>{r.n_runs} runs, {r.every_df.loc[r.every_df["final"], "run"].nunique()} finished and
evaluated.</p>{baseline(r)}{unfinished}
<h2>Runs</h2>{table(r.runs)}
<h2>Scaling law L(N) = E + A·N<sup>−α</sup></h2>
{table(r.fits) if not r.fits.empty else "<p>Too few finished runs.</p>"}
{budgets(r)}
{prediction(r)}
<h2>Emergence (threshold {r.threshold})</h2>{EMERGENCE}{stages(r)}{seeds(r)}{emergence(r)}
{"<h2>How the models write</h2>" + DIAGNOSTICS + table(r.diagnostics)
 if not r.diagnostics.empty else ""}
{"<h2>Reference models</h2>" + EXTERNAL + table(r.external[[c for c in (
    "run", "params", "grammar", "consistency", "completion", "coherence", "fluency")
    if c in r.external]]) if not r.external.empty else ""}
{FLUENCY_ON_SYNTHSTORIES.format(html.escape(r.fluency_on_synthstories))
 if r.fluency_on_synthstories else ""}
{by_architecture(r)}
{by_data(r)}
{judge}
<h2>One block vs deep</h2><p>{html.escape(r.one_vs_deep_statement)}</p>
{table(r.pairs) if not r.pairs.empty else ""}
{CURVES + table(r.curves) if not r.curves.empty else ""}
{LOSS_CURVES + table(r.loss_curves) if not r.loss_curves.empty else ""}
{goodput(r)}
{provenance(r)}
<h2>Figures</h2>{''.join(images)}
<h2>Sample completions (prompt in italics)</h2>{samples(sample_columns)}
</body></html>"""
