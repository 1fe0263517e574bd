"""The local backend's fold body: the library's ``train_fold`` with the W&B key from a connection."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from kfold_cv import local_folds, wandb_key

KEY = "wandb-local-fold-key-77ab"
SEEN: list[str | None] = []
REAL_BODY = local_folds.BODY  # before the fixture swaps it


def record_key(config: dict[str, Any]) -> dict[str, Any]:
    """A stand-in fold body: remembers the W&B key it was given."""
    SEEN.append(os.environ.get(wandb_key.ENV_VAR))
    return {"status": "ok", "fold_id": config["fold_id"]}


@pytest.fixture(autouse=True)
def stand_in_body(monkeypatch: pytest.MonkeyPatch) -> None:
    SEEN.clear()
    monkeypatch.setattr(local_folds, "BODY", f"{__name__}:record_key")
    monkeypatch.delenv(wandb_key.ENV_VAR, raising=False)
    monkeypatch.delenv(wandb_key.CONN_ID_ENV_VAR, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", json.dumps({"conn_type": "generic", "password": KEY}))


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_fold_logging_to_wandb_trains_with_the_connections_key(mode: str) -> None:
    assert local_folds.train_fold({"fold_id": 0, "wandb_mode": mode}) == {"status": "ok", "fold_id": 0}
    assert SEEN == [KEY]
    assert wandb_key.ENV_VAR not in os.environ


def test_a_fold_without_wandb_never_reads_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reading(conn_id: str) -> None:
        raise AssertionError("the connection was read")

    monkeypatch.setattr(wandb_key, "key_from_connection", no_reading)
    local_folds.train_fold({"fold_id": 1, "wandb_mode": "disabled"})
    assert SEEN == [None]


def test_the_body_is_the_same_as_backend_modals() -> None:
    import modal

    from lerobot_kfold import modal_app

    module, _, name = REAL_BODY.partition(":")
    assert module == modal_app.__name__
    assert isinstance(getattr(modal_app, name), modal.Function) and name == "train_fold"
