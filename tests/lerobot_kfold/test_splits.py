"""Specification of lerobot_kfold.splits: episode-level k-fold plans and their hashed manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold, StratifiedKFold

from lerobot_kfold.splits import (
    FORMAT_VERSION,
    MAX_MAP_LENGTH,
    DatasetIdentity,
    EpisodeInfo,
    EpisodeTable,
    Fold,
    FoldPlan,
    SplitConfig,
    plan_folds,
    read_plan,
    write_plan,
)

DATASET = DatasetIdentity(repo_id="test/pick_place", root="/data/pick_place", fingerprint="abc123")

# Derandomized so a failure reproduces on every machine; deadline off because CI machines are slow.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


# --- helpers ---------------------------------------------------------------------------------------------


def make_episodes(task_counts: Sequence[int], gap: int = 3, seed: int = 0) -> list[EpisodeInfo]:
    """Episodes with non-contiguous indices (step `gap`), tasks interleaved, listed in shuffled order."""
    tasks = [f"task {t}" for t, count in enumerate(task_counts) for _ in range(count)]
    rng = np.random.default_rng(seed)
    tasks = [tasks[i] for i in rng.permutation(len(tasks))]
    episodes = [EpisodeInfo(index=i * gap + 1, task=task, length=10 + i % 7) for i, task in enumerate(tasks)]
    return [episodes[i] for i in rng.permutation(len(episodes))]


def task_of(episodes: Sequence[EpisodeInfo]) -> dict[int, str]:
    return {e.index: e.task for e in episodes}


def repeat_folds(plan: FoldPlan, repeat: int) -> tuple[Fold, ...]:
    k = plan.config.k
    return plan.folds[repeat * k : (repeat + 1) * k]


def val_sets(plan: FoldPlan) -> list[frozenset[int]]:
    return [frozenset(f.val_episodes) for f in plan.folds]


def assert_valid_partition(plan: FoldPlan, all_indices: Sequence[int] | np.ndarray) -> None:
    """The core contract, checked with numpy so it also runs on a million episodes."""
    all_indices = np.sort(np.asarray(all_indices, dtype=np.int64))
    holdout = np.asarray(plan.holdout_episodes, dtype=np.int64)
    assert np.all(np.diff(holdout) > 0), "hold-out must be sorted and unique"
    assert np.isin(holdout, all_indices).all(), "hold-out must come from the given episodes"
    usable = np.setdiff1d(all_indices, holdout)
    k, repeats = plan.config.k, plan.config.repeats
    assert len(plan.folds) == k * repeats
    for repeat in range(repeats):
        folds = repeat_folds(plan, repeat)
        vals = [np.asarray(f.val_episodes, dtype=np.int64) for f in folds]
        every_val = np.concatenate(vals)
        # Every usable episode in exactly one validation fold of this repeat, and nothing else.
        assert len(every_val) == len(usable)
        assert np.array_equal(np.sort(every_val), usable)
        sizes = [len(v) for v in vals]
        assert max(sizes) - min(sizes) <= 1, sizes
        for position, (fold, val) in enumerate(zip(folds, vals, strict=True)):
            assert (fold.fold_id, fold.repeat, fold.index) == (repeat * k + position, repeat, position)
            train = np.asarray(fold.train_episodes, dtype=np.int64)
            assert np.all(np.diff(val) > 0) and np.all(np.diff(train) > 0), "episode lists are sorted"
            assert np.array_equal(train, np.setdiff1d(usable, val)), "train = usable - val"


def canonical_hash(manifest: dict[str, Any]) -> str:
    """The documented hash: sha256 over canonical JSON (sorted keys, no spaces) without content_hash."""
    body = {key: value for key, value in manifest.items() if key != "content_hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@st.composite
def configs(draw: st.DrawFn, stratify: bool | None = None, shuffle: bool | None = None) -> SplitConfig:
    shuffle = draw(st.booleans()) if shuffle is None else shuffle
    return SplitConfig(
        k=draw(st.integers(2, 8)),
        seed=draw(st.integers(0, 2**32 - 1)),
        shuffle=shuffle,
        stratify_by_task=draw(st.booleans()) if stratify is None else stratify,
        holdout_fraction=draw(st.sampled_from([0.0, 0.1, 0.25, 0.33])),
        repeats=draw(st.integers(1, 3)) if shuffle else 1,
    )


@st.composite
def cases(
    draw: st.DrawFn, stratify: bool | None = None, shuffle: bool | None = None, min_episodes: int = 0
) -> tuple[SplitConfig, list[EpisodeInfo]]:
    """A config and episodes that it can always split: >= 3k episodes per task, hold-out <= 0.33."""
    config = draw(configs(stratify=stratify, shuffle=shuffle))
    n_tasks = draw(st.integers(1, 4))
    low = max(3 * config.k, math.ceil(min_episodes / n_tasks))
    counts = draw(st.lists(st.integers(low, low + 25), min_size=n_tasks, max_size=n_tasks))
    episodes = make_episodes(counts, gap=draw(st.integers(1, 5)), seed=draw(st.integers(0, 2**16)))
    return config, episodes


# The plan most manifest tests use, and the task of each of its episodes.
MANIFEST_TASK_COUNTS = [12, 9, 15]
MANIFEST_TASKS = task_of(make_episodes(MANIFEST_TASK_COUNTS))


def move_val_episode_to_train(manifest: dict[str, Any]) -> None:
    """Hand-edit fold 0 consistently (lists, counts, task counts): repeat 0 then misses one episode."""
    fold = manifest["folds"][0]
    moved = fold["val_episodes"].pop()
    fold["train_episodes"] = sorted([*fold["train_episodes"], moved])
    task = MANIFEST_TASKS[moved]
    fold["val_task_counts"][task] -= 1
    fold["train_task_counts"][task] = fold["train_task_counts"].get(task, 0) + 1
    fold["num_val"] -= 1
    fold["num_train"] += 1


def copy_val_fold(manifest: dict[str, Any]) -> None:
    """Make fold 0 validate on fold 1's episodes, with matching counts."""
    first, second = manifest["folds"][0], manifest["folds"][1]
    for key in ("val_episodes", "num_val", "val_task_counts"):
        first[key] = second[key]


