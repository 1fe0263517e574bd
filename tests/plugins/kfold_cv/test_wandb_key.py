"""The W&B key of backend-local folds: read from an Airflow connection, in the environment only while a
fold trains, and a clear error before training when ``wandb_mode='online'`` has no key at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kfold_cv import wandb_key

KEY = "wandb-unit-key-5d1f"


@pytest.fixture(autouse=True)
def no_key_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No connection, no WANDB_API_KEY, an empty netrc: each test adds what it needs."""
    monkeypatch.delenv("AIRFLOW_CONN_WANDB_DEFAULT", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MY_WANDB", raising=False)
    monkeypatch.delenv(wandb_key.ENV_VAR, raising=False)
    monkeypatch.delenv(wandb_key.CONN_ID_ENV_VAR, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str = "wandb_default", key: str = KEY) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "generic", "password": key})
    )


class TestConnection:
    def test_the_key_is_the_connections_password(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connection(monkeypatch)
        assert wandb_key.key_from_connection("wandb_default") == KEY

    def test_no_connection_means_no_key(self) -> None:
        assert wandb_key.key_from_connection("wandb_default") is None

    def test_the_connection_id_can_be_changed_on_the_workers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert wandb_key.connection_id() == "wandb_default"
        monkeypatch.setenv(wandb_key.CONN_ID_ENV_VAR, "my_wandb")
        assert wandb_key.connection_id() == "my_wandb"


class TestKeyInEnvironment:
    def test_sets_the_key_only_inside_the_block(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connection(monkeypatch)
        with wandb_key.key_in_environment("wandb_default"):
            assert os.environ[wandb_key.ENV_VAR] == KEY
        assert wandb_key.ENV_VAR not in os.environ

    def test_restores_a_workers_own_key_afterwards(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connection(monkeypatch)
        monkeypatch.setenv(wandb_key.ENV_VAR, "worker-key")
        with wandb_key.key_in_environment("wandb_default"):
            assert os.environ[wandb_key.ENV_VAR] == KEY
        assert os.environ[wandb_key.ENV_VAR] == "worker-key"

    def test_restores_even_when_the_fold_raises(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connection(monkeypatch)
        with pytest.raises(RuntimeError), wandb_key.key_in_environment("wandb_default"):
            raise RuntimeError("fold failed")
        assert wandb_key.ENV_VAR not in os.environ

    def test_without_a_connection_leaves_the_environment_alone(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(wandb_key.ENV_VAR, "worker-key")
        with wandb_key.key_in_environment("wandb_default"):
            assert os.environ[wandb_key.ENV_VAR] == "worker-key"


class TestCheckKeyAvailable:
    @pytest.mark.parametrize("mode", ["disabled", "offline"])
    def test_only_online_needs_a_key(self, mode: str) -> None:
        wandb_key.check_key_available(mode, "wandb_default")

    def test_online_without_any_key_says_how_to_provide_one(self) -> None:
        with pytest.raises(ValueError) as error:
            wandb_key.check_key_available("online", "wandb_default")
        message = str(error.value)
        assert "'wandb_default'" in message
        assert "WANDB_API_KEY" in message
        assert "'offline'" in message

    def test_online_accepts_the_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connection(monkeypatch)
        wandb_key.check_key_available("online", "wandb_default")

    def test_online_accepts_the_workers_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(wandb_key.ENV_VAR, "worker-key")
        wandb_key.check_key_available("online", "wandb_default")

    def test_online_accepts_a_wandb_login(self, no_key_anywhere: Path) -> None:
        no_key_anywhere.write_text(f"machine {wandb_key.WANDB_HOST}\n  login user\n  password {KEY}\n")
        wandb_key.check_key_available("online", "wandb_default")
