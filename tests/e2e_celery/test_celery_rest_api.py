"""The REST end-to-end tests of ``tests/e2e`` on the compose topology (CeleryExecutor, PostgreSQL,
Redis, two workers): the same test code, so the summary XCom and files are checked as on SQLite.

- a local-backend run (3 folds trained in the Celery workers) and two runs at once;
- a modal-backend run against the fake control plane: folds defer to the triggerer and complete there.

(Marking a deferred fold failed or clearing it runs on SQLite only, ``tests/e2e``: it exercises the
trigger and the API, not the executor, and CI time is better spent on the faults.)
"""

from __future__ import annotations

import pytest

from tests.e2e.test_rest_api import TestLocalBackend
from tests.e2e.test_rest_api import TestModalBackend as _ModalBackend

pytestmark = pytest.mark.slow

__all__ = ["TestLocalBackend", "TestModalBackend"]


class TestModalBackend:
    test_folds_defer_and_complete_through_the_triggerer = (
        _ModalBackend.test_folds_defer_and_complete_through_the_triggerer
    )
