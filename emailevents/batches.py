"""Cross-emit batching in the worker: an event's messages that arrive within a window run
together, as one job of the pool (one claim statement, one send, one outcome statement).

The worker's consumer keeps each batched event's new task messages in a buffer instead of handing
each to the pool. When the pool is idle (nothing runs in it, nothing waits for it), the buffer
goes to the pool at the event loop's next tick: no batch would form, so none is waited for (at
low load an emit is not delayed). Else it goes as one job when it holds ``batch_max`` messages,
or ``batch_window`` seconds after its first one arrived. A buffer of one message goes to Celery
as a task run alone. A message is acknowledged only once its job has returned (acks_late), and
goes back to the queue when the pool process running the job dies (reject_on_worker_lost). A
retry (a message with an ETA or a retry count) runs alone, as without batching. Per message, as
Celery's own strategy: revoke and expiry, ``task_received`` and the ``task-received`` event, the
task's rate limit (a token a message); the task's time limits apply to the job. This is
celery-batches' model, which pins Celery below 5.7, with those promises kept
(docs/performance.md#cross-emit-batching-design).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from celery import current_app
from celery.concurrency.solo import TaskPool as SoloPool
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_postrun, task_prerun, task_received
from celery.utils.imports import symbol_by_name
from celery.worker import state as worker_state
from celery.worker.request import Request, create_request_cls
from celery.worker.state import task_reserved
from celery.worker.strategy import default, hybrid_to_proto2

from .errors import DeliveryError
from .outcomes import RunResult
from .retries import Queued

__all__ = ["Batching", "run_job"]

logger = logging.getLogger("emailevents")


class Batching:
    """Mixed into an event's task class: the worker runs its new messages in batches
    (``EmailEvents(batch_window=...)``); run alone (a retry, ``apply()``) it is as it was."""

    batch_window: ClassVar[float] = 0.05
    batch_max: ClassVar[int] = 500
    run_batch: ClassVar[Callable[..., tuple[dict[str, Any], set[str]]] | None] = None

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Callable[..., None]:  # noqa: N802 - Celery's name
        """The consumer's handler of this task's messages (Celery calls it at start-up)."""
        return _Buffer(task, app, consumer).handle


class _Slots:
    """The worker's pool as the buffers of one consumer see it: whether it is idle now.

    Idle: no batch job of ours in it and no request Celery holds for it
    (``worker.state.reserved_requests``: handed to the pool or about to be, until done; a batch
    of one and every message run alone is one). Not merely a free slot: with the threads pool a
    free thread is not free CPU (one interpreter lock), and handing each message to a free
    thread at once ran a burst of emits alone, as if batching were off (docs/performance.md). The
    solo pool runs a job inline in the consumer, so the consumer never sees it busy: its buffers
    always wait for the window.
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.jobs = 0
        self.lock = threading.Lock()
        self.inline = isinstance(consumer.pool, SoloPool)

    @classmethod
    def of(cls, consumer: Any) -> _Slots:
        slots: _Slots | None = getattr(consumer, "_emailevents_slots", None)
        if slots is None or slots.consumer is not consumer:
            slots = cls(consumer)
            consumer._emailevents_slots = slots  # noqa: SLF001 - our own attribute
        return slots

    def idle(self) -> bool:
        """Whether nothing runs in the pool and nothing waits for it: a job handed to it now
        starts at once, and no batch is forming behind another."""
        if self.inline:
            return False
        return self.jobs == 0 and not worker_state.reserved_requests

    def soon(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the consumer has read what the broker sent in this burst:
        at the event loop's next tick, or at once without one (a blocking loop reads one
        message at a time)."""
        hub = getattr(self.consumer, "hub", None)
        if hub is not None:
            hub.call_soon(callback)
        else:
            callback()

    def started(self) -> None:
        with self.lock:
            self.jobs += 1

    def ended(self) -> None:
        with self.lock:
            self.jobs -= 1


class _Buffer:
    """One batched task's waiting messages, in the worker's consumer.

    A new message enters the buffer as Celery's own strategy would take it: a revoked or
    expired one is acknowledged and skipped, ``task_received`` and the ``task-received`` event
    are sent, and a rate-limited task's message enters only once its token bucket gives it a
    token (a batch of n messages takes n tokens). The buffer is flushed at the next tick of the
    event loop when the pool is idle (no batch to wait for: a message at low load is not
    delayed), else when it holds ``batch_max`` messages or ``batch_window`` seconds after its
    first one. A flush of one message hands it to Celery as a task run alone.
    """

    def __init__(self, task: Any, app: Any, consumer: Any) -> None:
        self.task = task
        self.app = app
        self.consumer = consumer
        self.slots = _Slots.of(consumer)
        self.alone = default(task, app, consumer)
        self.make = create_request_cls(
            symbol_by_name(task.Request),
            task,
            consumer.pool,
            consumer.hostname,
            consumer.event_dispatcher,
            app=app,
        )
        self.revoked_ids = consumer.controller.state.revoked
        eventer = consumer.event_dispatcher
        self.send_event = (
            eventer.send if eventer is not None and eventer.enabled and task.send_events else None
        )
        self.waiting: list[Request] = []
        self.held: deque[Request] = deque()
        self.timer: Any = None
        self.hold_timer: Any = None
        self.soon = False
        self.lock = threading.Lock()

    def handle(
        self, message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> None:
        headers = message.headers or {}
        if (
            body is not None
            or "args" in message.payload
            or headers.get("eta")
            or headers.get("retries")
        ):
            # An old protocol, or a retry: run alone, as Celery would.
            self.alone(message, body, ack, reject, callbacks, **kw)
            return
        body, headers, decoded, utc = (
            message.body,
            message.headers,
            False,
            self.app.uses_utc_timezone(),
        )
        if "args" in message.payload:  # pragma: no cover - hybrid messages take the branch above
            body, headers, decoded, utc = hybrid_to_proto2(message, message.payload)
        request = self.make(
            message,
            on_ack=ack,
            on_reject=reject,
            app=self.app,
            hostname=self.consumer.hostname,
            eventer=self.consumer.event_dispatcher,
            task=self.task,
            body=body,
            headers=headers,
            decoded=decoded,
            utc=utc,
            connection_errors=self.consumer.connection_errors,
        )
        # As Celery's default strategy: revoked or expired, acknowledged and skipped.
        if (request.expires or request.id in self.revoked_ids) and request.revoked():
            return
        task_received.send(sender=self.consumer, request=request)
        if self.send_event is not None:
            self.send_event(
                "task-received",
                uuid=request.id,
                name=request.name,
                args=request.argsrepr,
                kwargs=request.kwargsrepr,
                root_id=request.root_id,
                parent_id=request.parent_id,
                retries=request.request_dict.get("retries", 0),
                eta=None,
                expires=request.expires and request.expires.isoformat(),
            )
        for callback in callbacks or ():
            callback(request)
        if self._bucket() is None:
            self._add(request)
        else:
            with self.lock:
                self.held.append(request)
            self._admit()

    def _bucket(self) -> Any:
        if self.consumer.disable_rate_limits:
            return None
        return self.consumer.task_buckets[self.task.name]

    def _admit(self) -> None:
        """Move held messages into the buffer while the task's token bucket gives tokens, one
        a message, as Celery's rate limit counts runs; the rest wait for the next token."""
        bucket = self._bucket()
        admitted: list[Request] = []
        with self.lock:
            self.hold_timer = None
            while self.held and (bucket is None or bucket.can_consume(1)):
                admitted.append(self.held.popleft())
            if self.held:
                self.hold_timer = self.consumer.timer.call_after(
                    bucket.expected_time(1), self._admit
                )
        for request in admitted:
            self._add(request)

    def _add(self, request: Request) -> None:
        with self.lock:
            self.waiting.append(request)
            full = len(self.waiting) >= self.task.batch_max
            now = not full and not self.soon and self.slots.idle()
            if now:
                self.soon = True
            elif not full and self.timer is None:
                self.timer = self.consumer.timer.call_after(self.task.batch_window, self.flush)
        if full:
            self.flush()
        elif now:
            self.slots.soon(self.flush)

    def flush(self) -> None:
        """Hand the waiting messages to the pool: one alone, as Celery runs a task; more as
        one job."""
        with self.lock:
            requests, self.waiting = self.waiting, []
            self.soon = False
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        # As Celery checks before it hands a request to the pool: a message revoked while it
        # waited is acknowledged and skipped (``Request.revoked`` announces it).
        requests = [r for r in requests if not r.revoked()]
        if len(requests) == 1:
            (request,) = requests
            task_reserved(request)
            self.consumer.on_task_request(request)
            return
        if requests:
            self._apply(requests)

    def _apply(self, requests: list[Request]) -> None:
        queued = [
            Queued(r.id, dict(r.kwargs), int(r.request_dict.get("retries") or 0)) for r in requests
        ]
        job = _Job(self.task, self.slots, requests)
        hard, soft = _time_limits(self.task, requests)
        self.slots.started()
        try:
            self.consumer.pool.apply_async(
                run_job,
                (self.task.name, queued),
                callback=job.returned,
                error_callback=job.lost,
                timeout_callback=job.timed_out,
                timeout=hard,
                soft_timeout=soft,
            )
        except BaseException:
            self.slots.ended()
            raise


