"""``kfold_cross_validation``: the k-fold workflow as a task group any DAG can embed.

    validate -> prepare_dataset -> plan -> train_fold (mapped: "fold 0", ... or "chunk10 / fold 0", ...)
             -> aggregate -> plan_refit -> refit -> final_summary -> summary
                      (plan_refit, refit and final_summary are skipped unless refit is on)

- ``validate`` (worker, ``preflight``): every setting, the storage root, the dataset and a W&B key for
  ``wandb_mode='online'`` (local backend) or the Modal connection and deployed app (modal backend). It is
  the last point where a mistake costs nothing.
- ``prepare_dataset`` (Modal CPU or local): fetches a hub dataset once into storage, checks the
  policy's features, returns the episode metadata.
- ``plan`` (worker): the library's fold manifest, and one training config per fold.
- ``train_fold``: one ``ModalGPUOperator`` per (candidate, fold) (dynamic task mapping). At most the run's
  ``max_parallel_folds`` train at once (the trigger form's, within the factory's hard cap); the ones
  waiting for a turn reschedule themselves instead of deferring (see ``ModalGPUOperator``: deferred
  folds would count toward ``max_active_tis_per_dagrun`` and could deadlock a retry). ``gpu_pool`` caps
  folds across every run and DAG that names the pool. While a fold trains on Modal, the progress it
  publishes (``lerobot_kfold.progress``) is logged by its trigger into the fold's task log, with a
  warning after ``stall_after_s`` without progress. On the local backend a fold that logs to W&B reads
  its key from an Airflow connection (``wandb_key``).
- ``aggregate``: runs once every fold has finished, failed ones included; fails when fewer than
  ``min_successful_folds`` succeeded (never averages fewer folds silently); writes summary.json,
  folds.csv and the report next to the folds; returns the summary (means, stds, intervals, best fold,
  file locations; with several candidates the chosen one's, the paired comparison in it) as its XCom.
- ``plan_refit``, ``refit``, ``final_summary`` (skipped unless the run's ``refit`` is on): the chosen
  candidate's config on every non-hold-out episode, its training on the same operator as a fold, and
  the summary again with its final test.
- ``summary``: the group's last task, whatever ``refit`` is: its XCom is the run's summary (the final one
  when refit), and it emits the summary Asset's event when the group has one.

Every output lives under ``runs/<dag id>/<run id>/<group id>/`` in storage, so runs never overwrite
each other. Settings come from ``settings=`` (constants), from the DAG run's Params (``use_params=True``,
for the UI trigger form), or both (constants win).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, TaskGroup, get_current_context, task
from airflow.task.trigger_rule import TriggerRule

from kfold_cv import preflight
from kfold_cv.settings import SETTING_NAMES, CVSettings
from lerobot_kfold import storage
from lerobot_kfold.declared import split_known
from lerobot_kfold.progress import PROGRESS_DICT
from modal_gpu.hooks import ModalGPUHook
from modal_gpu.operators import RESCHEDULE_MIN_S, ModalGPUOperator

APP_MODULE = "lerobot_kfold.modal_app"
DEFAULT_APP_NAME = "lerobot-kfold"


@dataclass(frozen=True)
class GroupOptions:
    """The factory's own arguments, checked when the DAG is parsed (a wrong type fails there, not later).

    :param app_name: the deployed Modal app (``modal deploy include/lerobot_kfold/modal_app.py``).
    :param modal_conn_id: Airflow connection of type ``modal`` (backend modal).
    :param max_parallel_folds: the hard cap on folds of one run training at once
        (``max_active_tis_per_dagrun``, fixed when the DAG is parsed); a run's ``max_parallel_folds``
        setting may ask for fewer. On the local backend each fold takes an equal share of the CPU cores
        of the worker that trains it among the run's folds at once, counted there.
    :param fold_retries: Airflow retries of a fold task; a retry re-attaches to a running Modal call,
        and a fold resumes from its last checkpoint either way.
    :param deferrable: fold tasks wait in the triggerer (no worker slot per GPU job); prepare_dataset
        and aggregate are short CPU jobs and always poll from the worker.
    :param poll_interval: seconds between status checks of a Modal call.
    :param summary_asset: an Asset updated with the summary, so downstream DAGs can react.
    :param gpu_pool: an Airflow pool the fold tasks take a slot of, capping folds across every run and
        DAG that names it. Create it with deferred tasks counted (``airflow pools set NAME SLOTS DESC
        --include-deferred``), or a deferred fold's GPU would not hold its slot; a fold task naming a
        pool that does not exist is never scheduled.
    """

    group_id: str = "kfold_cv"
    app_name: str = DEFAULT_APP_NAME
    modal_conn_id: str = ModalGPUHook.default_conn_name
    max_parallel_folds: int = 4
    fold_retries: int = 1
    deferrable: bool = True
    poll_interval: float = 15.0
    summary_asset: Asset | None = None
    gpu_pool: str | None = None

    def __post_init__(self) -> None:
        for name in ("group_id", "app_name", "modal_conn_id"):
            _expect(name, getattr(self, name), isinstance(getattr(self, name), str) and getattr(self, name))
        _expect("max_parallel_folds", self.max_parallel_folds, _is_int(self.max_parallel_folds, minimum=1))
        _expect("fold_retries", self.fold_retries, _is_int(self.fold_retries, minimum=0))
        _expect("deferrable", self.deferrable, isinstance(self.deferrable, bool))
        number = isinstance(self.poll_interval, int | float) and not isinstance(self.poll_interval, bool)
        _expect("poll_interval", self.poll_interval, number and 0 < self.poll_interval < 3600)
        asset = self.summary_asset is None or isinstance(self.summary_asset, Asset)
        _expect("summary_asset", self.summary_asset, asset, "an airflow.sdk.Asset or None")
        pool = self.gpu_pool is None or (isinstance(self.gpu_pool, str) and self.gpu_pool.strip())
        _expect("gpu_pool", self.gpu_pool, pool, "the name of an Airflow pool, or None")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _expect(name: str, value: Any, ok: Any, what: str | None = None) -> None:
    if not ok:
        wanted = what or {
            "max_parallel_folds": "an integer >= 1",
            "fold_retries": "an integer >= 0",
            "deferrable": "True or False",
            "poll_interval": "a number of seconds in (0, 3600)",
        }.get(name, "a non-empty string")
        raise ValueError(f"kfold_cross_validation: {name} must be {wanted}, got {value!r}")


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
    gpu_pool: str | None = None,
) -> TaskGroup:
    """Add the k-fold task group to the DAG being defined and return it.

    :param settings: run settings as constants (they override Params); see ``CVSettings``.
    :param use_params: read the settings from the DAG run's Params (see ``kfold_params``).

    The other arguments are described on :class:`GroupOptions`.
    """
    options = GroupOptions(
        group_id,
        app_name,
        modal_conn_id,
        max_parallel_folds,
        fold_retries,
        deferrable,
        poll_interval,
        summary_asset,
        gpu_pool,
    )
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"kfold_cross_validation: settings must be a dict, got {type(settings).__name__}")
    constants = dict(settings or {})
    split_known(constants, SETTING_NAMES)
    if not use_params:
        CVSettings.from_mapping(constants)  # fail at parse time for constants-only groups

    with TaskGroup(group_id=group_id, tooltip="k-fold cross-validation of a LeRobot policy") as group:
        wiring = _Wiring(group, options)
        validated = _validate_task(options, constants, use_params)()
        prepared = wiring.operator(
            task_id="prepare_dataset",
            function_name="prepare_dataset",
            function_kwargs=validated["prepare_kwargs"],
            local_callable=f"{APP_MODULE}:prepare_dataset",
            deferrable=False,  # a short CPU job: polling beats a trip through the triggerer
        )
        planned = _plan_task(options)(
            validated["settings"], validated["run_folder"], prepared.output, validated["fold_execution"]
        )
        trained = _train_folds(wiring, planned)
        aggregated = _aggregate(wiring, planned, trained.output)
        # all_done_min_one_success over plan and the folds: after every fold, failed ones included, but only
        # when planning succeeded. Its inputs all come from plan, so a failed plan (or validate) leaves it
        # upstream_failed instead of running into a missing XCom.
        trained >> aggregated
        final = _refit(wiring, validated, planned, aggregated)
        _summary_task(summary_asset)(aggregated.output, final.output)
    return group


class _Wiring:
    """What every ModalGPUOperator of one group shares: the app, the connection, the validated backend."""

    def __init__(self, group: TaskGroup, options: GroupOptions) -> None:
        self.options = options
        self.validate_id = f"{group.group_id}.validate" if group.group_id else "validate"
        self.train_id = f"{group.group_id}.train_fold" if group.group_id else "train_fold"

    def pulled(self, key: str) -> str:
        """A template for one value the validate task pushed."""
        return f"{{{{ ti.xcom_pull(task_ids='{self.validate_id}', key='{key}') }}}}"

    def common(self) -> dict[str, Any]:
        return {
            "app_name": self.options.app_name,
            "modal_conn_id": self.options.modal_conn_id,
            "backend": self.pulled("backend"),
            "poll_interval": self.options.poll_interval,
        }

    def operator(self, **kwargs: Any) -> ModalGPUOperator:
        return ModalGPUOperator(**self.common(), **kwargs)


def _validate_task(options: GroupOptions, constants: dict[str, Any], use_params: bool) -> Any:
    @task(task_id="validate", multiple_outputs=True)
    def validate() -> dict[str, Any]:
        """Every check before any spend; the run's settings and folder for the tasks after it."""
        context = get_current_context()
        dag_run = context["dag_run"]
        values = preflight.run_values(context["params"], dag_run.conf, constants, use_params)
        run_folder = (
            f"{storage.run_folder(dag_run.dag_id, dag_run.run_id)}/{storage.safe_name(options.group_id)}"
        )
        return preflight.validate_run(
            values,
            run_folder,
            app_name=options.app_name,
            modal_conn_id=options.modal_conn_id,
            parallel_cap=options.max_parallel_folds,
        )

    return validate


