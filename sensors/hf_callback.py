"""Report a Hugging Face `Trainer` run through a `JobReporter`, without importing `transformers` up front.

    reporter = JobReporter.from_url("mqtt://broker:1883", "lab", "run-42", model={"preset": "llama3-8b"})
    trainer = Trainer(..., callbacks=[make_trainer_callback(reporter, seq_len=4096)])
    with reporter:  # sends `fail` if train() raises; the callback's start/end are then no-ops
        trainer.train()

`TrainerEventsAdapter` holds the logic and needs nothing from `transformers`; `make_trainer_callback`
imports `transformers` only when called and returns a `TrainerCallback` subclass that delegates to it.
Only the main process (`state.is_world_process_zero`) reports, so a distributed run sends one stream.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from sensors.errors import ContractError, SensorUnavailable
from sensors.job_reporter import JobReporter

__all__ = [
    "INSTALL_HINT",
    "TrainerEventsAdapter",
    "TrainerStateLike",
    "TrainingArgsLike",
    "make_trainer_callback",
]

INSTALL_HINT: Final = "pip install transformers"
CALLBACK_CLASS_NAME: Final = "GpuTwinTrainerCallback"


class TrainerStateLike(Protocol):
    """What the adapter reads from `transformers.TrainerState`."""

    @property
    def global_step(self) -> int: ...


class TrainingArgsLike(Protocol):
    """What the adapter reads from `transformers.TrainingArguments` to count tokens per optimizer step."""

    @property
    def per_device_train_batch_size(self) -> int: ...

    @property
    def gradient_accumulation_steps(self) -> int: ...

    @property
    def world_size(self) -> int: ...


def _is_main_process(state: TrainerStateLike) -> bool:
    # TrainerState.is_world_process_zero; objects without it count as the only process.
    return bool(getattr(state, "is_world_process_zero", True))


class TrainerEventsAdapter:
    """Trainer callback logic without `transformers`: each method takes the trainer's state (anything with
    `.global_step`) and sends the matching `JobReporter` event.

    Step time is measured with `clock` (monotonic seconds) between consecutive `on_step_end` calls, the
    first from `on_train_begin`; time spent saving a checkpoint is not counted as step time. Tokens per step
    are `per_device_train_batch_size × gradient_accumulation_steps × world_size × seq_len` when `seq_len`
    (tokens per sample) is given and `on_train_begin` received the training arguments, else not reported.
    """

    def __init__(
        self,
        reporter: JobReporter,
        seq_len: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
            raise ContractError(f"seq_len(={seq_len!r}) must be an integer ≥ 1 (tokens per sample) or None.")
        self.reporter = reporter
        self.seq_len = seq_len
        self.clock = clock
        self.tokens_per_step: float | None = None
        self._last_mark_s: float | None = None

    def on_train_begin(self, state: TrainerStateLike, args: TrainingArgsLike | None = None) -> None:
        """Send `start` (from `state.global_step` when resuming) unless the reporter was started already."""
        if not _is_main_process(state):
            return
        if self.seq_len is not None and args is not None:
            self.tokens_per_step = float(
                args.per_device_train_batch_size
                * args.gradient_accumulation_steps
                * args.world_size
                * self.seq_len
            )
        if not self.reporter.started:
            self.reporter.start(step=state.global_step or None)
        self._last_mark_s = self.clock()

    def on_step_end(self, state: TrainerStateLike) -> None:
        """Report optimizer step `state.global_step` with the time since the previous step (or the start)."""
        if not _is_main_process(state):
            return
        now_s = self.clock()
        if self._last_mark_s is None:  # no on_train_begin seen: time from here on
            self._last_mark_s = now_s
            return
        elapsed_s = now_s - self._last_mark_s
        self._last_mark_s = now_s
        if elapsed_s <= 0:  # a clock without the resolution to tell two steps apart: nothing to report
            return
        self.reporter.step(state.global_step, elapsed_s, self.tokens_per_step)

    def on_save(self, state: TrainerStateLike) -> None:
        """Report a checkpoint at `state.global_step`; the next step's time starts after the save."""
        if not _is_main_process(state):
            return
        self.reporter.checkpoint(state.global_step)
        self._last_mark_s = self.clock()

    def on_train_end(self, state: TrainerStateLike) -> None:
        """Send `end` at `state.global_step` unless the reporter has already finished."""
        if not _is_main_process(state) or self.reporter.finished:
            return
        self.reporter.end(step=state.global_step)


def make_trainer_callback(reporter: JobReporter, seq_len: int | None = None) -> Any:
    """A `transformers.TrainerCallback` reporting through `reporter` (see `TrainerEventsAdapter`).

    `seq_len`: tokens per training sample, to report tokens; None reports none. Raises `SensorUnavailable`
    when `transformers` is not installed. The return type is `transformers.TrainerCallback`.
    """
    try:
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise SensorUnavailable(
            f"make_trainer_callback needs Hugging Face transformers, which is not installed ({exc}); "
            f"install it with `{INSTALL_HINT}`."
        ) from None
    base: type = transformers.TrainerCallback
    adapter = TrainerEventsAdapter(reporter, seq_len)

    def on_train_begin(self: Any, args: Any, state: Any, control: Any, **_kwargs: Any) -> None:
        adapter.on_train_begin(state, args)

    def on_step_end(self: Any, args: Any, state: Any, control: Any, **_kwargs: Any) -> None:
        adapter.on_step_end(state)

    def on_save(self: Any, args: Any, state: Any, control: Any, **_kwargs: Any) -> None:
        adapter.on_save(state)

    def on_train_end(self: Any, args: Any, state: Any, control: Any, **_kwargs: Any) -> None:
        adapter.on_train_end(state)

    # Built with type() rather than a class statement: `TrainerCallback` is untyped (Any) for mypy here.
    callback_class = type(
        CALLBACK_CLASS_NAME,
        (base,),
        {
            "__doc__": "Sends the Trainer's progress to the gpu-twin (see sensors.hf_callback).",
            "adapter": adapter,
            "on_train_begin": on_train_begin,
            "on_step_end": on_step_end,
            "on_save": on_save,
            "on_train_end": on_train_end,
        },
    )
    return callback_class()
