"""Headless rendering: choose_gl_backend picks a backend that really renders the SO-101 scene.

MuJoCo fixes its GL backend when first imported, and this test session may already have imported it,
so every test that renders runs in a fresh interpreter with a controlled environment. EGL
(libegl1 libegl-mesa0 libgl1) and OSMesa (libosmesa6) must both be installed
(``scripts/ensure_system_packages.sh``, run by ``make test``); when one is missing its test fails with
the install hint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lerobot_kfold import rendering
from lerobot_kfold.rendering import RenderingUnavailableError, choose_gl_backend

INCLUDE = Path(rendering.__file__).resolve().parents[1]


def run_child(code: str, *args: str, **env_changes: str | None) -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()
    for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(name, None)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INCLUDE), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


# Choose (or keep) a backend, build the SO-101 environment with cameras, render one frame of each.
RENDER_SO101 = """
import json, os, sys
import numpy as np
from lerobot_kfold.rendering import choose_gl_backend
backend = choose_gl_backend()
from lerobot_kfold.simulation import CameraRig, CameraSpec, make_env
h, w, cameras = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
spec = CameraSpec(cameras=tuple(cameras), height=h, width=w)
env = make_env(spec)
env.reset(seed=3)
rig = CameraRig(env, spec)
frames = rig.render()
rig.close()
env.close()
print(json.dumps({"backend": backend, "env": os.environ["MUJOCO_GL"],
                  "frames": {k: {"shape": list(f.shape), "dtype": str(f.dtype), "std": float(f.std())}
                             for k, f in frames.items()}}))
"""

# The reduced-detail render model against the full meshes, same state, same quality.
COMPARE_DETAIL = """
import copy, json, time
from lerobot_kfold.rendering import choose_gl_backend, use_fast_rendering
choose_gl_backend()
import mujoco, numpy as np
from lerobot_kfold.simulation import CameraRig, CameraSpec, make_env
spec = CameraSpec(cameras=("front", "wrist"), height=96, width=128)
env = make_env(spec)
env.reset(seed=5)
for _ in range(20):  # move the arm off its home pose
    env.step(np.array([0.5, 0.3, -0.5, 1.0], dtype=np.float32))
reduced = CameraRig(env, spec)
full = CameraRig(env, spec)
full._model = copy.deepcopy(env.unwrapped.model)
use_fast_rendering(full._model)
full._data = mujoco.MjData(full._model)
full._renderer.close()
full._renderer = mujoco.Renderer(full._model, height=spec.height, width=spec.width)

def timed(rig):
    rig.render()
    start = time.perf_counter()
    for _ in range(5):
        frames = rig.render()
    return frames, (time.perf_counter() - start) / 5

a, reduced_s = timed(reduced)
b, full_s = timed(full)
print(json.dumps({
    "faces": [int(full._model.mesh_facenum.sum()), int(reduced._model.mesh_facenum.sum())],
    "mean_abs": {k: float(np.abs(a[k].astype(int) - b[k].astype(int)).mean()) for k in a},
    "seconds": [full_s, reduced_s],
}))
"""


def run_json(code: str, *args: str, **env: str | None) -> dict:
    proc = run_child(code, *args, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
class TestRendersForReal:
    def test_unset_picks_a_working_backend(self) -> None:
        out = run_json(RENDER_SO101, "64", "64", "front")
        assert out["backend"] in ("egl", "osmesa")
        assert out["env"] == out["backend"]
        frame = out["frames"]["observation.images.front"]
        assert frame["shape"] == [64, 64, 3] and frame["dtype"] == "uint8"
        assert frame["std"] > 5, "a real scene, not a blank frame"

    @pytest.mark.parametrize("backend", ["egl", "osmesa"])
    def test_each_backend_renders_both_cameras(self, backend: str) -> None:
        reason = rendering.probe_gl_backend(backend)
        assert reason is None, (
            f"MUJOCO_GL={backend} does not work here ({reason}); {rendering.install_hint()}"
        )
        out = run_json(RENDER_SO101, "96", "128", "front,wrist", MUJOCO_GL=backend)
        assert out["backend"] == backend, "an explicit MUJOCO_GL is kept"
        assert set(out["frames"]) == {"observation.images.front", "observation.images.wrist"}
        for frame in out["frames"].values():
            assert frame["shape"] == [96, 128, 3] and frame["std"] > 5

    def test_reduced_mesh_detail_looks_the_same_and_renders_faster(self) -> None:
        out = run_json(COMPARE_DETAIL)
        full_faces, reduced_faces = out["faces"]
        assert reduced_faces < full_faces / 5, out
        for key, mean_abs in out["mean_abs"].items():
            assert mean_abs < 3.0, f"{key} differs by {mean_abs} grey levels on average: {out}"
        full_s, reduced_s = out["seconds"]
        print(f"render s/frame (2 cameras): full {full_s:.3f}, reduced {reduced_s:.3f}")


class TestChoice:
    def test_no_working_backend_names_the_packages(self) -> None:
        # GLFW needs a display and there is none in the child: a real failure of the only candidate.
        proc = run_child(
            "from lerobot_kfold.rendering import choose_gl_backend\nchoose_gl_backend(candidates=['glfw'])"
        )
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("lerobot_kfold.rendering.RenderingUnavailableError")
        for text in ("glfw:", "apt-get install", "libosmesa6", "libegl1", "libegl-mesa0", "MUJOCO_GL=egl"):
            assert text in last, (text, last)

    def test_too_late_after_mujoco_was_imported(self) -> None:
        proc = run_child(
            "import mujoco\nfrom lerobot_kfold.rendering import choose_gl_backend\nchoose_gl_backend()"
        )
        assert proc.returncode != 0
        assert "before importing mujoco" in proc.stderr, proc.stderr[-2000:]

    @pytest.mark.parametrize(
        ("value", "match"),
        [
            pytest.param("vulkan", "not a value MuJoCo accepts", id="invalid"),
            pytest.param("disable", "disables rendering", id="disabled"),
        ],
    )
    def test_explicit_value_checked(self, monkeypatch: pytest.MonkeyPatch, value: str, match: str) -> None:
        monkeypatch.setenv("MUJOCO_GL", value)
        with pytest.raises(RenderingUnavailableError, match=match):
            choose_gl_backend()

    def test_explicit_value_kept_without_probe(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MUJOCO_GL", "OSMesa")
        monkeypatch.setattr(rendering, "probe_gl_backend", lambda *a, **k: pytest.fail("probed"))
        assert choose_gl_backend() == "osmesa"

    def test_first_working_candidate_wins_and_is_cached(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[str] = []

        def probe(backend: str, timeout_s: float = 0) -> str | None:
            calls.append(backend)
            return "no EGL display" if backend == "egl" else None

        for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(rendering, "probe_gl_backend", probe)
        monkeypatch.setattr(rendering, "_chosen", {})
        # As if mujoco were not imported yet in this process.
        monkeypatch.setitem(sys.modules, "mujoco.rendering.classic.gl_context", None)
        assert choose_gl_backend() == "osmesa"
        assert os.environ["MUJOCO_GL"] == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"
        monkeypatch.delenv("MUJOCO_GL")
        assert choose_gl_backend() == "osmesa"
        assert calls == ["egl", "osmesa"], "probed once per process"
