"""The fake Modal control plane, driven by the real modal 1.6.4 client in this process (offline)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import modal
import modal.exception
import pytest

from scripts.fake_modal.control_plane import REPO_ROOT, TOKEN_ID, TOKEN_SECRET, FakeModalControlPlane
from scripts.fake_modal.outage import OutageProxy

APP = "fake-app"
FUNCTIONS = {
    f"{APP}/echo": "tests.fake_modal.functions:echo",
    f"{APP}/sleep": "tests.fake_modal.functions:sleep_then_return",
    f"{APP}/fail": "tests.fake_modal.functions:fail",
    f"{APP}/busy": "tests.fake_modal.functions:busy_for",
    "fake-sample-app/add": "tests.fake_modal.sample_app:add",
}


def _client_for(plane: FakeModalControlPlane) -> modal.Client:
    """A real client pointed at `plane`: from_credentials reads MODAL_SERVER_URL when it is called."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODAL_SERVER_URL", plane.url)
        return modal.Client.from_credentials(TOKEN_ID, TOKEN_SECRET)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeModalControlPlane]:
    with FakeModalControlPlane(FUNCTIONS, tmp_path_factory.mktemp("fake_modal")) as plane:
        yield plane


@pytest.fixture(scope="module")
def client(plane: FakeModalControlPlane) -> Iterator[modal.Client]:
    client = _client_for(plane)
    client.hello()
    yield client
    client.close()


def _fn(client: modal.Client, name: str, app: str = APP) -> modal.Function:
    return modal.Function.from_name(app, name, client=client)


def _event_for(plane: FakeModalControlPlane, type: str, call_id: str) -> dict:
    return plane.wait_for(lambda: next((e for e in plane.events(type) if e["call_id"] == call_id), None))


class TestSpawnAndGet:
    def test_spawn_records_gpu_timeout_and_retries(self, plane, client):
        retries = modal.Retries(max_retries=2, initial_delay=1.0, backoff_coefficient=1.0)
        fn = _fn(client, "echo").with_options(gpu="H100", timeout=600, retries=retries)

        call = fn.spawn(fold=3, steps=10)

        assert call.object_id.startswith("fc-")
        assert call.get(timeout=10) == {"fold": 3, "steps": 10}
        spawn = _event_for(plane, "spawn", call.object_id)
        assert spawn["app"] == APP and spawn["function"] == "echo"
        assert (spawn["gpu"], spawn["timeout"], spawn["retries"]) == ("H100", 600, 2)
        assert spawn["kwargs_keys"] == ["fold", "steps"]
        assert _event_for(plane, "finished", call.object_id)["status"] == "success"

    def test_spawn_without_options_records_nulls(self, plane, client):
        call = _fn(client, "echo").spawn(x=1)
        assert call.get(timeout=10) == {"x": 1}
        spawn = _event_for(plane, "spawn", call.object_id)
        assert (spawn["gpu"], spawn["timeout"], spawn["retries"]) == (None, None, None)

    def test_get_timeout_zero_raises_builtin_timeout_error_while_running(self, plane, client):
        call = _fn(client, "sleep").spawn(seconds=1.0, value={"loss": 0.5})

        with pytest.raises(TimeoutError) as info:
            call.get(timeout=0)
        assert not isinstance(
            info.value, modal.exception.Error
        )  # the built-in, not modal.exception.TimeoutError

        reattached = modal.FunctionCall.from_id(call.object_id, client=client)
        assert reattached.get(timeout=10) == {"loss": 0.5}

    def test_remote_exception_is_reraised_with_type_and_message(self, plane, client):
        call = _fn(client, "fail").spawn(message="fold 2 diverged")

        with pytest.raises(RuntimeError, match="fold 2 diverged"):
            call.get(timeout=10)
        finished = _event_for(plane, "finished", call.object_id)
        assert finished["status"] == "failure"
        assert "fold 2 diverged" in finished["error"]

    def test_app_function_runs_through_local(self, client):
        assert _fn(client, "add", app="fake-sample-app").spawn(a=2, b=3).get(timeout=10) == 5

    def test_remote_call_also_works(self, client):
        assert _fn(client, "echo").remote(k="v") == {"k": "v"}

    def test_large_kwargs_and_results_go_through_blobs(self, client):
        # Spawn inputs over 8 KiB and results over 2 MiB travel as blobs (BlobCreate/BlobGet + HTTP).
        payload = "x" * (3 * 1024 * 1024)
        assert _fn(client, "echo").spawn(data=payload).get(timeout=30) == {"data": payload}


class TestCancel:
    def test_cancel_is_recorded_and_get_raises_remote_error(self, plane, client):
        call = _fn(client, "sleep").spawn(seconds=5.0, value="never")

        call.cancel(terminate_containers=False)

        with pytest.raises(modal.exception.RemoteError):
            call.get(timeout=5)
        cancel = _event_for(plane, "cancel", call.object_id)
        assert cancel["terminate_containers"] is False
        assert _event_for(plane, "finished", call.object_id)["status"] == "cancelled"


class TestNotFound:
    @pytest.mark.parametrize(
        ("app", "name", "named"),
        [
            pytest.param(APP, "no-such-function", "no-such-function", id="unknown-function"),
            pytest.param("no-such-app", "echo", "no-such-app", id="unknown-app"),
        ],
    )
    def test_unknown_function_raises_not_found(self, client, app, name, named):
        with pytest.raises(modal.exception.NotFoundError, match=named):
            modal.Function.from_name(app, name, environment_name="main", client=client).hydrate()


