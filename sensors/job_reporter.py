"""Report a training job's progress to the twin: start, step times, checkpoints, end or failure.

A `JobReporter` turns calls from a training loop into `JobEvent`s (DESIGN §4) and hands them to an
`EventSink` (normally an `MqttEventPublisher`). A plain PyTorch loop::

    with JobReporter.from_url("mqtt://broker:1883", "lab", "run-42", model={"preset": "llama3-8b"},
                              layout={"tp": 1, "pp": 1, "dp": 8}, every_n_steps=10) as reporter:
        for step, batch in enumerate(loader):
            t0 = time.perf_counter()
            optimizer.zero_grad(); model(**batch).loss.backward(); optimizer.step(); torch.cuda.synchronize()
            reporter.step(step, time.perf_counter() - t0, tokens=batch["input_ids"].numel())

Entering the block sends `start`; leaving it sends `end`, or `fail` with the exception's type and message
(the exception propagates). `every_n_steps` thins step events: each carries the mean step time over the
steps since the previous step event and the tokens processed since the job started. In a distributed
job, report from one process (rank 0) with the tokens of all ranks (multiply by the data-parallel size).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

import orjson

from sensors.contract import DEFAULT_TOPIC_ROOT, JobEvent, JobEventKind, check_segment
from sensors.errors import ContractError, SensorError
from sensors.event_publisher import (
    DEFAULT_BUFFER_LIMIT,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    EventSink,
    MqttEventPublisher,
)
from sensors.mqtt_url import parse_broker_url

__all__ = ["MAX_REASON_CHARS", "MAX_STEP_TIME_S", "JobLifecycleError", "JobReporter"]

log = logging.getLogger(__name__)

# Longest failure reason sent: the twin's decoder rejects a `reason` longer than 128 characters (and with
# it the whole event), so longer reasons are cut and end in an ellipsis.
MAX_REASON_CHARS: Final = 128
ELLIPSIS: Final = "…"
# Longest plausible step (seconds): one day. The twin's decoder rejects larger `step_time_s` values.
MAX_STEP_TIME_S: Final = 86_400.0
# Seconds `close()` waits for the broker to acknowledge outstanding events by default.
CLOSE_TIMEOUT_S: Final = 5.0


class JobLifecycleError(SensorError, RuntimeError):
    """An event out of order: before `start()`, a second `start()`, or anything after `end`/`fail`."""


def _check_step(name: str, step: object, last: int | None, *, strictly_after: bool) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise ContractError(f"{name}(={step!r}) must be an integer ≥ 0.")
    step = int(step)  # NumPy/PyTorch integers become plain ints (JSON-serialisable)
    if step < 0:
        raise ContractError(f"{name}(={step}) must be ≥ 0.")
    if last is not None and (step <= last if strictly_after else step < last):
        relation = ">" if strictly_after else "≥"
        raise ContractError(f"{name}(={step}) must be {relation} the last reported step ({last}).")
    return step


def _is_real(value: object) -> bool:
    """A real number that is not a bool (Python, NumPy or any `numbers.Real`)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_json_object(name: str, value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ContractError(f"{name}(={value!r:.80}) must be a mapping (a JSON object) or None.")
    copy = dict(value)
    try:
        orjson.dumps(copy)
    except orjson.JSONEncodeError as exc:
        raise ContractError(f"{name}(={value!r:.80}) must be JSON-serialisable: {exc}.") from None
    return copy


class JobReporter:
    """Sends one job's events to a sink. Not thread-safe: call it from the training loop's thread.

    Args:
        sink: where events go (an `MqttEventPublisher`, or any `EventSink`).
        job_id: the job's topic segment (letters, digits, `_`, `-`, `.`).
        model, layout: the job's model and parallel layout (JSON objects, DESIGN §3), sent with `start`.
        nodes: the nodes the job runs on, sent with `start`.
        every_n_steps: publish one step event per this many `step()` calls (≥ 1).
        clock: event timestamps in unix seconds.
    """

    def __init__(
        self,
        sink: EventSink,
        job_id: str,
        model: Mapping[str, Any] | None,
        layout: Mapping[str, Any] | None,
        nodes: Sequence[str] = (),
        every_n_steps: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_segment("job_id", job_id)
        if isinstance(nodes, str):
            raise ContractError(f"nodes(={nodes!r}) must be a sequence of node names, not one string.")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ContractError(f"every_n_steps(={every_n_steps!r}) must be an integer ≥ 1.")
        self.sink = sink
        self.job_id = job_id
        self.model = _check_json_object("model", model)
        self.layout = _check_json_object("layout", layout)
        self.nodes = tuple(check_segment("nodes[]", node) for node in nodes)
        self.every_n_steps = every_n_steps
        self.clock = clock
        self.owns_sink = False
        self._started = False
        self._finished = False
        self._last_step: int | None = None
        self._pending_steps = 0
        self._pending_time_s = 0.0
        self._tokens_total: float | None = None
        self._events_sent = 0
        self._events_dropped = 0

    @classmethod
    def from_url(
        cls,
        url_text: str,
        cluster: str,
        job_id: str,
        *,
        model: Mapping[str, Any] | None = None,
        layout: Mapping[str, Any] | None = None,
        nodes: Sequence[str] = (),
        every_n_steps: int = 1,
        clock: Callable[[], float] = time.time,
        root: str = DEFAULT_TOPIC_ROOT,
        client_id: str | None = None,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
    ) -> JobReporter:
        """A reporter publishing over MQTT to `url_text` (`mqtt://[user[:password]@]host[:port]`, or
        `mqtts://…` for TLS) under `root`/`cluster`. The reporter owns that publisher: `close()` (or
        leaving the `with` block) flushes and disconnects it."""
        publisher = MqttEventPublisher(
            parse_broker_url(url_text),
            cluster,
            client_id=client_id,
            root=root,
            buffer_limit=buffer_limit,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
        )
        reporter = cls(publisher, job_id, model, layout, nodes, every_n_steps, clock)
        reporter.owns_sink = True
        return reporter

    # -- state ------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    @property
    def finished(self) -> bool:
        """True after `end()` or `fail()`: the reporter refuses further events."""
        return self._finished

    @property
    def last_step(self) -> int | None:
        """The highest step reported so far (by `start`, `step`, `checkpoint`, `end` or `fail`)."""
        return self._last_step

    @property
    def events_sent(self) -> int:
        """Events the sink accepted."""
        return self._events_sent

    @property
    def events_dropped(self) -> int:
        """Events the sink refused (its buffer was full)."""
        return self._events_dropped

    # -- events -----------------------------------------------------------------------------------

    def start(self, step: int | None = None) -> None:
        """Announce the job with its model, layout and nodes. `step`: the step it resumes from, if any."""
        if self._started:
            raise JobLifecycleError(f"job_id(={self.job_id!r}) already started; start() is sent once.")
        self._check_open("start")
        if step is not None:
            step = self._last_step = _check_step("step", step, None, strictly_after=False)
        self._started = True
        self._emit(JobEventKind.START, step=step, model=self.model, layout=self.layout, nodes=self.nodes)

    def step(self, step: int, step_time_s: float, tokens: float | None = None) -> None:
        """Record that training step `step` took `step_time_s` seconds and processed `tokens` tokens.

        Steps must increase. Every `every_n_steps` calls one step event is published carrying the mean
        step time (s) of those calls and the tokens processed since the start (if any step gave tokens).
        """
        self._check_open("step")
        self._check_started("step")
        step = _check_step("step", step, self._last_step, strictly_after=True)
        if not _is_real(step_time_s) or not math.isfinite(step_time_s) or step_time_s <= 0:
            raise ContractError(f"step_time_s(={step_time_s!r}) must be finite and > 0.")
        if step_time_s > MAX_STEP_TIME_S:
            raise ContractError(f"step_time_s(={step_time_s!r}) must be ≤ {MAX_STEP_TIME_S:g} (one day).")
        if tokens is not None and (not _is_real(tokens) or not math.isfinite(tokens) or tokens < 0):
            raise ContractError(f"tokens(={tokens!r}) must be finite and ≥ 0, or None.")
        self._last_step = step
        self._pending_steps += 1
        self._pending_time_s += float(step_time_s)
        if tokens is not None:
            self._tokens_total = (self._tokens_total or 0.0) + float(tokens)
        if self._pending_steps >= self.every_n_steps:
            self._flush_steps()

    def checkpoint(self, step: int) -> None:
        """Record that a checkpoint of step `step` was written."""
        self._check_open("checkpoint")
        self._check_started("checkpoint")
        step = self._last_step = _check_step("step", step, self._last_step, strictly_after=False)
        self._emit(JobEventKind.CHECKPOINT, step=step, tokens=self._tokens_total)

    def end(self, step: int | None = None) -> None:
        """Record a normal end at `step` (default: the last reported step). Steps not yet published are
        sent first as one step event."""
        self._finish(JobEventKind.END, step, None)

    def fail(self, reason: str, step: int | None = None) -> None:
        """Record a failure at `step` (default: the last reported step); `reason` is cut to
        `MAX_REASON_CHARS` characters. Steps not yet published are sent first as one step event."""
        if not isinstance(reason, str) or not reason.strip():
            raise ContractError(f"reason(={reason!r}) must be a non-empty string.")
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - len(ELLIPSIS)] + ELLIPSIS
        self._finish(JobEventKind.FAIL, step, reason)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close the sink if this reporter built it (`from_url`), waiting up to `timeout_s` seconds for
        outstanding events to be acknowledged; a sink passed in stays open (its owner closes it)."""
        if self.owns_sink:
            self.sink.close(timeout_s)

    # -- context manager --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                if not self._finished:
                    self.end()
            elif not self._finished:
                try:
                    self.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                except SensorError:  # never hide the training loop's own exception behind ours
                    log.exception("could not report the failure of job %s", self.job_id)
        finally:
            self.close()

    # -- internals --------------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._finished:
            raise JobLifecycleError(f"{what}() after the job_id(={self.job_id!r}) ended or failed.")

    def _check_started(self, what: str) -> None:
        if not self._started:
            raise JobLifecycleError(f"{what}() before start() for job_id(={self.job_id!r}).")

    def _finish(self, kind: JobEventKind, step: int | None, reason: str | None) -> None:
        self._check_open(str(kind))
        self._check_started(str(kind))
        if step is not None:
            step = _check_step("step", step, self._last_step, strictly_after=False)
        self._flush_steps()
        if step is not None:
            self._last_step = step
        self._finished = True
        self._emit(kind, step=self._last_step, tokens=self._tokens_total, reason=reason)

    def _flush_steps(self) -> None:
        if self._pending_steps == 0:
            return
        mean_s = self._pending_time_s / self._pending_steps
        self._pending_steps = 0
        self._pending_time_s = 0.0
        self._emit(JobEventKind.STEP, step=self._last_step, step_time_s=mean_s, tokens=self._tokens_total)

    def _emit(
        self,
        kind: JobEventKind,
        *,
        step: int | None = None,
        step_time_s: float | None = None,
        tokens: float | None = None,
        model: Mapping[str, Any] | None = None,
        layout: Mapping[str, Any] | None = None,
        nodes: tuple[str, ...] = (),
        reason: str | None = None,
    ) -> None:
        event = JobEvent(
            job_id=self.job_id,
            event=kind,
            ts=self.clock(),
            step=step,
            step_time_s=step_time_s,
            tokens=tokens,
            model=model,
            layout=layout,
            nodes=nodes,
            reason=reason,
        )
        if self.sink.publish_event(event):
            self._events_sent += 1
        else:
            self._events_dropped += 1
            log.warning("event %s of job %s dropped by the sink (buffer full)", kind, self.job_id)
