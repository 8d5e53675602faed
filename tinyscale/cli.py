"""The `tinyscale` command.
One file: the argparse table and the dispatch it names, read together.

    tinyscale data prepare [--config FILE[:ARG]] [--dataset D] [--manual-dir DIR] [--data-dir DIR]
    tinyscale data show --data-dir DIR
    tinyscale train --config FILE[:ARG] [--config.KEY=VALUE ...] --workdir DIR
    tinyscale sample RUN_DIR [--prompt TEXT] [--temperature T] [--beams K]
    tinyscale eval RUN_DIR [--step N]
    tinyscale sweep plan FILE[:ARG] | run FILE --sweep-dir DIR [--backend B] | status DIR
    tinyscale sweep next SWEEP_DIR --budget FLOPS [--run]
    tinyscale sweep tune-lr FILE[:ARG] --sweep-dir DIR [--config.tune.KEY=VALUE ...]
    tinyscale analyze SWEEP_DIR [--threshold 0.5]

User errors print one line and exit 2; preempted training (SIGTERM) exits 75, resumable.
"""

from __future__ import annotations

import argparse
import gc
import sys

import numpy as np

from tinyscale import process, storage
from tinyscale.config import file as config_file
from tinyscale.data import pipeline, quality, tokenizer
from tinyscale.errors import EXIT_INTERRUPTED, EXIT_USAGE, TinyscaleError
from tinyscale.evals import hf as evals_hf
from tinyscale.evals import run as evals_run
from tinyscale.interop import export
from tinyscale.launch import additions, plan, slurm, status, table, tpu, tune, worker
from tinyscale.launch.local import run_local
from tinyscale.launch.sweepdir import SweepDir
from tinyscale.model import sample
from tinyscale.train import generate, trained, trainer

gc.enable()  # off while the imports above ran, in the command's own process (tinyscale/__init__.py)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        raise TinyscaleError(f"{self.prog}: {message} (see --help).")


