"""Validation of a config: every knob a user might get wrong, checked before any work
starts, with one line that names the knob and the fix (`validate`). Knobs and their
defaults are declared in `tinyscale.config`; the domains of the data-quality knobs too
(`FILTERS`, `NOISE_KINDS`), so that checking a config imports no data pipeline.
"""

from __future__ import annotations

import functools
import math
import os

import ml_collections

from tinyscale.config import (
    ATTENTIONS,
    DATASETS,
    DTYPES,
    FAMILIES,
    FILTERS,
    GPT_NEO_TOKENIZER,
    PARAMETRIZATIONS,
    TOKENIZERS,
    TOPK_MIN_VOCAB,
    attention_types,
    branch_steps,
    cooldown_start,
    noise_kinds,
    noise_supported,
    quality_active,
    total_steps,
)
from tinyscale.errors import TinyscaleError


def _check_branches(c) -> None:
    """train.branches: token budgets below the run's own, on a wsd schedule, each forking
    from the stable phase the run trains anyway."""
    t = c.train
    branches = t.branches
    if not branches:
        return
    if not isinstance(branches, (tuple, list)) or not all(
            isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in branches):
        _fail("train.branches", branches, "give a list of token budgets, e.g. "
              "(500_000, 1_000_000)")
    if t.schedule != "wsd":
        _fail("train.branches", branches, "branches fork from a stable phase: set "
              "--config.train.schedule=wsd")
    total = total_steps(c)
    stable = cooldown_start(total, t.warmup_steps, t.decay_fraction)
    tokens_per_step = t.batch_size * t.seq_len
    seen = set()
    for tokens in branches:
        steps = branch_steps(c, tokens)
        if steps in seen or steps >= total:
            what = "repeats another" if steps in seen else \
                f"is not below the run's own {total * tokens_per_step} tokens"
            _fail("train.branches", branches, f"{tokens} tokens ({steps} steps) {what}; "
                  "give distinct budgets smaller than train.tokens")
        seen.add(steps)
        fork = cooldown_start(steps, t.warmup_steps, t.decay_fraction)
        if fork > stable or steps <= t.warmup_steps:
            _fail("train.branches", branches, f"a {tokens}-token branch would fork at step "
                  f"{fork}, outside the run's stable phase (steps {t.warmup_steps}-{stable}); "
                  "use larger budgets or fewer warmup steps")


def _check_experts(m) -> None:
    experts, k = m.n_experts, m.experts_per_token
    if not isinstance(experts, int) or isinstance(experts, bool) or experts < 0:
        _fail("model.n_experts", experts, "use 0 (a dense MLP) or a number of experts")
    if not experts:
        return
    if m.family != "llama":
        _fail("model.n_experts", experts, "experts are Mixtral's, in the llama family: set "
              "--config.model.family=llama or --config.model.n_experts=0")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= experts:
        _fail("model.experts_per_token", k, f"use 1 to model.n_experts={experts}")
    for knob in ("router_aux_coef", "router_z_coef"):
        value = m[knob]
        if not isinstance(value, (int, float)) or value < 0:
            _fail(f"model.{knob}", value, "use a non-negative weight")


def _check_tokenizer_file(d) -> None:
    """data.tokenizer_file: "" or a readable file, which replaces data.tokenizer."""
    path = d.tokenizer_file
    if not isinstance(path, str):
        _fail("data.tokenizer_file", path, 'give the path of a tokenizer.json, or ""')
    if not path:
        return
    if not os.path.isfile(os.path.expanduser(path)):
        _fail("data.tokenizer_file", path, "no such file: give the path of a Hugging Face "
              "tokenizer.json (a byte-level BPE such as GPT-2's), or \"\" for "
              "data.tokenizer")
    if d.tokenizer != "bpe":
        _fail("data.tokenizer", d.tokenizer, "data.tokenizer_file is set and its byte-level "
              "BPE is used: leave data.tokenizer at bpe, or clear data.tokenizer_file")


def _fail(knob: str, value, fix: str) -> None:
    raise TinyscaleError(f"config.{knob}={value!r} is invalid: {fix}.")


def _positive(c, *knobs: str, allow_zero=()) -> None:
    for knob in knobs:
        value = _get(c, knob)
        ok = isinstance(value, int) and not isinstance(value, bool) and (
            value > 0 or (knob in allow_zero and value == 0))
        if not ok:
            _fail(knob, value, f"set --config.{knob} to a positive integer")


def _choice(c, knob: str, options) -> None:
    if _get(c, knob) not in options:
        _fail(knob, _get(c, knob), f"choose one of {', '.join(options)}")


def _get(c, knob: str):
    for part in _parts(knob):
        c = c[part]
    return c


@functools.cache
def _parts(knob: str) -> tuple[str, ...]:
    return tuple(knob.split("."))


