"""Helpers for testing applications that use emailevents (and for emailevents' own tests).

``worker(app)`` runs a real Celery worker in a background thread of this process, consuming
real broker messages (use ``memory://`` for a broker that needs no server). ``Runs`` collects
what each task run decided, so a test can wait for an emit and assert on its outcomes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

from celery import Celery
from celery.signals import task_postrun
from kombu.transport import memory

from ..engine import EventTask, Receipt
from ..errors import DeliveryError
from ..outcomes import RunResult
from ..senders.outbox import OutboxSender, SentMessage

__all__ = ["OutboxSender", "Runs", "SentMessage", "memory_app", "worker"]


class _WakefulMemoryTransport(memory.Transport):
    """kombu's in-memory transport, handing control back to the worker every 0.1 s.

    Celery's worker loop waits in ``drain_events(timeout=2.0)`` and notices that it was told to
    stop only when that returns: two seconds at the end of every test that runs a worker.
    """

    # kombu's stubs give its base Transport (**kwargs) and the virtual one (timeout) two shapes.
    def drain_events(self, connection: Any, timeout: Any = None) -> Any:  # type: ignore[override]
        return super().drain_events(connection, timeout=min(timeout or 0.1, 0.1))  # type: ignore[no-untyped-call]


def memory_app(name: str = "emailevents-test") -> Celery:
    """A Celery app on kombu's in-memory transport, with a queue of its own.

    The in-memory broker is shared by the whole process: a queue per app keeps one test's
    messages away from another test's worker.
    """
    suffix = uuid.uuid4().hex[:8]
    app = Celery(f"{name}-{suffix}", set_as_current=False)
    app.conf.update(
        broker_transport=f"{__name__}:{_WakefulMemoryTransport.__name__}",
        broker_host="localhost",
        task_default_queue=f"emailevents-{suffix}",
        broker_transport_options={"polling_interval": 0.01},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


@contextmanager
def worker(app: Celery, *, concurrency: int = 2, pool: str = "threads") -> Iterator[Any]:
    """Run a real Celery worker for ``app`` in this process until the block ends.

    Unlike ``task_always_eager``, every task goes through the broker as a serialised message and
    runs on a worker thread, in its own transaction, with Celery's acknowledgement and retries.
    """
    from celery.contrib.testing.worker import start_worker  # noqa: PLC0415 - test-only import

    with start_worker(
        app,
        pool=pool,
        concurrency=concurrency,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=10.0,
    ) as controller:
        try:
            yield controller
        finally:
            # Stop the blueprint now: otherwise the consumer loop notices the shutdown only
            # after two of its drain timeouts.
            controller.stop(in_sighandler=False)


class Runs:
    """Collects the result of every emailevents task run in this process while active.

    Use as a context manager around the worker, then ``wait(receipt, ...)``.
    """

    def __init__(self) -> None:
        self._done: dict[str, RunResult | BaseException] = {}
        self._changed = threading.Condition()

    def __enter__(self) -> Self:
        task_postrun.connect(self._on_postrun, weak=False)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task_postrun.disconnect(self._on_postrun)

    def _on_postrun(
        self, *, task_id: str, task: Any, retval: Any, state: str | None = None, **_: Any
    ) -> None:
        if not isinstance(task, EventTask) or state == "RETRY":
            return
        if isinstance(retval, DeliveryError):
            retval = retval.result  # a run that sent nothing, failed in Celery's eyes
        with self._changed:
            self._done[task_id] = retval
            self._changed.notify_all()

    def wait(self, *emits: Receipt | str, timeout: float = 15.0) -> list[RunResult]:
        """Wait until each emit (a receipt or an event id) has run; return their results in order.

        Raises:
            TimeoutError: some emit did not finish in time (the message names which).
            BaseException: the exception a run raised, re-raised here.
        """
        ids = [e.event_id if isinstance(e, Receipt) else e for e in emits]
        deadline = time.monotonic() + timeout
        with self._changed:
            while missing := [i for i in ids if i not in self._done]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(missing)} emit(s) did not finish: {missing}")
                self._changed.wait(left)
            results = [self._done[i] for i in ids]
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, RunResult)]
