"""The ``validate`` task's budget checks: the worst-case cost against ``max_cost_usd``, an estimate from
steps, the run's ``max_parallel_folds`` within the deployment's cap, and how each fold is told to run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import modal
import pytest

from kfold_cv import preflight
from kfold_cv.settings import GPU_TYPES, CVSettings
from lerobot_kfold import cost
from scripts.fake_modal.control_plane import TOKEN_ID, TOKEN_SECRET, FakeModalControlPlane

MODAL = {"dataset_root": "datasets/demo", "backend": "modal", "gpu": "L4", "k": 5, "timeout_s": 14_400}
APP = "lerobot-kfold"


def settings(**values) -> CVSettings:
    return CVSettings.from_mapping({**MODAL, **values})


class TestCost:
    def test_every_gpu_of_the_form_has_a_dated_price(self):
        table = cost.price_table({})
        assert set(GPU_TYPES) <= set(table.per_s) and table.as_of

    def test_the_worst_case_and_the_estimate_from_steps_are_logged(self, capsys):
        price = preflight.check_cost(settings(steps=20_000, expected_steps_per_s=40.0))

        assert price.gpu == "L4" and price.as_of == cost.PRICES_AS_OF
        logged = capsys.readouterr().out
        assert "cost: worst case $15.98 = 5 fold calls x timeout_s 14400 s x L4 at $0.000222/s" in logged
        assert "estimate from steps $0.56 (500 s of training per fold" in logged

    def test_a_worst_case_above_max_cost_usd_is_refused_naming_the_setting_to_change(self):
        with pytest.raises(ValueError) as refused:
            preflight.check_cost(settings(max_cost_usd=10.0))

        message = str(refused.value)
        assert message.startswith("max_cost_usd=10: this run's worst case is $15.98")
        assert "Raise max_cost_usd (0: no cap), or lower timeout_s" in message

    def test_every_candidates_folds_and_the_refit_count_in_the_worst_case(self, capsys):
        candidates = json.dumps({"short": {"steps": 1000}, "long": {"steps": 20_000}})

        with pytest.raises(ValueError, match=r"worst case is \$35.16 \(11 fold calls"):
            preflight.check_cost(
                settings(candidates=candidates, refit=True, expected_steps_per_s=40.0, max_cost_usd=30.0)
            )
        # 5 folds x 2 candidates + 1 refit = 11 calls; the estimate at the longest candidate's steps.
        logged = capsys.readouterr().out
        assert "cost: worst case $35.16 = 11 fold calls x timeout_s 14400 s" in logged
        assert "estimate from steps $1.22 (500 s of training per fold" in logged

    @pytest.mark.parametrize("cap", [pytest.param(0.0, id="no-cap"), pytest.param(16.0, id="above")])
    def test_a_run_within_its_cap_passes(self, cap):
        assert preflight.check_cost(settings(max_cost_usd=cap)).gpu == "L4"

    def test_the_deployments_prices_are_used(self, monkeypatch, capsys):
        monkeypatch.setenv(cost.PRICES_ENV, json.dumps({"as_of": "2026-11-30", "L4": 0.001}))

        with pytest.raises(ValueError, match=r"worst case is \$72.00"):
            preflight.check_cost(settings(max_cost_usd=50.0))
        assert "prices of 2026-11-30" in capsys.readouterr().out


class TestFoldsAtOnce:
    @pytest.mark.parametrize(("asked", "cap", "got"), [(0, 4, 4), (2, 4, 2), (4, 4, 4)])
    def test_the_runs_value_within_the_cap_and_zero_for_the_cap(self, asked, cap, got):
        assert preflight.folds_at_once(settings(max_parallel_folds=asked), cap) == got

    def test_above_the_deployments_cap_is_refused_naming_both(self):
        with pytest.raises(ValueError, match=r"max_parallel_folds=5 is above this deployment's cap of 4"):
            preflight.folds_at_once(settings(max_parallel_folds=5), 4)


class TestFoldExecution:
    def test_local_folds_share_the_cores_where_they_train_and_watch_for_a_stall(self):
        local = settings(backend="local", stall_after_s=600)

        assert preflight.fold_execution(local, 3, None) == {
            "folds_sharing_cpus": 3,
            "gpu_price": None,
            "stall_after_s": 600.0,
        }

    def test_modal_folds_get_their_price_and_leave_the_stall_watch_to_the_trigger(self):
        price = cost.price_table({}).price("L4")

        execution = preflight.fold_execution(settings(), 2, price)

        assert execution == {"folds_sharing_cpus": None, "gpu_price": price.to_dict(), "stall_after_s": None}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeModalControlPlane]:
    functions = {f"{APP}/{name}": "tests.fake_modal.functions:echo" for name in preflight.MODAL_FUNCTIONS}
    with FakeModalControlPlane(functions, tmp_path_factory.mktemp("budget_plane")) as plane:
        yield plane


class TestValidateRun:
    def test_a_refused_run_never_reaches_modal_and_an_accepted_one_carries_its_budget(
        self, plane, monkeypatch, tmp_path: Path
    ):
        monkeypatch.setenv("MODAL_SERVER_URL", plane.url)
        connection = {"conn_type": "modal", "login": TOKEN_ID, "password": TOKEN_SECRET}
        monkeypatch.setenv("AIRFLOW_CONN_MODAL_DEFAULT", json.dumps(connection))
        modal.Client._set_env_client(None)
        try:
            with pytest.raises(ValueError, match="max_cost_usd"):
                preflight.validate_run(
                    {**MODAL, "max_cost_usd": 1.0},
                    "runs/x",
                    app_name=APP,
                    modal_conn_id="modal_default",
                    parallel_cap=2,
                )
            assert plane.events() == [], "refused before any call to Modal"

            validated = preflight.validate_run(
                {**MODAL, "max_parallel_folds": 1},
                "runs/x",
                app_name=APP,
                modal_conn_id="modal_default",
                parallel_cap=2,
            )
        finally:
            modal.Client._set_env_client(None)

        assert plane.spawns() == []
        assert (validated["max_parallel_folds"], validated["stall_after_s"]) == (1, 1800)
        assert validated["fold_execution"]["gpu_price"]["gpu"] == "L4"
