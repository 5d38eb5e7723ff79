"""One task run, top to bottom: the whole life of one emit.

load entities -> org toggle -> context values -> recipients -> TemplateModel -> leave out the
suppressed -> claim each recipient in the delivery log (or add to its digest) -> send -> record
each outcome. Every run ends in a recorded outcome per recipient, or one for the whole emit."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from sqlalchemy.orm import Session

from . import digests, exclusions, store
from .addresses import called_candidates, checked_candidates, template_candidates
from .errors import ConfigurationError, Stopped
from .expressions import RenderError, body_text
from .outcomes import Outcome, Reason, RunResult, Status
from .preferences import PreferencesCallable
from .registry import Event
from .senders.base import Message, Sender, SendResult, SendStatus
from .tokens import RecipientLinks

__all__ = [
    "Prepared",
    "Recipient",
    "Resolved",
    "Runtime",
    "build_template_model",
    "check_toggle",
    "compose",
    "context_values",
    "deliver",
    "leave_out",
    "load_entities",
    "outcomes_of",
    "prepare",
    "resolve",
    "resolve_recipients",
    "run",
]

logger = logging.getLogger("emailevents")


@dataclass(frozen=True)
class Runtime:
    """What a run needs from the engine; built once by :class:`~emailevents.EmailEvents`."""

    session_factory: Callable[[], Session]
    sender: Sender
    context: Mapping[str, Mapping[str, Any]]
    """Per event key: its context values, callables already bound to their parameter names."""
    toggles: Callable[[Session, Any, str], bool] | None = None
    claim_timeout: float = 600.0
    """Seconds after which a claim whose run recorded nothing is taken to be interrupted."""
    category_defaults: Mapping[str, bool] = field(default_factory=dict)
    """Per category: whether a recipient who never chose gets its mail."""
    preferences: PreferencesCallable | None = None
    """The application's own preferences, when it keeps them (else our table's)."""
    links: RecipientLinks | None = None
    """Each recipient's unsubscribe and preferences links (an event with a category)."""


@dataclass(frozen=True)
class Recipient:
    """One recipient of an emit: its ``key`` in the delivery log (the address, lowercased), and
    the ``address`` a message goes to (with its display name)."""

    key: str
    address: str


def run(
    rt: Runtime,
    event: Event,
    event_id: str,
    cuids: Mapping[str, str],
    *,
    final_attempt: bool = True,
    can_wait: bool = False,
) -> RunResult:
    """Run one emit of ``event`` and return every outcome; each is also logged and recorded.

    Before the ``final_attempt``, a transient failure is recorded :attr:`Status.RETRY`, and a
    request without an answer is held for the sender's search (:func:`outcomes_of`). A
    recipient another run holds is left to it; :attr:`Status.RETRY` if the run ``can_wait``.
    """
    with rt.session_factory() as session:
        # Each write of a run is one statement that stands alone (a claim, the outcomes), and
        # no read needs another's snapshot: no BEGIN and COMMIT round trips around them.
        store.statements_commit_alone(session)
        prepared = prepare(rt, session, event, event_id, cuids)
        if isinstance(prepared, RunResult):
            return prepared
        sent = deliver(
            rt,
            session,
            event,
            event_id,
            prepared.recipients,
            prepared.template_model,
            final_attempt=final_attempt,
            can_wait=can_wait,
            excluded=prepared.excluded,
        )
        return finish(event, event_id, [*prepared.left_out, *sent])


@dataclass(frozen=True)
class Prepared:
    """An emit ready to claim and send: who gets it, with what, and who was left out."""

    event_id: str
    recipients: list[Recipient]
    template_model: dict[str, Any]
    left_out: list[Outcome]  # rejected, suppressed, opted out or throttled (recorded already)
    excluded: dict[str, Outcome] = field(default_factory=dict)  # left out, a claim holds them


@dataclass(frozen=True)
class Resolved:
    """An emit before anyone is left out: who it names, with what, and the values it read."""

    event_id: str
    recipients: list[Recipient]
    template_model: dict[str, Any]
    rejected: list[Outcome]  # not one address (recorded already)
    values: dict[str, Any]  # entities and context values


def prepare(  # noqa: PLR0917 - the run's state, passed along explicitly
    rt: Runtime,
    session: Session,
    event: Event,
    event_id: str,
    cuids: Mapping[str, str],
    loaded: Mapping[str, Any] | None = None,
) -> Prepared | RunResult:
    """Every step before the claim, or the run's result if one stopped it; ``loaded``: entities."""
    resolved = resolve(rt, session, event, event_id, cuids, loaded)
    if isinstance(resolved, RunResult):
        return resolved
    return leave_out(rt, session, event, resolved)


