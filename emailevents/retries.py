"""When an event's task tries again, and how long it waits first: decided here and nowhere else.

A try is the ``final_attempt`` once ``max_retries`` are spent: the pipeline then records a
transient failure as failed rather than ``retry``. After a run whose recipients wait for another
try, or one the database left half done, the task retries with exponential backoff and full
jitter. Each retry is noted for the relay, which publishes the emit again should the retry's
message be lost, or be refused by the broker.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn, Protocol

from celery import Celery, Task
from celery.exceptions import Reject
from sqlalchemy.exc import InterfaceError, OperationalError

from . import batchrun, emitstore, pipeline
from .outcomes import Reason, RunResult, Status
from .registry import Event

__all__ = ["Queued", "Retrying", "Runner", "countdown", "run", "run_batch"]

logger = logging.getLogger("emailevents")

WAITS_PAST_MAX_RETRIES = 3
"""Tries a task may take past ``max_retries`` only to wait for claims other runs hold."""
CLAIM_MARGIN = 1.0
"""Seconds added to ``claim_timeout`` before a wait ends, so that the claim is stale by then."""

_STALE_WAITS = frozenset({Reason.IN_PROGRESS, Reason.NO_ANSWER})


@dataclass(frozen=True)
class Retrying:
    """How the tasks of one :class:`~emailevents.EmailEvents` try again: its settings, as they
    are when a task runs."""

    runtime: pipeline.Runtime
    max_retries: int
    backoff: float
    """The first retry's delay in seconds; it doubles each time."""
    backoff_max: float
    redeliver_after: timedelta
    """How long after a retry the relay publishes the emit again, if no outcome is settled."""

    def delay(self, tries: int) -> float:
        """Seconds before try ``tries + 1``: exponential backoff with full jitter."""
        # Celery's get_exponential_backoff_interval works in whole seconds only.
        ceiling = min(self.backoff_max, self.backoff * 2**tries)
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


def countdown(app: Celery, delay: float) -> float:
    """The countdown a retry ``delay`` seconds away is published with on ``app``'s broker.

    On RabbitMQ with quorum queues (docs/operations.md), Celery publishes a countdown through
    RabbitMQ's native delayed delivery, in whole seconds (``int(countdown)``: 1.7 s waits 1 s),
    and kombu refuses a whole second of 0 (``calculate_routing_key``: "countdown must be a
    positive number"): a countdown between 0 and 1 raised ``ValueError`` at publish. Celery's
    ``Task.retry`` turned that into ``Reject(requeue=False)`` and a batch's ``publish_checked``
    raised it: the retry was never published, and the emit waited in ``emailevents_emits`` for
    the relay, lost where none runs. Full jitter draws such a delay for one first retry in
    ``retry_backoff`` seconds (one in two with the default 2 s). There, a delay under a second
    is published with none (0: the retry runs as soon as a worker takes it), the whole second
    RabbitMQ's own truncation would make of it: no minimum is added, full jitter's delays start
    at 0. Elsewhere (Redis, classic queues: a countdown the worker waits out) a delay is kept
    to the fraction.
    """
    if delay >= 1 or not _whole_seconds(app):
        return delay
    return 0


def _whole_seconds(app: Celery) -> bool:
    """Whether ``app`` publishes countdowns through RabbitMQ's native delayed delivery, as
    Celery decides it when it publishes (``Celery.send_task``, 5.5 and later)."""
    try:
        from celery.utils.quorum_queues import detect_quorum_queues  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Celery 5.4: a countdown the worker waits out
        return False
    driver = app.producer_pool.connections.connection.transport.driver_type
    return bool(detect_quorum_queues(app, driver)[0])


class Runner(Protocol):
    """A run of something other than an emit (a digest's message): told where it stands in
    its tries, as :func:`pipeline.run` is."""

    def __call__(self, *, final_attempt: bool, can_wait: bool) -> RunResult: ...


