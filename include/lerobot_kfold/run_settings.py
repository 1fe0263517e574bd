"""``RunSettings``: every setting of one k-fold run, grouped the way the work is, flat at the edges.

The settings are declared once, in the config of the step that uses them (``declared`` explains how):

=============  ===================================  ============================
group          class                                module
=============  ===================================  ============================
dataset        ``DatasetSettings``                  here
split          ``SplitConfig``                      ``splits``
training       ``TrainingSettings``                 ``training_config``
evaluation     ``EvaluationSettings``               ``training_config``
aggregation    ``AggregateConfig``                  ``aggregate``
selection      ``SelectionSettings``                ``candidates``
=============  ===================================  ============================

At the edges (the CLI, the Airflow trigger form, XCom) a run's settings are one flat mapping of scalar
values: setting names are unique across groups. The Airflow side adds its compute settings (backend,
GPU, timeout) the same way, in ``plugins/kfold_cv/settings.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lerobot_kfold.aggregate import AggregateConfig
from lerobot_kfold.candidates import Candidate, SelectionSettings, expand
from lerobot_kfold.declared import build, check_declared, declared, edge_value, setting, split_known
from lerobot_kfold.splits import MAX_MAP_LENGTH, Fold, SplitConfig
from lerobot_kfold.storage import check_path_text
from lerobot_kfold.training_config import (
    EvaluationSettings,
    FoldTrainingConfig,
    TrainingSettings,
    fold_config,
)

# A hub id 'owner/name': letters, digits, '.', '_' and '-', neither part made only of dots.
REPO_ID_PATTERN = r"^$|^(?!\.+/)[A-Za-z0-9._-]{1,96}/(?!\.+$)[A-Za-z0-9._-]{1,96}$"


@dataclass
class DatasetSettings:
    """Which dataset: a LeRobot dataset folder, or a hub dataset fetched once into storage."""

    # Relative paths are taken under the storage root ($LEROBOT_KFOLD_STORAGE, the Modal Volume); the
    # CLI takes them from the current folder.
    dataset_root: str = setting(
        "",
        "LeRobot dataset folder. Relative paths are under the storage root ($LEROBOT_KFOLD_STORAGE "
        "locally, the Modal Volume for backend modal). Leave empty to fetch dataset_repo_id.",
        nullable=True,
    )
    dataset_repo_id: str = setting(
        "",
        "Hub dataset id 'owner/name', fetched once into storage (leave dataset_root empty).",
        nullable=True,
        pattern=REPO_ID_PATTERN,
        pattern_hint="a hub id like 'owner/name'",
    )

    def __post_init__(self) -> None:
        check_declared(self)
        check_path_text("dataset_root", self.dataset_root, relative_inside=True)
        if not self.dataset_root and not self.dataset_repo_id:
            raise ValueError(
                "set dataset_root (a LeRobot dataset folder) or dataset_repo_id (a hub id like 'owner/name')"
            )
        if self.dataset_root and self.dataset_repo_id:
            raise ValueError(
                f"set only one of dataset_root ({self.dataset_root!r}) and dataset_repo_id "
                f"({self.dataset_repo_id!r}): clear dataset_root to fetch the hub dataset, or clear "
                "dataset_repo_id to use the folder"
            )


# The groups of a run, their attribute names and their titles (CLI option groups, form sections).
GROUPS: dict[str, tuple[type, str]] = {
    "dataset": (DatasetSettings, "Dataset"),
    "split": (SplitConfig, "Fold planning"),
    "training": (TrainingSettings, "Training"),
    "evaluation": (EvaluationSettings, "Evaluation"),
    "aggregation": (AggregateConfig, "Aggregation"),
    "selection": (SelectionSettings, "Candidates and selection"),
}


def build_groups(
    groups: Mapping[str, tuple[type, str]], values: Mapping[str, Any], *, text: bool = False
) -> dict[str, Any]:
    """One instance per group from a flat mapping; a name that is no group's setting is refused."""
    owner = {name: group for group, (cls, _) in groups.items() for name in declared(cls)}
    split_known(values, owner)
    by_group: dict[str, dict[str, Any]] = {group: {} for group in groups}
    for name, value in values.items():
        by_group[owner[name]][name] = value
    return {group: build(cls, by_group[group], text=text) for group, (cls, _) in groups.items()}


