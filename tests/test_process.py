"""Process-wide set-up of the `tinyscale` command."""

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
