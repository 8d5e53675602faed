"""Process-wide set-up for the `tinyscale` command: XLA's CPU flags, the compilation cache,
freed memory kept for reuse, the imported modules kept out of the cyclic collector's
walks, and no echoes of failures that tinyscale reports itself."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys

import jax

from tinyscale import config as config_lib


def setup() -> None:
    for_compute()
    freeze_imports()
    for logger in ("absl", "asyncio"):  # once each, however often a process calls this
        if not any(isinstance(f, _OrbaxEchoes) for f in logging.getLogger(logger).filters):
            logging.getLogger(logger).addFilter(_OrbaxEchoes())
    if not getattr(sys.unraisablehook, "quiets_closed_loops", False):
        sys.unraisablehook = _quiet_closed_loops(sys.unraisablehook)
    compilation_cache()


def for_compute() -> None:
    """XLA's flags and freed memory kept, as the command has them (benchmarks and tests
    that compute in-process call this first)."""
    xla_flags()
    reuse_freed_memory()


def freeze_imports() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach, once per
    process (later calls do nothing).

    A command's process has imported ~1,700 modules by now (jax, flax, orbax: ~180,000
    objects the collector tracks), all kept until it exits. Left in the collector's oldest
    generation, every full collection that tracing and compiling trigger walks all of
    them again, and so does the one at exit: ~0.3 s of a short training process's 2.5 s
    (docs/results.md, "Imports frozen; ..."). Objects made from here on are collected as
    usual; a cycle already unreachable now (a few dozen objects of the imports) is kept.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()


# XLA flags set for every process unless XLA_FLAGS names them already (the user's value
# wins). YNNPACK fusing only dots with their neighbours, not reductions or lone dots, made
# a CPU train step 10-30% faster (docs/results.md, "YNNPACK's fusions"); it changes float
# rounding, so every process of a run must agree: subprocesses inherit XLA_FLAGS.
XLA_FLAGS = {"--xla_cpu_experimental_ynn_fusion_type": "dot"}


def xla_flags() -> str:
    """Add XLA_FLAGS' flags to the environment's XLA_FLAGS where it does not name them;
    the result. Only a process that has not yet run JAX computations is affected (XLA
    reads the variable when it starts its backend)."""
    flags = os.environ.get("XLA_FLAGS", "")
    named = {f.split("=", 1)[0] for f in flags.split()}
    flags = " ".join([flags, *(f"{k}={v}" for k, v in XLA_FLAGS.items() if k not in named)])
    os.environ["XLA_FLAGS"] = flags.strip()
    return os.environ["XLA_FLAGS"]


# mallopt's parameters (glibc's malloc.h); its value argument is a C int
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _INT_MAX = -1, -3, 2**31 - 1


def reuse_freed_memory() -> bool:
    """Keep memory that XLA frees in this process's heap (glibc only; else nothing).

    By default glibc maps each block above its mmap threshold (at most 32 MiB) fresh and
    returns it to the kernel when freed, so the buffers a CPU train step allocates, such
    as a batch's logits, are zero-filled page by page again at every step: ~20% of a
    small model's step went to the kernel (docs/results.md, "Freed memory kept"). With
    both thresholds at their largest, freed blocks are reused; the process keeps its peak
    memory until it exits. True when glibc took the settings.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _INT_MAX) and mallopt(_M_TRIM_THRESHOLD, _INT_MAX))


def compilation_cache() -> None:
    """A persistent JAX compilation cache: a relaunch or a repeated shape skips compiling.

    config.COMPILATION_CACHE_ENV names the folder (the sweep launchers point it into the
    sweep directory); the default is CACHE_ROOT/jax; an empty value turns it off. Every
    program is kept, however fast it compiled: a run's many small ones add up.
    """
    path = os.environ.get(config_lib.COMPILATION_CACHE_ENV,
                          os.path.join(os.path.expanduser(config_lib.CACHE_ROOT), "jax"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


class _OrbaxEchoes(logging.Filter):
    """Drops orbax's ERROR logs from its background threads, and asyncio's notes on the
    futures a failed save abandoned: each failure they describe reaches the main thread
    as an exception, which tinyscale reports in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and (
            "orbax" in record.pathname or "never retrieved" in str(record.msg)))


def _quiet_closed_loops(hook):
    """Wrap sys.unraisablehook: a failed async save leaves tensorstore callbacks aimed at
    orbax's closed event loop; the failure itself is reported, its echoes are not."""
    def quiet(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError | ImportError) and (
                "Event loop is closed" in str(unraisable.exc_value)
                or "shutting down" in str(unraisable.exc_value))):
            hook(unraisable)
    quiet.quiets_closed_loops = True
    return quiet