def _number(kind, low=None, high=None, low_open=False, what=""):
    """An argparse type: a number of `kind` in [low, high] (or (low, high])."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


POSITIVE = _number(int, 1, what="a positive integer")
NON_NEGATIVE = _number(int, 0, what="an integer >= 0")
NON_NEGATIVE_FLOAT = _number(float, 0.0, what="a number >= 0")
POSITIVE_FLOAT = _number(float, 0.0, low_open=True, what="a positive number")
UNIT = _number(float, 0.0, 1.0, low_open=True, what="a number in (0, 1]")
OPEN_UNIT = _number(float, 0.0, 0.999999, low_open=True, what="a number in (0, 1)")

# Commands whose config comes from --config FILE (the rest read a run's own config.json:
# eval and sample take --config.eval.* and --config.mesh.* only).
_TAKES_OVERRIDES = {"data prepare", "train", "sweep plan", "sweep run", "sweep tune-lr",
                    "eval", "sample"}


def _config(args, overrides):
    for knob, value in (("data.dataset", getattr(args, "dataset", None)),
                        ("data.manual_dir", getattr(args, "manual_dir", None)),
                        ("data.dir", getattr(args, "data_dir", None))):
        if value is not None:
            overrides = {**overrides, knob: value}
    return config_file.resolve(args.config, overrides)


def _data_prepare(args, overrides):
    out = pipeline.prepare(_config(args, overrides), progress=True)
    _print_summary(out)


def _data_generate(args, overrides):
    generate.generate(args.run_dir, args.stories, args.out, args.temperature, args.top_p,
                       args.batch, args.opening_tokens, args.seed,
                       say=lambda m: print(m, file=sys.stderr))
    _print_summary(args.out)


def _data_show(args, overrides):
    _print_summary(args.data_dir, args.stories)


def _print_summary(data_dir: str, n_stories: int = 3) -> None:
    meta = pipeline.load_meta(data_dir)
    sp = pipeline.load_tokenizer(data_dir)
    print(f"data dir    {data_dir}")
    print(f"dataset     {meta['data']['dataset']}   vocabulary {meta['vocab_size']}")
    for split, s in meta["splits"].items():
        print(f"{split:<11} {s['stories']:>9,} stories {s['tokens']:>12,} tokens "
              f"{s['bytes']:>13,} bytes  {s['bytes_per_token']:.2f} bytes/token")
    if quality.describe(meta):
        print(f"quality     {quality.describe(meta)}")
    stream = np.asarray(pipeline.tokens(data_dir, "eval")[:20_000])
    ends = np.flatnonzero(stream == meta["eos_id"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    for i, (a, b) in enumerate(zip(starts[:n_stories], ends[:n_stories])):
        print(f"\n--- eval story {i} ({b - a} tokens)\n{sp.decode(stream[a:b].tolist())}")


def _train(args, overrides):
    config = _config(args, overrides)
    return trainer.main(config, args.workdir, evals_run.evaluate)


def _sample(args, overrides):
    config = trained.saved_config(args.run_dir, overrides)
    run = trained.load(args.run_dir, args.step, config=config)
    sp = run.sp
    prompt = [tokenizer.EOS_ID] + sp.encode(args.prompt)  # EOS marks a story's start
    s = sample.Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                        args.beams, tokenizer.EOS_ID, config.train.quick_compile)
    outs = sample.generate(run.params.model, run.arrays, [prompt] * args.n, s, args.seed)
    for i, out in enumerate(outs):
        print(f"--- completion {i} (step {run.step})\n{sp.decode(prompt[1:] + out)}")


def _eval(args, overrides):
    if args.hf or args.sweep:
        if not (args.hf and args.sweep) or args.run_dir:
            raise TinyscaleError("eval --hf DIR needs --sweep SWEEP_DIR and no run directory: "
                                 "tinyscale eval --hf DIR --sweep SWEEP_DIR [--name NAME].")
        result = evals_hf.evaluate(args.hf, args.sweep, args.name,
                             say=lambda m: print(m, file=sys.stderr))
        print(f"{args.hf}: {result['written']} written")
        evals_run.print_summary(result)
        return
    if not args.run_dir:
        raise TinyscaleError("eval needs a run directory (or --hf DIR --sweep SWEEP_DIR).")
    result = evals_run.evaluate(args.run_dir, args.step, say=lambda m: print(m, file=sys.stderr),
                          overrides=overrides)
    print(f"{args.run_dir}: {result['written']} written (step {result['step']})")
    evals_run.print_summary(result)


def _export(args, overrides):
    export.export_hf(args.run_dir, args.out, args.step,
                     say=lambda m: print(m, file=sys.stderr))


def _sweep_plan(args, overrides):
    base, runs = plan.expand(args.file, overrides)
    print(table.render(runs, base, args.backend))


def _sweep_run(args, overrides):
    base, runs = plan.expand(args.file, overrides)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if not (args.dry_run and storage.is_remote(args.sweep_dir)):  # a dry run reads no bucket
        runs = tune.apply(args.sweep_dir, runs, say)  # the sweep dir's tuned_lr.json, if any
    sweep = SweepDir(args.sweep_dir)
    if not args.dry_run:
        runs = sweep.create(args.file, base, runs)  # with the runs already in the sweep
    if args.slices != "ask" and args.backend != "tpu":
        raise TinyscaleError(f"--{args.slices}-slots applies to --backend tpu only: drop it.")
    if args.backend == "local":
        if args.dry_run:
            print(table.render(runs, base, args.backend))
            return 0
        return run_local(args.sweep_dir, args.parallel or base.launch.parallel, say)
    if args.backend == "slurm":
        return slurm.submit(args.sweep_dir, base, runs, args.dry_run, say)
    return tpu.launch(args.sweep_dir, base, args.file, args.dry_run, say, args.slices)


def _sweep_next(args, overrides):
    from analysis import next_runs  # scipy, pandas, matplotlib: as for `analyze`
    proposal = next_runs.propose(args.sweep_dir, args.budget, args.metric, args.threshold,
                                 args.bootstrap)
    print(next_runs.render(proposal), flush=True)
    if not args.run or not proposal.picks:
        return 0
    spec, base, _ = additions.add(
        args.sweep_dir, [p.candidate.overrides for p in proposal.picks],
        f"{proposal.metric} at {proposal.threshold:g}, budget {args.budget:g} FLOPs")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    say(f"added {len(proposal.picks)} runs to {args.sweep_dir} ({spec}); training them")
    return run_local(args.sweep_dir, args.parallel or base.launch.parallel, say)


def _sweep_tune_lr(args, overrides):
    return tune.tune(args.file, overrides, args.sweep_dir, args.parallel,
                     lambda m: print(m, file=sys.stderr, flush=True))


def _sweep_status(args, overrides):
    print(status.render(args.sweep_dir))


def _sweep_worker(args, overrides):
    if args.index is not None:
        return worker.train_indices(args.sweep_dir, args.index)
    return worker.work_slot(args.sweep_dir, args.slot, args.slots, args.coordinator,
                            args.num_processes, args.process_id, args.tpu)


def _sweep_teardown(args, overrides):
    return tpu.teardown(args.sweep_dir, args.dry_run, lambda m: print(m, file=sys.stderr))


def _analyze(args, overrides):
    from analysis import report  # scipy, pandas, matplotlib: 1.4 s that other commands skip
    path = report.build(args.sweep_dir, args.out, args.threshold, args.bootstrap,
                        args.include_external)
    print(f"wrote {path} (figures/ and runs.csv beside it)")


def _add_sweep(sub):
    sweep = sub.add_parser("sweep", help="plan, run and watch grids of runs")
    ss = sweep.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = ss.add_parser("plan", help="the table of runs, parameters and compute")
    p.add_argument("file", help="sweep file FILE[:ARG]")
    p.add_argument("--backend", choices=("local", "slurm", "tpu"), default="local",
                   help="where the time estimate assumes it runs (tpu: launch.tpu_*)")
    p.set_defaults(func=_sweep_plan)
    r = ss.add_parser("run", help="train every run (skips finished ones)")
    r.add_argument("file", help="sweep file FILE[:ARG]")
    r.add_argument("--sweep-dir", required=True, help="local path or gs://...")
    r.add_argument("--backend", choices=("local", "slurm", "tpu"), default="local")
    r.add_argument("--parallel", type=NON_NEGATIVE, default=0,
                   help="local: runs at once (default: config.launch.parallel)")
    r.add_argument("--dry-run", action="store_true", help="print, do not run")
    slices = r.add_mutually_exclusive_group()
    slices.add_argument("--keep-slots", dest="slices", action="store_const", const="keep",
                        help="tpu: leave the slices running when the launcher stops "
                             "(Ctrl-C, an error); without either flag Ctrl-C asks at a "
                             "terminal and keeps them elsewhere")
    slices.add_argument("--delete-slots", dest="slices", action="store_const", const="delete",
                        help="tpu: delete the slices when the launcher stops (done, Ctrl-C, "
                             "an error)")
    r.set_defaults(func=_sweep_run, slices="ask")
    n = ss.add_parser("next", help="the runs that would narrow the widest emergence "
                      "interval most per FLOP (--run: add them and train them)")
    n.add_argument("sweep_dir")
    n.add_argument("--budget", type=POSITIVE_FLOAT, required=True,
                   help="training FLOPs to spend, e.g. 5e12")
    n.add_argument("--metric", help="the emergence metric to narrow (default: the one "
                   "whose interval is widest)")
    n.add_argument("--threshold", type=OPEN_UNIT, default=0.5, help="emergence threshold")
    n.add_argument("--bootstrap", type=POSITIVE, default=300,
                   help="resamples of the current intervals (as `analyze`)")
    n.add_argument("--run", action="store_true",
                   help="add the proposed runs to the sweep and train them here")
    n.add_argument("--parallel", type=NON_NEGATIVE, default=0,
                   help="with --run: runs at once (default: config.launch.parallel)")
    n.set_defaults(func=_sweep_next)
    tl = ss.add_parser("tune-lr", help="the best learning rate of each shape (K rates "
                       "packed per shape), for `sweep run` into the same --sweep-dir")
    tl.add_argument("file", help="sweep file FILE[:ARG]")
    tl.add_argument("--sweep-dir", required=True, help="the main sweep's directory: the "
                    "tuning runs go to DIR/tune-lr, the rates to DIR/tuned_lr.json")
    tl.add_argument("--parallel", type=NON_NEGATIVE, default=0,
                    help="shapes at once (default: config.launch.parallel)")
    tl.set_defaults(func=_sweep_tune_lr)
    st = ss.add_parser("status", help="state, step, loss, attempts of every run")
    st.add_argument("sweep_dir")
    st.set_defaults(func=_sweep_status)
    w = ss.add_parser("worker", help="(used by the backends) train runs of a sweep dir")
    w.add_argument("sweep_dir")
    w.add_argument("--index", type=NON_NEGATIVE, nargs="+",
                   help="train this run (several: as one program, launch.pack)")
    w.add_argument("--slot", type=NON_NEGATIVE, default=0,
                   help="claim runs as slot S of --slots")
    w.add_argument("--slots", type=POSITIVE, default=1)
    w.add_argument("--coordinator", default="",
                   help="host:port of process 0 when the processes of one slot are not "
                        "auto-detected (SLURM and TPU slices are)")
    w.add_argument("--num-processes", type=int, default=0)
    w.add_argument("--process-id", type=int, default=-1)
    w.add_argument("--tpu", action="store_true",
                   help="on a Cloud TPU VM: join the slice's hosts (from its metadata)")
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
    gen = data_sub.add_parser("generate", help="sample a corpus from a trained run "
                              "(teacher data), prepared for data.dataset=generated")
    gen.add_argument("--from", dest="run_dir", required=True, help="the trained run")
    gen.add_argument("--stories", type=POSITIVE, required=True, help="how many")
    gen.add_argument("--out", required=True, help="a new folder for the corpus")
    gen.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=1.0)
    gen.add_argument("--top-p", type=UNIT, default=0.95)
    gen.add_argument("--batch", type=POSITIVE, default=64, help="stories per batch")
    gen.add_argument("--opening-tokens", type=POSITIVE, default=8,
                     help="tokens of a training story's opening each story starts from")
    gen.add_argument("--seed", type=NON_NEGATIVE, default=0)
    gen.set_defaults(func=_data_generate)
    show = data_sub.add_parser("show", help="statistics and a few stories")
    show.add_argument("--data-dir", required=True)
    show.add_argument("--stories", type=NON_NEGATIVE, default=3)
    show.set_defaults(func=_data_show)

    train = sub.add_parser("train", help="train one model (resumes if interrupted)")
    train.add_argument("--config", help="config file FILE[:ARG]")
    train.add_argument("--workdir", required=True, help="the run directory")
    train.set_defaults(func=_train)

    smp = sub.add_parser("sample", help="print completions of a prompt from a trained run")
    smp.add_argument("run_dir")
    smp.add_argument("--prompt", default="Once upon a time")
    smp.add_argument("--n", type=POSITIVE, default=3, help="completions")
    smp.add_argument("--max-new-tokens", type=POSITIVE, default=200)
    smp.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=0.8,
                     help="0 = greedy")
    smp.add_argument("--top-k", type=NON_NEGATIVE, default=0, help="0 = all tokens")
    smp.add_argument("--top-p", type=UNIT, default=0.95)
    smp.add_argument("--beams", type=POSITIVE, default=1)
    smp.add_argument("--seed", type=NON_NEGATIVE, default=0)
    smp.add_argument("--step", type=NON_NEGATIVE, help="checkpoint step (default: newest)")
    smp.set_defaults(func=_sample)

    ev = sub.add_parser("eval", help="held-out loss and story-completion metrics of a run")
    ev.add_argument("run_dir", nargs="?")
    ev.add_argument("--hf", metavar="DIR", help="score this Hugging Face model directory "
                    "instead, beside the runs of --sweep (into SWEEP/external/NAME)")
    ev.add_argument("--sweep", help="with --hf: the sweep whose prompts and settings to use")
    ev.add_argument("--name", help="with --hf: its name in the sweep (default: the folder's)")
    ev.add_argument("--step", type=NON_NEGATIVE,
                    help="checkpoint step (default: newest; an earlier step writes "
                         "eval-step<N>.json, leaving eval.json alone)")
    ev.set_defaults(func=_eval)
    ex = sub.add_parser("export", help="write a trained run as a Hugging Face checkpoint")
    ex.add_argument("run_dir")
    ex.add_argument("--format", choices=("hf",), default="hf",
                    help="hf: config.json + model.safetensors + tokenizer for transformers")
    ex.add_argument("--out", required=True, help="a new (or empty) directory")
    ex.add_argument("--step", type=NON_NEGATIVE, help="checkpoint step (default: newest)")
    ex.set_defaults(func=_export)
    _add_sweep(sub)
    an = sub.add_parser("analyze", help="fits, emergence, plots and report.html of a sweep")
    an.add_argument("sweep_dir")
    an.add_argument("--out", help="where to write (default: the sweep dir)")
    an.add_argument("--threshold", type=OPEN_UNIT, default=0.5, help="emergence threshold")
    an.add_argument("--bootstrap", type=NON_NEGATIVE, default=300,
                    help="bootstrap resamples (0: no intervals; 1-99 are refused as too few)")
    an.add_argument("--include-external", action="store_true",
                    help="fit eval --hf models with the sweep's runs (default: they are "
                         "reference points, listed apart)")
    an.set_defaults(func=_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    process.setup()
    try:
        rest, overrides = config_file.split_overrides(argv)
        args = build_parser().parse_args(rest)
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        if overrides and command not in _TAKES_OVERRIDES:
            raise TinyscaleError(f"--config.{next(iter(overrides))} does not apply to "
                                 f"`tinyscale {command}`: drop it.")
        return args.func(args, overrides) or 0
    except TinyscaleError as error:
        print(f"tinyscale: error: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tinyscale: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