class TestRetriesAndTimeout:
    def test_failed_call_is_retried_per_policy(self, plane, client):
        retries = modal.Retries(max_retries=1, initial_delay=1.0, backoff_coefficient=1.0)
        call = _fn(client, "fail").with_options(retries=retries).spawn(message="flaky")

        with pytest.raises(RuntimeError, match="flaky"):
            call.get(timeout=15)
        assert [e["attempt"] for e in plane.events("retry") if e["call_id"] == call.object_id] == [1]

    def test_call_over_its_timeout_raises_function_timeout_error(self, client):
        call = _fn(client, "sleep").with_options(timeout=1).spawn(seconds=4.0, value=None)
        with pytest.raises(modal.exception.FunctionTimeoutError):
            call.get(timeout=10)


class TestAsync:
    def test_aio_spawn_get_and_cancel(self, plane, client):
        async def scenario() -> tuple[object, str]:
            fn = _fn(client, "sleep")
            call = await fn.spawn.aio(seconds=0.5, value=7)
            with pytest.raises(TimeoutError):
                await call.get.aio(timeout=0)
            result = await call.get.aio(timeout=10)

            doomed = await fn.spawn.aio(seconds=5.0, value=8)
            await doomed.cancel.aio()
            with pytest.raises(modal.exception.RemoteError):
                await doomed.get.aio(timeout=5)
            return result, doomed.object_id

        result, cancelled_id = asyncio.run(scenario())

        assert result == 7
        assert cancelled_id in {e["call_id"] for e in plane.cancels()}


class TestEnvironmentCredentials:
    def test_client_from_env_variables(self, plane, monkeypatch):
        for key, value in plane.client_env().items():
            monkeypatch.setenv(key, value)
        modal.Client._set_env_client(None)  # the env client is a process-wide singleton
        client = modal.Client.from_env()
        try:
            assert modal.Function.from_name(APP, "echo").spawn(via="env").get(timeout=10) == {"via": "env"}
        finally:
            client.close()
            modal.Client._set_env_client(None)


class TestConcurrency:
    def test_twenty_concurrent_spawns_with_delay_all_finish(self, tmp_path):
        functions = {f"{APP}/echo": FUNCTIONS[f"{APP}/echo"]}
        with FakeModalControlPlane(functions, tmp_path, delay=1.0) as plane:
            client = _client_for(plane)
            try:
                fn = _fn(client, "echo")
                calls = [fn.spawn(i=i) for i in range(20)]
                results = [call.get(timeout=30) for call in calls]
            finally:
                client.close()
            assert results == [{"i": i} for i in range(20)]
            assert len(plane.spawns()) == 20
            assert len({e["call_id"] for e in plane.finished()}) == 20


class TestServerProcess:
    def test_bad_function_module_fails_start_with_stderr(self, tmp_path):
        plane = FakeModalControlPlane({"app/f": "no_such_module_xyz:f"}, tmp_path)
        with pytest.raises(RuntimeError, match="no_such_module_xyz"):
            plane.start()

    def test_runs_as_a_script(self, tmp_path):
        ready = tmp_path / "ready.txt"
        command = [sys.executable, "scripts/fake_modal/server.py", f"{APP}/echo={FUNCTIONS[f'{APP}/echo']}"]
        process = subprocess.Popen(
            [*command, "--port", "0", "--ready-file", str(ready)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready.exists(), (
                process.stderr.read().decode() if process.poll() is not None else "no ready file"
            )
            assert int(ready.read_text()) > 0
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
            process.stderr.close()


def test_events_file_is_json_lines(plane, client):
    _fn(client, "echo").spawn(z=0).get(timeout=10)
    lines = Path(plane.events_file).read_text().splitlines()
    assert lines and all(line.startswith("{") and line.endswith("}") for line in lines)


class TestFaults:
    def test_a_preempted_input_starts_again_under_the_same_call(self, plane, client):
        call = _fn(client, "busy").spawn(seconds=2.0)
        plane.wait_for(lambda: _event_for(plane, "spawn", call.object_id))
        time.sleep(0.5)

        plane.preempt(call.object_id)

        assert call.get(timeout=20) == 2  # started twice: once, and again after the preemption
        assert _event_for(plane, "preempted", call.object_id)
        assert [e["type"] for e in plane.events() if e.get("call_id") == call.object_id] == [
            "spawn",
            "preempted",
            "finished",
        ]

    def test_through_a_cut_proxy_the_plane_is_unreachable_until_restored(self, plane, monkeypatch):
        with contextlib.closing(OutageProxy(plane.port).start()) as proxy:
            monkeypatch.setenv("MODAL_SERVER_URL", proxy.url)
            client = modal.Client.from_credentials(TOKEN_ID, TOKEN_SECRET)
            try:
                call = _fn(client, "sleep").spawn(seconds=1.5, value="after the outage")
                proxy.cut()
                with pytest.raises(modal.exception.ConnectionError):
                    modal.FunctionCall.from_id(call.object_id, client=client).get(timeout=0)
                proxy.restore()

                assert modal.FunctionCall.from_id(call.object_id, client=client).get(timeout=20) == (
                    "after the outage"
                )
            finally:
                client.close()
        assert len([s for s in plane.spawns() if s["call_id"] == call.object_id]) == 1
