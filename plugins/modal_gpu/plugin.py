"""Registers the Modal call link with Airflow, so the UI shows it on ModalGPUOperator task instances."""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from modal_gpu.links import ModalCallLink


class ModalGPUPlugin(AirflowPlugin):
    name = "modal_gpu"
    operator_extra_links: ClassVar[list] = [ModalCallLink()]
