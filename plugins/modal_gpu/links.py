"""``ModalCallLink``: an extra link from a task instance to its call in Modal's dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.bases.xcom import BaseXCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# The one key of a Modal call id: ModalGPUOperator.external_id_key, under which the operator keeps the id
# in task_state_store (re-attach on retry) and pushes it to XCom (this link). Here, not in operators, so
# the API server can load the link without importing the operator (and modal).
CALL_ID_KEY = "modal_call_id"
# Modal resolves any object id under /id/ to its page (the call's inputs, logs and containers).
DEFAULT_DASHBOARD_URL_TEMPLATE = "https://modal.com/id/{call_id}"


class ModalCallLink(BaseOperatorLink):
    """Link to the Modal call a task instance spawned (empty for the local backend)."""

    name = "Modal call"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if str(getattr(operator, "backend", "modal")).strip().lower() != "modal":
            return ""
        key = getattr(operator, "external_id_key", CALL_ID_KEY)  # a serialized operator lacks it
        call_id = BaseXCom.get_value(ti_key=ti_key, key=key)
        if not call_id:
            return ""
        template = getattr(operator, "dashboard_url_template", None) or DEFAULT_DASHBOARD_URL_TEMPLATE
        return template.format(call_id=call_id)
