"""The `tinyscale` command.

    tinyscale data prepare [--config FILE[:ARG]] [--dataset D] [--manual-dir DIR] [--data-dir DIR]
    tinyscale data show --data-dir DIR
    tinyscale train --config FILE[:ARG] [--config.KEY=VALUE ...] --workdir DIR
    tinyscale sample RUN_DIR [--prompt TEXT] [--temperature T] [--beams K]
    tinyscale eval RUN_DIR [--step N]
    tinyscale sweep plan FILE[:ARG] | run FILE --sweep-dir DIR [--backend B] | status DIR
    tinyscale analyze SWEEP_DIR [--threshold 0.5]

User errors print one line and exit 2; preempted training (SIGTERM) exits 75, resumable.
"""

from __future__ import annotations

import argparse
import sys

from tinyscale import config_file
from tinyscale.errors import TinyscaleError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        raise TinyscaleError(f"{self.prog}: {message} (see --help).")


def _config(args, overrides):
    from tinyscale import config as config_lib
    config = config_file.load(args.config)
    config_file.apply_overrides(config, overrides)
    for knob, value in (("data.dataset", getattr(args, "dataset", None)),
                        ("data.manual_dir", getattr(args, "manual_dir", None)),
                        ("data.dir", getattr(args, "data_dir", None))):
        if value is not None:
            config_file.apply_overrides(config, {knob: value})
    return config_lib.validate(config)


def _data_prepare(args, overrides):
    from tinyscale.data import pipeline
    out = pipeline.prepare(_config(args, overrides), progress=True)
    _print_summary(out)


def _data_show(args, overrides):
    _print_summary(args.data_dir, args.stories)


