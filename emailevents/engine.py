"""``EmailEvents``: binds a registry to a Celery app, a session factory and a sender."""

from __future__ import annotations

import difflib
import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from celery import Celery, Task, bootsteps
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, scoped_session

from . import digestsend, emitstore, pipeline, prefetch, retries, schedules, schema, store, web
from . import relay as relaying
from .batches import Batching
from .errors import (
    ConfigurationError,
    DeliveryError,
    EmitArgumentError,
    EmitValueError,
    UnknownEventError,
)
from .expressions import unsendable
from .introspect import Callee
from .outcomes import RunResult
from .preferences import Preferences
from .registry import BatchSetting, Event, Registry, load_registry
from .registry.batching import MAX_BATCH
from .relay import RelayResult
from .senders.base import Sender
from .suppressions import SuppressionList
from .tokens import RecipientLinks, Signer

__all__ = ["BatchedEventTask", "EmailEvents", "Receipt", "emit"]

MAX_CUID_LENGTH = 255
RELAY_TASK = "emailevents.relay"

_default: EmailEvents | None = None
logger = logging.getLogger("emailevents")


@dataclass(frozen=True)
class Receipt:
    """What ``emit()`` answers: the event id that follows the email everywhere."""

    event_key: str
    event_id: str
    task_name: str


class EventTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """The base of every generated task: checks arguments before anything is published.

    Positional arguments (old ``.delay(user_cuid, org_cuid, entity_cuid)`` call sites) are turned
    into keyword arguments in the event's declared order, so what travels is always by name.
    """

    event: ClassVar[Event | None] = None

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        if self.event is not None:
            kwargs = bind_cuids(self.event, tuple(args or ()), dict(kwargs or {}))
            args = ()
        return super().apply_async(args, kwargs, **options)

    def publish_checked(self, cuids: Mapping[str, str], **options: Any) -> Any:
        """Publish CUIDs that :func:`bind_cuids` has checked already, without checking again."""
        return super().apply_async((), dict(cuids), **options)


class BatchedEventTask(Batching, EventTask):
    """An event's task whose new messages the worker runs in batches (``batch:`` in
    ``events.yaml``, on by default; its ``batch_window`` and ``batch_max`` are the event's)."""


