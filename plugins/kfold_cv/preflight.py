"""The ``validate`` task's body: every check that can run before a GPU minute is paid for.

It builds the run's settings from the trigger form's Params and the task group's constants, refuses conf
keys that are no setting, applies the rules that need the training stack, and checks what the chosen
backend needs: locally the storage root, the dataset and a W&B key; on Modal the cost (the worst case
against ``max_cost_usd``, and an estimate from steps when a throughput is known), the connection and the
deployed app. The run's ``max_parallel_folds`` must fit the deployment's hard cap. What passes is handed
on as plain values (XCom).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfold_cv import wandb_key
from kfold_cv.settings import SETTING_NAMES, CVSettings
from lerobot_kfold import cost, storage
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
    values: Mapping[str, Any],
    run_folder: str,
    *,
    app_name: str,
    modal_conn_id: str,
    parallel_cap: int,
) -> dict[str, Any]:
    """Check everything, then return what the later tasks read from XCom.

    :param parallel_cap: the deployment's hard cap on folds of one run at once.
    """
    cv = CVSettings.from_mapping(values)
    cv.check()
    parallel = folds_at_once(cv, parallel_cap)
    price = None
    if cv.compute.backend == "local":
        check_local(cv, run_folder)
        wandb_key.check_key_available(cv.run.training.wandb_mode, wandb_key.connection_id())
        print("cost: backend local trains on this deployment's CPUs: no GPU bill; folds report CPU-seconds")
    else:
        price = check_cost(cv)
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
        "max_parallel_folds": parallel,
        "stall_after_s": cv.compute.stall_after_s,
        "run_folder": run_folder,
        "fold_execution": fold_execution(cv, parallel, price),
        "prepare_kwargs": {
            "dataset_root": cv.run.dataset.dataset_root,
            "repo_id": cv.run.dataset.dataset_repo_id,
            "policy_type": cv.run.training.policy_type,
            # lerobot builds the policy for the dataset's features there (on the meta device).
            "training": flatten({"training": cv.run.training}),
            "sim_eval_episodes": cv.run.evaluation.sim_eval_episodes,
        },
    }


def fold_execution(cv: CVSettings, parallel: int, price: cost.GpuPrice | None) -> dict[str, Any]:
    """How each fold runs (``FoldTrainingConfig`` execution fields), decided here only where it can be.

    Local folds share the worker's cores among ``parallel`` folds (counted on the worker that trains
    them) and watch their own progress for a stall; Modal folds get their GPU's price, and their
    trigger watches for the stall.
    """
    local = cv.compute.backend == "local"
    return {
        "folds_sharing_cpus": parallel if local else None,
        "gpu_price": None if price is None else price.to_dict(),
        "stall_after_s": float(cv.compute.stall_after_s) if local and cv.compute.stall_after_s else None,
    }


def folds_at_once(cv: CVSettings, cap: int) -> int:
    """The run's ``max_parallel_folds`` (0: the cap), refused when it is above the deployment's cap."""
    wanted = cv.compute.max_parallel_folds
    if wanted > cap:
        raise ValueError(
            f"max_parallel_folds={wanted} is above this deployment's cap of {cap} folds of one run at once "
            "(the task group's max_parallel_folds, LEROBOT_KFOLD_MAX_PARALLEL_FOLDS for the shipped DAGs): "
            f"set max_parallel_folds to at most {cap}, or 0 for the cap"
        )
    return wanted or cap


def check_cost(cv: CVSettings) -> cost.GpuPrice:
    """Backend modal: log the worst case (and an estimate from steps when the pace is known) and refuse a
    run whose worst case is above ``max_cost_usd``. Returns the price each fold reports its cost at."""
    price = cost.price_table().price(cv.compute.gpu)
    candidates = cv.run.candidates()
    estimate = cost.estimate_run(
        cv.run.split.num_folds,
        len(candidates),
        cv.compute.timeout_s,
        price,
        max(candidate.settings.training.steps for candidate in candidates),
        cv.compute.expected_steps_per_s,
        extra_calls=1 if cv.run.selection.refit else 0,  # the chosen candidate's refit
    )
    print(f"cost: {estimate.describe()}")
    cap = cv.compute.max_cost_usd
    if cap and estimate.worst_case_usd > cap:
        raise ValueError(
            f"max_cost_usd={cap:g}: this run's worst case is ${estimate.worst_case_usd:,.2f} "
            f"({estimate.fold_calls} fold calls x timeout_s {cv.compute.timeout_s} s x {price.describe()}). "
            "Raise max_cost_usd (0: no cap), or lower timeout_s, the number of folds or of candidates, or "
            "choose a cheaper gpu."
        )
    return price


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
