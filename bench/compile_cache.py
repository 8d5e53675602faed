"""What the shared compilation cache saves: one shape trained three times.

    python bench/compile_cache.py [--steps 20] [--width 64] [--depth 2]

Each run is a fresh `tinyscale train` process (a quickstart shape, a short run with the
end-of-run evaluation, so the train step, the eval step and generation all compile). The
first run fills an empty cache folder (cold), the second is a different seed of the same
shape with that folder (what a relaunch or a second seed in a sweep gets), the third has
the cache turned off. Reported: wall time per process, and the share the cache saves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
QUICKSTART = os.path.join(ROOT, "sweeps", "quickstart.py")


def train(workdir, cache_dir, data_dir, seed, args) -> float:
    env = {**os.environ, "TINYSCALE_COMPILATION_CACHE": cache_dir}
    cmd = [sys.executable, "-m", "tinyscale.cli", "train", "--config", QUICKSTART,
           "--workdir", workdir, f"--config.data.cache_dir={data_dir}", f"--config.seed={seed}",
           f"--config.model.d_model={args.width}", f"--config.model.n_layers={args.depth}",
           f"--config.model.n_heads={max(1, args.width // 16)}",
           f"--config.train.steps={args.steps}", "--config.eval.fluency=False",
           "--config.eval.prompts=8", "--config.eval.every=1000"]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr[-2000:])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        subprocess.run([sys.executable, "-m", "tinyscale.cli", "data", "prepare", "--config",
                        QUICKSTART, f"--config.data.cache_dir={data}"], cwd=ROOT, check=True,
                       capture_output=True)
        cache = os.path.join(tmp, "jax_cache")
        cold = train(os.path.join(tmp, "cold"), cache, data, 0, args)
        warm = train(os.path.join(tmp, "warm"), cache, data, 1, args)
        off = train(os.path.join(tmp, "off"), "", data, 2, args)
        entries = len(os.listdir(cache))
    shape = f"d{args.width}-L{args.depth}, {args.steps} steps + end-of-run eval"
    print(f"{shape}: cache off {off:.1f} s, cold cache {cold:.1f} s, "
          f"warm cache (second seed) {warm:.1f} s; {entries} cached executables")
    print(json.dumps({"off_s": off, "cold_s": cold, "warm_s": warm,
                      "saved_s": off - warm, "saved_share": (off - warm) / off}))


if __name__ == "__main__":
    main()
