"""Prepare a corpus once, then serve batches as a pure function of the step.
One file: the on-disk format below is written by `prepare` and read by `verify`,
`tokens` and `Batches`, so writer and readers stay beside it.

On-disk format of a prepared data directory (written to a temp dir, then moved in,
meta.json last, so a directory with meta.json is complete; each use checks the files
against meta.json's sizes and the tokenizer's hash):

    meta.json        dataset settings, vocabulary, EOS id, dtype, per-split counts and
                     bytes per token, the tokenizer's file name and hash
    tokenizer.model  the sentencepiece model (data.tokenizer = bpe | unigram), or
    tokenizer_topk.json  a byte-level BPE cut to its top-K tokens (gpt_neo_top10k,
                     data.tokenizer_file; topk.TopK); ids 0, 1, 2 = unk, bos, eos
    filter.npz       with data.filter: each training story's score, kept, corrupted
    train.bin        the training split: every story's token ids followed by EOS,
    eval.bin         concatenated; raw little-endian uint16 (uint32 above 65,535 ids)

Packing: sequence j of a split is `tokens[j*L : j*L + L + 1]` (inputs and shifted
targets) for sequence length L, so one stored stream serves every L. Batches are a
pure function of (seed, step, process index, process count): global row r of step s
is sequence `perm_e[(s*B + r) mod n]` with `perm_e` a seeded permutation for epoch
e = (s*B + r) // n; each process takes its contiguous slice of the B rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile

import ml_collections
import numpy as np
from etils import epath
from tqdm import tqdm

from tinyscale.config import Values, get_config, quality_active
from tinyscale.data import generated, location, quality, synthstories, tinystories, tokenizer
from tinyscale.data.synthstories import instruct
from tinyscale.errors import TinyscaleError
from tinyscale.storage import is_remote, write_atomic

FORMAT_VERSION = 1


def _sources(c: ml_collections.ConfigDict):
    """(train texts, eval texts, counts or None) as re-iterable callables."""
    d = c.data
    if d.dataset == "synthstories":
        make = instruct.stories if d.instruct else synthstories.stories

        def split(name, count):
            return _MadeOnce(lambda: (s.text for s in make(count, d.synth_seed, name,
                                                              d.synth_richness)))
        return split("train", d.train_stories), split("eval", d.eval_stories), (
            d.train_stories, d.eval_stories)
    builder = tinystories.from_config(d)
    counts = tuple(builder.info.splits[s].num_examples for s in ("train", "validation"))
    return (lambda: tinystories.texts(builder, "train"),
            lambda: tinystories.texts(builder, "validation"), counts)


class _MadeOnce:
    """Generated texts, re-iterable: made on the first full pass and spilled to an unnamed
    temporary file as they are made, read back from it on later passes (the tokenizer's
    sample, the quality filter and the split each read the train texts; generating
    SynthStories is the slowest part of preparing them). A pass stopped early leaves
    nothing kept: the next one generates again."""

    def __init__(self, make):
        self.make, self.file = make, None

    def __call__(self):
        return self._read() if self.file else self._write()

    def _write(self):
        spill = tempfile.TemporaryFile("w+", encoding="utf-8")
        for text in self.make():
            spill.write(json.dumps(text) + "\n")
            yield text
        self.file = spill

    def _read(self):
        self.file.seek(0)
        return (json.loads(line) for line in self.file)


def _progress(total, desc, enabled):
    return tqdm(total=total, desc=desc, unit=" stories", disable=not enabled,
                file=sys.stderr, mininterval=0.5)


def _write_split(sp, texts, path, total, desc, progress) -> dict:
    dtype = np.uint16 if sp.get_piece_size() <= 65_535 else np.uint32
    n_tokens = n_bytes = n_stories = 0
    with open(path, "wb") as f, _progress(total, desc, progress) as bar:
        for ids, sizes in tokenizer.encode_batches(sp, texts):
            flat = np.fromiter((t for x in ids for t in x), dtype=dtype)
            flat.astype(np.dtype(dtype).newbyteorder("<")).tofile(f)
            n_tokens += flat.size
            n_bytes += sum(sizes)
            n_stories += len(ids)
            bar.update(len(ids))
    if n_stories == 0:
        raise TinyscaleError(f"the {desc} split is empty: check the corpus files "
                             "(config.data.manual_dir) or config.data.*_stories.")
    return {"stories": n_stories, "tokens": n_tokens, "bytes": n_bytes,
            "bytes_per_token": n_bytes / n_tokens, "dtype": np.dtype(dtype).name}


def prepare(c: ml_collections.ConfigDict, progress: bool = True,
            sweep_dir: str | None = None) -> str:
    """Tokenise and pack the corpus of config `c` unless already done; its local directory.

    An existing folder without meta.json is prepared into (its other files are left
    alone); one with meta.json is checked, never overwritten. For a run of a sweep the
    data lives under the sweep (`location.data_dir`); on gs:// it is prepared (or found)
    there and read through a local copy in the cache, checked against its meta.json."""
    if c.data.dataset == "generated":
        generated.check_dir(c.data.dir and os.path.expanduser(c.data.dir))
        _check_settings(os.path.expanduser(c.data.dir), c)
        verify(os.path.expanduser(c.data.dir))
        return os.path.expanduser(c.data.dir)
    out = location.data_dir(c, sweep_dir)
    if is_remote(out):
        return _through_local_copy(c, out, progress)
    return _prepare_local(c, out, progress)


def _through_local_copy(c, remote: str, progress: bool) -> str:
    local = os.path.join(os.path.expanduser(c.data.cache_dir), "data", location.data_key(c))
    source = epath.Path(remote)
    if (source / "meta.json").exists():
        if not os.path.exists(os.path.join(local, "meta.json")):
            tmp = f"{local}.tmp-{os.getpid()}"
            os.makedirs(tmp, exist_ok=True)
            for path in source.iterdir():
                (epath.Path(tmp) / path.name).write_bytes(path.read_bytes())
            _move_in(tmp, local)
            shutil.rmtree(tmp, ignore_errors=True)
        _check_settings(local, c)
        verify(local)
        return local
    _prepare_local(c, local, progress)
    names = sorted(os.listdir(local), key=lambda n: n == "meta.json")  # meta.json last
    for name in names:
        (source / name).write_bytes(open(os.path.join(local, name), "rb").read())
    return local


def _prepare_local(c, out: str, progress: bool) -> str:
    if os.path.exists(out) and not os.path.isdir(out):
        raise TinyscaleError(f"--data-dir {out} (config.data.dir) is a file, not a folder: "
                             "give a folder to prepare the data in.")
    if os.path.exists(os.path.join(out, "meta.json")):
        _check_settings(out, c)
        verify(out)
        return out
    tokenizer.check_source(c.data)  # before the corpus is read: that may take long
    train_texts, eval_texts, (n_train, n_eval) = _sources(c)
    tmp = f"{out.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        if progress:
            print(tokenizer.describe(c.data), file=sys.stderr)
        # made from the clean corpus: every noise and filter setting shares it, so their
        # losses are per token of one vocabulary
        model = tokenizer.cached(train_texts(), location.data_key(c, noise=False,
                                                                  filtered=False), c.data)
        name = tokenizer.file_name(c.data)
        report = {}
        if quality_active(c.data):
            training = quality.Training(train_texts, n_train, c, progress)
            train_texts, n_train, report = training.texts, training.count, training.report
            training.save(tmp)
        shutil.copy(model, os.path.join(tmp, name))
        sp = tokenizer.load(model)
        splits = {
            "train": _write_split(sp, train_texts(), os.path.join(tmp, "train.bin"),
                                  n_train, "train", progress),
            "eval": _write_split(sp, eval_texts(), os.path.join(tmp, "eval.bin"),
                                 n_eval, "eval", progress),
        }
        meta = {"format_version": FORMAT_VERSION, "data": c.data.to_dict(),
                "vocab_size": sp.get_piece_size(), "eos_id": tokenizer.EOS_ID,
                "bos_id": tokenizer.BOS_ID, "splits": splits,
                "bytes_per_token": splits["eval"]["bytes_per_token"],
                "tokenizer_model": name,
                "tokenizer_sha256": _sha256(os.path.join(tmp, name)),
                **report}
        if c.data.tokenizer_file:  # the file itself, whatever its path
            meta["tokenizer_file_sha256"] = location.file_sha256(c.data.tokenizer_file)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
        _move_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_in(tmp: str, out: str) -> None:
    """Move the prepared files into `out` (which may exist), meta.json last: a folder
    with meta.json is complete. A concurrent preparer's result is the same; first wins."""
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, "meta.json")):
        return
    for name in sorted(os.listdir(tmp), key=lambda n: n == "meta.json"):
        os.replace(os.path.join(tmp, name), os.path.join(out, name))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _check_settings(data_dir: str, c: ml_collections.ConfigDict) -> None:
    """A prepared folder must hold the data these settings ask for."""
    meta = load_meta(data_dir)
    saved = meta["data"]
    for key in location.DATA_KEYS[c.data.dataset] + ("dataset",):
        if key in saved and saved[key] != c.data[key]:
            raise TinyscaleError(
                f"{data_dir} holds data prepared with config.data.{key}={saved[key]!r}, not "
                f"{c.data[key]!r}: use another --data-dir (config.data.dir), or the same "
                "settings.")
    if saved.get("instruct", False) != c.data.get("instruct", False):
        raise TinyscaleError(
            f"{data_dir} holds data prepared with config.data.instruct="
            f"{saved.get('instruct', False)}, not {c.data.instruct}: use another --data-dir "
            "(config.data.dir), or the same settings.")
    if c.data.dataset != "generated" and meta.get("tokenizer_file_sha256", "") != (
            c.data.tokenizer_file and location.file_sha256(c.data.tokenizer_file)):
        was = saved.get("tokenizer_file", "")
        why = "a file that has changed since" if was == c.data.tokenizer_file else \
            f"not {c.data.tokenizer_file!r}"
        raise TinyscaleError(
            f"{data_dir} holds data prepared with config.data.tokenizer_file={was!r}, {why}: "
            "use another --data-dir (config.data.dir), or the same settings.")
    was = location.quality_values(Values.of({**get_config().data.to_dict(), **saved}))
    now = location.quality_values(c.data)
    for key in sorted(set(was) | set(now)):
        if was.get(key) != now.get(key):
            raise TinyscaleError(
                f"{data_dir} holds data prepared with config.data.{key}="
                f"{was.get(key, 'off')!r}, not {now.get(key, 'off')!r}: use "
                "another --data-dir (config.data.dir), or the same settings.")


