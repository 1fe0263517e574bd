"""PostgreSQL and Redis from Debian's packages, as private servers on 127.0.0.1 for one test run.

The stand-ins for the ``postgres`` and ``redis`` services of ``docker-compose.yaml``: same login and
database, a free port each, data in a temporary folder that ``stop()`` removes. Each server leads its own
process group, so a fault test can restart one mid-run (``restart()``) and ``stop()`` leaves nothing.

PostgreSQL refuses to run as root: under root it runs as Debian's ``postgres`` user (created by the
package). The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, not on PATH); ``make test``
installs the packages when they are missing (``scripts/ensure_system_packages.sh``). Durability is traded
for speed (``fsync=off``): the data lives only as long as the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from scripts import process_groups

INSTALL_HINT = "install Debian's packages: apt-get install -y postgresql redis-server (make test does)"


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian layout first, then PATH)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise FileNotFoundError(f"PostgreSQL is not installed: {INSTALL_HINT}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class NativePostgres:
    """A private PostgreSQL cluster with one database owned by ``user`` (password authentication)."""

    def __init__(self, user: str, password: str, database: str, port: int | None = None) -> None:
        self.user, self.password, self.database = user, password, database
        self.port = port or process_groups.free_port()
        self.bindir = postgres_bindir()
        # Under root the server runs as Debian's postgres user, which must own (and reach) the folder.
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def start(self, timeout: float = 60.0) -> NativePostgres:
        if self.folder is None:
            self._init_cluster()
        self.process = process_groups.start(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.folder}",
                "-c",
                "max_connections=400",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            env=self._env(),
            log=self.folder / "postgres.log",
            user=self.run_as,
        )
        self._wait_ready(timeout)
        return self

    def stop(self, remove: bool = True) -> None:
        """Fast shutdown (SIGINT: running transactions are rolled back), SIGKILL after 30 s."""
        if self.process is not None:
            process_groups.stop_group(self.process.pid, signal.SIGINT, timeout=30)
            self.process.wait(timeout=10)
            self.process = None
        if remove and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (its clients lose their connections), stay down ``down_s`` s, start it again."""
        self.stop(remove=False)
        time.sleep(down_s)
        self.start()

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def _init_cluster(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="lerobot-kfold-postgres-"))
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if self.run_as:
            shutil.chown(self.folder, self.run_as, self.run_as)
            shutil.chown(password_file, self.run_as, self.run_as)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--no-sync"]
        initdb += ["--pwfile", str(password_file), "--auth=scram-sha-256", "-E", "UTF8"]
        subprocess.run(
            initdb, env=self._env(), user=self.run_as, check=True, capture_output=True, timeout=120
        )
        password_file.unlink()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        env = {**self._env(), "PGPASSWORD": self.password}
        login = ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited:\n{self.log_tail()}")
            ready = subprocess.run([str(self.bindir / "pg_isready"), *login], env=env, capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"PostgreSQL did not start within {timeout:.0f}s:\n{self.log_tail()}")
        exists = subprocess.run(
            [str(self.bindir / "psql"), *login, "-d", "postgres", "-tAc", "SELECT datname FROM pg_database"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        if self.database not in exists.stdout.split():
            createdb = [str(self.bindir / "createdb"), *login, self.database]
            subprocess.run(createdb, env=env, check=True, capture_output=True)

    def log_tail(self, lines: int = 30) -> str:
        path = self.folder / "postgres.log" if self.folder else None
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path and path.exists()
            else ""
        )


class NativeRedis:
    """A private Redis without persistence (the broker's queues live as long as the server)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or process_groups.free_port()
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> NativeRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(f"redis-server is not installed: {INSTALL_HINT}")
        self.folder = self.folder or Path(tempfile.mkdtemp(prefix="lerobot-kfold-redis-"))
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.process = process_groups.start(argv, env=env, log=self.folder / "redis.log")
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Redis did not start on {self.address}:\n{log}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None:
            process_groups.stop_group(self.process.pid, timeout=10)
            self.process.wait(timeout=10)
            self.process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
