"""``prepare_dataset`` of a hub dataset: the real ``snapshot_download`` against the hub stub on 127.0.0.1.

Each fetch runs ``jobs.prepare_dataset(repo_id=...)`` in a child process, because ``huggingface_hub``
reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` when first imported and this session is offline. The child
gets the stub's endpoint, ``HF_HUB_OFFLINE=0`` and a storage root of its own; the stub (a thread of this
process) serves the committed LeRobot v2.1 fixture and a v3.0 demo dataset, and can cut or stall a file.
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

from lerobot_kfold import dataset_format, jobs
from lerobot_kfold.dataset_info import dataset_identity
from tests.hub_stub.server import Fault, HubStub

REPO_ROOT = Path(__file__).resolve().parents[2]
V21 = REPO_ROOT / "tests" / "fixtures" / "lerobot_v21_tiny"
V21_ID, V30_ID = "community/pick_v21", "community/pick_v30"
VIDEO = "videos/chunk-000/observation.images.front/episode_000002.mp4"

CHILD = """
import json, sys
from lerobot_kfold import jobs
try:
    out = jobs.prepare_dataset(repo_id=sys.argv[1], say=lambda m: print(m, file=sys.stderr, flush=True))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)[:800]}))
    sys.exit(1)
print(json.dumps(out))
"""


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def hub(demo_root: Path):
    with HubStub() as stub:
        stub.add_repo(V21_ID, V21)
        stub.add_repo(V30_ID, demo_root)
        yield stub


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def start(hub: HubStub, storage: Path, repo_id: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_OFFLINE": "0",
        "LEROBOT_KFOLD_STORAGE": str(storage),
    }
    env.update(HF_HOME=str(storage.parent / "hf_home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.pop("HF_TOKEN", None)
    cmd = [sys.executable, "-c", CHILD, repo_id]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def prepare(hub: HubStub, storage: Path, repo_id: str) -> dict:
    proc = start(hub, storage, repo_id)
    out, err = proc.communicate(timeout=300)
    lines = out.strip().splitlines()
    assert lines, f"the child printed nothing (rc {proc.returncode}): {err[-3000:]}"
    return json.loads(lines[-1])


def visible_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


class TestFetch:
    def test_a_dataset_arrives_whole_once_without_the_clients_bookkeeping(self, hub, storage, demo_root):
        out = prepare(hub, storage, V30_ID)
        assert out["dataset_root"] == "datasets/community/pick_v30" and out["conversion"] is None
        fetched = storage / out["dataset_root"]
        assert digest(fetched) == digest(demo_root), "the repository's files, and only those (no .cache/)"
        assert out["fingerprint"] == dataset_identity(demo_root).fingerprint
        assert [p.name for p in fetched.parent.iterdir()] == ["pick_v30"], "no staging folder left"
        downloads = len(hub.downloads())
        assert prepare(hub, storage, V30_ID) == out, "a retried prepare finds the same dataset"
        assert len(hub.downloads()) == downloads, "and fetches nothing again"

    def test_interrupted_fetches_leave_nothing_half_written_and_the_next_one_completes(self, hub, storage):
        parent = storage / "datasets" / "community"
        cut = hub.add_fault(Fault(path_glob=VIDEO, after_bytes=200))
        assert "error" in prepare(hub, storage, V21_ID), "cut off at every try: the fetch fails"
        assert visible_entries(parent) == []
        hub.faults.remove(cut)

        hub.add_fault(Fault(path_glob=VIDEO, after_bytes=200, mode="stall", stall_s=120, times=1))
        proc = start(hub, storage, V21_ID)
        try:
            deadline = time.monotonic() + 120
            while not any(a.get("cut") == "stall" for a in hub.downloads(VIDEO)):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the fetch never reached the stalled file"
                time.sleep(0.05)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
        assert visible_entries(parent) == [], "killed mid-download: no dataset folder at all"
        assert all(p.name.startswith(".pick_v21.fetching-") for p in parent.iterdir())

        out = prepare(hub, storage, V21_ID)
        assert out["dataset_root"] == "datasets/community/pick_v21_v3.0", out
        assert digest(parent / "pick_v21") == digest(V21)


class TestV21FromTheHub:
    def test_concurrent_prepares_convert_once_into_storage_and_plan_on_the_same_dataset(
        self, hub, storage, tmp_path
    ):
        procs = [start(hub, storage, V21_ID) for _ in range(2)]
        outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
        assert all("error" not in out for out in outs), outs
        assert {out["dataset_root"] for out in outs} == {"datasets/community/pick_v21_v3.0"}
        parent = storage / "datasets" / "community"
        assert visible_entries(parent) == ["pick_v21", "pick_v21_v3.0"], "one copy of each, no staging"
        assert digest(parent / "pick_v21") == digest(V21), "the fetched original is kept as it is"
        assert dataset_format.dataset_version(parent / "pick_v21_v3.0") == "v3.0"
        assert {out["conversion"]["source_version"] for out in outs} == {"v2.1"}
        assert "converted" in {out["conversion"]["action"] for out in outs}

        direct = dataset_format.convert_v21_to_v30(V21, tmp_path / "direct")
        assert {out["fingerprint"] for out in outs} == {dataset_identity(tmp_path / "direct").fingerprint}
        assert {out["conversion"]["total_frames"] for out in outs} == {direct.total_frames}
        first, second = (jobs.PreparedDataset.from_dict(out).identity() for out in outs)
        assert first == second, "whichever converted, the plan is made on the same dataset identity"
        assert first.converted_from == {
            "source_root": "datasets/community/pick_v21",
            "source_version": "v2.1",
            "converter": f"lerobot {outs[0]['conversion']['lerobot_version']} convert_dataset_v21_to_v30",
        }