def verify(data_dir: str) -> None:
    """Check the files against meta.json: the token files' sizes, the tokenizer's hash."""
    meta = load_meta(data_dir)
    damaged = None
    for split, info in meta["splits"].items():
        path = os.path.join(data_dir, f"{split}.bin")
        want = info["tokens"] * np.dtype(info["dtype"]).itemsize
        have = os.path.getsize(path) if os.path.exists(path) else None
        if have != want:
            damaged = (f"{split}.bin holds {have if have is not None else 'no'} bytes, "
                       f"meta.json says {want:,}")
            break
    name = tokenizer_name(meta)
    model = os.path.join(data_dir, name)
    if damaged is None and not os.path.exists(model):
        damaged = f"{name} is missing"
    elif damaged is None and meta.get("tokenizer_sha256", _sha256(model)) != _sha256(model):
        damaged = f"{name} does not match the hash in meta.json"
    if damaged:
        raise TinyscaleError(f"the prepared data in {data_dir} is damaged ({damaged}): "
                             "delete that folder and run `tinyscale data prepare` again.")


def keep_with_run(data_dir: str, run_data) -> None:
    """Put what evaluating, sampling and exporting a run need into `run_data` (the run's
    own data/ folder, local or gs://): meta.json (its splits cut to the held-out one, and
    where the data was prepared), the tokenizer and eval.bin (a hard link where one can
    be made). A run copied alone to another machine then needs no data dir: it is never
    prepared again to read a finished run."""
    if (run_data / "meta.json").exists():
        return
    meta = load_meta(data_dir)
    run_data.mkdir(parents=True, exist_ok=True)
    for name in (tokenizer_name(meta), "eval.bin"):
        source, target = os.path.join(data_dir, name), run_data / name
        try:
            os.link(source, os.fspath(target))
        except (OSError, TypeError, NotImplementedError):  # another disk, or gs://
            target.write_bytes(open(source, "rb").read())
    kept = {**meta, "splits": {"eval": meta["splits"]["eval"]}, "prepared_in": data_dir}
    write_atomic(run_data / "meta.json", json.dumps(kept, indent=2))


