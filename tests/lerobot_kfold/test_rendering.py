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


# Choose (or keep) a backend, build the SO-101 environment with a camera, render one frame.
RENDER_SO101 = """
import json, os, sys
import numpy as np
from lerobot_kfold.rendering import choose_gl_backend, use_fast_rendering
backend = choose_gl_backend()
from lerobot_kfold.simulation import ImageSpec, make_env
h, w, fast = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
env = make_env(ImageSpec(height=h, width=w))
if fast:
    use_fast_rendering(env.unwrapped.model)
    env.unwrapped._viewer.close()  # make_env rendered once: rebuild the renderer with the new quality
    env.unwrapped._viewer = None
env.reset(seed=3)
frame = np.asarray(env.unwrapped.render())
env.close()
print(json.dumps({"backend": backend, "env": os.environ["MUJOCO_GL"], "shape": list(frame.shape),
                  "dtype": str(frame.dtype), "std": float(frame.std()), "mean": float(frame.mean())}))
"""


def render(h: int, w: int, fast: bool = False, **env: str | None) -> dict:
    proc = run_child(RENDER_SO101, str(h), str(w), "1" if fast else "0", **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
class TestRendersForReal:
    def test_unset_picks_a_working_backend(self) -> None:
        out = render(64, 64)
        assert out["backend"] in ("egl", "osmesa")
        assert out["env"] == out["backend"]
        assert out["shape"] == [64, 64, 3] and out["dtype"] == "uint8"
        assert out["std"] > 5, "a real scene, not a blank frame"

    @pytest.mark.parametrize("backend", ["egl", "osmesa"])
    def test_each_backend_renders_so101(self, backend: str) -> None:
        reason = rendering.probe_gl_backend(backend)
        assert reason is None, (
            f"MUJOCO_GL={backend} does not work here ({reason}); {rendering.install_hint()}"
        )
        out = render(96, 128, fast=True, MUJOCO_GL=backend)
        assert out["backend"] == backend, "an explicit MUJOCO_GL is kept"
        assert out["shape"] == [96, 128, 3] and out["std"] > 5


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
