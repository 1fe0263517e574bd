"""``run_concurrency``: mapped instances of one run take turns, lowest map index first, by rescheduling.

The sibling states come from a stand-in ``ti.get_task_states`` (what the Task SDK asks Airflow); the
Modal side is the real client against the fake control plane. The real-Airflow proof (two runs at once,
a fold in ``up_for_retry``, calls counted from the plane's log) is ``tests/e2e/test_progress_cost.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred

from modal_gpu.operators import ModalGPUOperator
from tests.plugins.modal_gpu.support import APP
from tests.plugins.modal_gpu.test_operators import InMemoryTaskStateStore

TASK = "kfold_cv.train_fold"
RUN = "manual__2026-12-01"


class SiblingsTI:
    """``context["ti"]`` of mapped instance ``map_index``, seeing its siblings' states."""

    def __init__(self, map_index: int, states: dict[int, str | None]) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag", TASK, RUN, map_index
        self.states = states
        self.pushed: list[tuple[str, Any]] = []

    def get_task_states(self, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict[str, Any]:
        assert (dag_id, task_ids, run_ids) == (self.dag_id, [TASK], [RUN])
        return {RUN: {f"{TASK}_{index}": state for index, state in self.states.items()}}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))


@pytest.fixture
def make_operator() -> Iterator[Callable[..., ModalGPUOperator]]:
    built: list[ModalGPUOperator] = []

    def make(**kwargs: Any) -> ModalGPUOperator:
        options = {
            "task_id": TASK,
            "app_name": APP,
            "function_name": "echo",
            "poll_interval": 0.1,
            "run_concurrency": "1",  # rendered templates are text
            "max_active_tis_per_dagrun": 4,
            "turn_wait_s": 16.0,
            **kwargs,
        }
        built.append(operator := ModalGPUOperator(**options))
        return operator

    yield make
    for operator in built:
        hook = operator.__dict__.get("hook")
        if hook is not None and hook._client is not None:
            hook._client.close()


def context_for(
    map_index: int, states: dict[int, str | None], store: InMemoryTaskStateStore | None = None
) -> dict[str, Any]:
    return {"ti": SiblingsTI(map_index, states), "task_state_store": store or InMemoryTaskStateStore()}


class TestWhoWaits:
    @pytest.mark.parametrize(
        ("states", "ahead"),
        [
            pytest.param({0: "success", 1: "failed", 2: "running"}, [], id="all-ahead-finished"),
            pytest.param({0: "deferred", 2: "running"}, [0], id="one-ahead-training"),
            pytest.param({0: "up_for_retry", 2: "running"}, [0], id="a-retry-keeps-its-turn"),
            pytest.param({0: "up_for_reschedule", 1: None, 2: "running"}, [0, 1], id="waiting-ones-count"),
            pytest.param({0: "upstream_failed", 1: "skipped", 2: "running", 3: "deferred"}, [], id="behind"),
        ],
    )
    def test_unfinished_instances_with_a_lower_map_index_are_ahead(self, make_operator, states, ahead):
        assert make_operator()._unfinished_before(SiblingsTI(2, states)) == ahead

    def test_an_instance_with_a_turn_free_goes_on(self, make_operator):
        operator = make_operator(run_concurrency="2", backend="local", local_callable=lambda **kw: "trained")

        assert operator.execute(context_for(2, {0: "deferred", 1: "success", 2: "running"})) == "trained"

    def test_an_instance_without_a_turn_reschedules_instead_of_deferring(self, make_operator):
        operator = make_operator(backend="local", local_callable=lambda **kw: pytest.fail("must wait"))

        with pytest.raises(AirflowRescheduleException) as waited:
            operator.execute(context_for(1, {0: "up_for_retry", 1: "running"}))

        wait = (waited.value.reschedule_date - datetime.now(UTC)).total_seconds()
        assert 14 < wait <= 16.0

    def test_a_turn_is_never_checked_sooner_than_airflow_can_take(self, make_operator):
        with pytest.raises(ValueError, match="turn_wait_s must be at least 15"):
            make_operator(turn_wait_s=5.0)

    @pytest.mark.parametrize("limit", [None, "", "None", "0"])
    def test_no_limit_means_no_waiting(self, make_operator, limit):
        operator = make_operator(run_concurrency=limit, backend="local", local_callable=lambda **kw: "ok")

        assert operator.execute(context_for(3, {0: "running", 1: "running", 2: "running"})) == "ok"

    def test_a_limit_not_below_airflows_own_cap_is_left_to_airflow(self, make_operator):
        operator = make_operator(
            run_concurrency="4",
            max_active_tis_per_dagrun=4,
            backend="local",
            local_callable=lambda **kw: "ok",
        )

        assert operator.execute(context_for(9, dict.fromkeys(range(9), "running"))) == "ok"

    def test_an_unmapped_task_never_waits(self, make_operator):
        operator = make_operator(backend="local", local_callable=lambda **kw: "ok")

        assert operator.execute(context_for(-1, {0: "running"})) == "ok"


@pytest.mark.usefixtures("modal_connection")
class TestOnModal:
    def test_waiting_spawns_nothing_and_a_retry_reattaches_whatever_is_ahead(self, plane, make_operator):
        kwargs = {"function_name": "sleep", "function_kwargs": {"seconds": 3.0, "value": "slow"}}
        spawned = len(plane.spawns())
        with pytest.raises(AirflowRescheduleException):
            make_operator(**kwargs).execute(context_for(1, {0: "deferred", 1: "running"}))
        assert len(plane.spawns()) == spawned, "no GPU is started while waiting for a turn"

        store = InMemoryTaskStateStore()
        with pytest.raises(TaskDeferred):
            make_operator(**kwargs).execute(context_for(1, {0: "success", 1: "running"}, store))
        call_id = store.get(ModalGPUOperator.external_id_key)
        # Its trigger failed, say: the retry finds the call still running and re-attaches, even though an
        # instance ahead is unfinished again (cleared by a user): a live call is never abandoned.
        with pytest.raises(TaskDeferred) as deferred:
            make_operator(**kwargs).execute(context_for(1, {0: "scheduled", 1: "running"}, store))
        assert deferred.value.trigger.call_id == call_id
        assert len(plane.spawns()) == spawned + 1
