"""Airflow integration for any deployed Modal function: hook, trigger, operator, extra link.

Nothing here knows about robots or k-fold: ``ModalGPUOperator`` launches one call of a deployed Modal
function (by app and function name) with keyword arguments, waits for it without holding a worker slot,
and returns its result to XCom. The k-fold task group (``kfold_cv``) is one user of it.
"""