def load_meta(data_dir: str) -> dict:
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path):
        raise TinyscaleError(f"{data_dir} holds no prepared data: run "
                             f"`tinyscale data prepare --data-dir {data_dir}` first.")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        raise TinyscaleError(f"{path} is not valid JSON: delete {data_dir} and run "
                             "`tinyscale data prepare` again.") from None


def tokenizer_name(meta: dict) -> str:
    """The name of the tokenizer's file in a prepared data dir (tokenizer.model before
    meta.json named it)."""
    return meta.get("tokenizer_model", tokenizer.SENTENCEPIECE_FILE)


def load_tokenizer(data_dir: str):
    """The data's tokenizer (a sentencepiece processor, or a topk.TopK with the same
    interface), checked against meta.json first."""
    verify(data_dir)
    return tokenizer.load(os.path.join(data_dir, tokenizer_name(load_meta(data_dir))))


def tokens(data_dir: str, split: str) -> np.ndarray:
    """The split's token stream, memory-mapped (random access, nothing read yet)."""
    meta = load_meta(data_dir)
    dtype = np.dtype(meta["splits"][split]["dtype"]).newbyteorder("<")
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != meta["splits"][split]["tokens"] \
            * dtype.itemsize:
        verify(data_dir)  # says what is wrong, in one line
    return np.memmap(path, dtype=dtype, mode="r")


