"""Candidates: expansion of named overrides and grids, the refusals before any spend, paired plans."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lerobot_kfold import jobs
from lerobot_kfold.candidates import SelectionSettings
from lerobot_kfold.run_settings import RunSettings
from lerobot_kfold.storage import fold_folder

BASE = {"dataset_root": "datasets/demo", "k": 3, "steps": 8, "chunk_size": 10}


def settings(**values: Any) -> RunSettings:
    return RunSettings.from_mapping({**BASE, **values})


def dataset(n: int = 12, simulator: bool = True) -> jobs.PreparedDataset:
    episodes = [{"index": i, "task": "pick", "length": 50} for i in range(n)]
    return jobs.PreparedDataset(
        dataset_root="datasets/demo",
        repo_id="local/demo",
        fingerprint="f",
        num_episodes=n,
        fps=30.0,
        features=[],
        episodes=episodes,
        simulator=simulator,
    )


class TestExpansion:
    def test_without_candidates_the_run_is_its_base_settings(self) -> None:
        base = settings()
        (only,) = base.candidates()
        assert (only.name, only.overrides, only.settings) == ("base", {}, base)

    def test_named_candidates_override_the_base_in_the_order_given(self) -> None:
        text = json.dumps(
            {"chunk20": {"chunk_size": 20}, "chunk10": {}, "vae": {"policy_overrides": {"use_vae": True}}}
        )
        candidates = settings(candidates=text).candidates()
        assert [c.name for c in candidates] == ["chunk20", "chunk10", "vae"]
        assert [c.settings.training.chunk_size for c in candidates] == [20, 10, 10]
        assert candidates[2].settings.training.policy_fields()["use_vae"] is True
        assert {c.settings.split for c in candidates} == {settings().split}, "one split for all"

    def test_a_grid_is_one_candidate_per_combination(self) -> None:
        candidates = settings(
            candidate_grid={"chunk_size": [10, 20], "learning_rate": [0.001, 0.0003]}
        ).candidates()
        assert [c.name for c in candidates] == [
            "chunk_size=10,learning_rate=0.001",
            "chunk_size=10,learning_rate=0.0003",
            "chunk_size=20,learning_rate=0.001",
            "chunk_size=20,learning_rate=0.0003",
        ]
        assert candidates[3].overrides == {"chunk_size": 20, "learning_rate": 0.0003}

    def test_the_given_order_survives_the_trip_through_the_form_and_xcom(self) -> None:
        text = json.dumps({"zeta": {"steps": 4}, "alpha": {"steps": 6}})
        through_xcom = RunSettings.from_mapping(settings(candidates=text).to_dict())
        assert [c.name for c in through_xcom.candidates()] == ["zeta", "alpha"]


class TestRefusedBeforeAnySpend:
    @pytest.mark.parametrize(
        ("values", "match"),
        [
            pytest.param(
                {"candidates": {"a": {"chunk_sise": 20}}},
                r"'chunk_sise' -> did you mean 'chunk_size'",
                id="unknown",
            ),
            pytest.param(
                {"candidates": {"a": {"k": 5}}}, "'k', which may not vary.*same fold plan", id="split"
            ),
            pytest.param({"candidates": {"a": {"seed": 1}}}, "'seed', which may not vary", id="seed"),
            pytest.param({"candidates": {"a": {"dataset_root": "x"}}}, "same dataset", id="dataset"),
            pytest.param(
                {"candidates": {"a": {"selection_metric": "best_val_l1"}}}, "summarized", id="aggregation"
            ),
            pytest.param(
                {"candidates": {"a": {"sim_eval_episodes": 5}}}, "same closed-loop rollouts", id="rollouts"
            ),
            pytest.param({"candidates": {"a": {"refit": True}}}, "cannot nest", id="selection"),
            pytest.param(
                {"candidates": {"a": {"chunk_size": 0}}},
                "candidate 'a': chunk_size must be at least 1",
                id="value",
            ),
            pytest.param(
                {"candidates": {"a": {"steps": 4}, "b": {"steps": 4}}},
                "'a' and 'b' train exactly",
                id="twins",
            ),
            pytest.param(
                {"candidates": '{"a": {"steps": 4}, "a": {"steps": 5}}'}, "key 'a' twice", id="duplicate-name"
            ),
            pytest.param({"candidates": {"a b": {}}}, "candidate name 'a b'", id="name"),
            pytest.param({"candidates": {"a": 20}}, "must be a JSON object of settings", id="not-an-object"),
            pytest.param({"candidates": "[1, 2]"}, "candidates must be a JSON object", id="not-json-object"),
            pytest.param({"candidate_grid": {"steps": 4}}, "non-empty list", id="grid-not-a-list"),
            pytest.param(
                {"candidate_grid": {"policy_overrides": [{"a": 1}]}},
                "numbers, strings or booleans",
                id="grid-object",
            ),
            pytest.param({"candidates": {"a": {}}, "candidate_grid": {"steps": [4]}}, "not both", id="both"),
            pytest.param(
                {"candidates": {"a": {}, "b": {"steps": 4}}, "baseline": "c"},
                "baseline 'c' is not a candidate",
                id="baseline",
            ),
            pytest.param(
                {"k": 400, "candidate_grid": {"steps": [4, 5, 6]}},
                r"1200 fold tasks exceeds 1024",
                id="map-limit",
            ),
        ],
    )
    def test_a_bad_candidate_spec_is_refused_with_the_reason(
        self, values: dict[str, Any], match: str
    ) -> None:
        with pytest.raises(ValueError, match=match) as excinfo:
            settings(**values)
        assert "candidate" in str(excinfo.value) or "baseline" in str(excinfo.value)

    def test_too_many_candidates(self) -> None:
        with pytest.raises(ValueError, match="exceed 64"):
            SelectionSettings(candidate_grid={"steps": list(range(1, 66))})


class TestPairedPlans:
    def test_every_candidate_trains_the_same_folds_with_the_same_seed(self) -> None:
        run = settings(candidates={"a": {}, "b": {"learning_rate": 0.0003}}, seed=7)
        planned = jobs.plan_run(run, dataset(), "runs/r", "r")
        by_candidate: dict[str, list[Any]] = {}
        for config in planned.folds:
            by_candidate.setdefault(config.candidate, []).append(config)
        assert list(by_candidate) == ["a", "b"]
        a, b = by_candidate["a"], by_candidate["b"]
        for x, y in zip(a, b, strict=True):
            assert (x.fold_id, x.train_episodes, x.val_episodes, x.seed) == (
                y.fold_id,
                y.train_episodes,
                y.val_episodes,
                7,
            )
        assert [x.output_dir for x in a] == [fold_folder("runs/r", i, "a") for i in range(3)]
        assert a[0].output_dir == "runs/r/folds/a/fold_000"
        assert (a[0].learning_rate, b[0].learning_rate) == (0.001, 0.0003)
        assert [x.label for x in b] == ["b / fold 0", "b / fold 1", "b / fold 2"]
        assert "x 2 candidates (a, b)" in planned.describe()

    def test_one_candidate_keeps_todays_layout_and_labels(self) -> None:
        for run in (settings(), settings(candidates={"only": {"steps": 4}})):
            planned = jobs.plan_run(run, dataset(), "runs/r", "r")
            assert [c.output_dir for c in planned.folds] == [f"runs/r/folds/fold_{i:03d}" for i in range(3)]
            assert [c.label for c in planned.folds] == ["fold 0", "fold 1", "fold 2"]
            assert {c.candidate for c in planned.folds} == {""}


class TestRefitPlan:
    def test_the_chosen_candidate_trains_on_every_non_holdout_episode_and_tests_once_on_the_holdout(
        self,
    ) -> None:
        run = settings(candidates={"a": {}, "b": {"steps": 6}}, holdout_fraction=0.25, sim_eval_episodes=4)
        planned = jobs.plan_run(run, dataset(), "runs/r", "r")
        refit = jobs.plan_refit(run, planned.plan, {"candidate": "b"}, "runs/r", "r")
        assert refit.train_episodes == sorted(set(range(12)) - set(planned.plan.holdout_episodes))
        assert refit.val_episodes == list(planned.plan.holdout_episodes) and len(refit.val_episodes) == 3
        assert (refit.steps, refit.eval_every) == (6, 6), "validated once, at the end: no checkpoint picked"
        assert (refit.sim_eval_episodes, refit.sim_eval_seed) == (4, jobs.REFIT_SIM_SEED)
        assert (refit.final_fit, refit.label, refit.output_dir) == (True, "refit of b", "runs/r/refit")

    def test_without_a_holdout_the_refit_trains_on_everything_and_tests_nothing(self) -> None:
        run = settings(sim_eval_episodes=4)
        planned = jobs.plan_run(run, dataset(), "runs/r", "r")
        refit = jobs.plan_refit(run, planned.plan, {}, "runs/r", "r")
        assert (refit.train_episodes, refit.val_episodes) == (list(range(12)), [])
        assert refit.sim_eval_episodes == 0
        assert refit.label == "refit"

    def test_a_summary_of_another_candidate_is_refused(self) -> None:
        run = settings(candidates={"a": {}, "b": {"steps": 6}})
        planned = jobs.plan_run(run, dataset(), "runs/r", "r")
        with pytest.raises(ValueError, match="'c', which is not a candidate"):
            jobs.plan_refit(run, planned.plan, {"candidate": "c"}, "runs/r", "r")
