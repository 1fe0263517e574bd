"""Where a k-fold run keeps its files: one storage root, the same layout on Modal and locally.

Why: the Airflow side plans folds and names output folders, but the work runs elsewhere (a Modal
container with the Volume mounted, or the Airflow worker itself). Paths travel as *storage paths*:
relative ones are resolved against the storage root of the machine that runs the job, so one plan is
valid on both backends. The root is ``$LEROBOT_KFOLD_STORAGE``; the Modal image sets it to the Volume's
mount point, and a local install defaults to ``~/lerobot-kfold``.

Layout under the root::

    datasets/<owner>/<name>/          datasets fetched from the hub (once, shared by all folds)
    datasets/<owner>/<name>_v3.0/     the v3.0 conversion of a v2.1 dataset (the original kept as it is)
    runs/<dag id>/<run id>/<group>/   one k-fold run of a DAG (the CLI's run folder has the same layout):
        plan.json                     the fold plan (hashed manifest)
        folds/fold_NNN/               one fold: checkpoints/, best/, result.json or error.json
        folds/<candidate>/fold_NNN/   the same, per candidate, when a run compares several
        refit/                        the chosen candidate trained on every non-hold-out episode
        summary.json folds.csv report.png report.html
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

STORAGE_ENV = "LEROBOT_KFOLD_STORAGE"
DATASETS_DIR = "datasets"
RUNS_DIR = "runs"
# Inside a run folder (the CLI's and a DAG run's alike).
PLAN_FILE = "plan.json"
FOLDS_DIR = "folds"
REFIT_DIR = "refit"
# Inside a fold folder: the finished result, or the error of its last failed try.
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def storage_root() -> Path:
    """The storage root of this machine: ``$LEROBOT_KFOLD_STORAGE`` or ``~/lerobot-kfold``."""
    configured = os.environ.get(STORAGE_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / "lerobot-kfold"


def resolve(path: str | os.PathLike[str]) -> Path:
    """An absolute path stays as it is; a relative one is taken under the storage root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else storage_root() / path


def safe_name(text: str) -> str:
    """A folder name for an arbitrary id (Airflow run ids hold ':' and '+').

    Characters outside ``[A-Za-z0-9._-]`` become ``_``; when anything was replaced, a short hash of the
    original is appended, so two ids that differ only in such characters never share a folder.
    """
    if not text or text in {".", ".."}:
        raise ValueError(f"cannot make a folder name from {text!r}")
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def run_folder(dag_id: str, run_id: str) -> str:
    """Storage path of one DAG run's outputs: every output of a run is namespaced by its run id."""
    return f"{RUNS_DIR}/{safe_name(dag_id)}/{safe_name(run_id)}"


def dataset_folder(repo_id: str) -> str:
    """Storage path where a hub dataset is fetched to (``owner/name`` keeps its two parts)."""
    parts = repo_id.strip().split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"dataset repo id must look like 'owner/name', got {repo_id!r}")
    return "/".join([DATASETS_DIR, *(safe_name(p) for p in parts)])


def converted_dataset_folder(location: str) -> str:
    """Where a v2.1 dataset at ``location`` (a storage path) is converted to v3.0: a sibling folder."""
    return f"{str(location).rstrip('/')}_v3.0"


def fold_folder(run_folder: str, fold_id: int, candidate: str = "") -> str:
    """Path of one fold's folder inside a run folder (a storage path or a local one).

    ``candidate`` names the candidate in a run that compares several; a run of one has no such level.
    """
    folds = f"{run_folder}/{FOLDS_DIR}/{safe_name(candidate)}" if candidate else f"{run_folder}/{FOLDS_DIR}"
    return f"{folds}/fold_{fold_id:03d}"


def refit_folder(run_folder: str) -> str:
    """Path of the refit of the chosen candidate inside a run folder."""
    return f"{run_folder}/{REFIT_DIR}"


# Longest file or folder name most file systems take (ext4, xfs, APFS, the Modal Volume), in bytes.
MAX_NAME_BYTES = 255


def check_path_text(name: str, text: str, *, relative_inside: bool = False) -> str:
    """``text`` if it can name a path here, else ``ValueError`` naming the setting or option.

    Refused: text that is not valid UTF-8 (undecodable bytes on a command line), a file or folder name
    over 255 bytes, NUL characters, and with ``relative_inside`` a relative path that climbs out of the
    storage root with ``..``.
    """
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{name} is not valid UTF-8 text ({text!r}); rename the path or pass another"
        ) from None
    if b"\0" in encoded:
        raise ValueError(f"{name} contains a NUL character: {text!r}")
    for part in Path(text).parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError(
                f"{name} has a file or folder name of {len(part.encode('utf-8'))} bytes, over the "
                f"{MAX_NAME_BYTES} that file systems take: {part[:40]}..."
            )
    if relative_inside and not Path(text).is_absolute() and ".." in Path(text).parts:
        raise ValueError(
            f"{name}={text!r} climbs out of the storage root with '..': give a path inside it, or an "
            "absolute path"
        )
    return text
