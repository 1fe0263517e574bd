"""Command line: ``python -m lerobot_kfold {demo-dataset,plan,train-fold,aggregate,run,compare}``.

Each subcommand prints JSON on stdout when a program is meant to read it (``--json`` for ``run``), and
progress on stderr. Bad input gives one ``error: ...`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lerobot_kfold.declared import add_options, build, given_options
from lerobot_kfold.run_settings import GROUPS, RunSettings
from lerobot_kfold.storage import check_path_text

EXIT_BAD_INPUT = 2
EXIT_FOLDS_FAILED = 3


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, allow_nan=False))


# ----------------------------------------------------------------------------------------------- options
# Every run setting's option comes from its declaration (``declared``); the options here are about the
# command itself: which files, which fold, how many processes.

# Which groups of run settings each command takes.
PLAN_GROUPS = ("dataset", "split")
FOLD_GROUPS = ("training", "evaluation")
AGGREGATE_GROUPS = ("aggregation",)
RUN_GROUPS = tuple(GROUPS)
# The selection settings that apply to a comparison of finished runs (their candidates are given).
COMPARE_SELECTION = ("baseline", "tie_break")
# Shorter spellings kept from earlier releases.
ALIASES = {"dataset_root": ("--root",)}


def _add_setting_options(parser: argparse.ArgumentParser, groups: Sequence[str]) -> None:
    for group in groups:
        cls, title = GROUPS[group]
        add_options(parser, cls, title, aliases=ALIASES)


def _given(args: argparse.Namespace, groups: Sequence[str]) -> dict[str, Any]:
    """The settings of ``groups`` given on the command line, as text.

    A dataset folder on the command line is taken from the current folder (the library takes relative
    paths under the storage root), so it becomes absolute here.
    """
    values = {
        name: value for group in groups for name, value in given_options(args, GROUPS[group][0]).items()
    }
    if values.get("dataset_root"):
        values["dataset_root"] = os.path.abspath(check_path_text("dataset_root", values["dataset_root"]))
    return values


def _group(args: argparse.Namespace, group: str) -> Any:
    """One group of settings from the command line, validated as the trigger form's are."""
    return build(GROUPS[group][0], _given(args, [group]), text=True)


def _run_settings(args: argparse.Namespace) -> RunSettings:
    return RunSettings.from_mapping(_given(args, RUN_GROUPS), text=True)


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution (where this command runs; not run settings)")
    group.add_argument(
        "--torch-threads", type=_positive_int, default=None, help="torch threads per fold (default: torch's)"
    )


def _path(text: str) -> str:
    try:
        return check_path_text("the path", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("the path ")) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def cmd_demo_dataset(args: argparse.Namespace) -> int:
    from lerobot_kfold.demo import DemoConfig, record_demo_dataset
    from lerobot_kfold.simulation import CameraSpec

    cameras = CameraSpec.parse(args.cameras, args.image_size) if args.cameras else None
    config = DemoConfig(root=args.root, num_episodes=args.episodes, seed=args.seed, cameras=cameras)
    _print_json(record_demo_dataset(config, progress=_progress))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from lerobot_kfold import dataset_info
    from lerobot_kfold.splits import plan_folds, write_plan

    dataset, split = _group(args, "dataset"), _group(args, "split")  # settings first: no file is read
    root = dataset_info.check_dataset_root(_local_root(dataset))
    plan = plan_folds(dataset_info.episode_infos(root), split, dataset_info.dataset_identity(root))
    if args.output:
        write_plan(plan, args.output)
        _progress(f"wrote {args.output} ({plan.num_folds} folds, hash {plan.content_hash()[:12]})")
    print(plan.to_json())
    return 0


def _local_root(dataset: Any) -> str:
    if dataset.dataset_repo_id:
        raise ValueError(
            "the command line reads a local dataset folder: download the hub dataset first "
            "(`huggingface-cli download --repo-type dataset OWNER/NAME --local-dir DIR`) and pass "
            "--dataset-root DIR"
        )
    return dataset.dataset_root


