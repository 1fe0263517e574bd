#!/usr/bin/env python
"""Preloading a fold: ``fold_data.PreloadedDataset`` as it is, against a bulk-read variant (a proposal).

Today ``PreloadedDataset`` reads every item through ``LeRobotDataset.__getitem__``, which queries the
Arrow-backed ``hf_dataset`` row by row (~1.3-2.5 ms per item here, most of it in ``datasets`` copying its
``Features`` on every query). The variant reads the fold's table once (``hf_dataset[:]``, through the
same torch transform), swaps an in-memory columnar view in for ``dataset.reader.hf_dataset`` while the
items are read, again through lerobot's own ``get_item`` (so delta timestamps, padding and task strings
are lerobot's), and restores it. The script checks that both give identical tensors (dtype, shape,
values) and times them, interleaved, in this process.

Example::

    .venv/bin/python bench/preload_probe.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import BENCH_CACHE, bench_env, ensure_demo_dataset, markdown_table, median, progress, ratio


class _Column:
    """One column: ``col[list]`` gives a list of row tensors, as the Arrow column does."""

    def __init__(self, values: Any):
        self.values = values

    def __getitem__(self, index):
        if isinstance(index, list) and isinstance(self.values, torch.Tensor):
            return list(self.values[index].unbind(0))
        return self.values[index]


class _InMemoryTable:
    """The parts of ``datasets.Dataset`` that lerobot's ``DatasetReader.get_item`` uses, from memory."""

    def __init__(self, hf_dataset):
        batch = hf_dataset[:]
        self.columns = {
            key: torch.stack(v) if isinstance(v, list) and v and isinstance(v[0], torch.Tensor) else v
            for key, v in batch.items()
        }
        self.length = len(hf_dataset)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        if isinstance(key, str):
            return _Column(self.columns[key])
        return {name: values[key] for name, values in self.columns.items()}


def preload_bulk(dataset):
    from lerobot_kfold.fold_data import PreloadedDataset

    reader = dataset.reader
    original = reader.hf_dataset
    reader.hf_dataset = _InMemoryTable(original)
    try:
        return PreloadedDataset(dataset)
    finally:
        reader.hf_dataset = original


def identical(a, b) -> bool:
    if set(a._columns) != set(b._columns):
        return False
    for key, x in a._columns.items():
        y = b._columns[key]
        if isinstance(x, torch.Tensor):
            if not (
                isinstance(y, torch.Tensor)
                and x.dtype == y.dtype
                and x.shape == y.shape
                and torch.equal(x, y)
            ):
                return False
        elif x != y:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=BENCH_CACHE / "so101_40", help="LeRobot dataset (demo)")
    parser.add_argument(
        "--episodes", type=int, nargs="*", default=None, help="episodes (default: all but the last 8)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ensure_demo_dataset(args.root, 40, sys.executable, bench_env())

    from lerobot.datasets.factory import resolve_delta_timestamps

    from lerobot_kfold import fold_data, training, training_config
    from lerobot_kfold.runner import quiet_third_party_logs

    quiet_third_party_logs()
    root = str(args.root)
    meta = fold_data.load_metadata("local/probe", root)
    episodes = args.episodes if args.episodes else list(range(meta.total_episodes - 8))
    config = training_config.FoldTrainingConfig(
        dataset_root=root,
        train_episodes=episodes,
        val_episodes=[e for e in range(meta.total_episodes) if e not in episodes][:1] or [0],
        output_dir="/tmp/unused",
        policy_overrides=dict(training_config.DEMO_ACT_OVERRIDES),
    )
    delta = resolve_delta_timestamps(training.make_policy_config(config, "cpu"), meta)
    times: dict[str, list[float]] = {"PreloadedDataset (today)": [], "bulk read (proposal)": []}
    same = True
    for rep in range(args.repeats):
        results = {}
        for name, fn in (
            ("PreloadedDataset (today)", fold_data.PreloadedDataset),
            ("bulk read (proposal)", preload_bulk),
        ):
            dataset = fold_data.make_episode_dataset("local/probe", root, episodes, delta)
            started = time.perf_counter()
            results[name] = fn(dataset)
            times[name].append(time.perf_counter() - started)
        same = same and identical(*results.values())
        progress(f"repeat {rep + 1}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()))
    today, bulk = (median(t) for t in times.values())
    n = len(results["bulk read (proposal)"])
    rows = [[name, median(t), 1000 * median(t) / n] for name, t in times.items()]
    rows.append(["ratio proposal / today", ratio(bulk, today), ""])
    print(f"\n{len(episodes)} episodes, {n} items, medians of {args.repeats}; identical items: {same}")
    print(markdown_table(["preload", "seconds", "ms per item"], rows))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
