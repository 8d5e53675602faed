"""The default configuration: every knob, declared once, with what it does.

Sweep files start from `get_config()` and change what they need; `validate` checks a
config before anything reads it and names the knob and the fix when a value is wrong.
"""

from __future__ import annotations

import functools
import math
import os

import ml_collections

from tinyscale.errors import TinyscaleError

CONFIG_VERSION = 2  # saved configs without config_version are version 1 (from_saved)
CACHE_ROOT = "~/.cache/tinyscale"  # the default data.cache_dir: every cache lives under it
# The launchers point their workers' persistent compilation cache into the sweep dir with
# this variable; "" turns the cache off; unset, it is <data.cache_dir default>/jax.
COMPILATION_CACHE_ENV = "TINYSCALE_COMPILATION_CACHE"
DATASETS = ("synthstories", "tinystories", "generated")
# data.tokenizer (data/tokenizer.py): sentencepiece model types, trained here, and
# GPT-Neo's BPE cut to its top data.vocab_size tokens
SENTENCEPIECE_TOKENIZERS, GPT_NEO_TOKENIZER = ("bpe", "unigram"), "gpt_neo_top10k"
TOKENIZERS = SENTENCEPIECE_TOKENIZERS + (GPT_NEO_TOKENIZER,)
TOPK_MIN_VOCAB = 260  # a restricted byte-level BPE: 3 special ids, 256 bytes, one more
FAMILIES = ("llama", "gpt_neo", "phi")


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.config_version = CONFIG_VERSION    # the schema this config was written in
    c.seed = 0                           # seeds parameter init and the data order

    c.data = d = ml_collections.ConfigDict()
    d.dataset = "synthstories"           # synthstories (built in) | tinystories (TFDS) |
                                         # generated (data.dir from `data generate`)
    d.dir = ""                           # prepared data; "" = a cache dir keyed by these settings
    d.cache_dir = CACHE_ROOT             # tokenizers, default data dirs, the reference LM
    d.tinystories_version = "original"   # original | gpt4 (the TinyStoriesV2-GPT4 files)
    d.manual_dir = ""                    # folder holding the TinyStories .txt files (offline)
    d.synth_seed = 0                     # SynthStories corpus seed
    d.synth_richness = 1.0               # share of the SynthStories lexicon used, in (0, 1]
    d.instruct = False                   # each story after its instructions: SynthStories-
                                         # Instruct, or the TinyStories-Instruct files
    d.train_stories = 20_000             # SynthStories stories in the training split
    d.eval_stories = 500                 # SynthStories stories in the eval split
    d.vocab_size = 1024                  # the vocabulary size, exactly, for every tokenizer
                                         # (gpt_neo_top10k: the K of top-K; the paper's is
                                         # 10000, set it: the model's size follows it)
    d.tokenizer = "bpe"                  # bpe | unigram (sentencepiece, trained here) |
                                         # gpt_neo_top10k (the paper's: GPT-Neo's BPE cut to
                                         # its vocab_size tokens most frequent in training)
    d.tokenizer_file = ""                # a Hugging Face tokenizer.json (byte-level BPE) cut
                                         # likewise to its vocab_size most frequent tokens;
                                         # "" = data.tokenizer (leave that at bpe)
    d.tokenizer_sample_mb = 20           # MB of training text the tokenizer learns (or
                                         # counts its tokens' frequencies) from
    d.noise = 0.0                        # share of training stories replaced by corrupted
                                         # ones (data/quality.py), in [0, 1)
    d.noise_kinds = "all"                # their corruptions, comma-separated (synthstories/
                                         # corrupt.py); all = every kind the corpus supports
    d.noise_seed = 0                     # which stories are corrupted, and how
    d.filter = "none"                    # score every training story, keep the best share:
                                         # none | grammar (SynthStories) | reference_lm
    d.filter_keep = 0.75                 # the share of training stories the filter keeps

    c.model = m = ml_collections.ConfigDict()
    m.family = "llama"                   # llama (RoPE, RMSNorm, SwiGLU) | gpt_neo (paper) | phi
    m.d_model = 64                       # width of the residual stream
    m.n_layers = 2                       # transformer blocks
    m.n_heads = 4                        # attention heads
    m.n_kv_heads = 0                     # grouped KV heads (llama, phi); 0 = n_heads
    m.d_ff = 0                           # MLP width; 0 = 4*d_model (gpt_neo, phi), ~8/3*d (llama)
    m.max_seq_len = 256                  # positions the model supports (gpt_neo learns them)
    m.window_size = 256                  # local layers: a query sees the last window_size keys
    m.attention_pattern = "auto"         # layer types, repeated over the depth: global |
                                         # local, comma-separated ("local,local,local,global":
                                         # every 4th global); auto = global,local for gpt_neo
                                         # (the paper), global for llama and phi
    m.rope_theta = 10_000.0              # llama / phi rotary base
    m.rotary_fraction = 1.0              # share of each head's dims RoPE rotates (Phi-2: 0.4)
    m.parallel_block = False             # attn + MLP on one norm's output, summed (phi: always)
    m.n_experts = 0                      # llama: > 0 makes every MLP a mixture of experts
    m.experts_per_token = 2              # the router's top-k (Mixtral: 2 of 8)
    m.router_aux_coef = 0.02             # weight of the load-balancing loss (Mixtral: 0.02)
    m.router_z_coef = 0.001              # weight of the router z-loss (ST-MoE: 0.001)
    m.norm_eps = 1e-5                    # LayerNorm / RMSNorm epsilon
    m.tie_embeddings = True              # share input embedding and output projection (not phi)
    m.dtype = "float32"                  # compute dtype: float32 | bfloat16
    m.param_dtype = "float32"            # parameter dtype (keep float32 for Adam)

    c.train = t = ml_collections.ConfigDict()
    t.seq_len = 256                      # tokens per training sequence
    t.batch_size = 8                     # sequences per optimizer step (global)
    t.steps = 0                          # run length in steps; 0 = derive from tokens
    t.tokens = 2_000_000                 # run length in tokens (used when steps = 0)
    t.lr = 3e-3                          # peak learning rate
    t.schedule = "cosine"                # after warmup: constant | cosine | linear | wsd
    t.decay_fraction = 0.2               # wsd: the last share of the run that decays (1 - sqrt)
    t.branches = ()                      # wsd: smaller token budgets, each a cool-down forked
                                         # from the stable phase (runs/<name>/branches/<tokens>)
    t.teacher = ""                       # a finished run's directory (same tokenizer) whose
                                         # logits this run learns from (tinyscale/train/distill.py)
    t.distill_weight = 0.5               # loss = w T^2 KL(teacher_T || student_T) + (1-w) CE
    t.distill_temperature = 2.0          # T: both softmaxes of the distillation term
    t.warmup_steps = 50                  # linear warmup from 0
    t.final_lr_ratio = 0.1               # decay target as a share of lr
    t.weight_decay = 0.1                 # AdamW decay (not on norms, biases, embeddings' norms)
    t.b1 = 0.9                           # Adam beta1
    t.b2 = 0.95                          # Adam beta2
    t.eps = 1e-8                         # Adam epsilon
    t.grad_clip = 1.0                    # global-norm clipping; 0 = off
    t.grad_accum = 1                     # micro-batches per optimizer step
    t.log_every = 10                     # steps between metrics lines
    t.checkpoint_every = 200             # steps between checkpoints
    t.keep_checkpoints = 3               # newest checkpoints kept

    c.eval = e = ml_collections.ConfigDict()
    e.every = 200                        # steps between held-out evaluations
    e.batches = 8                        # fixed eval batches (of train.batch_size sequences)
    e.at_end = True                      # run the full evaluation when training ends
    e.prompts = 64                       # story-completion prompts (cut mid-sentence)
    e.prompts_file = ""                  # the paper's 'Evaluation prompts.yaml' (TinyStories)
    e.max_new_tokens = 200               # completion length limit
    e.temperature = 0.0                  # 0 = greedy (the paper: beams=5 at temperature 0)
    e.beams = 1                          # beam search width
    e.fluency = True                     # score with the reference LM (SmolLM2-135M)
    e.fluency_prompts = 16               # completions the reference LM scores (it is slow on CPU)
    e.novelty = True                     # share of completion 8-grams not in the training split
    e.mauve = True                       # MAUVE against the true continuations (real English;
                                         # the reference LM's features; needs >= 100 prompts
                                         # to be stable, see docs/results.md)
    e.judge_url = ""                     # OpenAI-compatible base URL; "" = no LLM judge
    e.judge_model = "gpt-4o-mini"        # model name sent to the judge endpoint
    e.judge_key_env = "OPENAI_API_KEY"   # environment variable holding the judge's key
    e.judge_concurrency = 4              # judge requests in flight at once
    e.judge_retries = 5                  # retries of a failed judge request (backoff 1, 2, 4 s...)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1                     # data-parallel axis; -1 = the remaining devices
    c.mesh.fsdp = 1                      # parameter-sharded data-parallel axis
    c.mesh.tensor = 1                    # tensor-parallel axis (heads, MLP)

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator = ""        # host:port of process 0; "" = auto-detect or none
    c.distributed.num_processes = 0       # with an explicit coordinator: how many processes
    c.distributed.process_id = -1         # with an explicit coordinator: this process's index

    c.launch = la = ml_collections.ConfigDict()
    la.max_attempts = 3                  # a failed run is retried until this many attempts
    la.parallel = 1                      # local backend: runs at once, on disjoint devices
    la.pack = ml_collections.FieldReference(1, field_type=object)
                                         # local backend: runs of one shape trained as one
                                         # program (tinyscale/train/packed.py): K, or "auto"
    la.stale_after_s = 600               # gs:// leases, TPU worker heartbeats: void this
                                         # long after their last renewal
    la.slurm_partition = ""              # sbatch --partition ("" = the cluster default)
    la.slurm_cpus = 2                    # sbatch --cpus-per-task
    la.slurm_gpus = 0                    # sbatch --gpus-per-task
    la.slurm_time = "04:00:00"           # sbatch --time per run
    la.slurm_max_parallel = 4            # the %K of --array=0-N%K
    la.slurm_extra = ""                  # more #SBATCH lines, separated by ';'
    la.tpu_project = ""                  # gcloud --project ("" = gcloud's default)
    la.tpu_zone = "us-west4-a"           # gcloud --zone
    la.tpu_accelerator = "v5litepod-8"   # --accelerator-type
    la.tpu_runtime = "v2-alpha-tpuv5-lite"  # --runtime-version (see DESIGN.md for others)
    la.tpu_slots = 1                     # queued resources (TPU VMs) working the sweep
    la.tpu_spot = True                   # --spot (preemptible; preempted slots are re-created)
    la.tpu_prefix = "tinyscale"          # queued-resource names: PREFIX-SWEEP-SLOT
    la.tpu_poll_s = 30.0                 # seconds between checks of the queued resources
    la.tpu_python = ""                   # a Python on the VM image with tinyscale installed
                                         # ("" = set up ~/tinyscale-venv from this checkout)

    c.output = o = ml_collections.ConfigDict()
    o.workdir = ""                       # the run directory (set by --workdir or the launcher)
    o.tensorboard = True                 # write TensorBoard events under workdir/tb
    o.progress = True                    # a live progress line on the terminal
    o.peak_flops = 0.0                   # peak FLOP/s for MFU; 0 = known chip or measured
    o.wandb = False                      # also log to Weights & Biases (pip install wandb)
    o.wandb_project = "tinyscale"        # W&B project
    o.wandb_entity = ""                  # W&B entity (team or user); "" = your default
    return c


