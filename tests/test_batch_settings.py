"""``batch:`` in events.yaml (defaults and per event), what ``EmailEvents`` makes of it, and the
worker's prefetch raised so that batches can fill.

The registry's part in the style of tests/test_registry.py: positions computed from each test's
YAML with :func:`at`. The engine's on the demo's registry; the prefetch with a real worker on a
real broker (Redis), whose QoS prefetch count is read back from the consumer.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from click.testing import CliRunner

from emailevents import BatchSetting, ConfigurationError, EmailEvents
from emailevents.cli import main
from emailevents.demo.run import REGISTRY, demo_events, seed_database
from emailevents.engine import BatchedEventTask
from emailevents.errors import UnknownEventError
from emailevents.prefetch import PrefetchPlan
from emailevents.senders import OutboxSender
from emailevents.testing import memory_app, worker
from tests.brokers import celery_on_redis
from tests.test_registry import VALID, at, compiled, edit, places, problems_of

BUILT_IN = BatchSetting(0.05, 500)


def with_batches(defaults: str | None = None, project: str | None = None) -> str:
    """VALID with ``defaults.batch`` and ``project_created``'s ``batch`` as written (None: none)."""
    text = VALID
    if defaults is not None:
        text = edit(text, "  org: org\n", f"  org: org\n  batch: {defaults}\n")
    if project is not None:
        text = edit(
            text,
            "    task: tasks.email.on_project_created\n",
            f"    task: tasks.email.on_project_created\n    batch: {project}\n",
        )
    return text


def batches(text: str) -> dict[str, BatchSetting | None]:
    return {key: event.batch for key, event in compiled(text).events.items()}


# --- the registry -------------------------------------------------------------------------


def test_without_batch_every_event_is_batched_with_50_ms_and_500() -> None:
    assert batches(VALID) == {"project_created": BUILT_IN, "member_welcome": BUILT_IN}


@pytest.mark.parametrize(
    ("defaults", "project", "expected_project", "expected_other"),
    [
        # defaults alone reach every event
        ("off", None, None, None),
        ("on", None, BUILT_IN, BUILT_IN),
        ("{window_ms: 20}", None, BatchSetting(0.02, 500), BatchSetting(0.02, 500)),
        ("{max: 40}", None, BatchSetting(0.05, 40), BatchSetting(0.05, 40)),
        ("{window_ms: 0, max: 40}", None, None, None),
        # an event's own wins, the rest from defaults, then from the built-in values
        (None, "off", None, BUILT_IN),
        ("{window_ms: 20, max: 40}", "{max: 10}", BatchSetting(0.02, 10), BatchSetting(0.02, 40)),
        (
            "{window_ms: 20, max: 40}",
            "{window_ms: 5}",
            BatchSetting(0.005, 40),
            BatchSetting(0.02, 40),
        ),
        ("{window_ms: 20, max: 40}", "on", BatchSetting(0.02, 40), BatchSetting(0.02, 40)),
        ("{window_ms: 20}", "{window_ms: 0}", None, BatchSetting(0.02, 500)),
        # on (or a mapping without a window) in an event is on, even where defaults are off
        ("off", "on", BUILT_IN, None),
        ("off", "{max: 10}", BatchSetting(0.05, 10), None),
        ("{window_ms: 0, max: 40}", "on", BatchSetting(0.05, 40), None),
        # YAML 1.1's booleans, and the words quoted
        ("no", "yes", BUILT_IN, None),
        ('"off"', '"on"', BUILT_IN, None),
        (None, "{window_ms: 10000, max: 1}", BatchSetting(10.0, 1), BUILT_IN),
    ],
)
def test_an_events_batch_wins_and_takes_the_rest_from_defaults(
    defaults: str | None,
    project: str | None,
    expected_project: BatchSetting | None,
    expected_other: BatchSetting | None,
) -> None:
    text = with_batches(defaults, project)
    assert batches(text) == {"project_created": expected_project, "member_welcome": expected_other}


