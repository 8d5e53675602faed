"""Process-wide set-up of the `tinyscale` command."""

import os
import subprocess
import sys

import pytest

FAULTS = """
import resource, sys
import numpy as np
from tinyscale import process
if sys.argv[1] == "reuse":
    assert process.reuse_freed_memory()
def faults():  # page faults of allocating, filling and freeing 40 MB, as a train step does
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = np.ones(10_000_000, np.float32)
    del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[faults() for _ in range(3)])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_faulting_its_pages_again():
    """glibc's default gives a freed 40 MB block back to the kernel, so the next one is
    faulted in page by page again; after reuse_freed_memory() (which every `tinyscale`
    command calls) the second and third blocks fault no page."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True,
                             text=True, check=True).stdout
        return [int(x) for x in out.split()]
    default, reused = faults("default"), faults("reuse")
    assert min(default) > 10, default
    assert max(reused[1:]) <= 2, reused


FUSIONS = """
import jax, jax.numpy as jnp
from tinyscale import process
flags = process.xla_flags()
x = jnp.ones((64, 64))
hlo = jax.jit(lambda a, b: (a @ b).sum(-1)).lower(x, x).compile().as_text()
root = next(line for line in hlo.splitlines()
            if line.strip().startswith("ROOT") and "fusion(" in line)
print(flags, "|", root.split("=")[1].split()[0], "|", "ynn" in root.split("=")[0])
"""


def test_xla_flags_are_set_unless_the_user_named_them():
    """tinyscale's XLA flag reaches XLA (YNNPACK fuses the dot alone: the sum after it is
    XLA's own fusion, not part of a YNNPACK one as by default), beside the user's other
    flags; a value the user gave for the same flag is kept."""
    def run(user_flags):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        if user_flags is not None:
            env["XLA_FLAGS"] = user_flags
        return subprocess.run([sys.executable, "-c", FUSIONS], capture_output=True, text=True,
                              check=True, env=env).stdout.strip().split(" | ")
    flags, _, root_is_ynn = run(None)
    assert flags == "--xla_cpu_experimental_ynn_fusion_type=dot" and root_is_ynn == "False"
    flags, _, _ = run("--xla_force_host_platform_device_count=2")
    assert flags.split() == ["--xla_force_host_platform_device_count=2",
                             "--xla_cpu_experimental_ynn_fusion_type=dot"]
    flags, _, root_is_ynn = run("--xla_cpu_experimental_ynn_fusion_type=dot,reduce")
    assert flags == "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
    assert root_is_ynn == "True"  # the user's choice took effect: the sum is in YNNPACK's
