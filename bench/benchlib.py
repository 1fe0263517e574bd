"""Shared helpers of the benchmark scripts in this folder (not part of the library).

Every benchmark runs both sides in one invocation, interleaved (A B A B ...), each run in its own
subprocess, and reports medians and ratios: the machines are shared and noisy, so absolute times say
little and a ratio measured minutes apart says less than one measured side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INCLUDE = REPO / "include"
BENCH_CACHE = REPO / ".cache" / "bench"
# The benchmarks import small pieces of the library (configs, the planner) from this checkout.
if str(INCLUDE) not in sys.path:
    sys.path.insert(0, str(INCLUDE))


def progress(message: str) -> None:
    """Progress goes to stderr; stdout is kept for the result table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so a killed benchmark also ends the run it is timing."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def bench_env(threads: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a measured subprocess: offline, caches inside the repo, our package importable.

    ``threads`` sets every thread-pool variable torch and its BLAS read at start-up, so both sides of a
    comparison get the same number of CPU threads.
    """
    env = dict(os.environ)
    env.setdefault("HF_HOME", str(REPO / ".cache" / "huggingface"))
    env.setdefault("HF_LEROBOT_HOME", str(Path(env["HF_HOME"]) / "lerobot"))
    env.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
    env["HF_HUB_OFFLINE"] = "1"
    env["WANDB_MODE"] = "disabled"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(INCLUDE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    if extra:
        env.update(extra)
    return env


@dataclass
class RunRecord:
    """One measured subprocess."""

    cmd: list[str]
    returncode: int
    wall_s: float
    # Peak resident set size of the process (the largest of it and its waited-for children), MiB.
    peak_rss_mib: float
    # (seconds since start, stream, text) for every line; lines end at '\n' or '\r' (progress bars).
    lines: list[tuple[float, str, str]] = field(default_factory=list)
    stdout: str = ""

    def text(self) -> str:
        return "\n".join(f"{t:9.3f} {stream} {line}" for t, stream, line in self.lines)

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, _, line in self.lines[-n:])


def run_measured(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    timeout_s: float | None = None,
) -> RunRecord:
    """Run ``cmd`` in a subprocess; time it, timestamp its output lines and read its peak RSS.

    The peak RSS comes from ``wait4`` on this very child, so runs measured one after another do not
    mix (``getrusage(RUSAGE_CHILDREN)`` would report the maximum over all earlier children too).
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a timeout or Ctrl-C ends its workers too
    )
    lines: list[tuple[float, str, str]] = []
    stdout_chunks: list[str] = []
    lock = threading.Lock()

    def reader(stream, name: str) -> None:
        buffer = b""
        while True:
            chunk = stream.read1(65536)
            now = time.perf_counter() - started
            if not chunk:
                break
            if name == "out":
                stdout_chunks.append(chunk.decode(errors="replace"))
            buffer += chunk
            parts = re.split(rb"[\r\n]", buffer)
            buffer = parts.pop()
            with lock:
                lines.extend((now, name, p.decode(errors="replace")) for p in parts if p.strip())
        if buffer.strip():
            with lock:
                lines.append((time.perf_counter() - started, name, buffer.decode(errors="replace")))

    threads = [
        threading.Thread(target=reader, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=reader, args=(proc.stderr, "err"), daemon=True),
    ]
    for t in threads:
        t.start()

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = None
    if timeout_s is not None:
        timer = threading.Timer(timeout_s, kill_group)
        timer.daemon = True
        timer.start()
    try:
        for t in threads:
            while t.is_alive():  # short joins: a signal is handled only when the main thread wakes up
                t.join(0.2)
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # Ctrl-C or SIGTERM (see exit_on_sigterm): leave no training process behind
        kill_group()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines.sort(key=lambda item: item[0])
    record = RunRecord(
        cmd=list(cmd),
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_mib=usage.ru_maxrss / 1024.0,  # Linux reports KiB
        lines=lines,
        stdout="".join(stdout_chunks),
    )
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(" ".join(record.cmd) + "\n" + record.text() + "\n")
    return record


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    out.append("| " + " | ".join("-" * w for w in widths) + " |")
    out += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells[1:]
    ]
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    """What a result needs next to it: cores, CPU model, load, Python, torch and GPU."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - informational only
        pass
    return info


def write_json(path: str | os.PathLike[str], payload: dict[str, Any], quiet: bool = False) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    partial.replace(target)
    if not quiet:
        progress(f"wrote {target}")


def ensure_demo_dataset(root: Path, episodes: int, python: str, env: dict[str, str]) -> None:
    """Record the simulator demo dataset at ``root`` unless it is already there."""
    if (root / "meta" / "info.json").is_file():
        return
    if root.exists():
        raise SystemExit(f"error: {root} exists but is not a LeRobot dataset; remove it or pick another.")
    progress(f"recording a {episodes}-episode demo dataset into {root} (once; ~0.5 s per episode)")
    root.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "lerobot_kfold", "demo-dataset", "--root", str(root), "--episodes", str(episodes)]
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: recording the demo dataset failed ({' '.join(cmd)})")