def _plan_task(options: GroupOptions) -> Any:
    @task(task_id="plan")
    def plan(
        settings: dict[str, Any], run_folder: str, dataset: dict[str, Any], execution: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """One training config per fold (the mapped list); the aggregation inputs as more XComs.

        ``execution`` (from validate) says how the folds run; what follows from the machine a fold runs
        on (its torch threads) is decided on that machine.
        """
        from lerobot_kfold import jobs

        context = get_current_context()
        cv = CVSettings.from_mapping(settings)
        planned = jobs.plan_run(
            cv.run,
            jobs.PreparedDataset.from_dict(dataset),
            run_folder,
            f"{context['dag_run'].dag_id}/{context['dag_run'].run_id}",
            **execution,
        )
        print(planned.describe())
        context["ti"].xcom_push(key="run_folder", value=run_folder)
        context["ti"].xcom_push(key="manifest", value=planned.plan.to_dict())
        context["ti"].xcom_push(key="aggregation", value=dataclasses.asdict(planned.aggregation))
        context["ti"].xcom_push(key="selection", value=dataclasses.asdict(planned.selection))
        return [{"config": fold.to_dict()} for fold in planned.folds]

    return plan


def _train_folds(wiring: _Wiring, planned: Any) -> Any:
    """One mapped ModalGPUOperator per fold, at most ``max_parallel_folds`` of a run at once."""
    options = wiring.options
    return ModalGPUOperator.partial(
        task_id="train_fold",
        function_name="train_fold",
        local_callable="kfold_cv.local_folds:train_fold",  # the same body, W&B key from a connection
        gpu=wiring.pulled("gpu"),
        timeout=wiring.pulled("timeout_s"),
        # "fold 3", or "chunk10 / fold 3" when the run compares candidates (FoldTrainingConfig.label).
        map_index_template=(
            "{% set fold = task.function_kwargs['config'] %}"
            "{{ fold['candidate'] ~ ' / ' if fold['candidate'] else '' }}fold {{ fold['fold_id'] }}"
        ),
        max_active_tis_per_dagrun=options.max_parallel_folds,
        run_concurrency=wiring.pulled("max_parallel_folds"),
        turn_wait_s=max(options.poll_interval, RESCHEDULE_MIN_S),  # each check starts a task process
        **_fold_watch(wiring),
        retries=options.fold_retries,
        # A retry re-attaches to the call or resumes from the last checkpoint: no need to wait long.
        retry_delay=timedelta(seconds=30),
        deferrable=options.deferrable,
        **wiring.common(),
    ).expand(function_kwargs=planned)


def _fold_watch(wiring: _Wiring) -> dict[str, Any]:
    """What every fold call (the folds and the refit) shares: its progress in the task log, a stall
    warning, and a slot of the deployment's GPU pool when there is one."""
    return {
        # The fold publishes its progress under its storage folder (lerobot_kfold.progress.channel_key).
        "progress_dict": PROGRESS_DICT,
        "progress_key": "{{ task.function_kwargs['config']['output_dir'] }}",
        "stall_after_s": wiring.pulled("stall_after_s"),
        **({"pool": wiring.options.gpu_pool} if wiring.options.gpu_pool else {}),
    }


def _aggregate(wiring: _Wiring, planned: Any, fold_results: Any, **final: Any) -> ModalGPUOperator:
    """The summary (``aggregate``), or with ``final`` (the refit's result) the summary with its test."""
    return wiring.operator(
        task_id="final_summary" if final else "aggregate",
        function_name="aggregate",
        # The folds' XCom results say which folds Airflow counts as succeeded: a fold a user marked
        # failed stays failed in the summary even if its call wrote a result before it was stopped.
        function_kwargs={
            "run_folder": planned["run_folder"],
            "plan": planned["manifest"],
            "aggregation": planned["aggregation"],
            "run_id": "{{ dag.dag_id }}/{{ run_id }}",
            "fold_results": fold_results,
            "selection": planned["selection"],
            **final,
        },
        local_callable=f"{APP_MODULE}:aggregate",
        # The first summary runs after every fold, failed ones included; the final one after the refit.
        trigger_rule=TriggerRule.ALL_SUCCESS if final else TriggerRule.ALL_DONE_MIN_ONE_SUCCESS,
        deferrable=False,  # a short CPU job, like prepare_dataset
    )


def _refit(wiring: _Wiring, validated: Any, planned: Any, aggregated: ModalGPUOperator) -> ModalGPUOperator:
    """plan_refit -> refit (the fold operator, once) -> final_summary; skipped unless refit is on."""
    options = wiring.options
    refit_plan = _plan_refit_task(wiring)(
        validated["settings"],
        planned["run_folder"],
        planned["manifest"],
        aggregated.output,
        validated["fold_execution"],
    )
    refitted = wiring.operator(
        task_id="refit",
        function_name="train_fold",
        function_kwargs=refit_plan["kwargs"],
        local_callable="kfold_cv.local_folds:train_fold",
        gpu=wiring.pulled("gpu"),
        timeout=wiring.pulled("timeout_s"),
        **_fold_watch(wiring),
        retries=options.fold_retries,
        retry_delay=timedelta(seconds=30),
        deferrable=options.deferrable,
    )
    # The folds' results as aggregate counted them, passed on by plan_refit: a direct dependency on the
    # folds would run final_summary (all_done) even when the refit failed or was skipped.
    return _aggregate(wiring, planned, refit_plan["fold_results"], refit_result=refitted.output)


def _plan_refit_task(wiring: _Wiring) -> Any:
    @task(task_id="plan_refit", multiple_outputs=True)
    def plan_refit(
        settings: dict[str, Any],
        run_folder: str,
        manifest: dict[str, Any],
        summary: dict[str, Any],
        execution: dict[str, Any],
    ) -> dict[str, Any]:
        """The chosen candidate's training on every non-hold-out episode; skipped unless refit is on.

        ``execution`` (from validate) as for the folds, except that the refit trains alone.
        """
        from airflow.sdk.exceptions import AirflowSkipException

        from lerobot_kfold import jobs
        from lerobot_kfold.splits import FoldPlan

        cv = CVSettings.from_mapping(settings)
        if not cv.run.selection.refit:
            raise AirflowSkipException("refit is off: the summary of aggregate is the run's summary")
        context = get_current_context()
        run = context["dag_run"]
        alone = {**execution, "folds_sharing_cpus": 1 if execution.get("folds_sharing_cpus") else None}
        config = jobs.plan_refit(
            cv.run, FoldPlan.from_dict(manifest), summary, run_folder, f"{run.dag_id}/{run.run_id}", **alone
        )
        print(f"{config.label}: {len(config.train_episodes)} episodes, {len(config.val_episodes)} held out")
        fold_results = context["ti"].xcom_pull(task_ids=wiring.train_id)
        return {"kwargs": {"config": config.to_dict()}, "fold_results": list(fold_results or [])}

    return plan_refit


def _summary_task(summary_asset: Asset | None) -> Any:
    # none_failed_min_one_success: after aggregate, and after final_summary unless it was skipped (refit
    # off); a failed refit fails it, so a DAG that continues after the group never sees a half result.
    @task(
        task_id="summary",
        outlets=[] if summary_asset is None else [summary_asset],
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    )
    def summary(first: dict[str, Any], final: dict[str, Any] | None) -> dict[str, Any]:
        """The run's summary (the final one when refit); the Asset event with its headline numbers."""
        chosen = final or first
        if summary_asset is not None:
            get_current_context()["outlet_events"][summary_asset].extra = headline(chosen)
        return chosen

    return summary


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a downstream DAG decides on: metric means and intervals, the best fold, files."""
    metrics = {
        name: {key: stats.get(key) for key in ("mean", "std", "ci_low", "ci_high", "n")}
        for name, stats in summary.get("metrics", {}).items()
    }
    selection = (summary.get("comparison") or {}).get("selection") or {}
    final = summary.get("final_test") or {}
    return {
        "run_id": summary.get("run_id"),
        "totals": summary.get("totals"),
        "metrics": metrics,
        "best_fold": summary.get("best_fold"),
        "cost": summary.get("cost"),
        "summary_json": summary.get("outputs", {}).get("summary_json"),
        # The chosen candidate (comparisons), the rule that chose it, and the refit model to ship.
        "candidate": summary.get("candidate"),
        "selection_rule": selection.get("rule"),
        "final_test": {key: final.get(key) for key in ("metrics", "success", "note")} if final else None,
        "model_path": final.get("model_path"),
    }
