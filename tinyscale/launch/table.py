"""`tinyscale sweep plan`: the table of a sweep's runs, without training anything."""

from __future__ import annotations

from tinyscale import config as config_lib
from tinyscale.launch.plan import RELEASED, Run
from tinyscale.model import counting
from tinyscale.model.spec import ModelSpec
from tinyscale.train import distill, metrics


def si(x: float) -> str:
    """A number with an SI suffix: 1.5M, 3.2G."""
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6),
                       ("K", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def released_match(c) -> tuple[str, int] | None:
    """(name, total parameters with vocab 50257 and 2048 positions) of a released model."""
    m = c.model
    for name, (hidden, layers) in RELEASED.items():
        if m.family == "gpt_neo" and (m.d_model, m.n_layers) == (hidden, layers):
            spec = ModelSpec.from_config(m, 50257)
            spec = spec.__class__(**{**spec.__dict__, "max_seq_len": 2048})
            return name, counting.parameter_counts(spec)["total"]
    return None


def compute(c) -> tuple[float, int]:
    """(training FLOPs per token, training tokens) of a run's config."""
    tokens = config_lib.total_steps(c) * c.train.batch_size * c.train.seq_len
    return counting.of_config(c)["flops_per_token"], tokens


def _cooldown_tokens(c) -> int:
    """Tokens the branches of a run train (their cool-downs: tinyscale/train/branches.py)."""
    t, total = c.train, 0
    for budget in t.branches:
        steps = config_lib.branch_steps(c, budget)
        total += steps - config_lib.cooldown_start(steps, t.warmup_steps, t.decay_fraction)
    return total * t.batch_size * t.seq_len


def rows(runs: list[Run]) -> list[dict]:
    out = []
    for run in runs:
        c = run.values
        counts = counting.of_config(c)
        # what each step computes: a teacher's forward pass too (tinyscale/train/distill.py)
        flops = counts.pop("flops_per_token") + distill.forward_flops(
            c.train.teacher, c.train.seq_len)
        tokens = config_lib.total_steps(c) * c.train.batch_size * c.train.seq_len
        tokens += _cooldown_tokens(c)
        out.append({"name": run.name, "family": c.model.family, "width": c.model.d_model,
                    "depth": c.model.n_layers, "heads": c.model.n_heads, **counts,
                    "flops_per_token": flops, "tokens": tokens, "compute": flops * tokens,
                    "released": released_match(c),
                    "branches": len(c.train.branches)})
    return out


# bf16 peak FLOP/s per chip of Cloud TPU generations, and accelerator-type chips per
# suffix unit (v4 and v5p count TensorCores, two per chip).
_TPU = {"v4": (275e12, 0.5), "v5p": (459e12, 0.5), "v5litepod": (197e12, 1.0),
        "v6e": (918e12, 1.0)}
ASSUMED_MFU = 0.4
TOO_LONG_S = 30 * 86400


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds / 60:.0f} minutes"


def estimate(total_flops: float, launch, backend: str = "local",
             launch_peak: float = 0.0, cache_dir: str = "") -> str:
    """One line: how long the sweep's compute takes at ASSUMED_MFU on the machine it
    targets (TPU slots for a TPU config, else this machine's devices: `launch_peak`, i.e.
    config.output.peak_flops, or measured), with a warning when that is over a month."""
    family, _, count = str(launch.tpu_accelerator).rpartition("-")
    if backend == "tpu" and family in _TPU and count.isdigit():
        peak, per = _TPU[family]
        peak *= int(count) * per * launch.tpu_slots
        where = f"{launch.tpu_slots} x {launch.tpu_accelerator}"
    else:
        peak, where = metrics.peak_flops(launch_peak, cache_dir), "this machine"
    seconds = total_flops / (ASSUMED_MFU * peak)
    line = (f"at {ASSUMED_MFU:.0%} MFU on {where} ({si(peak)}FLOP/s peak): about "
            f"{_duration(seconds)} of training")
    if seconds > TOO_LONG_S:
        line += ("\nwarning: that is far beyond this machine: shrink the grid (fewer runs, "
                 "smaller models or train.tokens) or launch it on a cluster (--backend "
                 "slurm or tpu)")
    return line


def render(runs: list[Run], base=None, backend: str = "local") -> str:
    table = rows(runs)
    w = max([22] + [len(r["name"]) for r in table])  # the name column fits the longest
    head = (f"{'run':<{w}} {'family':<8} {'width':>5} {'depth':>5} {'heads':>5} {'params':>8} "
            f"{'active':>8} {'embed':>8} {'non-emb':>8} {'FLOPs/tok':>9} {'tokens':>8} "
            f"{'compute':>8}")
    lines = [head, "-" * len(head)]
    for r in table:
        line = (f"{r['name']:<{w}} {r['family']:<8} {r['width']:>5} {r['depth']:>5} "
                f"{r['heads']:>5} {si(r['total']):>8} {si(r['active']):>8} "
                f"{si(r['embedding']):>8} "
                f"{si(r['non_embedding']):>8} {si(r['flops_per_token']):>9} "
                f"{si(r['tokens']):>8} {si(r['compute']):>8}")
        if r["released"]:
            name, total = r["released"]
            line += f"  <- {name} shape ({total:,} params at vocab 50257, 2048 positions)"
        lines.append(line)
    lines.append("-" * len(head))
    branches = sum(r["branches"] for r in table)
    lines.append(f"{len(table)} runs"
                 + (f" with {branches} branches ((N, D) points: {len(table) + branches}; "
                    "tokens include their cool-downs)" if branches else "")
                 + f"; {si(sum(r['tokens'] for r in table))} tokens, "
                 f"{si(sum(r['compute'] for r in table))} training FLOPs in all")
    if base is not None:
        lines.append(estimate(sum(r["compute"] for r in table), base.launch, backend,
                              base.output.peak_flops, base.data.cache_dir))
    return "\n".join(lines)