class Values(dict):
    """A config as nested plain dicts, read like a ConfigDict (`c.model.d_model`).

    What the sweep planner works on: copying and validating a ConfigDict costs ~1.5 ms,
    too slow for a grid of 10^5 runs; these cost ~30 us.
    """

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def of(cls, config) -> Values:
        """A deep copy of a ConfigDict, a Values or a nested dict."""
        tree = config if isinstance(config, dict) else config.to_dict()
        return cls({k: cls.of(v) if isinstance(v, dict) else v for k, v in tree.items()})

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Values) else v for k, v in self.items()}


def total_steps(c: ml_collections.ConfigDict) -> int:
    """The run's length in optimizer steps: train.steps, or train.tokens resolved to steps."""
    if c.train.steps:
        return c.train.steps
    return max(1, math.ceil(c.train.tokens / (c.train.batch_size * c.train.seq_len)))


def cooldown_start(total: int, warmup_steps: int, decay_fraction: float) -> int:
    """The step at which a wsd run of `total` steps leaves its stable phase (its learning
    rate is train.lr, after warmup, up to and including this step's update)."""
    warmup = min(warmup_steps, max(0, total - 1))
    decay_steps = max(1, total - warmup)
    return total - min(decay_steps, max(1, round(decay_fraction * total)))