class EmailEvents:
    """The email events of one application.

    Args:
        registry: path to ``events.yaml``, or a loaded :class:`~emailevents.registry.Registry`.
        celery: the application's Celery app; one task per event is registered on it.
        session_factory: a sessionmaker; each task run opens and closes its own session.
        sender: where messages go (:class:`~emailevents.senders.PostmarkSender`, an outbox...).
        context: values expressions may name beyond entities: plain values, or callables called
            with the event's entities whose names match their parameters (and ``session``).
        max_retries: how often a task tries again after a transient send failure (HTTP 429 or
            5xx, Postmark maintenance, no connection); then those recipients are recorded failed.
        retry_backoff: the first retry's delay in seconds; it doubles each time, with full jitter.
        retry_backoff_max: the longest delay between two tries. Keep it below the Redis
            broker's ``visibility_timeout`` (see docs/operations.md).
        claim_timeout: seconds after which a recipient claimed by a run that recorded no
            answer is taken to be interrupted (the worker died) and settled by another run.
            Keep it above the sender's timeout times the batches of your largest fan-out.
        redeliver_after: seconds after which the relay publishes again an emit whose task left
            no settled outcome: made with ``session=`` and never run (its message was lost in
            the broker), or retrying and not heard of since (its retry was lost). Keep it
            above the broker's redelivery time (Redis: ``visibility_timeout``) and the longest
            retry delay; an early re-publish only costs a run that sends nothing.
        batch_window: seconds a worker waits for more messages of an event to run them
            together (one claim statement, one Postmark batch request, one outcome statement),
            for every event, over ``batch:`` in the registry; 0 runs each emit alone. None
            (the default): each event's ``batch:`` (on, 50 ms, unless the registry says
            otherwise; docs/registry.md). See :meth:`batching`.
        batch_max: the most messages a batch runs together (1 to 500: Postmark's batch holds
            500), for every batched event; None: each event's ``batch:``.
        raise_prefetch: when any event is batched, a worker of this Celery app raises its
            ``worker_prefetch_multiplier`` to ``ceil(largest batch max / concurrency)`` as it
            starts (a batch is made of the messages the worker holds), and logs so. False
            leaves it, and the worker logs a warning that batches cannot fill
            (docs/operations.md#worker-settings).
        set_default: make this the instance the module-level :func:`emit` uses.

    Raises:
        RegistryError: the registry has problems, or names context values not given here.
    """

    def __init__(
        self,
        registry: str | Path | Registry,
        *,
        celery: Celery,
        session_factory: Callable[[], Session],
        sender: Sender,
        context: Mapping[str, Any] | None = None,
        max_retries: int = 5,
        retry_backoff: float = 2.0,
        retry_backoff_max: float = 600.0,
        claim_timeout: float = 600.0,
        redeliver_after: float = 3600.0,
        webhook_auth: tuple[str, str] | None = None,
        webhook_max_body: int = web.DEFAULT_MAX_BODY,
        public_url: str | None = None,
        signing_keys: Sequence[str] | None = None,
        unsubscribe_mailto: str | None = None,
        batch_window: float | None = None,
        batch_max: int | None = None,
        raise_prefetch: bool = True,
        set_default: bool = True,
    ) -> None:
        self.registry = registry if isinstance(registry, Registry) else load_registry(registry)
        context = dict(context or {})
        self.registry.check_context(context)
        self.celery = celery
        self.session_factory = session_factory
        self.sender = sender
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.redeliver_after = redeliver_after
        self.webhook_auth = webhook_auth
        self.batch_window = batch_window
        self.batch_max = batch_max
        self.raise_prefetch = raise_prefetch
        self._batching = {
            key: _effective_batch(event, batch_window, batch_max)
            for key, event in self.events.items()
        }
        self.webhook_max_body = webhook_max_body
        self.signer = Signer(signing_keys) if signing_keys else None
        links = self._links(public_url, unsubscribe_mailto)
        self.preferences = Preferences(
            session_factory, self.registry.categories, self.registry.preferences
        )
        self.runtime = pipeline.Runtime(
            session_factory=session_factory,
            sender=sender,
            context={key: _bind_context(event, context) for key, event in self.events.items()},
            toggles=self.registry.toggles,
            claim_timeout=claim_timeout,
            category_defaults={k: c.default for k, c in self.registry.categories.items()},
            preferences=self.registry.preferences,
            links=links,
        )
        self.tasks: dict[str, Task] = {
            key: self._register(event) for key, event in self.events.items()
        }
        self.relay_task = self._register_relay()
        self.digest_tasks = {
            key: self._register_digest(key, event)
            for key, event in digestsend.digest_events(self.events).items()
        }
        self._check_schema_when_workers_start()
        prefetch.add_prefetch_step(celery, self._largest_batch, allowed=lambda: self.raise_prefetch)
        if set_default:
            global _default  # noqa: PLW0603 - the module-level emit() needs one instance
            _default = self

    @property
    def events(self) -> Mapping[str, Event]:
        """Event key -> compiled event (the registry's)."""
        return self.registry.events

    def emit(
        self, event_key: str, /, *, session: Any = None, send_at: Any = None, **cuids: Any
    ) -> Receipt:
        """Queue ``event_key`` for the entities named by ``cuids``.

        Everything is checked before anything is queued. With ``session`` (a SQLAlchemy
        ``Session``, or a ``scoped_session`` such as Flask-SQLAlchemy's ``db.session``; typed
        ``Any`` so that ``**cuids`` from a dict type-checks), nothing is queued until that
        session's outermost transaction commits, and a rollback drops the emit: it is
        written to emailevents' ``emailevents_emits`` table in the same transaction, published
        after the commit, and published by the relay if the broker was down at that moment.

        With ``send_at`` (a timezone-aware ``datetime``), the emit is stored in
        ``emailevents_emits`` (in ``session``'s transaction, or else in one of its own, committed
        before this returns) and the relay publishes it once that time has come; until then
        :meth:`cancel` takes it back. A ``send_at`` not in the future sends now
        (docs/timing.md).

        Raises:
            UnknownEventError: no such event (the message suggests the nearest key).
            EmitArgumentError: an entity name is missing or unexpected, a CUID is not a string,
                or ``send_at`` is not a ``datetime``.
            EmitValueError: a CUID is empty or too long, or ``send_at`` has no timezone.
            ConfigurationError: with ``session`` or ``send_at``, emailevents' tables lack a
                column this version writes (checked once per process): run
                ``emailevents db upgrade``.
        """
        event = self.event(event_key)
        bound = bind_cuids(event, (), cuids)
        due = schedules.send_time(event_key, send_at)
        event_id = str(uuid.uuid4())
        if isinstance(session, scoped_session):
            session = session()  # Flask-SQLAlchemy's db.session: the session of this context
        if session is not None:
            if not isinstance(session, Session):
                raise EmitArgumentError(
                    f"event '{event_key}': session= must be a SQLAlchemy Session, got "
                    f"{type(session).__name__}"
                )
            schema.verify(session.connection())
            relaying.defer(self._publisher(), session, event_key, event_id, bound, send_at=due)
        elif due is not None:
            relaying.schedule(self._publisher(), event_key, event_id, bound, send_at=due)
        else:
            # Checked just above: emit() is on the web request's path, so not twice.
            self.tasks[event_key].publish_checked(bound, task_id=event_id)
        return Receipt(event_key, event_id, event.task_name)

    def relay(self, *, limit: int = 500, grace: timedelta = timedelta(seconds=30)) -> RelayResult:
        """Publish emits a commit left pending (broker down, process gone); see
        :func:`emailevents.relay.publish_pending`."""
        return relaying.publish_pending(self._publisher(), limit=limit, grace=grace)

    def cancel(self, event_id: str) -> bool:
        """Cancel the scheduled emit ``event_id`` (``emit(..., send_at=)``).

        Returns ``True`` when this call cancelled it: it will never be sent. ``False`` when it
        was not cancelled by this call: the relay has taken it for publishing already (its
        ``send_at`` came), it was cancelled before, it was not a scheduled emit, or no emit has
        that id. ``emailevents explain`` tells which (docs/timing.md).
        """
        with self.session_factory() as session:
            return emitstore.cancel(session, event_id)

    def batching(self, event_key: str) -> BatchSetting | None:
        """How a worker batches ``event_key``'s messages: its ``window`` (seconds) and ``max``
        (messages), from the registry's ``batch:`` or this instance's ``batch_window`` and
        ``batch_max``; None when each emit runs alone.

        Raises:
            UnknownEventError: no such event.
        """
        return self._batching[self.event(event_key).key]

    def _largest_batch(self) -> int | None:
        """The largest ``max`` of the batched events; None when none is batched."""
        sizes = [s.max for s in self._batching.values() if s is not None]
        return max(sizes) if sizes else None

    def event(self, event_key: str) -> Event:
        """The compiled event ``event_key``.

        Raises:
            UnknownEventError: no such event.
        """
        return find_event(self.registry, event_key)

    def run(self, event_key: str, event_id: str, **cuids: str) -> RunResult:
        """Run one emit here and now, in this process (what the task does on a worker)."""
        event = self.event(event_key)
        return pipeline.run(self.runtime, event, event_id, bind_cuids(event, (), cuids))

    def create_tables(self, engine: Engine) -> None:
        """Create emailevents' own tables (delivery log, emits, org settings) on ``engine``, or
        bring them up to this version; for tests and demos (``emailevents db upgrade`` where
        you deploy, docs/migrations.md)."""
        schema.upgrade(engine)

    def check_schema(self) -> None:
        """Raise :class:`ConfigurationError` naming ``emailevents db upgrade`` when the
        database lacks a table or column this version writes (checked once per process)."""
        with self.session_factory() as session:
            schema.verify(session.connection())

    def wsgi_app(self) -> web.WsgiApp:
        """A WSGI application answering Postmark's webhooks (``POST /postmark/webhook``, with
        ``webhook_auth``), to mount in any WSGI server or framework (docs/webhooks.md)."""
        return web.WsgiApp(self._site())

    def asgi_app(self) -> web.AsgiApp:
        """The same as an ASGI application: ``app.mount("/emails", events.asgi_app())``."""
        return web.AsgiApp(self._site())

    @functools.cached_property
    def suppressions(self) -> SuppressionList:
        """The suppression list: each stream's addresses its events skip, with Postmark's
        Suppressions API beside it when the sender is a :class:`PostmarkSender`
        (docs/webhooks.md#the-suppression-list)."""
        # Postmark's client only where it is used: importing it costs every process.
        from .senders.postmark import PostmarkSender  # noqa: PLC0415
        from .senders.postmark_suppressions import PostmarkSuppressions  # noqa: PLC0415

        sender = self.sender
        remote = PostmarkSuppressions(sender) if isinstance(sender, PostmarkSender) else None
        streams = sorted({event.message_stream for event in self.events.values()})
        return SuppressionList(self.session_factory, remote, streams)

    def _links(self, public_url: str | None, mailto: str | None) -> RecipientLinks | None:
        """Recipients' links, which an event with a category needs (docs/preferences.md)."""
        needing = sorted(key for key, event in self.events.items() if event.category is not None)
        if not needing:
            return None
        if public_url is None or self.signer is None:
            raise ConfigurationError(
                f"{len(needing)} event(s) have a category (the first: {needing[0]!r}), so each "
                "of their messages carries an unsubscribe link: pass EmailEvents(public_url="
                "'https://app.example.com/email', signing_keys=['a long random secret']), the URL "
                "where the web component is mounted (docs/preferences.md)"
            )
        parts = urlsplit(public_url)
        local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ConfigurationError(
                f"public_url must be an https:// URL (http:// only on this machine), not "
                f"{public_url!r}: mail providers refuse one-click unsubscribe over plain http"
            )
        return RecipientLinks(public_url, self.signer, mailto)

    def _site(self) -> web.Site:
        return web.Site(
            self.session_factory,
            self.webhook_auth,
            self.webhook_max_body,
            preferences=self.preferences if self.registry.categories else None,
            signer=self.signer,
        )

    def set_toggle(self, session: Session, org_key: str, toggle_key: str, enabled: bool) -> None:
        """Switch an email toggle on or off for an org in emailevents' own settings table."""
        store.set_toggle(session, org_key, toggle_key, enabled)

    def _check_free(self, task_name: str, what: str) -> None:
        if task_name in self.celery.tasks:
            # Celery would keep the first callable and only warn: calls would reach the other one.
            raise ConfigurationError(
                f"{what}: the Celery app already has a task named '{task_name}'; give the "
                "event another `task:` name, or this EmailEvents its own Celery app"
            )

    def _check_schema_when_workers_start(self) -> None:
        """A worker of this Celery app checks our tables before it consumes: on tables older
        than this version it logs why and stops, rather than fail every run it takes."""
        events = self

        class CheckSchema(bootsteps.StartStopStep):  # type: ignore[misc]  # no type hints
            label = "emailevents tables"

            def start(self, _worker: Any) -> None:
                try:
                    events.check_schema()
                except ConfigurationError as exc:
                    logger.critical("the worker does not consume: %s", exc)
                    raise
                except (OperationalError, InterfaceError) as exc:
                    # Unreachable now: runs retry until it is back; nothing to refuse.
                    logger.warning("emailevents' tables not checked (%s)", type(exc).__name__)

        self.celery.steps["worker"].add(CheckSchema)

    def _register_relay(self) -> Task:
        """``emailevents.relay``: one relay pass, for applications that run Celery beat."""
        self._check_free(RELAY_TASK, "the relay task")
        events = self

        def relay_pending() -> int:
            return events.relay().published

        return self.celery.task(
            relay_pending,
            name=RELAY_TASK,
            shared=False,
            lazy=False,
            ignore_result=True,
        )

    def _register_digest(self, key: str, event: Event) -> Task:
        """The task that sends one digest of ``key`` (its id is the task's id), published by
        the relay once the digest is closed (docs/timing.md, "Digests")."""
        name = f"{digestsend.DIGEST_TASK_PREFIX}{key}"
        self._check_free(name, f"the digest of '{key}'")
        events = self

        def run(task: Task) -> RunResult:
            retrying = events._retrying()
            runner = functools.partial(
                digestsend.run, retrying.runtime, events.events, task.request.id
            )
            result = retries.run(retrying, task, event, {}, runner=runner)
            if result.failed_entirely:
                raise DeliveryError(result.failure(), result)
            return result

        run.__name__ = f"digest_{key}"
        run.__qualname__ = run.__name__
        run.__doc__ = f"Send one closed digest of '{key}'."
        task: Task = self.celery.task(
            run,
            name=name,
            base=EventTask,
            bind=True,
            shared=False,
            lazy=False,
            acks_late=True,
            reject_on_worker_lost=True,
            throws=(DeliveryError,),
            ignore_result=True,
            max_retries=self.max_retries,
        )
        return task

    def _register(self, event: Event) -> Task:
        self._check_free(event.task_name, f"event '{event.key}'")
        events = self

        def run(task: Task, *args: str, **kwargs: str) -> RunResult:
            result = retries.run(events._retrying(), task, event, bind_cuids(event, args, kwargs))
            if result.failed_entirely:
                # Recorded already; raised so that Celery shows a failed task, not a success.
                # Celery acknowledges it (acks_late acks failures) and does not retry it.
                raise DeliveryError(result.failure(), result)
            return result

        run.__name__ = event.task_name.rpartition(".")[2]
        run.__qualname__ = run.__name__
        run.__doc__ = f"Send the '{event.key}' email ({event.spec.template})."
        batch = self._batching[event.key]
        base = BatchedEventTask if batch is not None else EventTask
        task: Task = self.celery.task(
            run,
            name=event.task_name,
            base=base,
            bind=True,
            shared=False,
            lazy=False,
            event=event,
            acks_late=True,
            reject_on_worker_lost=True,
            # Expected: Celery records the failure without a traceback; the run logged why.
            throws=(DeliveryError,),
            ignore_result=True,
            max_retries=self.max_retries,
        )
        if batch is not None:

            def run_batch(queued: list[retries.Queued]) -> Any:
                return retries.run_batch(events._retrying(), task, event, queued)

            task.batch_window = batch.window
            task.batch_max = batch.max
            task.run_batch = run_batch
        return task

    def retry_delay(self, tries: int) -> float:
        """Seconds before try ``tries + 1``: exponential backoff with full jitter."""
        return self._retrying().delay(tries)

    # The settings stay attributes of this instance, which may change them: the relay and the
    # retries get them as they are at each use.

    def _publisher(self) -> relaying.Publisher:
        redeliver_after = timedelta(seconds=self.redeliver_after)
        return relaying.Publisher(
            self.session_factory, self.tasks, redeliver_after, self.digest_tasks
        )

    def _retrying(self) -> retries.Retrying:
        return retries.Retrying(
            self.runtime,
            max_retries=self.max_retries,
            backoff=self.retry_backoff,
            backoff_max=self.retry_backoff_max,
            redeliver_after=timedelta(seconds=self.redeliver_after),
        )


