"""Candidates: named sets of setting overrides, trained on the same folds so they can be compared.

Why: people run k-fold to *decide* (which chunk size, learning rate or preset to ship). Two separate runs
cannot be compared honestly: their folds and seeds differ, so a per-fold difference means nothing. Here
one run takes several candidates; each is the run's base settings with some training or evaluation
settings overridden, and every candidate trains on the one fold plan with the one seed, so fold ``i`` of
candidate A and fold ``i`` of candidate B saw exactly the same episodes (a *paired* comparison, see
``comparison``).

A candidate may change how folds train and are validated, never what they are measured on: the dataset,
the split (and so the seed), the aggregation and the closed-loop test (``sim_eval_episodes``,
``sim_eval_max_steps``) are the same for all, or the comparison would not be paired.

Candidates are given as one JSON object of named overrides (``candidates``), or as a small grid
(``candidate_grid``: each setting with the values to try, one candidate per combination). Without either
a run has one candidate, its base settings, and behaves exactly as a run always did.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lerobot_kfold.declared import check_declared, declared, setting, split_known

if TYPE_CHECKING:
    from lerobot_kfold.run_settings import RunSettings

# A candidate name: a label in Airflow ("chunk10 / fold 3"), a folder name, a column of the report.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=,+-]{0,79}$"
NAME_HINT = "a name of letters, digits and . _ = , + - (at most 80, starting with a letter or digit)"
# The name of the one candidate of a run without candidates.
BASE_NAME = "base"
# How the chosen candidate is picked among those the best one is not detectably better than.
TIE_BREAKS = ("first_listed", "best_mean")
# Groups whose settings candidates may change, and settings of those groups they may not.
VARIABLE_GROUPS = ("training", "evaluation")
SAME_MEASUREMENT = {
    "sim_eval_episodes": "every candidate is tested with the same closed-loop rollouts",
    "sim_eval_max_steps": "every candidate is tested with the same closed-loop rollouts",
}
FIXED_GROUPS = {
    "dataset": "every candidate trains on the same dataset",
    "split": "every candidate trains on the same fold plan with the same seed (paired folds)",
    "aggregation": "every candidate is summarized and selected the same way",
    "selection": "candidates cannot nest",
}
MAX_CANDIDATES = 64


@dataclass(frozen=True)
class SelectionSettings:
    """Which candidates a run compares, against what, how one is chosen, and whether it is refit."""

    # {"chunk10": {"chunk_size": 10}, "chunk20": {"chunk_size": 20}}: setting values over the base ones.
    candidates: dict[str, Any] = setting(
        {},
        "JSON object of named candidates, each an object of training/evaluation settings over the base "
        'ones, e.g. {"chunk10": {"chunk_size": 10}, "chunk20": {"chunk_size": 20}}. All train on the same '
        "folds with the same seed. Empty: one candidate, the base settings.",
    )
    # {"chunk_size": [10, 20], "learning_rate": [0.001, 0.0003]}: 4 candidates, named by their values.
    candidate_grid: dict[str, Any] = setting(
        {},
        'JSON object of settings and the values to try, e.g. {"chunk_size": [10, 20]}: one candidate per '
        "combination, named by its values (instead of candidates).",
    )
    baseline: str = setting(
        "",
        "Candidate the others are compared against (empty: the best by selection_metric).",
        nullable=True,
        pattern=f"^$|{NAME_PATTERN}",
        pattern_hint=NAME_HINT,
    )
    tie_break: str = setting(
        "first_listed",
        "Choice among the candidates the best one is not detectably better than: 'first_listed' (list the "
        "simplest first) or 'best_mean' (the best mean anyway).",
        choices=TIE_BREAKS,
    )
    # One more task: the chosen candidate on all non-hold-out episodes; its model is the one to ship.
    refit: bool = setting(
        False,
        "Train the chosen candidate once more on all non-hold-out episodes (the model to ship) and, with a "
        "hold-out (holdout_fraction > 0), test it once on it.",
    )

    def __post_init__(self) -> None:
        check_declared(self)
        if self.candidates and self.candidate_grid:
            raise ValueError(
                "set candidates or candidate_grid, not both: list the grid's combinations in candidates "
                "to add named ones"
            )
        for name, overrides in self.candidates.items():
            _check_name("candidates", name)
            if not isinstance(overrides, Mapping):
                raise ValueError(
                    f"candidates: candidate {name!r} must be a JSON object of settings such as "
                    f'{{"chunk_size": 20}}, got {overrides!r}'
                )
        for name, values in self.candidate_grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(
                    f"candidate_grid: {name!r} must be a non-empty list of values to try, got {values!r}"
                )
            if not all(_is_grid_value(v) for v in values):
                raise ValueError(
                    f"candidate_grid: {name!r} may list numbers, strings or booleans only, got {values!r}; "
                    "give candidates with objects (policy_overrides) as named candidates"
                )
        count = len(self.named_overrides())
        if count > MAX_CANDIDATES:
            raise ValueError(f"candidates: {count} candidates exceed {MAX_CANDIDATES}; compare fewer at once")

    def named_overrides(self) -> list[tuple[str, dict[str, Any]]]:
        """Every candidate as (name, overrides), in the order given; one unnamed base without any."""
        if self.candidates:
            return [(name, dict(overrides)) for name, overrides in self.candidates.items()]
        if self.candidate_grid:
            return grid_candidates(self.candidate_grid)
        return [(BASE_NAME, {})]


def _is_grid_value(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _check_name(setting_name: str, name: str) -> None:
    import re

    if not re.search(NAME_PATTERN, name):
        raise ValueError(f"{setting_name}: candidate name {name!r} must be {NAME_HINT}")


def grid_candidates(grid: Mapping[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """One (name, overrides) per combination of the grid's values, named ``chunk_size=10,steps=500``."""
    names = list(grid)
    out = []
    for values in itertools.product(*(grid[name] for name in names)):
        overrides = dict(zip(names, values, strict=True))
        label = ",".join(f"{name}={_value_text(value)}" for name, value in overrides.items())
        _check_name("candidate_grid", label)
        out.append((label, overrides))
    return out


