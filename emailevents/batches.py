"""Cross-emit batching in the worker: an event's messages that arrive within a window run
together, as one job of the pool (one claim statement, one send, one outcome statement).

The worker's consumer keeps each batched event's new task messages in a buffer instead of handing
each to the pool; the buffer goes to the pool as one job when it holds ``batch_max`` messages, or
``batch_window`` seconds after its first one arrived. A message is acknowledged only once its
job has returned (acks_late), and goes back to the queue when the pool process running the job
dies (reject_on_worker_lost). A retry (a message with an ETA or a retry count) runs alone, as
without batching. This is celery-batches' model, which pins Celery below 5.7, with those two
promises kept (docs/performance.md#cross-emit-batching-design).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from celery import current_app
from celery.signals import task_postrun, task_prerun
from celery.utils.imports import symbol_by_name
from celery.worker.request import Request, create_request_cls
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


class _Buffer:
    """One batched task's waiting messages, in the worker's consumer."""

    def __init__(self, task: Any, app: Any, consumer: Any) -> None:
        self.task = task
        self.app = app
        self.consumer = consumer
        self.alone = default(task, app, consumer)
        self.make = create_request_cls(
            symbol_by_name(task.Request),
            task,
            consumer.pool,
            consumer.hostname,
            consumer.event_dispatcher,
            app=app,
        )
        self.waiting: list[Request] = []
        self.timer: Any = None
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
        with self.lock:
            self.waiting.append(request)
            full = len(self.waiting) >= self.task.batch_max
            if not full and self.timer is None:
                self.timer = self.consumer.timer.call_after(self.task.batch_window, self.flush)
        if full:
            self.flush()

    def flush(self) -> None:
        """Hand the waiting messages to the pool as one job."""
        with self.lock:
            requests, self.waiting = self.waiting, []
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        if not requests:
            return
        queued = [
            Queued(r.id, dict(r.kwargs), int(r.request_dict.get("retries") or 0)) for r in requests
        ]

        def returned(answer: Any) -> None:
            # Anything but our answer is the pool's word that the job's process was lost.
            requeue = answer if isinstance(answer, set) else {r.id for r in requests}
            for request in requests:
                if request.id in requeue:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()

        def lost(_failure: Any) -> None:
            logger.warning(
                "a batch of %d '%s' messages lost its process; requeued",
                len(requests),
                self.task.name,
            )
            for request in requests:
                request.reject(requeue=True)

        self.consumer.pool.apply_async(
            run_job, (self.task.name, queued), callback=returned, error_callback=lost
        )


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
