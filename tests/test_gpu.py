"""The GPU set-up where there is no GPU: `scripts/setup.sh gpu` refuses a machine it
cannot serve before it installs anything. (`bench/device_check.sh --dry-run` takes a
minute, so it is not a test: docs/gpu.md.)"""

import os
import shutil
import subprocess

import pytest

from .conftest import ROOT

# What nvidia-smi prints (on stdout) and its exit status where no driver answers.
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
             "driver. Make sure that the latest NVIDIA driver is installed and running.", 9)


def setup_gpu(tmp_path, nvidia_smi=None):
    """scripts/setup.sh gpu, copied into an empty checkout (so whatever it did would show
    there), with `nvidia_smi` = (stdout, exit status) as the only nvidia-smi on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(os.path.join(ROOT, "scripts", "setup.sh"), tmp_path / "scripts")
    tools = tmp_path / "bin"
    tools.mkdir()
    if nvidia_smi:
        out, code = nvidia_smi
        (tools / "nvidia-smi").write_text(f"#!/bin/sh\necho '{out}'\nexit {code}\n")
        (tools / "nvidia-smi").chmod(0o755)
    result = subprocess.run(["bash", "scripts/setup.sh", "gpu"], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60,
                            env={"PATH": f"{tools}:/usr/bin:/bin", "HOME": str(tmp_path)})
    return result, sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("nvidia-smi", path="/usr/bin:/bin") is not None,
                    reason="this machine has nvidia-smi")
@pytest.mark.parametrize("nvidia_smi, says", [
    (None, "no NVIDIA GPU found (nvidia-smi is not installed)"),
    (NO_DRIVER, "no NVIDIA GPU found (nvidia-smi lists none)"),
    (("470.82.01", 0), "NVIDIA driver 470.82.01 is older than JAX's CUDA 12 wheels need"),
])
def test_setup_gpu_refuses_a_machine_without_a_usable_gpu_before_installing(
        tmp_path, nvidia_smi, says):
    result, left = setup_gpu(tmp_path, nvidia_smi)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr
    assert left == ["bin", "scripts"]  # no .venv, nothing installed