def cmd_train_fold(args: argparse.Namespace) -> int:
    from lerobot_kfold import jobs, storage
    from lerobot_kfold.results import FoldResult
    from lerobot_kfold.splits import read_plan
    from lerobot_kfold.training_config import fold_config

    training, evaluation = _group(args, "training"), _group(args, "evaluation")
    plan = read_plan(args.plan)
    fold = plan.fold(args.fold_id)
    root = args.root or plan.dataset.root
    if not root:
        raise ValueError("the plan names no dataset root; pass --root.")
    output_dir = args.output_dir or storage.fold_folder(str(Path(args.plan).parent), fold.fold_id)
    config = fold_config(
        training,
        evaluation,
        fold,
        dataset_root=str(Path(root).resolve()),
        repo_id=plan.dataset.repo_id,
        output_dir=str(Path(output_dir).resolve()),
        seed=plan.config.seed,
        run_id=args.run_id,
        dataset_fingerprint=plan.dataset.fingerprint,
        torch_threads=args.torch_threads,
    )
    jobs.train_fold(config.to_dict(), say=_progress)
    result = FoldResult.from_json_file(config.output_path / storage.RESULT_FILE)
    _print_json(result.to_dict())
    return 0 if result.ok else EXIT_FOLDS_FAILED


def cmd_aggregate(args: argparse.Namespace) -> int:
    from lerobot_kfold.aggregate import check_one_run, summarize, write_outputs
    from lerobot_kfold.results import FoldResult

    aggregation = _group(args, "aggregation")
    paths: list[Path] = []
    for item in args.results:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(path.glob("**/result.json")))
        elif path.is_file():
            paths.append(path)
        else:
            raise ValueError(f"{path} is neither a result.json file nor a folder containing some.")
    if not paths:
        raise ValueError(f"no result.json files found under {args.results}.")
    results = [FoldResult.from_json_file(p) for p in paths]
    check_one_run(results)
    summary = summarize(results, aggregation, expected_folds=args.expected_folds, run_id=args.run_id)
    outputs = write_outputs(summary, results, args.output_dir)
    _print_json({**summary.to_dict(), "outputs": outputs})
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lerobot_kfold import jobs
    from lerobot_kfold.candidates import SelectionSettings
    from lerobot_kfold.results import CVSummary
    from lerobot_kfold.summary_table import format_summary

    aggregation = _group(args, "aggregation")
    selection = build(SelectionSettings, given_options(args, SelectionSettings), text=True)
    folders = [str(Path(folder).resolve()) for folder in args.runs]
    compact = jobs.compare_runs(
        folders,
        str(Path(args.output_dir).resolve()),
        dataclasses.asdict(aggregation),
        dataclasses.asdict(selection),
        say=_progress,
    )
    if args.json:
        _print_json(compact)
    else:
        print(format_summary(CVSummary.from_dict(compact)))
    return 0


def default_parallel(num_folds: int, device: str) -> int:
    """Folds at once when --parallel is not given: one per CPU core on the CPU, one on a GPU.

    Measured (docs/benchmarks.md, item 6): on 2 cores, 2 folds with 1 torch thread each beat one fold
    at a time with 2 threads, and held up better when other work took a core.
    """
    if device == "cuda" or (device == "auto" and _cuda_available()):
        return 1
    return max(1, min(num_folds, os.cpu_count() or 1))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cmd_run(args: argparse.Namespace) -> int:
    from lerobot_kfold.demo import DemoConfig, record_demo_dataset
    from lerobot_kfold.runner import KFoldRunConfig, run_kfold
    from lerobot_kfold.summary_table import format_summary

    settings = _run_settings(args)
    root = _local_root(settings.dataset)
    config = KFoldRunConfig(
        settings=settings,
        output_dir=args.output_dir,
        parallel=args.parallel
        or default_parallel(settings.split.num_folds * len(settings.candidates()), settings.training.device),
        run_id=args.run_id,
        torch_threads=args.torch_threads,
    )
    if args.record_demo and not Path(root).exists():
        _progress(f"recording a demo dataset of {args.record_demo} episodes into {root}")
        demo = record_demo_dataset(DemoConfig(root=root, num_episodes=args.record_demo), progress=_progress)
        _progress(
            f"recorded {demo['num_episodes']} episodes ({demo['num_frames']} frames) in {demo['seconds']}s"
        )
    summary = run_kfold(config, progress=_progress)
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(format_summary(summary))
    return 0


