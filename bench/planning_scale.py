#!/usr/bin/env python
"""Fold planning time for 1e3 to 1e6 episodes: ``lerobot_kfold.splits.plan_folds`` against scikit-learn.

Per episode count, k and mode, interleaved in this process: ours (``plan_folds`` on an ``EpisodeTable``:
the whole validated ``FoldPlan``; once per case also from ``EpisodeInfo`` objects, and the JSON
manifest) against ``KFold`` and ``GroupKFold`` (plain) or ``StratifiedKFold`` (stratified; one task per
``--episodes-per-task`` episodes), shuffled, every split materialized. docs/benchmarks.md, section 5.

Example (the defaults; about 2 minutes on 2 CPU cores)::

    .venv/bin/python bench/planning_scale.py --json .cache/bench/planning.json
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import benchlib
import numpy as np
from benchlib import markdown_table, progress, ratio

HEADER = "mode|episodes|tasks|k|ours plan_folds ms|baseline|baseline ms|ratio ours/baseline|GroupKFold ms"
HEADER += "|ours from EpisodeInfo list ms|manifest to_json ms"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchlib.parser(
        "Time lerobot_kfold.splits.plan_folds for 1e3..1e6 episodes (plain and stratified by task) against "
        "scikit-learn's KFold / GroupKFold / StratifiedKFold on the same inputs."
    )
    add = parser.add_argument
    add("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    add("--ks", type=int, nargs="+", default=[5, 10])
    add("--modes", nargs="+", default=["plain", "stratified"], choices=["plain", "stratified"])
    add("--episodes-per-task", type=int, default=100, help="stratified mode: episodes per task")
    add("--repeats", type=int, default=5, help="timed runs per side (interleaved)")
    add("--large-repeats", type=int, default=3, help="timed runs per side from 1e6 episodes")
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.sizes) < max(args.ks) or args.repeats < 1 or args.large_repeats < 1:
        parser.error("every size must be >= k, and repeats >= 1")
    if args.episodes_per_task < max(args.ks):
        parser.error("--episodes-per-task must be >= k (stratification needs k episodes of every task)")
    return args


def make_inputs(n: int, n_tasks: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    names = np.array([f"task {t:06d}" for t in range(n_tasks)], dtype=object)
    tasks = names[rng.permutation(np.arange(n) % n_tasks)]
    return {"index": np.arange(n, dtype=np.int64), "tasks": tasks, "lengths": rng.integers(50, 500, size=n)}


def make_sides(table, data: dict[str, Any], config, identity) -> dict[str, Callable[[], Any]]:
    """The timed callables of one case: ours and the scikit-learn baselines, on the same inputs."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    from lerobot_kfold.splits import plan_folds

    x, k, seed = data["index"], config.k, config.seed
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


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_case(args, case: dict[str, Any], data: dict[str, Any], table, identity) -> dict[str, Any]:
    from lerobot_kfold.splits import EpisodeInfo, SplitConfig, plan_folds

    stratified = case["mode"] == "stratified"
    config = SplitConfig(k=case["k"], seed=args.seed, shuffle=True, stratify_by_task=stratified)
    sides = make_sides(table, data, config, identity)
    repeats = args.large_repeats if case["episodes"] >= 1_000_000 else args.repeats
    times = benchlib.interleave(list(sides), repeats, lambda name, _: timed(sides[name]))
    medians = {name: benchlib.median(ts) for name, ts in times.items()}
    baseline = "StratifiedKFold" if stratified else "KFold"
    # Once per case: the object-list input and the manifest, for the whole picture.
    columns = zip(data["index"], data["tasks"], data["lengths"], strict=True)
    infos = [EpisodeInfo(int(i), str(t), int(length)) for i, t, length in columns]
    return {
        **case,
        "repeats": repeats,
        "baseline": baseline,
        "median_s": medians,
        "times_s": times,
        "ours_from_episode_infos_s": timed(lambda: plan_folds(infos, config, identity)),
        "manifest_to_json_s": timed(plan_folds(table, config, identity).to_json),
        "ratio_ours_over_baseline": ratio(medians["ours"], medians[baseline]),
    }


def row(r: dict[str, Any]) -> list[Any]:
    def ms(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds * 1000:.2f}"

    med, base = r["median_s"], r["baseline"]
    cells = [r["mode"], f"{r['episodes']:,}", f"{r['tasks']:,}", r["k"], ms(med["ours"]), base, ms(med[base])]
    extra = [r["ours_from_episode_infos_s"], r["manifest_to_json_s"]]
    return [*cells, f"{r['ratio_ours_over_baseline']:.2f}", ms(med.get("GroupKFold")), *map(ms, extra)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lerobot_kfold.splits import DatasetIdentity, EpisodeTable

    identity = DatasetIdentity(repo_id="bench/planning")
    results = []
    for mode in args.modes:
        for n in args.sizes:
            n_tasks = max(1, n // args.episodes_per_task) if mode == "stratified" else 1
            data = make_inputs(n, n_tasks, args.seed)
            table = EpisodeTable(index=data["index"], task=data["tasks"], length=data["lengths"])
            for k in args.ks:
                case = {"mode": mode, "episodes": n, "tasks": n_tasks, "k": k}
                results.append(r := measure_case(args, case, data, table, identity))
                times = ", ".join(f"{name} {s:.4f}s" for name, s in r["median_s"].items())
                progress(f"{mode} n={n:,} tasks={n_tasks:,} k={k}: {times}")
    print(f"\nmedians of {args.repeats} runs ({args.large_repeats} at >= 1e6 episodes), milliseconds")
    print(markdown_table(HEADER.split("|"), [row(r) for r in results]))
    benchlib.finish(args, "planning_scale", {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
