"""CVSettings: one flat set of run settings that fails with a fix-it message before anything is paid."""

from __future__ import annotations

import pytest

from kfold_cv.params import kfold_params
from kfold_cv.settings import GPU_TYPES, CVSettings


class TestDefaults:
    def test_are_the_local_demo(self) -> None:
        settings = CVSettings()
        assert (settings.backend, settings.k, settings.dataset_root) == ("local", 5, "datasets/so101_demo")
        assert settings.training_params().policy_overrides["dim_model"] == 64

    def test_map_to_the_library_configs(self) -> None:
        settings = CVSettings(k=4, repeats=2, selection_metric="sim_success_rate", min_successful_folds=6)
        assert settings.split_config().num_folds == 8
        assert settings.aggregate_config().selection_mode == "max"
        assert settings.aggregate_config().min_successful_folds == 6
        assert CVSettings().aggregate_config().min_successful_folds is None, "0 means every fold"


class TestFromMapping:
    def test_coerces_form_strings(self) -> None:
        settings = CVSettings.from_mapping({"k": "3", "stratify_by_task": "true", "learning_rate": "0.01"})
        assert (settings.k, settings.stratify_by_task, settings.learning_rate) == (3, True, 0.01)

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            pytest.param({"k": 1}, "k must be at least 2", id="k"),
            pytest.param({"k": 2.5}, "k must be an integer", id="k-fraction"),
            pytest.param({"gpu": "GTX1080"}, "gpu must be one of", id="gpu"),
            pytest.param({"steps": 0}, "steps must be a positive integer", id="steps"),
            pytest.param({"backend": "k8s"}, "backend must be one of", id="backend"),
            pytest.param({"dataset_root": "", "dataset_repo_id": ""}, "set dataset_root", id="no-dataset"),
            pytest.param({"min_successful_folds": 9}, "exceeds the 5 folds", id="min-folds"),
            pytest.param({"stratify_by_task": "maybe"}, "true or false", id="bool"),
            pytest.param({"epochs": 3}, "unknown setting", id="unknown"),
            pytest.param({"timeout_s": 5}, "at least 60", id="timeout"),
        ],
    )
    def test_rejects_with_a_message_naming_the_setting(self, values: dict, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            CVSettings.from_mapping(values)


class TestParams:
    def test_one_flat_scalar_param_per_setting_with_the_same_defaults(self) -> None:
        params = kfold_params()
        defaults = CVSettings().to_dict()
        assert set(params) == set(defaults)
        for name, param in params.items():
            assert param.value == defaults[name]
            types = param.schema["type"] if isinstance(param.schema["type"], list) else [param.schema["type"]]
            scalar = [t for t in types if t != "null"]
            assert len(scalar) == 1 and scalar[0] in {"string", "integer", "number", "boolean"}, name

    def test_only_the_dataset_fields_may_be_left_empty_in_the_form(self) -> None:
        # The UI's trigger form requires every Param whose type excludes "null" and refuses to submit
        # while one is empty; dataset_repo_id is empty by default (dataset_root is used instead).
        params = kfold_params()
        optional = {
            n for n, p in params.items() if isinstance(p.schema["type"], list) and "null" in p.schema["type"]
        }
        assert optional == {"dataset_root", "dataset_repo_id"}
        assert CVSettings.from_mapping({"dataset_repo_id": None}).dataset_repo_id == ""

    def test_gpu_and_backend_are_enums_for_the_form(self) -> None:
        params = kfold_params()
        assert params["gpu"].schema["enum"] == list(GPU_TYPES)
        assert params["backend"].schema["enum"] == ["local", "modal"]

    def test_defaults_can_be_replaced_and_are_validated(self) -> None:
        assert kfold_params(k=10)["k"].value == 10
        with pytest.raises(ValueError, match="k must be at least 2"):
            kfold_params(k=1)
