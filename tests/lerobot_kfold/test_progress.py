"""``progress``: a fold's live progress, its rhythm, its sinks and the stall watch; then one real fold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lerobot_kfold import progress
from lerobot_kfold.progress import FoldProgress, ProgressPublisher, StallWatch, duration, read_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def publisher_for(clock: Clock, folder: Path | None = None, **kwargs: Any) -> tuple[ProgressPublisher, list]:
    said: list[str] = []
    publisher = ProgressPublisher(
        3, 1000, say=said.append, folder=folder, every_s=60.0, clock=clock, **kwargs
    )
    return publisher, said


class TestLine:
    def test_says_step_loss_validation_pace_eta_and_checkpoints(self):
        record = FoldProgress(
            fold_id=2,
            event="validation",
            step=1200,
            steps=2000,
            train_loss=0.03125,
            val_l1=0.012341,
            val_l1_normalized=0.3412,
            val_step=1000,
            steps_per_s=38.12,
            eta_s=21.0,
            checkpoint_step=1000,
            checkpoints=2,
        )

        assert record.line() == (
            "fold 2: step 1200/2000 (60%), train loss 0.0312, val L1 0.01234 (normalized 0.3412) at step "
            "1000, 38.1 steps/s, ETA 21s, checkpoint at step 1000 (2 this run)"
        )

    def test_before_training_it_says_the_fold_is_starting(self):
        assert FoldProgress(fold_id=0, event="starting", step=None, steps=50).line() == (
            "fold 0: starting (loading data, building the policy), 50 steps to train"
        )

    @pytest.mark.parametrize(
        ("seconds", "text"), [(21.4, "21s"), (185, "3m05s"), (3725, "1h02m"), (-3, "0s")]
    )
    def test_durations(self, seconds, text):
        assert duration(seconds) == text


class TestPublisher:
    def test_a_record_at_each_event_and_once_a_minute_while_training(self, clock, tmp_path):
        channel: list[dict] = []
        publisher, said = publisher_for(clock, tmp_path, channel=channel.append)
        publisher.begin(0)
        for step in range(1, 101):
            clock.now += 1.0  # one step a second
            publisher.train_step(step, loss=float(step))
        publisher.validation(100, val_l1=0.5, val_l1_normalized=0.9)
        publisher.checkpoint(100)
        publisher.finished(100)

        events = [record["event"] for record in channel]
        assert events == ["starting", "training", "training", "validation", "checkpoint", "finished"]
        minute = FoldProgress.from_dict(channel[2])
        assert minute.step == 60, "the time rhythm: 60 s after the previous record"
        assert minute.train_loss == pytest.approx(30.5), "mean loss of the steps since the previous record"
        assert (minute.steps_per_s, minute.eta_s) == (1.0, 940.0)
        assert [record["line"] for record in channel] == said, "the logs show exactly the published lines"
        last = read_progress(tmp_path)
        assert last == FoldProgress.from_dict(channel[-1])
        assert (last.val_l1, last.checkpoint_step, last.checkpoints) == (0.5, 100, 1)

    def test_a_channel_that_fails_is_reported_once_and_training_goes_on(self, clock):
        def broken(record: dict) -> None:
            raise ConnectionError("Modal unreachable")

        publisher, said = publisher_for(clock, channel=broken)
        publisher.begin(0)
        publisher.validation(10, val_l1=0.1)

        warnings = [line for line in said if "progress channel unavailable" in line]
        assert warnings == ["fold 3: progress channel unavailable (Modal unreachable); training goes on"]
        assert publisher.last is not None and publisher.last.event == "validation"

    def test_w_and_b_gets_the_pace_once_training_runs(self, clock):
        logged: list[tuple[dict, int]] = []
        publisher, _ = publisher_for(clock)
        publisher.wandb_log = lambda values, step: logged.append((values, step))
        publisher.begin(0)
        clock.now += 10
        publisher.validation(20, val_l1=0.1)

        assert logged == [({"progress/steps_per_s": 2.0, "progress/eta_s": 490.0}, 20)]

    def test_the_rhythm_comes_from_the_machine_the_fold_runs_on(self):
        assert progress.progress_every_s({}) == progress.PROGRESS_EVERY_S
        assert progress.progress_every_s({progress.PROGRESS_EVERY_ENV: "2.5"}) == 2.5
        with pytest.raises(ValueError, match=progress.PROGRESS_EVERY_ENV):
            progress.progress_every_s({progress.PROGRESS_EVERY_ENV: "0"})


class TestStallWatch:
    def test_reports_a_stall_after_the_limit_then_again_every_limit_and_never_stops_the_fold(self, clock):
        publisher, _ = publisher_for(clock)
        publisher.begin(40)
        watch = StallWatch(publisher, after_s=600)
        watch.stop()  # driven by hand below

        clock.now += 599
        assert watch.check() is None
        clock.now += 1
        report = watch.check()
        assert report is not None and report.startswith("fold 3: stalled? no progress for 10m00s (last: ")
        assert "step 40/1000" in report and "it is not stopped" in report
        clock.now += 300
        assert watch.check() is None, "not repeated before another limit"
        clock.now += 300
        assert "no progress for 20m00s" in (watch.check() or "")
        publisher.validation(41, val_l1=0.2)
        clock.now += 599
        assert watch.check() is None, "new progress restarts the count"

    def test_the_publishers_watch_thread_says_it(self):
        said: list[str] = []
        publisher = ProgressPublisher(1, 10, say=said.append, every_s=60.0, stall_after_s=0.2)
        try:
            import time

            deadline = time.monotonic() + 10
            while not any("stalled?" in line for line in said) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            publisher.close()
        assert any(line.startswith("fold 1: stalled? no progress for") for line in said)


class TestOneRealFold:
    def test_a_trained_fold_publishes_its_progress_everywhere_and_reports_its_cost(self, demo_root, tmp_path):
        from lerobot_kfold.training import train_fold
        from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES, FoldTrainingConfig

        config = FoldTrainingConfig(
            dataset_root=str(demo_root),
            train_episodes=list(range(3, 12)),
            val_episodes=[0, 1, 2],
            output_dir=str(tmp_path / "fold"),
            policy_overrides=dict(DEMO_ACT_OVERRIDES),
            steps=8,
            batch_size=8,
            eval_every=4,
            save_every=4,
            torch_threads=1,
        )
        said: list[str] = []
        channel: list[dict] = []

        result = train_fold(config, progress=said.append, on_checkpoint=None, channel=channel.append)

        events = [(r["event"], r["step"]) for r in channel]
        assert events == [
            ("starting", None),
            ("training", 0),
            ("validation", 4),
            ("checkpoint", 4),
            ("validation", 8),
            ("checkpoint", 8),
            ("finished", 8),
        ]
        lines = [r["line"] for r in channel]
        assert [line for line in said if line in lines] == lines, "backend local prints the same lines"
        last = FoldProgress.from_dict(channel[-1])
        assert last.val_l1 == pytest.approx(result.metrics["val_l1"])
        assert last.steps_per_s and last.steps_per_s > 0 and last.checkpoints == 2
        assert json.loads((tmp_path / "fold" / progress.PROGRESS_FILE).read_text()) == channel[-1]
        cost = result.cost
        assert cost is not None and cost.device == "cpu" and cost.usd is None
        assert cost.wall_s == result.wall_s and cost.cpu_s > 0