def _value_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Candidate:
    """One candidate: its name, the settings it overrides, and the run settings it trains with."""

    name: str
    overrides: dict[str, Any]
    settings: RunSettings


def expand(base: RunSettings) -> list[Candidate]:
    """Every candidate of ``base`` as full run settings, each checked; the clear error otherwise.

    Refuses an unknown setting, a setting that may not vary between candidates, an invalid value (named
    with its candidate) and two candidates that would train exactly the same thing.
    """
    from lerobot_kfold.run_settings import GROUPS, RunSettings

    if not base.selection.candidates and not base.selection.candidate_grid:
        return [Candidate(BASE_NAME, {}, base)]
    owner = {name: group for group, (cls, _) in GROUPS.items() for name in declared(cls)}
    base_values = {n: v for n, v in base.to_dict().items() if owner[n] != "selection"}
    variable = [n for n, group in owner.items() if group in VARIABLE_GROUPS and n not in SAME_MEASUREMENT]
    candidates: list[Candidate] = []
    for name, overrides in base.selection.named_overrides():
        where = f"candidates: candidate {name!r}"
        for setting_name in overrides:
            reason = FIXED_GROUPS.get(owner.get(setting_name, "")) or SAME_MEASUREMENT.get(setting_name)
            if reason:
                raise ValueError(
                    f"{where} sets {setting_name!r}, which may not vary between candidates: {reason}. "
                    "Set it once for the run, outside candidates."
                )
        try:
            split_known(overrides, variable, what="candidate setting")
            settings = RunSettings.from_mapping({**base_values, **overrides})
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        candidates.append(Candidate(name, dict(overrides), settings))
    _refuse_twins(candidates)
    return candidates


def _refuse_twins(candidates: list[Candidate]) -> None:
    seen: dict[str, str] = {}
    for candidate in candidates:
        typed = {group: dataclasses.asdict(getattr(candidate.settings, group)) for group in VARIABLE_GROUPS}
        key = json.dumps(typed, sort_keys=True)
        if key in seen:
            raise ValueError(
                f"candidates: {seen[key]!r} and {candidate.name!r} train exactly the same settings; "
                "remove one (same settings and seed give the same result)"
            )
        seen[key] = candidate.name


def folder_key(name: str, n_candidates: int) -> str:
    """The candidate's part of fold folders and labels: none in a run of one candidate (today's layout)."""
    return name if n_candidates > 1 else ""
