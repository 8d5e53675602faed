"""The report's goodput panel: where a sweep's hours went, from the runs' goodput.jsonl
and the sweep's launches/ (tinyscale/train/goodput.py and tinyscale/launch/goodput.py
keep them and do the arithmetic).
"""

from __future__ import annotations

import dataclasses
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from tinyscale.launch import goodput as sweep_goodput  # noqa: E402
from tinyscale.storage import resolve  # noqa: E402
from tinyscale.train import goodput  # noqa: E402
from tinyscale.train.rundir import RunDir  # noqa: E402

# one colour per share, in sweep_goodput.SHOWN's order (training first, idle last)
COLORS = {"training": "#2ca02c", "compile": "#9467bd", "eval": "#1f77b4", "data": "#8c564b",
          "checkpoints": "#ff7f0e", "startup": "#bcbd22", "lost": "#d62728", "idle": "#c7c7c7"}


@dataclasses.dataclass
class Panel:
    summary: dict        # sweep_goodput.summarize of the sweep
    line: str            # sweep_goodput.describe: the line `sweep status` prints
    table: pd.DataFrame  # per run: attempts, wall, seconds by category, lost steps


def columns(run: RunDir) -> dict:
    """A run's goodput columns (runs.csv): seconds by category over its attempts."""
    s = goodput.run_summary(goodput.read(run))
    if not s["attempts"]:
        return {}
    return {"goodput_wall_s": s["wall"],
            **{f"goodput_{c}_s": s[c] for c in (*goodput.CATEGORIES, "lost")},
            "goodput_lost_steps": s["lost_steps"]}


def _runs(path) -> list[tuple[str, RunDir]]:
    if (path / "sweep.json").exists():
        names = [r["name"] for r in json.loads((path / "sweep.json").read_text())["runs"]]
        return [(str(r.path.relative_to(path / "runs")), r)
                for r in sweep_goodput.run_dirs(path, names)]
    return [(path.name, RunDir(path))]  # a single run directory


def compute(sweep_dir: str) -> Panel | None:
    """The sweep's (or a run directory's) goodput; None when nothing kept any record."""
    path = resolve(sweep_dir)
    found = [(name, goodput.read(run)) for name, run in _runs(path)]
    found = [(name, attempts) for name, attempts in found if attempts]
    if not found:
        return None
    summary = sweep_goodput.summarize([a for _, a in found],
                                      sweep_goodput.read_launches(path))
    rows = []
    for name, attempts in found:
        s = goodput.run_summary(attempts)
        rows.append({"run": name, "attempts": s["attempts"], "wall": s["wall"],
                     **{sweep_goodput.SHOWN[c]: s[c] - (s["lost"] if c == "train" else 0)
                        for c in goodput.CATEGORIES}, "lost": s["lost"],
                     "lost steps": s["lost_steps"]})
    table = pd.DataFrame(rows)
    return Panel(summary, sweep_goodput.describe(summary), table)


def figure(panel: Panel):
    """Stacked bars of slot time: the sweep's capacity, then each run's attempts."""
    s = panel.summary
    sweep = {name: share * s["capacity"] for name, share in sweep_goodput.shares(s).items()}
    bars = [("sweep", sweep)] + [(r["run"], {k: r.get(k, 0.0) for k in COLORS})
                                 for r in panel.table.to_dict("records")]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(bars) + 1.6))
    unit, label = (3600, "hours") if s["capacity"] > 3 * 3600 else (60, "minutes")
    for y, (_, seconds) in enumerate(bars):
        left = 0.0
        for name, color in COLORS.items():
            width = seconds.get(name, 0.0) / unit
            ax.barh(y, width, left=left, color=color, label=name if y == 0 else None)
            left += width
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"slot time ({label})",
           title=f"Goodput {s['goodput']:.0%}: where the time went")
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    fig.tight_layout()
    return fig
