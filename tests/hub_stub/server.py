"""A local stand-in for the Hugging Face Hub: serves folders as repositories to the real ``huggingface_hub``.

The hub cannot be reached from tests, and the fetch path (``snapshot_download(repo_id,
repo_type="dataset", revision=..., local_dir=staging)`` then an atomic rename) must still be tested
against the real client, including its failures. This is a stdlib ``http.server`` on 127.0.0.1 that
implements only what ``snapshot_download`` and ``hf_hub_download`` of the pinned huggingface_hub
(1.33) call for a repository (read from ``_snapshot_download.py``, ``file_download.py``,
``hf_api.py``):

- ``GET /api/{datasets|models|spaces}/{repo_id}[/revision/{revision}]``: repo info; the client takes
  the commit sha from ``sha`` (``HfApi.repo_info``).
- ``GET /api/{type}s/{repo_id}/tree/{revision}[/{path}]?recursive=true``: the file listing
  (``HfApi.list_repo_tree``), paginated with a ``Link: <...>; rel="next"`` header like the hub
  (``page_size``; the hub uses 1000).
- ``HEAD``/``GET /[{datasets|spaces}/]{repo_id}/resolve/{revision}/{path}``: the file, with the
  headers ``hf_hub_download`` requires: ``X-Repo-Commit`` (the commit sha), ``ETag`` (the git blob
  sha, quoted), ``Content-Length``; ``Range`` requests get ``206`` (the client resumes a broken
  download with them). No ``X-Xet-*`` headers, so the client uses plain HTTP.
- Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the
  client raises its own typed errors (``RepositoryNotFoundError``, ...).

A repository is a folder plus revision names (``main`` by default; add ``v2.1`` etc.); the commit sha
is derived from the files' contents, and the commit sha itself is a valid revision. Files are read
from the folder at request time: do not change it while serving.

Faults, for tests of the failure paths (:class:`Fault`): a download of a matching file sends its
headers (with the full ``Content-Length``) and the bytes before ``after_bytes``, then either closes
the connection (``mode="close"``: the client sees a broken transfer, retries with ``Range`` from
where it stopped, gets nothing more, and raises after its retries) or stalls for ``stall_s`` seconds
first (``mode="stall"``: time for a test to kill the client mid-download). ``times`` limits how many
requests are cut (``None``: all); with ``times=1`` the client's own resume completes the file.

Two ways to run it:

- in-process: ``with HubStub() as hub: hub.add_repo("org/name", folder); hub.endpoint`` (a thread;
  ``hub.requests`` is the request log, ``hub.faults`` can be changed while serving);
- as a process: ``python -m tests.hub_stub.server --repo org/name=FOLDER[@rev1,rev2] [--fault
  'GLOB:AFTER_BYTES[:TIMES]'] --port 0 --ready-file F``: writes the endpoint to F once listening and
  serves until SIGTERM/SIGINT. ``GET /_stub/requests`` returns the request log as JSON.

Only 127.0.0.1, no authentication, no uploads: a test double, never a service.

Why our own: of PyPI's local hubs, ``hf-local-hub`` 3.0.0 is a wrapper around a Go server binary its
wheel does not ship (``hf-local serve`` fails: "Build with 'make server'"); ``olah`` 0.5.4 does serve a
local *git repository* to ``snapshot_download`` offline (``mirrors-path`` in a TOML config,
``offline = true``; files came back identical), but it brings ~60 packages (FastAPI, GitPython,
peewee, ...), needs every dataset committed to git first, and has no way to cut a transfer off.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

HOST = "127.0.0.1"
REPO_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
CHUNK = 64 * 1024
DEFAULT_PAGE_SIZE = 1000


def git_blob_sha(data: bytes) -> str:
    """The id git (and the hub's ``oid``) gives a file's contents."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RepoFile:
    path: str  # relative, '/'-separated
    size: int
    oid: str


@dataclass
class Snapshot:
    """One commit of a repository: a folder's files at the time it was added."""

    folder: Path
    commit: str
    files: dict[str, RepoFile]


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    revisions: dict[str, Snapshot] = field(default_factory=dict)

    def snapshot(self, revision: str) -> Snapshot | None:
        if revision in self.revisions:
            return self.revisions[revision]
        return next((s for s in self.revisions.values() if s.commit == revision), None)


@dataclass
class Fault:
    """Cut downloads of files matching ``path_glob`` (fnmatch on the repo path) at byte ``after_bytes``."""

    path_glob: str = "*"
    after_bytes: int = 0
    # how many matching GET requests to cut; None = every one (then the client gives up and raises)
    times: int | None = None
    # "close": close the connection at the cut; "stall": wait stall_s seconds first, then close
    mode: str = "close"
    stall_s: float = 30.0
    repo_id: str | None = None  # None: any repository
    hits: int = 0

    def applies(self, repo_id: str, path: str) -> bool:
        if self.repo_id is not None and self.repo_id != repo_id:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return fnmatch.fnmatchcase(path, self.path_glob)


def scan_folder(folder: Path) -> dict[str, RepoFile]:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".git/") or rel.startswith(".cache/huggingface/"):
            continue
        data = path.read_bytes()
        files[rel] = RepoFile(rel, len(data), git_blob_sha(data))
    return files


