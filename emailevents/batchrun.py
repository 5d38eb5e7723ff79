"""Emits of one event run together: one claim statement, one send, one outcome statement.

Each emit goes through the pipeline's steps up to the claim on its own (entities, toggle,
recipients, TemplateModel, exclusions). Then the recipients of every emit are claimed in one
statement, committed before any request; those of the emits whose recipients were all new to the
delivery log are sent in one call of the sender (Postmark: one batch request for up to 500
messages) and their outcomes recorded in one statement. An emit with a recipient logged already
(a retry, a redelivery, another run holding it) is delivered on its own by
:func:`pipeline.deliver`, under the same claim token: exactly what a run of it alone would do.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql.base import ExecutableOption

from . import exclusions, pipeline, store
from .errors import ConfigurationError
from .outcomes import Outcome, RunResult
from .registry import Event
from .senders.base import SendResult, SendStatus
from .tables import in_chunks

__all__ = ["Emit", "run_together"]


@dataclass(frozen=True)
class Emit:
    """One emit of a batch: its event id, CUIDs, and where its task stands in its tries."""

    event_id: str
    cuids: Mapping[str, str]
    final_attempt: bool = True
    can_wait: bool = False


Ready = tuple[Emit, pipeline.Prepared]
_T = TypeVar("_T")
Results = dict[str, RunResult | Exception]


def run_together(rt: pipeline.Runtime, event: Event, emits: Sequence[Emit]) -> Results:
    """Run ``emits`` of ``event`` together; each event id's result, or the exception its run
    raised (application code failing, recorded already as a run alone records it).

    Raises:
        sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError: the database went away;
            what was claimed is settled by the next tries, as for a run alone.
    """
    results: Results = {}
    # A message delivered twice may bring both copies into one batch: they are one emit, run
    # once (the one claim statement would let both copies think they held its recipients).
    unique: dict[str, Emit] = {}
    for emit in emits:
        unique.setdefault(emit.event_id, emit)
    with rt.session_factory() as session:
        store.statements_commit_alone(session)
        found = _load_entities(session, event, emits)
        rt = dataclasses.replace(rt, toggles=_Toggles(rt, event))
        resolved: list[tuple[Emit, pipeline.Resolved]] = []
        for emit in unique.values():
            # An emit whose entities were not all found goes the way of a run alone, to stop.
            loaded = {name: found[name].get(emit.cuids[name]) for name, _ in event.entities}
            entities = None if None in loaded.values() else loaded
            outcome = _step(
                session, pipeline.resolve, rt, session, event, emit.event_id, emit.cuids, entities
            )
            if isinstance(outcome, pipeline.Resolved):
                resolved.append((emit, outcome))
            else:
                results[emit.event_id] = outcome
        # Who is suppressed, opted out or past a throttle: read once for every emit's recipients.
        known = exclusions.Known(
            session, event, {r.event_id: [p.key for p in r.recipients] for _, r in resolved}
        )
        ready: list[Ready] = []
        for emit, first in resolved:
            prepared = _step(session, pipeline.leave_out, rt, session, event, first, known)
            if isinstance(prepared, pipeline.Prepared):
                ready.append((emit, prepared))
            else:
                results[emit.event_id] = prepared
        token = uuid.uuid4().hex
        pairs = [(e.event_id, r.key) for e, p in ready for r in p.recipients]
        inserted = store.claim_together(session, event.key, pairs, token) if pairs else set()
        fresh: list[Ready] = []
        for emit, prepared in ready:
            if all((emit.event_id, r.key) in inserted for r in prepared.recipients):
                fresh.append((emit, prepared))
            else:
                results[emit.event_id] = _alone(rt, session, event, emit, prepared, token)
        results.update(_send_together(rt, session, event, fresh, token))
    return {e.event_id: results[e.event_id] for e in emits}


def _step(session: Session, step: Callable[..., _T], *args: Any) -> _T | Exception:
    """One emit's step: what it returned, or the exception it raised (application code failing,
    recorded by the step; the emit's result). The database going away stops the batch."""
    try:
        return step(*args)
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        raise
    except Exception as exc:  # noqa: BLE001 - recorded by the step; the emit's result
        store.statements_commit_alone(session)
        return exc


class _Toggles:
    """An org's toggle read once per batch, not once per emit (the runtime's ``toggles``)."""

    def __init__(self, rt: pipeline.Runtime, event: Event) -> None:
        self.read = rt.toggles
        self.org_key = dict(event.entities)[event.org].key if event.org else ""
        self.known: dict[tuple[str, str], bool] = {}

    def __call__(self, session: Session, org: Any, toggle: str) -> bool:
        key = (str(getattr(org, self.org_key)), toggle)
        if key not in self.known:
            read = self.read
            self.known[key] = (
                bool(read(session, org, toggle))
                if read is not None
                else store.toggle_enabled(session, key[0], toggle)
            )
        return self.known[key]


