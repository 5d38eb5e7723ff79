"""9. ``emit(..., session=)`` in the application's transaction: what one emit adds to a commit,
and 1,000 emits in one transaction, each against the same transaction without them.

Besides the time, each variant is counted once: the statements the database received (an
executemany is one), the tasks published (Celery's ``before_task_publish``), and, on Redis, the
commands and connections the broker itself counted (``INFO``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery.signals import before_task_publish
from sqlalchemy.orm import Session

from . import models
from .app import Bench
from .sections import FINDING, Context, Statements, per_call, user_id
from .stats import figure, ratio

__all__ = ["in_transaction"]

PLAIN = "plain"
EMITTING = "with emit(session=)"


class _Broker:
    """Tasks published in this process, and what the broker (Redis) counted meanwhile."""

    def __init__(self, url: str) -> None:
        self.published = 0
        self._redis: Any = None
        if url.startswith("redis://"):
            import redis  # noqa: PLC0415 - only the postgres profile has Redis

            self._redis = redis.Redis.from_url(url)

    def _count(self, **_: Any) -> None:
        self.published += 1

    def _stats(self) -> tuple[int, int]:
        if self._redis is None:
            return 0, 0
        info = self._redis.info("stats")
        return int(info["total_commands_processed"]), int(info["total_connections_received"])

    @contextmanager
    def counting(self) -> Iterator[dict[str, int | None]]:
        counted: dict[str, int | None] = {}
        self.published = 0
        before_task_publish.connect(self._count, weak=False)
        commands, connections = self._stats()
        try:
            yield counted
        finally:
            after_commands, after_connections = self._stats()
            before_task_publish.disconnect(self._count)
            counted["published"] = self.published
            # Less the INFO that read the count.
            counted["broker_commands"] = after_commands - commands - 1 if self._redis else None
            counted["broker_connections"] = after_connections - connections if self._redis else None


@dataclass(frozen=True)
class _Transactions:
    """The application's transactions: new findings, an emit for some of them, the commit."""

    ctx: Context
    bench: Bench
    owner_id: int

    def run(self, inserts: int, emits: int) -> Callable[[int], None]:
        """A transaction of ``inserts`` new findings and an emit for the first ``emits``."""
        world, events = self.ctx.world, self.bench.events

        def one(_: int) -> None:
            with self.bench.session_factory() as session:
                cuids = _insert(session, self.owner_id, inserts)
                for cuid in cuids[:emits]:
                    events.emit(
                        FINDING, session=session, user=world.actor, org=world.org, finding=cuid
                    )
                session.commit()

        return one

    def purge(self) -> None:
        with self.bench.celery.connection_for_write() as conn:
            conn.default_channel.queue_purge(self.bench.celery.conf.task_default_queue)

    def counts(self, fn: Callable[[int], None], broker: _Broker) -> dict[str, Any]:
        """What one transaction sent to the database and the broker."""
        with Statements(self.bench.engine) as counter, broker.counting() as counted:
            fn(0)
        self.purge()
        on_emits = [s for s, _ in counter.statements if "emailevents_emits" in s]
        return {
            "statements": len(counter.statements),
            "emit_statements": len(on_emits),
            "commits": counter.commits,
            **counted,
        }


def _compare(
    transactions: _Transactions, n: int, *, calls: int, repeats: int, broker: _Broker
) -> dict[str, Any]:
    """``n`` inserts + commit against the same with ``n`` emits, in turn."""
    variants = {PLAIN: transactions.run(n, 0), EMITTING: transactions.run(n, n)}
    for fn in variants.values():
        per_call(fn, 3)
    transactions.purge()
    measured: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(repeats):
        order = list(variants.items())
        for name, fn in order if rep % 2 == 0 else reversed(order):
            measured[name].append(per_call(fn, calls) * 1e3)
        transactions.purge()
    return {
        "emits": n,
        "calls": calls,
        **{name: figure(values, "ms/commit") for name, values in measured.items()},
        "added": figure(
            [a - b for a, b in zip(measured[EMITTING], measured[PLAIN], strict=True)], "ms/commit"
        ),
        "ratio": ratio(measured[EMITTING], measured[PLAIN], target="(reported)", met=None),
        "counts": {name: transactions.counts(fn, broker) for name, fn in variants.items()},
    }


def in_transaction(ctx: Context) -> dict[str, Any]:
    """9. One INSERT + commit with and without one ``emit(session=)``; N inserts + commit with
    and without N emits; and how the statements grow with the emits of one transaction."""
    queue = f"bench-emits-{uuid.uuid4().hex[:6]}"  # no worker consumes it: publishing only
    bench = ctx.producer(queue)
    transactions = _Transactions(ctx, bench, user_id(bench.session_factory, ctx.world.actor))
    broker = _Broker(ctx.config.broker)
    many, repeats = ctx.sizes.transaction_emits, ctx.sizes.repeats
    return {
        "one": _compare(
            transactions, 1, calls=ctx.sizes.session_calls, repeats=repeats, broker=broker
        ),
        "many": _compare(transactions, many, calls=1, repeats=repeats * 2, broker=broker),
        "round_trips": [
            {"emits": n, **transactions.counts(transactions.run(n, n), broker)}
            for n in sorted({1, 10, min(100, many), many})
        ],
    }


def _insert(session: Session, owner_id: int, rows: int) -> list[str]:
    """``rows`` new findings in ``session`` (one flush at the commit); their CUIDs."""
    cuids = [f"cnew{uuid.uuid4().hex[:21]}" for _ in range(rows)]
    session.add_all(models.Finding(cuid=c, title="A new finding", owner_id=owner_id) for c in cuids)
    return cuids
