"""The trigger form of a k-fold run: one flat, JSON-schema-validated Param per ``CVSettings`` field.

The schema catches what it can before a run is even created (the REST API answers HTTP 400 naming the
parameter, the UI form refuses to submit); the ``validate`` task then applies every rule of
``CVSettings`` and the library before any GPU is paid for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow.sdk import Param

from kfold_cv.settings import (
    BACKENDS,
    GPU_TYPES,
    POLICY_PRESETS,
    POLICY_TYPES,
    SELECTION_METRICS,
    CVSettings,
)
from lerobot_kfold.splits import MAX_MAP_LENGTH

# Per field: the JSON-schema constraints and the form's description (its defaults come from CVSettings).
_SCHEMA: dict[str, dict[str, Any]] = {
    "dataset_root": {
        "type": ["string", "null"],
        "description": "LeRobot dataset folder. Relative paths are under the storage root "
        "($LEROBOT_KFOLD_STORAGE locally, the Modal Volume for backend modal). Leave empty to fetch "
        "dataset_repo_id from the hub.",
    },
    "dataset_repo_id": {
        "type": ["string", "null"],
        "pattern": r"^$|^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$",
        "description": "Hub dataset id 'owner/name'; fetched once into storage when dataset_root is empty.",
    },
    "k": {"type": "integer", "minimum": 2, "maximum": MAX_MAP_LENGTH, "description": "Number of folds."},
    "seed": {"type": "integer", "minimum": 0, "description": "Seed of the episode shuffle and of training."},
    "stratify_by_task": {
        "type": "boolean",
        "description": "Keep each task's share of episodes in every fold.",
    },
    "holdout_fraction": {
        "type": "number",
        "minimum": 0,
        "maximum": 0.9,
        "description": "Share of episodes held out of every fold as a final test set (0: none).",
    },
    "repeats": {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "Repeated k-fold: k x repeats fold tasks, each repeat reshuffled.",
    },
    "policy_type": {"type": "string", "enum": list(POLICY_TYPES), "description": "lerobot policy to train."},
    "policy_preset": {
        "type": "string",
        "enum": list(POLICY_PRESETS),
        "description": "'small': a small ACT that learns the simulator demo in CPU minutes; "
        "'lerobot': lerobot's default ACT.",
    },
    "steps": {"type": "integer", "minimum": 1, "description": "Training steps per fold."},
    "batch_size": {"type": "integer", "minimum": 1, "maximum": 4096},
    "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "chunk_size": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Action chunk length."},
    "eval_every": {
        "type": "integer",
        "minimum": 1,
        "description": "Validate on the held-out episodes every N steps.",
    },
    "save_every": {
        "type": "integer",
        "minimum": 1,
        "description": "Checkpoint every N steps (resume point).",
    },
    "sim_eval_episodes": {
        "type": "integer",
        "minimum": 0,
        "maximum": 1000,
        "description": "Closed-loop episodes in the simulator per fold (simulator demo dataset only).",
    },
    "wandb_mode": {"type": "string", "enum": ["disabled", "offline", "online"]},
    "backend": {
        "type": "string",
        "enum": list(BACKENDS),
        "description": "'local': folds train in the Airflow worker; 'modal': one Modal GPU per fold.",
    },
    "gpu": {
        "type": "string",
        "enum": list(GPU_TYPES),
        "description": "Modal GPU type per fold (backend modal).",
    },
    "timeout_s": {
        "type": "integer",
        "minimum": 60,
        "maximum": 24 * 3600,
        "description": "Seconds one fold may run on Modal.",
    },
    "min_successful_folds": {
        "type": "integer",
        "minimum": 0,
        "description": "Fewest successful folds for a summary; 0 means every fold must succeed.",
    },
    "selection_metric": {
        "type": "string",
        "enum": list(SELECTION_METRICS),
        "description": "Metric that picks the best fold (val_l1: lowest; sim_success_rate: highest).",
    },
}


def kfold_params(**defaults: Any) -> dict[str, Param]:
    """Params for a k-fold DAG; keyword arguments replace the defaults (validated like a conf)."""
    base = CVSettings.from_mapping(defaults).to_dict()
    fields = [f.name for f in dataclasses.fields(CVSettings)]
    missing = set(fields) ^ set(_SCHEMA)
    if missing:  # a programming error: every setting needs its schema
        raise AssertionError(f"Params schema out of sync with CVSettings: {sorted(missing)}")
    return {name: Param(base[name], title=name.replace("_", " "), **_SCHEMA[name]) for name in fields}
