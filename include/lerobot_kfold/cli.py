"""Command line: ``python -m lerobot_kfold {demo-dataset,plan,train-fold,aggregate,run}``.

Each subcommand prints JSON on stdout when a program is meant to read it (``--json`` for ``run``), and
progress on stderr. Bad input gives one ``error: ...`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_FOLDS_FAILED = 3


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, allow_nan=False))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"dim_model\": 64}'")
    return value


# ----------------------------------------------------------------------------------------------- options


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fold planning")
    group.add_argument("--k", type=int, default=5, help="number of folds (default 5)")
    group.add_argument("--split-seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    group.add_argument("--no-shuffle", action="store_true", help="contiguous folds by episode index")
    group.add_argument("--stratify-by-task", action="store_true", help="keep each fold's task mix")
    group.add_argument("--holdout-fraction", type=float, default=0.0, help="test set kept out of every fold")
    group.add_argument("--repeats", type=int, default=1, help="repeated k-fold: reshuffles (default 1)")


def _split_config(args: argparse.Namespace):
    from lerobot_kfold.splits import SplitConfig

    return SplitConfig(
        k=args.k,
        seed=args.split_seed,
        shuffle=not args.no_shuffle,
        stratify_by_task=args.stratify_by_task,
        holdout_fraction=args.holdout_fraction,
        repeats=args.repeats,
    )


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fold training")
    group.add_argument("--policy-type", default="act", help="lerobot policy type (default act)")
    group.add_argument(
        "--policy-overrides",
        type=_json_object,
        default=None,
        help="JSON object of lerobot policy config fields (default: the small demo ACT for 'act')",
    )
    group.add_argument("--steps", type=int, default=2000)
    group.add_argument("--batch-size", type=int, default=64)
    group.add_argument("--learning-rate", type=float, default=1e-3)
    group.add_argument("--chunk-size", type=int, default=10)
    group.add_argument("--eval-every", type=int, default=500, help="validate every N steps")
    group.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    group.add_argument("--seed", type=int, default=0, help="training seed")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda")
    group.add_argument("--torch-threads", type=int, default=None, help="torch threads per fold")
    group.add_argument("--sim-eval-episodes", type=int, default=0, help="closed-loop rollouts per fold")
    group.add_argument("--sim-eval-max-steps", type=int, default=200)
    group.add_argument("--wandb-mode", default="disabled", choices=["disabled", "offline", "online"])
    group.add_argument("--wandb-project", default="lerobot-kfold")


def _training_params(args: argparse.Namespace):
    from lerobot_kfold.runner import TrainingParams
    from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES

    overrides = args.policy_overrides
    if overrides is None:
        overrides = dict(DEMO_ACT_OVERRIDES) if args.policy_type == "act" else {}
    return TrainingParams(
        policy_type=args.policy_type,
        policy_overrides=overrides,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        chunk_size=args.chunk_size,
        eval_every=args.eval_every,
        save_every=args.save_every,
        seed=args.seed,
        device=args.device,
        torch_threads=args.torch_threads,
        sim_eval_episodes=args.sim_eval_episodes,
        sim_eval_max_steps=args.sim_eval_max_steps,
        wandb_mode=args.wandb_mode,
        wandb_project=args.wandb_project,
    )


def _add_aggregation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("aggregation")
    group.add_argument("--selection-metric", default="val_l1", help="metric that picks the best fold")
    group.add_argument("--selection-mode", default="min", choices=["min", "max"])
    group.add_argument(
        "--min-successful-folds",
        type=int,
        default=None,
        help="fail unless at least this many folds succeed (default: all)",
    )
    group.add_argument("--confidence", type=float, default=0.95)


def _aggregate_config(args: argparse.Namespace):
    from lerobot_kfold.aggregate import AggregateConfig

    return AggregateConfig(
        selection_metric=args.selection_metric,
        selection_mode=args.selection_mode,
        min_successful_folds=args.min_successful_folds,
        confidence=args.confidence,
    )


# ------------------------------------------------------------------------------------------- subcommands


def cmd_demo_dataset(args: argparse.Namespace) -> int:
    from lerobot_kfold.demo import DemoConfig, record_demo_dataset

    config = DemoConfig(root=args.root, num_episodes=args.episodes, seed=args.seed, with_images=args.images)
    _print_json(record_demo_dataset(config, progress=_progress))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from lerobot_kfold import dataset_info
    from lerobot_kfold.splits import plan_folds, write_plan

    split = _split_config(args)  # parameters first: bad input fails before any file is read
    root = dataset_info.check_dataset_root(args.root)
    plan = plan_folds(dataset_info.episode_infos(root), split, dataset_info.dataset_identity(root))
    if args.output:
        write_plan(plan, args.output)
        _progress(f"wrote {args.output} ({plan.num_folds} folds, hash {plan.content_hash()[:12]})")
    print(plan.to_json())
    return 0


def cmd_train_fold(args: argparse.Namespace) -> int:
    from lerobot_kfold.runner import fold_output_dir
    from lerobot_kfold.splits import read_plan
    from lerobot_kfold.training import train_fold

    plan = read_plan(args.plan)
    fold = plan.fold(args.fold_id)
    root = args.root or plan.dataset.root
    if not root:
        raise ValueError("the plan names no dataset root; pass --root.")
    output_dir = (
        Path(args.output_dir) if args.output_dir else fold_output_dir(Path(args.plan).parent, fold.fold_id)
    )
    config = _training_params(args).fold_config(output_dir, root, fold, plan.dataset.repo_id, args.run_id)
    result = train_fold(config, progress=_progress)
    _print_json(result.to_dict())
    return 0 if result.ok else EXIT_FOLDS_FAILED


def cmd_aggregate(args: argparse.Namespace) -> int:
    from lerobot_kfold.aggregate import summarize, write_outputs
    from lerobot_kfold.results import FoldResult

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
    summary = summarize(
        results, _aggregate_config(args), expected_folds=args.expected_folds, run_id=args.run_id
    )
    outputs = write_outputs(summary, results, args.output_dir)
    _print_json({**summary.to_dict(), "outputs": outputs})
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

    split, training = _split_config(args), _training_params(args)
    config = KFoldRunConfig(
        dataset_root=args.root,
        output_dir=args.output_dir,
        split=split,
        training=training,
        aggregation=_aggregate_config(args),
        parallel=args.parallel or default_parallel(split.num_folds, training.device),
        run_id=args.run_id,
    )
    if args.record_demo and not Path(args.root).exists():
        _progress(f"recording a demo dataset of {args.record_demo} episodes into {args.root}")
        demo = record_demo_dataset(
            DemoConfig(root=args.root, num_episodes=args.record_demo), progress=_progress
        )
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
    p.add_argument("--root", required=True, help="folder to create (must not exist)")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", action="store_true", help="add a 64x64 camera image (needs EGL or OSMesa)")
    p.set_defaults(func=cmd_demo_dataset)

    p = sub.add_parser("plan", help="plan episode folds; prints the JSON manifest")
    p.add_argument("--root", required=True, help="LeRobot dataset folder")
    p.add_argument("--output", help="also write the manifest to this file")
    _add_split_options(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("train-fold", help="train and validate one fold of a plan; prints its result JSON")
    p.add_argument("--plan", required=True, help="plan.json written by 'plan --output'")
    p.add_argument("--fold-id", type=int, required=True)
    p.add_argument("--root", help="dataset folder (default: the one named in the plan)")
    p.add_argument("--output-dir", help="fold folder (default: folds/fold_NNN beside the plan)")
    p.add_argument("--run-id", default=None)
    _add_training_options(p)
    p.set_defaults(func=cmd_train_fold)

    p = sub.add_parser("aggregate", help="summarize fold results; writes summary.json, folds.csv, report")
    p.add_argument("results", nargs="+", help="result.json files or folders containing them")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--expected-folds", type=int, default=None, help="count missing folds as failed")
    p.add_argument("--run-id", default=None)
    _add_aggregation_options(p)
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("run", help="the whole k-fold locally: plan, train every fold, aggregate")
    p.add_argument("--root", required=True, help="LeRobot dataset folder")
    p.add_argument("--output-dir", required=True, help="run folder (re-running resumes unfinished folds)")
    p.add_argument(
        "--record-demo",
        type=int,
        default=0,
        metavar="N",
        help="record an N-episode demo dataset at --root first",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="folds trained at once, one process each (default: one per CPU core; 1 on a GPU)",
    )
    p.add_argument("--run-id", default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    _add_split_options(p)
    _add_training_options(p)
    _add_aggregation_options(p)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lerobot_kfold.aggregate import NotEnoughFoldsError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        from lerobot_kfold.runner import quiet_third_party_logs

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
