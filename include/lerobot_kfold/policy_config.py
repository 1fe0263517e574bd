"""The lerobot policy config of a run, and the checks that it is one lerobot can build.

Why a module of its own: a typo or a wrong value in ``policy_overrides`` used to surface inside the fold,
after the data was loaded, in torch's words. Here the overrides are checked against the policy config's
own fields and their types (the validate task: no dataset needed), and the policy is built once on
torch's ``meta`` device against the dataset's features (where the dataset is: ``prepare_dataset``), which
allocates nothing and catches impossible shapes. Both run before any GPU is paid for.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from lerobot_kfold.training_config import TrainingSettings


def policy_config_class(policy_type: str) -> type:
    """lerobot's config dataclass of ``policy_type`` (e.g. ACTConfig)."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies import factory  # noqa: F401  (registers lerobot's policy configs)

    try:
        return PreTrainedConfig.get_choice_class(policy_type)
    except Exception as exc:
        raise ValueError(f"unknown policy_type {policy_type!r}: lerobot has no such policy.") from exc


def check_policy_overrides(policy_type: str, overrides: dict[str, Any]) -> set[str]:
    """Fail unless every override names a field of the policy's config and has that field's type.

    Returns the config's field names. Called before planning, so a typo costs no training.
    """
    config_cls = policy_config_class(policy_type)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"policy_overrides {unknown} are not fields of lerobot's {config_cls.__name__}.")
    hints = _type_hints(config_cls)
    for name, value in overrides.items():
        annotation = hints.get(name)
        if annotation is not None and not _matches(value, annotation):
            raise ValueError(
                f"policy_overrides[{name!r}] must be {_type_name(annotation)} (lerobot's "
                f"{config_cls.__name__}.{name}), got {value!r}"
            )
    return fields


def make_policy_config(training: TrainingSettings, device: str) -> Any:
    """lerobot's policy config for ``policy_type`` with the run's chunk size, lr and overrides.

    Everything else is lerobot's default, the pretrained backbone included (as ``lerobot-train
    --policy.type=act`` builds it); ``pretrained_backbone=False`` trains the backbone from scratch.

    lerobot's own checks of the config (e.g. n_action_steps within chunk_size) raise ``ValueError``
    naming policy_overrides.
    """
    from lerobot.policies.factory import make_policy_config as lerobot_make_policy_config

    overrides = training.policy_fields()
    fields = check_policy_overrides(training.policy_type, overrides)
    kwargs: dict[str, Any] = {"device": device, "push_to_hub": False}
    if "chunk_size" in fields:
        kwargs["chunk_size"] = training.chunk_size
    if "n_action_steps" in fields:
        kwargs["n_action_steps"] = training.chunk_size
    if "optimizer_lr" in fields:
        kwargs["optimizer_lr"] = training.learning_rate
    if "pretrained_backbone_weights" in fields and not training.pretrained_backbone:
        # lerobot's default loads ImageNet weights (as lerobot-train does); off: from scratch.
        kwargs["pretrained_backbone_weights"] = None
    kwargs.update(overrides)
    try:
        return lerobot_make_policy_config(training.policy_type, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"lerobot refused the policy config (policy_overrides, chunk_size): {exc}") from exc


def backbone_weights(training: TrainingSettings) -> str | None:
    """The pretrained backbone weights a fold of these settings loads (None: none; camera datasets only)."""
    if not training.pretrained_backbone:
        return None
    fields = {f.name: f for f in dataclasses.fields(policy_config_class(training.policy_type))}
    if "pretrained_backbone_weights" not in fields:
        return None
    default = fields["pretrained_backbone_weights"].default
    return training.policy_fields().get("pretrained_backbone_weights", default) or None


def check_policy_builds(training: TrainingSettings, dataset_root: str, repo_id: str) -> None:
    """Build the policy on torch's ``meta`` device for the dataset's features: impossible sizes fail here.

    Nothing is allocated and no weights are fetched (the meta device has no data).
    """
    import torch
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
    from lerobot.policies import make_policy

    config = make_policy_config(training, "cpu")
    if hasattr(config, "pretrained_backbone_weights"):
        config.pretrained_backbone_weights = None  # the meta build checks shapes, never weights
    config.device = "meta"
    meta = LeRobotDatasetMetadata(repo_id, root=dataset_root)
    try:
        with torch.device("meta"):
            make_policy(cfg=config, ds_meta=meta)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ValueError(
            f"lerobot cannot build a {training.policy_type} policy with these settings for this dataset "
            f"(check policy_overrides and chunk_size): {exc}"
        ) from exc


def _type_hints(config_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # an annotation lerobot's module cannot resolve: no type checks then
        return {}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a config field's annotation; unknown kinds are left to lerobot."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple) or origin in (list, tuple):
        return isinstance(value, list | tuple)
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return True


def _type_name(annotation: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if annotation in names:
        return names[annotation]
    return f"of type {annotation}".replace("typing.", "")