# --- behaviour -------------------------------------------------------------------------------------------


class TestPartition:
    @PROPERTY
    @given(cases())
    def test_every_usable_episode_validates_exactly_once_per_repeat(self, case):
        config, episodes = case
        plan = plan_folds(episodes, config, DATASET)
        assert_valid_partition(plan, [e.index for e in episodes])

    @PROPERTY
    @given(cases())
    def test_same_seed_and_episodes_in_any_order_give_the_same_plan(self, case):
        config, episodes = case
        plan = plan_folds(episodes, config, DATASET)
        assert plan_folds(list(reversed(episodes)), config, DATASET) == plan
        assert plan_folds(sorted(episodes, key=lambda e: e.index), config, DATASET) == plan

    @PROPERTY
    @given(cases(shuffle=True, min_episodes=40), st.integers(0, 2**32))
    def test_different_seeds_give_different_folds(self, case, other_seed):
        config, episodes = case
        other = dataclasses.replace(config, seed=other_seed)
        if other_seed == config.seed:
            return
        assert val_sets(plan_folds(episodes, config, DATASET)) != val_sets(
            plan_folds(episodes, other, DATASET)
        )

    def test_unshuffled_folds_are_contiguous_runs_of_episode_index(self):
        episodes = make_episodes([23], gap=2)
        plan = plan_folds(episodes, SplitConfig(k=4, shuffle=False), DATASET)
        ordered = sorted(e.index for e in episodes)
        expected = [[ordered[i] for i in val] for _, val in KFold(n_splits=4).split(ordered)]
        assert [list(f.val_episodes) for f in plan.folds] == expected
        assert [len(f.val_episodes) for f in plan.folds] == [6, 6, 6, 5]

    def test_episode_table_gives_the_same_plan_as_episode_infos(self):
        episodes = make_episodes([12, 9, 15])
        table = EpisodeTable(
            index=np.array([e.index for e in episodes]),
            task=np.array([e.task for e in episodes], dtype=object),
            length=np.array([e.length for e in episodes]),
        )
        config = SplitConfig(k=3, stratify_by_task=True, holdout_fraction=0.2, repeats=2, seed=7)
        assert plan_folds(table, config, DATASET) == plan_folds(episodes, config, DATASET)

    def test_fold_lookup_by_id(self):
        plan = plan_folds(make_episodes([20]), SplitConfig(k=4, repeats=2), DATASET)
        assert [plan.fold(i) for i in range(8)] == list(plan.folds)
        assert plan.fold(5).repeat == 1 and plan.fold(5).index == 1
        with pytest.raises(ValueError, match=r"fold_id 8 is out of range.*8 folds"):
            plan.fold(8)

    def test_fold_records_its_task_counts_and_frames(self):
        episodes = make_episodes([11, 7, 5])
        tasks = task_of(episodes)
        lengths = {e.index: e.length for e in episodes}
        plan = plan_folds(episodes, SplitConfig(k=3, holdout_fraction=0.1), DATASET)
        for fold in plan.folds:
            assert dict(fold.val_task_counts) == Counter(tasks[i] for i in fold.val_episodes)
            assert dict(fold.train_task_counts) == Counter(tasks[i] for i in fold.train_episodes)
            assert fold.val_frames == sum(lengths[i] for i in fold.val_episodes)
            assert fold.train_frames == sum(lengths[i] for i in fold.train_episodes)
        assert dict(plan.holdout_task_counts) == Counter(tasks[i] for i in plan.holdout_episodes)
        assert plan.holdout_frames == sum(lengths[i] for i in plan.holdout_episodes)

    def test_without_lengths_frames_are_unknown(self):
        table = EpisodeTable(index=np.arange(10), task=["a"] * 10)
        plan = plan_folds(table, SplitConfig(k=2, holdout_fraction=0.2), DATASET)
        assert plan.holdout_frames is None
        assert all(f.train_frames is None and f.val_frames is None for f in plan.folds)

    def test_dataset_identity_is_recorded_and_unknown_episode_count_filled_in(self):
        plan = plan_folds(make_episodes([10]), SplitConfig(k=2), DATASET)
        assert plan.dataset == dataclasses.replace(DATASET, num_episodes=10)
        given_count = dataclasses.replace(DATASET, num_episodes=50)
        assert plan_folds(make_episodes([10]), SplitConfig(k=2), given_count).dataset == given_count

    def test_one_million_episodes(self):
        # Correctness at scale only; the speed is measured outside the test suite.
        n = 1_000_000
        rng = np.random.default_rng(0)
        index = rng.permutation(n).astype(np.int64) * 2
        names = np.array(["pick", "place", "push", "stack", "open drawer"], dtype=object)
        table = EpisodeTable(index=index, task=names[rng.integers(0, 5, n)], length=rng.integers(30, 300, n))
        config = SplitConfig(k=5, stratify_by_task=True, holdout_fraction=0.1, seed=3)
        plan = plan_folds(table, config, DATASET)
        assert len(plan.holdout_episodes) == 100_000
        assert [len(f.val_episodes) for f in plan.folds] == [180_000] * 5
        assert [len(f.train_episodes) for f in plan.folds] == [720_000] * 5
        assert_valid_partition(plan, index)


