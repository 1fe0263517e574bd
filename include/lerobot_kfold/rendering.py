"""Headless OpenGL for MuJoCo's camera images: pick a backend that works on this machine.

Why this exists: MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, and on Linux an
unset ``MUJOCO_GL`` means GLFW, which needs a display. A worker, a CI runner or a Modal container has
none, so nothing renders unless someone set the variable by hand. :func:`choose_gl_backend` does it for
them: it tries each candidate (EGL first, then OSMesa) in a *subprocess*, because a failed GL start in
this process could not be undone and the import-time choice could not be changed afterwards, and sets
``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) to the first that renders a frame.

Call it before anything imports ``mujoco`` (``gymnasium.make`` of a MuJoCo environment does). It is
cheap after the first call in a process (the result is cached) and does nothing but validate when
``MUJOCO_GL`` is already set: an explicit choice always wins.

On Debian/Ubuntu the software renderers come from Mesa: EGL from ``libegl1 libegl-mesa0 libgl1`` and
OSMesa from ``libosmesa6`` (``scripts/ensure_system_packages.sh`` installs them for ``make test``).
Both run on llvmpipe on a machine without a GPU, at the same speed. On a GPU host, EGL uses the
vendor's driver when it is installed.

Wiring: ``simulation.make_env`` calls :func:`choose_gl_backend` (with cameras) or
:func:`choose_gl_backend_early` (without: a camera environment may follow in the same process) before
it imports the simulator, which imports mujoco. A process that imports mujoco some other way first
(a test session) calls :func:`choose_gl_backend_early` at start. Frames come from
``simulation.CameraRig``, which renders a copy of the physics model made by :func:`reduced_detail_model`
(fast quality, meshes simplified below half a pixel); recording and rollouts use the same rig. Child
processes inherit the chosen ``MUJOCO_GL`` and do not probe again.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

# Candidates in order of preference on Linux: EGL is the one that uses a GPU when there is one.
LINUX_BACKENDS: tuple[str, ...] = ("egl", "osmesa")
# Debian/Ubuntu packages that provide each backend (Mesa's software renderers).
DEBIAN_PACKAGES: dict[str, tuple[str, ...]] = {
    "egl": ("libegl1", "libegl-mesa0", "libgl1"),
    "osmesa": ("libosmesa6",),
}
# Values of MUJOCO_GL that MuJoCo accepts; anything else makes ``import mujoco`` raise.
_KNOWN_VALUES = {"egl", "osmesa", "glfw", "glx", "cgl", "wgl", "disable", "disabled", "off", "false", "0"}
# Render one 16x16 frame of a one-geom scene: proves a context can be created and read back.
_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string(
    "<mujoco><worldbody><light pos='0 0 3'/><geom type='sphere' size='0.5'/></worldbody></mujoco>"
)
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, height=16, width=16)
renderer.update_scene(data)
frame = renderer.render()
assert frame.shape == (16, 16, 3), frame.shape
assert int(frame.max()) > 0, "the probe frame is all black"
renderer.close()
print("ok")
"""

_lock = threading.Lock()
_chosen: dict[tuple[str, ...], str] = {}


class RenderingUnavailableError(RuntimeError):
    """Camera images were asked for but MuJoCo can create no OpenGL context on this machine."""


def install_hint() -> str:
    """What to install for headless rendering, in one line (Debian/Ubuntu package names)."""
    packages = [pkg for b in LINUX_BACKENDS for pkg in DEBIAN_PACKAGES[b]]
    return (
        f"on Debian/Ubuntu: 'apt-get install -y {' '.join(packages)}' "
        "(or run scripts/ensure_system_packages.sh); "
        "then leave MUJOCO_GL unset to let lerobot_kfold pick, or set MUJOCO_GL=egl or MUJOCO_GL=osmesa"
    )