def _print_summary(data_dir: str, n_stories: int = 3) -> None:
    import numpy as np

    from tinyscale.data import pipeline, tokenizer
    meta = pipeline.load_meta(data_dir)
    sp = tokenizer.load(f"{data_dir}/tokenizer.model")
    print(f"data dir    {data_dir}")
    print(f"dataset     {meta['data']['dataset']}   vocabulary {meta['vocab_size']}")
    for split, s in meta["splits"].items():
        print(f"{split:<11} {s['stories']:>9,} stories {s['tokens']:>12,} tokens "
              f"{s['bytes']:>13,} bytes  {s['bytes_per_token']:.2f} bytes/token")
    stream = np.asarray(pipeline.tokens(data_dir, "eval")[:20_000])
    ends = np.flatnonzero(stream == meta["eos_id"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    for i, (a, b) in enumerate(zip(starts[:n_stories], ends[:n_stories])):
        print(f"\n--- eval story {i} ({b - a} tokens)\n{sp.decode(stream[a:b].tolist())}")


def _train(args, overrides):
    from tinyscale import train
    config = _config(args, overrides)
    return train.main(config, args.workdir)


def _sample(args, overrides):
    from tinyscale import sample, trained
    from tinyscale.data import tokenizer
    run = trained.load(args.run_dir, args.step)
    sp = run.sp
    prompt = [tokenizer.EOS_ID] + sp.encode(args.prompt)  # EOS marks a story's start
    s = sample.Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                        args.beams, tokenizer.EOS_ID)
    outs = sample.generate(run.params.model, run.arrays, [prompt] * args.n, s, args.seed)
    for i, out in enumerate(outs):
        print(f"--- completion {i} (step {run.step})\n{sp.decode(prompt[1:] + out)}")


def _eval(args, overrides):
    from tinyscale.evals import run
    result = run.evaluate(args.run_dir, args.step, say=lambda m: print(m, file=sys.stderr))
    print(f"{args.run_dir}: eval.json written (step {result['step']})")
    run.print_summary(result)


def _sweep_plan(args, overrides):
    from tinyscale.launch import plan, table
    _, runs = plan.expand(args.file, overrides)
    print(table.render(runs))


def _sweep_run(args, overrides):
    from tinyscale.launch import plan, table
    from tinyscale.launch.sweepdir import SweepDir
    base, runs = plan.expand(args.file, overrides)
    sweep = SweepDir(args.sweep_dir)
    if not args.dry_run:
        sweep.create(args.file, base, runs)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.backend == "local":
        if args.dry_run:
            print(table.render(runs))
            return 0
        from tinyscale.launch.local import run_local
        return run_local(args.sweep_dir, args.parallel or base.launch.parallel, say)
    if args.backend == "slurm":
        from tinyscale.launch import slurm
        return slurm.submit(args.sweep_dir, base, runs, args.dry_run, say)
    from tinyscale.launch import tpu
    return tpu.launch(args.sweep_dir, base, args.file, args.dry_run, say)


def _sweep_status(args, overrides):
    from tinyscale.launch import status
    print(status.render(args.sweep_dir))


def _sweep_worker(args, overrides):
    from tinyscale.launch import worker
    if args.index is not None:
        return worker.train_index(args.sweep_dir, args.index)
    return worker.work_slot(args.sweep_dir, args.slot, args.slots, args.coordinator,
                            args.num_processes, args.process_id)


def _sweep_teardown(args, overrides):
    from tinyscale.launch import tpu
    return tpu.teardown(args.sweep_dir, args.dry_run, lambda m: print(m, file=sys.stderr))


def _analyze(args, overrides):
    from analysis import report
    path = report.build(args.sweep_dir, args.out, args.threshold, args.bootstrap)
    print(f"wrote {path} (figures/ and runs.csv beside it)")


def _add_sweep(sub):
    sweep = sub.add_parser("sweep", help="plan, run and watch grids of runs")
    ss = sweep.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = ss.add_parser("plan", help="the table of runs, parameters and compute")
    p.add_argument("file", help="sweep file FILE[:ARG]")
    p.set_defaults(func=_sweep_plan)
    r = ss.add_parser("run", help="train every run (skips finished ones)")
    r.add_argument("file", help="sweep file FILE[:ARG]")
    r.add_argument("--sweep-dir", required=True, help="local path or gs://...")
    r.add_argument("--backend", choices=("local", "slurm", "tpu"), default="local")
    r.add_argument("--parallel", type=int, default=0, help="local: runs at once")
    r.add_argument("--dry-run", action="store_true", help="print, do not run")
    r.set_defaults(func=_sweep_run)
    st = ss.add_parser("status", help="state, step, loss, attempts of every run")
    st.add_argument("sweep_dir")
    st.set_defaults(func=_sweep_status)
    w = ss.add_parser("worker", help="(used by the backends) train runs of a sweep dir")
    w.add_argument("sweep_dir")
    w.add_argument("--index", type=int, help="train this run")
    w.add_argument("--slot", type=int, default=0, help="claim runs as slot S of --slots")
    w.add_argument("--slots", type=int, default=1)
    w.add_argument("--coordinator", default="",
                   help="host:port of process 0 when the processes of one slot are not "
                        "auto-detected (SLURM and TPU slices are)")
    w.add_argument("--num-processes", type=int, default=0)
    w.add_argument("--process-id", type=int, default=-1)
    w.set_defaults(func=_sweep_worker)
    t = ss.add_parser("teardown", help="delete a TPU sweep's queued resources")
    t.add_argument("sweep_dir")
    t.add_argument("--dry-run", action="store_true")
    t.set_defaults(func=_sweep_teardown)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinyscale", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="prepare and inspect corpora")
    data_sub = data.add_subparsers(dest="action", required=True, parser_class=_Parser)
    prep = data_sub.add_parser("prepare", help="tokenise and pack a corpus")
    prep.add_argument("--config", help="config file FILE[:ARG] (default: built-in)")
    prep.add_argument("--dataset", help="synthstories | tinystories")
    prep.add_argument("--manual-dir", help="folder with the TinyStories .txt files")
    prep.add_argument("--data-dir", help="where to write (default: a cache dir)")
    prep.set_defaults(func=_data_prepare)
    show = data_sub.add_parser("show", help="statistics and a few stories")
    show.add_argument("--data-dir", required=True)
    show.add_argument("--stories", type=int, default=3)
    show.set_defaults(func=_data_show)

    train = sub.add_parser("train", help="train one model (resumes if interrupted)")
    train.add_argument("--config", help="config file FILE[:ARG]")
    train.add_argument("--workdir", required=True, help="the run directory")
    train.set_defaults(func=_train)

    smp = sub.add_parser("sample", help="print completions of a prompt from a trained run")
    smp.add_argument("run_dir")
    smp.add_argument("--prompt", default="Once upon a time")
    smp.add_argument("--n", type=int, default=3, help="completions")
    smp.add_argument("--max-new-tokens", type=int, default=200)
    smp.add_argument("--temperature", type=float, default=0.8)
    smp.add_argument("--top-k", type=int, default=0)
    smp.add_argument("--top-p", type=float, default=0.95)
    smp.add_argument("--beams", type=int, default=1)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--step", type=int, help="checkpoint step (default: newest)")
    smp.set_defaults(func=_sample)

    ev = sub.add_parser("eval", help="held-out loss and story-completion metrics of a run")
    ev.add_argument("run_dir")
    ev.add_argument("--step", type=int, help="checkpoint step (default: newest)")
    ev.set_defaults(func=_eval)
    _add_sweep(sub)
    an = sub.add_parser("analyze", help="fits, emergence, plots and report.html of a sweep")
    an.add_argument("sweep_dir")
    an.add_argument("--out", help="where to write (default: the sweep dir)")
    an.add_argument("--threshold", type=float, default=0.5, help="emergence threshold")
    an.add_argument("--bootstrap", type=int, default=300, help="bootstrap resamples")
    an.set_defaults(func=_analyze)
    return parser


def _compilation_cache() -> None:
    """A persistent JAX compilation cache: a relaunch or a repeated shape skips compiling.

    TINYSCALE_COMPILATION_CACHE names the folder (the sweep launcher points it into the
    sweep directory); the default is ~/.cache/tinyscale/jax; an empty value turns it off.
    """
    import os
    path = os.environ.get("TINYSCALE_COMPILATION_CACHE",
                          os.path.expanduser("~/.cache/tinyscale/jax"))
    if path:
        import jax
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _compilation_cache()
    try:
        rest, overrides = config_file.split_overrides(argv)
        args = build_parser().parse_args(rest)
        return args.func(args, overrides) or 0
    except TinyscaleError as error:
        print(f"tinyscale: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinyscale: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