# ------------------------------------------------------------------------------------------------ parser


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one ``error: ...`` line (exit 2), like every other bad input here."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="python -m lerobot_kfold",
        description="K-fold cross-validation of LeRobot policy training (local backend).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-dataset", help="record the SO-101 simulator demo dataset")
    p.add_argument("--root", type=_path, required=True, help="folder to create (must not exist)")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cameras",
        default="",
        metavar="NAMES",
        help="record these cameras as video: 'front' or 'front,wrist' (needs EGL or OSMesa; default: none)",
    )
    p.add_argument("--image-size", default="96x128", metavar="HxW", help="camera frame size (default 96x128)")
    p.set_defaults(func=cmd_demo_dataset)

    p = sub.add_parser("plan", help="plan episode folds; prints the JSON manifest")
    p.add_argument("--output", type=_path, help="also write the manifest to this file")
    _add_setting_options(p, PLAN_GROUPS)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("train-fold", help="train and validate one fold of a plan; prints its result JSON")
    p.add_argument("--plan", type=_path, required=True, help="plan.json written by 'plan --output'")
    p.add_argument("--fold-id", type=int, required=True)
    p.add_argument(
        "--root", type=_path, help="dataset folder on this machine (default: the one named in the plan)"
    )
    p.add_argument("--output-dir", type=_path, help="fold folder (default: folds/fold_NNN beside the plan)")
    p.add_argument("--run-id", default=None)
    _add_setting_options(p, FOLD_GROUPS)
    _add_execution_options(p)
    p.set_defaults(func=cmd_train_fold)

    p = sub.add_parser("aggregate", help="summarize fold results; writes summary.json, folds.csv, report")
    p.add_argument("results", type=_path, nargs="+", help="result.json files or folders containing them")
    p.add_argument("--output-dir", type=_path, required=True)
    p.add_argument("--expected-folds", type=_positive_int, default=None, help="count missing folds as failed")
    p.add_argument("--run-id", default=None)
    _add_setting_options(p, AGGREGATE_GROUPS)
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("run", help="the whole k-fold locally: plan, train every fold, aggregate")
    p.add_argument(
        "--output-dir", type=_path, required=True, help="run folder (re-running resumes unfinished folds)"
    )
    p.add_argument(
        "--record-demo",
        type=_positive_int,
        default=0,
        metavar="N",
        help="record an N-episode demo dataset at --dataset-root first",
    )
    p.add_argument(
        "--parallel",
        type=_positive_int,
        default=None,
        help="folds trained at once, one process each (default: one per CPU core; 1 on a GPU)",
    )
    p.add_argument("--run-id", default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    _add_setting_options(p, RUN_GROUPS)
    _add_execution_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="compare finished runs that share a fold plan, fold by fold")
    p.add_argument("runs", nargs="+", help="run folders (each with plan.json and summary.json)")
    p.add_argument("--output-dir", required=True, help="folder for the comparison's summary and report")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    _add_setting_options(p, AGGREGATE_GROUPS)
    selection_cls, selection_title = GROUPS["selection"]
    add_options(p, selection_cls, selection_title, only=COMPARE_SELECTION)
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lerobot_kfold.aggregate import NotEnoughFoldsError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        from lerobot_kfold.jobs import quiet_third_party_logs

        quiet_third_party_logs()
    try:
        return int(args.func(args))
    except NotEnoughFoldsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FOLDS_FAILED
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume unfinished folds", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError) as exc:
        if args.verbose:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
