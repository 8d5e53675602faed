"""Corpora written by a trained run (Orca 2's teacher data), as data: `source` (whose
prompts and metrics such a corpus uses) and `check_dir`. The writing is
`tinyscale/train/generate.py`'s; the folder it writes:


    meta.json        dataset "generated"; `source`: the data settings of the corpus the
                     run learned (its prompts and metrics are this data's too);
                     `generated`: the run, step, sampling, cost; on SynthStories,
                     `quality`: the validator's grammar and consistency shares
    tokenizer.model  the run's own, or its tokenizer_topk.json (a teacher and its
                     students share it)
    train.bin        the generated stories (opening + sampled tokens), EOS after each
    eval.bin         the run's held-out split, so held-out losses compare with the source's
    stories.txt      the stories as text, separated by <|endoftext|> lines

Training reads it with `--config.data.dataset=generated --config.data.dir=DIR`.
"""

from __future__ import annotations

import os

import ml_collections

from tinyscale.errors import TinyscaleError


def source(data: ml_collections.ConfigDict, meta: dict) -> ml_collections.ConfigDict:
    """The data settings whose prompts and metrics a run uses: its own, or for generated
    data, those of the corpus the generating run learned."""
    if data.dataset != "generated":
        return data
    out = ml_collections.ConfigDict(data.to_dict())
    out.update({k: v for k, v in meta["source"].items() if k in out})
    return out


def check_dir(data_dir: str) -> None:
    """A generated-data directory must be one `data generate` finished."""
    if not data_dir:
        raise TinyscaleError("config.data.dataset='generated' needs config.data.dir: the "
                             "folder `tinyscale data generate --from RUN --out DIR` wrote.")
    if not os.path.exists(os.path.join(data_dir, "meta.json")):
        raise TinyscaleError(f"config.data.dir={data_dir!r} holds no meta.json, so no "
                             "finished generated corpus: write one with `tinyscale data "
                             f"generate --from RUN --stories N --out {data_dir}`.")