def emit(event_key: str, /, *, session: Any = None, send_at: Any = None, **cuids: Any) -> Receipt:
    """Emit through the most recently created :class:`EmailEvents`; see :meth:`EmailEvents.emit`.

    Raises:
        ConfigurationError: no EmailEvents instance has been created in this process.
    """
    if _default is None:
        raise ConfigurationError(
            "emailevents.emit() needs an EmailEvents instance: create one with "
            "EmailEvents('events.yaml', celery=..., session_factory=..., sender=...) at start-up"
        )
    return _default.emit(event_key, session=session, send_at=send_at, **cuids)


def bind_cuids(event: Event, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Entity name -> CUID from positional (declared order) and named arguments, checked."""
    names = event.entity_names
    where = f"event '{event.key}'"
    if len(args) > len(names):
        raise EmitArgumentError(
            f"{where} takes {len(names)} CUIDs ({', '.join(names)}), got {len(args)} positional"
        )
    bound = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name in bound:
            raise EmitArgumentError(f"{where}: '{name}' given both by position and by name")
        if name not in names:
            raise EmitArgumentError(
                f"{where} has no entity '{name}'{_did_you_mean(name, names)} (it takes "
                f"{', '.join(names)})"
            )
        bound[name] = value
    missing = [n for n in names if n not in bound]
    if missing:
        raise EmitArgumentError(
            f"{where} is missing {', '.join(missing)} (it takes {', '.join(names)})"
        )
    for name in names:
        value = bound[name]
        if not isinstance(value, str):
            raise EmitArgumentError(
                f"{where}: '{name}' must be a CUID string, got {type(value).__name__} "
                f"(pass {name}=obj.cuid, not the object)"
            )
        if not value.strip() or len(value) > MAX_CUID_LENGTH or value != value.strip():
            raise EmitValueError(
                f"{where}: '{name}' is not a CUID: {value[:40]!r} (empty, padded with spaces, "
                f"or longer than {MAX_CUID_LENGTH} characters)"
            )
        bad = unsendable(value)
        if bad is not None:
            # No database stores NUL in text, and a lone surrogate cannot be encoded to query.
            raise EmitValueError(
                f"{where}: '{name}' is not a CUID: {value[:40]!r} holds {bad!r} (a control "
                "character or lone surrogate); pass the entity's CUID as stored"
            )
    return {name: bound[name] for name in names}


def find_event(registry: Registry, event_key: str) -> Event:
    """The compiled event ``event_key`` of ``registry``.

    Raises:
        UnknownEventError: no such event (the message suggests the nearest key).
    """
    try:
        return registry.events[event_key]
    except (KeyError, TypeError):
        hint = _did_you_mean(str(event_key), registry.events)
        raise UnknownEventError(
            f"unknown email event {event_key!r}{hint} (events are declared in {registry.source})"
        ) from None


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _effective_batch(
    event: Event, batch_window: float | None, batch_max: int | None
) -> BatchSetting | None:
    """``event``'s batching: the registry's, with ``EmailEvents(batch_window=, batch_max=)``
    over it where given (a window of 0 is off)."""
    if batch_max is not None and (
        isinstance(batch_max, bool)
        or not isinstance(batch_max, int)
        or not 1 <= batch_max <= MAX_BATCH
    ):
        raise ConfigurationError(
            f"EmailEvents(batch_max={batch_max!r}): the most messages a batch runs together must "
            "be a whole number from 1 to 500 (a Postmark batch request holds 500); pass "
            "batch_window=0 to run each emit alone"
        )
    setting = event.batch
    if batch_window is not None:
        if batch_window < 0:
            raise ConfigurationError(
                f"EmailEvents(batch_window={batch_window!r}): seconds a batch waits, 0 or more "
                "(0 runs each emit alone)"
            )
        if batch_window == 0:
            return None
        return BatchSetting(batch_window, batch_max or (setting.max if setting else 500))
    if setting is not None and batch_max is not None:
        return BatchSetting(setting.window, batch_max)
    return setting


def _bind_context(event: Event, context: Mapping[str, Any]) -> dict[str, Any]:
    available = {*event.entity_names, "session"}
    bound: dict[str, Any] = {}
    for name in sorted(event.context_names):
        value = context[name]
        bound[name] = (
            Callee.bind(value, available, f"context '{name}'") if callable(value) else value
        )
    return bound
