"""A fold's live progress: one small record, published at a steady rhythm and at every event.

Why: a fold on a GPU trains for hours while its Airflow task waits in the triggerer, and nothing said
whether it was at step 90,000 or stuck. While it trains, :class:`ProgressPublisher` publishes a
:class:`FoldProgress` (step, train loss, last validation L1, steps/s, ETA, checkpoints) every
``PROGRESS_EVERY_S`` seconds and at every validation, checkpoint, evaluation and the end, to:

- the job's progress lines (``say``: stdout, so the Airflow task log on backend local and Modal's log);
- the fold's folder (``progress.json``, from the first training step on), which the report reads for a
  fold that never finished;
- a channel the orchestrator watches (``channel``): on Modal a key of the named ``modal.Dict``
  ``PROGRESS_DICT`` (``modal_app``); the ``ModalGPUOperator``'s trigger logs each new record's ``line``
  into the deferred task's log, so both backends show the same lines;
- W&B, when it is on (steps/s and ETA next to the losses it already gets).

A fold whose progress has not moved for ``stall_after_s`` is reported, never stopped. The publisher's
own watch covers folds whose log is this process's (backend local); on Modal the trigger watches the
channel instead, since a container that died or never started publishes nothing at all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lerobot_kfold.atomic_io import write_json_atomic

log = logging.getLogger(__name__)

# The named modal.Dict the Modal app publishes to (one key per fold: its storage folder). The image sets
# PROGRESS_DICT_ENV; a fold running anywhere else (the Airflow worker, the CLI) has no channel.
PROGRESS_DICT = "lerobot-kfold-progress"
PROGRESS_DICT_ENV = "LEROBOT_KFOLD_PROGRESS_DICT"
PROGRESS_FILE = "progress.json"
# Seconds between progress records while training (events publish at once); where the fold runs.
PROGRESS_EVERY_S = 60.0
PROGRESS_EVERY_ENV = "LEROBOT_KFOLD_PROGRESS_EVERY_S"

Say = Callable[[str], None]
Channel = Callable[[dict[str, Any]], None]


def channel_key(fold_folder: str) -> str:
    """A fold's key in the progress Dict: its storage folder, unique per DAG, run, group and fold."""
    return str(fold_folder)


def progress_every_s(environ: dict[str, str] | os._Environ[str] | None = None) -> float:
    """The rhythm of progress records on this machine: ``$LEROBOT_KFOLD_PROGRESS_EVERY_S`` or 60 s."""
    environ = os.environ if environ is None else environ
    text = environ.get(PROGRESS_EVERY_ENV, "").strip()
    try:
        value = float(text) if text else PROGRESS_EVERY_S
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{PROGRESS_EVERY_ENV} must be a number of seconds above 0, got {text!r}")
    return value