class Batches:
    """Batches of packed sequences, a pure function of the step.

    `batch(step)` returns this process's rows of the global batch: int32 of shape
    [batch_size // process_count, seq_len + 1].
    """

    def __init__(self, data_dir: str, split: str, seq_len: int, batch_size: int,
                 seed: int, process_index: int = 0, process_count: int = 1):
        if batch_size % process_count:
            raise TinyscaleError(
                f"config.train.batch_size={batch_size} does not divide over "
                f"{process_count} processes: use a multiple of {process_count}.")
        self.stream = tokens(data_dir, split)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.n_sequences = (len(self.stream) - 1) // seq_len
        if self.n_sequences < 1:
            raise TinyscaleError(f"the {split} split has fewer than {seq_len + 1} tokens: "
                                 "prepare more data or lower config.train.seq_len.")
        local = batch_size // process_count
        self.rows = np.arange(process_index * local, (process_index + 1) * local)
        self.offsets = np.arange(seq_len + 1)
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.n_sequences)
        return self._perm

    def sequence_ids(self, step: int) -> np.ndarray:
        global_rows = step * self.batch_size + self.rows
        epochs, positions = np.divmod(global_rows, self.n_sequences)
        if epochs[0] == epochs[-1]:
            return self._permutation(int(epochs[0]))[positions]
        return np.array([self._permutation(int(e))[p] for e, p in zip(epochs, positions)])

    def batch(self, step: int) -> np.ndarray:
        starts = self.sequence_ids(step) * self.seq_len
        return self.stream[starts[:, None] + self.offsets].astype(np.int32)

    def eval_batch(self, index: int) -> np.ndarray:
        """Fixed, unshuffled batch `index` (sequences in stored order, wrapping)."""
        ids = (index * self.batch_size + self.rows) % self.n_sequences
        return self.stream[ids[:, None] * self.seq_len + self.offsets].astype(np.int32)
