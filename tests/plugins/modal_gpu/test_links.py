"""``ModalCallLink``: the extra link from a task instance to its call in Modal's dashboard.

Airflow 3 computes the link in the worker when the task finishes (``get_link`` with the real operator)
and stores it in XCom under ``_link_ModalCallLink``; the call id comes from the ``modal_call_id`` XCom.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.bases.xcom import BaseXCom

from modal_gpu.links import CALL_ID_KEY, DEFAULT_DASHBOARD_URL_TEMPLATE, ModalCallLink
from modal_gpu.operators import ModalGPUOperator
from modal_gpu.plugin import ModalGPUPlugin

TI_KEY = object()  # stands in for the TaskInstanceKey the link passes on


@pytest.fixture
def xcom(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The task instance's XComs, as ``BaseXCom.get_value`` would return them."""
    values: dict[str, Any] = {}

    def get_value(*, ti_key: Any, key: str) -> Any:
        assert ti_key is TI_KEY
        return values.get(key)

    monkeypatch.setattr(BaseXCom, "get_value", staticmethod(get_value))
    return values


def operator(**kwargs: Any) -> ModalGPUOperator:
    return ModalGPUOperator(task_id="train_fold", app_name="fake-app", function_name="echo", **kwargs)


class TestModalCallLink:
    def test_default_url_is_modals_object_page(self, xcom):
        xcom[CALL_ID_KEY] = "fc-abc123"

        link = ModalCallLink().get_link(operator(), ti_key=TI_KEY)

        assert link == "https://modal.com/id/fc-abc123"
        assert DEFAULT_DASHBOARD_URL_TEMPLATE.format(call_id="fc-abc123") == link

    def test_url_template_is_configurable(self, xcom):
        xcom[CALL_ID_KEY] = "fc-abc123"
        template = "https://modal.com/apps/my-workspace/main/deployed/lerobot-kfold?call={call_id}"

        link = ModalCallLink().get_link(operator(dashboard_url_template=template), ti_key=TI_KEY)

        assert link == "https://modal.com/apps/my-workspace/main/deployed/lerobot-kfold?call=fc-abc123"

    @pytest.mark.parametrize(
        "backend", [pytest.param("local", id="local"), pytest.param(" LOCAL ", id="local-unnormalised")]
    )
    def test_empty_for_the_local_backend(self, xcom, backend):
        xcom[CALL_ID_KEY] = "fc-abc123"  # even if a call id were there

        assert ModalCallLink().get_link(operator(backend=backend), ti_key=TI_KEY) == ""

    def test_call_id_key_is_the_operators_one_key(self):
        """The link reads the XCom the operator pushes; the same key holds the id in task_state_store."""
        assert ModalGPUOperator.external_id_key == CALL_ID_KEY == "modal_call_id"

    def test_empty_before_a_call_was_spawned(self, xcom):
        assert ModalCallLink().get_link(operator(), ti_key=TI_KEY) == ""

    def test_is_named_for_the_ui_and_stored_under_its_own_xcom_key(self):
        assert ModalCallLink.name == "Modal call"
        assert ModalCallLink().xcom_key == "_link_ModalCallLink"


class TestModalGPUPlugin:
    def test_registers_the_link_with_airflow(self):
        assert ModalGPUPlugin.name == "modal_gpu"
        assert [type(link) for link in ModalGPUPlugin.operator_extra_links] == [ModalCallLink]
