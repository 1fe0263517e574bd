#!/usr/bin/env python
"""Seconds per camera frame of the SO-101 scene, per headless GL backend, frame size and quality.

Each configuration runs in its own subprocess (MuJoCo fixes ``MUJOCO_GL`` at import): build the
environment with ``lerobot_kfold.simulation.make_env(ImageSpec(h, w))``, then time ``render()`` after
each of N simulator steps (the step itself is not timed). "as configured" is the scene's own quality
(4096-pixel shadow maps for 2 lights, 8x offscreen multisampling); "fast" applies
``lerobot_kfold.rendering.use_fast_rendering`` (no shadows, no multisampling) and rebuilds the renderer.

    PYTHONPATH=include .venv/bin/python bench/render_speed.py [--frames 10] [--rounds 3] [--backends ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = ((64, 64), (96, 128))


def measure(height: int, width: int, fast: bool, frames: int) -> dict[str, float]:
    """Runs in the child: median and mean seconds per frame."""
    import numpy as np

    from lerobot_kfold.rendering import use_fast_rendering
    from lerobot_kfold.simulation import ImageSpec, make_env

    env = make_env(ImageSpec(height=height, width=width))
    sim = env.unwrapped
    if fast:
        use_fast_rendering(sim.model)
        # make_env rendered once to check GL: rebuild the renderer so the new quality takes effect.
        sim._viewer.close()
        sim._viewer = None
    env.reset(seed=1)
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(2):  # warm-up: context creation, first upload of textures
        sim.render()
    times = []
    for _ in range(frames):
        env.step(action)
        start = time.perf_counter()
        frame = sim.render()
        times.append(time.perf_counter() - start)
    assert frame.shape == (height, width, 3)
    env.close()
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=10, help="timed frames per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration, backends interleaved")
    parser.add_argument("--backends", nargs="+", default=["egl", "osmesa"])
    parser.add_argument("--child", nargs=3, metavar=("H", "W", "FAST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        h, w, fast = args.child
        print(json.dumps(measure(int(h), int(w), fast == "1", args.frames)))
        return
    print(f"{args.rounds} runs x {args.frames} frames per configuration; backends interleaved (A B A B ...)")
    print(f"{'size':>8} {'quality':14} " + " ".join(f"{b + ' s/frame':>16}" for b in args.backends))
    for h, w in SIZES:
        for fast in (False, True):
            medians: dict[str, list[float]] = {b: [] for b in args.backends}
            for _ in range(args.rounds):
                for backend in args.backends:
                    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
                    env["PYTHONPATH"] = os.pathsep.join(
                        filter(None, [str(REPO / "include"), env.get("PYTHONPATH")])
                    )
                    cmd = [sys.executable, __file__, "--frames", str(args.frames), "--child", str(h), str(w)]
                    out = subprocess.run(
                        [*cmd, "1" if fast else "0"], env=env, capture_output=True, text=True, check=True
                    )
                    medians[backend].append(json.loads(out.stdout.strip().splitlines()[-1])["median_s"])
            quality = "fast" if fast else "as configured"
            cells = " ".join(f"{statistics.median(medians[b]):16.3f}" for b in args.backends)
            spread = "; ".join(f"{b} runs " + "/".join(f"{m:.3f}" for m in medians[b]) for b in args.backends)
            print(f"{f'{h}x{w}':>8} {quality:14} {cells}   ({spread})", flush=True)


if __name__ == "__main__":
    main()
