#!/usr/bin/env python
"""Seconds per camera frame of the SO-101 scene, per headless GL backend, frame size and quality.

Each configuration runs in its own subprocess (MuJoCo fixes ``MUJOCO_GL`` at import): build the
environment with ``lerobot_kfold.simulation.make_env(CameraSpec(...))``, then time one front-camera
frame after each of N simulator steps (the step itself is not timed). "as configured" is the scene's own
quality through the environment's ``render()`` (4096-pixel shadow maps for 2 lights, 8x offscreen
multisampling); "fast" applies ``lerobot_kfold.rendering.use_fast_rendering`` (no shadows, no
multisampling) to the environment's model; "rig" is what recording and rollouts use,
``simulation.CameraRig`` (fast quality and the meshes simplified below half a pixel).

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
SIZES = ((64, 64), (96, 128), (480, 640))
QUALITIES = ("as configured", "fast", "rig")


def measure(height: int, width: int, quality: str, frames: int) -> dict[str, float]:
    """Runs in the child: median and mean seconds per frame."""
    import numpy as np

    from lerobot_kfold.rendering import use_fast_rendering
    from lerobot_kfold.simulation import CameraRig, CameraSpec, make_env

    spec = CameraSpec(cameras=("front",), height=height, width=width)
    env = make_env(spec)
    sim = env.unwrapped
    if quality == "fast":
        use_fast_rendering(sim.model)  # before the environment's first render(): its renderer is lazy
    rig = CameraRig(env, spec) if quality == "rig" else None
    render = (lambda: rig.render()["observation.images.front"]) if rig else sim.render
    env.reset(seed=1)
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(2):  # warm-up: context creation, first upload of textures
        render()
    times = []
    for _ in range(frames):
        env.step(action)
        start = time.perf_counter()
        frame = render()
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
    parser.add_argument("--child", nargs=3, metavar=("H", "W", "QUALITY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        h, w, quality = args.child
        print(json.dumps(measure(int(h), int(w), quality, args.frames)))
        return
    print(f"{args.rounds} runs x {args.frames} frames per configuration; backends interleaved (A B A B ...)")
    print(f"{'size':>8} {'quality':14} " + " ".join(f"{b + ' s/frame':>16}" for b in args.backends))
    for h, w in SIZES:
        for quality in QUALITIES:
            medians: dict[str, list[float]] = {b: [] for b in args.backends}
            for _ in range(args.rounds):
                for backend in args.backends:
                    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
                    env["PYTHONPATH"] = os.pathsep.join(
                        filter(None, [str(REPO / "include"), env.get("PYTHONPATH")])
                    )
                    cmd = [sys.executable, __file__, "--frames", str(args.frames), "--child", str(h), str(w)]
                    out = subprocess.run([*cmd, quality], env=env, capture_output=True, text=True, check=True)
                    medians[backend].append(json.loads(out.stdout.strip().splitlines()[-1])["median_s"])
            cells = " ".join(f"{statistics.median(medians[b]):16.3f}" for b in args.backends)
            spread = "; ".join(f"{b} runs " + "/".join(f"{m:.3f}" for m in medians[b]) for b in args.backends)
            print(f"{f'{h}x{w}':>8} {quality:14} {cells}   ({spread})", flush=True)


if __name__ == "__main__":
    main()
