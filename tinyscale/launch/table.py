"""`tinyscale sweep plan`: the table of a sweep's runs, without training anything."""

from __future__ import annotations

from tinyscale import counting
from tinyscale.launch.plan import RELEASED, Run, parameter_counts
from tinyscale.model import ModelSpec
from tinyscale.train import total_steps


def _si(x: float) -> str:
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
    spec = ModelSpec.from_config(c.model, c.data.vocab_size)
    tokens = total_steps(c) * c.train.batch_size * c.train.seq_len
    return counting.flops_per_token(spec, c.train.seq_len), tokens


def rows(runs: list[Run]) -> list[dict]:
    out = []
    for run in runs:
        c = run.config
        counts = parameter_counts(c)
        flops, tokens = compute(c)
        out.append({"name": run.name, "family": c.model.family, "width": c.model.d_model,
                    "depth": c.model.n_layers, "heads": c.model.n_heads, **counts,
                    "flops_per_token": flops, "tokens": tokens, "compute": flops * tokens,
                    "released": released_match(c)})
    return out


def render(runs: list[Run]) -> str:
    table = rows(runs)
    head = (f"{'run':<22} {'family':<8} {'width':>5} {'depth':>5} {'heads':>5} {'params':>8} "
            f"{'embed':>8} {'non-emb':>8} {'FLOPs/tok':>9} {'tokens':>8} {'compute':>8}")
    lines = [head, "-" * len(head)]
    for r in table:
        line = (f"{r['name']:<22} {r['family']:<8} {r['width']:>5} {r['depth']:>5} "
                f"{r['heads']:>5} {_si(r['total']):>8} {_si(r['embedding']):>8} "
                f"{_si(r['non_embedding']):>8} {_si(r['flops_per_token']):>9} "
                f"{_si(r['tokens']):>8} {_si(r['compute']):>8}")
        if r["released"]:
            name, total = r["released"]
            line += f"  <- {name} shape ({total:,} params at vocab 50257, 2048 positions)"
        lines.append(line)
    lines.append("-" * len(head))
    lines.append(f"{len(table)} runs; {_si(sum(r['tokens'] for r in table))} tokens, "
                 f"{_si(sum(r['compute'] for r in table))} training FLOPs in all")
    return "\n".join(lines)
