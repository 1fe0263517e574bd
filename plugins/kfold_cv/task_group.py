"""``kfold_cross_validation``: the k-fold workflow as a task group any DAG can embed.

    validate -> prepare_dataset -> plan -> train_fold (mapped: "fold 0", "fold 1", ...) -> aggregate

- ``validate`` (worker): every setting, the storage root, the dataset and a W&B key for
  ``wandb_mode='online'`` (local backend) or the Modal connection and deployed app (modal backend). It is
  the last point where a mistake costs nothing.
- ``prepare_dataset`` (Modal CPU or local): fetches a hub dataset once into storage, checks the
  policy's features, returns the episode metadata.
- ``plan`` (worker): the library's fold manifest, and one training config per fold.
- ``train_fold``: one ``ModalGPUOperator`` per fold (dynamic task mapping), concurrency capped per run.
  On the local backend a fold that logs to W&B reads its key from an Airflow connection (``wandb_key``).
- ``aggregate``: runs once every fold has finished, failed ones included; fails when fewer than
  ``min_successful_folds`` succeeded (never averages fewer folds silently); writes summary.json,
  folds.csv and the report next to the folds; returns the summary (means, stds, intervals, best fold,
  file locations) as its XCom.

Every output lives under ``runs/<dag id>/<run id>/<group id>/`` in storage, so runs never overwrite
each other. Settings come from ``settings=`` (constants), from the DAG run's Params (``use_params=True``,
for the UI trigger form), or both (constants win).
"""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, TaskGroup, get_current_context, task
from airflow.task.trigger_rule import TriggerRule

from kfold_cv import wandb_key
from kfold_cv.settings import SETTING_NAMES, CVSettings
from lerobot_kfold import storage
from lerobot_kfold.declared import split_known
from modal_gpu.hooks import ModalGPUHook
from modal_gpu.operators import ModalGPUOperator

APP_MODULE = "lerobot_kfold.modal_app"
DEFAULT_APP_NAME = "lerobot-kfold"