class TestStratification:
    @PROPERTY
    @given(cases(stratify=True))
    def test_each_fold_holds_its_share_of_every_task_within_one_episode(self, case):
        config, episodes = case
        plan = plan_folds(episodes, config, DATASET)
        tasks = task_of(episodes)
        held_out = set(plan.holdout_episodes)
        usable_counts = Counter(task for index, task in tasks.items() if index not in held_out)
        for fold in plan.folds:
            val_counts = Counter(tasks[i] for i in fold.val_episodes)
            for task, count in usable_counts.items():
                assert abs(val_counts[task] - count / config.k) < 1, (task, val_counts[task], count)

    def test_unshuffled_folds_equal_sklearn_stratified_kfold(self):
        episodes = make_episodes([13, 8, 21, 5])
        plan = plan_folds(episodes, SplitConfig(k=5, shuffle=False, stratify_by_task=True), DATASET)
        ordered = sorted(episodes, key=lambda e: e.index)
        labels = [e.task for e in ordered]
        expected = [
            [ordered[i].index for i in val]
            for _, val in StratifiedKFold(n_splits=5).split(np.zeros(len(labels)), labels)
        ]
        assert [list(f.val_episodes) for f in plan.folds] == expected

    def test_shuffled_folds_have_sklearn_stratified_kfold_task_counts(self):
        episodes = make_episodes([13, 8, 21, 5])
        plan = plan_folds(episodes, SplitConfig(k=5, stratify_by_task=True, seed=11), DATASET)
        ordered = sorted(episodes, key=lambda e: e.index)
        labels = [e.task for e in ordered]
        splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
        expected = [
            Counter(labels[i] for i in val) for _, val in splitter.split(np.zeros(len(labels)), labels)
        ]
        assert [Counter(dict(f.val_task_counts)) for f in plan.folds] == expected

    @PROPERTY
    @given(cases(stratify=False))
    def test_with_a_single_task_stratifying_changes_nothing(self, case):
        config, episodes = case
        one_task = [dataclasses.replace(e, task="only task") for e in episodes]
        stratified = dataclasses.replace(config, stratify_by_task=True)
        assert plan_folds(one_task, stratified, DATASET).folds == plan_folds(one_task, config, DATASET).folds
        assert (
            plan_folds(one_task, stratified, DATASET).holdout_episodes
            == plan_folds(one_task, config, DATASET).holdout_episodes
        )

    def test_stratification_balances_a_skewed_dataset_that_plain_folds_do_not(self):
        # Unshuffled plain folds over a dataset recorded task by task give single-task folds.
        episodes = [EpisodeInfo(i, "pick" if i < 20 else "place", 50) for i in range(40)]
        plain = plan_folds(episodes, SplitConfig(k=4, shuffle=False), DATASET)
        assert [len(f.val_task_counts) for f in plain.folds] == [1, 1, 1, 1]
        stratified = plan_folds(episodes, SplitConfig(k=4, shuffle=False, stratify_by_task=True), DATASET)
        assert [dict(f.val_task_counts) for f in stratified.folds] == [{"pick": 5, "place": 5}] * 4


