#!/usr/bin/env python
"""One fold of our trainer against lerobot's own ``lerobot-train``: wall time, steps/s and peak RSS.

Both sides train the same ACT (``DEMO_ACT_OVERRIDES``, chunk size 10, lr 1e-3) on the same episodes for
the same steps, batch size, seed, device and torch threads, validate on the same held-out episodes at
the same steps and write checkpoints at the same steps, each in its own subprocess, interleaved
(ours, theirs, ours, theirs, ...). The table gives medians and the ratio ours / theirs.

Like for like: lerobot 0.6.1 cannot validate on chosen episodes; ``--dataset.eval_split=f`` holds out
the last ceil(n * f) episodes of each task. So the fold compared is the last fold of an *unshuffled*
k-fold plan (``plan --no-shuffle``), whose held-out episodes are exactly the last n / k: the same
episodes lerobot-train holds out (checked on every run from its log). Remaining differences, all part
of what each tool does for a fold:

- normalization: ours uses statistics of the training episodes only; lerobot-train uses
  ``meta/stats.json`` of all episodes (the leak ours avoids; same cost);
- validation: lerobot-train computes the eval-mode loss; ours also predicts the action chunk,
  unnormalizes it (L1 in action units, per dimension) and saves the best-validation model;
- data: ours reads every item once through lerobot and serves the tensors from memory (state-only
  datasets); lerobot-train reads items from the dataset on every step.

Steps/s is measured on the training loop alone, from timestamps of the progress lines both print at
the same steps (ours every steps/10, lerobot-train with ``--log_freq=steps/10``): the span between the
first and the last such line holds the same updates, validation and checkpoint on both sides.

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
from pathlib import Path
from typing import Any

from benchlib import (
    BENCH_CACHE,
    bench_env,
    ensure_demo_dataset,
    exit_on_sigterm,
    machine_info,
    markdown_table,
    median,
    progress,
    ratio,
    run_measured,
    write_json,
)

OURS = "ours (lerobot_kfold train-fold)"
THEIRS = "lerobot-train"

_OURS_STEP = re.compile(r"fold \d+: step (\d+)/(\d+)")
_THEIRS_LOG = re.compile(r"\bstep:\S+ smpl:")
_THEIRS_EVAL = re.compile(r"step (\d+): eval_loss=([-\d.einf]+)")
_THEIRS_SPLIT = re.compile(r"Train/eval split: (\d+) train, (\d+) eval")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time one k-fold fold of lerobot_kfold's trainer against lerobot-train on the same data, "
            "ACT config, steps, batch size, seed, device and threads (medians of interleaved runs; "
            "ratio ours / theirs). Progress on stderr, a table on stdout."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=BENCH_CACHE / "so101_40",
        help="LeRobot dataset; the simulator demo dataset is recorded there first if missing",
    )
    parser.add_argument("--episodes", type=int, default=40, help="episodes to record when --root is missing")
    parser.add_argument("--k", type=int, default=5, help="folds; the last unshuffled fold is compared")
    parser.add_argument("--steps", type=int, default=200, help="training steps (a multiple of 10, >= 20)")
    parser.add_argument("--eval-every", type=int, default=100, help="validate every N steps (and at the end)")
    parser.add_argument(
        "--save-every", type=int, default=100, help="checkpoint every N steps (and at the end)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OMP threads, the same for both sides (1 is steadiest on a shared machine)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (interleaved)")
    parser.add_argument(
        "--their-workers",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also time lerobot-train with --num_workers=N (once per repeat), e.g. its default 4",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs both sides")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH_CACHE / "trainer_vs_lerobot_train",
        help="scratch folder (plan, run outputs, logs); emptied first",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before one run is killed")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if args.steps < 20 or args.steps % 10:
        parser.error("--steps must be a multiple of 10 and at least 20 (progress lines come every steps/10)")
    if args.repeats < 1 or args.threads < 1 or args.k < 2:
        parser.error("--repeats and --threads must be >= 1, --k >= 2")
    return args


def policy_flags(steps_log: int, args: argparse.Namespace, eval_split: float) -> list[str]:
    """lerobot-train flags for the same fold and ACT that ``train-fold`` builds from its defaults."""
    from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return "null" if v is None else str(v)

    chunk_size, learning_rate = 10, 1e-3  # train-fold's defaults for --chunk-size / --learning-rate
    flags = [f"--policy.{name}={value(v)}" for name, v in DEMO_ACT_OVERRIDES.items()]
    flags += [
        "--policy.type=act",
        f"--policy.chunk_size={chunk_size}",
        f"--policy.n_action_steps={chunk_size}",
        f"--policy.optimizer_lr={learning_rate}",
        "--policy.pretrained_backbone_weights=null",
        "--policy.push_to_hub=false",
        f"--policy.device={args.device}",
        f"--dataset.root={args.root}",
        "--dataset.video_backend=pyav",
        f"--dataset.eval_split={eval_split!r}",
        f"--eval_steps={args.eval_every}",
        f"--steps={args.steps}",
        f"--batch_size={args.batch_size}",
        f"--seed={args.seed}",
        "--save_checkpoint=true",
        f"--save_freq={args.save_every}",
        f"--log_freq={steps_log}",
        "--wandb.enable=false",
    ]
    return flags


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


def loop_rate(times: dict[int, float], window: tuple[int, int]) -> float | None:
    first, last = window
    if first not in times or last not in times or times[last] <= times[first]:
        return None
    return (last - first) / (times[last] - times[first])


def parse_ours(record, args) -> dict[str, Any]:
    times = {}
    for t, _, line in record.lines:
        m = _OURS_STEP.search(line)
        if m:
            times[int(m.group(1))] = t
    result = {}
    with contextlib.suppress(json.JSONDecodeError):
        result = json.loads(record.stdout)
    metrics = result.get("metrics", {})
    return {
        "step_times": times,
        "val_loss_normalized": metrics.get("val_l1_normalized"),
        "val_l1_action_units": metrics.get("val_l1"),
        "reported_steps_per_s": result.get("steps_per_s"),
    }


def parse_theirs(record, args) -> dict[str, Any]:
    every = args.steps // 10
    times, evals, split = {}, {}, None
    for t, _, line in record.lines:
        if _THEIRS_LOG.search(line):
            # Its step counter prints as "1K" past 999: count the lines instead (one per log_freq).
            times[every * (len(times) + 1)] = t
        m = _THEIRS_EVAL.search(line)
        if m:
            evals[int(m.group(1))] = float(m.group(2))
        m = _THEIRS_SPLIT.search(line)
        if m:
            split = (int(m.group(1)), int(m.group(2)))
    return {
        "step_times": times,
        "val_loss_normalized": evals.get(args.steps),
        "val_l1_action_units": None,
        "split": split,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    args.root = args.root.resolve()
    work = args.work_dir.resolve()
    env = bench_env(threads=args.threads)
    ensure_demo_dataset(args.root, args.episodes, args.python, env)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    # The plan: unshuffled, so the last fold holds out the last n/k episodes, as --dataset.eval_split does.
    plan_path = work / "plan.json"
    plan_cmd = [args.python, "-m", "lerobot_kfold", "plan", "--root", str(args.root), "--k", str(args.k)]
    plan_cmd += ["--no-shuffle", "--output", str(plan_path)]
    planned = run_measured(plan_cmd, env=env)
    if planned.returncode != 0:
        raise SystemExit(f"error: planning failed:\n{planned.tail()}")
    plan = json.loads(plan_path.read_text())
    fold = plan["folds"][-1]
    n_total = len(fold["train_episodes"]) + len(fold["val_episodes"])
    n_val = len(fold["val_episodes"])
    all_episodes = sorted(fold["train_episodes"] + fold["val_episodes"])
    if fold["val_episodes"] != all_episodes[-n_val:] or len(fold.get("val_task_counts", {})) > 1:
        raise SystemExit("error: the compared fold must hold out the last episodes of a single-task dataset")
    # lerobot holds out ceil(n * f) episodes: (n_val - 0.5) / n makes that exactly n_val, free of rounding.
    eval_split = round((n_val - 0.5) / n_total, 6)
    assert math.ceil(n_total * eval_split) == n_val
    window = timing_window(args)
    every = args.steps // 10

    ours_entry = ["-m", "lerobot_kfold"]
    ours_cmd = [args.python, *ours_entry, "train-fold", "--plan", str(plan_path)]
    ours_cmd += ["--fold-id", str(fold["fold_id"]), "--steps", str(args.steps)]
    ours_cmd += ["--eval-every", str(args.eval_every), "--save-every", str(args.save_every)]
    ours_cmd += ["--batch-size", str(args.batch_size), "--seed", str(args.seed), "--device", args.device]
    ours_cmd += ["--torch-threads", str(args.threads), "--chunk-size", "10", "--learning-rate", "0.001"]
    theirs_base = [args.python, "-m", "lerobot.scripts.lerobot_train", "--dataset.repo_id=local/bench"]
    theirs_base += policy_flags(every, args, eval_split)

    sides: list[tuple[str, Any]] = [(OURS, None), (THEIRS, 0)] + [
        (f"{THEIRS} (num_workers={n})", n) for n in args.their_workers
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    progress(
        f"fold {fold['fold_id']} of an unshuffled {args.k}-fold plan: {len(fold['train_episodes'])} train / "
        f"{n_val} held-out episodes; {args.steps} steps, batch {args.batch_size}, device {args.device}, "
        f"{args.threads} threads, {args.repeats} interleaved repeats; eval_split={eval_split}"
    )
    context = {
        "benchmark": "trainer_vs_lerobot_train",
        "argv": sys.argv,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "fold": {"fold_id": fold["fold_id"], "val_episodes": fold["val_episodes"], "eval_split": eval_split},
        "loop_window_steps": list(window),
        "commands": {"ours": ours_cmd, "theirs": theirs_base},
    }
    failures = 0
    for rep in range(args.repeats):
        for name, workers in sides:
            out = work / "runs" / f"{'ours' if workers is None else f'theirs_w{workers}'}_{rep}"
            if workers is None:
                cmd = [*ours_cmd, "--output-dir", str(out)]
            else:
                cmd = [*theirs_base, f"--num_workers={workers}", f"--output_dir={out}", f"--job_name=b{rep}"]
            progress(f"repeat {rep + 1}/{args.repeats}: {name} ...")
            record = run_measured(
                cmd, env=env, log_path=work / "logs" / f"{out.name}.log", timeout_s=args.timeout
            )
            run = measure_run(record, workers, args, window, (n_total - n_val, n_val))
            runs[name].append(run)
            if run["error"]:
                failures += 1
                progress(f"  {name} FAILED: {run['error']}\n{record.tail(15)}")
            else:
                progress(
                    f"  {name}: wall {run['wall_s']:.1f}s, start {run['startup_s']}s, loop "
                    f"{run['loop_steps_per_s']} steps/s, peak RSS {run['peak_rss_mib']:.0f} MiB, "
                    f"final eval loss {run['val_loss_normalized']}"
                )
            if args.json:  # after every run, so a run cut short still leaves its numbers
                write_json(args.json, {**context, "runs": runs, "complete": False}, quiet=True)

    summary, ratios = summarize(runs)
    print_table(summary, ratios, args, window)
    info = machine_info()
    print(
        f"machine: {info.get('nproc')} CPUs, {info.get('cpu')}, load {info.get('load_avg')}, "
        f"gpu {info.get('gpu')}"
    )
    if args.json:
        payload = {**context, "machine": info, "summary": summary, "ratios_ours_over_theirs": ratios}
        write_json(args.json, {**payload, "runs": runs, "complete": True})
    return 1 if failures else 0


def measure_run(record, workers, args, window, expected_split) -> dict[str, Any]:
    """The figures of one run (``error`` set when it failed or did not do the expected work)."""
    run: dict[str, Any] = {
        "wall_s": round(record.wall_s, 3),
        "peak_rss_mib": round(record.peak_rss_mib, 1),
        "returncode": record.returncode,
        "error": None,
    }
    parsed = parse_ours(record, args) if workers is None else parse_theirs(record, args)
    rate = loop_rate(parsed["step_times"], window)
    first = window[0]
    startup = None
    if rate and first in parsed["step_times"]:
        # Seconds before the first step: the first timed progress line, less the steps before it.
        startup = round(parsed["step_times"][first] - first / rate, 2)
    run.update(
        loop_steps_per_s=None if rate is None else round(rate, 3),
        startup_s=startup,
        val_loss_normalized=parsed["val_loss_normalized"],
        val_l1_action_units=parsed["val_l1_action_units"],
        reported_steps_per_s=parsed.get("reported_steps_per_s"),
    )
    if record.returncode != 0:
        run["error"] = f"exit status {record.returncode}"
    elif workers is not None and parsed["split"] != expected_split:
        run["error"] = f"lerobot-train split {parsed['split']} is not the fold's {expected_split}"
    elif rate is None or parsed["val_loss_normalized"] is None:
        run["error"] = "no training-loop timing or final validation found in its output"
    return run


def summarize(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = {}
    for name, rs in runs.items():
        ok = [r for r in rs if not r["error"]]
        summary[name] = {
            key: median([r[key] for r in ok])
            for key in ("wall_s", "startup_s", "loop_steps_per_s", "peak_rss_mib", "val_loss_normalized")
        }
        summary[name].update(n=len(ok), failed=len(rs) - len(ok))
    ours, theirs = summary[OURS], summary[THEIRS]
    ratios = {
        "wall_s": ratio(ours["wall_s"], theirs["wall_s"]),
        # Time per step, ours / theirs (the inverse of the steps/s ratio): below 1 means ours is faster.
        "loop_s_per_step": ratio(theirs["loop_steps_per_s"], ours["loop_steps_per_s"]),
        "peak_rss_mib": ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"]),
    }
    return summary, ratios


def print_table(summary, ratios, args, window) -> None:
    rows = [
        [
            name,
            s["n"] if not s["failed"] else f"{s['n']} (+{s['failed']} failed)",
            s["wall_s"],
            s["startup_s"],
            s["loop_steps_per_s"],
            s["peak_rss_mib"],
            s["val_loss_normalized"],
        ]
        for name, s in summary.items()
    ]
    per_step = ratios["loop_s_per_step"]
    rows.append(
        [
            "ratio ours / lerobot-train",
            "",
            ratios["wall_s"],
            "",
            f"{per_step:.3f} (s/step)" if per_step else "-",
            ratios["peak_rss_mib"],
            "",
        ]
    )
    header = ["side", "runs", "wall s", "start s", "loop steps/s", "peak RSS MiB", "final eval loss (norm.)"]
    print(
        f"\n{args.steps} steps, batch {args.batch_size}, device {args.device}, {args.threads} threads, "
        f"medians of {args.repeats}; loop = steps {window[0]}..{window[1]}"
    )
    print(markdown_table(header, rows))


if __name__ == "__main__":
    sys.exit(main())
