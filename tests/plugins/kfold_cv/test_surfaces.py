"""Specification: every setting is one declaration, and every surface takes it the same way.

The surfaces are the command line (``python -m lerobot_kfold run``), the trigger form (the DAG's Params:
their JSON schema, then the ``validate`` task's rules) and ``settings=`` constants of the task group. For
every declared setting, values are generated from its declaration: the default, each bound, each choice,
and bad ones (past a bound, the wrong type, non-finite, not a choice, not matching the pattern). Every
surface must accept the same values, refuse the same values with a message naming the setting, and show
the same default. The compute settings (backend, GPU, timeout) have no CLI surface: the CLI runs locally.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.definitions.param import ParamsDict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kfold_cv import kfold_cross_validation
from kfold_cv.params import kfold_params
from kfold_cv.settings import CV_GROUPS, CVSettings
from lerobot_kfold import cli
from lerobot_kfold.declared import Spec, declared, default_of, edge_value, option_name
from lerobot_kfold.run_settings import GROUPS

CLI_SETTINGS = {name for cls, _ in GROUPS.values() for name in declared(cls)}
SPECS = {name: spec for cls, _ in CV_GROUPS.values() for name, (_, spec) in declared(cls).items()}
DEFAULTS = {name: default_of(f) for cls, _ in CV_GROUPS.values() for name, (f, _) in declared(cls).items()}
ROOT = "datasets/demo"


@dataclass(frozen=True)
class Case:
    name: str
    value: Any
    # Declared-bad: every surface must refuse it. Otherwise surfaces must only agree (a valid value
    # of one setting may still break a rule across settings, e.g. min_successful_folds above k).
    bad: bool

    @property
    def text_can_carry_it(self) -> bool:
        """A number where text is wanted is just text on a command line (7 is the string '7')."""
        return not (SPECS[self.name].kind is str and not isinstance(self.value, str))

    @property
    def schema_can_express_it(self) -> bool:
        """JSON Schema cannot refuse NaN, nor look inside a JSON text field: the validate task does."""
        is_nan = isinstance(self.value, float) and math.isnan(self.value)
        return not is_nan and SPECS[self.name].kind is not dict

    @property
    def id(self) -> str:
        return f"{self.name}={self.value!r}"[:60]


def _numbers(spec: Spec) -> Iterator[tuple[Any, bool]]:
    kind = spec.kind
    step = 1 if kind is int else 1e-6
    for bound in (spec.minimum, spec.maximum):
        if bound is not None:
            yield kind(bound), False
    if spec.minimum is not None:
        yield kind(spec.minimum - step), True
    if spec.maximum is not None:
        yield kind(spec.maximum + step), True
    for bound in (spec.above, spec.below):
        if bound is not None:
            yield kind(bound), True
    yield "abc", True
    yield True, True
    if kind is int:
        yield 2.5, True
    yield math.inf, True
    yield -math.inf, True
    yield math.nan, True


def _strings(spec: Spec) -> Iterator[tuple[Any, bool]]:
    for choice in spec.choices or ():
        yield choice, False
    if spec.choices:
        yield "not-a-choice", True
    if spec.pattern:
        yield "not a valid value!", True
    yield 7, True


def values_for(name: str) -> list[Case]:
    spec = SPECS[name]
    generated: list[tuple[Any, bool]] = [(DEFAULTS[name], False)]
    if spec.kind in (int, float):
        generated += list(_numbers(spec))
    elif spec.kind is str:
        generated += list(_strings(spec))
    elif spec.kind is bool:
        generated += [(True, False), (False, False), ("maybe", True), (1, True)]
    elif spec.kind is dict:
        generated += [({"dim_model": 32}, False), ("[1, 2]", True), ("{not json", True), (5, True)]
    return [Case(name, value, bad) for value, bad in generated]


CASES = [case for name in SPECS for case in values_for(name)]


def context_for(name: str) -> dict[str, Any]:
    """Valid values of the other settings, so that the case decides the outcome."""
    if name == "dataset_root":
        return {}
    if name == "dataset_repo_id":
        return {"dataset_root": ""}
    return {"dataset_root": ROOT}


# ---------------------------------------------------------------------------------------------- surfaces
# Each returns None when the values are accepted, else the message of the refusal.


def cli_text(value: Any, spec: Spec) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def cli_argv(values: dict[str, Any]) -> list[str]:
    argv = ["run", "--output-dir", "unused"]
    for name, value in values.items():
        spec = SPECS[name]
        if spec.kind is bool and isinstance(value, bool):
            argv.append(option_name(name) if value else "--no-" + name.replace("_", "-"))
        else:
            argv.append(f"{option_name(name)}={cli_text(value, spec)}")
    return argv


def through_cli(values: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str | None:
    try:
        args = cli.build_parser().parse_args(cli_argv(values))
        cli._run_settings(args)
    except SystemExit:  # argparse refused it (one "error: ..." line on stderr)
        return capsys.readouterr().err
    except ValueError as exc:
        return str(exc)
    return None


def through_schema(values: dict[str, Any]) -> str | None:
    """The Params' JSON schema alone: what the REST API answers with HTTP 400 and the UI will not submit."""
    params = ParamsDict(kfold_params())
    try:
        for name, value in values.items():
            params[name] = edge_value(value, SPECS[name]) if isinstance(value, dict) else value
        params.validate()
    except ValueError as exc:  # ParamValidationError
        return str(exc)
    return None


