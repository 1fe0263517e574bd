"""The real ``huggingface_hub.snapshot_download`` against the hub stub: identical files, typed errors, cuts.

The client always runs in a subprocess: ``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``
when first imported, and the test session runs with ``HF_HUB_OFFLINE=1`` (tests/conftest.py). Only that
child gets ``HF_ENDPOINT=<stub>`` and ``HF_HUB_OFFLINE=0``, with its own ``HF_HOME``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hub_stub.server import Fault, HubStub

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "lerobot_v21_tiny"
REPO_ID = "lerobot_kfold/v21_tiny"
VIDEO = "videos/chunk-000/observation.images.front/episode_000002.mp4"

# The child: one snapshot_download, its outcome as one JSON line on stdout.
CLIENT = """
import json, sys
from huggingface_hub import snapshot_download
repo_id, revision, local_dir = sys.argv[1:4]
try:
    path = snapshot_download(
        repo_id, repo_type="dataset", revision=revision, local_dir=local_dir, max_workers=2
    )
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)[:500]}))
    sys.exit(1)
print(json.dumps({"path": path}))
"""


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, except the client's own bookkeeping in .cache/huggingface."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).as_posix().startswith(".cache/")
    }


def client_env(endpoint: str, home: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_OFFLINE="0",
        HF_HOME=str(home),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    env.pop("HF_TOKEN", None)
    return env


def start_client(endpoint: str, tmp: Path, local_dir: Path, revision: str = "main", repo_id: str = REPO_ID):
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, repo_id, revision, str(local_dir)],
        env=client_env(endpoint, tmp / "hf_home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fetch(endpoint: str, tmp: Path, local_dir: Path, revision: str = "main", repo_id: str = REPO_ID) -> dict:
    proc = start_client(endpoint, tmp, local_dir, revision, repo_id)
    out, err = proc.communicate(timeout=120)
    lines = out.strip().splitlines()
    assert lines, f"client printed nothing (rc {proc.returncode}): {err[-2000:]}"
    return json.loads(lines[-1])


@pytest.fixture
def hub():
    with HubStub() as stub:
        stub.add_repo(REPO_ID, FIXTURE, revisions=("main", "v2.1"))
        yield stub


class TestSnapshotDownload:
    def test_server_process_serves_identical_files(self, tmp_path: Path) -> None:
        """The stub as its own process (as the fetch-path tests will use it), stopped by its pid."""
        ready = tmp_path / "ready.txt"
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.hub_stub.server"),
                *("--repo", f"{REPO_ID}={FIXTURE}@main,v2.1", "--port", "0", "--ready-file", str(ready)),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the hub stub did not start within 30 s"
                time.sleep(0.05)
            endpoint = ready.read_text()
            assert endpoint.startswith("http://127.0.0.1:")
            result = fetch(endpoint, tmp_path, tmp_path / "staging", revision="v2.1")
            assert result == {"path": str((tmp_path / "staging").resolve())}
            assert digest(tmp_path / "staging") == digest(FIXTURE)
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        assert server.returncode == 0

    def test_main_revision_and_commit_sha(self, hub: HubStub, tmp_path: Path) -> None:
        assert fetch(hub.endpoint, tmp_path, tmp_path / "a").get("path")
        assert digest(tmp_path / "a") == digest(FIXTURE)
        info = [r for r in hub.requests if "/api/datasets/" in r["path"] and "/revision/" in r["path"]]
        assert info and info[0]["status"] == 200
        commit = hub._repos[("dataset", REPO_ID)].revisions["main"].commit
        assert fetch(hub.endpoint, tmp_path, tmp_path / "b", revision=commit).get("path")
        assert digest(tmp_path / "b") == digest(FIXTURE)

    def test_a_second_fetch_into_the_same_folder_downloads_nothing(
        self, hub: HubStub, tmp_path: Path
    ) -> None:
        fetch(hub.endpoint, tmp_path, tmp_path / "a")
        before = len(hub.downloads())
        assert before == len(digest(FIXTURE))
        assert fetch(hub.endpoint, tmp_path, tmp_path / "a").get("path")
        assert len(hub.downloads()) == before

    def test_paginated_tree(self, tmp_path: Path) -> None:
        with HubStub(page_size=3) as stub:
            stub.add_repo(REPO_ID, FIXTURE)
            assert fetch(stub.endpoint, tmp_path, tmp_path / "a").get("path")
            pages = [r for r in stub.requests if "/tree/" in r["path"]]
        assert len(pages) > 3
        assert digest(tmp_path / "a") == digest(FIXTURE)

    @pytest.mark.parametrize(
        ("repo_id", "revision", "error"),
        [
            pytest.param("nobody/nothing", "main", "RepositoryNotFoundError", id="unknown-repo"),
            pytest.param(REPO_ID, "v9.9", "RevisionNotFoundError", id="unknown-revision"),
        ],
    )
    def test_typed_errors(
        self, hub: HubStub, tmp_path: Path, repo_id: str, revision: str, error: str
    ) -> None:
        result = fetch(hub.endpoint, tmp_path, tmp_path / "a", revision=revision, repo_id=repo_id)
        assert result["error"] == error, result


class TestRanges:
    def test_range_requests_get_206(self, hub: HubStub) -> None:
        """Large files are resumed with Range by the client; the stub answers them like the hub."""
        from urllib.request import Request, urlopen

        from tests.hub_stub.server import resolve_url

        data = (FIXTURE / VIDEO).read_bytes()
        url = resolve_url(hub.endpoint, REPO_ID, "main", VIDEO)
        with urlopen(Request(url, headers={"Range": "bytes=100-"})) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
            assert resp.read() == data[100:]
        with urlopen(Request(url, method="HEAD")) as resp:
            assert int(resp.headers["Content-Length"]) == len(data)
            assert (
                resp.headers["ETag"].strip('"') == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            )
            assert resp.headers["X-Repo-Commit"] == hub._repos[("dataset", REPO_ID)].revisions["main"].commit


class TestCutOffDownloads:
    def test_cut_every_time_raises_and_leaves_no_partial_file(self, hub: HubStub, tmp_path: Path) -> None:
        size = (FIXTURE / VIDEO).stat().st_size
        hub.add_fault(Fault(path_glob=VIDEO, after_bytes=size // 2))
        start = time.monotonic()
        result = fetch(hub.endpoint, tmp_path, tmp_path / "staging")
        assert "error" in result, result
        # The client retried (huggingface_hub's http_get: up to 5 times) and got cut each time, then gave up.
        # Its 10 MB read chunks mean nothing of a small file reached disk, so each retry starts at byte 0.
        attempts = hub.downloads(VIDEO)
        assert len(attempts) >= 2 and all(a.get("cut") == "close" for a in attempts), attempts
        assert attempts[0]["sent"] == size // 2
        assert not (tmp_path / "staging" / VIDEO).exists()
        leftovers = [
            p for p in (tmp_path / "staging").rglob("*") if p.is_file() and p.name.endswith(".incomplete")
        ]
        assert leftovers == [], "huggingface_hub removes its temporary file"
        assert time.monotonic() - start < 60

    def test_cut_once_is_retried_by_the_client(self, hub: HubStub, tmp_path: Path) -> None:
        size = (FIXTURE / VIDEO).stat().st_size
        hub.add_fault(Fault(path_glob=VIDEO, after_bytes=size // 2, times=1))
        assert fetch(hub.endpoint, tmp_path, tmp_path / "staging").get("path")
        assert digest(tmp_path / "staging") == digest(FIXTURE)
        attempts = hub.downloads(VIDEO)
        assert [a.get("cut") for a in attempts] == ["close", None]

    def test_stalled_download_killed_leaves_no_file(self, hub: HubStub, tmp_path: Path) -> None:
        """A client killed mid-transfer (the interrupted fetch) leaves the file absent at its final path."""
        size = (FIXTURE / VIDEO).stat().st_size
        hub.add_fault(Fault(path_glob=VIDEO, after_bytes=size // 2, mode="stall", stall_s=60))
        proc = start_client(hub.endpoint, tmp_path, tmp_path / "staging")
        try:
            deadline = time.monotonic() + 60
            while not any(a.get("cut") == "stall" for a in hub.downloads(VIDEO)):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the client never reached the stalled file"
                time.sleep(0.05)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not (tmp_path / "staging" / VIDEO).exists()
        # What it leaves is huggingface_hub's temporary files, all inside
        # local_dir/.cache/huggingface/download: the fetch path must stage, rename only after success,
        # and drop .cache/ from the staged copy.
        partial = sorted((tmp_path / "staging").rglob("*.incomplete"))
        assert partial, "a killed download leaves its temporary file"
        download_cache = tmp_path / "staging" / ".cache" / "huggingface" / "download"
        assert all(download_cache in p.parents for p in partial), partial
