"""The fold body of backend local: the library's ``train_fold``, logged into W&B from an Airflow connection.

Backend modal runs ``lerobot_kfold.modal_app.train_fold`` on Modal, with the W&B key from a Modal secret.
In the worker the same body runs through its ``.local()``; this wrapper only adds the key (see
``wandb_key``), and only for folds that log to W&B, so runs without W&B never read the connection.
"""

from __future__ import annotations

from typing import Any

from kfold_cv import wandb_key

BODY = "lerobot_kfold.modal_app:train_fold"  # imported when a fold runs: too slow for DAG parsing


def train_fold(config: dict[str, Any]) -> dict[str, Any]:
    """Train one fold in this process; same argument and result as the Modal function."""
    from modal_gpu.local import resolve_callable

    body = resolve_callable(BODY)
    if config.get("wandb_mode", "disabled") == "disabled":
        return body(config=config)
    with wandb_key.key_in_environment(wandb_key.connection_id()):
        return body(config=config)