def _load_entities(
    session: Session, event: Event, emits: Sequence[Emit]
) -> dict[str, dict[str, Any]]:
    """Entity name -> CUID -> entity, for every emit: one SELECT per entity, not per emit, and
    one per relationship its expressions follow (``{finding.owner.email}``), not per emit."""
    found: dict[str, dict[str, Any]] = {}
    for name, entity_type in event.entities:
        column = getattr(entity_type.model, entity_type.key)
        followed = frozenset(
            path.attrs
            for expression in event.expressions
            for path in expression.template.paths
            if path.root == name and path.attrs
        )
        options = _followed(entity_type.model, followed)
        found[name] = {}
        for cuids in in_chunks(emit.cuids[name] for emit in emits):
            rows: sa.ScalarResult[Any] = session.scalars(
                sa.select(entity_type.model).where(column.in_(cuids)).options(*options)
            )
            found[name].update((getattr(row, entity_type.key), row) for row in rows)
    return found


@functools.cache
def _followed(model: type[Any], paths: frozenset[tuple[str, ...]]) -> tuple[ExecutableOption, ...]:
    """A ``selectinload`` for each chain of relationships that ``paths`` follow from ``model``,
    as far as they are plain lazy-loaded relationships; the rest loads as the model says (what
    a ``recipients:`` callable or a property reads cannot be known here)."""
    options: list[ExecutableOption] = []
    for attrs in sorted(paths):
        owner: Any = model
        option: Any = None  # selectinload's type is private to SQLAlchemy
        for attr in attrs:
            mapper = sa.inspect(owner, raiseerr=False)
            relationship = mapper.relationships.get(attr) if mapper is not None else None
            if relationship is None or relationship.lazy != "select":
                break
            step = getattr(owner, attr)
            option = selectinload(step) if option is None else option.selectinload(step)
            owner = relationship.mapper.class_
        if option is not None:
            options.append(option)
    return tuple(options)


def _alone(  # noqa: PLR0917 - the batch's state, passed along explicitly
    rt: pipeline.Runtime,
    session: Session,
    event: Event,
    emit: Emit,
    prepared: pipeline.Prepared,
    token: str,
) -> RunResult | Exception:
    try:
        sent = pipeline.deliver(
            rt,
            session,
            event,
            emit.event_id,
            prepared.recipients,
            prepared.template_model,
            final_attempt=emit.final_attempt,
            can_wait=emit.can_wait,
            token=token,
            excluded=prepared.excluded,
        )
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        raise
    except Exception as exc:  # noqa: BLE001 - deliver recorded it; the emit's result
        return exc
    return pipeline.finish(event, emit.event_id, [*prepared.left_out, *sent])


def _send_together(
    rt: pipeline.Runtime, session: Session, event: Event, fresh: list[Ready], token: str
) -> Results:
    """Send the messages of emits whose recipients this batch claimed, and record each answer."""
    messages = [
        pipeline.compose(rt, event, e.event_id, r, p.template_model)
        for e, p in fresh
        for r in p.recipients
    ]
    crashed: Exception | None = None
    try:
        answers = rt.sender.send(messages) if messages else []
    except ConfigurationError as exc:
        answers = [SendResult(SendStatus.CONFIGURATION, detail=str(exc))] * len(messages)
    except Exception as exc:  # noqa: BLE001 - each emit's result, as deliver raises it
        # We cannot know what left the process: record "unknown", never resend blindly.
        crashed = exc
        unknown = SendResult(SendStatus.UNKNOWN, detail=f"{type(exc).__name__}: {exc}")
        answers = [unknown] * len(messages)
    results: Results = {}
    recorded: list[tuple[str, Outcome]] = []
    start = 0
    for emit, prepared in fresh:
        mine = answers[start : start + len(prepared.recipients)]
        start += len(prepared.recipients)
        keys = [r.key for r in prepared.recipients]
        exclusions.suppress_inactive(session, event, emit.event_id, keys, mine)
        final = emit.final_attempt or crashed is not None
        outcomes, settled, unanswered = pipeline.outcomes_of(
            rt, prepared.recipients, mine, final=final
        )
        recorded += [(emit.event_id, o) for o in settled]
        store.keep_unanswered(session, emit.event_id, unanswered, token=token)
        results[emit.event_id] = crashed or pipeline.finish(
            event, emit.event_id, [*prepared.left_out, *outcomes]
        )
    # As for a run alone: a searchable sender settles a lost outcome, so it need not wait.
    store.record_together(session, recorded, token=token, flush_wait=not rt.sender.searchable)
    return results
