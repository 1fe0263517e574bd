"""The validate task on camera datasets: the backbone's weights, the cameras and the policy overrides are
checked before any fold is paid for (backend local; the values arrive as the trigger form sends them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kfold_cv import preflight
from lerobot_kfold import backbone
from lerobot_kfold.backbone import BackboneWeightsError

DATASET = "datasets/cameras"


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, camera_demo_root: Path) -> Path:
    root = tmp_path / "storage"
    shutil.copytree(camera_demo_root, root / DATASET)
    monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(root))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    # Nothing can be fetched: the weights' URL is a closed port on this machine.
    monkeypatch.setattr(backbone, "weights_url", lambda name: "http://127.0.0.1:9/resnet18-f37072fd.pth")
    return root


def validate(**values):
    conf = {"dataset_root": DATASET, "k": 2, "policy_preset": "small", **values}
    return preflight.validate_run(
        conf, "runs/test/run", app_name="unused", modal_conn_id="unused", parallel_cap=2
    )


def test_absent_backbone_weights_fail_validate_with_the_fix(storage: Path) -> None:
    with pytest.raises(BackboneWeightsError) as error:
        validate()
    message = str(error.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in message and "pretrained_backbone to false" in message


def test_without_the_pretrained_backbone_nothing_is_fetched(storage: Path) -> None:
    out = validate(pretrained_backbone=False, sim_eval_episodes=2)
    assert out["prepare_kwargs"]["training"]["pretrained_backbone"] is False, "prepare_dataset knows too"
    assert out["prepare_kwargs"]["sim_eval_episodes"] == 2


def test_a_camera_the_backbone_cannot_read_fails_validate_naming_it(storage: Path) -> None:
    info_file = storage / DATASET / "meta" / "info.json"
    info = json.loads(info_file.read_text())
    info["features"]["observation.images.front"]["shape"] = [48, 64, 4]
    info_file.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"'observation.images.front' has shape \[48, 64, 4\]"):
        validate(pretrained_backbone=False)


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        pytest.param('{"dim_model": 32}', None, id="a-field"),
        pytest.param('{"dim_modle": 32}', "dim_modle", id="not-a-field"),
    ],
)
def test_policy_overrides_from_the_form_are_checked_against_the_policys_fields(
    storage: Path, overrides: str, refusal: str | None
) -> None:
    if refusal is None:
        validate(pretrained_backbone=False, policy_overrides=overrides)
        return
    with pytest.raises(ValueError, match=refusal):
        validate(pretrained_backbone=False, policy_overrides=overrides)


V21_FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "lerobot_v21_tiny"


@pytest.mark.parametrize(("version", "refusal"), [("v2.1", None), ("v2.0", "Bring it to v2.1 first")])
def test_a_v21_dataset_passes_validate_and_older_formats_do_not(
    storage: Path, version: str, refusal: str | None
) -> None:
    """v2.1 is converted by prepare_dataset; older formats fail here, saying what to do."""
    shutil.copytree(V21_FIXTURE, storage / "datasets" / "old")
    info_file = storage / "datasets" / "old" / "meta" / "info.json"
    info_file.write_text(json.dumps({**json.loads(info_file.read_text()), "codebase_version": version}))
    if refusal is None:
        validate(dataset_root="datasets/old", pretrained_backbone=False)
        return
    with pytest.raises(ValueError, match=refusal):
        validate(dataset_root="datasets/old", pretrained_backbone=False)