def commit_sha(repo_id: str, files: dict[str, RepoFile]) -> str:
    h = hashlib.sha1(repo_id.encode())
    for f in files.values():
        h.update(f"\n{f.path}\0{f.oid}".encode())
    return h.hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stub: HubStub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "hub-stub/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log has it all
        pass

    # -- helpers -------------------------------------------------------------------------------
    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._log(status)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send_json({"error": message}, status=status, headers=headers)

    def _log(self, status: int, **extra: Any) -> None:
        entry = {"method": self.command, "path": self.path, "status": status, "t": time.time(), **extra}
        if self.headers.get("Range"):
            entry["range"] = self.headers["Range"]
        self.server.stub._record(entry)

    # -- routing -------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        stub = self.server.stub
        url = urlsplit(self.path)
        raw = url.path
        query = parse_qs(url.query)
        try:
            if raw == "/_stub/requests":
                self._send_json(stub.requests)
                return
            if raw.startswith("/api/"):
                self._api(raw[len("/api/") :], query)
                return
            if "/resolve/" in raw:
                self._resolve(raw.lstrip("/"))
                return
            self._error(404, None, f"hub stub: no route for {raw}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _split_repo(self, rest: str) -> tuple[str, str, list[str]]:
        """'datasets/org/name/tail...' -> ('dataset', 'org/name', tail segments, still quoted)."""
        parts = rest.split("/")
        if parts[0] not in REPO_TYPES or len(parts) < 3:
            raise LookupError
        return REPO_TYPES[parts[0]], f"{unquote(parts[1])}/{unquote(parts[2])}", parts[3:]

    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        stub = self.server.stub
        try:
            repo_type, repo_id, tail = self._split_repo(rest)
        except LookupError:
            self._error(404, None, f"hub stub: unsupported API path /api/{rest}")
            return
        repo = stub._repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
            return
        if not tail or tail[0] == "revision":
            revision = unquote(tail[1]) if len(tail) > 1 else "main"
            snap = repo.snapshot(revision)
            if snap is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            self._send_json(
                {
                    "_id": snap.commit[:24],
                    "id": repo_id,
                    "author": repo_id.split("/")[0],
                    "sha": snap.commit,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "lastModified": "2025-01-01T00:00:00.000Z",
                    "siblings": [
                        {"rfilename": f.path, "size": f.size, "blobId": f.oid} for f in snap.files.values()
                    ],
                }
            )
            return
        if tail[0] == "tree" and len(tail) >= 2:
            revision = unquote(tail[1])
            prefix = unquote("/".join(tail[2:])).strip("/")
            snap = repo.snapshot(revision)
            if snap is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries = _tree_entries(snap, prefix, recursive)
            if entries is None:
                self._error(404, "EntryNotFound", f"{prefix} does not exist on {revision}", snap.commit)
                return
            cursor = int(query.get("cursor", ["0"])[0])
            page = entries[cursor : cursor + stub.page_size]
            headers = {}
            if cursor + stub.page_size < len(entries):
                nxt = f"{stub.endpoint}{urlsplit(self.path).path}?recursive={str(recursive).lower()}"
                nxt += f"&expand=false&cursor={cursor + stub.page_size}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            self._send_json(page, headers=headers)
            return
        self._error(404, None, f"hub stub: unsupported API path /api/{rest}")

    def _resolve(self, rest: str) -> None:
        stub = self.server.stub
        before, _, after = rest.partition("/resolve/")
        first = before.split("/")[0]
        if first in ("datasets", "spaces"):
            repo_type, repo_id = REPO_TYPES[first], unquote(before[len(first) + 1 :])
        else:
            repo_type, repo_id = "model", unquote(before)
        revision, _, quoted_path = after.partition("/")
        revision, path = unquote(revision), unquote(quoted_path)
        repo = stub._repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
            return
        snap = repo.snapshot(revision)
        if snap is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        entry = snap.files.get(path)
        if entry is None:
            self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", snap.commit)
            return
        size = entry.size
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first_s, _, last_s = rng[len("bytes=") :].split(",")[0].partition("-")
            start = int(first_s) if first_s else max(size - int(last_s), 0)
            end = int(last_s) if first_s and last_s else size - 1
            if start >= size and size > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._log(416)
                return
            status = 206
        length = max(end - start + 1, 0)
        fault = stub._take_fault(repo_id, path) if self.command == "GET" else None
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.oid}"')
        self.send_header("X-Repo-Commit", snap.commit)
        self.send_header("Last-Modified", formatdate(usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            self._log(status)
            return
        stop = end + 1 if fault is None else min(end + 1, max(fault.after_bytes, start))
        sent = 0
        with (snap.folder / path).open("rb") as fh:
            fh.seek(start)
            pos = start
            while pos < stop:
                chunk = fh.read(min(CHUNK, stop - pos))
                if not chunk:
                    break
                self.wfile.write(chunk)
                pos += len(chunk)
                sent += len(chunk)
        self.wfile.flush()
        if fault is None:
            self._log(status, sent=sent)
            return
        self._log(status, sent=sent, cut=fault.mode)
        if fault.mode == "stall":
            stub._stop_event.wait(fault.stall_s)
        # Cut: close the socket with the body incomplete (the client sees a broken transfer).
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _tree_entries(snap: Snapshot, prefix: str, recursive: bool) -> list[dict[str, Any]] | None:
    folders: dict[str, None] = {}
    files = []
    base = f"{prefix}/" if prefix else ""
    for f in snap.files.values():
        if not f.path.startswith(base):
            continue
        rest = f.path[len(base) :]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            folder = base + "/".join(parts[:depth])
            if recursive or depth == 1:
                folders.setdefault(folder)
        if recursive or len(parts) == 1:
            files.append({"type": "file", "oid": f.oid, "size": f.size, "path": f.path})
    if prefix and not files and not folders:
        return None
    dirs = [
        {"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
        for p in folders
    ]
    return sorted(dirs + files, key=lambda e: e["path"])


class HubStub:
    """The server, run in a background thread of this process. Use as a context manager."""

    def __init__(self, port: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self.page_size = page_size
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- repositories and faults ----------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        folder: str | os.PathLike[str],
        revisions: tuple[str, ...] | list[str] = ("main",),
        repo_type: str = "dataset",
    ) -> str:
        """Serve ``folder`` as ``repo_id`` at each of ``revisions``; returns the commit sha."""
        if repo_id.count("/") != 1:
            raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}")
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(folder)
        files = scan_folder(folder)
        snap = Snapshot(folder=folder, commit=commit_sha(repo_id, files), files=files)
        with self._lock:
            repo = self._repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type))
            for rev in revisions:
                repo.revisions[rev] = snap
        return snap.commit

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, repo_id: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.applies(repo_id, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def downloads(self, path_suffix: str = "") -> list[dict[str, Any]]:
        """The GET requests of ``resolve`` URLs (file downloads) logged so far, optionally filtered."""
        return [
            r
            for r in list(self.requests)
            if r["method"] == "GET" and "/resolve/" in r["path"] and r["path"].endswith(path_suffix)
        ]

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the hub stub is not running")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> HubStub:
        server = _Server((HOST, self._port), _Handler)
        server.stub = self
        self._server = server
        self._stop_event.clear()
        self._thread = threading.Thread(target=server.serve_forever, name="hub-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_event.set()  # releases stalled downloads
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def resolve_url(endpoint: str, repo_id: str, revision: str, path: str, repo_type: str = "dataset") -> str:
    """The download URL of one file, as ``huggingface_hub.hf_hub_url`` builds it."""
    prefix = {"dataset": "datasets/", "space": "spaces/", "model": ""}[repo_type]
    return f"{endpoint}/{prefix}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def _parse_repo(spec: str) -> tuple[str, Path, list[str]]:
    repo_id, sep, rest = spec.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--repo wants ORG/NAME=FOLDER[@REV,REV], got {spec!r}")
    folder, _, revs = rest.partition("@")
    return repo_id, Path(folder), [r for r in revs.split(",") if r] or ["main"]


def _parse_fault(spec: str) -> Fault:
    parts = spec.split(":")
    if len(parts) not in (2, 3, 4):
        raise argparse.ArgumentTypeError(f"--fault wants GLOB:AFTER_BYTES[:TIMES[:MODE]], got {spec!r}")
    times = int(parts[2]) if len(parts) > 2 and parts[2] not in ("", "all") else None
    mode = parts[3] if len(parts) > 3 else "close"
    return Fault(path_glob=parts[0], after_bytes=int(parts[1]), times=times, mode=mode)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Serve folders as Hugging Face Hub repositories on 127.0.0.1."
    )
    parser.add_argument(
        "--repo", action="append", type=_parse_repo, default=[], metavar="ORG/NAME=FOLDER[@REVS]"
    )
    parser.add_argument("--repo-type", default="dataset", choices=["dataset", "model", "space"])
    parser.add_argument(
        "--fault", action="append", type=_parse_fault, default=[], metavar="GLOB:BYTES[:TIMES[:MODE]]"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE)
    parser.add_argument("--ready-file", type=Path, help="written with the endpoint URL once listening")
    args = parser.parse_args(argv)

    stub = HubStub(port=args.port, page_size=args.page_size)
    for repo_id, folder, revs in args.repo:
        commit = stub.add_repo(repo_id, folder, revs, repo_type=args.repo_type)
        print(f"serving {args.repo_type} {repo_id} @ {','.join(revs)} = {commit} from {folder}", flush=True)
    for fault in args.fault:
        stub.add_fault(fault)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with stub:
        if args.ready_file:
            tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
            tmp.write_text(stub.endpoint)
            tmp.replace(args.ready_file)
        print(f"listening on {stub.endpoint}", flush=True)
        stop.wait()
    print("stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
