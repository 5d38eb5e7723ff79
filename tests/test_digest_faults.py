"""Digests under SIGKILL (fault 1's pattern, tests/test_faults.py): workers killed while digests
are open (emits adding items) and while they are sent; every emit is in exactly one sent
message, no item lost, none repeated, and no digest message sent twice.

The fault tests' real components: PostgreSQL, a Redis of the test's own, Celery workers in
processes of their own (``tests/faultapp``), the relay loop as operations run it, and the local
Postmark server in this process, where messages are counted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from emailevents.tables import deliveries, digest_items, digests
from tests.test_faults import (  # noqa: F401 - fixtures
    Emitted,
    Harness,
    RecordingPostmark,
    batching_on,
    broker,
    fake,
    harness,
    pg_schema,
    reconfigure,
    report,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

DIGEST_TEMPLATE = {
    "Name": "Fault digest",
    "Alias": "fault-digest",
    "Subject": "{{subject}}",
    "TextBody": "{{count}} notes\n{{#each items}}- {{subject}}\n{{/each}}",
}
EMITS = 300
PEOPLE = 20


def with_digests(registry: Path) -> None:
    """Every event of the fault tests' registry into one digest group, ``notes``."""
    line = "    template: fault-note\n"
    text = registry.read_text(encoding="utf-8")
    assert line in text
    digest = (
        '    digest: {window: 2s, template: fault-digest, subject: "{count} notes", group: notes}\n'
    )
    registry.write_text(text.replace(line, line + digest), encoding="utf-8")


def emit_all(h: Harness) -> None:
    """``EMITS`` note emits to ``PEOPLE`` people, committed 50 at a time (``session=``)."""
    keys = [k for k in h.keys if "_note_" in k]
    for start in range(0, EMITS, 50):
        with h.factory() as session:
            for i in range(start, start + 50):
                cuid, email = h.world.people[i % PEOPLE]
                key = keys[i % len(keys)]
                receipt = h.events.emit(key, session=session, org=h.world.org, person=cuid)
                h.emitted.append(Emitted(receipt.event_id, key, frozenset([email])))
            session.commit()


def rows(h: Harness, table: sa.Table) -> list[Any]:
    with h.factory() as session:
        return list(session.execute(sa.select(table)))


def digested(h: Harness) -> int:
    with h.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(deliveries.c.reason == "digested")
            ).scalar_one()
        )


def all_digests_sent(h: Harness) -> bool:
    """Every emit's recipient in a digest, and every digest settled."""
    if digested(h) < len(h.expected()):
        return False
    return {r.state for r in rows(h, digests)} == {"sent"}


# Batched is the default configuration; run alone, the same test takes as long again.
@pytest.mark.parametrize(
    "batched", [pytest.param(False, marks=pytest.mark.thorough), True], ids=["alone", "batched"]
)
def test_workers_killed_while_digests_are_open_and_sent_lose_no_item_and_repeat_none(
    harness: Harness,  # noqa: F811 - the fixture
    fake: RecordingPostmark,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    batched: bool,
) -> None:
    if batched:
        batching_on(harness, concurrency=4)
    with_digests(Path(harness.config.registry))
    fake.add_template(DIGEST_TEMPLATE)
    # A digest whose task a kill cut short is published again this long after (a kill of the
    # whole worker: Redis gives its messages back after the visibility timeout, 10 s).
    reconfigure(harness, redeliver_after=12.0)
    emit_all(harness)
    worker = harness.worker("w1", pool="prefork", concurrency=4)
    harness.relay_loop()
    total = len(harness.expected())
    # While digests are open: the whole worker, its pool processes adding items.
    harness.wait(
        lambda: digested(harness) >= 0.3 * total,
        "a third of the items added",
        timeout=120,
        progress=harness.progress,
    )
    worker.kill()
    worker.start()
    # While they are sent: the whole worker, once the first digest messages arrived.
    harness.wait(
        lambda: len(fake.messages) >= 3,
        "the first digests sent",
        timeout=120,
        progress=harness.progress,
    )
    worker.kill()
    worker.start()
    harness.settle(lambda: all_digests_sent(harness), timeout=180)
    harness.stop_relays()

    items = rows(harness, digest_items)
    found = {r.id: r for r in rows(harness, digests)}
    received = harness.received()
    counts = {
        m.metadata.get("event_id", ""): (m.template_model or {}).get("count") for m in fake.messages
    }
    per_item = Counter((i.event_id, i.recipient) for i in items)
    in_digest = Counter(i.digest_id for i in items)
    runs = harness.runs()
    ended = {(r["task_id"], r["pid"]) for r in runs if r["what"] != "start"}
    cut = {
        r["task_id"] for r in runs if r["what"] == "start" and (r["task_id"], r["pid"]) not in ended
    }
    figures = {
        "emits": len(harness.emitted),
        "items": len(items),
        "lost": sum(1 for pair in harness.expected() if per_item[pair] == 0),
        "repeated": sum(n - 1 for n in per_item.values() if n > 1),
        "digests": len(found),
        "messages": len(fake.messages),
        "duplicates": sum(n - 1 for n in received.values() if n > 1),
        "unsent": sum(1 for d in found.values() if received[d.id, d.recipient] == 0),
    }
    report(
        capsys,
        "digest fault: "
        + " ".join(f"{k}={v}" for k, v in figures.items())
        # Runs the kills cut short: of emits (adding items), and of digests (sending them).
        + f" cut_adding={len(cut - set(found))} cut_sending={len(cut & set(found))}"
        + f" seconds={harness.elapsed():.1f}",
        harness,
        diagnose=False,
    )
    assert figures | {"lost": 0, "repeated": 0, "duplicates": 0, "unsent": 0} == figures
    assert figures["items"] == total == EMITS
    assert figures["messages"] == figures["digests"]
    # Each message holds exactly its digest's items; each emit's log row names its digest.
    assert counts == {d: in_digest[d] for d in found}
    assert {d: found[d].item_count for d in found} == {d: in_digest[d] for d in found}
    logged = harness.logged()
    assert {logged[pair] for pair in harness.expected()} == {("skipped", "digested")}
    assert {logged[d.id, d.recipient] for d in found.values()} == {("sent", "sent")}
