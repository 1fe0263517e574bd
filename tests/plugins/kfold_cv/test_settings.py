"""CVSettings: the library's run settings plus the compute settings, flat, refused with a fix-it message."""

from __future__ import annotations

import pytest

from kfold_cv.params import kfold_params
from kfold_cv.settings import GPU_TYPES, SETTING_NAMES, CVSettings, settings_from_environment
from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES

DEMO = {"dataset_root": "datasets/so101_demo"}


class TestDefaults:
    def test_are_lerobots_act_run_locally(self) -> None:
        settings = CVSettings.from_mapping(DEMO)
        assert (settings.compute.backend, settings.run.split.k) == ("local", 5)
        training = settings.run.training
        assert training.policy_fields() == {}, "lerobot's own ACT config, as lerobot-train builds it"
        assert training.pretrained_backbone and training.mixed_precision == "no"

    def test_the_small_demo_policy_is_a_named_preset(self) -> None:
        settings = CVSettings.from_mapping({**DEMO, "policy_preset": "small"})
        assert settings.run.training.policy_fields() == DEMO_ACT_OVERRIDES

    def test_map_to_the_library_configs(self) -> None:
        settings = CVSettings.from_mapping(
            {
                **DEMO,
                "k": 4,
                "repeats": 2,
                "selection_metric": "sim_success_rate",
                "sim_eval_episodes": 2,
                "min_successful_folds": 6,
            }
        )
        assert settings.run.split.num_folds == 8
        assert settings.run.aggregation.selection_mode == "max"
        assert settings.run.aggregation.required_folds(8) == 6
        assert CVSettings.from_mapping(DEMO).run.aggregation.required_folds(8) == 8, "0 means every fold"

    def test_round_trip_through_the_flat_mapping(self) -> None:
        settings = CVSettings.from_mapping({**DEMO, "policy_overrides": {"dim_model": 32}, "gpu": "H100"})
        flat = settings.to_dict()
        assert list(flat) == list(SETTING_NAMES)
        assert flat["policy_overrides"] == '{"dim_model": 32}', "objects cross XCom and the form as JSON text"
        assert CVSettings.from_mapping(flat) == settings


class TestFromMapping:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            pytest.param({"k": 1}, "k must be at least 2", id="k"),
            pytest.param({"k": 2.5}, "k must be an integer", id="k-fraction"),
            pytest.param({"k": "3"}, "k must be an integer", id="k-text"),
            pytest.param({"gpu": "GTX1080"}, "gpu must be one of", id="gpu"),
            pytest.param({"steps": 0}, "steps must be at least 1", id="steps"),
            pytest.param({"backend": "k8s"}, "backend must be one of", id="backend"),
            pytest.param({"dataset_root": ""}, "set dataset_root", id="no-dataset"),
            pytest.param({"dataset_repo_id": "a/b"}, "set only one of dataset_root", id="both-datasets"),
            pytest.param({"min_successful_folds": 9}, "exceeds the 5 folds", id="min-folds"),
            pytest.param({"stratify_by_task": "maybe"}, "true or false", id="bool"),
            pytest.param({"epochs": 3}, "unknown setting", id="unknown"),
            pytest.param({"K": 3}, "did you mean 'k'", id="typo"),
            pytest.param({"timeout_s": 5}, "timeout_s must be at least 60", id="timeout"),
            pytest.param(
                {"policy_overrides": "[1]"}, "policy_overrides must be a JSON object", id="overrides"
            ),
        ],
    )
    def test_rejects_with_a_message_naming_the_setting(self, values: dict, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            CVSettings.from_mapping({**DEMO, **values})


class TestParams:
    def test_one_flat_scalar_param_per_setting_with_the_declared_defaults(self) -> None:
        params = kfold_params()
        assert list(params) == list(SETTING_NAMES)
        defaults = CVSettings.from_mapping(DEMO).to_dict()
        for name, param in params.items():
            assert param.value == ("" if name == "dataset_root" else defaults[name]), name
            types = param.schema["type"] if isinstance(param.schema["type"], list) else [param.schema["type"]]
            scalar = [t for t in types if t != "null"]
            assert len(scalar) == 1 and scalar[0] in {"string", "integer", "number", "boolean"}, name
            assert param.description, name

    def test_only_the_dataset_fields_the_baseline_and_json_objects_may_be_left_empty_in_the_form(
        self,
    ) -> None:
        # The UI's trigger form requires every Param whose type excludes "null" and refuses to submit
        # while one is empty; one of the two dataset fields is always empty, the baseline is unless a
        # comparison names one, and an object may be cleared.
        params = kfold_params()
        optional = {
            n for n, p in params.items() if isinstance(p.schema["type"], list) and "null" in p.schema["type"]
        }
        objects = {"policy_overrides", "candidates", "candidate_grid"}
        assert optional == {"dataset_root", "dataset_repo_id", "baseline", *objects}
        assert all(params[name].value == "{}" for name in objects), "never an empty required field"
        assert CVSettings.from_mapping({**DEMO, "dataset_repo_id": None}).run.dataset.dataset_repo_id == ""
        assert CVSettings.from_mapping({**DEMO, "policy_overrides": None}).run.training.policy_overrides == {}

    def test_each_group_is_a_form_section(self) -> None:
        params = kfold_params()
        assert params["k"].schema["section"] == "Fold planning"
        assert params["gpu"].schema["section"] == "Compute"
        assert params["gpu"].schema["enum"] == list(GPU_TYPES)

    def test_defaults_can_be_replaced_and_are_checked_one_by_one(self) -> None:
        assert kfold_params(k=10)["k"].value == 10
        assert kfold_params(policy_overrides={"dim_model": 8})["policy_overrides"].value == '{"dim_model": 8}'
        with pytest.raises(ValueError, match="k must be at least 2"):
            kfold_params(k=1)
        with pytest.raises(ValueError, match="did you mean 'steps'"):
            kfold_params(step=10)


class TestFromEnvironment:
    def test_reads_any_setting_as_text(self) -> None:
        environ = {"X_K": "3", "X_SHUFFLE": "false", "X_LEARNING_RATE": "0.01", "X_BACKEND": "modal"}
        values = settings_from_environment("X_", environ)
        assert values == {"k": 3, "shuffle": False, "learning_rate": 0.01, "backend": "modal"}

    def test_names_the_variable_of_a_bad_value(self) -> None:
        with pytest.raises(ValueError, match="X_K must be an integer"):
            settings_from_environment("X_", {"X_K": "five"})