class TestHoldout:
    @PROPERTY
    @given(cases())
    def test_holdout_size_and_disjointness(self, case):
        config, episodes = case
        plan = plan_folds(episodes, config, DATASET)
        assert len(plan.holdout_episodes) == math.ceil(config.holdout_fraction * len(episodes))
        held_out = set(plan.holdout_episodes)
        for fold in plan.folds:
            assert held_out.isdisjoint(fold.train_episodes)
            assert held_out.isdisjoint(fold.val_episodes)

    @PROPERTY
    @given(cases(shuffle=True), st.integers(0, 100), st.integers(1, 3))
    def test_holdout_does_not_depend_on_k_shuffle_or_repeats(self, case, k_choice, other_repeats):
        config, episodes = case
        plan = plan_folds(episodes, config, DATASET)
        other_k = 2 + k_choice % (config.k - 1)  # 2 .. config.k, so the episodes still suffice
        for other in (
            dataclasses.replace(config, k=other_k, repeats=other_repeats),
            dataclasses.replace(config, shuffle=False, repeats=1),
        ):
            assert plan_folds(episodes, other, DATASET).holdout_episodes == plan.holdout_episodes

    @PROPERTY
    @given(cases(stratify=True))
    def test_stratified_holdout_gives_each_task_its_share_within_one_episode(self, case):
        config, episodes = case
        plan = plan_folds(episodes, config, DATASET)
        tasks = task_of(episodes)
        total = Counter(tasks.values())
        held = Counter(tasks[i] for i in plan.holdout_episodes)
        n_holdout = len(plan.holdout_episodes)
        for task, count in total.items():
            assert abs(held[task] - n_holdout * count / len(episodes)) < 1

    def test_zero_fraction_means_no_holdout(self):
        episodes = make_episodes([10])
        plan = plan_folds(episodes, SplitConfig(k=2, holdout_fraction=0.0), DATASET)
        assert plan.holdout_episodes == ()
        assert plan.holdout_task_counts == ()
        assert plan.holdout_frames == 0

    def test_holdout_changes_with_the_seed(self):
        episodes = make_episodes([50, 50])
        holdouts = {
            plan_folds(episodes, SplitConfig(k=2, seed=seed, holdout_fraction=0.2), DATASET).holdout_episodes
            for seed in range(5)
        }
        assert len(holdouts) == 5


