"""The shared harness of the benchmarks in this folder (they measure; they are not part of the product).

Every benchmark runs the sides it compares in one invocation, interleaved (A B A B ...), and prints
medians and ratios as a Markdown table on stdout (progress goes to stderr), then one environment line
(CPUs, load, versions, commit); ``--json PATH`` also writes every run. These machines are shared and
noisy, so a ratio measured side by side is the result and absolute times are context.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INCLUDE = REPO / "include"
BENCH_CACHE = REPO / ".cache" / "bench"
# The library comes from include/ of this checkout, dev tooling (scripts.airflow_local, scripts.fake_modal)
# from the repo root.
for _path in (str(REPO), str(INCLUDE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

VERSIONS = ("torch", "lerobot", "apache-airflow", "modal", "numpy", "scikit-learn")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has (``--json``)."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every run as JSON")
    return p


def exit_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so a killed benchmark also ends the run it is timing."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def bench_env(threads: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a measured subprocess: offline, caches inside the repo, the library importable.

    ``threads`` sets every thread-pool variable torch and its BLAS read at start-up, so both sides of a
    comparison get the same number of CPU threads.
    """
    env = dict(os.environ)
    env.setdefault("HF_HOME", str(REPO / ".cache" / "huggingface"))
    env.setdefault("HF_LEROBOT_HOME", str(Path(env["HF_HOME"]) / "lerobot"))
    env.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
    env.update(
        HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1"
    )
    paths = [str(INCLUDE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------- measuring


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

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, _, line in self.lines[-n:])


def run_measured(cmd: Sequence[str], env=None, log_path: Path | None = None, timeout_s=None) -> RunRecord:
    """Run ``cmd`` in a subprocess; time it, timestamp its output lines and read its peak RSS.

    The peak RSS comes from ``wait4`` on this very child, so runs measured one after another do not
    mix (``getrusage(RUSAGE_CHILDREN)`` would report the maximum over all earlier children too).
    """
    started = time.perf_counter()
    # Its own process group (start_new_session): a timeout or Ctrl-C ends its workers too.
    pipe = subprocess.PIPE
    proc = subprocess.Popen(
        list(cmd), env=env, stdout=pipe, stderr=pipe, stdin=subprocess.DEVNULL, start_new_session=True
    )
    lines: list[tuple[float, str, str]] = []
    out: list[str] = []
    lock = threading.Lock()

    def reader(stream, name: str) -> None:
        buffer = b""
        while chunk := stream.read1(65536):
            now = time.perf_counter() - started
            if name == "out":
                out.append(chunk.decode(errors="replace"))
            *parts, buffer = re.split(rb"[\r\n]", buffer + chunk)
            with lock:
                lines.extend((now, name, p.decode(errors="replace")) for p in parts if p.strip())
        if buffer.strip():
            with lock:
                lines.append((time.perf_counter() - started, name, buffer.decode(errors="replace")))

    readers = [
        threading.Thread(target=reader, args=s, daemon=True)
        for s in ((proc.stdout, "out"), (proc.stderr, "err"))
    ]
    for t in readers:
        t.start()

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill_group) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        for t in readers:
            while t.is_alive():  # short joins: a signal is handled only when the main thread wakes up
                t.join(0.2)
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # Ctrl-C or SIGTERM (see exit_on_sigterm): leave no training process behind
        kill_group()
        raise
    finally:
        if timer:
            timer.cancel()
    wall, lines = time.perf_counter() - started, sorted(lines, key=lambda item: item[0])
    # ru_maxrss: KiB on Linux.
    record = RunRecord(
        list(cmd), os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss / 1024, lines, "".join(out)
    )
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(f"{t:9.3f} {stream} {line}" for t, stream, line in record.lines)
        log_path.write_text(" ".join(record.cmd) + "\n" + text + "\n")
    return record


def interleave[T](names: Sequence[str], repeats: int, run_one: Callable[[str, int], T], after_each=None):
    """Run every side once per repeat, in turn (A B A B ...), so a change of load hits all sides alike.

    ``run_one(name, repeat)`` measures one run; ``after_each(runs)`` sees the runs so far (e.g. to
    write them, so that a benchmark cut short still leaves its numbers).
    """
    runs: dict[str, list[T]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names:
            runs[name].append(run_one(name, repeat))
            if after_each is not None:
                after_each(runs)
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per side: the median of each key over its runs without an ``error``, and how many ran or failed."""
    summary = {}
    for name, rs in runs.items():
        ok = [r for r in rs if not r.get("error")]
        summary[name] = {key: median([r.get(key) for r in ok]) for key in keys}
        summary[name].update(n=len(ok), failed=len(rs) - len(ok))
    return summary


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


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
    out += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells[1:]]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- recording


def _command_output(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO, check=False)
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def environment() -> dict[str, Any]:
    """What a result needs next to it: cores, CPU, load, Python, package versions, GPU and commit."""
    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(line for line in lines if line.startswith("model name")).split(":", 1)[1].strip()
    for name in VERSIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[name] = importlib.metadata.version(name)
    info["gpu"] = _command_output(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    if commit and _command_output(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += "+dirty"
    info["commit"] = commit or os.environ.get("BENCH_COMMIT")
    return info


def environment_line(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {info[name]}" for name in VERSIONS if name in info)
    return (
        f"environment: {info['time']}, {info['nproc']} CPUs ({info.get('cpu')}), load {info['load_avg']}, "
        f"gpu {info.get('gpu')}, Python {info['python']}, {versions}, commit {info.get('commit')}"
    )


def write_json(args: argparse.Namespace, benchmark: str, payload: dict, complete: bool = True) -> None:
    """Write ``--json`` (if given): the benchmark, its command and settings, and ``payload``."""
    if args.json is None:
        return
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    data = {"benchmark": benchmark, "argv": sys.argv, "settings": settings, "complete": complete, **payload}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    partial = args.json.with_name(args.json.name + ".part")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    partial.replace(args.json)
    if complete:
        progress(f"wrote {args.json}")


def finish(args: argparse.Namespace, benchmark: str, payload: dict[str, Any]) -> None:
    """Print the environment line under the tables and write the complete JSON."""
    info = environment()
    print(environment_line(info))
    write_json(args, benchmark, {**payload, "environment": info})


def ensure_demo_dataset(root: Path, record_args: Sequence[str], python: str, env: dict[str, str]) -> None:
    """Record a simulator demo dataset at ``root`` (``lerobot_kfold demo-dataset ARGS``) if missing."""
    if (root / "meta" / "info.json").is_file():
        return
    if root.exists():
        raise SystemExit(f"error: {root} exists but is not a LeRobot dataset; remove it or pick another.")
    progress(f"recording a demo dataset ({' '.join(record_args)}) into {root} (once; ~0.5 s per episode)")
    root.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "lerobot_kfold", "demo-dataset", "--root", str(root), *record_args]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        raise SystemExit(f"error: recording the demo dataset failed ({' '.join(cmd)})")
