"""The pretrained backbone's weights: used from the torch cache, fetched once, a clear error otherwise.

No test downloads the real weights: the torch cache is a folder of the test's own (``TORCH_HOME``), and
fetches go to a file server on 127.0.0.1 that the test starts (or to a closed port).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lerobot_kfold import backbone
from lerobot_kfold.backbone import DEFAULT_WEIGHTS, BackboneWeightsError

CLOSED_PORT_URL = "http://127.0.0.1:9/models/resnet18-f37072fd.pth"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on 127.0.0.1 for one folder; stopped after the test."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def _fake_weights(folder: Path, corrupt: bool = False) -> str:
    """A file named like torchvision's (``<name>-<sha256 prefix>.pth``); returns its file name."""
    data = b"not really a resnet " * 100
    prefix = hashlib.sha256(data).hexdigest()[:8]
    name = f"resnet18-{prefix}.pth"
    (folder / name).write_bytes(data + (b"!" if corrupt else b""))
    return name


class TestTheTorchCache:
    def test_the_cached_file_is_where_torchvision_looks(self, torch_home: Path) -> None:
        assert (
            backbone.cached_file(DEFAULT_WEIGHTS)
            == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
        )

    def test_weights_in_the_cache_are_what_the_policy_loads_without_any_download(
        self, torch_home: Path, camera_demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import torchvision

        from lerobot_kfold.training import build_fold
        from lerobot_kfold.training_config import FoldTrainingConfig

        state = torchvision.models.resnet18().state_dict()
        target = backbone.cached_file(DEFAULT_WEIGHTS)
        target.parent.mkdir(parents=True)
        torch.save(state, target)
        monkeypatch.setattr(backbone, "weights_url", lambda name: CLOSED_PORT_URL)
        assert backbone.ensure_available(DEFAULT_WEIGHTS) == target

        config = FoldTrainingConfig(
            dataset_root=str(camera_demo_root),
            train_episodes=[1, 2, 3],
            val_episodes=[0],
            output_dir=str(tmp_path / "fold"),
            policy_preset="small",
            torch_threads=1,
        )
        assert config.pretrained_backbone, "lerobot's default: the pretrained backbone"
        fold = build_fold(config, lambda message: None)
        conv1 = fold.policy.model.backbone.conv1.weight.detach().cpu()
        assert torch.equal(conv1, state["conv1.weight"]), "the backbone starts from the cached weights"


class TestFetching:
    def test_absent_weights_are_fetched_once_checked_against_their_hash(
        self, torch_home: Path, file_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url, folder = file_server
        name = _fake_weights(folder)
        monkeypatch.setattr(backbone, "weights_url", lambda weights: f"{url}/{name}")
        path = backbone.ensure_available(DEFAULT_WEIGHTS)
        assert path == torch_home / "hub" / "checkpoints" / name
        assert path.read_bytes() == (folder / name).read_bytes()
        (folder / name).unlink()
        assert backbone.ensure_available(DEFAULT_WEIGHTS) == path, "cached now: no second download"

    def test_a_corrupt_download_leaves_nothing_in_the_cache(
        self, torch_home: Path, file_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url, folder = file_server
        name = _fake_weights(folder, corrupt=True)
        monkeypatch.setattr(backbone, "weights_url", lambda weights: f"{url}/{name}")
        with pytest.raises(BackboneWeightsError, match="could not be fetched"):
            backbone.ensure_available(DEFAULT_WEIGHTS)
        checkpoints = torch_home / "hub" / "checkpoints"
        assert not checkpoints.exists() or list(checkpoints.iterdir()) == []

    def test_weights_that_cannot_be_fetched_fail_saying_how_to_fix_it(
        self, torch_home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(backbone, "weights_url", lambda weights: CLOSED_PORT_URL)
        with pytest.raises(BackboneWeightsError) as error:
            backbone.ensure_available(DEFAULT_WEIGHTS)
        message = str(error.value)
        for text in (DEFAULT_WEIGHTS, "python -m lerobot_kfold.backbone", "pretrained_backbone to false"):
            assert text in message, message

    def test_no_pretrained_backbone_needs_nothing(self, torch_home: Path) -> None:
        assert backbone.ensure_available(None) is None
        assert not torch_home.exists()

    def test_an_unknown_weights_name_is_refused(self) -> None:
        with pytest.raises(BackboneWeightsError, match="not a torchvision weights name"):
            backbone.ensure_available("ResNet18_Weights.NOPE")
