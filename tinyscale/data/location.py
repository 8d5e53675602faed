"""Where prepared data lives, keyed by the settings that determine it.

The key hashes the data.* knobs of the dataset (and, for TinyStories from a manual dir,
that folder's files), so different settings never share a prepared folder or a cached
tokenizer, and the same settings always find theirs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

import ml_collections

from tinyscale.config import noise_kinds

_TOKENIZER_KEYS = ("vocab_size", "tokenizer", "tokenizer_sample_mb")
DATA_KEYS = {
    "synthstories": _TOKENIZER_KEYS + ("synth_seed", "synth_richness", "train_stories",
                                       "eval_stories"),
    "tinystories": _TOKENIZER_KEYS + ("tinystories_version",),
    "generated": (),  # all of it is in data.dir, written by `tinyscale data generate`
}


def source_fingerprint(manual_dir: str) -> str:
    """Names, sizes and modification times of the files in a manual dir ("" for none):
    different files are a different corpus, however the folder is named."""
    if not manual_dir:
        return ""
    folder = os.path.expanduser(manual_dir)
    entries = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        stat = os.stat(os.path.join(folder, name))
        entries.append((name, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:12]


def file_sha256(path: str) -> str:
    """The hash of a file's contents (a tokenizer.json: read once per version of it)."""
    stat = os.stat(os.path.expanduser(path))
    return _sha256(os.path.abspath(os.path.expanduser(path)), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def quality_values(d, noise: bool = True, filtered: bool = True) -> dict:
    """The quality knobs that change the training split (none when all are off), for the
    prepared data's key: data prepared before these knobs existed keeps its key."""
    values = {}
    if noise and d.noise:
        values.update(noise=d.noise, noise_kinds=",".join(noise_kinds(d)), noise_seed=d.noise_seed)
    if filtered and d.filter != "none":
        values.update(filter=d.filter, filter_keep=d.filter_keep)
    return values


def data_key(c: ml_collections.ConfigDict, noise: bool = True, filtered: bool = True) -> str:
    """A short hash of the settings (and the manual dir's files) that determine the data;
    without `filtered`, of the corpus before data.filter (its scores' cache), without
    `noise` too, of the clean corpus (its tokenizer: every quality setting shares it)."""
    d = c.data
    values = {k: d[k] for k in ("dataset",) + DATA_KEYS[d.dataset]}
    if d.dataset == "tinystories":
        values["source"] = source_fingerprint(d.manual_dir)
    if d.get("instruct"):  # only when set: data prepared before the knob keeps its key
        values["instruct"] = True
    if d.get("tokenizer_file"):  # likewise; the file's contents, wherever it lies
        values["tokenizer_file"] = file_sha256(d.tokenizer_file)
    values.update(quality_values(d, noise, filtered))
    blob = json.dumps(values, sort_keys=True)
    return f"{d.dataset}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def data_dir(c: ml_collections.ConfigDict, sweep_dir: str | None = None) -> str:
    """Where the prepared data for this config lives: config.data.dir; else, for a run of
    a sweep, <sweep_dir>/data/<key> (prepared once, read by every worker); else the cache."""
    if c.data.dir:
        return os.path.expanduser(c.data.dir)
    if sweep_dir:
        return f"{str(sweep_dir).rstrip('/')}/data/{data_key(c)}"
    return os.path.join(os.path.expanduser(c.data.cache_dir), "data", data_key(c))
