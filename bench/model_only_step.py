#!/usr/bin/env python
"""The model-only step of one fold: lerobot's update on batches already on the device, no data path.

The limit a data path can reach: the fold is built exactly as ``python -m lerobot_kfold train-fold``
builds it (same flags: policy, preset, overrides, precision, batch size, seed), then ``--prefetch``
batches are read from its loader once, converted and normalized (``preprocessor``, which moves them to
the device) and kept there; the timed loop runs lerobot's ``update_policy`` on them in turn. It prints
the progress lines ``train-fold`` prints (``fold N: step S/T ...`` every steps/10), so the benchmark
times it the same way, and a JSON line at the end. No validation, no checkpoints.

    python bench/model_only_step.py --plan plan.json --fold-id 4 --steps 300 --batch-size 32 ...
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import benchlib  # noqa: F401  (puts include/ on the path)

from lerobot_kfold import cli, fold_data, training
from lerobot_kfold.declared import build
from lerobot_kfold.splits import read_plan
from lerobot_kfold.training_config import EvaluationSettings, TrainingSettings, fold_config


def main(argv: list[str]) -> int:
    prefetch = 8
    if "--prefetch" in argv:
        at = argv.index("--prefetch")
        prefetch = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
    args = cli.build_parser().parse_args(["train-fold", *argv])
    training_settings = build(TrainingSettings, cli._given(args, ["training"]), text=True)
    evaluation = build(EvaluationSettings, cli._given(args, ["evaluation"]), text=True)
    plan = read_plan(args.plan)
    fold = plan.fold(args.fold_id)
    config = fold_config(
        training_settings,
        evaluation,
        fold,
        dataset_root=str(Path(args.root or plan.dataset.root).resolve()),
        repo_id=plan.dataset.repo_id,
        output_dir=str(Path(args.output_dir or "model_only_out").resolve()),
        seed=plan.config.seed,
        torch_threads=args.torch_threads,
    )
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    built = training.build_fold(config, say)
    loop = training.start_loop(built, config, 0)
    batches = []
    for batch in loop.loader:
        batch = fold_data.camera_frames_to_float(batch, built.camera_keys, built.device)
        batches.append(built.preprocessor(batch))
        if len(batches) == prefetch:
            break
    say(f"fold {config.fold_id}: {len(batches)} batches of {config.batch_size} on {built.device}")
    return timed_loop(built, loop, config, batches, say)


def timed_loop(built, loop, config, batches, say) -> int:
    from lerobot.scripts.lerobot_train import update_policy

    every = max(1, config.steps // 10)
    started = time.perf_counter()
    loop.policy.train()
    loss = float("nan")
    for step in range(1, config.steps + 1):
        loop.tracker, _ = update_policy(
            loop.tracker,
            loop.policy,
            dict(batches[(step - 1) % len(batches)]),
            loop.optimizer,
            built.train_cfg.optimizer.grad_clip_norm,
            accelerator=loop.accelerator,
            lr_scheduler=loop.scheduler,
        )
        loss = float(loop.tracker.loss.val)  # .item() inside update_policy: the step has finished
        if step % every == 0:
            say(f"fold {config.fold_id}: step {step}/{config.steps} loss {loss:.4f}")
    seconds = time.perf_counter() - started
    print(json.dumps({"steps": config.steps, "seconds": seconds, "final_train_loss": loss}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