class TestRepeats:
    def test_each_repeat_is_a_full_partition_with_its_own_shuffle(self):
        episodes = make_episodes([30, 25])
        plan = plan_folds(episodes, SplitConfig(k=3, repeats=4, holdout_fraction=0.1), DATASET)
        assert len(plan.folds) == 12
        assert_valid_partition(plan, [e.index for e in episodes])
        partitions = {frozenset(frozenset(f.val_episodes) for f in repeat_folds(plan, r)) for r in range(4)}
        assert len(partitions) == 4

    @pytest.mark.parametrize(
        "stratify", [pytest.param(False, id="plain"), pytest.param(True, id="stratified")]
    )
    def test_a_repeat_does_not_depend_on_how_many_repeats_follow(self, stratify):
        episodes = make_episodes([30, 25])
        config = SplitConfig(k=3, repeats=1, stratify_by_task=stratify)
        one = plan_folds(episodes, config, DATASET)
        three = plan_folds(episodes, dataclasses.replace(config, repeats=3), DATASET)
        assert three.folds[:3] == one.folds
        assert three.holdout_episodes == one.holdout_episodes


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            pytest.param({"k": 1}, r"k must be at least 2", id="k-one"),
            pytest.param({"k": 0}, r"k must be at least 2", id="k-zero"),
            pytest.param({"k": 2.5}, r"k must be an integer", id="k-float"),
            pytest.param({"k": True}, r"k must be an integer", id="k-bool"),
            pytest.param({"seed": -1}, r"seed must be at least 0", id="seed-negative"),
            pytest.param({"repeats": 0}, r"repeats must be at least 1", id="repeats-zero"),
            pytest.param(
                {"repeats": 2, "shuffle": False}, r"repeats=2 needs shuffle=True", id="repeats-no-shuffle"
            ),
            pytest.param(
                {"holdout_fraction": -0.1}, r"holdout_fraction must be at least 0", id="holdout-negative"
            ),
            pytest.param(
                {"holdout_fraction": 0.5}, r"holdout_fraction must be less than 0.5", id="holdout-half"
            ),
            pytest.param(
                {"holdout_fraction": float("nan")},
                r"holdout_fraction must be a finite number",
                id="holdout-nan",
            ),
            pytest.param(
                {"holdout_fraction": "0.1"}, r"holdout_fraction must be a finite number", id="holdout-str"
            ),
            pytest.param({"shuffle": "yes"}, r"shuffle must be true or false", id="shuffle-str"),
            pytest.param(
                {"stratify_by_task": 1}, r"stratify_by_task must be true or false", id="stratify-int"
            ),
            pytest.param(
                {"k": 512, "repeats": 3},
                rf"1536 folds exceeds {MAX_MAP_LENGTH}.*max_map_length",
                id="map-length",
            ),
        ],
    )
    def test_bad_config_is_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            SplitConfig(**kwargs)

    def test_largest_mappable_config_is_accepted(self):
        assert SplitConfig(k=256, repeats=4).num_folds == MAX_MAP_LENGTH

    def test_numpy_integers_are_accepted_as_plain_ints(self):
        config = SplitConfig(k=np.int64(3), seed=np.int32(4), repeats=np.int8(2))
        assert (config.k, config.seed, config.repeats) == (3, 4, 2)
        assert type(config.k) is int

    @pytest.mark.parametrize(
        ("episodes", "config", "match"),
        [
            pytest.param([], SplitConfig(k=2), r"no episodes given", id="empty"),
            pytest.param(
                [EpisodeInfo(3, "a", 5), EpisodeInfo(4, "a", 5), EpisodeInfo(3, "a", 5)],
                SplitConfig(k=2),
                r"duplicate episode indices: 3 appear more than once",
                id="duplicates",
            ),
            pytest.param(
                make_episodes([4]),
                SplitConfig(k=5),
                r"k=5 is greater than the number of episodes \(4\)",
                id="k-gt-n",
            ),
            pytest.param(
                make_episodes([6]),
                SplitConfig(k=5, holdout_fraction=0.3),
                r"k=5 is greater than the number of usable episodes \(4: 6 episodes minus 2 held out.*"
                r"holdout_fraction",
                id="k-gt-usable",
            ),
            pytest.param(
                [EpisodeInfo(i, "common" if i < 10 else "rare", 5) for i in range(13)],
                SplitConfig(k=5, stratify_by_task=True),
                r"stratify_by_task=True needs at least k=5 usable episodes per task.*'rare' has 3",
                id="task-too-rare",
            ),
            pytest.param(
                [EpisodeInfo(-1, "a", 5), EpisodeInfo(2, "a", 5)],
                SplitConfig(k=2),
                r"episode indices must be >= 0",
                id="negative-index",
            ),
            pytest.param(
                [EpisodeInfo(0, "a", 5), EpisodeInfo(1, None, 5)],  # type: ignore[arg-type]
                SplitConfig(k=2),
                r"every episode task must be a string",
                id="task-not-str",
            ),
            pytest.param(
                [EpisodeInfo(0, ["a", "b"], 5), EpisodeInfo(1, ["a"], 5)],  # type: ignore[arg-type]
                SplitConfig(k=2),
                r"every episode task must be a string",
                id="task-list",
            ),
            pytest.param(
                [EpisodeInfo(0, "a", -5), EpisodeInfo(1, "a", 5)],
                SplitConfig(k=2),
                r"episode lengths must be >= 0",
                id="negative-length",
            ),
            pytest.param(
                [{"index": 0}, {"index": 1}], SplitConfig(k=2), r"EpisodeInfo", id="not-episode-info"
            ),
            pytest.param(
                [EpisodeInfo(0.5, "a", 5), EpisodeInfo(1, "a", 5)],  # type: ignore[arg-type]
                SplitConfig(k=2),
                r"index must hold integers",
                id="float-index",
            ),
        ],
    )
    def test_bad_episodes_are_refused(self, episodes, config, match):
        with pytest.raises(ValueError, match=match):
            plan_folds(episodes, config, DATASET)

    def test_stratification_error_names_every_short_task_after_the_holdout(self):
        tasks = ["big"] * 20 + ["small"] * 4 + ["tiny"] * 3
        episodes = [EpisodeInfo(i, task, 5) for i, task in enumerate(tasks)]
        with pytest.raises(ValueError, match=r"after the hold-out took 3.*2 task\(s\).*'small'.*'tiny'"):
            plan_folds(episodes, SplitConfig(k=5, stratify_by_task=True, holdout_fraction=0.1), DATASET)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            pytest.param(
                {"index": [0, 1], "task": ["a"], "length": None},
                r"task has 1 entries but index has 2",
                id="task-len",
            ),
            pytest.param(
                {"index": [0, 1], "task": ["a", "b"], "length": [3]},
                r"length has shape \(1,\)",
                id="length-len",
            ),
            pytest.param(
                {"index": [0.0, 1.0], "task": ["a", "b"]}, r"index must hold integers", id="float-index"
            ),
            pytest.param({"index": [[0, 1]], "task": ["a"]}, r"index must be one-dimensional", id="2d-index"),
        ],
    )
    def test_bad_episode_table_is_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            EpisodeTable(**kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            pytest.param({"repo_id": ""}, r"repo_id must be a non-empty string", id="empty-repo"),
            pytest.param(
                {"repo_id": "a/b", "num_episodes": -1}, r"num_episodes must be >= 0", id="negative-count"
            ),
        ],
    )
    def test_bad_dataset_identity_is_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            DatasetIdentity(**kwargs)