def branch_steps(c, tokens: int) -> int:
    """The length in steps of the branch of `c` at a budget of `tokens`."""
    return max(1, math.ceil(tokens / (c.train.batch_size * c.train.seq_len)))


def _check_branches(c) -> None:
    """train.branches: token budgets below the run's own, on a wsd schedule, each forking
    from the stable phase the run trains anyway."""
    t = c.train
    branches = t.get("branches", ())
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
    experts, k = m.get("n_experts", 0), m.get("experts_per_token", 2)
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
        value = m.get(knob, 0.0)
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


def attention_types(m) -> tuple[str, ...]:
    """Each layer's attention, global or local, from model.attention_pattern."""
    pattern = m.attention_pattern
    if pattern == "auto":
        pattern = "global,local" if m.family == "gpt_neo" else "global"
    layers = [x.strip() for x in pattern.split(",")]
    return tuple(layers[i % len(layers)] for i in range(m.n_layers))


def from_saved(saved: dict) -> ml_collections.ConfigDict:
    """A saved config.json over today's defaults, so knobs added since get their defaults.

    Version 1 configs applied model.attention_pattern to gpt_neo only (llama and phi were
    all global, whatever it said): read as version 2, their pattern is `auto`, which
    means the same (for gpt_neo the old default, global,local, is also `auto`)."""
    config = get_config()
    version = saved.get("config_version", 1)

    def merge(node, values):
        for key, value in values.items():
            if isinstance(value, dict) and key in node:
                merge(node[key], value)
            elif key in node:
                node[key] = value
    merge(config, saved)
    if version < 2 and (config.model.family != "gpt_neo"
                        or config.model.attention_pattern == "global,local"):
        config.model.attention_pattern = "auto"
    config.config_version = CONFIG_VERSION
    return config


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


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every knob a user might get wrong; return the config unchanged."""
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
    from tinyscale.data import quality
    quality.check(c.data)
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
    _choice(c, "model.dtype", ("float32", "bfloat16"))
    _choice(c, "model.param_dtype", ("float32", "bfloat16"))
    _positive(c, "train.seq_len", "train.batch_size", "train.tokens", "train.steps",
              "train.grad_accum", "train.log_every", "train.checkpoint_every",
              "train.keep_checkpoints", "train.warmup_steps", "eval.every", "eval.batches",
              "eval.prompts", "eval.max_new_tokens", "eval.beams", "eval.judge_concurrency",
              "eval.fluency_prompts", "eval.judge_retries", "launch.max_attempts",
              "launch.parallel", "launch.slurm_cpus", "launch.slurm_max_parallel",
              "launch.tpu_slots", "launch.stale_after_s", "launch.slurm_gpus",
              allow_zero=("train.steps", "train.warmup_steps", "launch.slurm_gpus",
                          "eval.judge_retries"))
    if c.train.seq_len > c.model.max_seq_len:
        _fail("train.seq_len", c.train.seq_len,
              f"it must not exceed model.max_seq_len={c.model.max_seq_len}")
    if c.train.batch_size % c.train.grad_accum:
        _fail("train.grad_accum", c.train.grad_accum,
              f"it must divide train.batch_size={c.train.batch_size}")
    _choice(c, "train.schedule", ("constant", "cosine", "linear", "wsd"))
    fraction = c.train.get("decay_fraction", 0.2)
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        _fail("train.decay_fraction", fraction, "use a share of the run in (0, 1], e.g. 0.2")
    _check_branches(c)
    weight, temperature = c.train.distill_weight, c.train.distill_temperature
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
        _fail("train.distill_weight", weight, "use a share in [0, 1] (0: cross-entropy only)")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) \
            or not temperature > 0:
        _fail("train.distill_temperature", temperature, "use a positive temperature, e.g. 2")
    for knob in ("train.lr", "train.weight_decay", "train.grad_clip", "train.final_lr_ratio"):
        if not isinstance(_get(c, knob), (int, float)) or _get(c, knob) < 0:
            _fail(knob, _get(c, knob), "use a non-negative number")
    for knob in ("eval.temperature", "output.peak_flops"):
        if not isinstance(_get(c, knob), (int, float)) or _get(c, knob) < 0:
            _fail(knob, _get(c, knob), "use a non-negative number")
    pack = c.launch.get("pack", 1)
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