def resolve(  # noqa: PLR0917 - the run's state, passed along explicitly
    rt: Runtime,
    session: Session,
    event: Event,
    event_id: str,
    cuids: Mapping[str, str],
    loaded: Mapping[str, Any] | None = None,
) -> Resolved | RunResult:
    """The steps up to the TemplateModel: who the emit names (those who are not one address
    recorded skipped), before anyone is left out; or the run's result if one stopped it."""
    try:
        entities = dict(loaded) if loaded is not None else load_entities(session, event, cuids)
        check_toggle(rt, session, event, entities)
        values = {**entities, **context_values(rt, session, event, entities)}
        recipients, rejected = resolve_recipients(session, event, values)
        template_model = build_template_model(session, event, values)
    except Stopped as stop:
        store.record_skips(session, event_id, event.key, [stop.outcome])
        return finish(event, event_id, [stop.outcome])
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        raise  # the database went away: nothing claimed yet, nothing to record; tried again
    except Exception as exc:
        # A bug or outage in application code (a context or recipients callable): record
        # why, then let Celery see the error and its traceback.
        session.rollback()
        failed = Outcome(
            Status.FAILED, Reason.APPLICATION_ERROR, detail=f"{type(exc).__name__}: {exc}"
        )
        try:
            store.record_skips(session, event_id, event.key, [failed])
        except Exception:
            logger.exception(
                "event=%s event_id=%s could not record its failure", event.key, event_id
            )
        finish(event, event_id, [failed])
        raise
    store.record_skips(session, event_id, event.key, rejected)
    return Resolved(event_id, recipients, template_model, rejected, values)


def leave_out(
    rt: Runtime,
    session: Session,
    event: Event,
    resolved: Resolved,
    known: exclusions.Known | None = None,
) -> Prepared | RunResult:
    """Leave out the suppressed, opted out and throttled (``known``: what a batch read for all
    its emits), or put the emit into its recipients' digests."""
    event_id, recipients, values = resolved.event_id, resolved.recipients, resolved.values
    template_model, rejected = resolved.template_model, resolved.rejected
    keys = [r.key for r in recipients]
    known = known or exclusions.Known(session, event, {event_id: keys})
    out = exclusions.left_out(
        session, event, event_id, keys, rt.category_defaults, rt.preferences, known
    )
    if event.digest is None:
        out, excluded = exclusions.held(event_id, out, known)
    else:
        excluded = {}
    recipients, left_out = _without(recipients, out), [*rejected, *out]
    if event.digest is not None:  # items go into digests, sent later: each one's, or with a
        # throttle, those past it (the others are sent now)
        keys = [r.key for r in recipients]
        past = set(exclusions.past_throttle(session, event, event_id, keys, known))
        into = [r for r in recipients if r.key in past or event.throttle is None]
        added = digests.add_items(session, event, event_id, into, template_model, values)
        if event.throttle is None:
            return finish(event, event_id, [*left_out, *added])
        recipients, left_out = [r for r in recipients if r.key not in past], [*left_out, *added]
    return Prepared(event_id, recipients, template_model, left_out, excluded)


def _without(recipients: list[Recipient], skipped: list[Outcome]) -> list[Recipient]:
    left_out = {o.recipient for o in skipped}
    return [r for r in recipients if r.key not in left_out]


def load_entities(session: Session, event: Event, cuids: Mapping[str, str]) -> dict[str, Any]:
    """Each entity by its CUID; the first one missing stops the run."""
    entities: dict[str, Any] = {}
    for name, entity_type in event.entities:
        found = session.scalars(
            _entity_select(entity_type.model, entity_type.key), {"b_key": cuids[name]}
        ).first()
        if found is None:
            raise Stopped(
                Outcome(
                    Status.SKIPPED,
                    Reason.ENTITY_MISSING,
                    detail=f"{name}: no {entity_type.name} with {entity_type.key}={cuids[name]!r}",
                )
            )
        entities[name] = found
    return entities


@functools.cache
def _entity_select(model: type[Any], key: str) -> sa.Select[Any]:
    """``SELECT model WHERE model.key = :b_key``, built once per entity class."""
    return sa.select(model).where(getattr(model, key) == sa.bindparam("b_key"))


def check_toggle(rt: Runtime, session: Session, event: Event, entities: Mapping[str, Any]) -> None:
    """Stop when the organization switched this event's toggle off (``always`` events skip this)."""
    if event.toggle is None or event.org is None:
        return
    org = entities[event.org]
    if rt.toggles is not None:
        enabled = bool(rt.toggles(session, org, event.toggle))
    else:
        org_type = dict(event.entities)[event.org]
        enabled = store.toggle_enabled(session, str(getattr(org, org_type.key)), event.toggle)
    if not enabled:
        raise Stopped(
            Outcome(
                Status.SKIPPED,
                Reason.TOGGLE_OFF,
                detail=f"toggle '{event.toggle}' is off for the org",
            )
        )