@pytest.mark.parametrize(
    ("project", "target", "message"),
    [
        (
            "{window_ms: 10001}",
            "10001",
            (
                "events.project_created.batch.window_ms: must be a whole number of milliseconds "
                "from 0 to 10000 (got 10001)"
            ),
        ),
        (
            "{window_ms: -1}",
            "-1",
            (
                "events.project_created.batch.window_ms: must be a whole number of milliseconds "
                "from 0 to 10000 (got -1)"
            ),
        ),
        (
            "{window_ms: 0.5}",
            "0.5",
            (
                "events.project_created.batch.window_ms: must be a whole number of milliseconds "
                "from 0 to 10000 (got 0.5)"
            ),
        ),
        (
            '{window_ms: "50"}',
            '"50"',
            (
                "events.project_created.batch.window_ms: must be a whole number of milliseconds "
                "from 0 to 10000 (got '50')"
            ),
        ),
        (
            "{max: 501}",
            "501",
            (
                "events.project_created.batch.max: must be a whole number of messages from 1 to "
                "500 "
                "(got 501)"
            ),
        ),
        (
            "{max: 0}",
            "0",
            (
                "events.project_created.batch.max: must be a whole number of messages from 1 to "
                "500 "
                "(got 0)"
            ),
        ),
        (
            "{max: true}",
            "true",
            (
                "events.project_created.batch.max: must be a whole number of messages from 1 to "
                "500 "
                "(got True)"
            ),
        ),
        (
            "sometimes",
            "sometimes",
            (
                "events.project_created.batch: must be on, off or a mapping of window_ms and max "
                "(got 'sometimes')"
            ),
        ),
        (
            "50",
            "50",
            (
                "events.project_created.batch: must be on, off or a mapping of window_ms and max "
                "(got 50)"
            ),
        ),
        (
            "[50, 500]",
            "[50",
            (
                "events.project_created.batch: must be on, off or a mapping of window_ms and max "
                "(got [50, 500])"
            ),
        ),
    ],
)
def test_an_invalid_batch_is_ee080_where_it_is_written(
    project: str, target: str, message: str
) -> None:
    text = with_batches(project=project)
    (problem,) = problems_of(text)
    assert problem.code == "EE080"
    assert (problem.line, problem.column) == at(
        text, target, after="    batch: " + project[: project.index(target)]
    )
    assert problem.message == message
    assert "off" in problem.hint  # the fix names how to turn it off, and what to write


def test_an_invalid_defaults_batch_is_reported_once_where_it_is_written() -> None:
    text = with_batches(defaults="{window_ms: 50000}")
    (problem,) = problems_of(text)
    assert problem.code == "EE080"
    assert (problem.line, problem.column) == at(text, "50000")
    assert problem.message.startswith("defaults.batch.window_ms: must be a whole number")


def test_an_empty_batch_is_reported_at_its_key() -> None:
    text = with_batches(project="")
    (problem,) = problems_of(text)
    assert (problem.code, (problem.line, problem.column)) == ("EE080", at(text, "batch:"))
    assert "(got nothing)" in problem.message


def test_every_mistake_of_a_batch_is_reported_at_once_and_an_unknown_field_is_ee005() -> None:
    text = with_batches(defaults="{max: 600}", project="{window_ms: 20000, size: 3}")
    problems = problems_of(text)
    assert [p.code for p in problems] == ["EE080", "EE080", "EE005"]
    assert places(problems) == [
        at(text, "600"),
        at(text, "20000"),
        at(text, "size"),
    ]
    assert problems[2].message == "events.project_created.batch: unknown field 'size'"
    assert problems[2].hint == "allowed: window_ms, max"


def test_lint_knows_ee080() -> None:
    from emailevents.findings import CODES  # noqa: PLC0415

    assert CODES["EE080"][1] == "invalid batch setting"


# --- the engine ---------------------------------------------------------------------------