def through_form(values: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str | None:
    """The trigger form: the Params' JSON schema, then the validate task's CVSettings."""
    refusal = through_schema(values)
    if refusal is not None:
        return refusal
    params = {name: param.value for name, param in kfold_params().items()}
    params.update({n: edge_value(v, SPECS[n]) if isinstance(v, dict) else v for n, v in values.items()})
    try:
        CVSettings.from_mapping(params)
    except ValueError as exc:
        return str(exc)
    return None


def through_constants(values: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str | None:
    try:
        with DAG("surfaces", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
            kfold_cross_validation("kfold_cv", settings=values)
    except ValueError as exc:
        return str(exc)
    return None


SURFACES: dict[str, Callable[[dict[str, Any], pytest.CaptureFixture[str]], str | None]] = {
    "cli": through_cli,
    "form": through_form,
    "constants": through_constants,
}


def surfaces_for(case: Case) -> dict[str, Callable[..., str | None]]:
    on_cli = case.name in CLI_SETTINGS and case.text_can_carry_it
    return {k: v for k, v in SURFACES.items() if k != "cli" or on_cli}


class TestEverySurfaceTakesASettingTheSameWay:
    @pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
    def test_the_surfaces_agree(self, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
        values = {**context_for(case.name), case.name: case.value}
        outcomes = {surface: run(values, capsys) for surface, run in surfaces_for(case).items()}
        accepted = {surface for surface, refusal in outcomes.items() if refusal is None}
        if case.bad:
            assert not accepted, f"declared-bad value accepted by {sorted(accepted)}"
        else:
            assert accepted in (set(), set(outcomes)), f"surfaces disagree: {outcomes}"
        for surface, refusal in outcomes.items():
            if refusal is not None:
                spelled = (case.name, option_name(case.name))
                assert any(s in refusal for s in spelled), f"{surface} does not name {case.name}: {refusal}"

    @pytest.mark.parametrize(
        "case", [pytest.param(c, id=c.id) for c in CASES if c.bad and c.schema_can_express_it]
    )
    def test_the_form_schema_itself_refuses_a_bad_value(self, case: Case) -> None:
        refusal = through_schema({**context_for(case.name), case.name: case.value})
        assert refusal is not None and case.name in refusal

    def test_every_declared_setting_has_cases_of_both_kinds(self) -> None:
        for name in SPECS:
            kinds = {case.bad for case in CASES if case.name == name}
            assert kinds == {True, False}, name


class TestEverySurfaceShowsTheSameDefault:
    def test_cli_form_and_constants_default_to_the_declaration(self) -> None:
        args = cli.build_parser().parse_args(["run", "--output-dir", "x", "--dataset-root", ROOT])
        from_cli = cli._run_settings(args).to_dict()
        from_constants = CVSettings.from_mapping({"dataset_root": ROOT}).to_dict()
        form = {name: param.value for name, param in kfold_params().items()}
        for name, default in DEFAULTS.items():
            declared_value = edge_value(default, SPECS[name])
            if name == "dataset_root":
                continue
            assert form[name] == declared_value, name
            assert from_constants[name] == declared_value, name
            if name in CLI_SETTINGS:
                assert from_cli[name] == declared_value, name

    def test_cli_help_states_each_default(self) -> None:
        text = cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
        flat = " ".join(text.split())
        for name in CLI_SETTINGS:
            default = edge_value(DEFAULTS[name], SPECS[name])
            assert option_name(name) in flat, name
            assert f"default {default!r}" in flat, name


# ------------------------------------------------------------------------------------------- generated
# Bad values drawn from each declaration: past a bound, of another type, non-finite, empty or unknown.


def bad_values(spec: Spec) -> st.SearchStrategy[Any]:
    """Values the declaration refuses (every one of them)."""
    other_types = st.sampled_from([None, [], {}, "", "not-a-value"])
    if spec.kind is bool:
        return st.one_of(st.integers(), st.text(), other_types)
    if spec.kind in (int, float):
        return st.one_of(
            _out_of_bounds(spec), st.sampled_from([math.inf, -math.inf, math.nan, True]), st.text()
        )
    if spec.kind is dict:
        return st.one_of(st.integers(), st.lists(st.integers()).map(json.dumps), st.just("{not json"))
    if spec.choices:
        return st.text().filter(lambda text: text.strip() not in spec.choices) | st.integers()
    if spec.pattern is None:  # a path: too long a name, a NUL, or a climb out of the storage root
        long_name = st.integers(256, 400).map(lambda n: "datasets/" + "a" * n)
        return st.one_of(long_name, st.just("../../etc"), st.just("data\x00set"), st.integers())
    return st.text().filter(lambda text: not re.search(spec.pattern, text.strip())) | st.integers()


def _out_of_bounds(spec: Spec) -> st.SearchStrategy[Any]:
    numbers = st.integers if spec.kind is int else st.floats
    options = []
    if spec.minimum is not None:
        options.append(numbers(max_value=spec.kind(spec.minimum) - (1 if spec.kind is int else 1e-9)))
    if spec.maximum is not None:
        options.append(numbers(min_value=spec.kind(spec.maximum) + (1 if spec.kind is int else 1e-9)))
    if spec.above is not None:
        options.append(st.floats(max_value=spec.above))
    if spec.below is not None:
        options.append(st.floats(min_value=spec.below))
    if spec.kind is int:
        options.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()))
    return st.one_of(*options)


BAD_DRAWS = st.sampled_from(sorted(SPECS)).flatmap(
    lambda name: st.tuples(st.just(name), bad_values(SPECS[name]))
)


class TestGeneratedBadValuesAreRefusedEverywhere:
    @pytest.mark.parametrize("surface", sorted(SURFACES))
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(draw=BAD_DRAWS)
    def test_each_surface_refuses_naming_the_setting(
        self, surface: str, draw: tuple[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        name, value = draw
        case = Case(name, value, bad=True)
        assume(surface != "cli" or (name in CLI_SETTINGS and case.text_can_carry_it))
        if surface == "cli" and isinstance(value, str):
            assume("\x00" not in value and not value.startswith("-"))  # argv cannot carry these as values
            # The CLI takes a relative dataset folder from the current folder: '..' is fine there.
            assume(not (name == "dataset_root" and value.startswith("..")))
        refusal = SURFACES[surface]({**context_for(name), name: value}, capsys)
        assert refusal is not None, f"{surface} accepted {name}={value!r}"
        assert name in refusal or option_name(name) in refusal, refusal
