#!/usr/bin/env python
"""Local k-fold wall time: folds in parallel against one after another, with torch threads per fold.

Runs the whole ``python -m lerobot_kfold run`` (plan, train every fold, aggregate) on the same dataset,
folds and steps under several settings, interleaved (setting A, B, C, A, B, C, ...), each in its own
subprocess with a fresh output folder, and reports median wall times and the speedup against the
first setting. The defaults compare, on a 2-core machine:

- ``2x1``: ``--parallel 2 --torch-threads 1`` (two folds at once, one thread each; what ``make demo`` uses)
- ``1x2``: ``--parallel 1 --torch-threads 2`` (one fold at a time with both cores)
- ``1x1``: ``--parallel 1 --torch-threads 1``

Example (the defaults: k=2, 200 steps per fold, 3 repeats; about 5 minutes on 2 CPU cores)::

    .venv/bin/python bench/local_parallel.py --json .cache/bench/local_parallel.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from benchlib import (
    BENCH_CACHE,
    bench_env,
    ensure_demo_dataset,
    exit_on_sigterm,
    machine_info,
    markdown_table,
    median,
    progress,
    ratio,
    run_measured,
    write_json,
)


def setting(text: str) -> tuple[int, int]:
    try:
        parallel, threads = (int(x) for x in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected PARALLELxTHREADS such as 2x1, got {text!r}") from exc
    if parallel < 1 or threads < 1:
        raise argparse.ArgumentTypeError("parallel and threads must be >= 1")
    return parallel, threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Wall time of a local k-fold run with folds in parallel against sequential, with torch threads "
            "set per fold (medians of interleaved runs; speedup against the first setting). Progress on "
            "stderr, a table on stdout."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=BENCH_CACHE / "so101_40",
        help="LeRobot dataset; the simulator demo dataset is recorded there first if missing",
    )
    parser.add_argument("--episodes", type=int, default=40, help="episodes to record when --root is missing")
    parser.add_argument(
        "--settings",
        type=setting,
        nargs="+",
        default=[(1, 2), (2, 1), (1, 1)],
        metavar="PxT",
        help="PARALLELxTHREADS settings to compare; the first is the reference of the speedups",
    )
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="training steps per fold")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sim-eval-episodes", type=int, default=0, help="rollouts per fold (0: none)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (interleaved)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs lerobot_kfold")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH_CACHE / "local_parallel",
        help="scratch folder (run outputs, logs); emptied first",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.k < 2 or args.steps < 1:
        parser.error("--repeats >= 1, --k >= 2 and --steps >= 1 are required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    args.root = args.root.resolve()
    work = args.work_dir.resolve()
    env = bench_env()  # no OMP_NUM_THREADS: --torch-threads alone sets each fold's threads
    ensure_demo_dataset(args.root, args.episodes, args.python, env)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    base = [args.python, "-m", "lerobot_kfold", "run", "--root", str(args.root), "--k", str(args.k)]
    base += ["--steps", str(args.steps), "--eval-every", str(args.steps), "--save-every", str(args.steps)]
    base += ["--batch-size", str(args.batch_size), "--sim-eval-episodes", str(args.sim_eval_episodes)]
    base += ["--device", "cpu", "--json"]

    names = [f"{p}x{t}" for p, t in args.settings]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    progress(
        f"k={args.k}, {args.steps} steps per fold, settings {', '.join(names)} (parallel x torch threads), "
        f"{args.repeats} interleaved repeats"
    )
    failures = 0
    for rep in range(args.repeats):
        for name, (parallel, threads) in zip(names, args.settings, strict=True):
            out = work / "runs" / f"{name}_{rep}"
            cmd = [
                *base,
                "--parallel",
                str(parallel),
                "--torch-threads",
                str(threads),
                "--output-dir",
                str(out),
            ]
            progress(f"repeat {rep + 1}/{args.repeats}: --parallel {parallel} --torch-threads {threads} ...")
            record = run_measured(cmd, env=env, log_path=work / "logs" / f"{name}_{rep}.log")
            run: dict[str, Any] = {
                "wall_s": round(record.wall_s, 3),
                "peak_rss_mib": round(record.peak_rss_mib, 1),
                "error": None,
            }
            try:
                summary = json.loads(record.stdout)
                run["fold_wall_s"] = [f.get("wall_s") for f in summary.get("folds", [])]
                run["run_wall_s"] = summary.get("wall_s")  # as the runner measured it (no interpreter start)
                n_ok = summary.get("totals", {}).get("n_succeeded")
            except json.JSONDecodeError:
                summary, n_ok = None, None
            if record.returncode != 0 or summary is None or n_ok != args.k:
                run["error"] = f"exit status {record.returncode}, {n_ok} of {args.k} folds succeeded"
                failures += 1
                progress(f"  {name} FAILED:\n{record.tail(15)}")
            else:
                progress(f"  {name}: wall {run['wall_s']:.1f}s")
            runs[name].append(run)

    reference = names[0]
    table = {}
    for name in names:
        ok = [r for r in runs[name] if not r["error"]]
        table[name] = {
            "wall_s": median([r["wall_s"] for r in ok]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in ok]),
            "n": len(ok),
        }
    for name in names:
        # Speedup against the reference: its wall time over this one's (above 1: this one is faster).
        table[name]["speedup_vs_" + reference] = ratio(table[reference]["wall_s"], table[name]["wall_s"])
    fastest = min((n for n in names if table[n]["wall_s"] is not None), key=lambda n: table[n]["wall_s"])
    header = [
        "setting (parallel x threads)",
        "runs",
        "wall s (median)",
        f"speedup vs {reference}",
        "peak RSS MiB",
    ]
    rows = [
        [
            f"--parallel {p} --torch-threads {t}",
            table[n]["n"],
            table[n]["wall_s"],
            table[n]["speedup_vs_" + reference],
            table[n]["peak_rss_mib"],
        ]
        for n, (p, t) in zip(names, args.settings, strict=True)
    ]
    info = machine_info()
    print(f"\nk={args.k}, {args.steps} steps per fold, medians of {args.repeats}; fastest: {fastest}")
    print(markdown_table(header, rows))
    print(f"machine: {info.get('nproc')} CPUs, {info.get('cpu')}, load {info.get('load_avg')}")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_json(
            args.json,
            {
                "benchmark": "local_parallel",
                "argv": sys.argv,
                "settings": settings,
                "command": base,
                "machine": info,
                "summary": table,
                "fastest": fastest,
                "runs": runs,
            },
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