def duration(seconds: float) -> str:
    """``3725`` -> ``"1h02m"``, ``185`` -> ``"3m05s"``, ``21.4`` -> ``"21s"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass(frozen=True)
class FoldProgress:
    """Where one fold's training stands; ``line()`` is what the logs show."""

    fold_id: int
    # "starting", "training", "validation", "checkpoint", "evaluating" or "finished".
    event: str
    # None while the fold is still loading its data (a resumed fold learns its step from the checkpoint).
    step: int | None
    steps: int
    # Mean training loss over the steps since the previous record.
    train_loss: float | None = None
    val_l1: float | None = None
    val_l1_normalized: float | None = None
    val_step: int | None = None
    # Over this call's training so far (validations included), and the time left at that pace.
    steps_per_s: float | None = None
    eta_s: float | None = None
    checkpoint_step: int | None = None
    checkpoints: int = 0
    # Publishing time (Unix seconds) and the record's number within this call.
    t: float = 0.0
    seq: int = 0
    # "fold 3", or "chunk10 / fold 3" in a run comparing candidates (FoldTrainingConfig.label).
    label: str = ""

    def line(self) -> str:
        """``fold 0: step 1200/2000 (60%), train loss 0.0312, val L1 0.01234 at step 1000, ...``."""
        head = self.label or f"fold {self.fold_id}"
        if self.step is None:
            return f"{head}: starting (loading data, building the policy), {self.steps} steps to train"
        parts = [f"step {self.step}/{self.steps} ({100 * self.step / max(self.steps, 1):.0f}%)"]
        if self.train_loss is not None:
            parts.append(f"train loss {self.train_loss:.4f}")
        if self.val_l1 is not None:
            normalized = (
                "" if self.val_l1_normalized is None else f" (normalized {self.val_l1_normalized:.4f})"
            )
            parts.append(f"val L1 {self.val_l1:.5f}{normalized} at step {self.val_step}")
        if self.steps_per_s is not None:
            parts.append(f"{self.steps_per_s:.1f} steps/s")
        if self.eta_s is not None and self.step < self.steps:
            parts.append(f"ETA {duration(self.eta_s)}")
        if self.checkpoint_step is not None:
            parts.append(f"checkpoint at step {self.checkpoint_step} ({self.checkpoints} this run)")
        events = {"evaluating": " [closed-loop evaluation]", "finished": " [finished]"}
        return f"{head}: {', '.join(parts)}{events.get(self.event, '')}"

    def to_dict(self) -> dict[str, Any]:
        """The published form: every field and the ``line`` (all a generic watcher needs to log)."""
        return {**dataclasses.asdict(self), "line": self.line()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldProgress:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def read_progress(fold_dir: Path) -> FoldProgress | None:
    """The last progress a fold wrote to its folder, or None (no file, or not readable)."""
    try:
        return FoldProgress.from_dict(json.loads((Path(fold_dir) / PROGRESS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class ProgressPublisher:
    """Publishes one fold's :class:`FoldProgress` to its sinks; training calls it at each step and event.

    Every sink but ``say`` may fail without stopping training (a channel that is down is reported once).
    """

    def __init__(
        self,
        fold_id: int,
        steps: int,
        *,
        say: Say,
        label: str = "",
        folder: Path | None = None,
        channel: Channel | None = None,
        every_s: float | None = None,
        stall_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fold_id = fold_id
        self.label = label or f"fold {fold_id}"
        self.steps = steps
        self.say = say
        self.folder = None if folder is None else Path(folder)
        self.channel = channel
        self.every_s = progress_every_s() if every_s is None else every_s
        self.clock = clock
        self.wandb_log: Callable[[dict[str, Any], int], None] | None = None
        self.last: FoldProgress | None = None
        self.last_published = clock()
        self._seq = 0
        self._begin: tuple[int, float] | None = None  # (step, clock) when training began in this call
        self._next_due = math.inf
        self._channel_failed = False
        self._state: dict[str, Any] = {"checkpoints": 0}
        self._losses = [0.0, 0]  # sum and count of training losses since the previous record
        self._lock = threading.Lock()
        self._watch = StallWatch(self, stall_after_s) if stall_after_s else None
        self._publish("starting", None)

    # ---------------------------------------------------------------------- what training reports

    def begin(self, step: int) -> None:
        """Training starts (or resumes) at ``step``."""
        self._begin = (step, self.clock())
        self._publish("training", step)

    def train_step(self, step: int, loss: float) -> None:
        """After each optimizer step: cheap, and publishes once ``every_s`` has passed."""
        self._losses[0] += loss
        self._losses[1] += 1
        if self.clock() >= self._next_due:
            self._publish("training", step)

    def validation(self, step: int, val_l1: float, val_l1_normalized: float | None = None) -> None:
        self._state.update(val_l1=val_l1, val_l1_normalized=val_l1_normalized, val_step=step)
        self._publish("validation", step)

    def checkpoint(self, step: int) -> None:
        self._state["checkpoint_step"] = step
        self._state["checkpoints"] += 1
        self._publish("checkpoint", step)

    def evaluating(self, step: int) -> None:
        self._publish("evaluating", step)

    def finished(self, step: int) -> None:
        self._publish("finished", step)
        self.close()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    # ------------------------------------------------------------------------------ publishing

    def _rate(self, step: int | None) -> tuple[float | None, float | None]:
        if self._begin is None or step is None:
            return None, None
        first, started = self._begin
        elapsed = self.clock() - started
        if step <= first or elapsed <= 0:
            return None, None
        rate = (step - first) / elapsed
        return round(rate, 3), round((self.steps - step) / rate, 1)

    def _publish(self, event: str, step: int | None) -> None:
        rate, eta = self._rate(step)
        total, count = self._losses
        if count:
            self._state["train_loss"] = round(total / count, 6)
            self._losses = [0.0, 0]
        with self._lock:
            self._seq += 1
            record = FoldProgress(
                fold_id=self.fold_id,
                label=self.label,
                event=event,
                step=step,
                steps=self.steps,
                steps_per_s=rate,
                eta_s=eta,
                t=round(time.time(), 3),
                seq=self._seq,
                **self._state,
            )
            self.last = record
            self.last_published = self.clock()
            self._next_due = self.last_published + self.every_s
        self.say(record.line())
        self._to_sinks(record)

    def _to_sinks(self, record: FoldProgress) -> None:
        data = record.to_dict()
        # Not before training begins: a fold whose inputs are refused writes nothing in its folder.
        if self.folder is not None and record.step is not None:
            try:
                write_json_atomic(self.folder / PROGRESS_FILE, data)
            except OSError as exc:
                log.warning("%s: could not write %s: %s", self.label, PROGRESS_FILE, exc)
        if self.wandb_log is not None and record.step is not None and record.steps_per_s is not None:
            try:
                self.wandb_log(
                    {"progress/steps_per_s": record.steps_per_s, "progress/eta_s": record.eta_s}, record.step
                )
            except Exception as exc:  # W&B is for watching too
                log.warning("%s: could not log progress to W&B: %s", self.label, exc)
        if self.channel is not None:
            try:
                self.channel(data)
            except Exception as exc:  # the channel is for watching: training goes on without it
                if not self._channel_failed:
                    self.say(f"{self.label}: progress channel unavailable ({exc}); training goes on")
                self._channel_failed = True


class StallWatch:
    """A daemon thread that says so when a publisher has published nothing for ``after_s`` seconds.

    It repeats the report every ``after_s`` while the fold stays stalled, and never stops the fold.
    """

    def __init__(self, publisher: ProgressPublisher, after_s: float) -> None:
        self.publisher = publisher
        self.after_s = float(after_s)
        self._stop = threading.Event()
        self._reported_at: float | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"stall-watch-{publisher.fold_id}", daemon=True
        )
        self._thread.start()

    def check(self) -> str | None:
        """The stall report due now, if any (the thread's one step; callable directly in tests)."""
        publisher = self.publisher
        now = publisher.clock()
        quiet = now - publisher.last_published
        since = max(publisher.last_published, self._reported_at or -math.inf)
        if quiet < self.after_s or now - since < self.after_s:
            return None
        self._reported_at = now
        last = publisher.last.line() if publisher.last is not None else "nothing yet"
        return (
            f"{publisher.label}: stalled? no progress for {duration(quiet)} (last: {last}); "
            "it is not stopped: stop the task to end it"
        )

    def _run(self) -> None:
        while not self._stop.wait(min(30.0, max(self.after_s / 4, 0.05))):
            report = self.check()
            if report is not None:
                self.publisher.say(report)

    def stop(self) -> None:
        self._stop.set()
