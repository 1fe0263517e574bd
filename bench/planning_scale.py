#!/usr/bin/env python
"""Fold planning time for 1e3 to 1e6 episodes: ``lerobot_kfold.splits.plan_folds`` against scikit-learn.

For each episode count, k and mode it times, interleaved (ours, baseline, ours, baseline, ...):

- ours: ``plan_folds`` on an ``EpisodeTable`` (the columnar input), giving the complete ``FoldPlan``
  (validated input, every fold's sorted train and validation episode lists, per-task counts and frame
  totals). Also, once per case, the same from a list of ``EpisodeInfo`` objects (what
  ``dataset_info.episode_infos`` returns today) and the JSON manifest (``FoldPlan.to_json``).
- baseline, on the same episode indices and task labels: plain mode, scikit-learn's ``KFold`` and
  ``GroupKFold`` (one group per episode) with shuffling; stratified mode, ``StratifiedKFold`` with
  shuffling. Every split is materialized (the generator is consumed), nothing more.

Stratified mode uses many tasks: one task per ``--episodes-per-task`` episodes (default 100, so 1e4
tasks at 1e6 episodes), every task with the same number of episodes, assigned in a shuffled order.
Times are medians of ``--repeats`` runs in this process (planning is pure CPU work, no subprocess).

Example (the defaults; about 2 minutes on 2 CPU cores)::

    .venv/bin/python bench/planning_scale.py --json .cache/bench/planning.json
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import machine_info, markdown_table, median, progress, ratio, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time lerobot_kfold.splits.plan_folds for 1e3..1e6 episodes (plain and stratified by task, "
            "k=5 and 10) against scikit-learn's KFold / GroupKFold / StratifiedKFold on the same inputs. "
            "Progress on stderr, a table on stdout."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10])
    parser.add_argument(
        "--modes", nargs="+", default=["plain", "stratified"], choices=["plain", "stratified"]
    )
    parser.add_argument(
        "--episodes-per-task", type=int, default=100, help="stratified mode: episodes per task"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (interleaved)")
    parser.add_argument(
        "--large-repeats",
        type=int,
        default=3,
        help="timed runs per side for sizes >= 1e6 (they take seconds each)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if min(args.sizes) < max(args.ks) or args.repeats < 1 or args.large_repeats < 1:
        parser.error("every size must be >= k, and repeats >= 1")
    if args.episodes_per_task < max(args.ks):
        parser.error("--episodes-per-task must be >= k (stratification needs k episodes of every task)")
    return args


def make_inputs(n: int, n_tasks: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    index = np.arange(n, dtype=np.int64)
    codes = rng.permutation(np.arange(n) % n_tasks)
    names = np.array([f"task {t:06d}" for t in range(n_tasks)], dtype=object)
    tasks = names[codes]
    lengths = rng.integers(50, 500, size=n)
    return {"index": index, "tasks": tasks, "codes": codes, "lengths": lengths}


def make_sides(table, data: dict[str, Any], config, identity) -> dict[str, Callable[[], Any]]:
    """The timed callables of one case: ours and the scikit-learn baselines, on the same inputs."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    from lerobot_kfold.splits import plan_folds

    x = data["index"]
    k, seed = config.k, config.seed
    sides: dict[str, Callable[[], Any]] = {"ours": lambda: plan_folds(table, config, identity)}
    if config.stratify_by_task:
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        sides["StratifiedKFold"] = lambda: list(skf.split(x, data["tasks"]))
    else:
        kf = KFold(n_splits=k, shuffle=True, random_state=seed)
        gkf = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        sides["KFold"] = lambda: list(kf.split(x))
        sides["GroupKFold"] = lambda: list(gkf.split(x, groups=x))
    return sides


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lerobot_kfold.splits import DatasetIdentity, EpisodeInfo, EpisodeTable, SplitConfig, plan_folds

    identity = DatasetIdentity(repo_id="bench/planning")
    results: list[dict[str, Any]] = []
    for mode in args.modes:
        stratified = mode == "stratified"
        for n in args.sizes:
            n_tasks = max(1, n // args.episodes_per_task) if stratified else 1
            data = make_inputs(n, n_tasks, args.seed)
            table = EpisodeTable(index=data["index"], task=data["tasks"], length=data["lengths"])
            repeats = args.large_repeats if n >= 1_000_000 else args.repeats
            for k in args.ks:
                config = SplitConfig(k=k, seed=args.seed, shuffle=True, stratify_by_task=stratified)
                sides = make_sides(table, data, config, identity)
                times: dict[str, list[float]] = {name: [] for name in sides}
                for _ in range(repeats):
                    for name, fn in sides.items():
                        times[name].append(timed(fn))
                # Once per case: the object-list input and the manifest, for the whole picture.
                infos = [
                    EpisodeInfo(int(i), str(t), int(length))
                    for i, t, length in zip(data["index"], data["tasks"], data["lengths"], strict=True)
                ]
                from_infos_s = timed(lambda c=config, e=infos: plan_folds(e, c, identity))
                plan = plan_folds(table, config, identity)
                to_json_s = timed(plan.to_json)
                del infos, plan
                row = {
                    "mode": mode,
                    "episodes": n,
                    "tasks": n_tasks,
                    "k": k,
                    "repeats": repeats,
                    "median_s": {name: median(ts) for name, ts in times.items()},
                    "times_s": times,
                    "ours_from_episode_infos_s": from_infos_s,
                    "manifest_to_json_s": to_json_s,
                }
                baseline = "StratifiedKFold" if stratified else "KFold"
                row["ratio_ours_over_baseline"] = ratio(row["median_s"]["ours"], row["median_s"][baseline])
                results.append(row)
                progress(
                    f"{mode} n={n:>9,} tasks={n_tasks:>6,} k={k:>2}: ours {row['median_s']['ours']:.4f}s, "
                    + ", ".join(f"{b} {row['median_s'][b]:.4f}s" for b in sides if b != "ours")
                    + f", ratio ours/{baseline} {row['ratio_ours_over_baseline']:.2f}"
                )

    header = [
        "mode",
        "episodes",
        "tasks",
        "k",
        "ours plan_folds ms",
        "baseline",
        "baseline ms",
        "ratio ours/baseline",
        "GroupKFold ms",
        "ours from EpisodeInfo list ms",
        "manifest to_json ms",
    ]
    rows = []
    for r in results:
        baseline = "StratifiedKFold" if r["mode"] == "stratified" else "KFold"
        rows.append(
            [
                r["mode"],
                f"{r['episodes']:,}",
                f"{r['tasks']:,}",
                r["k"],
                ms(r["median_s"]["ours"]),
                baseline,
                ms(r["median_s"][baseline]),
                f"{r['ratio_ours_over_baseline']:.2f}",
                ms(r["median_s"].get("GroupKFold")),
                ms(r["ours_from_episode_infos_s"]),
                ms(r["manifest_to_json_s"]),
            ]
        )
    info = machine_info()
    print(f"\nmedians of {args.repeats} runs ({args.large_repeats} at >= 1e6 episodes), milliseconds")
    print(markdown_table(header, rows))
    print(f"machine: {info.get('nproc')} CPUs, {info.get('cpu')}, load {info.get('load_avg')}")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_json(
            args.json,
            {
                "benchmark": "planning_scale",
                "argv": sys.argv,
                "settings": settings,
                "machine": info,
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