def run(
    retrying: Retrying,
    task: Task,
    event: Event,
    cuids: Mapping[str, str],
    *,
    runner: Runner | None = None,
) -> RunResult:
    """One try of ``event``'s ``task``: the pipeline's run, then a retry if it needs one.

    With ``runner`` (a digest's message), that runs instead, and its retries are not noted
    for the relay as an emit's are: the relay looks again at what ``runner`` sends itself.

    Raises:
        celery.exceptions.Retry: the task runs again later (Celery's own retry).
    """
    tries = task.request.retries or 0
    final_attempt, can_wait = _try(retrying, tries)
    watched = runner is None
    try:
        if runner is not None:
            result = runner(final_attempt=final_attempt, can_wait=can_wait)
        else:
            result = pipeline.run(
                retrying.runtime,
                event,
                task.request.id,
                cuids,
                final_attempt=final_attempt,
                can_wait=can_wait,
            )
    except (OperationalError, InterfaceError) as exc:
        # The database went away mid-run. Whatever this run claimed is settled by the next
        # try, once the claim is stale, like the claims of a run that died.
        if final_attempt:
            raise
        _retry(retrying, task, event, cuids, retrying.delay(tries), exc=exc, watched=watched)
    if result.needs_retry:
        # Celery's own retry: the same task id (the event id) comes back later, and only the
        # recipients recorded as `retry` are claimed and sent again.
        delay = _retry_delay(retrying, tries, result)
        max_retries = max(retrying.max_retries, tries + 1)
        _retry(retrying, task, event, cuids, delay, max_retries=max_retries, watched=watched)
    return result


def _try(retrying: Retrying, tries: int) -> tuple[bool, bool]:
    """Whether a try after ``tries`` is the final attempt, and whether it may wait for another
    run's claim. Waiting is not a try of ours: it may go on past max_retries, a few times, so
    that a claim left by a run that died on the last try is still settled."""
    final_attempt = tries >= retrying.max_retries
    return final_attempt, tries < retrying.max_retries + WAITS_PAST_MAX_RETRIES


def _retry_delay(retrying: Retrying, tries: int, result: RunResult) -> float:
    """The delay before the next try: the backoff's, or, for recipients another run holds or
    whose request got no answer, until that claim is stale and they are looked at again."""
    delay = retrying.delay(tries)
    if any(o.status is Status.RETRY and o.reason in _STALE_WAITS for o in result.outcomes):
        delay = max(delay, retrying.runtime.claim_timeout + CLAIM_MARGIN)
    return delay


def _note_retry(retrying: Retrying, event: Event, emit: emitstore.Emit) -> None:
    """Tell the relay a retry is on its way (the emit's row, written now for an emit made
    without ``session=``), so that it publishes it again should the retry never come back.
    A safety net only: the retry goes on whatever this says."""
    try:
        with retrying.runtime.session_factory() as session:
            emitstore.watch_retry(session, emit, redeliver_after=retrying.redeliver_after)
    except Exception:
        logger.warning(
            "event=%s event_id=%s could not note its retry for the relay",
            event.key,
            emit.event_id,
            exc_info=True,
        )


def _keep_unpublished(retrying: Retrying, emit: emitstore.Emit, reason: object) -> None:
    """The retry could not be published: the emit goes back to pending, for the relay.

    Raises:
        Exception: the database refused that too (the caller requeues the message).
    """
    error = f"retry not published: {type(reason).__name__}: {reason}"
    with retrying.runtime.session_factory() as session:
        emitstore.requeue_unpublished(session, emit, error=error)


