"""PostmarkSender: the real postmarker client against the local Postmark-compatible server.

Every fault comes from a real server over HTTP: ``FakePostmark`` and its ``faults``, a port
nobody listens on, a listening socket that never accepts, and (for answers FakePostmark never
gives, such as a proxy's HTML error page) a small canned HTTP server below.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, Reason, Status
from emailevents.demo import DEMO_TEMPLATES, hooks, models, seed
from emailevents.demo.run import REGISTRY
from emailevents.errors import ConfigurationError
from emailevents.senders.base import Message, SendResult, SendStatus
from emailevents.senders.postmark import (
    DEFAULT_API_URL,
    ERROR_CODES,
    PostmarkSender,
    outcome_of_error_code,
)
from emailevents.store import deliveries
from emailevents.testing import Runs, memory_app, worker
from emailevents.testing.fake_postmark import FakePostmark
from tests.appmodule import app_module

TOKEN = "test-token"
DOC = Path(__file__).parent.parent / "docs" / "postmark.md"
FROM = "Acme Notifications <notifications@acme.test>"
FINDING_MODEL = {
    "subject": "New finding in Acme Risk: PD backtest misses 2025",
    "org_name": "Acme Risk",
    "actor_name": "Vera Nakamura",
    "finding_title": "PD backtest misses 2025",
    "severity": "high",
    "model_name": "Retail Credit PD Model",
    "url": "https://acme.acme.test/findings/f1",
}


def message(
    to: str = "owen@acme.test",
    *,
    template: int | str = "model-finding-created",
    model: dict[str, Any] | None = None,
    event_id: str = "ev-1",
) -> Message:
    return Message(
        event_key="model_finding_created",
        event_id=event_id,
        to=to,
        from_=FROM,
        template=template,
        template_model=FINDING_MODEL if model is None else model,
        tag="model_finding_created",
        metadata={"event_id": event_id},
    )


def people(n: int) -> list[Message]:
    return [message(f"member{i:04d}@acme.test") for i in range(n)]


def statuses(results: Sequence[SendResult]) -> list[SendStatus]:
    return [r.status for r in results]


@pytest.fixture
def sender(fake_postmark: FakePostmark) -> PostmarkSender:
    return PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=5)


@pytest.fixture
def no_postmark_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("POSTMARK_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("POSTMARK_API_URL", raising=False)
    return monkeypatch


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [None, "", "   \n"])
def test_a_missing_token_is_a_configuration_error_naming_the_variable_where_it_is_needed(
    no_postmark_env: pytest.MonkeyPatch, fake_postmark: FakePostmark, given: str | None
) -> None:
    sender = PostmarkSender(given, api_url=fake_postmark.url)  # a process that only emits
    with pytest.raises(ConfigurationError, match="set the POSTMARK_SERVER_TOKEN environment"):
        sender.check()
    with pytest.raises(ConfigurationError, match="POSTMARK_SERVER_TOKEN"):
        sender.send([message()])
    assert sender.find_sent("ev-1", ["owen@acme.test"]) is None  # "cannot tell", as promised
    assert fake_postmark.requests == []
    no_postmark_env.setenv("POSTMARK_SERVER_TOKEN", "")
    with pytest.raises(ConfigurationError, match="set the POSTMARK_SERVER_TOKEN environment"):
        sender.check()


def test_the_environments_token_is_read_when_first_needed(
    no_postmark_env: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> None:
    sender = PostmarkSender(api_url=fake_postmark.url)
    no_postmark_env.setenv("POSTMARK_SERVER_TOKEN", TOKEN)
    assert statuses(sender.send([message()])) == [SendStatus.SENT]
    no_postmark_env.setenv("POSTMARK_SERVER_TOKEN", "changed-later")
    assert statuses(sender.send([message()])) == [SendStatus.SENT]  # read once, then kept


@pytest.mark.parametrize("given", [None, ""])
def test_token_and_url_come_from_the_environment(
    no_postmark_env: pytest.MonkeyPatch, fake_postmark: FakePostmark, given: str | None
) -> None:
    no_postmark_env.setenv("POSTMARK_SERVER_TOKEN", TOKEN)
    no_postmark_env.setenv("POSTMARK_API_URL", fake_postmark.url.rstrip("/"))
    sender = PostmarkSender(given, api_url=given)
    assert sender.api_url == fake_postmark.url
    assert statuses(sender.send([message()])) == [SendStatus.SENT]


def test_arguments_win_over_the_environment(
    no_postmark_env: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> None:
    no_postmark_env.setenv("POSTMARK_SERVER_TOKEN", "not-the-token")
    no_postmark_env.setenv("POSTMARK_API_URL", "http://127.0.0.1:9/")
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url)
    assert statuses(sender.send([message()])) == [SendStatus.SENT]


def test_the_url_defaults_to_postmarks_own(no_postmark_env: pytest.MonkeyPatch) -> None:
    assert PostmarkSender(TOKEN).api_url == DEFAULT_API_URL == "https://api.postmarkapp.com/"


def test_a_token_read_with_its_newline_is_trimmed(fake_postmark: FakePostmark) -> None:
    sender = PostmarkSender(f" {TOKEN}\n", api_url=fake_postmark.url)
    assert statuses(sender.send([message()])) == [SendStatus.SENT]


@pytest.mark.parametrize("token", ["test token", "tök-3n", "tok\ten"])
def test_a_token_that_cannot_be_a_header_is_refused_without_echoing_it(
    no_postmark_env: pytest.MonkeyPatch, token: str
) -> None:
    with pytest.raises(ConfigurationError, match="server_token has spaces") as error:
        PostmarkSender(token)  # given: checked at once
    assert token not in str(error.value)
    no_postmark_env.setenv("POSTMARK_SERVER_TOKEN", token)
    sender = PostmarkSender()  # from the environment: checked where it is needed
    for needs_it in (sender.check, lambda: sender.send([message()]), lambda: sender.client):
        with pytest.raises(ConfigurationError, match="POSTMARK_SERVER_TOKEN has spaces") as error:
            needs_it()
        assert token not in str(error.value)


@pytest.mark.parametrize("url", ["localhost:9025", "ftp://postmark.test/", "http://", "9025"])
def test_an_api_url_that_is_not_http_is_a_configuration_error(
    no_postmark_env: pytest.MonkeyPatch, url: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"api_url must be Postmark's API URL"):
        PostmarkSender(TOKEN, api_url=url)
    no_postmark_env.setenv("POSTMARK_API_URL", url)
    with pytest.raises(ConfigurationError, match=r"POSTMARK_API_URL must be Postmark's API URL"):
        PostmarkSender(TOKEN)


@pytest.mark.parametrize("timeout", [0, -1.0, True])
def test_a_timeout_must_be_a_positive_number(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        PostmarkSender(TOKEN, timeout=timeout)


# -- what is sent ----------------------------------------------------------------------------------


def test_one_message_is_one_clean_template_send(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    (result,) = sender.send([message()])
    assert fake_postmark.requests == [("POST", "/email/withTemplate")]
    (received,) = fake_postmark.messages
    # Exactly what we built: no explicit nulls, no TrackLinks overriding the server's setting.
    assert received.request == {
        "TemplateAlias": "model-finding-created",
        "TemplateModel": FINDING_MODEL,
        "From": FROM,
        "To": "owen@acme.test",
        "MessageStream": "outbound",
        "Tag": "model_finding_created",
        "Metadata": {"event_id": "ev-1"},
    }
    assert result == SendResult(SendStatus.SENT, message_id=received.message_id)
    assert received.subject == "New finding in Acme Risk: PD backtest misses 2025"
    assert "PD backtest misses 2025" in (received.html_body or "")
    assert "Acme Risk" in (received.text_body or "")


def test_a_template_id_is_sent_as_TemplateId_and_an_empty_model_is_still_sent(  # noqa: N802
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    (template,) = [t for t in fake_postmark.templates if t.alias == "user-invited"]
    (result,) = sender.send([message(template=template.template_id, model={})])
    assert result.ok
    (received,) = fake_postmark.messages
    assert received.request["TemplateId"] == template.template_id
    assert "TemplateAlias" not in received.request
    assert received.request["TemplateModel"] == {}


def test_a_message_without_tag_or_metadata_sends_neither(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    bare = Message("e", "ev", "owen@acme.test", FROM, "user-invited", {"subject": "Hi"})
    assert sender.send([bare])[0].ok
    assert set(fake_postmark.messages[0].request) == {
        "TemplateAlias",
        "TemplateModel",
        "From",
        "To",
        "MessageStream",
    }


def test_several_messages_are_one_batch_answered_in_order(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    results = sender.send(people(3))
    assert fake_postmark.requests == [("POST", "/email/batchWithTemplates")]
    assert [m.to for m in fake_postmark.messages] == [f"member{i:04d}@acme.test" for i in range(3)]
    assert [r.message_id for r in results] == [m.message_id for m in fake_postmark.messages]


def test_1201_recipients_are_three_batches_and_every_result_is_kept(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_recipients({"member1100@acme.test": 406})
    results = sender.send(people(1201))
    assert fake_postmark.requests == [("POST", "/email/batchWithTemplates")] * 3
    assert len(results) == 1201
    assert (
        statuses(results)
        == [SendStatus.SENT] * 1100 + [SendStatus.PERMANENT] + [SendStatus.SENT] * 100
    )
    # The three requests went out at once (concurrency 4): each result is still its message's.
    to_of = {m.message_id: m.to for m in fake_postmark.messages}
    assert [to_of.get(r.message_id) for r in results if r.ok] == [
        f"member{i:04d}@acme.test" for i in range(1201) if i != 1100
    ]
    assert len(to_of) == 1200


class Rendezvous(PostmarkSender):
    """Holds each chunk until ``parties`` chunks are in flight together (or fails the send)."""

    def __init__(self, server: FakePostmark, parties: int, **kwargs: Any) -> None:
        super().__init__(TOKEN, api_url=server.url, timeout=5, **kwargs)
        self.barrier = threading.Barrier(parties, timeout=10)
        self.threads: set[int] = set()

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        self.threads.add(threading.get_ident())
        self.barrier.wait()
        return super().send_batch(messages)


def test_the_chunks_of_a_fan_out_are_in_flight_together(fake_postmark: FakePostmark) -> None:
    sender = Rendezvous(fake_postmark, parties=3, concurrency=3)
    results = sender.send(people(1500))
    assert len(sender.threads) == 3
    assert statuses(results) == [SendStatus.SENT] * 1500
    to_of = {m.message_id: m.to for m in fake_postmark.messages}
    assert [to_of[r.message_id] for r in results] == [m.to for m in people(1500)]


def test_with_concurrency_1_the_chunks_go_one_after_the_other(
    fake_postmark: FakePostmark,
) -> None:
    sender = Rendezvous(fake_postmark, parties=1, concurrency=1)
    assert statuses(sender.send(people(1001))) == [SendStatus.SENT] * 1001
    assert len(sender.threads) == 1
    assert [m.to for m in fake_postmark.messages] == [m.to for m in people(1001)]


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_concurrency_must_be_a_whole_positive_number(concurrency: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"concurrency=\.\.\.\) takes a whole number"):
        PostmarkSender(TOKEN, concurrency=concurrency)


class FaultBeforeChunk(PostmarkSender):
    """Queues a fault on the fake server just before the n-th chunk goes (a test hook)."""

    def __init__(self, server: FakePostmark, chunk: int, **fault: Any) -> None:
        # One chunk after the other, so that the fault meets the chunk it was queued for.
        super().__init__(TOKEN, api_url=server.url, timeout=5, concurrency=1)
        self.server, self.chunk, self.fault, self.chunks = server, chunk, fault, 0

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        self.chunks += 1
        if self.chunks == self.chunk:
            self.server.faults.fail_next(**self.fault)
        return super().send_batch(messages)


def test_a_500_on_the_second_chunk_fails_only_that_chunk(fake_postmark: FakePostmark) -> None:
    sender = FaultBeforeChunk(fake_postmark, chunk=2, status=500)
    fake_postmark.faults.fail_recipients({"member0007@acme.test": 406})
    results = sender.send(people(1201))
    assert len(results) == 1201
    assert (
        statuses(results[:500])
        == [SendStatus.SENT] * 7 + [SendStatus.PERMANENT] + [SendStatus.SENT] * 492
    )
    assert statuses(results[500:1000]) == [SendStatus.TRANSIENT] * 500
    assert statuses(results[1000:]) == [SendStatus.SENT] * 201
    assert results[7].error_code == 406
    assert results[500].detail.startswith("HTTP 500")
    assert len(fake_postmark.messages) == 499 + 201
    assert {m.to for m in fake_postmark.messages}.isdisjoint(
        {f"member{i:04d}@acme.test" for i in range(500, 1000)}
    )


def test_some_inactive_recipients_in_a_batch_fail_alone(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_recipients({"member0001@acme.test": 406, "member0003@acme.test": 406})
    results = sender.send(people(5))
    assert statuses(results) == [
        SendStatus.SENT,
        SendStatus.PERMANENT,
        SendStatus.SENT,
        SendStatus.PERMANENT,
        SendStatus.SENT,
    ]
    assert [r.error_code for r in results] == [None, 406, None, 406, None]
    assert "member0001@acme.test" in results[1].detail
    assert results[1].message_id is None
    assert len(fake_postmark.messages) == 3


def test_an_accepted_message_naming_inactive_addresses_says_which(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_recipients({"b@acme.test": 406})
    (result,) = sender.send([message("a@acme.test, b@acme.test")])
    # Postmark: ErrorCode 0, "Message OK, but will not deliver to these inactive addresses: ..."
    assert result.status is SendStatus.SENT
    assert result.message_id == fake_postmark.messages[0].message_id
    assert "will not deliver to these inactive addresses: b@acme.test" in result.detail


def test_a_message_that_cannot_be_json_fails_alone(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    results = sender.send(
        [message("a@acme.test"), message("b@acme.test", model={"n": float("nan")})]
    )
    assert statuses(results) == [SendStatus.SENT, SendStatus.PERMANENT]
    assert "cannot be sent as JSON" in results[1].detail
    assert fake_postmark.requests == [("POST", "/email/withTemplate")]
    results = sender.send(
        [message("c@acme.test"), message("d@acme.test", model={"s": {1}}), message("e@acme.test")]
    )
    assert statuses(results) == [SendStatus.SENT, SendStatus.PERMANENT, SendStatus.SENT]
    assert fake_postmark.requests[-1] == ("POST", "/email/batchWithTemplates")
    assert [m.to for m in fake_postmark.messages] == ["a@acme.test", "c@acme.test", "e@acme.test"]


def test_nothing_to_send_sends_nothing(sender: PostmarkSender, fake_postmark: FakePostmark) -> None:
    assert sender.send([]) == []
    assert fake_postmark.requests == []


# -- faults and outcomes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "outcome"), [(c, o) for c, (o, _) in ERROR_CODES.items()])
@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_each_error_code_becomes_its_outcome_for_every_message(
    sender: PostmarkSender,
    fake_postmark: FakePostmark,
    code: int,
    outcome: SendStatus,
    count: int,
) -> None:
    fake_postmark.faults.fail_next(status=401 if code == 10 else 422, error_code=code)
    results = sender.send(people(count))
    assert statuses(results) == [outcome] * count
    assert {r.error_code for r in results} == {code}
    assert fake_postmark.messages == []


@pytest.mark.parametrize(
    ("status", "error_code"), [(429, 429), (500, 500), (502, None), (503, 100)]
)
@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_http_429_and_5xx_are_transient(
    sender: PostmarkSender,
    fake_postmark: FakePostmark,
    status: int,
    error_code: int | None,
    count: int,
) -> None:
    fake_postmark.faults.fail_next(status=status)
    results = sender.send(people(count))
    assert statuses(results) == [SendStatus.TRANSIENT] * count
    assert results[0].detail.startswith(f"HTTP {status}")
    assert results[0].error_code == (error_code or status)
    assert fake_postmark.messages == []


def test_a_5xx_is_transient_whatever_errorcode_it_carries() -> None:
    assert outcome_of_error_code(406, 503) is SendStatus.TRANSIENT
    assert outcome_of_error_code(None, 429) is SendStatus.TRANSIENT
    assert outcome_of_error_code(9999, 422) is SendStatus.PERMANENT
    assert outcome_of_error_code(9999, 401) is SendStatus.CONFIGURATION


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (300, SendStatus.PERMANENT),
        (405, SendStatus.CONFIGURATION),
        (406, SendStatus.PERMANENT),
        (412, SendStatus.CONFIGURATION),
        (413, SendStatus.CONFIGURATION),
    ],
)
def test_postmarks_per_recipient_refusals(
    sender: PostmarkSender, fake_postmark: FakePostmark, code: int, outcome: SendStatus
) -> None:
    fake_postmark.faults.fail_recipients({"member0001@acme.test": code})
    (alone,) = sender.send([message("member0001@acme.test")])
    assert (alone.status, alone.error_code) == (outcome, code)
    in_batch = sender.send(people(3))
    assert statuses(in_batch) == [SendStatus.SENT, outcome, SendStatus.SENT]
    assert in_batch[1].error_code == code


def test_an_unknown_template_is_permanent(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    (result,) = sender.send([message(template="no-such-template")])
    assert (result.status, result.error_code) == (SendStatus.PERMANENT, 1101)
    assert "not valid or was not found" in result.detail


def test_a_wrong_token_is_a_configuration_failure(fake_postmark: FakePostmark) -> None:
    sender = PostmarkSender("wrong-token", api_url=fake_postmark.url)
    results = sender.send(people(2))
    assert statuses(results) == [SendStatus.CONFIGURATION] * 2
    assert results[0].error_code == 10
    assert results[0].detail.startswith("HTTP 401: No Account or Server API tokens")


def test_a_url_that_is_not_postmarks_api_is_a_configuration_failure(
    fake_postmark: FakePostmark,
) -> None:
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url + "v2/")  # 404 for every endpoint
    (result,) = sender.send([message()])
    assert result.status is SendStatus.CONFIGURATION
    assert fake_postmark.requests == [("POST", "/v2/email/withTemplate")]


def test_a_connection_refused_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = PostmarkSender(TOKEN, api_url=f"http://127.0.0.1:{port}/", timeout=1)
    results = sender.send(people(2))
    assert statuses(results) == [SendStatus.TRANSIENT] * 2
    assert results[0].detail == f"could not connect to 127.0.0.1:{port}: ConnectionError"


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_a_proxy_in_the_environment_is_used(
    fake_postmark: FakePostmark, no_proxy_env: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a proxy nobody listens for
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=1)
    (result,) = sender.send([message()])
    assert result.status is SendStatus.TRANSIENT
    assert fake_postmark.messages == []


def test_no_proxy_in_the_environment_is_honoured(
    fake_postmark: FakePostmark, no_proxy_env: pytest.MonkeyPatch
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=1)
    assert sender.send([message()])[0].ok


def test_a_ca_bundle_in_the_environment_is_used(
    fake_postmark: FakePostmark, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/company-ca.pem")
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url)
    assert sender.client.session.verify == "/etc/ssl/certs/company-ca.pem"


def test_a_connect_timeout_is_transient() -> None:
    # A socket that listens but never accepts: once its backlog is full, new connections hang.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filling = [socket.socket() for _ in range(3)]
        for s in filling:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        try:
            sender = PostmarkSender(TOKEN, api_url=f"http://127.0.0.1:{port}/", timeout=0.2)
            (result,) = sender.send([message()])
        finally:
            for s in filling:
                s.close()
    assert result.status is SendStatus.TRANSIENT
    assert result.detail.endswith("ConnectTimeout")


def test_a_timeout_after_postmark_accepted_is_unknown(fake_postmark: FakePostmark) -> None:
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=0.2)
    fake_postmark.faults.fail_next(timeout=1, accept=True)
    (result,) = sender.send([message()])
    assert result.status is SendStatus.UNKNOWN
    assert result.detail.endswith("ReadTimeout")
    assert len(fake_postmark.messages) == 1  # it was sent: resending would send it twice


def test_a_timeout_with_nothing_accepted_is_unknown_too(fake_postmark: FakePostmark) -> None:
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=0.2)
    fake_postmark.faults.fail_next(timeout=1)
    results = sender.send(people(2))
    # The client cannot tell this from the case above.
    assert statuses(results) == [SendStatus.UNKNOWN] * 2
    assert fake_postmark.messages == []


def test_a_connection_dropped_without_an_answer_is_unknown(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_next(timeout=0.05)  # held briefly, then closed unanswered
    (result,) = sender.send([message()])
    assert result.status is SendStatus.UNKNOWN
    assert result.detail.endswith("ConnectionError")


def test_every_fault_rate_outcome_is_one_of_the_expected(fake_postmark: FakePostmark) -> None:
    sender = PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=0.1)
    fake_postmark.faults.fail_rate(0.5, seed=7, timeout=0.3)
    results = [sender.send([message(f"r{i}@acme.test")])[0] for i in range(20)]
    # 500 and 429 are transient; a held answer is unknown whether Postmark kept the message or not.
    assert set(statuses(results)) == {SendStatus.SENT, SendStatus.TRANSIENT, SendStatus.UNKNOWN}
    sent = {r.message_id for r in results if r.ok}
    kept = {m.message_id for m in fake_postmark.messages}
    assert sent < kept  # some "unknown" ones were in fact accepted


# -- answers FakePostmark never gives: a canned HTTP server ----------------------------------------


class Canned(ThreadingHTTPServer):
    """Answers every request with one fixed status, content type and body."""

    daemon_threads = True

    def __init__(self, status: int, body: Any, content_type: str = "application/json") -> None:
        self.answer = (status, body if isinstance(body, str) else json.dumps(body), content_type)
        super().__init__(("127.0.0.1", 0), CannedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class CannedHandler(BaseHTTPRequestHandler):
    server: Canned
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body, content_type = self.server.answer
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def canned(status: int, body: Any, content_type: str = "application/json") -> Iterator[str]:
    server = Canned(status, body, content_type)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


ACCEPTED = {"To": "owen@acme.test", "SubmittedAt": "2016-10-15T14:42:56-04:00", "MessageID": "m-1"}


@pytest.mark.parametrize(
    ("status", "body", "content_type", "count", "outcome", "detail"),
    [
        # A proxy or load balancer in front of Postmark.
        (502, "<html>Bad Gateway</html>", "text/html", 1, SendStatus.TRANSIENT, "HTTP 502 from"),
        (404, "<html>Not Found</html>", "text/html", 2, SendStatus.CONFIGURATION, "HTTP 404"),
        (400, "<html>Bad Request</html>", "text/html", 1, SendStatus.PERMANENT, "HTTP 400"),
        # JSON errors without an ErrorCode.
        (422, {"Message": "nope"}, "application/json", 1, SendStatus.PERMANENT, "without a"),
        (503, {"Message": "busy"}, "application/json", 2, SendStatus.TRANSIENT, "HTTP 503"),
        # A success that is not JSON, or that has no MessageID: it may have been sent.
        (200, "OK", "text/plain", 1, SendStatus.UNKNOWN, "no answer from"),
        (200, {"ErrorCode": 0, "Message": "OK"}, "application/json", 1, SendStatus.UNKNOWN, "no"),
        # A batch answered with the wrong number of results.
        (200, [{**ACCEPTED, "ErrorCode": 0}], "application/json", 2, SendStatus.UNKNOWN, "a batch"),
        (200, {"Messages": []}, "application/json", 2, SendStatus.UNKNOWN, "a batch of 2"),
    ],
)
def test_answers_from_something_other_than_postmarks_api(  # noqa: PLR0917
    status: int, body: Any, content_type: str, count: int, outcome: SendStatus, detail: str
) -> None:
    with canned(status, body, content_type) as url:
        results = PostmarkSender(TOKEN, api_url=url, timeout=2).send(people(count))
    assert statuses(results) == [outcome] * count
    assert detail in results[0].detail


def test_accepted_but_delayed_is_sent() -> None:
    # Postmark: a 200 without ErrorCode, "Message accepted, but delivery may be delayed."
    delayed = {**ACCEPTED, "Message": "Message accepted, but delivery may be delayed."}
    with canned(200, delayed) as url:
        (result,) = PostmarkSender(TOKEN, api_url=url).send([message()])
    assert result == SendResult(SendStatus.SENT, message_id="m-1", detail=delayed["Message"])


def test_an_accepted_message_whose_only_recipient_is_inactive_is_permanent() -> None:
    answer = {
        **ACCEPTED,
        "ErrorCode": 0,
        "Message": "Message OK, but will not deliver to these inactive addresses: owen@acme.test.",
    }
    with canned(200, answer) as url:
        (result,) = PostmarkSender(TOKEN, api_url=url).send([message("Owen <OWEN@acme.test>")])
    assert (result.status, result.error_code, result.message_id) == (
        SendStatus.PERMANENT,
        406,
        "m-1",
    )


def test_a_token_an_answer_repeats_is_cut_from_the_detail() -> None:
    with canned(422, {"ErrorCode": 300, "Message": f"bad token {TOKEN}?"}) as url:
        (result,) = PostmarkSender(TOKEN, api_url=url).send([message()])
    assert result.detail == "HTTP 422: bad token <hidden>?"


# -- one client per thread and per process ---------------------------------------------------------


def test_the_client_is_created_on_first_use_once_per_thread(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    assert not hasattr(sender._local, "client")
    assert fake_postmark.requests == []
    first = sender.client
    sender.send([message()])
    assert sender.client is first
    others: list[Any] = []

    def in_a_thread() -> None:
        others.append(sender.client)
        others.append(sender.send([message("thread@acme.test")])[0])

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert others[0] is not first
    assert others[1].ok
    assert sender.client is first


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_worker_process_gets_a_client_of_its_own(
    sender: PostmarkSender, fake_postmark: FakePostmark
) -> None:
    parent = sender.client
    assert sender.send([message("parent@acme.test")])[0].ok  # the session holds a connection
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when its own client sent the message
        code = 1
        try:
            fresh = sender.client is not parent
            code = 0 if fresh and sender.send([message("child@acme.test")])[0].ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sender.send([message("parent-again@acme.test")])[0].ok
    assert [m.to for m in fake_postmark.messages] == [
        "parent@acme.test",
        "child@acme.test",
        "parent-again@acme.test",
    ]


# -- the token stays secret ------------------------------------------------------------------------

SECRET = "5ecret-70ken-d41d8cd98f00"


@pytest.fixture
def secret_postmark() -> Iterator[FakePostmark]:
    with FakePostmark(tokens=(SECRET,), templates=DEMO_TEMPLATES) as server:
        yield server


def test_the_token_is_in_no_repr(secret_postmark: FakePostmark) -> None:
    sender = PostmarkSender(SECRET, api_url=secret_postmark.url)
    client = sender.client
    shown = [repr(sender), str(sender), repr(client), str(client), repr(vars(sender))]
    shown += [repr(vars(client)), repr(vars(sender._local))]
    assert not [s for s in shown if SECRET in s]
    assert repr(sender) == f"PostmarkSender(api_url={secret_postmark.url!r})"
    assert client.server_token == SECRET  # what postmarker puts in the header


def every_kind_of_failure(server: FakePostmark, senders: dict[str, PostmarkSender]) -> list[Any]:
    """Send through each failure class (and a success); return every result."""
    sender = senders["right"]
    results = sender.send(people(2))
    for code in ERROR_CODES:
        server.faults.fail_next(status=422, error_code=code)
        results += sender.send(people(2))
    for status in (401, 429, 500, 503):
        server.faults.fail_next(status=status)
        results += sender.send([message()])
    server.faults.fail_recipients({"member0001@acme.test": 406, "b@acme.test": 406})
    results += sender.send(people(3)) + sender.send([message("a@acme.test, b@acme.test")])
    server.faults.fail_next(timeout=1, accept=True)
    results += sender.send([message()])
    server.faults.fail_next(timeout=0.05)
    results += sender.send([message()])
    results += sender.send([message(template="no-such-template")])
    results += sender.send([message(model={"n": float("inf")})])
    for other in ("unreachable", "wrong path", "wrong token"):
        results += senders[other].send([message()])
    return results


def test_the_token_is_in_no_result_log_record_or_output(
    secret_postmark: FakePostmark,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    senders = {
        "right": PostmarkSender(SECRET, api_url=secret_postmark.url, timeout=0.2),
        "unreachable": PostmarkSender(SECRET, api_url=unreachable, timeout=0.2),
        "wrong path": PostmarkSender(SECRET, api_url=secret_postmark.url + "v2/"),
        "wrong token": PostmarkSender(SECRET + "x", api_url=secret_postmark.url),
    }
    for sender in senders.values():
        sender.client  # noqa: B018 - created first: postmarker resets its logger's level here
    # Then every logger at DEBUG: the root, and postmarker's, requests' and urllib3's own.
    for name in (None, "Postmarker", "urllib3", "requests", "emailevents"):
        caplog.set_level(logging.DEBUG, logger=name)

    results = every_kind_of_failure(secret_postmark, senders)

    assert {r.status for r in results} == set(SendStatus)
    assert not [r for r in results if SECRET in repr(r)]
    records = caplog.records
    assert any(r.name.startswith("urllib3") for r in records)  # the capture did capture
    logged = [logging.Formatter().format(r) + repr(r.args) + repr(vars(r)) for r in records]
    assert not [line for line in logged if SECRET in line]
    # postmarker's request and answer logs (bodies: names, addresses) stay off.
    assert not [r for r in records if r.name == "Postmarker"]
    out, err = capfd.readouterr()
    assert SECRET not in out + err
    assert "Request: POST" not in out + err


def test_postmarkers_body_logging_stays_off_even_when_its_logger_is_turned_on(
    sender: PostmarkSender, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    sender.client  # noqa: B018 - postmarker sets up (and resets) its "Postmarker" logger here
    postmarker = logging.getLogger("Postmarker")
    caplog.set_level(logging.DEBUG, logger="Postmarker")
    assert postmarker.isEnabledFor(logging.DEBUG)
    assert sender.send([message()])[0].ok
    assert [r for r in caplog.records if r.name == "Postmarker"] == []
    out, err = capfd.readouterr()
    assert "owen@acme.test" not in out + err


# -- the pipeline: a real Celery worker, the delivery log ------------------------------------------


@dataclass
class App:
    events: EmailEvents
    world: seed.DemoWorld
    session_factory: sessionmaker[Session]
    sender: PostmarkSender
    celery: Celery

    def log(self, event_id: str) -> list[tuple[Any, ...]]:
        with self.session_factory() as session:
            rows = session.execute(
                sa.select(
                    deliveries.c.recipient,
                    deliveries.c.status,
                    deliveries.c.reason,
                    deliveries.c.detail,
                    deliveries.c.message_id,
                )
                .where(deliveries.c.event_id == event_id)
                .order_by(deliveries.c.recipient)
            )
            return [tuple(row) for row in rows]


def make_app(engine: sa.Engine, sender: PostmarkSender, **context: Any) -> App:
    models.Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    celery = memory_app()
    events = EmailEvents(
        REGISTRY,
        celery=celery,
        session_factory=factory,
        sender=sender,
        context={"site_url": hooks.site_url, **context},
        set_default=False,
    )
    events.create_tables(engine)
    with factory() as session:
        world = seed.seed(session)
        for org, key in seed.toggles_off(world):
            events.set_toggle(session, org, key, enabled=False)
        session.commit()
    return App(events, world, factory, sender, celery)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'test.sqlite3'}", connect_args={"timeout": 30}
    )
    yield engine
    engine.dispose()


def test_the_seed_events_go_through_a_real_worker_to_postmark_rendered(
    sqlite_engine: sa.Engine, fake_postmark: FakePostmark
) -> None:
    app = make_app(sqlite_engine, PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=5))
    with Runs() as runs, worker(app.celery):
        receipts = [app.events.emit(key, **cuids) for key, cuids in seed.emits(app.world)]
        results = runs.wait(*receipts, timeout=30)

    received = fake_postmark.messages
    assert len(received) == 1 + 1 + 1 + 1 + 1 + 1 + 3 + 1 + 1 + 31
    singles = [("POST", "/email/withTemplate")] * 8
    batches = [("POST", "/email/batchWithTemplates")] * 2
    assert sorted(fake_postmark.requests) == sorted(singles + batches)
    by_tag: dict[str, list[Any]] = {}
    for m in received:
        by_tag.setdefault(m.tag or "", []).append(m)
    receipt_of = {r.event_key: r for r in receipts[:11]}
    for tag, sent in by_tag.items():
        assert {m.metadata["event_id"] for m in sent} == {receipt_of[tag].event_id}
        assert {m.from_ for m in sent} == {FROM}
        assert {m.message_stream for m in sent} == {"outbound"}

    (finding,) = by_tag["model_finding_created"]
    title = "PD backtest does not cover the 2025 default cohort"
    assert finding.to == "owen@acme.test"
    assert finding.subject == f"New finding in Acme Risk: {title}"
    for body in (finding.html_body or "", finding.text_body or ""):
        assert title in body
        assert "Acme Risk" in body
        assert "Vera Nakamura" in body
        assert "Retail Credit PD Model" in body
        assert f"https://acme.acme.test/findings/{app.world.finding}" in body
    (invited,) = by_tag["user_invited"]
    assert invited.subject == "Ada Lovelace invited you to Acme Risk"
    assert "invited you to join <strong>Acme Risk</strong> as validator" in (
        invited.html_body or ""
    )
    assert "Ada Lovelace invited you to join Acme Risk as validator" in (invited.text_body or "")
    comments = by_tag["model_comment_added"]
    assert sorted(m.to for m in comments) == ["owen@acme.test", "priya@acme.test", "sam@acme.test"]
    assert {m.subject for m in comments} == {"Vera Nakamura commented on Retail Credit PD Model"}
    assert all("Calibration" in (m.text_body or "") for m in comments)
    broadcast = by_tag["broadcast_notification"]
    assert len({m.to for m in broadcast}) == 31
    assert {m.subject for m in broadcast} == {"[Acme Risk] Model inventory maintenance on Saturday"}
    assert all(
        "Sent by Ada Lovelace to every member of Acme Risk" in (m.text_body or "")
        for m in broadcast
    )
    assert "inventory_model_monitoring_breach" not in by_tag

    # Every sent outcome carries Postmark's MessageID, and the delivery log has it too.
    sent = [o for r in results for o in r.with_status(Status.SENT)]
    assert len(sent) == len(received)
    assert {o.message_id for o in sent} == {m.message_id for m in received}
    (row,) = app.log(receipt_of["model_finding_created"].event_id)
    assert row == ("owen@acme.test", "sent", "sent", "", finding.message_id)


TOKENLESS_APP = """
import os
from pathlib import Path

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import sessionmaker

