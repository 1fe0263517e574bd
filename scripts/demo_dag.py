"""Run the ``lerobot_kfold_cv`` DAG once, locally, and print its summary: the README's main command.

Airflow's ``dag.test()`` runs every task of one DAG run in this process (folds one after another), with
the same DAG, task group and operator as a deployed Airflow, backend local. Each fold trains with
``cpu_count // LEROBOT_KFOLD_MAX_PARALLEL_FOLDS`` torch threads (1 on 2 cores): on these machines one
thread per fold was faster than two, and it holds up when other work takes a core (docs/benchmarks.md). The
demo dataset is recorded from the simulator into the storage root first when it is not there yet.

    python scripts/demo_dag.py [--conf '{"k": 5, "steps": 2000}'] [--episodes 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "lerobot_kfold_cv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conf", default="{}", help="DAG run conf (JSON object of trigger-form fields)")
    parser.add_argument("--episodes", type=int, default=40, help="episodes to record for the demo dataset")
    args = parser.parse_args(argv)
    try:
        conf = json.loads(args.conf)
        if not isinstance(conf, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        parser.error(f"--conf must be a JSON object: {exc}")

    sys.path[:0] = [str(REPO / "plugins"), str(REPO / "dags")]
    from lerobot_kfold import storage
    from lerobot_kfold.results import CVSummary
    from lerobot_kfold.summary_table import format_summary

    dataset = storage.resolve(conf.get("dataset_root", "datasets/so101_demo"))
    if not (dataset / "meta" / "info.json").is_file():
        print(f"recording {args.episodes} demo episodes from the simulator into {dataset}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lerobot_kfold",
                "demo-dataset",
                "--root",
                str(dataset),
                "--episodes",
                str(args.episodes),
            ],
            check=True,
        )

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            print(f"DAG import error in {path}:\n{error}", file=sys.stderr)
        return 1
    run = bag.get_dag(DAG_ID).test(run_conf=conf)
    if run.state != "success":
        print(f"\nDAG run {run.run_id} ended {run.state}; see the task logs above.", file=sys.stderr)
        return 1

    summary_file = _summary_file(run)
    summary = CVSummary.from_dict(json.loads(summary_file.read_text()), source=summary_file)
    print(f"\nDAG run {run.run_id}: success\n")
    print(format_summary(summary))
    print(f"\nsummary, folds.csv and report: {summary_file.parent}")
    return 0


def _summary_file(run) -> Path:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids=DAG_ID, task_ids="kfold_cv.aggregate", key="return_value"
            )
        ).one()
        return Path(XComModel.deserialize_value(row)["outputs"]["summary_json"])


if __name__ == "__main__":
    sys.exit(main())
