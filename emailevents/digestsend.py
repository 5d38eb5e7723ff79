"""Digests going out: the relay pass closes those due and publishes a task per digest message
(:func:`publish_due`); that task sends it (:func:`run`) like any message: claimed in the delivery
log under the digest's id, sent through the sender, its outcome recorded, transient failures
retried (:mod:`.retries`).

A digest whose task never settled it (its message lost, its worker killed) is closed still:
the relay publishes its task again ``redeliver_after`` later, and the delivery log's claim on
(digest id, recipient) lets one run send it, once (a claim gone stale is settled through the
sender's search, as an emit's is).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from . import digests, exclusions, pipeline
from .outcomes import Outcome, Reason, RunResult, Status
from .registry import Event

if TYPE_CHECKING:
    from celery import Task

__all__ = ["DIGEST_TASK_PREFIX", "digest_events", "model", "publish_due", "run"]

logger = logging.getLogger("emailevents")

DIGEST_TASK_PREFIX = "emailevents.digest."
"""Each digest's task is named this and its key (its group, or its event's key)."""
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}


def digest_events(events: Mapping[str, Event]) -> dict[str, Event]:
    """Digest key -> the first event that fills it (the events of a group declare it alike)."""
    found: dict[str, Event] = {}
    for event in events.values():
        if event.digest is not None:
            found.setdefault(event.digest.key, event)
    return found


def publish_due(
    session_factory: Callable[[], Session],
    tasks: Mapping[str, Task],
    *,
    redeliver_after: timedelta,
    limit: int = 500,
) -> int:
    """Close the digests due, and publish the task of each closed digest not settled yet (for
    the first time, or again ``redeliver_after`` after the last); how many were published."""
    if not tasks:
        return 0
    with session_factory() as session:
        digests.close_due(session)
        due = digests.to_publish(session, redeliver_after=redeliver_after, limit=limit)
    published = 0
    for digest_id, digest_key in due:
        task = tasks.get(digest_key)
        if task is None:
            logger.warning(
                "digest %s: no digest '%s' in the registry any more; left closed",
                digest_id,
                digest_key,
            )
            continue
        try:
            task.apply_async(task_id=digest_id, retry_policy=_PUBLISH_RETRY_POLICY)
        except Exception:  # noqa: BLE001 - published again once its check_after is past
            logger.warning("digest %s: publish failed; the relay tries again", digest_id)
            continue
        published += 1
    return published


def model(digest: Any, items: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """A digest's TemplateModel: ``items`` (each emit's TemplateModel, in the order added),
    ``count``, and ``subject`` when the digest declares one (``{count}`` in it filled in)."""
    found: dict[str, Any] = {"items": [m for _, _, m in items], "count": len(items)}
    if digest.subject is not None:
        found["subject"] = digest.subject.replace("{count}", str(len(items)))
    return found


def run(
    rt: pipeline.Runtime,
    events: Mapping[str, Event],
    digest_id: str,
    *,
    final_attempt: bool = True,
    can_wait: bool = False,
) -> RunResult:
    """Send the closed digest ``digest_id`` to its recipient, once; its outcome is recorded in
    the delivery log under the digest's id (and logged), and the digest marked settled."""
    with rt.session_factory() as session:
        found = digests.load(session, digest_id)
        event = events.get(found.event_key) if found is not None else None
        if found is None or found.state != digests.CLOSED or event is None or event.digest is None:
            why = (
                "no such digest"
                if found is None
                else f"it is {found.state}, not closed"
                if found.state != digests.CLOSED
                else f"no digest event '{found.event_key}' in the registry any more"
            )
            outcome = Outcome(Status.SKIPPED, Reason.ALREADY_RECORDED, detail=f"not sent: {why}")
            return RunResult(found.digest_key if found else "", digest_id, (outcome,))
        items = digests.items_of(session, digest_id)
        if len(items) == 1 and event.digest.single_plain:
            # One item: the event's own email, as the emit would have sent it.
            sending = events.get(items[0][0], event)
            template_model = items[0][2]
        else:
            sending = dataclasses.replace(
                event, key=event.digest.key, template=event.digest.template
            )
            template_model = model(event.digest, items)
        recipient = pipeline.Recipient(found.recipient, found.address)
        # Suppressed or opted out since its items were added: the digest is not sent either.
        known = exclusions.Known(session, sending, {digest_id: [recipient.key]})
        left_out = exclusions.suppressed(session, sending, digest_id, [recipient.key], known=known)
        left_out = left_out or exclusions.opted_out(
            session,
            sending,
            digest_id,
            [recipient.key],
            defaults=rt.category_defaults,
            application=rt.preferences,
            known=known,
        )
        if left_out:
            digests.settle(session, digest_id)
            return pipeline.finish(sending, digest_id, left_out)
        sent = pipeline.deliver(
            rt,
            session,
            sending,
            digest_id,
            [recipient],
            template_model,
            final_attempt=final_attempt,
            can_wait=can_wait,
        )
        ended = [
            o for o in sent if o.status is not Status.RETRY and o.reason is not Reason.IN_PROGRESS
        ]
        if ended and len(ended) == len(sent):
            digests.settle(session, digest_id)
        return pipeline.finish(sending, digest_id, sent)
