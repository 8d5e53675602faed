"""The JAX compilation cache the test sessions of a machine keep between them.

One folder per CPU under TESTS_CACHE (TESTS_CACHE_ENV names another folder; set empty,
each session starts a fresh one of its own, as on a fresh machine), emptied at a
session's start once the folders hold more than TESTS_CACHE_BYTES. An entry is keyed by
the program's HLO, jaxlib's version, the XLA flags, the compile options and the devices
(jax._src.cache_key), so a session loads only the very programs an earlier one compiled.
"""

import contextlib
import hashlib
import os
import platform

from tinyscale import config as config_lib

TESTS_CACHE_ENV = "TINYSCALE_TESTS_COMPILATION_CACHE"
TESTS_CACHE = os.path.join(os.path.expanduser(config_lib.CACHE_ROOT), "jax-tests")
TESTS_CACHE_BYTES = 1 << 30


def cpu() -> str:
    """A name for this machine's CPU, its model and feature flags: XLA:CPU compiles for
    the CPU it runs on, and its loader refuses (with an error logged) a program compiled
    for features this CPU lacks, as on a VM moved to another host."""
    try:
        with open("/proc/cpuinfo") as f:
            described = "".join([line for line in f
                                 if line.startswith(("model name", "flags"))][:2])
    except OSError:  # not Linux
        described = ""
    described = described or platform.machine() + platform.processor()  # ARM: "Features"
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def folder() -> str:
    """The folder this machine's sessions keep their compiled programs in ("" for none)."""
    named = os.environ.get(TESTS_CACHE_ENV)
    return os.path.join(TESTS_CACHE, cpu()) if named is None else named


def bound(limit: int = TESTS_CACHE_BYTES) -> None:
    """Empty the kept folders (every CPU's) if their files hold more than `limit` bytes:
    the programs of code long changed go, and the next session compiles what it needs
    again. An empty entry (a process killed between JAX creating the file and writing it)
    goes too: JAX would warn on reading it, compile, and never write it again. The folders
    stay, for the processes of another session that may be writing into them."""
    kept = os.environ.get(TESTS_CACHE_ENV, TESTS_CACHE)
    sizes = {}
    for d, _, names in os.walk(kept) if kept else ():
        for name in names:  # another session may be writing or emptying it
            with contextlib.suppress(FileNotFoundError):
                sizes[os.path.join(d, name)] = os.path.getsize(os.path.join(d, name))
    full = sum(sizes.values()) > limit
    for path in (p for p, size in sizes.items() if full or size == 0):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
