"""The pretrained vision backbone of a policy: which weights it loads, and having them before a fold starts.

lerobot's ACT names torchvision weights in ``pretrained_backbone_weights`` (default
``ResNet18_Weights.IMAGENET1K_V1``); building the policy loads them with torchvision, which downloads them
into the torch hub cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``) the first time.
Done inside a fold, that download is paid k times, and a fold on a machine without internet fails after
planning. So:

- locally, weights already in the torch cache are used as they are; ``validate`` (and
  ``prepare_dataset``) fetch them once when they are absent, and fail before any training with a message
  that says how to fix it when they cannot be fetched (:class:`BackboneWeightsError`);
- the Modal image fetches them at build time (``modal_app``), so no fold downloads them.

``python -m lerobot_kfold.backbone [WEIGHTS]`` fetches them into the torch cache by hand.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_WEIGHTS = "ResNet18_Weights.IMAGENET1K_V1"
FETCH_TIMEOUT_S = 60.0


class BackboneWeightsError(ValueError):
    """The pretrained backbone weights a run needs are not in the torch cache and cannot be fetched."""


def _weights(name: str):
    from torchvision.models import get_weight

    try:
        return get_weight(name)
    except (KeyError, ValueError, AttributeError) as exc:
        raise BackboneWeightsError(
            f"pretrained_backbone_weights={name!r} is not a torchvision weights name "
            f"such as {DEFAULT_WEIGHTS!r}"
        ) from exc


def weights_url(name: str) -> str:
    """Where torchvision downloads the weights ``name`` from."""
    return str(_weights(name).url)


def cached_file(name: str) -> Path:
    """The file torchvision loads the weights from: ``<torch hub dir>/checkpoints/<file of the URL>``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights_url(name)).path)


def is_cached(name: str) -> bool:
    return cached_file(name).is_file()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch(name: str = DEFAULT_WEIGHTS, timeout_s: float = FETCH_TIMEOUT_S) -> Path:
    """Download the weights into the torch cache (checked against torchvision's hash) unless there already."""
    import torch

    target = cached_file(name)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = target.stem.rsplit("-", 1)[-1] if "-" in target.stem else None
    with _socket_timeout(timeout_s):
        # Writes a temporary file beside the target and renames it: never a half-written checkpoint.
        torch.hub.download_url_to_file(
            weights_url(name), str(target), hash_prefix=hash_prefix, progress=False
        )
    return target


def ensure_available(name: str | None, *, timeout_s: float = FETCH_TIMEOUT_S) -> Path | None:
    """Have the weights ``name`` (None: no pretrained backbone) in the torch cache, or fail clearly."""
    if not name:
        return None
    if is_cached(name):
        return cached_file(name)
    try:
        return fetch(name, timeout_s=timeout_s)
    except Exception as exc:
        raise BackboneWeightsError(
            f"the policy starts its vision backbone from {name}, which is not in the torch cache "
            f"({cached_file(name)}) and could not be fetched from {weights_url(name)} "
            f"({type(exc).__name__}: {exc}). Fetch them once on a machine with internet "
            f"(`python -m lerobot_kfold.backbone`, then copy {cached_file(name).parent} to this machine's "
            "torch cache, or set TORCH_HOME), or set pretrained_backbone to false to train the backbone "
            "from scratch."
        ) from exc


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or [DEFAULT_WEIGHTS]
    for name in names:
        print(fetch(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