def context_values(
    rt: Runtime, session: Session, event: Event, entities: Mapping[str, Any]
) -> dict[str, Any]:
    """The context values this event's expressions use; callables called with their entities."""
    arguments = {**entities, "session": session}
    return {
        name: value(arguments) if callable(value) else value
        for name, value in rt.context.get(event.key, {}).items()
    }


def resolve_recipients(
    session: Session, event: Event, values: Mapping[str, Any]
) -> tuple[list[Recipient], list[Outcome]]:
    """One recipient per distinct address; what is not one address becomes a skipped outcome.

    The address comes from the address part of a ``to:`` template (or an object's ``email``),
    checked to be exactly one bare address; entity data never changes where a message goes.
    """
    if event.recipients is not None:
        found = called_candidates(event.recipients({**values, "session": session}))
    else:
        found = template_candidates(event.to_addresses, values)
    checked, rejected = checked_candidates(found)
    if not checked:
        detail = "; ".join(o.detail for o in rejected) or "the event resolved to no recipients"
        raise Stopped(Outcome(Status.SKIPPED, Reason.NO_RECIPIENTS, detail=detail))
    return [Recipient(key, address) for key, address in checked.items()], rejected


def build_template_model(
    session: Session, event: Event, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Render ``subject`` and ``data``, add ``build:``'s extras, validate with the payload model."""
    model: dict[str, Any] = {}
    try:
        if event.subject is not None:
            model["subject"] = event.subject.template.render_text(values, single_line=True)
        for expression in event.data:
            model[expression.field.removeprefix("data.")] = expression.template.render(values)
    except RenderError as exc:
        raise Stopped(Outcome(Status.FAILED, Reason.INVALID_PAYLOAD, detail=str(exc))) from exc
    if event.build is not None:
        extra = event.build({**values, "session": session})
        if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
            raise Stopped(
                Outcome(
                    Status.FAILED,
                    Reason.INVALID_PAYLOAD,
                    detail=f"build: returned {type(extra).__name__}, not a mapping "
                    "of names to values",
                )
            )
        clash = sorted(set(extra) & set(model))
        if clash:
            raise Stopped(
                Outcome(
                    Status.FAILED,
                    Reason.INVALID_PAYLOAD,
                    detail=f"build: returned {', '.join(clash)}, already set by the "
                    "subject or data",
                )
            )
        model.update(extra)
    try:
        validated = event.payload_model.model_validate(model)
        dumped: dict[str, Any] = _clean(validated.model_dump(mode="json", by_alias=True))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'TemplateModel'}: {e['msg']}" for e in exc.errors()
        )
        raise Stopped(Outcome(Status.FAILED, Reason.INVALID_PAYLOAD, detail=problems)) from exc
    except PydanticSerializationError as exc:  # a value pydantic cannot turn into JSON
        raise Stopped(Outcome(Status.FAILED, Reason.INVALID_PAYLOAD, detail=str(exc))) from exc
    return dumped


