"""The default configuration: every knob, declared once, with what it does.

Sweep files start from `get_config()` and change what they need; `validate` checks a
config before anything reads it and names the knob and the fix when a value is wrong.
"""

from __future__ import annotations

import math

import ml_collections

CONFIG_VERSION = 3  # saved configs without config_version are version 1 (from_saved)
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
DTYPES = ("auto", "float32", "bfloat16")  # model.dtype; model.param_dtype takes the last two
# model.attention: auto, or an implementation (tinyscale/model/attention.py, `attend`)
ATTENTIONS = ("auto", "xla", "cudnn", "splash")
PARAMETRIZATIONS = ("standard", "mup")  # model.parametrization (model/mup.py)
# data.filter (data/quality.py), and data.noise_kinds: SynthStories' corruptions (the
# names of data/synthstories/corrupt.py's CORRUPTIONS) and those that need no grammar
FILTERS = ("none", "grammar", "reference_lm")
SYNTH_NOISE_KINDS = ("shuffled_words", "random_words", "wrong_pronoun", "renamed_character",
                     "swapped_object", "truncated_sentence")
PLAIN_TEXT_KINDS = ("shuffled_words", "random_words", "truncated_sentence")


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
    m.dtype = "auto"                     # compute dtype: auto = bfloat16 on GPU and TPU,
                                         # float32 on CPU (model/spec.py) | float32 | bfloat16
    m.param_dtype = "float32"            # parameters and so the optimizer state (keep
                                         # float32 for Adam) | bfloat16
    m.attention = "auto"                 # auto = cudnn on a GPU (in bfloat16), splash on
                                         # TPU, xla elsewhere | xla (blocked, any device) |
                                         # cudnn (jax.nn.dot_product_attention's cuDNN flash
                                         # kernel, GPU) | splash (Pallas, TPU)
    m.parametrization = "standard"       # standard | mup: µP (Yang et al., 2022: hidden
                                         # weights' init / sqrt(m) and Adam lr / m, logits
                                         # x 1/m, attention 1/d_head; m = d_model / base)
    m.mup_base_width = 64                # mup: the base width, where mup's init and
                                         # learning rates are the standard ones

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
    t.quick_compile = False              # on CPU: the run's steps and sampler compiled for a
                                         # fast compile (parallel.QUICK_COMPILE) and slower
                                         # steps, for short runs (docs/training.md)

    c.tune = tu = ml_collections.ConfigDict()  # `tinyscale sweep tune-lr` (launch/tune.py)
    tu.lrs = 5                           # learning rates per shape, log-spaced, trained
                                         # as one program (packed); at least 3
    tu.lr_min = 1e-3                     # the grid's lowest learning rate
    tu.lr_max = 3e-2                     # the grid's highest learning rate
    tu.steps = 300                       # steps of each tuning run (its schedule, shortened)
    tu.bootstrap = 1000                  # resamples of the held-out sequences (the interval)

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
    c.distributed.heartbeat_timeout_s = 100  # a process silent this long is dead: every
                                         # other process of the job then exits (non-zero)
    c.distributed.shutdown_timeout_s = 300   # an exiting process waits this long for the rest

    c.launch = la = ml_collections.ConfigDict()
    la.max_attempts = 3                  # a failed run is retried until this many attempts
    la.parallel = 1                      # local backend: runs at once, on disjoint devices
    la.pack = ml_collections.FieldReference(1, field_type=object)
                                         # local and slurm backends: runs of one shape trained
                                         # as one program (train/packed.py): K, or "auto"
    la.stale_after_s = 600               # gs:// leases, TPU worker heartbeats: void this
                                         # long after their last renewal
    la.slurm_partition = ""              # sbatch --partition ("" = the cluster default)
    la.slurm_cpus = 2                    # sbatch --cpus-per-task
    la.slurm_nodes = 1                   # sbatch --nodes: hosts that train each run together
    la.slurm_tasks_per_node = 1          # sbatch --ntasks-per-node: processes per host
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

    What the sweep planner works on: copying and validating a ConfigDict is too slow for
    a grid of 10^5 runs (docs/results.md, "Numbers behind the code").
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
    means the same (for gpt_neo the old default, global,local, is also `auto`).
    Version 2 configs hold model.dtype=float32, the default before there was `auto`: read
    as `auto`, which is float32 on CPU, where such runs trained (a sweep begun on a TPU
    before version 3 resumes in bfloat16 compute; its parameters stay float32)."""
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
    if version < 3 and config.model.dtype == "float32":
        config.model.dtype = "auto"
    config.config_version = CONFIG_VERSION
    return config


def noise_supported(dataset: str) -> tuple[str, ...]:
    """The corruptions data.noise can put into `dataset`."""
    return SYNTH_NOISE_KINDS if dataset == "synthstories" else PLAIN_TEXT_KINDS


def noise_kinds(d) -> tuple[str, ...]:
    """The corruptions data.noise_kinds names ("all": every kind the corpus supports)."""
    if d.noise_kinds == "all":
        return noise_supported(d.dataset)
    return tuple(k.strip() for k in d.noise_kinds.split(","))


def quality_active(d) -> bool:
    """Whether config.data `d` corrupts or filters its training split."""
    return bool(d.noise) or d.filter != "none"
