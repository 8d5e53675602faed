"""What trained a sweep's runs: code (git commit, uncommitted changes), package versions and
devices, from each run's provenance.json (tinyscale/train/provenance.py, read by
analysis/runs.py) -- a table of the distinct settings and one sentence, computed, that says
whether the runs share them and, where not, how they differ."""

from __future__ import annotations

import dataclasses

import pandas as pd

from tinyscale.train.provenance import PACKAGES

VERSIONS = tuple(f"version_{p}" for p in PACKAGES)
SHOWN = ("git_commit", "git_dirty", *VERSIONS, "python_version", "devices", "processes")
NAMES = {"git_commit": "commit", "git_dirty": "uncommitted changes",
         **{f"version_{p}": p for p in PACKAGES}, "python_version": "python",
         "devices": "devices", "processes": "processes"}
SHORT = 10  # characters of a commit shown
LISTED = 3  # runs named in a table row or sentence before "..."


@dataclasses.dataclass
class Panel:
    table: pd.DataFrame  # one row per distinct provenance: its settings and its runs
    line: str            # what the runs share and how they differ


def _short(value) -> str:
    """A commit list shortened to SHORT characters each; other values as text."""
    return ", ".join(v[:SHORT] for v in str(value).split(", "))


def _names(runs) -> str:
    runs = list(runs)
    return ", ".join(runs[:LISTED]) + (f" and {len(runs) - LISTED} more"
                                       if len(runs) > LISTED else "")


def _counts(recorded: pd.DataFrame, column: str) -> dict:
    """{value: runs trained with it}; a run with several sessions counts for each value."""
    out: dict = {}
    for cell in recorded[column].dropna():
        for value in dict.fromkeys(str(cell).split(", ")):
            out[value] = out.get(value, 0) + 1
    return out


def compute(df: pd.DataFrame) -> Panel | None:
    """The provenance of the runs of `df` (analysis.runs.load; the models scored with
    `eval --hf` left out); None when it holds no run."""
    runs = df.drop_duplicates("run", keep="last")
    if "external" in runs:
        runs = runs[~runs["external"].astype(bool)]
    if runs.empty:
        return None
    sessions = runs["sessions"] if "sessions" in runs else pd.Series(0, index=runs.index)
    recorded = runs[sessions.fillna(0) > 0]
    return Panel(_table(recorded), _line(runs, recorded))


def _table(recorded: pd.DataFrame) -> pd.DataFrame:
    if recorded.empty:
        return pd.DataFrame()
    columns = [c for c in SHOWN if c in recorded]
    shown = recorded[columns].astype(object).where(recorded[columns].notna(), "–")
    shown["git_commit"] = shown["git_commit"].map(lambda v: v if v == "–" else _short(v))
    rows = []
    for values, group in shown.groupby(columns, sort=False, dropna=False):
        rows.append({**dict(zip(columns, values)), "runs": len(group),
                     "which": _names(recorded.loc[group.index, "run"])})
    return pd.DataFrame(rows).rename(columns=NAMES)


def _plural(count: int, word: str = "run") -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _line(runs: pd.DataFrame, recorded: pd.DataFrame) -> str:
    n, k = len(runs), len(recorded)
    if k == 0:
        return (f"None of the {n} runs records what trained it (no provenance.json: trained "
                "before tinyscale wrote one), so this report cannot say which code or "
                "package versions its numbers come from.")
    parts = []
    if k < n:
        unrecorded = runs.loc[~runs.index.isin(recorded.index), "run"]
        parts.append(f"{n - k} of the {n} runs record no provenance (trained before "
                     f"tinyscale wrote provenance.json): {_names(unrecorded)}")
    code, code_differs = _code(recorded)
    packages, packages_differ = _packages(recorded)
    text = "; ".join(parts + code + packages)
    text = text[:1].upper() + text[1:] + "."
    if code_differs or packages_differ:
        text += (" Differences between these runs may then come from their code or "
                 "packages as well as from the sweep's knobs.")
    return text


def _code(recorded: pd.DataFrame) -> tuple[list[str], bool]:
    """(clauses on the runs' commits and uncommitted changes, whether they differ)."""
    commit = recorded.get("git_commit", pd.Series(None, index=recorded.index, dtype=object))
    dirty = recorded.get("git_dirty", pd.Series(None, index=recorded.index, dtype=object))
    commits, no_git = _counts(recorded.assign(git_commit=commit), "git_commit"), \
        int(commit.isna().sum())
    parts, differs = [], len(commits) > 1
    if len(commits) > 1:
        parts.append(f"the runs were trained on {len(commits)} commits (" + "; ".join(
            f"{c[:SHORT]}: {_plural(m)}" for c, m in commits.items()) + ")")
    elif commits:
        every = "all " if no_git == 0 and len(recorded) > 1 else ""
        m = len(recorded) - no_git
        parts.append(f"{every}{_plural(m)} with provenance {'were' if m > 1 else 'was'} "
                     f"trained on commit {next(iter(commits))[:SHORT]}")
    resumed = recorded[commit.fillna("").str.contains(", ")]
    if len(resumed):
        parts.append(f"{_plural(len(resumed))} resumed on another commit than the one "
                     f"{'they' if len(resumed) > 1 else 'it'} started on "
                     f"({_names(resumed['run'])})")
    if no_git:
        parts.append(f"{_plural(no_git)} from an installed tinyscale, not a git checkout, "
                     "so only its version identifies the code")
    is_dirty = dirty.map(lambda d: d is True).astype(bool)
    unknown = int((dirty.isna() & commit.notna()).sum())
    if is_dirty.any():
        differs = differs or len(recorded) > 1  # two dirty runs may hold other code
        parts.append(f"{_plural(int(is_dirty.sum()))} from a checkout with uncommitted "
                     "changes, which no commit holds exactly "
                     f"({_names(recorded.loc[is_dirty, 'run'])})")
    elif commits and not unknown:
        parts.append("none with uncommitted changes")
    if unknown:
        parts.append(f"for {_plural(unknown)} git could not say whether the checkout had "
                     "uncommitted changes")
    return parts, differs


def _packages(recorded: pd.DataFrame) -> tuple[list[str], bool]:
    """(clauses on the runs' versions, Python and devices, whether they differ)."""
    parts, same = [], []
    for column in (*VERSIONS, "python_version", "devices", "processes"):
        if column not in recorded:
            continue
        values = _counts(recorded, column)
        if len(values) > 1:
            parts.append(f"{NAMES[column]} differs: " + ", ".join(
                f"{v} ({_plural(m)})" for v, m in values.items()))
        elif values and column in ("version_jax", "version_flax", "devices"):
            same.append(f"{NAMES[column]} {next(iter(values))}")
    differs = bool(parts)
    if same:
        parts.append(("every run with provenance had " if len(recorded) > 1 else "it had ")
                     + ", ".join(same))
    return parts, differs
