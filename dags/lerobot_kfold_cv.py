"""k-fold cross-validation of a LeRobot policy, triggered by hand from the UI or the REST API.

The trigger form holds every setting (validated by JSON schema; see ``kfold_cv.params``). The defaults
run the local demo: 5 folds of a small ACT on the simulator dataset in ``datasets/so101_demo`` under
the storage root, in this Airflow's worker. Set ``backend`` to ``modal`` to train each fold on a Modal
GPU (deploy ``include/lerobot_kfold/modal_app.py`` first and fill the ``modal_default`` connection).

Deployment settings (environment): ``LEROBOT_KFOLD_STORAGE`` (local storage root),
``LEROBOT_KFOLD_MAX_PARALLEL_FOLDS`` (the hard cap on folds of one run training at once, default 2; the
form's ``max_parallel_folds`` may ask for fewer), ``LEROBOT_KFOLD_GPU_POOL`` (an Airflow pool capping
folds across every run and DAG; create it with ``--include-deferred``), ``LEROBOT_KFOLD_POLL_INTERVAL_S``
(Modal status checks), ``LEROBOT_KFOLD_GPU_PRICES`` (the price table's override, see
``lerobot_kfold.cost``).
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from kfold_cv import kfold_cross_validation
from kfold_cv.params import kfold_params

with DAG(
    dag_id="lerobot_kfold_cv",
    schedule=None,
    catchup=False,
    params=kfold_params(dataset_root="datasets/so101_demo"),
    tags=["lerobot", "k-fold", "modal"],
    doc_md=__doc__,
):
    kfold_cross_validation(
        "kfold_cv",
        use_params=True,
        max_parallel_folds=int(os.environ.get("LEROBOT_KFOLD_MAX_PARALLEL_FOLDS", "2")),
        poll_interval=float(os.environ.get("LEROBOT_KFOLD_POLL_INTERVAL_S", "15")),
        gpu_pool=os.environ.get("LEROBOT_KFOLD_GPU_POOL") or None,
    )
