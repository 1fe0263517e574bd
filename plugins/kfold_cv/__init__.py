"""Airflow wiring of the k-fold library: the run settings, the UI Params and the task-group factory.

``kfold_cross_validation(...)`` builds the whole k-fold workflow as a task group, so the DAGs in
``dags/`` and any existing MLOps DAG use the same tasks. The robot-learning work itself lives in the
``lerobot_kfold`` library; the launching in ``modal_gpu``.
"""

from kfold_cv.settings import CVSettings
from kfold_cv.task_group import kfold_cross_validation

__all__ = ["CVSettings", "kfold_cross_validation"]