def kfold_cross_validation(
    group_id: str = "kfold_cv",
    *,
    settings: dict[str, Any] | None = None,
    use_params: bool = False,
    app_name: str = DEFAULT_APP_NAME,
    modal_conn_id: str = ModalGPUHook.default_conn_name,
    max_parallel_folds: int = 4,
    fold_retries: int = 1,
    deferrable: bool = True,
    poll_interval: float = 15.0,
    summary_asset: Asset | None = None,
) -> TaskGroup:
    """Add the k-fold task group to the DAG being defined and return it.

    :param settings: ``CVSettings`` fields as constants (they override Params).
    :param use_params: read ``CVSettings`` fields from the DAG run's Params (see ``kfold_params``).
    :param app_name: the deployed Modal app (``modal deploy include/lerobot_kfold/modal_app.py``).
    :param modal_conn_id: Airflow connection of type ``modal`` (backend modal).
    :param max_parallel_folds: folds of one run that train at once (``max_active_tis_per_dagrun``;
        Airflow fixes it when the DAG is parsed). On the local backend each fold gets
        ``cpu_count // max_parallel_folds`` torch threads.
    :param deferrable: fold tasks wait in the triggerer (no worker slot per GPU job); prepare_dataset
        and aggregate are short CPU jobs and always poll from the worker.
    :param fold_retries: Airflow retries of a fold task; a retry re-attaches to a running Modal call,
        and a fold resumes from its last checkpoint either way.
    :param summary_asset: an Asset updated with the summary, so downstream DAGs can react.
    """
    if max_parallel_folds < 1:
        raise ValueError(f"max_parallel_folds must be >= 1, got {max_parallel_folds}")
    constants = dict(settings or {})
    split_known(constants, SETTING_NAMES)
    if not use_params:
        CVSettings.from_mapping(constants)  # fail at parse time for constants-only groups

    with TaskGroup(group_id=group_id, tooltip="k-fold cross-validation of a LeRobot policy") as group:
        validate_id = f"{group.group_id}.validate" if group.group_id else "validate"

        def pulled(key: str) -> str:
            return f"{{{{ ti.xcom_pull(task_ids='{validate_id}', key='{key}') }}}}"

        common: dict[str, Any] = {
            "app_name": app_name,
            "modal_conn_id": modal_conn_id,
            "backend": pulled("backend"),
            "poll_interval": poll_interval,
        }

        @task(task_id="validate", multiple_outputs=True)
        def validate() -> dict[str, Any]:
            context = get_current_context()
            values: dict[str, Any] = {}
            if use_params:
                # A conf key that is no setting (a typo such as "K") would otherwise be dropped silently.
                split_known(context["dag_run"].conf or {}, SETTING_NAMES, what="conf key")
                values.update({k: v for k, v in context["params"].items() if k in SETTING_NAMES})
            values.update(constants)
            cv = CVSettings.from_mapping(values)
            cv.check()
            dag_run = context["dag_run"]
            run_folder = f"{storage.run_folder(dag_run.dag_id, dag_run.run_id)}/{storage.safe_name(group_id)}"
            if cv.compute.backend == "local":
                _check_local(cv, run_folder)
                wandb_key.check_key_available(cv.run.training.wandb_mode, wandb_key.connection_id())
            else:
                _check_modal(app_name, modal_conn_id)
            print(f"k-fold settings: {cv.to_dict()}")
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
                },
            }

        validated = validate()

        prepared = ModalGPUOperator(
            task_id="prepare_dataset",
            function_name="prepare_dataset",
            function_kwargs=validated["prepare_kwargs"],
            local_callable=f"{APP_MODULE}:prepare_dataset",
            deferrable=False,  # a short CPU job: polling beats a trip through the triggerer
            **common,
        )

        @task(task_id="plan")
        def plan(settings: dict[str, Any], run_folder: str, dataset: dict[str, Any]) -> list[dict[str, Any]]:
            """One training config per fold (the mapped list); the aggregation inputs as a second XCom."""
            from lerobot_kfold import jobs

            context = get_current_context()
            cv = CVSettings.from_mapping(settings)
            threads = (
                max(1, (os.cpu_count() or 1) // max_parallel_folds) if cv.compute.backend == "local" else None
            )
            planned = jobs.plan_run(
                cv.run,
                jobs.PreparedDataset.from_dict(dataset),
                run_folder,
                f"{context['dag_run'].dag_id}/{context['dag_run'].run_id}",
                torch_threads=threads,
            )
            print(planned.describe())
            context["ti"].xcom_push(key="manifest", value=planned.plan.to_dict())
            context["ti"].xcom_push(key="aggregation", value=dataclasses.asdict(planned.aggregation))
            return [{"config": fold.to_dict()} for fold in planned.folds]

        planned = plan(validated["settings"], validated["run_folder"], prepared.output)

        trained = ModalGPUOperator.partial(
            task_id="train_fold",
            function_name="train_fold",
            local_callable="kfold_cv.local_folds:train_fold",  # the same body, W&B key from a connection
            gpu=pulled("gpu"),
            timeout=pulled("timeout_s"),
            map_index_template="fold {{ task.function_kwargs['config']['fold_id'] }}",
            max_active_tis_per_dagrun=max_parallel_folds,
            retries=fold_retries,
            # A retry re-attaches to the call or resumes from the last checkpoint: no need to wait long.
            retry_delay=timedelta(seconds=30),
            deferrable=deferrable,
            **common,
        ).expand(function_kwargs=planned)

        aggregated = ModalGPUOperator(
            task_id="aggregate",
            function_name="aggregate",
            # The folds' XCom results say which folds Airflow counts as succeeded: a fold a user marked
            # failed stays failed in the summary even if its call wrote a result before it was stopped.
            function_kwargs={
                "run_folder": validated["run_folder"],
                "plan": planned["manifest"],
                "aggregation": planned["aggregation"],
                "run_id": "{{ dag.dag_id }}/{{ run_id }}",
                "fold_results": trained.output,
            },
            local_callable=f"{APP_MODULE}:aggregate",
            trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS,
            deferrable=False,  # a short CPU job, like prepare_dataset
            **common,
        )
        # all_done_min_one_success: after every fold, failed ones included, but only when planning itself
        # succeeded (plan is a direct upstream through its XCom); a failed validate skips it.
        trained >> aggregated

        if summary_asset is not None:

            @task(task_id="publish_summary", outlets=[summary_asset])
            def publish_summary(summary: dict[str, Any]) -> None:
                """Emit the summary asset event, with the headline numbers in its extra."""
                context = get_current_context()
                context["outlet_events"][summary_asset].extra = headline(summary)

            publish_summary(aggregated.output)
    return group


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a downstream DAG decides on: metric means and intervals, the best fold, files."""
    metrics = {
        name: {key: stats.get(key) for key in ("mean", "std", "ci_low", "ci_high", "n")}
        for name, stats in summary.get("metrics", {}).items()
    }
    return {
        "run_id": summary.get("run_id"),
        "totals": summary.get("totals"),
        "metrics": metrics,
        "best_fold": summary.get("best_fold"),
        "summary_json": summary.get("outputs", {}).get("summary_json"),
    }


def _check_local(cv: CVSettings, run_folder: str) -> None:
    from lerobot_kfold import dataset_info

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
        dataset = dataset_info.check_dataset_root(storage.resolve(cv.run.dataset.dataset_root))
        dataset_info.check_policy_features(dataset, cv.run.training.policy_type)


def _check_modal(app_name: str, modal_conn_id: str) -> None:
    """The connection resolves and the app's functions are deployed: a missing deploy fails here."""
    import modal

    hook = ModalGPUHook(modal_conn_id=modal_conn_id)
    for name in ("prepare_dataset", "train_fold", "aggregate"):
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