@pytest.fixture
def factory(sqlite_engine: sa.Engine) -> Any:
    return seed_database(sqlite_engine)[0]


def engine_with(factory: Any, **options: Any) -> EmailEvents:
    return demo_events(
        celery=memory_app(), session_factory=factory, sender=OutboxSender(), **options
    )


def test_each_events_task_is_batched_by_its_own_setting(factory: Any, tmp_path: Any) -> None:
    text = REGISTRY.read_text()
    # The demo's first event off, its second with a batch of its own.
    keys = list(compiled_demo_keys(text))
    text = text.replace(f"  {keys[0]}:\n", f"  {keys[0]}:\n    batch: off\n", 1)
    text = text.replace(
        f"  {keys[1]}:\n", f"  {keys[1]}:\n    batch: {{window_ms: 7, max: 9}}\n", 1
    )
    registry = tmp_path / "events.yaml"
    registry.write_text(text)
    events = EmailEvents(
        registry,
        celery=memory_app(),
        session_factory=factory,
        sender=OutboxSender(),
        context={"site_url": "https://app.example.com"},
        set_default=False,
    )
    first, second, third = (events.tasks[k] for k in keys[:3])
    assert not isinstance(first, BatchedEventTask)
    assert events.batching(keys[0]) is None
    assert isinstance(second, BatchedEventTask)
    assert (second.batch_window, second.batch_max) == (0.007, 9)
    assert events.batching(keys[1]) == BatchSetting(0.007, 9)
    assert isinstance(third, BatchedEventTask)
    assert (third.batch_window, third.batch_max) == (0.05, 500)
    assert events.batching(keys[2]) == BUILT_IN


def compiled_demo_keys(text: str) -> Iterator[str]:
    import yaml  # noqa: PLC0415

    yield from yaml.safe_load(text)["events"]


def test_batch_window_and_batch_max_override_the_registry_for_every_event(factory: Any) -> None:
    off = engine_with(factory, batch_window=0.0)
    assert {off.batching(k) for k in off.events} == {None}
    assert not any(isinstance(t, BatchedEventTask) for t in off.tasks.values())
    window = engine_with(factory, batch_window=0.3)
    assert {window.batching(k) for k in window.events} == {BatchSetting(0.3, 500)}
    both = engine_with(factory, batch_window=0.3, batch_max=3)
    assert {both.batching(k) for k in both.events} == {BatchSetting(0.3, 3)}
    only_max = engine_with(factory, batch_max=3)
    assert {only_max.batching(k) for k in only_max.events} == {BatchSetting(0.05, 3)}
    default = engine_with(factory)
    assert {default.batching(k) for k in default.events} == {BUILT_IN}


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"batch_max": 501}, "EmailEvents(batch_max=501): the most messages a batch runs"),
        ({"batch_max": 0}, "from 1 to 500"),
        ({"batch_window": -1.0}, "EmailEvents(batch_window=-1.0): seconds a batch waits"),
    ],
)
def test_an_override_out_of_range_is_a_configuration_error(
    factory: Any, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        engine_with(factory, **options)


def test_batching_of_an_unknown_event_says_so(factory: Any) -> None:
    with pytest.raises(UnknownEventError, match="unknown email event 'nope'"):
        engine_with(factory).batching("nope")


def test_emailevents_list_shows_each_events_batching(tmp_path: Any) -> None:
    text = with_batches(defaults="{window_ms: 20}", project="off")
    (tmp_path / "events.yaml").write_text(text)
    runner = CliRunner()
    table = runner.invoke(main, ["list", str(tmp_path / "events.yaml")])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[-1] == "Batching"
    assert lines[2].endswith("off")  # project_created
    assert lines[3].endswith("20 ms, max 500")  # member_welcome
    as_json = runner.invoke(main, ["list", "--format", "json", str(tmp_path / "events.yaml")])
    assert as_json.exit_code == 0, as_json.output
    assert '"batch": null' in as_json.output
    assert '"window_ms": 20' in as_json.output


# --- the worker's prefetch ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((1, 8, 500, True), (63, True, True)),  # ceil(500 / 8)
        ((1, 8, 500, False), (1, False, True)),
        ((100, 8, 500, True), (100, False, False)),  # never lowered
        ((0, 8, 500, True), (0, False, False)),  # 0: Celery's no limit
        ((1, 1, 1, True), (1, False, False)),
        ((4, 3, 10, True), (4, False, False)),
    ],
)
def test_the_prefetch_plan(
    given: tuple[int, int, int, bool], expected: tuple[int, bool, bool]
) -> None:
    before, slots, batch_max, allowed = given
    plan = PrefetchPlan(before, slots, batch_max, allowed=allowed)
    assert (plan.multiplier, plan.raised, plan.short) == expected


