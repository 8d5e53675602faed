"""Expand a sweep file into runs, with the helpers sweep files use to describe grids.

A sweep file is a config file (big_vision style): `get_config(arg)` returns the base
ConfigDict and `sweep()` yields dicts of dotted overrides. Every run is checked before
anything is launched: an unknown key, a shape that fails validation, a duplicate or an
empty grid is reported with the file, the run and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import re

import ml_collections

from tinyscale import config as config_lib
from tinyscale.config import check as config_check
from tinyscale.config import file as config_file
from tinyscale.errors import TinyscaleError
from tinyscale.model import counting

# The released TinyStories models (Hugging Face roneneldan/TinyStories-*): GPT-Neo,
# (hidden size, layers), vocabulary 50257, 2048 positions, 16 heads.
RELEASED = {"TinyStories-1M": (64, 8), "TinyStories-3M": (128, 8), "TinyStories-8M": (256, 8),
            "TinyStories-28M": (512, 8), "TinyStories-33M": (768, 4),
            "TinyStories-1Layer-21M": (1024, 1), "TinyStories-2Layers-33M": (1024, 2)}


# ---- helpers for sweep files -------------------------------------------------------

def product(axes: dict[str, list]) -> list[dict]:
    """Every combination: product({"model.d_model": [64, 128], "model.n_layers": [1, 2]})."""
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def zipped(axes: dict[str, list]) -> list[dict]:
    """Values side by side: zipped({"model.d_model": [64, 128], "model.n_heads": [1, 2]})."""
    lengths = {len(v) for v in axes.values()}
    if len(lengths) != 1:
        raise TinyscaleError(f"zipped() needs lists of one length, got {sorted(lengths)}.")
    return [dict(zip(axes, values, strict=True)) for values in zip(*axes.values(), strict=True)]


def with_seeds(runs: list[dict], seeds: list[int]) -> list[dict]:
    return [{**run, "seed": s} for run in runs for s in seeds]


def width_for_parameters(target: float, base: ml_collections.ConfigDict, n_layers: int,
                         head_size: int = 16, kind: str = "non_embedding") -> int:
    """The d_model (a multiple of head_size) whose parameter count is closest to target."""
    best, best_gap = head_size, math.inf
    c = config_lib.Values.of(base)
    for d in range(head_size, 8192 + 1, head_size):
        c.model.update(d_model=d, n_layers=n_layers, n_heads=max(1, d // max(head_size, 64)))
        n = counting.of_config(c)[kind]
        if abs(math.log(n / target)) < best_gap:
            best, best_gap = d, abs(math.log(n / target))
    return best


# ---- expansion ------------------------------------------------------------------------

_SHORT = {"model.d_model": "d", "model.n_layers": "L", "model.n_heads": "h", "seed": "s",
          "model.family": "", "model.n_kv_heads": "kv", "model.d_ff": "ff", "train.lr": "lr",
          "train.tokens": "tok", "train.batch_size": "b"}


def run_name(overrides: dict) -> str:
    """A readable, stable name: d64-L2-h4-s0 (other overrides as key=value)."""
    parts = []
    for key, value in overrides.items():
        if key in _SHORT:
            parts.append(f"{_SHORT[key]}{value}")
        else:  # a path (a teacher run, a data dir) by its last part: names stay short
            shown = os.path.basename(os.path.normpath(value)) \
                if isinstance(value, str) and "/" in value else value
            parts.append(f"{key.split('.')[-1]}={shown}")
    name = "-".join(parts) or "base"
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)


@dataclasses.dataclass
class Run:
    index: int
    name: str
    overrides: dict
    values: config_lib.Values  # the resolved config as plain nested dicts (read-only use)

    @functools.cached_property
    def config(self) -> ml_collections.ConfigDict:
        """The config as a ConfigDict (built on demand: too slow for 10^5 runs)."""
        return ml_collections.ConfigDict(self.values.to_dict())


def apply(base, overrides: dict, path: str, name: str) -> config_lib.Values:
    """The validated config of one run: `base` (a ConfigDict or Values) with `overrides`."""
    values = config_lib.Values.of(base)
    try:
        for key, value in overrides.items():
            config_file.set_value(values, key, value)
        return config_check.validate(values)
    except TinyscaleError as error:
        raise TinyscaleError(f"{path}, run {name}: {error}") from None


def expand(spec: str, overrides: dict[str, str] | None = None,
           ) -> tuple[ml_collections.ConfigDict, list[Run]]:
    """(base config, runs) of a sweep file `FILE[:ARG]`, every run validated.

    `overrides` (from --config.KEY=VALUE) change the base config of every run.
    """
    path, _, arg = spec.partition(":")
    module = config_file.load_module(path)
    if not callable(getattr(module, "sweep", None)):
        raise TinyscaleError(f"{path} has no sweep(): define one that yields dicts of "
                             "dotted overrides, e.g. {'model.d_model': 64}.")
    base = config_file.load(spec)
    config_file.apply_overrides(base, overrides or {})
    grid = config_file.call_user(path, "sweep", module.sweep, arg)
    try:
        grid = list(grid)
    except TypeError:
        raise TinyscaleError(f"{path}: sweep() returned {type(grid).__name__}, not a list of "
                             "dicts of dotted overrides.") from None
    if not grid:
        raise TinyscaleError(f"{path}: sweep() yields no runs: give it at least one grid point.")
    runs, seen, effective, base_values = [], {}, {}, config_lib.Values.of(base)
    for i, overrides in enumerate(grid):
        if not isinstance(overrides, dict):
            raise TinyscaleError(f"{path}: sweep() item {i} is a {type(overrides).__name__}, "
                                 "not a dict of dotted overrides.")
        name = run_name(overrides)
        if name in seen:
            raise TinyscaleError(f"{path}: runs {seen[name]} and {i} are the same ({name}): "
                                 "remove the duplicate from sweep().")
        seen[name] = i
        values = apply(base_values, overrides, path, name)
        same = effective.setdefault(json.dumps(values, sort_keys=True, default=str), name)
        if same != name:
            raise TinyscaleError(f"{path}: runs {same} and {name} have the same effective "
                                 "config (their overrides set what the other leaves at its "
                                 "default): remove one from sweep().")
        runs.append(Run(i, name, dict(overrides), values))
    return base, runs
