"""A trained run writes a corpus (Orca 2's teacher data; TinyStories' own method).

`tinyscale data generate --from RUN --stories N --out DIR` samples N stories from the
run, each prompted with the opening tokens of a story of the run's training split
(batched, KV-cached, temperature and top-p as asked), and writes DIR as prepared data
(the folder's files: `tinyscale/data/generated.py`). Training reads it with
`--config.data.dataset=generated --config.data.dir=DIR`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

from tinyscale.data import pipeline, tokenizer
from tinyscale.data.generated import source
from tinyscale.data.synthstories.validate import validate
from tinyscale.errors import TinyscaleError
from tinyscale.model import sample
from tinyscale.train import trained


def _openings(run, count: int, opening_tokens: int, seed: int) -> list[list[int]]:
    """The first `opening_tokens` tokens of `count` stories drawn from the run's training
    split, each after the EOS that marks a story's start."""
    stream = pipeline.tokens(run.data_dir, "train")
    ends = np.flatnonzero(np.asarray(stream) == tokenizer.EOS_ID)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    usable = starts[lengths > opening_tokens]
    if not len(usable):
        raise TinyscaleError(f"no training story of {run.data_dir} is longer than "
                             f"--opening-tokens {opening_tokens}: use fewer.")
    chosen = np.random.default_rng(seed).choice(usable, count)
    return [[tokenizer.EOS_ID] + np.asarray(stream[s:s + opening_tokens]).tolist()
            for s in chosen]


def generate(run_dir: str, stories: int, out: str, temperature: float = 1.0,
             top_p: float = 0.95, batch: int = 64, opening_tokens: int = 8, seed: int = 0,
             say=print) -> dict:
    """Write a corpus of `stories` stories sampled from `run_dir` into `out`; its meta."""

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise TinyscaleError(f"--out {out} exists and is not an empty folder: give a new "
                             "folder (a generated corpus is never written over another).")
    run = trained.load(run_dir, say=say)
    sp, limit = run.sp, run.config.model.max_seq_len
    s = sample.Sampling(limit - opening_tokens - 1, temperature, 0, top_p, 1, tokenizer.EOS_ID,
                        run.config.train.quick_compile)
    openings = _openings(run, stories, opening_tokens, seed)
    texts, ids, ended = [], [], 0
    start = time.perf_counter()
    with tqdm(total=stories, desc="generating", unit=" stories", file=sys.stderr,
              mininterval=0.5) as bar:
        for i in range(0, stories, batch):
            prompts = openings[i:i + batch]
            prompts += prompts[-1:] * (batch - len(prompts))  # one compiled shape
            outs = sample.generate(run.params.model, run.arrays, prompts, s, seed=seed + i,
                                   prompt_length=opening_tokens + 1)
            for prompt, new in list(zip(prompts, outs))[:stories - i]:
                story = prompt[1:] + new
                ended += len(new) < s.max_new_tokens
                ids.append(story)
                texts.append(sp.decode(story))
            bar.update(min(batch, stories - i))
    seconds = time.perf_counter() - start
    meta = _write(run, out, ids, texts, {
        "from": str(run_dir), "step": run.step, "stories": stories,
        "temperature": temperature, "top_p": top_p, "opening_tokens": opening_tokens,
        "seed": seed, "seconds": round(seconds, 2),
        "stories_per_s": round(stories / max(seconds, 1e-9), 2),
        "ended": round(ended / stories, 4)})
    say(f"generated {stories:,} stories in {seconds:.1f} s "
        f"({stories / max(seconds, 1e-9):,.1f} stories/s) into {out}")
    pipeline.verify(out)
    return meta


def _write(run, out: str, ids: list[list[int]], texts: list[str], generated: dict) -> dict:
    src = pipeline.load_meta(run.data_dir)
    tmp = f"{out.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        dtype = np.dtype(src["splits"]["train"]["dtype"])
        flat = np.fromiter((t for story in ids for t in story + [tokenizer.EOS_ID]), dtype)
        flat.astype(dtype.newbyteorder("<")).tofile(os.path.join(tmp, "train.bin"))
        n_bytes = sum(len(t.encode()) for t in texts)
        for name in (pipeline.tokenizer_name(src), "eval.bin"):
            shutil.copy(os.path.join(run.data_dir, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, "stories.txt"), "w") as f:
            f.write("".join(f"{t}\n<|endoftext|>\n" for t in texts))
        data = source(run.config.data, src)
        meta = {**{k: src[k] for k in ("format_version", "vocab_size", "eos_id", "bos_id",
                                       "bytes_per_token", "tokenizer_sha256")},
                "tokenizer_model": pipeline.tokenizer_name(src),
                "data": {"dataset": "generated"}, "source": data.to_dict(),
                "splits": {"train": {"stories": len(ids), "tokens": int(flat.size),
                                     "bytes": n_bytes, "bytes_per_token": n_bytes / flat.size,
                                     "dtype": dtype.name},
                           "eval": src["splits"]["eval"]},
                "generated": generated}
        if data.dataset == "synthstories":
            meta["quality"] = validator_shares(texts)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(tmp), key=lambda n: n == "meta.json"):  # meta last
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def validator_shares(texts: list[str]) -> dict:
    """What the SynthStories validator says of a corpus: the share of sentences the
    grammar accepts, of name / pronoun / object mentions that fit the story (the eval's
    consistency), of stories with no consistency error at all, and of stories fully
    valid."""
    reports = [validate(t) for t in texts]
    sentences = [s for r in reports for s in r.sentences]
    checks = sum(s.checks for s in sentences)
    return {"grammar": sum(s.grammatical for s in sentences) / max(1, len(sentences)),
            "mentions": 1 - sum(len(s.errors) for s in sentences) / max(1, checks),
            "consistency": sum(r.consistent for r in reports) / max(1, len(reports)),
            "valid": sum(r.valid for r in reports) / max(1, len(reports))}
