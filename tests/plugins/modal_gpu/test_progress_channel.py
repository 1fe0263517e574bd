"""A job's progress channel (a key of a named ``modal.Dict``) in the one polling loop and the trigger.

The loop's logic runs against scripted answers and a fake clock; reading the Dict, and the trigger
logging what a job published, run against the fake control plane with the real modal client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import modal
import pytest

from modal_gpu.hooks import CallStatus, ModalGPUHook, ProgressChannel, progress_text
from modal_gpu.triggers import ModalFunctionCallTrigger
from tests.plugins.modal_gpu.support import APP, CONN_LOGIN, CONN_PASSWORD
from tests.plugins.modal_gpu.test_hooks import RecordingLog, run_wait

pytestmark = pytest.mark.usefixtures("modal_connection")
WAITS = ["wait", "await_done"]
CHANNEL = ProgressChannel("progress-board", "runs/r/folds/fold_000", stall_after_s=60.0)


def record(step: int) -> dict[str, Any]:
    return {"step": step, "line": f"fold 0: step {step}/100"}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModalGPUHook, list, list]]:
    """A hook whose status checks and progress reads answer from two scripts, no network."""
    hook = ModalGPUHook()
    statuses: list[CallStatus] = []
    published: list[Any] = []

    def read(channel: ProgressChannel) -> Any:
        value = published.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    async def aread(channel: ProgressChannel) -> Any:
        return read(channel)

    async def apoll(call_id: str) -> CallStatus:
        return statuses.pop(0)

    monkeypatch.setattr(hook, "poll", lambda call_id: statuses.pop(0))
    monkeypatch.setattr(hook, "apoll", apoll)
    monkeypatch.setattr(hook, "read_progress", read)
    monkeypatch.setattr(hook, "aread_progress", aread)
    yield hook, statuses, published
    assert statuses == [] and published == [], "the loop stopped before the scripts ran out"


def running(n: int) -> list[CallStatus]:
    return [CallStatus("fc-1", "running")] * n


@pytest.mark.parametrize("twin", WAITS)
class TestTheLoopLogsProgress:
    def test_each_new_value_is_logged_once_and_the_last_one_too(self, scripted, clock, twin):
        hook, statuses, published = scripted
        statuses += [*running(4), CallStatus("fc-1", "success", result=1)]
        published += [None, record(10), record(10), record(20), record(30)]
        log = RecordingLog()

        run_wait(hook, twin, "fc-1", 30.0, first_delay=30.0, log=log, progress=CHANNEL)

        infos = [message for level, message in log.lines if level == "info"]
        assert infos == ["fold 0: step 10/100", "fold 0: step 20/100", "fold 0: step 30/100"]
        assert not any("still running (" in message for _, message in log.lines), "progress replaces notes"

    def test_a_stall_is_warned_after_the_limit_and_again_every_limit_while_it_lasts(
        self, scripted, clock, twin
    ):
        hook, statuses, published = scripted
        # A check every 30 s: progress at 0 s, then nothing new for 150 s, then new progress.
        statuses += [*running(7), CallStatus("fc-1", "success")]
        published += [record(10)] * 6 + [record(20), record(20)]
        log = RecordingLog()

        run_wait(hook, twin, "fc-1", 30.0, first_delay=30.0, log=log, progress=CHANNEL)

        warnings = [message for level, message in log.lines if level == "warning"]
        assert warnings == [
            "Modal call fc-1: no progress for 60 s (last: fold 0: step 10/100). It is not stopped; "
            "mark the task failed to cancel it.",
            "Modal call fc-1: no progress for 120 s (last: fold 0: step 10/100). It is not stopped; "
            "mark the task failed to cancel it.",
        ]
        assert [m for level, m in log.lines if level == "info"][-1] == "fold 0: step 20/100"

    def test_a_call_that_never_publishes_is_reported_as_well(self, scripted, clock, twin):
        hook, statuses, published = scripted
        statuses += [*running(3), CallStatus("fc-1", "success")]
        published += [None] * 4
        log = RecordingLog()

        run_wait(hook, twin, "fc-1", 30.0, first_delay=30.0, log=log, progress=CHANNEL)

        warnings = [message for level, message in log.lines if level == "warning"]
        assert len(warnings) == 1 and "(last: nothing published yet)" in warnings[0]

    def test_an_unreadable_channel_is_said_once_and_the_call_is_still_waited_on(self, scripted, clock, twin):
        hook, statuses, published = scripted
        statuses += [*running(1), CallStatus("fc-1", "success", result="done")]
        published += [RuntimeError("Dict gone")] * 2
        log = RecordingLog()

        status = run_wait(hook, twin, "fc-1", 30.0, first_delay=30.0, log=log, progress=CHANNEL)

        assert status.result == "done"
        warnings = [message for level, message in log.lines if level == "warning"]
        assert warnings == ["progress of Modal call fc-1 unavailable: RuntimeError: Dict gone"]


class TestProgressText:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            ({"line": "fold 1: step 5/9", "step": 5}, "fold 1: step 5/9"),
            ({"step": 5}, "{'step': 5}"),
            (7, "7"),
        ],
    )
    def test_a_values_line_or_its_text(self, value, text):
        assert progress_text(value) == text

    def test_a_channel_needs_a_name_and_key_and_a_non_negative_stall_limit(self):
        with pytest.raises(ValueError, match="Dict name and a key"):
            ProgressChannel("", "k")
        with pytest.raises(ValueError, match="stall_after_s"):
            ProgressChannel("d", "k", stall_after_s=-1)


def _board(name: str) -> modal.Dict:
    client = modal.Client.from_credentials(CONN_LOGIN, CONN_PASSWORD)
    return modal.Dict.from_name(name, create_if_missing=True, client=client)


class TestReadingTheDict:
    def test_the_hook_reads_what_a_job_put_both_ways_and_none_before(self, plane):
        hook = ModalGPUHook()
        channel = ProgressChannel("board-read", "runs/a/folds/fold_001")
        try:
            assert hook.read_progress(channel) is None, "no Dict yet"
            _board("board-read").put(channel.key, record(7))

            assert hook.read_progress(channel) == record(7)
            assert asyncio.run(hook.aread_progress(channel)) == record(7)
            assert hook.read_progress(ProgressChannel("board-read", "other")) is None
        finally:
            hook.client.close()


class TestTheTriggerLogsProgress:
    def test_serializes_its_channel_and_logs_what_the_job_publishes_while_it_waits(self, plane, capsys):
        hook = ModalGPUHook()
        try:
            call_id = hook.spawn(APP, "sleep", {"seconds": 3.0, "value": "trained"})
        finally:
            hook.client.close()
        key = "runs/t/folds/fold_000"
        _board("board-trigger").put(key, record(40))
        trigger = ModalFunctionCallTrigger(
            call_id=call_id,
            poll_interval=0.2,
            progress_dict="board-trigger",
            progress_key=key,
            stall_after_s=0.5,
        )
        _, kwargs = trigger.serialize()
        assert (kwargs["progress_dict"], kwargs["progress_key"], kwargs["stall_after_s"]) == (
            "board-trigger",
            key,
            0.5,
        )

        async def collect() -> list:
            return [event async for event in ModalFunctionCallTrigger(**kwargs).run()]

        events = asyncio.run(asyncio.wait_for(collect(), timeout=30))

        assert events[0].payload["status"] == "success"
        logged = capsys.readouterr().out  # Airflow's structlog writes the trigger's log lines there
        assert "fold 0: step 40/100" in logged
        assert f"Modal call {call_id}: no progress for" in logged, "3 s without news"

    def test_without_a_channel_nothing_is_read(self):
        assert ModalFunctionCallTrigger(call_id="fc-1").progress_channel() is None
        channel = ModalFunctionCallTrigger(
            call_id="fc-1", progress_dict="d", progress_key="k"
        ).progress_channel()
        assert channel == ProgressChannel("d", "k", 0.0)