from emailevents import EmailEvents, PostmarkSender
from emailevents.demo import hooks
from emailevents.demo.run import REGISTRY

HERE = Path(__file__).parent
celery = Celery("tokenless", broker="filesystem://", set_as_current=False)
celery.conf.broker_transport_options = {
    "data_folder_in": str(HERE / "broker"),
    "data_folder_out": str(HERE / "broker"),
    "control_folder": str(HERE / "broker" / "control"),
    "polling_interval": 0.05,
}
engine = sa.create_engine(f"sqlite:///{HERE / 'app.sqlite3'}")
events = EmailEvents(
    REGISTRY,
    celery=celery,
    session_factory=sessionmaker(engine),
    sender=PostmarkSender(),  # POSTMARK_SERVER_TOKEN and POSTMARK_API_URL, where mail is sent
    context={"site_url": hooks.site_url},
)
"""


@pytest.fixture
def tokenless_app(
    tmp_path: Path, no_postmark_env: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> Iterator[Any]:
    """An application module whose PostmarkSender gets no token; the environment has none."""
    (tmp_path / "broker").mkdir()
    no_postmark_env.setenv("POSTMARK_API_URL", fake_postmark.url)
    # Importing the app needs no token.
    with app_module(tmp_path, TOKENLESS_APP, no_postmark_env, prefix="tokenless") as module:
        models.Base.metadata.create_all(module.engine)
        module.events.create_tables(module.engine)
        with module.events.session_factory() as session:
            module.world = seed.seed(session)
            session.commit()
        yield module


def test_a_process_that_only_emits_needs_no_token_and_a_worker_without_one_records_why(
    tokenless_app: Any, fake_postmark: FakePostmark, tmp_path: Path
) -> None:
    key, cuids = seed.emits(tokenless_app.world)[5]  # model_finding_created -> owen@acme.test
    script = (
        f"import {tokenless_app.__name__} as app; "
        f"print(app.events.emit({key!r}, **{cuids!r}).event_id)"
    )
    emitting = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "POSTMARK_SERVER_TOKEN"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert emitting.returncode == 0, emitting.stderr
    event_id = emitting.stdout.strip()

    with Runs() as runs, worker(tokenless_app.celery):
        (result,) = runs.wait(event_id)

    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == (Status.FAILED, Reason.CONFIGURATION_ERROR)
    assert "set the POSTMARK_SERVER_TOKEN environment variable" in outcome.detail
    with tokenless_app.events.session_factory() as session:
        row = session.execute(
            sa.select(deliveries.c.status, deliveries.c.reason, deliveries.c.detail).where(
                deliveries.c.event_id == event_id
            )
        ).one()
    assert tuple(row) == ("failed", "configuration_error", outcome.detail)
    assert fake_postmark.requests == []


def test_a_bad_token_in_the_environment_is_recorded_without_showing_it(
    tokenless_app: Any, no_postmark_env: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> None:
    no_postmark_env.setenv("POSTMARK_SERVER_TOKEN", "5ecret 70ken")
    key, cuids = seed.emits(tokenless_app.world)[5]
    (outcome,) = tokenless_app.events.run(key, "ev-bad-token", **cuids).outcomes
    assert (outcome.status, outcome.reason) == (Status.FAILED, Reason.CONFIGURATION_ERROR)
    assert outcome.detail.startswith("the Postmark server token from POSTMARK_SERVER_TOKEN has")
    assert "5ecret" not in outcome.detail
    assert fake_postmark.requests == []


@pytest.fixture
def pipeline(db_engine: sa.Engine, fake_postmark: FakePostmark) -> App:
    return make_app(db_engine, PostmarkSender(TOKEN, api_url=fake_postmark.url, timeout=0.3))


def finding_emit(app: App) -> tuple[str, dict[str, str]]:
    return seed.emits(app.world)[5]  # model_finding_created -> owen@acme.test


def test_an_inactive_recipient_is_recorded_as_rejected(
    pipeline: App, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_recipients({"owen@acme.test": 406})
    key, cuids = finding_emit(pipeline)
    (outcome,) = pipeline.events.run(key, "ev-406", **cuids).outcomes
    assert (outcome.status, outcome.reason) == (Status.FAILED, Reason.REJECTED)
    ((recipient, status, reason, detail, message_id),) = pipeline.log("ev-406")
    assert (recipient, status, reason, message_id) == ("owen@acme.test", "failed", "rejected", None)
    assert detail.startswith("ErrorCode 406: HTTP 422: You tried to send to recipient(s) that have")


@pytest.mark.parametrize("status", [500, 429])
def test_a_5xx_or_429_is_recorded_as_transient(
    pipeline: App, fake_postmark: FakePostmark, status: int
) -> None:
    fake_postmark.faults.fail_next(status=status)
    key, cuids = finding_emit(pipeline)
    (outcome,) = pipeline.events.run(key, "ev-t", **cuids).outcomes
    assert (outcome.status, outcome.reason) == (Status.FAILED, Reason.TRANSIENT_ERROR)
    ((_, row_status, reason, detail, _),) = pipeline.log("ev-t")
    assert (row_status, reason) == ("failed", "transient_error")
    assert f"HTTP {status}" in detail
    assert fake_postmark.messages == []


def test_a_timeout_after_postmark_accepted_is_recorded_unknown_and_never_resent(
    pipeline: App, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_next(timeout=1, accept=True)
    key, cuids = finding_emit(pipeline)
    (outcome,) = pipeline.events.run(key, "ev-unknown", **cuids).outcomes
    assert (outcome.status, outcome.reason) == (Status.UNKNOWN, Reason.NO_ANSWER)
    assert pipeline.log("ev-unknown") == [
        (
            "owen@acme.test",
            "unknown",
            "no_answer",
            "no answer from " + hostport(fake_postmark) + ": ReadTimeout",
            None,
        )
    ]
    (received,) = fake_postmark.messages  # Postmark did take it
    assert received.to == "owen@acme.test"
    requests_before = len(fake_postmark.requests)

    again = pipeline.events.run(key, "ev-unknown", **cuids)
    assert [(o.status, o.reason) for o in again.outcomes] == [
        (Status.SKIPPED, Reason.ALREADY_RECORDED)
    ]
    assert "already unknown (no_answer)" in again.outcomes[0].detail
    assert len(fake_postmark.requests) == requests_before
    assert len(fake_postmark.messages) == 1


def hostport(server: FakePostmark) -> str:
    return f"{server.host}:{server.port}"


def test_a_failing_task_traceback_does_not_show_the_token(
    sqlite_engine: sa.Engine, secret_postmark: FakePostmark, caplog: pytest.LogCaptureFixture
) -> None:
    sender = PostmarkSender(SECRET, api_url=secret_postmark.url)

    def site_url(org: models.Organization) -> str:
        # An application bug that drags the sender, its client and their state into the error.
        raise RuntimeError(
            f"no site for {org.slug}: {sender!r} {sender.client!r} "
            f"{vars(sender)!r} {vars(sender.client)!r}"
        )

    app = make_app(sqlite_engine, sender, site_url=site_url)
    caplog.set_level(logging.DEBUG)
    with Runs() as runs, worker(app.celery):
        key, cuids = seed.emits(app.world)[0]
        receipt = app.events.emit(key, **cuids)
        with pytest.raises(RuntimeError, match="no site for acme") as raised:
            runs.wait(receipt)
    failures = [r for r in caplog.records if r.name == "celery.app.trace"]
    assert failures, "Celery logged no task failure"
    shown = "".join(traceback.format_exception(raised.value))
    shown += "".join(logging.Formatter().format(r) for r in caplog.records)
    assert "RuntimeError: no site for acme: PostmarkSender(api_url=" in shown
    assert SECRET not in shown


# -- docs/postmark.md ------------------------------------------------------------------------------

_ROW = re.compile(r"^\|\s*(?P<code>\d+)\s*\|\s*(?P<outcome>\w+)\s*\|\s*(?P<meaning>.*?)\s*\|\s*$")


def documented_error_codes() -> dict[int, tuple[str, str]]:
    """The rows of the table under the "Postmark's ErrorCodes" heading."""
    after = DOC.read_text(encoding="utf-8").split("### Postmark's ErrorCodes\n", 1)[1]
    lines = after.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start:])
    rows = [_ROW.match(line) for line in table]
    return {int(r["code"]): (r["outcome"], r["meaning"]) for r in rows if r}


def error_code_rows() -> str:
    """The rows docs/postmark.md should have, generated from ERROR_CODES."""
    return "\n".join(
        f"| {code} | {outcome.value} | {meaning} |"
        for code, (outcome, meaning) in sorted(ERROR_CODES.items())
    )


def test_the_docs_list_exactly_the_error_codes_with_their_outcomes() -> None:
    documented = documented_error_codes()
    expected = {code: (o.value, meaning) for code, (o, meaning) in ERROR_CODES.items()}
    assert documented == expected, (
        "docs/postmark.md's ErrorCode table differs from ERROR_CODES; its rows should be:\n"
        + error_code_rows()
    )


def test_the_docs_name_the_settings_and_the_command() -> None:
    text = DOC.read_text(encoding="utf-8")
    for needle in (
        "POSTMARK_SERVER_TOKEN",
        "POSTMARK_API_URL",
        "emailevents fake-postmark",
        "--port",
        "9025",
        "--token",
        "--templates",
        "fail_next",
        "fail_recipients",
        "fail_rate",
    ):
        assert needle in text, needle
