"""The Modal app: the k-fold jobs as deployed Modal functions, with a Volume for their files.

Deploy it once per Modal environment (it needs the repository checkout for ``requirements.txt``)::

    modal deploy include/lerobot_kfold/modal_app.py

Optional, at deploy time: ``LEROBOT_KFOLD_WANDB_SECRET=wandb`` attaches the Modal secret of that name
(it must hold ``WANDB_API_KEY``) to ``train_fold``, so W&B keys never pass through Airflow;
``LEROBOT_KFOLD_HF_SECRET`` does the same for a hub token (private datasets).

Functions (the bodies are ``lerobot_kfold.jobs``; the Airflow side calls them by name):

- ``prepare_dataset``: on CPU; fetches a hub dataset into the Volume once and returns the episode
  metadata fold planning needs.
- ``train_fold``: on a GPU; one fold, its files under the run's folder on the Volume. The fold first
  copies its dataset from the Volume (a network file system) to the container's own disk and reads the
  copy. The Volume is committed after every checkpoint, so a preempted or retried call resumes where
  the last one stopped.
- ``aggregate``: on CPU; the summary files and report, written next to the folds (with several
  candidates their comparison; with a refit's result, the final test). A refit runs as ``train_fold``.
  A fold's progress goes to the ``modal.Dict`` ``progress.PROGRESS_DICT`` under the fold's storage
  folder, where the Airflow side's trigger reads it into the deferred task's log.

GPU type, timeout and retries set here are defaults; the caller overrides them per call with
``Function.with_options`` (the ModalGPUOperator does this from its ``gpu``/``timeout``/``retries``).

The image holds what camera datasets need: FFmpeg (lerobot then decodes with torchcodec), Mesa's EGL
and OSMesa for the simulator's cameras (``lerobot_kfold.rendering`` picks one), and ACT's pretrained
ResNet-18 weights, fetched once at build time into the image's torch cache (``TORCH_HOME``), so no
fold downloads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import modal

from lerobot_kfold import backbone, jobs, progress

APP_NAME = "lerobot-kfold"
VOLUME_NAME = "lerobot-kfold"
# Where the Volume is mounted in every container; the jobs' storage root there.
VOLUME_MOUNT = "/vol"
DEFAULT_GPU = "L4"
# Python and system packages the image needs besides the pinned requirements.
_APT_PACKAGES = ("ffmpeg", "libgl1", "libglib2.0-0", "libegl1", "libegl-mesa0", "libosmesa6")
_REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"
# torchvision's cache inside the image (not the Volume): weights baked at build time.
TORCH_HOME = "/opt/torch"
# Run at image build: the pretrained backbone lerobot's ACT loads, into the image's torch cache.
BAKE_BACKBONE = (
    'python -c "from torchvision.models import get_weight; '
    f"get_weight('{backbone.DEFAULT_WEIGHTS}').get_state_dict(progress=False)\""
)
# The container's own disk: a fold's dataset copy and its memory-mapped frame cache (TMPDIR).
LOCAL_DATASETS = "/tmp/lerobot-kfold/datasets"


def runtime_requirements(path: Path = _REQUIREMENTS) -> list[str]:
    """The pinned requirements without Airflow: the container runs jobs, not the orchestrator.

    Empty when the file is absent, as inside a running container (the image is already built there).
    """
    if not path.is_file():
        return []
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith(("-", "apache-airflow")):
            pins.append(line)
    return pins


def _secrets(*env_names: str) -> list[modal.Secret]:
    return [modal.Secret.from_name(os.environ[name]) for name in env_names if os.environ.get(name)]


image = (
    modal.Image.debian_slim(python_version="3.12")
    .apt_install(*_APT_PACKAGES)
    .pip_install(*runtime_requirements())
    .env(
        {
            "LEROBOT_KFOLD_STORAGE": VOLUME_MOUNT,
            "HF_HOME": f"{VOLUME_MOUNT}/.cache/huggingface",
            "TORCH_HOME": TORCH_HOME,
            "PYTHONUNBUFFERED": "1",
            progress.PROGRESS_DICT_ENV: progress.PROGRESS_DICT,
        }
    )
    .run_commands(BAKE_BACKBONE)
    .add_local_python_source("lerobot_kfold")
)
app = modal.App(APP_NAME, image=image)
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)


def _commit(_step: int = 0) -> None:
    """Persist the Volume's changes now (in a container); a no-op when the body runs locally."""
    if not modal.is_local():
        volume.commit()


def _reload() -> None:
    """See what earlier calls committed (a resumed fold needs its last checkpoint)."""
    if not modal.is_local():
        volume.reload()


@app.function(
    volumes={VOLUME_MOUNT: volume}, cpu=2.0, timeout=3600, secrets=_secrets("LEROBOT_KFOLD_HF_SECRET")
)
def prepare_dataset(
    dataset_root: str = "",
    repo_id: str = "",
    revision: str = "",
    policy_type: str = "act",
    training: dict[str, Any] | None = None,
    sim_eval_episodes: int = 0,
) -> dict[str, Any]:
    _reload()
    try:
        return jobs.prepare_dataset(
            dataset_root, repo_id, revision, policy_type, training, sim_eval_episodes=sim_eval_episodes
        )
    finally:
        _commit()


@app.function(
    volumes={VOLUME_MOUNT: volume},
    gpu=DEFAULT_GPU,
    # Room for a fold's frame cache in memory (frame_cache_gb defaults to 8) and lerobot's decoding.
    cpu=4.0,
    memory=16384,
    timeout=4 * 3600,
    retries=modal.Retries(max_retries=2, initial_delay=10.0, backoff_coefficient=2.0),
    secrets=_secrets("LEROBOT_KFOLD_WANDB_SECRET"),
)
def train_fold(config: dict[str, Any]) -> dict[str, Any]:
    _reload()
    local = None if modal.is_local() else LOCAL_DATASETS  # the local backend reads storage directly
    return jobs.train_fold(
        config,
        on_checkpoint=_commit,
        local_dataset_dir=local,
        channel=progress_channel(config["output_dir"]),
    )


def progress_channel(fold_folder: str) -> progress.Channel | None:
    """Where a fold publishes its progress: the named Dict of the image's environment, under the fold's
    folder. None where the environment names none (the body run by the local backend or the CLI)."""
    name = os.environ.get(progress.PROGRESS_DICT_ENV)
    if not name:
        return None
    board = modal.Dict.from_name(name, create_if_missing=True)
    key = progress.channel_key(fold_folder)
    return lambda record: board.put(key, record)


@app.function(volumes={VOLUME_MOUNT: volume}, cpu=1.0, timeout=1800)
def aggregate(
    run_folder: str,
    plan: dict[str, Any],
    aggregation: dict[str, Any] | None = None,
    run_id: str | None = None,
    fold_results: list[dict[str, Any] | None] | None = None,
    selection: dict[str, Any] | None = None,
    refit_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    _reload()
    try:
        return jobs.aggregate(run_folder, plan, aggregation, run_id, fold_results, selection, refit_result)
    finally:
        _commit()