def _retry(
    retrying: Retrying,
    task: Task,
    event: Event,
    cuids: Mapping[str, str],
    delay: float,
    *,
    max_retries: int | None = None,
    exc: BaseException | None = None,
    watched: bool = True,
) -> NoReturn:
    """Retry ``task`` in ``delay`` seconds, with the relay as a safety net.

    The emit's row in ``emailevents_emits`` (written now for an emit made without
    ``session=``) tells the relay to publish it again should the retry never come back
    (a broker that loses the message). And Celery drops the message
    (``Reject(requeue=False)``) when it cannot publish the retry: the recipients waiting
    for it would wait for ever. The emit goes back to pending instead, for the relay to
    publish once the broker takes messages again; should the database be down too, the
    message is requeued rather than dropped. Not ``watched`` (a digest's message), the relay
    publishes it again by itself, and the emits' table is left alone.
    """
    event_id = task.request.id
    emit = emitstore.Emit(event_id, event.key, event.task_name, cuids)
    if watched:
        _note_retry(retrying, event, emit)
    try:
        raise task.retry(countdown=countdown(task.app, delay), max_retries=max_retries, exc=exc)
    except Reject as rejected:
        if rejected.requeue or not watched:
            raise
        try:
            _keep_unpublished(retrying, emit, rejected.reason)
        except Exception as requeue_failed:
            logger.exception("event=%s event_id=%s could not keep its retry", event.key, event_id)
            raise Reject(rejected.reason, requeue=True) from requeue_failed
        logger.warning(
            "event=%s event_id=%s could not publish its retry (%s); kept for the relay",
            event.key,
            event_id,
            rejected.reason,
            extra={"event_key": event.key, "event_id": event_id},
        )
        raise


@dataclass(frozen=True)
class Queued:
    """One task message of a batch, as the pool runs it: its event id, CUIDs and tries so far."""

    event_id: str
    cuids: Mapping[str, str]
    retries: int = 0


def run_batch(
    retrying: Retrying, task: Task, event: Event, queued: Sequence[Queued]
) -> tuple[dict[str, RunResult | Exception], set[str]]:
    """One try of each of ``queued``, run together (:mod:`.batchrun`); an emit that needs
    another try is published again alone, with its own retry count, as :func:`run` retries it.

    Returns each event id's result (or the exception its run raised), and the event ids whose
    message must go back to the queue (its retry could be neither published nor kept).
    """
    emits = [batchrun.Emit(q.event_id, q.cuids, *_try(retrying, q.retries)) for q in queued]
    requeue: set[str] = set()
    try:
        results = batchrun.run_together(retrying.runtime, event, emits)
    except (OperationalError, InterfaceError) as exc:
        # The database went away mid-batch: each emit tries again, as a run alone would.
        results = dict.fromkeys((q.event_id for q in queued), exc)
        for q in queued:
            if q.retries < retrying.max_retries:
                _republish(retrying, task, event, q, retrying.delay(q.retries), requeue)
        return results, requeue
    for q in queued:
        result = results[q.event_id]
        if isinstance(result, RunResult) and result.needs_retry:
            delay = _retry_delay(retrying, q.retries, result)
            _republish(retrying, task, event, q, delay, requeue)
    return results, requeue


def _republish(  # noqa: PLR0917 - the batch's state, passed along explicitly
    retrying: Retrying, task: Task, event: Event, q: Queued, delay: float, requeue: set[str]
) -> None:
    """Publish ``q``'s next try alone, noted for the relay; kept for the relay when the broker
    refuses it, and sent back to the queue (``requeue``) when the database refuses that too."""
    emit = emitstore.Emit(q.event_id, event.key, event.task_name, q.cuids)
    _note_retry(retrying, event, emit)
    try:
        task.publish_checked(
            q.cuids, task_id=q.event_id, countdown=countdown(task.app, delay), retries=q.retries + 1
        )
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, kept for the relay
        logger.warning(
            "event=%s event_id=%s retry not published (%s: %s); kept for the relay",
            event.key,
            q.event_id,
            type(exc).__name__,
            exc,
        )
        try:
            _keep_unpublished(retrying, emit, exc)
        except Exception:
            logger.exception("event=%s event_id=%s could not keep its retry", event.key, q.event_id)
            requeue.add(q.event_id)
