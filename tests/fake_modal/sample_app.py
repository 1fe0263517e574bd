"""A Modal app module, as deployed code looks: the fake server runs `@app.function` bodies via `.local()`."""

from __future__ import annotations

import modal

app = modal.App("fake-sample-app")


@app.function(gpu="H100", timeout=600)
def add(a: int, b: int) -> int:
    return a + b
