"""The ``validate`` task's body: every check that can run before a GPU minute is paid for.

It builds the run's settings from the trigger form's Params and the task group's constants, refuses conf
keys that are no setting, applies the rules that need the training stack, and checks what the chosen
backend needs: locally the storage root, the dataset and a W&B key; on Modal the connection and the
deployed app. What passes is handed on as plain values (XCom).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfold_cv import wandb_key
from kfold_cv.settings import SETTING_NAMES, CVSettings
from lerobot_kfold import storage
from lerobot_kfold.declared import split_known
from lerobot_kfold.run_settings import flatten
from modal_gpu.hooks import ModalGPUHook

# The Modal functions a k-fold run calls (lerobot_kfold.modal_app).
MODAL_FUNCTIONS = ("prepare_dataset", "train_fold", "aggregate")


def run_values(
    params: Mapping[str, Any], conf: Mapping[str, Any] | None, constants: Mapping[str, Any], use_params: bool
) -> dict[str, Any]:
    """The settings of this run: the Params (when the group reads them), then the constants."""
    values: dict[str, Any] = {}
    if use_params:
        # A conf key that is no setting (a typo such as "K") would otherwise be dropped silently.
        split_known(conf or {}, SETTING_NAMES, what="conf key")
        values.update({name: value for name, value in params.items() if name in SETTING_NAMES})
    values.update(constants)
    return values


def validate_run(
    values: Mapping[str, Any], run_folder: str, *, app_name: str, modal_conn_id: str
) -> dict[str, Any]:
    """Check everything, then return what the later tasks read from XCom."""
    cv = CVSettings.from_mapping(values)
    cv.check()
    if cv.compute.backend == "local":
        check_local(cv, run_folder)
        wandb_key.check_key_available(cv.run.training.wandb_mode, wandb_key.connection_id())
    else:
        check_modal(app_name, modal_conn_id)
    print(f"k-fold settings: {cv.to_dict()}")
    names = [candidate.name for candidate in cv.run.candidates()]
    if len(names) > 1:
        print(f"candidates {', '.join(names)}: {len(names) * cv.run.split.num_folds} fold tasks, same folds")
    where = f"local {storage.storage_root()}" if cv.compute.backend == "local" else "the Modal Volume"
    print(f"outputs: {run_folder} in storage ({where})")
    return {
        "settings": cv.to_dict(),
        "backend": cv.compute.backend,
        "gpu": cv.compute.gpu,
        "timeout_s": cv.compute.timeout_s,
        "run_folder": run_folder,
        "prepare_kwargs": {
            "dataset_root": cv.run.dataset.dataset_root,
            "repo_id": cv.run.dataset.dataset_repo_id,
            "policy_type": cv.run.training.policy_type,
            # lerobot builds the policy for the dataset's features there (on the meta device).
            "training": flatten({"training": cv.run.training}),
            "sim_eval_episodes": cv.run.evaluation.sim_eval_episodes,
        },
    }


def check_local(cv: CVSettings, run_folder: str) -> None:
    """Backend local: the storage root is writable and the dataset there is one the policy can train on
    (features, cameras, the backbone's pretrained weights in this machine's torch cache)."""
    from lerobot_kfold import jobs

    root = storage.storage_root()
    folder = storage.resolve(run_folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot write outputs under the storage root {root}: {exc}. Set LEROBOT_KFOLD_STORAGE to a "
            "writable folder."
        ) from exc
    if cv.run.dataset.dataset_root:
        jobs.check_dataset_for_run(cv.run.dataset.dataset_root, cv.run.training, cv.run.evaluation)


def check_modal(app_name: str, modal_conn_id: str) -> None:
    """Backend modal: the connection resolves and the app's functions are deployed."""
    import modal

    hook = ModalGPUHook(modal_conn_id=modal_conn_id)
    for name in MODAL_FUNCTIONS:
        try:
            hook.get_function(app_name, name).hydrate()
        except modal.exception.NotFoundError as exc:
            raise ValueError(
                f"Modal app {app_name!r} has no deployed function {name!r} ({exc}). Deploy it with "
                "`modal deploy include/lerobot_kfold/modal_app.py`, or set backend to 'local'."
            ) from exc
        except modal.exception.AuthError as exc:
            raise ValueError(
                f"Modal rejected the credentials of connection {modal_conn_id!r}: {exc}. Check its token id "
                "(login) and token secret (password)."
            ) from exc