def _check_numbers(node, prefix: str = "") -> None:
    """By class, over every knob: a float must be finite; a seed a non-negative integer."""
    for key in node.keys() if hasattr(node, "keys") else ():
        value, knob = node[key], f"{prefix}{key}"
        if hasattr(value, "keys"):
            _check_numbers(value, f"{knob}.")
        elif isinstance(value, float) and not math.isfinite(value):
            _fail(knob, value, "use a finite number")
        elif key.endswith("seed") and (not isinstance(value, int) or isinstance(value, bool)
                                       or value < 0):
            _fail(knob, value, "use a non-negative integer seed")


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every knob a user might get wrong; return the config unchanged."""
    _check_numbers(c)
    _choice(c, "data.dataset", DATASETS)
    _choice(c, "data.tinystories_version", ("original", "gpt4"))
    _choice(c, "data.tokenizer", TOKENIZERS)
    _check_tokenizer_file(c.data)
    if not isinstance(c.data.instruct, bool):
        _fail("data.instruct", c.data.instruct, "use True or False")
    if c.data.dataset == "generated" and not c.data.dir:
        _fail("data.dir", "", "data.dataset=generated reads the folder `tinyscale data "
              "generate --from RUN --out DIR` wrote: set --config.data.dir=DIR")
    _positive(c, "data.train_stories", "data.eval_stories", "data.tokenizer_sample_mb")
    if not 0.0 < c.data.synth_richness <= 1.0:
        _fail("data.synth_richness", c.data.synth_richness, "use a share in (0, 1]")
    _check_quality(c.data)
    if not 64 <= c.data.vocab_size <= 65_535:
        _fail("data.vocab_size", c.data.vocab_size, "use a size from 64 to 65535")
    if (c.data.tokenizer == GPT_NEO_TOKENIZER or c.data.tokenizer_file) \
            and c.data.vocab_size < TOPK_MIN_VOCAB:
        _fail("data.vocab_size", c.data.vocab_size, "a byte-level BPE keeps its 256 byte "
              f"tokens and 3 special ids: use at least {TOPK_MIN_VOCAB} (the paper: 10000)")
    _choice(c, "model.family", FAMILIES)
    _positive(c, "model.d_model", "model.n_layers", "model.n_heads", "model.max_seq_len",
              "model.window_size", "model.n_kv_heads", "model.d_ff",
              allow_zero=("model.n_kv_heads", "model.d_ff"))
    if c.model.d_model % c.model.n_heads:
        _fail("model.n_heads", c.model.n_heads,
              f"it must divide model.d_model={c.model.d_model}")
    kv = c.model.n_kv_heads or c.model.n_heads
    if c.model.n_heads % kv:
        _fail("model.n_kv_heads", kv, f"it must divide model.n_heads={c.model.n_heads}")
    if not 0.0 < c.model.rotary_fraction <= 1.0:
        _fail("model.rotary_fraction", c.model.rotary_fraction, "use a share in (0, 1]")
    rotated = int(c.model.d_model // c.model.n_heads * c.model.rotary_fraction)
    if c.model.family != "gpt_neo" and (rotated < 2 or rotated % 2):
        _fail("model.n_heads", c.model.n_heads, "RoPE needs an even number (>= 2) of rotated dims "
              "(d_model / n_heads x model.rotary_fraction); change model.d_model, "
              "model.n_heads or model.rotary_fraction")
    layers = [x.strip() for x in c.model.attention_pattern.split(",")]
    if c.model.attention_pattern != "auto" and (
            not layers or any(x not in ("global", "local") for x in layers)):
        _fail("model.attention_pattern", c.model.attention_pattern,
              "use auto, or a comma-separated list of global and local")
    if "local" in attention_types(c.model) and c.model.window_size > c.model.max_seq_len:
        _fail("model.window_size", c.model.window_size, "a local layer's window must fit the "
              f"context: use at most model.max_seq_len={c.model.max_seq_len}, or make every "
              "layer global (--config.model.attention_pattern=global)")
    _check_experts(c.model)
    _choice(c, "model.dtype", DTYPES)
    _choice(c, "model.param_dtype", DTYPES[1:])
    _choice(c, "model.attention", ATTENTIONS)  # and against the device: ModelSpec.on
    _choice(c, "model.parametrization", PARAMETRIZATIONS)
    _positive(c, "model.mup_base_width")
    _check_tune(c)
    _positive(c, "train.seq_len", "train.batch_size", "train.tokens", "train.steps",
              "train.grad_accum", "train.log_every", "train.checkpoint_every",
              "train.keep_checkpoints", "train.warmup_steps", "eval.every", "eval.batches",
              "eval.prompts", "eval.max_new_tokens", "eval.beams", "eval.judge_concurrency",
              "eval.fluency_prompts", "eval.judge_retries", "launch.max_attempts",
              "launch.parallel", "launch.slurm_cpus", "launch.slurm_max_parallel",
              "launch.tpu_slots", "launch.stale_after_s", "launch.slurm_gpus",
              "launch.slurm_nodes", "launch.slurm_tasks_per_node",
              "distributed.heartbeat_timeout_s", "distributed.shutdown_timeout_s",
              allow_zero=("train.steps", "train.warmup_steps", "launch.slurm_gpus",
                          "eval.judge_retries"))
    if c.train.seq_len > c.model.max_seq_len:
        _fail("train.seq_len", c.train.seq_len,
              f"it must not exceed model.max_seq_len={c.model.max_seq_len}")
    if c.train.batch_size % c.train.grad_accum:
        _fail("train.grad_accum", c.train.grad_accum,
              f"it must divide train.batch_size={c.train.batch_size}")
    _choice(c, "train.schedule", ("constant", "cosine", "linear", "wsd"))
    fraction = c.train.decay_fraction
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        _fail("train.decay_fraction", fraction, "use a share of the run in (0, 1], e.g. 0.2")
    _check_branches(c)
    weight, temperature = c.train.distill_weight, c.train.distill_temperature
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
        _fail("train.distill_weight", weight, "use a share in [0, 1] (0: cross-entropy only)")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) \
            or not temperature > 0:
        _fail("train.distill_temperature", temperature, "use a positive temperature, e.g. 2")
    for knob in ("train.b1", "train.b2"):
        if not isinstance(_get(c, knob), (int, float)) or not 0 <= _get(c, knob) < 1:
            _fail(knob, _get(c, knob), "an Adam beta is a decay rate in [0, 1), e.g. 0.9")
    if not isinstance(c.train.eps, (int, float)) or not c.train.eps > 0:
        _fail("train.eps", c.train.eps, "use a small positive number, e.g. 1e-8")
    for knob in ("train.lr", "train.weight_decay", "train.grad_clip", "train.final_lr_ratio"):
        if not isinstance(_get(c, knob), (int, float)) or _get(c, knob) < 0:
            _fail(knob, _get(c, knob), "use a non-negative number")
    for knob in ("eval.temperature", "output.peak_flops"):
        if not isinstance(_get(c, knob), (int, float)) or _get(c, knob) < 0:
            _fail(knob, _get(c, knob), "use a non-negative number")
    pack = c.launch.pack
    if pack != "auto" and (not isinstance(pack, int) or isinstance(pack, bool) or pack < 1):
        _fail("launch.pack", pack, 'use a number of runs per program (1 = no packing) or "auto"')
    if not c.launch.tpu_poll_s > 0:
        _fail("launch.tpu_poll_s", c.launch.tpu_poll_s, "use a positive number of seconds")
    if c.train.lr == 0:
        _fail("train.lr", 0, "use a positive learning rate")
    for axis in ("data", "fsdp", "tensor"):
        if c.mesh[axis] == 0 or c.mesh[axis] < -1:
            _fail(f"mesh.{axis}", c.mesh[axis], "use a positive size, or -1 for the rest")
    if [c.mesh[a] for a in ("data", "fsdp", "tensor")].count(-1) > 1:
        _fail("mesh", {a: c.mesh[a] for a in ("data", "fsdp", "tensor")},
              "at most one mesh axis may be -1")
    return c


def _check_tune(c) -> None:
    """The learning-rate grid of `sweep tune-lr`: at least 3 rates (the fit around the
    best needs its neighbours), 0 < lr_min < lr_max, at least 100 resamples."""
    _positive(c, "tune.lrs", "tune.steps", "tune.bootstrap")
    tu = c.tune
    if tu.lrs < 3:
        _fail("tune.lrs", tu.lrs, "use at least 3 learning rates (the fit around the best "
              "needs one on each side)")
    if tu.bootstrap < 100:
        _fail("tune.bootstrap", tu.bootstrap, "use at least 100 resamples")
    low, high = tu.lr_min, tu.lr_max
    for knob, value in (("tune.lr_min", low), ("tune.lr_max", high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            _fail(knob, value, "use a positive learning rate")
    if not low < high:
        _fail("tune.lr_max", high, f"it must be above tune.lr_min={low}")


def _check_quality(d) -> None:
    """Validate the data-quality knobs of config.data `d` (one line naming the knob)."""
    noise = d.noise
    if d.dataset == "generated" and quality_active(d):
        _fail("data.noise" if noise else "data.filter", noise or d.filter, "noise and filters "
              "apply to synthstories and tinystories; a generated corpus is what its run "
              "wrote (set them on the run's own data)")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise < 1:
        _fail("data.noise", noise, "use a share of the training stories in [0, 1), e.g. 0.25")
    for kind in noise_kinds(d):
        if kind not in noise_supported(d.dataset):
            _fail("data.noise_kinds", d.noise_kinds, f"{kind!r} is not a corruption of "
                  f"{d.dataset}: use all, or a comma-separated list of "
                  f"{', '.join(noise_supported(d.dataset))}")
    if d.filter not in FILTERS:
        _fail("data.filter", d.filter, f"choose one of {', '.join(FILTERS)}")
    if d.filter == "grammar" and d.dataset != "synthstories":
        _fail("data.filter", d.filter, "the grammar filter scores SynthStories only (it is "
              "that corpus's grammar): use --config.data.filter=reference_lm on "
              f"{d.dataset}")
    keep = d.filter_keep
    if not isinstance(keep, (int, float)) or isinstance(keep, bool) or not 0 < keep <= 1:
        _fail("data.filter_keep", keep, "use the share of training stories kept, in (0, 1]")
