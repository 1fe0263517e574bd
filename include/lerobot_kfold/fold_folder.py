"""A fold's output folder: resumable, reusable, or another fold's work that must not be overwritten.

Why: re-running a fold on its folder resumes it (or reuses its finished result), so the folder is the
fold's memory. Pointed at the folder of another fold or of other settings, training would overwrite that
fold's ``result.json`` and ``best/`` model. Everything here reads the folder and decides *before*
anything is written: the same fold and settings go on; anything else is refused with what is there.
"""

from __future__ import annotations

from pathlib import Path

from lerobot_kfold import checkpoints
from lerobot_kfold.results import FoldResult
from lerobot_kfold.storage import ERROR_FILE, RESULT_FILE
from lerobot_kfold.training_config import FoldTrainingConfig


class ForeignFolderError(ValueError):
    """The output folder holds the work of another fold, or of other settings of this fold."""


def check_fold_folder(config: FoldTrainingConfig) -> FoldResult | None:
    """The finished result to reuse, or None to train (fresh or resumed); refuses another fold's folder.

    Looked at, in order: ``result.json`` (a finished or interrupted fold), ``error.json`` (a failed
    try) and the last checkpoint's fold state. Each names the settings it belongs to. A ``best/`` model
    alone (a try killed after a validation, before its first checkpoint) is this fold's to redo.
    """
    folder = config.output_path
    key = config.resume_key()
    result = _read(folder / RESULT_FILE)
    if result is not None and result.resume_key != key:
        _refuse(folder, f"{RESULT_FILE} of {_describe(result)}", config)
    error = _read(folder / ERROR_FILE)
    if error is not None and error.fold_id != config.fold_id:
        _refuse(folder, f"{ERROR_FILE} of {_describe(error)}", config)
    last = checkpoints.last_checkpoint(folder)
    if last is not None and checkpoints.read_fold_state(last).resume_key != key:
        _refuse(folder, f"checkpoint {last.name} of other settings", config)
    return result if result is not None and result.ok else None


def _read(path: Path) -> FoldResult | None:
    return FoldResult.from_json_file(path) if path.is_file() else None


def _describe(result: FoldResult) -> str:
    return f"fold {result.fold_id} (status {result.status})"


def _refuse(folder: Path, what: str, config: FoldTrainingConfig) -> None:
    raise ForeignFolderError(
        f"{folder} holds another fold's work ({what}), not fold {config.fold_id} with these settings: "
        "nothing was changed there. Use a new output folder, or delete that one to start over."
    )
