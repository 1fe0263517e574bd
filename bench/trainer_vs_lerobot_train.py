#!/usr/bin/env python
"""One fold of our trainer against lerobot's own ``lerobot-train``: wall time, steps/s and peak RSS.

Both sides train the same ACT (``--policy``: the small demo ACT ``DEMO_ACT_OVERRIDES``, or lerobot's
defaults; chunk size 10, lr 1e-3, the backbone from scratch) on the same episodes, steps, batch size,
seed, device and torch threads, validate on the same held-out episodes and checkpoint at the same steps,
each run a subprocess, interleaved. lerobot-train holds out the last episodes (``--dataset.eval_split``),
so the fold compared is the last one of an unshuffled plan (checked on every run from its log). Steps/s
is timed between progress lines all sides print at the same steps, outside validation and checkpoint
steps. Details: docs/benchmarks.md, sections 1, 2 and 8.

Sides: ours (``train-fold``; once per ``--precisions`` entry), lerobot-train (once per
``--their-workers`` entry: its DataLoader workers; lerobot-train's own default is 4), and with
``--model-only`` the model-only step (``bench/model_only_step.py``: lerobot's update on batches already on
the device, the limit of any data path). Ratios are ours (the first precision) over each other side.

A dataset is an entry of ``DATASETS`` (``--dataset``); a side is a ``Side`` of ``make_sides``.
Example (the defaults; about 4 minutes on 2 CPU cores)::

    .venv/bin/python bench/trainer_vs_lerobot_train.py --json .cache/bench/trainer.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BENCH_CACHE, RunRecord, markdown_table, progress, ratio


@dataclass(frozen=True)
class Dataset:
    """A dataset both sides train on, recorded from the simulator on first use."""

    root: Path  # where it is recorded (the default of --root)
    record: tuple[str, ...]  # arguments of `python -m lerobot_kfold demo-dataset` that record it
    ours_flags: tuple[str, ...] = ()  # extra `train-fold` flags it needs
    their_flags: tuple[str, ...] = ()  # extra lerobot-train flags it needs
    env: dict[str, str] = field(default_factory=dict)  # extra environment of both sides and the recorder


# Camera datasets: ours trains the backbone from scratch, as lerobot-train with
# --policy.pretrained_backbone_weights=null does.
SCRATCH_BACKBONE = ("--no-pretrained-backbone",)
DATASETS = {
    "so101_state": Dataset(BENCH_CACHE / "so101_40", ("--episodes", "40")),
    # The camera demo: one front camera at 96x128 (AV1 video, lerobot's writer), 40 episodes.
    "so101_camera": Dataset(
        BENCH_CACHE / "so101_camera_40",
        ("--episodes", "40", "--cameras", "front", "--image-size", "96x128"),
        ours_flags=SCRATCH_BACKBONE,
    ),
    # A real robot's cameras: two 480x640 streams; 8 episodes keep it small enough to carry to a GPU.
    "so101_camera_480": Dataset(
        BENCH_CACHE / "so101_camera_480_8",
        ("--episodes", "8", "--cameras", "front,wrist", "--image-size", "480x640"),
        ours_flags=SCRATCH_BACKBONE,
    ),
}
# Chunk size and learning rate per --policy: the demo's for the small ACT, lerobot's own defaults otherwise.
CHUNK_AND_LR = {"small": (10, 1e-3), "lerobot": (100, 1e-5)}
OURS, THEIRS, MODEL_ONLY = "ours (lerobot_kfold train-fold)", "lerobot-train", "model-only step"
POLICIES = ("small", "lerobot")
SUMMARY_KEYS = ("wall_s", "startup_s", "loop_steps_per_s", "peak_rss_mib", "val_loss_normalized")

_OURS_STEP = re.compile(r"fold \d+: step (\d+)/(\d+)")
_THEIRS_LOG = re.compile(r"\bstep:\S+ smpl:")
_THEIRS_EVAL = re.compile(r"step (\d+): eval_loss=([-\d.einf]+)")
_THEIRS_SPLIT = re.compile(r"Train/eval split: (\d+) train, (\d+) eval")


@dataclass
class Side:
    """One side of the comparison: its command for an output folder and repeat, and its output parser.

    ``parse`` returns ``step_times`` ({step: seconds since start} of the progress lines),
    ``val_loss_normalized`` (the final validation loss) and optionally ``split`` ((train, eval)
    episodes as the side reports them, checked against the fold).
    """

    name: str
    command: Callable[[Path, int], list[str]]
    parse: Callable[[RunRecord], dict[str, Any]]
    # Whether it validates (the model-only step does not) and reports its training split.
    validates: bool = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchlib.parser(
        "Time one k-fold fold of lerobot_kfold's trainer against lerobot-train on the same data, ACT, "
        "steps, batch size, seed, device and threads (medians of interleaved runs; ratio ours / theirs)."
    )
    add = parser.add_argument
    add("--dataset", choices=sorted(DATASETS), default="so101_state")
    add("--root", type=Path, default=None, help="dataset folder (default: the dataset's own)")
    add("--prepare-only", action="store_true", help="record the dataset if missing, print its root, exit")
    add("--k", type=int, default=5, help="folds; the last unshuffled fold is compared")
    add("--steps", type=int, default=200, help="training steps (a multiple of 10, >= 20)")
    add("--eval-every", type=int, default=100, help="validate every N steps (and at the end)")
    add("--save-every", type=int, default=100, help="checkpoint every N steps (and at the end)")
    add("--batch-size", type=int, default=64)
    add("--seed", type=int, default=0)
    add("--device", default="cpu", choices=["cpu", "cuda"])
    add("--threads", type=int, default=1, help="torch/OMP threads of both sides (1: steadiest)")
    add("--repeats", type=int, default=3, help="runs per side (interleaved)")
    add("--their-workers", type=int, nargs="+", default=[0], metavar="N", help="lerobot-train sides' workers")
    add(
        "--precisions",
        nargs="+",
        default=["no"],
        choices=["no", "bf16"],
        help="ours' --mixed-precision sides",
    )
    add("--model-only", action="store_true", help="add the model-only step (batches already on the device)")
    add("--policy", choices=POLICIES, default="small", help="the small demo ACT, or lerobot's default ACT")
    add("--python", default=sys.executable, help="interpreter that runs both sides")
    add("--work-dir", type=Path, default=BENCH_CACHE / "trainer_vs_lerobot_train", help="emptied first")
    add("--timeout", type=float, default=1800, help="seconds before one run is killed")
    args = parser.parse_args(argv)
    if args.steps < 20 or args.steps % 10:
        parser.error("--steps must be a multiple of 10 and at least 20 (progress lines come every steps/10)")
    if args.repeats < 1 or args.threads < 1 or args.k < 2:
        parser.error("--repeats and --threads must be >= 1, --k >= 2")
    args.root = (args.root or DATASETS[args.dataset].root).resolve()
    return args


def timing_window(args: argparse.Namespace) -> tuple[int, int]:
    """First and last progress step that is neither a validation nor a checkpoint step."""
    every = args.steps // 10
    candidates = [s for s in range(every, args.steps, every) if s % args.eval_every and s % args.save_every]
    if len(candidates) < 2:
        raise SystemExit(
            "error: choose --eval-every/--save-every so that two progress steps (multiples of steps/10) "
            "are neither validation nor checkpoint steps, e.g. the defaults"
        )
    return candidates[0], candidates[-1]


def parse_ours(record: RunRecord) -> dict[str, Any]:
    times = {int(m.group(1)): t for t, _, line in record.lines if (m := _OURS_STEP.search(line))}
    result = {}
    with contextlib.suppress(json.JSONDecodeError):
        result = json.loads(record.stdout)
    return {"step_times": times, "val_loss_normalized": result.get("metrics", {}).get("val_l1_normalized")}


def parse_theirs(record: RunRecord, every: int, steps: int) -> dict[str, Any]:
    times, evals, split = {}, {}, None
    for t, _, line in record.lines:
        if _THEIRS_LOG.search(line):
            # Its step counter prints as "1K" past 999: count the lines instead (one per log_freq).
            times[every * (len(times) + 1)] = t
        if m := _THEIRS_EVAL.search(line):
            evals[int(m.group(1))] = float(m.group(2))
        if m := _THEIRS_SPLIT.search(line):
            split = (int(m.group(1)), int(m.group(2)))
    return {"step_times": times, "val_loss_normalized": evals.get(steps), "split": split}


def plan_fold(args: argparse.Namespace, env: dict[str, str], work: Path) -> tuple[Path, dict, float]:
    """Plan unshuffled folds; return the plan, its last fold and the eval_split that holds out that fold."""
    plan_path = work / "plan.json"
    # The plan's seed is ours' training seed.
    cmd = [args.python, "-m", "lerobot_kfold", "plan", "--root", str(args.root), "--k", str(args.k)]
    cmd += ["--seed", str(args.seed)]
    planned = benchlib.run_measured([*cmd, "--no-shuffle", "--output", str(plan_path)], env=env)
    if planned.returncode != 0:
        raise SystemExit(f"error: planning failed:\n{planned.tail()}")
    fold = json.loads(plan_path.read_text())["folds"][-1]
    n_total = len(fold["train_episodes"]) + len(fold["val_episodes"])
    n_val = len(fold["val_episodes"])
    last = sorted(fold["train_episodes"] + fold["val_episodes"])[-n_val:]
    if fold["val_episodes"] != last or len(fold.get("val_task_counts", {})) > 1:
        raise SystemExit("error: the compared fold must hold out the last episodes of a single-task dataset")
    # lerobot holds out ceil(n * f) episodes: (n_val - 0.5) / n makes that exactly n_val, free of rounding.
    eval_split = round((n_val - 0.5) / n_total, 6)
    assert math.ceil(n_total * eval_split) == n_val
    return plan_path, fold, eval_split


def make_sides(args: argparse.Namespace, plan: Path, fold: dict, eval_split: float) -> list[Side]:
    from lerobot_kfold.fold_data import video_backend
    from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES

    a, dataset, every = args, DATASETS[args.dataset], args.steps // 10
    overrides = DEMO_ACT_OVERRIDES if a.policy == "small" else {}
    chunk, lr = CHUNK_AND_LR[a.policy]
    fold_args = ["--plan", str(plan), "--root", str(a.root)]
    fold_args += f"""--fold-id {fold["fold_id"]} --steps {a.steps} --eval-every {a.eval_every} --save-every
        {a.save_every} --batch-size {a.batch_size} --device {a.device} --torch-threads
        {a.threads} --chunk-size {chunk} --learning-rate {lr}""".split()
    fold_args += [
        "--policy-preset",
        "lerobot",
        "--policy-overrides",
        json.dumps(overrides),
        *dataset.ours_flags,
    ]

    def value(v: Any) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else "null" if v is None else str(v)

    # The same video decoder for every side: lerobot's own choice on this machine (ours uses it).
    theirs = [a.python, "-m", "lerobot.scripts.lerobot_train", f"--dataset.root={a.root}"]
    theirs += [f"--policy.{name}={value(v)}" for name, v in overrides.items()]
    theirs += f"""--dataset.repo_id=local/bench --dataset.video_backend={video_backend()}
        --dataset.eval_split={eval_split!r} --policy.type=act --policy.chunk_size={chunk}
        --policy.n_action_steps={chunk} --policy.optimizer_lr={lr}
        --policy.pretrained_backbone_weights=null --policy.push_to_hub=false --policy.device={a.device}
        --eval_steps={a.eval_every} --steps={a.steps} --batch_size={a.batch_size} --seed={a.seed}
        --save_checkpoint=true --save_freq={a.save_every} --log_freq={every} --wandb.enable=false""".split()
    theirs += dataset.their_flags

    def lerobot_train(workers: int) -> Side:
        def command(out: Path, rep: int) -> list[str]:
            return [*theirs, f"--num_workers={workers}", f"--output_dir={out}", f"--job_name=b{rep}"]

        return Side(
            f"{THEIRS} (num_workers={workers})", command, lambda record: parse_theirs(record, every, a.steps)
        )

    def ours(precision: str) -> Side:
        cmd = [a.python, "-m", "lerobot_kfold", "train-fold", *fold_args, "--mixed-precision", precision]
        name = OURS if precision == a.precisions[0] else f"{OURS} (mixed precision {precision})"
        return Side(name, lambda out, rep: [*cmd, "--output-dir", str(out)], parse_ours)

    def model_only(precision: str) -> Side:
        script = str(Path(__file__).with_name("model_only_step.py"))
        cmd = [a.python, script, *fold_args, "--mixed-precision", precision]
        name = MODEL_ONLY + ("" if precision == "no" else f" (mixed precision {precision})")
        return Side(name, lambda out, rep: [*cmd, "--output-dir", str(out)], parse_ours, validates=False)

    sides = [ours(p) for p in a.precisions] + [lerobot_train(n) for n in a.their_workers]
    return sides + ([model_only(p) for p in a.precisions] if a.model_only else [])


def measure(side: Side, record: RunRecord, window: tuple[int, int], split: tuple[int, int]) -> dict:
    """The figures of one run (``error`` set when it failed or did not do the expected work)."""
    parsed = side.parse(record)
    times, (first, last) = parsed["step_times"], window
    rate = None
    if first in times and last in times and times[last] > times[first]:
        rate = (last - first) / (times[last] - times[first])
    run: dict[str, Any] = {
        "wall_s": round(record.wall_s, 3),
        "peak_rss_mib": round(record.peak_rss_mib, 1),
        "returncode": record.returncode,
        "loop_steps_per_s": None if rate is None else round(rate, 3),
        # Seconds before the first step: the first timed progress line, less the steps before it.
        "startup_s": round(times[first] - first / rate, 2) if rate else None,
        "val_loss_normalized": parsed["val_loss_normalized"],
        "error": None,
    }
    if record.returncode != 0:
        run["error"] = f"exit status {record.returncode}"
    elif parsed.get("split", split) != split:
        run["error"] = f"{side.name} split {parsed['split']} is not the fold's {split}"
    elif rate is None or (side.validates and parsed["val_loss_normalized"] is None):
        run["error"] = "no training-loop timing or final validation found in its output"
    return run


def report(args: argparse.Namespace, summary: dict, window: tuple[int, int]) -> dict[str, dict]:
    """The table; returns ours (the first side) over every other side: wall, time per step, peak RSS."""
    names = list(summary)
    ours, rows, ratios = summary[names[0]], [], {}
    for name, s in summary.items():
        runs = f"{s['n']}" + (f" (+{s['failed']} failed)" if s["failed"] else "")
        rows.append([name, runs, *(s[key] for key in SUMMARY_KEYS)])
    for name in names[1:]:
        other = summary[name]
        ratios[name] = {
            "wall_s": ratio(ours["wall_s"], other["wall_s"]),
            # Time per step, ours / theirs (the inverse of the steps/s ratio): below 1 means ours is faster.
            "loop_s_per_step": ratio(other["loop_steps_per_s"], ours["loop_steps_per_s"]),
            "peak_rss_mib": ratio(ours["peak_rss_mib"], other["peak_rss_mib"]),
        }
        r = ratios[name]
        per_step = f"{r['loop_s_per_step']:.3f} (s/step)" if r["loop_s_per_step"] else "-"
        rows.append([f"ratio ours / {name}", "", r["wall_s"], "", per_step, r["peak_rss_mib"], ""])
    print(
        f"\n{args.dataset}, policy {args.policy}, {args.steps} steps, batch {args.batch_size}, device "
        f"{args.device}, {args.threads} threads, medians of {args.repeats}; "
        f"loop = steps {window[0]}..{window[1]}"
    )
    header = ["side", "runs", "wall s", "start s", "loop steps/s", "peak RSS MiB", "final eval loss (norm.)"]
    print(markdown_table(header, rows))
    return ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benchlib.exit_on_sigterm()
    dataset = DATASETS[args.dataset]
    env = benchlib.bench_env(threads=args.threads, extra=dataset.env)
    benchlib.ensure_demo_dataset(args.root, dataset.record, args.python, env)
    if args.prepare_only:
        print(args.root)
        return 0
    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    plan_path, fold, eval_split = plan_fold(args, env, work)
    split, window = (len(fold["train_episodes"]), len(fold["val_episodes"])), timing_window(args)
    sides = {side.name: side for side in make_sides(args, plan_path, fold, eval_split)}
    progress(
        f"{args.dataset}: fold {fold['fold_id']} of an unshuffled {args.k}-fold plan, {split[0]} train / "
        f"{split[1]} held-out episodes; {args.steps} steps, batch {args.batch_size}, device {args.device}, "
        f"{args.threads} threads, {args.repeats} interleaved repeats; eval_split={eval_split}"
    )
    context = {
        "fold": {"fold_id": fold["fold_id"], "val_episodes": fold["val_episodes"], "eval_split": eval_split},
        "loop_window_steps": list(window),
        "commands": {name: side.command(work / "runs" / "OUT", 0) for name, side in sides.items()},
    }

    def run_one(name: str, rep: int) -> dict[str, Any]:
        out = work / "runs" / f"{list(sides).index(name)}_{rep}"
        progress(f"repeat {rep + 1}/{args.repeats}: {name} ...")
        log = work / "logs" / f"{out.name}.log"
        record = benchlib.run_measured(sides[name].command(out, rep), env, log, timeout_s=args.timeout)
        run = measure(sides[name], record, window, split)
        if run["error"]:
            progress(f"  {name} FAILED: {run['error']}\n{record.tail(15)}")
        else:
            progress(f"  {name}: " + ", ".join(f"{key} {run[key]}" for key in SUMMARY_KEYS))
        return run

    def save(runs: dict[str, list[dict[str, Any]]]) -> None:
        benchlib.write_json(args, "trainer_vs_lerobot_train", {**context, "runs": runs}, complete=False)

    runs = benchlib.interleave(list(sides), args.repeats, run_one, after_each=save)
    summary = benchlib.summarize(runs, SUMMARY_KEYS)
    ratios = report(args, summary, window)
    payload = {**context, "summary": summary, "ratios_ours_over_each": ratios, "runs": runs}
    benchlib.finish(args, "trainer_vs_lerobot_train", payload)
    return 1 if any(s["failed"] for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
