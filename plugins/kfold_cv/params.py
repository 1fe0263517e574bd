"""The trigger form of a k-fold run: one flat Param per declared setting, in a section per group.

Each Param's JSON schema, title, description and default come from the setting's declaration (see
``lerobot_kfold.declared``), so the form refuses what the library refuses: the REST API answers HTTP 400
naming the parameter and the UI form will not submit. The ``validate`` task then applies the rules that
span settings or need the data, before any GPU is paid for.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from kfold_cv.settings import CV_GROUPS
from lerobot_kfold.declared import (
    check_value,
    declared,
    default_of,
    edge_value,
    from_edge,
    json_schema,
    split_known,
)


def kfold_params(**defaults: Any) -> dict[str, Param]:
    """Params for a k-fold DAG; keyword arguments replace the declared defaults (each one checked).

    Only single settings are checked here: a form may well start with no dataset chosen. The rules that
    span settings run in the ``validate`` task.
    """
    params: dict[str, Param] = {}
    split_known(defaults, [name for cls, _ in CV_GROUPS.values() for name in declared(cls)])
    for cls, section in CV_GROUPS.values():
        for name, (field, spec) in declared(cls).items():
            if name in defaults:
                value = check_value(name, from_edge(name, defaults[name], spec), spec)
            else:
                value = default_of(field)
            params[name] = Param(
                edge_value(value, spec),
                title=name.replace("_", " "),
                description=spec.help,
                section=section,
                **json_schema(spec),
            )
    return params