def _clean(value: Any) -> Any:
    """Every string of a dumped TemplateModel through :func:`body_text` (no NUL is sent)."""
    if isinstance(value, str):
        return body_text(value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def deliver(  # noqa: PLR0917 - the run's state, passed along explicitly
    rt: Runtime,
    session: Session,
    event: Event,
    event_id: str,
    recipients: list[Recipient],
    template_model: Mapping[str, Any],
    *,
    final_attempt: bool = True,
    can_wait: bool = False,
    token: str | None = None,
    excluded: Mapping[str, Outcome] | None = None,
) -> list[Outcome]:
    """Claim each recipient (committed before sending), send to those claimed, record results:
    a recipient another run holds is left to it, unless its claim went stale (its run died, or
    its request got no answer): then the provider is asked, and it is recorded sent, sent now or
    unknown (or, ``excluded`` since its claim, skipped: exclusions.held)."""
    token = token or uuid.uuid4().hex
    mine = store.claim(session, event_id, event.key, [r.key for r in recipients], token)
    outcomes: list[Outcome] = []
    if len(mine) < len(recipients):
        others = [r for r in recipients if r.key not in mine]
        held, interrupted, unanswered = _held_elsewhere(rt, session, event_id, others, can_wait)
        outcomes += held
        recovered, taken = _recover(
            rt, session, event_id, interrupted, unanswered, token, final_attempt=final_attempt
        )
        outcomes += recovered
        mine |= taken
    if excluded:  # left out after their claim: once this run holds them, skipped, not sent
        skips = [excluded[key] for key in mine if key in excluded]
        store.settle(session, event_id, skips, token=token)
        outcomes, mine = outcomes + skips, mine - set(excluded)
    to_send = [r for r in recipients if r.key in mine]
    messages = [compose(rt, event, event_id, r, template_model) for r in to_send]
    try:
        results = rt.sender.send(messages) if messages else []
    except ConfigurationError as exc:
        results = [SendResult(SendStatus.CONFIGURATION, detail=str(exc))] * len(messages)
    except Exception as exc:
        # We cannot know what left the process: record "unknown", never resend blindly.
        unknown = SendResult(SendStatus.UNKNOWN, detail=f"{type(exc).__name__}: {exc}")
        _record(rt, session, event_id, to_send, [unknown] * len(to_send), token, final=True)
        raise
    exclusions.suppress_inactive(session, event, event_id, [r.key for r in to_send], results)
    return outcomes + _record(rt, session, event_id, to_send, results, token, final=final_attempt)


def compose(
    rt: Runtime,
    event: Event,
    event_id: str,
    recipient: Recipient,
    template_model: Mapping[str, Any],
) -> Message:
    """The message to ``recipient``; with its own unsubscribe and preferences links (in the
    TemplateModel and the List-Unsubscribe headers) when the event has a category."""
    headers: dict[str, str] = {}
    if event.category is not None and rt.links is not None:
        links, headers = rt.links.for_recipient(recipient.key, event.category)
        template_model = {**template_model, **links}
    return Message(
        event_key=event.key,
        event_id=event_id,
        to=recipient.address,
        from_=event.from_,
        template=event.template,
        template_model=template_model,
        message_stream=event.message_stream,
        tag=event.key,
        metadata={"event_id": event_id},
        headers=headers,
    )


def _held_elsewhere(
    rt: Runtime,
    session: Session,
    event_id: str,
    recipients: list[Recipient],
    can_wait: bool,
) -> tuple[list[Outcome], list[Recipient], set[str]]:
    """Outcomes for recipients logged already; those whose claim went stale; which of those
    are stale because their request got no answer (not because their run died)."""
    logged = store.existing_together(session, [event_id], claim_timeout=rt.claim_timeout)[event_id]
    outcomes: list[Outcome] = []
    interrupted: list[Recipient] = []
    unanswered: set[str] = set()
    for r in recipients:
        row = logged.get(r.key)
        if row is None or row.stale:
            interrupted.append(r)
            if row is not None and row.reason == Reason.NO_ANSWER.value:
                unanswered.add(r.key)
        elif row.status == store.CLAIMED:
            # Another run of this emit is sending it right now (a redelivered message), or its
            # request got no answer and the provider's search is asked once the claim is stale:
            # come back then, and see what was recorded.
            detail = (
                "its last request got no answer; the provider is asked once the claim is stale"
                if row.reason == Reason.NO_ANSWER.value
                else "another run of this emit holds it"
            )
            status = Status.RETRY if can_wait else Status.SKIPPED
            outcomes.append(Outcome(status, Reason.IN_PROGRESS, r.key, detail=detail))
        else:
            outcomes.append(
                Outcome(
                    Status.SKIPPED,
                    Reason.ALREADY_RECORDED,
                    r.key,
                    detail=f"already {row.status} ({row.reason}); not sent again",
                )
            )
    return outcomes, interrupted, unanswered


def _recover(  # noqa: PLR0917 - the run's state, passed along explicitly
    rt: Runtime,
    session: Session,
    event_id: str,
    interrupted: list[Recipient],
    unanswered: set[str],
    token: str,
    *,
    final_attempt: bool,
) -> tuple[list[Outcome], set[str]]:
    """Settle stale claims: sent at the provider, taken over to send now, or unknown."""
    if not interrupted:
        return [], set()
    found = rt.sender.find_sent(event_id, [r.key for r in interrupted])
    if found is None and rt.sender.searchable and not final_attempt:
        # The provider's search did not answer this time: the claims stay stale, and the next
        # try asks again. Resending without an answer could send twice.
        return [
            Outcome(
                Status.RETRY,
                Reason.INTERRUPTED,
                r.key,
                detail="its claim is stale and the provider's message search did not answer; "
                "asked again on the next try",
            )
            for r in interrupted
        ], set()
    if found is None:
        unknown = [
            Outcome(
                Status.UNKNOWN,
                Reason.NO_ANSWER if r.key in unanswered else Reason.INTERRUPTED,
                r.key,
                detail=(
                    "its request got no answer"
                    if r.key in unanswered
                    else "a run claimed it and stopped before recording the provider's answer"
                )
                + "; the sender cannot tell whether it was sent",
            )
            for r in interrupted
        ]
        store.settle(session, event_id, unknown)
        return unknown, set()
    sent = [
        Outcome(
            Status.SENT,
            Reason.SENT,
            r.key,
            message_id=found[r.key],
            detail="found at the provider after "
            + ("its request got no answer" if r.key in unanswered else "its run was interrupted"),
        )
        for r in interrupted
        if r.key in found
    ]
    store.settle(session, event_id, sent)
    rest = [r.key for r in interrupted if r.key not in found]
    return sent, store.take_over(session, event_id, rest, token, claim_timeout=rt.claim_timeout)


_RESULT_OUTCOME = {
    SendStatus.SENT: (Status.SENT, Reason.SENT),
    SendStatus.PERMANENT: (Status.FAILED, Reason.REJECTED),
    SendStatus.TRANSIENT: (Status.FAILED, Reason.TRANSIENT_ERROR),
    SendStatus.CONFIGURATION: (Status.FAILED, Reason.CONFIGURATION_ERROR),
    SendStatus.UNKNOWN: (Status.UNKNOWN, Reason.NO_ANSWER),
}


def _record(  # noqa: PLR0917 - the run's state, passed along explicitly
    rt: Runtime,
    session: Session,
    event_id: str,
    recipients: list[Recipient],
    results: list[SendResult],
    token: str,
    *,
    final: bool,
) -> list[Outcome]:
    """Record what the sender answered for the recipients this run claimed (``token``)."""
    outcomes, recorded, unanswered = outcomes_of(rt, recipients, results, final=final)
    # A searchable sender settles a lost outcome (asked once stale): only claims wait for disk.
    store.settle(
        session,
        event_id,
        recorded,
        unanswered=unanswered,
        token=token,
        flush_wait=not rt.sender.searchable,
    )
    return outcomes


def outcomes_of(
    rt: Runtime, recipients: list[Recipient], results: list[SendResult], *, final: bool
) -> tuple[list[Outcome], list[Outcome], list[Outcome]]:
    """What the sender's answers mean: every outcome, those to record, and those to keep
    claimed (``store.settle``'s ``unanswered``).

    Before the final try, a transient failure becomes ``retry`` (claimed again by the next
    try), and a request without an answer keeps its claim, settled through the sender's search
    once stale (after ``claim_timeout``: time for the search to see an accepted message)."""
    outcomes: list[Outcome] = []
    recorded: list[Outcome] = []
    unanswered: list[Outcome] = []
    for recipient, result in zip(recipients, results, strict=True):
        status, reason = _RESULT_OUTCOME[result.status]
        detail = (
            result.detail
            if result.error_code is None
            else f"ErrorCode {result.error_code}: {result.detail}"
        )
        if result.status is SendStatus.TRANSIENT and not final:
            status = Status.RETRY
        if result.status is SendStatus.UNKNOWN and rt.sender.searchable and not final:
            outcome = Outcome(
                Status.RETRY,
                Reason.NO_ANSWER,
                recipient.key,
                f"{detail}; the provider's message search is asked once the claim is stale, "
                "before it is sent again",
            )
            unanswered.append(outcome)
        else:
            outcome = Outcome(status, reason, recipient.key, detail, result.message_id)
            recorded.append(outcome)
        outcomes.append(outcome)
    return outcomes, recorded, unanswered


_LOG_LEVELS = {  # a failure is an error to whoever watches the logs; a retry a warning
    Status.SENT: logging.INFO,
    Status.SKIPPED: logging.INFO,
    Status.FAILED: logging.ERROR,
}


def finish(event: Event, event_id: str, outcomes: list[Outcome]) -> RunResult:
    """Log every outcome, structured, and return the run's result."""
    for outcome in outcomes:
        level = _LOG_LEVELS.get(outcome.status, logging.WARNING)
        logger.log(
            level,
            "event=%s event_id=%s status=%s reason=%s recipient=%s %s",
            event.key,
            event_id,
            outcome.status.value,
            outcome.reason.value,
            outcome.recipient or "-",
            outcome.detail,
            extra={
                "event_key": event.key,
                "event_id": event_id,
                "status": outcome.status.value,
                "reason": outcome.reason.value,
                "recipient": outcome.recipient,
                "detail": outcome.detail,
                "message_id": outcome.message_id,
            },
        )
    return RunResult(event.key, event_id, tuple(outcomes))