class _Job:
    """A batch in the pool: its messages acknowledged or requeued once the pool answers."""

    def __init__(self, task: Any, slots: _Slots, requests: list[Request]) -> None:
        self.task = task
        self.slots = slots
        self.requests = requests

    def returned(self, answer: Any) -> None:
        """The job returned: each message acknowledged, or requeued if the job says so."""
        self.slots.ended()
        # Anything but our answer is the pool's word that the job's process was lost.
        requeue = answer if isinstance(answer, set) else {r.id for r in self.requests}
        for request in self.requests:
            if request.id in requeue:
                request.reject(requeue=True)
            else:
                request.acknowledge()

    def lost(self, failure: Any) -> None:
        """The pool lost the job's process (or killed it at the hard time limit)."""
        self.slots.ended()
        exc = getattr(failure, "exception", failure)
        exc = getattr(exc, "exc", exc)  # billiard's ExceptionWithTraceback, as Celery unwraps it
        if isinstance(exc, TimeLimitExceeded):
            self.timed_out(False, self.task.time_limit)  # noqa: FBT003 - Celery's callback
            return
        logger.warning(
            "a batch of %d '%s' messages lost its process (%s); requeued",
            len(self.requests),
            self.task.name,
            type(exc).__name__,
        )
        for request in self.requests:
            request.reject(requeue=True)

    def timed_out(self, soft: bool, timeout: float | None) -> None:
        """The pool's word that a time limit passed (a soft one raised in the job)."""
        count, name = len(self.requests), self.task.name
        if soft:
            logger.warning(
                "a batch of %d '%s' messages: soft time limit (%ss) exceeded", count, name, timeout
            )
            return
        logger.error(
            "a batch of %d '%s' messages: hard time limit (%ss) exceeded", count, name, timeout
        )
        # As Celery settles a task alone killed at its hard time limit (acks_on_timeout).
        for request in self.requests:
            if self.task.acks_on_timeout:
                request.acknowledge()
            else:
                request.reject(requeue=True)