def probe_gl_backend(backend: str, timeout_s: float = 120.0) -> str | None:
    """Render one tiny frame with ``MUJOCO_GL=backend`` in a fresh interpreter.

    Returns None when it rendered, else the reason (the last line of the child's error output). A
    subprocess, because MuJoCo fixes its backend at import and a half-started GL library can leave a
    process unable to try another one.
    """
    env = os.environ.copy()
    env["MUJOCO_GL"] = backend
    # PyOpenGL must load the matching platform; a stale value from the parent would make MuJoCo raise.
    if backend in ("egl", "osmesa"):
        env["PYOPENGL_PLATFORM"] = backend
    else:
        env.pop("PYOPENGL_PLATFORM", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"the probe did not finish within {timeout_s:.0f} s"
    if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
        return None
    lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def default_backends() -> tuple[str, ...]:
    """Candidates for this operating system, in order of preference."""
    system = platform.system()
    if system == "Linux":
        return LINUX_BACKENDS
    if system == "Darwin":
        return ("cgl", "glfw")
    return ("glfw",)


def _check_not_imported_with_other(backend: str) -> None:
    """MuJoCo already imported with another backend: the choice can no longer take effect."""
    module = sys.modules.get("mujoco.rendering.classic.gl_context")
    if module is None:
        return
    imported_with = getattr(module, "_MUJOCO_GL", "")
    if imported_with != backend:
        raise RenderingUnavailableError(
            f"mujoco was imported with MUJOCO_GL={imported_with or '<unset>'} before a rendering backend was "
            f"chosen, so {backend!r} cannot take effect in this process. Call "
            "lerobot_kfold.rendering.choose_gl_backend() before importing mujoco or making a MuJoCo "
            f"environment, or set MUJOCO_GL={backend} in the environment."
        )


def choose_gl_backend(candidates: Sequence[str] | None = None, *, probe_timeout_s: float = 120.0) -> str:
    """Make sure MuJoCo will render headless in this process; return the backend (``MUJOCO_GL`` value).

    - ``MUJOCO_GL`` already set: it is kept (an explicit choice wins) and returned without a probe,
      after checking it is a value MuJoCo accepts.
    - Unset: each candidate (default EGL, then OSMesa on Linux) is probed in a subprocess; the first
      that renders is written to ``os.environ["MUJOCO_GL"]`` (and ``PYOPENGL_PLATFORM`` when unset).
      The result is cached for the process.

    Raises :class:`RenderingUnavailableError` naming the packages to install when none works, or when
    ``mujoco`` was already imported with another backend (too late to change it).
    """
    explicit = os.environ.get("MUJOCO_GL", "").strip().lower()
    if explicit:
        if explicit not in _KNOWN_VALUES:
            raise RenderingUnavailableError(
                f"MUJOCO_GL={explicit!r} is not a value MuJoCo accepts; use 'egl' or 'osmesa' for headless "
                "rendering, or unset it to let lerobot_kfold pick one."
            )
        if explicit in {"disable", "disabled", "off", "false", "0"}:
            raise RenderingUnavailableError(
                f"MUJOCO_GL={explicit} disables rendering, but camera images were asked for; unset it or "
                "set MUJOCO_GL=egl or MUJOCO_GL=osmesa."
            )
        return explicit
    names = tuple(candidates) if candidates is not None else default_backends()
    if not names:
        raise ValueError("choose_gl_backend needs at least one candidate backend")
    with _lock:
        if names not in _chosen:
            reasons: dict[str, str] = {}
            for name in names:
                reason = probe_gl_backend(name, timeout_s=probe_timeout_s)
                if reason is None:
                    _chosen[names] = name
                    break
                reasons[name] = reason
            else:
                tried = "; ".join(f"{name}: {why}" for name, why in reasons.items())
                raise RenderingUnavailableError(
                    "camera images need an OpenGL context for MuJoCo and no headless backend works on this "
                    f"machine (tried {tried}). Install one: {install_hint()}."
                )
        backend = _chosen[names]
    _check_not_imported_with_other(backend)
    os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def use_fast_rendering(model: Any) -> None:
    """Turn off shadow maps and offscreen multisampling of a MuJoCo model (``mujoco.MjModel``).

    On software GL this is most of the cost of a small frame: the SO-101 scene (4096-pixel shadow maps
    for 2 lights, 8x multisampling) renders a 64x64 frame about 6x faster without them. Images lose
    shadows and anti-aliasing; record and evaluate with the same setting. Call it before the first
    render (MuJoCo sizes the offscreen buffer when the renderer is created).
    """
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0


def choose_gl_backend_early() -> str | None:
    """:func:`choose_gl_backend` at process start, for processes that may or may not render.

    Returns the backend, or None when none works (the process may never need one; a camera environment
    raises :class:`RenderingUnavailableError` with the install advice when it does).
    """
    try:
        return choose_gl_backend()
    except RenderingUnavailableError:
        return None


def reduced_detail_model(model: Any, cell_m: float) -> Any:
    """A copy of ``model`` for rendering only: fast quality, and mesh detail below ``cell_m`` merged.

    Why: the SO-101 arm's visual meshes have ~400,000 triangles; in software GL their vertex work is a
    fixed ~60 ms per frame whatever the frame size, ten times the cost of everything else. Merging the
    vertices of each mesh that fall into one cube of ``cell_m`` metres (vertex clustering, in the mesh's
    own frame, so nothing moves) keeps every shape a camera can resolve when ``cell_m`` is under half a
    pixel's footprint, and renders about 10x faster. The physics model is not changed: the caller copies
    joint positions into a ``MjData`` of this model and runs the kinematics before rendering.
    A mesh with texture coordinates, or one that clustering would not shrink, is left as it is.
    """
    import copy

    render = copy.deepcopy(model)
    use_fast_rendering(render)
    if cell_m > 0:
        for mesh in range(render.nmesh):
            _cluster_mesh(render, mesh, cell_m)
    return render


def _cluster_mesh(model: Any, mesh: int, cell_m: float) -> None:
    """Vertex clustering of one mesh in place (vertices, faces and smooth normals; arrays keep size)."""
    import numpy as np

    if model.mesh_texcoordnum[mesh] > 0:
        return
    va, vn = int(model.mesh_vertadr[mesh]), int(model.mesh_vertnum[mesh])
    fa, fn = int(model.mesh_faceadr[mesh]), int(model.mesh_facenum[mesh])
    na, nn = int(model.mesh_normaladr[mesh]), int(model.mesh_normalnum[mesh])
    verts = model.mesh_vert[va : va + vn].astype(np.float64)
    _, cluster = np.unique(np.floor(verts / cell_m).astype(np.int64), axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    count = int(cluster.max()) + 1
    merged = np.zeros((count, 3))
    np.add.at(merged, cluster, verts)
    merged /= np.bincount(cluster, minlength=count)[:, None]
    faces = cluster[model.mesh_face[fa : fa + fn]]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)]
    if len(faces) < 4 or len(faces) >= fn or count > nn:
        return
    corners = merged[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros((count, 3))
    for k in range(3):  # area-weighted vertex normals: smooth shading like the compiler's
        np.add.at(normals, faces[:, k], face_normals)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    model.mesh_vert[va : va + count] = merged
    model.mesh_vertnum[mesh] = count
    model.mesh_normal[na : na + count] = normals
    model.mesh_normalnum[mesh] = count
    model.mesh_face[fa : fa + len(faces)] = faces
    model.mesh_facenormal[fa : fa + len(faces)] = faces
    model.mesh_facenum[mesh] = len(faces)