class TestManifest:
    @pytest.fixture
    def plan(self) -> FoldPlan:
        episodes = make_episodes(MANIFEST_TASK_COUNTS)
        config = SplitConfig(k=3, seed=5, stratify_by_task=True, holdout_fraction=0.15, repeats=2)
        return plan_folds(episodes, config, DATASET)

    @PROPERTY
    @given(cases())
    def test_json_round_trip(self, case):
        config, episodes = case
        plan = plan_folds(episodes, config, DATASET)
        assert FoldPlan.from_json(plan.to_json()) == plan
        assert FoldPlan.from_dict(plan.to_dict()) == plan

    def test_round_trip_without_lengths(self):
        plan = plan_folds(
            EpisodeTable(index=np.arange(9), task=["a", "b", "c"] * 3), SplitConfig(k=3), DATASET
        )
        assert FoldPlan.from_json(plan.to_json()) == plan

    def test_manifest_contents(self, plan):
        manifest = plan.to_dict()
        assert manifest["format_version"] == FORMAT_VERSION
        assert manifest["content_hash"] == plan.content_hash() == canonical_hash(manifest)
        assert manifest["dataset"] == dataclasses.asdict(plan.dataset)
        assert manifest["config"] == dataclasses.asdict(plan.config)
        assert manifest["holdout"]["episodes"] == list(plan.holdout_episodes)
        fold = manifest["folds"][4]
        assert (fold["fold_id"], fold["repeat"], fold["index"]) == (4, 1, 1)
        assert fold["num_val"] == len(fold["val_episodes"]) == sum(fold["val_task_counts"].values())
        assert json.loads(plan.to_json()) == manifest

    def test_hash_is_stable_across_runs_and_machines(self):
        # A fixed input must hash to this value forever: if this fails, old manifests no longer match
        # re-planning, so bump FORMAT_VERSION rather than updating the value casually.
        episodes = [EpisodeInfo(i, ["pick", "place"][i % 2], 20 + i) for i in range(12)]
        config = SplitConfig(k=3, seed=1, stratify_by_task=True, holdout_fraction=0.2, repeats=2)
        plan = plan_folds(episodes, config, DatasetIdentity(repo_id="test/golden"))
        assert plan.holdout_episodes == (6, 8, 9)
        assert [f.val_episodes for f in plan.folds] == [
            (0, 1, 10), (2, 7, 11), (3, 4, 5),  # repeat 0
            (1, 2, 4), (5, 7, 10), (0, 3, 11),  # repeat 1
        ]  # fmt: skip
        # Format 2 (the dataset identity gained converted_from); format 1 gave e219c422...4bb239.
        assert plan.content_hash() == "157ce1420e88912118e38e8b8633cb77c16fb56ca852e376440fd665b4482b7e"

    @pytest.mark.parametrize(
        "tamper",
        [
            pytest.param(lambda m: m["folds"][0]["val_episodes"].reverse(), id="reorder-val"),
            pytest.param(lambda m: m["folds"][1]["train_episodes"].pop(), id="drop-train-episode"),
            pytest.param(lambda m: m["config"].update(seed=99), id="change-seed"),
            pytest.param(lambda m: m["dataset"].update(repo_id="other/dataset"), id="change-dataset"),
            pytest.param(lambda m: m["holdout"]["episodes"].clear(), id="clear-holdout"),
            pytest.param(lambda m: m.update(note="hi"), id="extra-key"),
            pytest.param(lambda m: m.update(content_hash="0" * 64), id="wrong-hash"),
        ],
    )
    def test_tampered_manifest_is_refused(self, plan, tamper):
        manifest = json.loads(plan.to_json())
        tamper(manifest)
        with pytest.raises(ValueError, match=r"content hash mismatch"):
            FoldPlan.from_dict(manifest)

    def test_manifest_without_hash_is_refused(self, plan):
        manifest = plan.to_dict()
        del manifest["content_hash"]
        with pytest.raises(ValueError, match=r"no content_hash"):
            FoldPlan.from_dict(manifest)

    @pytest.mark.parametrize(
        ("tamper", "match"),
        [
            pytest.param(move_val_episode_to_train, r"do not cover the same episodes", id="moved-episode"),
            pytest.param(
                copy_val_fold, r"do not cover the same episodes exactly once", id="val-fold-duplicated"
            ),
            pytest.param(
                lambda m: m["folds"][2].update(num_val=0), r"lists \d+ episodes but says 0", id="wrong-count"
            ),
            pytest.param(
                lambda m: m["folds"][0]["val_task_counts"].update({"task 0": 99}),
                r"task counts add up to",
                id="wrong-task-count",
            ),
            pytest.param(
                lambda m: m.update(format_version=99), r"unsupported manifest format_version", id="version"
            ),
            pytest.param(lambda m: m["config"].update(k=1), r"k must be at least 2", id="invalid-config"),
            pytest.param(
                lambda m: m["config"].pop("seed"), r"config must have keys", id="missing-config-key"
            ),
        ],
    )
    def test_inconsistent_manifest_with_recomputed_hash_is_refused(self, plan, tamper, match):
        # The hash detects accidents; these checks catch a hand-edited manifest whose hash was redone.
        manifest = plan.to_dict()
        tamper(manifest)
        manifest["content_hash"] = canonical_hash(manifest)
        with pytest.raises(ValueError, match=match):
            FoldPlan.from_dict(manifest)

    def test_invalid_json_is_refused(self, plan):
        with pytest.raises(ValueError, match=r"not valid JSON"):
            FoldPlan.from_json(plan.to_json()[:-50])

    def test_write_and_read(self, plan, tmp_path: Path):
        path = write_plan(plan, tmp_path / "plans" / "fold_plan.json")
        assert path.read_text(encoding="utf-8") == plan.to_json()
        assert read_plan(path) == plan
        assert [p.name for p in path.parent.iterdir()] == ["fold_plan.json"]  # no temporary left behind

    def test_read_refuses_a_tampered_file(self, plan, tmp_path: Path):
        path = write_plan(plan, tmp_path / "fold_plan.json")
        first_val = plan.folds[0].val_episodes[0]
        path.write_text(path.read_text().replace(f"[{first_val},", f"[{first_val + 1000},", 1))
        with pytest.raises(ValueError, match=r"content hash mismatch"):
            read_plan(path)