def _time_limits(task: Any, requests: list[Request]) -> tuple[float | None, float | None]:
    """A batch job's hard and soft time limits: each message's own (``time_limit=`` when
    published) or else its task's, the shortest of the batch (the pool enforces them on
    prefork only, as for a task alone)."""
    hard: list[float] = []
    soft: list[float] = []
    for request in requests:
        own_hard, own_soft = request.time_limits
        if own_hard or task.time_limit:
            hard.append(own_hard or task.time_limit)
        if own_soft or task.soft_time_limit:
            soft.append(own_soft or task.soft_time_limit)
    return (min(hard) if hard else None), (min(soft) if soft else None)


def run_job(task_name: str, queued: list[Queued]) -> set[str]:
    """The pool's job: run a batch, with Celery's task signals per message; returns the event
    ids to requeue. Never raises (an exception would leave the messages unacknowledged)."""
    task: Any = current_app.tasks[task_name]
    for q in queued:
        task_prerun.send(sender=task, task_id=q.event_id, task=task, args=(), kwargs=q.cuids)
    try:
        assert task.run_batch is not None  # noqa: S101 - set by EmailEvents for every batched task
        answer: tuple[dict[str, Any], set[str]] = task.run_batch(queued)
        results, requeue = answer
    except Exception as exc:
        logger.exception("a batch of %d '%s' messages failed", len(queued), task_name)
        results, requeue = dict.fromkeys((q.event_id for q in queued), exc), set()
    for q in queued:
        retval: Any = results.get(q.event_id)
        state = "SUCCESS"
        if isinstance(retval, RunResult) and retval.needs_retry:
            state = "RETRY"
        elif isinstance(retval, RunResult) and retval.failed_entirely:
            retval, state = DeliveryError(retval.failure(), retval), "FAILURE"
        elif isinstance(retval, Exception):
            state = "FAILURE"
        task_postrun.send(
            sender=task,
            task_id=q.event_id,
            task=task,
            args=(),
            kwargs=q.cuids,
            retval=retval,
            state=state,
        )
    return requeue