def flatten(instances: Mapping[str, Any]) -> dict[str, Any]:
    """The flat mapping of several groups' settings, as the form and XCom carry them."""
    flat: dict[str, Any] = {}
    for instance in instances.values():
        for name, (_, spec) in declared(instance).items():
            flat[name] = edge_value(getattr(instance, name), spec)
    return flat


@dataclass(frozen=True)
class RunSettings:
    """Every setting of a k-fold run; validated on construction, across groups too."""

    GROUPS: ClassVar[dict[str, tuple[type, str]]] = GROUPS

    dataset: DatasetSettings
    split: SplitConfig = field(default_factory=SplitConfig)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    aggregation: AggregateConfig = field(default_factory=AggregateConfig)
    selection: SelectionSettings = field(default_factory=SelectionSettings)

    def __post_init__(self) -> None:
        need = self.aggregation.min_successful_folds
        if need > self.split.num_folds:
            raise ValueError(
                f"min_successful_folds={need} exceeds the {self.split.num_folds} folds "
                f"(k={self.split.k} x repeats={self.split.repeats}); lower it or add folds"
            )
        if self.aggregation.selection_metric == "sim_success_rate" and self.evaluation.sim_eval_episodes == 0:
            raise ValueError(
                "selection_metric 'sim_success_rate' needs rollouts: set sim_eval_episodes above 0, or "
                "select by val_l1"
            )
        self._check_candidates()

    def _check_candidates(self) -> None:
        """Every candidate valid, the baseline one of them, all their fold tasks within the map limit."""
        names = [candidate.name for candidate in self.candidates()]
        tasks = len(names) * self.split.num_folds
        if tasks > MAX_MAP_LENGTH:
            raise ValueError(
                f"candidates: {len(names)} candidates x {self.split.num_folds} folds (k={self.split.k} x "
                f"repeats={self.split.repeats}) = {tasks} fold tasks exceeds {MAX_MAP_LENGTH}, Airflow's "
                "core.max_map_length (one mapped task per candidate and fold). Compare fewer candidates or "
                "lower k or repeats."
            )
        baseline = self.selection.baseline
        if baseline and baseline not in names:
            raise ValueError(f"baseline {baseline!r} is not a candidate; the candidates are {names}")

    def candidates(self) -> list[Candidate]:
        """The run's candidates, each with its full settings (one, the base settings, without any)."""
        return expand(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, text: bool = False) -> RunSettings:
        """From flat settings (typed values; command-line text when ``text``). Unknown names fail."""
        return cls(**build_groups(GROUPS, values, text=text))

    def to_dict(self) -> dict[str, Any]:
        return flatten({group: getattr(self, group) for group in GROUPS})

    def check_policy(self) -> None:
        """The checks that need lerobot (its policy configs): seconds of imports, so not at parse time."""
        checked: list[dict[str, Any]] = []
        for candidate in self.candidates():
            fields = candidate.settings.training.policy_fields()
            if fields not in checked:
                try:
                    candidate.settings.training.check_policy()
                except ValueError as exc:
                    where = (
                        f"candidate {candidate.name!r}: " if len(self.selection.named_overrides()) > 1 else ""
                    )
                    raise ValueError(f"{where}{exc}") from None
                checked.append(fields)

    def fold_config(
        self, fold: Fold, *, dataset_root: str, repo_id: str, output_dir: str, run_id: str | None, **execution
    ) -> FoldTrainingConfig:
        """One fold's training config: these settings, the fold's episodes, the plan's seed."""
        return fold_config(
            self.training,
            self.evaluation,
            fold,
            dataset_root=dataset_root,
            repo_id=repo_id,
            output_dir=output_dir,
            seed=self.split.seed,
            run_id=run_id,
            **execution,
        )


def setting_names(groups: Mapping[str, tuple[type, str]] = GROUPS) -> list[str]:
    """Every flat setting name of ``groups``, in declaration order."""
    return [name for cls, _ in groups.values() for name in declared(cls)]


def _check_unique_names() -> None:
    names = setting_names()
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:  # a programming error: flat names must not collide
        raise AssertionError(f"settings declared in two groups: {doubled}")


_check_unique_names()