def qos_prefetch(controller: Any, app: Celery, folder: Path) -> int:
    """The prefetch count the worker's consumer asked the broker for, read once the worker has
    run a task (started for good: stopping one still starting races kombu's Redis poller)."""
    marker = folder / f"ran-{uuid.uuid4().hex}"
    app.tasks["touch"].delay(str(marker))
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the worker ran no task"
        time.sleep(0.01)
    return int(controller.consumer.qos.value)


def touch(path: str) -> None:
    Path(path).touch()


@pytest.fixture
def redis_app(tmp_path: Path) -> Iterator[Celery]:
    """A Celery app on a Redis of the test's own, with the prefetch docs/operations.md sets."""
    with celery_on_redis(tmp_path / "redis", "prefetch", worker_prefetch_multiplier=1) as (app, _):
        # Registered before the worker starts: its consumer reads the tasks it knows then.
        app.task(touch, name="touch", shared=False)
        yield app


@pytest.mark.parametrize("pool", ["threads", "solo", "prefork"])
def test_a_worker_raises_its_prefetch_for_the_largest_batch_and_logs_it(
    redis_app: Celery,
    factory: Any,
    pool: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    demo_events(celery=redis_app, session_factory=factory, sender=OutboxSender(), batch_max=300)
    with (
        caplog.at_level(logging.INFO, logger="emailevents"),
        worker(redis_app, concurrency=2, pool=pool) as controller,
    ):
        prefetch = qos_prefetch(controller, redis_app, tmp_path)
    assert prefetch == 300  # 2 slots x ceil(300 / 2)
    (record,) = [r for r in caplog.records if "prefetch multiplier raised" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert (record.prefetch_multiplier_before, record.prefetch_multiplier) == (1, 150)  # type: ignore[attr-defined]


def test_raise_prefetch_false_keeps_the_prefetch_and_warns(
    redis_app: Celery, factory: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    demo_events(
        celery=redis_app,
        session_factory=factory,
        sender=OutboxSender(),
        raise_prefetch=False,
    )
    with (
        caplog.at_level(logging.INFO, logger="emailevents"),
        worker(redis_app, concurrency=2) as controller,
    ):
        prefetch = qos_prefetch(controller, redis_app, tmp_path)
    assert prefetch == 2
    (record,) = [r for r in caplog.records if r.getMessage().startswith("batching:")]
    assert record.levelno == logging.WARNING
    assert "batches cannot fill" in record.getMessage()
    assert "worker_prefetch_multiplier=250" in record.getMessage()


def test_nothing_batched_leaves_the_prefetch_alone(
    redis_app: Celery, factory: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    demo_events(celery=redis_app, session_factory=factory, sender=OutboxSender(), batch_window=0)
    with (
        caplog.at_level(logging.INFO, logger="emailevents"),
        worker(redis_app, concurrency=2) as controller,
    ):
        prefetch = qos_prefetch(controller, redis_app, tmp_path)
    assert prefetch == 2
    assert not [r for r in caplog.records if r.getMessage().startswith("batching:")]
