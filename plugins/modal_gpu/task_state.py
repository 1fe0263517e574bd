"""Whether anyone will come back for a Modal call when its task is stopped: the task instance's state.

Airflow stops a task (or its trigger) without saying why. A user marking it failed or success leaves no
one to wait for the call, so it must be cancelled (no GPU keeps running unseen). A clear, a retry or a
new try started by Airflow itself (a lost heartbeat, a status report that timed out under load) comes
back, and a ``durable`` task re-attaches to the call through its ``task_state_store``: cancelling would
pay for the GPU job twice. The task instance's state, read through the supervisor's channel to the
execution API, tells the two apart: only a finished state means no one comes back.
"""

from __future__ import annotations

from typing import Any

# Task-instance states after which a stopped task's call has no one left to wait for it.
FINISHED_STATES = {"failed", "success", "skipped", "upstream_failed", "removed"}
UNKNOWN = "unknown"


def someone_comes_back(state: str) -> bool:
    """A known, unfinished state: the task runs again and can re-attach (unknown counts as no)."""
    return state != UNKNOWN and state not in FINISHED_STATES


def _request(ti: Any) -> Any:
    from airflow.sdk.execution_time.comms import GetTaskStates

    return GetTaskStates(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index)


def _state_in(response: Any, ti: Any) -> str:
    states = response.task_states.get(ti.run_id, {})
    key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
    if key not in states:
        return UNKNOWN
    state = states[key]
    return str(getattr(state, "value", state))


def read(ti: Any, log: Any) -> str:
    """The state of ``ti``'s task instance now (from a task process), or ``UNKNOWN``."""
    if ti is None:
        return UNKNOWN
    try:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        return _state_in(SUPERVISOR_COMMS.send(_request(ti)), ti)
    except Exception:  # no supervisor channel (dag.test), or the API did not answer
        log.debug("could not read the task state", exc_info=True)
        return UNKNOWN


async def aread(ti: Any, log: Any) -> str:
    """:func:`read` for a trigger in the triggerer's event loop."""
    if ti is None:
        return UNKNOWN
    try:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        return _state_in(await SUPERVISOR_COMMS.asend(_request(ti)), ti)
    except Exception:
        log.debug("could not read the task state", exc_info=True)
        return UNKNOWN
