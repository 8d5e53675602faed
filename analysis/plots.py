"""Figures, each a pure function of the sweep DataFrame (`analysis.runs.load`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from analysis.runs import final as final_rows  # noqa: E402


def _depth_colors(depths):
    cmap = plt.get_cmap("tab10")
    return {d: cmap(i % 10) for i, d in enumerate(sorted(set(depths)))}


def _log_x(ax):
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def loss_vs_params(df, fits=None):
    """Final held-out loss against parameters (log-log), by depth, with fitted L(N)."""
    f = final_rows(df)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = _depth_colors(f["depth"])
    for depth, g in f.groupby("depth"):
        ax.errorbar(g["params"], g["eval_loss"], yerr=g.get("eval_loss_se"), fmt="o",
                    color=colors[depth], label=f"depth {depth}", capsize=2)
        fit = (fits or {}).get(f"depth {depth}")
        if fit:
            n = np.geomspace(g["params"].min(), g["params"].max(), 50)
            ax.plot(n, fit.predict(n), color=colors[depth], lw=1)
    if fits and fits.get("all"):
        p = fits["all"].params
        n = np.geomspace(f["params"].min(), f["params"].max(), 50)
        ax.plot(n, fits["all"].predict(n), "k--", lw=1,
                label=f"all: E={p['E']:.2f}, α={p['alpha']:.2f}")
    _log_x(ax)
    ax.set(yscale="log", xlabel="parameters N (total)",
           ylabel="held-out loss (nats / token)", title="Loss vs parameters")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_vs_params(df, metric, crossings=(), threshold=0.5):
    """A coherence metric against parameters by depth, with emergence points."""
    f = final_rows(df)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = _depth_colors(f["depth"])
    for depth, g in f.groupby("depth"):
        g = g.sort_values("params")
        ax.errorbar(g["params"], g[metric], yerr=g.get(f"{metric}_se"), marker="o",
                    color=colors[depth], label=f"depth {depth}", capsize=2)
        if f"{metric}_chance" in g and g[f"{metric}_chance"].notna().any():
            ax.plot(g["params"], g[f"{metric}_chance"], ls="--", lw=1, color=colors[depth],
                    label=f"depth {depth}: chance (other prompts' completions)")
    for c in crossings:
        if c.metric == metric and c.status == "crossed" and c.family.startswith("depth"):
            depth = int(c.family.split()[1])
            ax.axvline(c.params, color=colors.get(depth, "k"), ls=":", lw=1)
            if c.interval:
                ax.axvspan(*c.interval, color=colors.get(depth, "k"), alpha=0.08)
    ax.axhline(threshold, color="grey", lw=0.8, ls="--")
    _log_x(ax)
    ax.set(ylim=(min(-0.03, float(np.nanmin(f[metric])) - 0.03), 1.03),
           xlabel="parameters N (total)",
           ylabel=f"{metric} (share, 0-1)", title=f"{metric.replace('_', ' ')} vs parameters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def writing(df):
    """How the models write, against parameters by depth: words per completion (left),
    and the shares that ended with EOS, were cut by the token budget, or loop (right) --
    a model that "stops after 5-10 words" is a low point on the left with a high EOS
    share on the right."""
    f = final_rows(df)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = _depth_colors(f["depth"])
    for depth, g in f.groupby("depth"):  # points: runs; lines: the mean over seeds
        g = g.sort_values("params")
        mean = g.groupby("params").mean(numeric_only=True).reset_index()
        left.errorbar(g["params"], g["words"], yerr=g.get("words_se"), marker="o", ls="",
                      color=colors[depth], capsize=2)
        left.plot(mean["params"], mean["words"], color=colors[depth], label=f"depth {depth}")
        for key, style in (("ended", "-"), ("truncated", "--"), ("looping", ":")):
            if key in g:
                right.plot(g["params"], g[key], ls="", marker="o", ms=3, color=colors[depth])
                right.plot(mean["params"], mean[key], ls=style, color=colors[depth],
                           label=f"depth {depth}: {key}")
    if "length_ratio" in f and f["length_ratio"].notna().any():
        left.axhline(float(np.nanmedian(f["words"] / f["length_ratio"])), color="grey",
                     ls="--", lw=0.8, label="reference continuation (median words)")
    for ax in (left, right):
        _log_x(ax)
        ax.legend(fontsize=7)
    left.set(xlabel="parameters N (total)", ylabel="words per completion",
             title="completion length")
    right.set(xlabel="parameters N (total)", ylabel="share of completions", ylim=(-0.03, 1.03),
              title="ended (EOS) -, cut by budget --, looping :")
    fig.tight_layout()
    return fig


STAGES = ("grammar", "consistency_above_chance", "coherence")


def _short(n: float) -> str:
    return f"{n / 1e6:.2g}M" if n >= 1e6 else f"{n / 1e3:.3g}K"


def stages(df, crossings=(), threshold=0.5, metrics=STAGES):
    """The stages of coherence on one axis: each metric's runs (points; seeds of a shape
    share an x), the mean over a shape's seeds (line), and where it emerges for all depths
    together (dotted line, 95% band) -- in the order the sweep finds them."""
    f = final_rows(df)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap("tab10")
    low = 0.0
    for i, metric in enumerate(m for m in metrics if m in f and f[m].notna().any()):
        color = cmap(i)
        means = f.groupby("params")[metric].mean()
        low = min(low, float(np.nanmin(f[metric])))
        label = metric.replace("_", " ")
        for c in crossings:
            if c.metric == metric and c.family == "all depths":
                if c.status == "crossed":
                    label += f": {_short(c.params)}" + (
                        " ({}–{})".format(*map(_short, c.interval)) if c.interval else "")
                    ax.axvline(c.params, color=color, ls=":", lw=1.2)
                    if c.interval:
                        ax.axvspan(*c.interval, color=color, alpha=0.1)
                elif c.status == "not_reached":
                    label += f": not reached by {_short(c.bound)}"
                else:
                    label += ": " + c.describe().replace(" parameters", "")
        ax.plot(f["params"], f[metric], "o", color=color, alpha=0.45, ms=4)
        ax.plot(means.index, means.values, "-", color=color, lw=1.5, label=label)
    ax.axhline(threshold, color="grey", lw=0.8, ls="--")
    _log_x(ax)
    ticks = sorted(set(f["params"]))
    ax.set_xticks(ticks, [_short(n) for n in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set(ylim=(low - 0.05, 1.05), xlabel="parameters N (total; ticks at the runs' sizes)",
           ylabel="share (0-1; consistency: 0 = chance)",
           title="Where each stage of coherence emerges")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def judge_vs_params(final, grades):
    """The LLM judge's grades (out of 10) against parameters, one line per grade."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    f = final.sort_values("params")
    for grade in grades:
        if grade in f and f[grade].notna().any():
            ax.plot(f["params"], f[grade] * 10, marker="o", label=grade.replace("judge_", ""))
    _log_x(ax)
    ax.set(ylim=(0, 10.3), xlabel="parameters N (total)", ylabel="grade (out of 10)",
           title="LLM judge's grades vs parameters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(df):
    """Held-out loss against tokens for every run."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    cmap = plt.get_cmap("plasma")
    runs = df.dropna(subset=["eval_loss"]).sort_values("params")
    names = list(dict.fromkeys(runs["run"]))
    for i, (name, g) in enumerate(runs.groupby("run", sort=False)):
        ax.plot(g["tokens"], g["eval_loss"], color=cmap(i / max(1, len(names) - 1)),
                label=name, lw=1)
    ax.set(xscale="log", xlabel="training tokens D", ylabel="held-out loss (nats / token)",
           title="Training curves")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def heatmap(df, metric):
    """Width x depth grid of a final metric."""
    f = final_rows(df)
    table = f.pivot_table(index="depth", columns="width", values=metric, aggfunc="mean")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    im = ax.imshow(table.values, cmap="viridis" if metric != "eval_loss" else "viridis_r",
                   aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns)
    ax.set_yticks(range(len(table.index)), table.index)
    for (i, j), v in np.ndenumerate(table.values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
    ax.set(xlabel="width (d_model)", ylabel="depth (layers)", title=f"{metric} by shape")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def one_vs_deep(pairs):
    """Deeper minus one-block differences at matched parameters, with 95% intervals."""
    metrics = [m for m in ("eval_loss", "grammar", "consistency", "coherence")
               if f"{m}_diff" in pairs]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, m in enumerate(metrics):
        x = i + np.linspace(-0.25, 0.25, max(1, len(pairs)))
        ax.errorbar(x, pairs[f"{m}_diff"], yerr=pairs[f"{m}_ci"], fmt="o", capsize=2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set(xlabel="metric", ylabel="deeper − one block (95% interval)",
           title="One block vs deep at matched parameters")
    fig.tight_layout()
    return fig


def isoflop(b):
    """IsoFLOP curves of the fitted L(N, D) (analysis.budgets), the optimum of each marked,
    over the sweep's (N, loss) points coloured by their training FLOPs."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    pts = b.points
    lo, hi = np.log10(pts["flops"].min()), np.log10(pts["flops"].max())
    levels = np.logspace(lo, hi, 4)
    n = np.geomspace(pts["params"].min() / 3, pts["params"].max() * 3, 200)
    cmap = plt.get_cmap("viridis")
    color = lambda c: cmap((np.log10(c) - lo) / max(hi - lo, 1e-9))  # noqa: E731
    for c in levels:
        ax.plot(n, b.loss_at(b.fit.params, n, c), color=color(c), lw=1,
                label=f"C = {c:.2g} FLOPs")
        best = b.n_opt(b.fit.params, c)
        ax.plot(best, b.loss_at(b.fit.params, best, c), "*", color=color(c), ms=10)
    ax.scatter(pts["params"], pts["eval_loss"], c=[color(c) for c in pts["flops"]],
               edgecolors="k", zorder=3, label="runs and branches")
    _log_x(ax)
    top = pts["eval_loss"].max() * 1.3
    ax.set(ylim=(pts["eval_loss"].min() * 0.9, top), xlabel="parameters N (total)",
           ylabel="held-out loss (nats / token)", title="IsoFLOP curves of the fitted L(N, D)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def frontier(b):
    """The compute-optimal size N_opt(C) with its 95% bootstrap band; the sweep's points."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    f = b.frontier
    ax.plot(f["compute (FLOPs)"], f["N_opt"], "k-",
            label=f"N_opt ∝ C^{b.exponent(b.fit.params):.2f}")
    ax.fill_between(f["compute (FLOPs)"], f["N_opt 2.5%"], f["N_opt 97.5%"], color="k",
                    alpha=0.15, label="95% interval")
    ax.scatter(b.points["flops"], b.points["params"], c="tab:blue", s=14,
               label="runs and branches (N, C)")
    ax.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)",
           ylabel="parameters N", title="Compute-optimal frontier")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def by_architecture(df, metric, crossings=(), threshold=0.5):
    """A coherence metric against active parameters, one colour per architecture, with
    each architecture's emergence point (by active parameters) and its 95% band."""
    return by_setting(df, metric, "architecture", "params_active", crossings,
                      "{} (active)", threshold, "parameters active per token")


def by_setting(df, metric, column, x, crossings, family, threshold, xlabel):
    """`metric` against parameters `x`, one colour per value of `column` (an architecture,
    a data setting), with each one's emergence point (the crossing whose family is
    `family.format(value)`) and its 95% band."""
    f = final_rows(df)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap("tab10")
    for i, (value, g) in enumerate(sorted(f.groupby(column), key=lambda x: x[0])):
        color = cmap(i % 10)
        ax.scatter(g[x], g[metric], color=color, s=18, label=value)
        means = g.groupby(x)[metric].mean()
        ax.plot(means.index, means.values, color=color, lw=1)
        for c in crossings:
            if c.metric == metric and c.family == family.format(value) \
                    and c.status == "crossed":
                ax.axvline(c.params, color=color, ls=":", lw=1.2)
                if c.interval:
                    ax.axvspan(*c.interval, color=color, alpha=0.08)
    if threshold is not None:  # None: a continuous metric, its crossing is of the scaled one
        ax.axhline(threshold, color="grey", lw=0.8, ls="--")
    _log_x(ax)
    ax.set(xlabel=xlabel, ylabel=metric,
           title=f"{metric.replace('_', ' ')} by {column}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
