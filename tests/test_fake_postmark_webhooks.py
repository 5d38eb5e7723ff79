"""The local Postmark server after the send: webhooks over real HTTP to a receiver of the test's
own, Postmark's retries, bounces, complaints, suppressions and their API, the webhooks page."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError

from emailevents.testing.fake_postmark import FakePostmark

TOKEN = "test-token"
HEADERS = {"X-Postmark-Server-Token": TOKEN, "Accept": "application/json"}
HARD = "HardBounce@bounce-testing.postmarkapp.com"
INACTIVE = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive "
    "addresses: {}. Inactive recipients are ones that have generated a hard bounce, a spam "
    "complaint, or a manual suppression."
)
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")
FAST = 0.00001  # Postmark's ten retries in 0.4 s


@dataclass
class Receiver:
    """An HTTP server of the test's own: answers each POST as ``script`` says, then 200."""

    url: str
    script: list[int | str] = field(default_factory=list)
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    answered: threading.Event = field(default_factory=threading.Event)
    hold: float = 0.0

    def bodies(self, record_type: str | None = None) -> list[dict[str, Any]]:
        return [b for _, b in self.received if record_type in {None, b["RecordType"]}]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.received.append((dict(self.headers), body))
            action = state.script.pop(0) if state.script else 200
            if state.hold:
                time.sleep(state.hold)
            if action == "timeout":
                time.sleep(0.3)  # longer than the webhook timeout the tests set
                return
            self.send_response(int(action))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    state.url = f"http://hook:s3cret@127.0.0.1:{server.server_address[1]}/postmark"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def postmark(receiver: Receiver) -> Iterator[FakePostmark]:
    with FakePostmark(webhook_url=receiver.url, webhook_retry_scale=FAST) as server:
        server.webhooks.configure(receiver.url, retry_scale=FAST, timeout=0.1)
        yield server


def send(server: FakePostmark, to: str, **fields: Any) -> dict[str, Any]:
    client = PostmarkClient(server_token=TOKEN, root_api_url=server.url)
    message = {"From": "Acme <n@acme.test>", "To": to, "TextBody": "hi", **fields}
    return client.emails.send(**message)  # type: ignore[no-any-return]


def settle(server: FakePostmark) -> None:
    assert server.webhooks.wait(5), "webhooks still on their way"


def api(server: FakePostmark, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, server.url + path, headers=HEADERS, timeout=5, **kwargs)
    return response.json()


# -- Delivery ------------------------------------------------------------------------------------


def test_each_recipient_gets_a_delivery_record_in_postmarks_shape_with_basic_credentials(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    sent = send(
        postmark, "ada@acme.test, bob@acme.test", Tag="user_invited", Metadata={"event_id": "e1"}
    )
    settle(postmark)

    first, second = receiver.received
    headers, body = first
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"hook:s3cret").decode()
    assert headers["Content-Type"] == "application/json"
    assert headers["X-PM-Retries-Remaining"] == "10"
    assert body == {
        "RecordType": "Delivery",
        "ServerID": 1,
        "MessageStream": "outbound",
        "MessageID": sent["MessageID"],
        "Recipient": "ada@acme.test",
        "Tag": "user_invited",
        "DeliveredAt": body["DeliveredAt"],
        "Details": "smtp;250 2.0.0 OK (FakePostmark)",
        "Metadata": {"event_id": "e1"},
    }
    assert ISO_Z.fullmatch(body["DeliveredAt"])
    assert second[1]["Recipient"] == "bob@acme.test"
    assert postmark.webhooks.delivered("Delivery") == [body, second[1]]


def test_webhooks_are_posted_after_the_send_has_been_answered(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    postmark.webhooks.configure(receiver.url, timeout=2)
    receiver.hold = 0.5
    started = time.monotonic()
    send(postmark, "ada@acme.test")
    assert time.monotonic() - started < 0.4  # not waiting for the receiver
    settle(postmark)
    assert len(receiver.received) == 1


def test_only_the_record_types_asked_for_are_posted(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    postmark.webhooks.configure(receiver.url, record_types=["Bounce"], retry_scale=FAST)
    send(postmark, f"ada@acme.test, {HARD}")
    settle(postmark)
    assert [b["RecordType"] for b in receiver.bodies()] == ["Bounce"]


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [500, 503, 408, 429, "timeout"])
def test_a_busy_or_silent_receiver_is_tried_again_with_fewer_retries_remaining(
    postmark: FakePostmark, receiver: Receiver, failure: int | str
) -> None:
    receiver.script = [failure, failure]
    send(postmark, "ada@acme.test")
    settle(postmark)

    remaining = [h["X-PM-Retries-Remaining"] for h, _ in receiver.received]
    assert remaining == ["10", "9", "8"]
    (delivery,) = postmark.webhooks.deliveries
    assert delivery.state == "delivered"
    expected = None if failure == "timeout" else failure
    assert [a.status for a in delivery.attempts] == [expected, expected, 200]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_any_other_client_error_drops_the_record(
    postmark: FakePostmark, receiver: Receiver, status: int
) -> None:
    receiver.script = [status]
    send(postmark, "ada@acme.test")
    settle(postmark)
    (delivery,) = postmark.webhooks.deliveries
    assert (delivery.state, len(receiver.received)) == ("dropped", 1)


def test_after_postmarks_ten_retries_the_record_is_given_up(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    receiver.script = [500] * 20
    send(postmark, "ada@acme.test")
    settle(postmark)
    (delivery,) = postmark.webhooks.deliveries
    assert delivery.state == "failed"
    assert [a.retries_remaining for a in delivery.attempts] == list(range(10, -1, -1))


def test_a_refused_connection_is_retried(receiver: Receiver) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with FakePostmark() as server:
        server.webhooks.configure(f"http://127.0.0.1:{port}/", retry_scale=0.000001)
        send(server, "ada@acme.test")
        settle(server)
        (delivery,) = server.webhooks.deliveries
        assert delivery.state == "failed"
        assert len(delivery.attempts) == 11
        assert all(a.status is None and a.error for a in delivery.attempts)


def test_records_can_be_posted_twice_and_newest_first_for_idempotency_tests(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    postmark.webhooks.configure(receiver.url, duplicate=True, out_of_order=0.3)
    send(postmark, "ada@acme.test")
    send(postmark, "bob@acme.test")
    settle(postmark)
    assert [b["Recipient"] for b in receiver.bodies()] == [
        "bob@acme.test",
        "bob@acme.test",
        "ada@acme.test",
        "ada@acme.test",
    ]


# -- bounces and suppressions --------------------------------------------------------------------


def test_a_bounce_testing_address_bounces_is_suppressed_and_then_refused_with_406(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    sent = send(postmark, HARD, Tag="welcome", Metadata={"event_id": "e2"})
    settle(postmark)
    bounce, change = receiver.bodies()
    assert bounce["RecordType"] == "Bounce"
    assert {k: bounce[k] for k in ("Type", "TypeCode", "Name", "Inactive", "CanActivate")} == {
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Inactive": True,
        "CanActivate": True,
    }
    assert bounce["Email"] == HARD
    assert bounce["MessageID"] == sent["MessageID"]
    assert bounce["Metadata"] == {"event_id": "e2"}
    assert (bounce["Tag"], bounce["From"], bounce["ServerID"]) == ("welcome", "n@acme.test", 1)
    assert isinstance(bounce["ID"], int)
    assert ISO_Z.fullmatch(bounce["BouncedAt"])
    assert change == {
        "RecordType": "SubscriptionChange",
        "MessageID": sent["MessageID"],
        "ServerID": 1,
        "MessageStream": "outbound",
        "ChangedAt": change["ChangedAt"],
        "Recipient": HARD,
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "HardBounce",
        "Tag": "welcome",
        "Metadata": {"event_id": "e2"},
    }

    with pytest.raises(ClientError) as refused:
        send(postmark, HARD.lower())
    assert refused.value.error_code == 406
    assert INACTIVE.format(HARD.lower()) in str(refused.value)

    batch = api(
        postmark,
        "POST",
        "email/batch",
        json=[
            {"From": "n@acme.test", "To": HARD, "TextBody": "x"},
            {"From": "n@acme.test", "To": "ada@acme.test", "TextBody": "x"},
        ],
    )
    assert [item["ErrorCode"] for item in batch] == [406, 0]
    assert batch[0]["Message"] == INACTIVE.format(HARD)


def test_addresses_told_to_bounce_bounce_and_other_types_leave_them_active(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    postmark.activity.bounce_addresses(["gone@acme.test"])
    answer = requests.post(
        postmark.url + "__bounces",
        json={"addresses": ["full@acme.test"], "type": "SoftBounce"},
        timeout=5,
    )
    assert answer.json()["bouncing"] == {
        "gone@acme.test": "HardBounce",
        "full@acme.test": "SoftBounce",
    }
    send(postmark, "gone@acme.test, full@acme.test, soft_bounce@bounce-testing.postmarkapp.com")
    settle(postmark)
    bounces = {b["Email"]: b for b in receiver.bodies("Bounce")}
    assert bounces["full@acme.test"]["Type"] == "SoftBounce"
    assert bounces["full@acme.test"]["Inactive"] is False
    assert bounces["soft_bounce@bounce-testing.postmarkapp.com"]["TypeCode"] == 4096
    dump = api(postmark, "GET", "message-streams/outbound/suppressions/dump")
    assert [s["EmailAddress"] for s in dump["Suppressions"]] == ["gone@acme.test"]
    assert send(postmark, "full@acme.test")["ErrorCode"] == 0


def test_a_spam_complaint_suppresses_and_postmark_will_not_let_it_be_deleted(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    sent = send(postmark, "ada@acme.test", Metadata={"event_id": "e3"})
    answer = requests.post(
        postmark.url + "__activity",
        json={"record": "SpamComplaint", "message_id": sent["MessageID"]},
        timeout=5,
    ).json()
    settle(postmark)
    assert answer["RecordType"] == "SpamComplaint"
    assert (answer["TypeCode"], answer["Inactive"], answer["CanActivate"]) == (100001, True, False)
    (change,) = receiver.bodies("SubscriptionChange")
    assert change["SuppressionReason"] == "SpamComplaint"

    deleted = api(
        postmark,
        "POST",
        "message-streams/outbound/suppressions/delete",
        json={"Suppressions": [{"EmailAddress": "ada@acme.test"}]},
    )
    assert deleted == {
        "Suppressions": [
            {
                "EmailAddress": "ada@acme.test",
                "Status": "Failed",
                "Message": "You do not have the required authority to change this suppression.",
            }
        ]
    }


def test_opens_clicks_and_unsubscribes_are_recorded_on_demand(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    sent = send(postmark, "ada@acme.test", Tag="digest", Metadata={"event_id": "e4"})
    postmark.activity.open(sent["MessageID"])
    postmark.activity.click(sent["MessageID"], "https://acme.test/x")
    postmark.activity.unsubscribe(sent["MessageID"], "ADA@acme.test")
    settle(postmark)
    opened, clicked, changed = (
        receiver.bodies(t)[0] for t in ("Open", "Click", "SubscriptionChange")
    )
    assert (opened["Recipient"], opened["FirstOpen"], opened["Tag"]) == (
        "ada@acme.test",
        True,
        "digest",
    )
    assert ISO_Z.fullmatch(opened["ReceivedAt"])
    assert clicked["OriginalLink"] == "https://acme.test/x"
    assert clicked["Metadata"] == {"event_id": "e4"}
    assert (changed["SuppressionReason"], changed["Origin"]) == ("ManualSuppression", "Recipient")
    assert changed["MessageID"] == sent["MessageID"]


# -- the Suppressions API ------------------------------------------------------------------------


def test_the_suppressions_api_creates_dumps_filters_and_deletes_per_stream(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    created = api(
        postmark,
        "POST",
        "message-streams/outbound/suppressions",
        json={"Suppressions": [{"EmailAddress": "ada@acme.test"}, {"EmailAddress": "nope"}]},
    )
    assert created["Suppressions"] == [
        {"EmailAddress": "ada@acme.test", "Status": "Suppressed", "Message": None},
        {
            "EmailAddress": "nope",
            "Status": "Failed",
            "Message": "An invalid email address was provided.",
        },
    ]
    postmark.activity.bounce_addresses([HARD])
    send(postmark, HARD)
    settle(postmark)

    def dump(query: str = "") -> list[tuple[str, str, str]]:
        found = api(postmark, "GET", f"message-streams/outbound/suppressions/dump{query}")
        return [
            (s["EmailAddress"], s["SuppressionReason"], s["Origin"]) for s in found["Suppressions"]
        ]

    assert dump() == [
        ("ada@acme.test", "ManualSuppression", "Customer"),
        (HARD, "HardBounce", "Recipient"),
    ]
    assert dump("?SuppressionReason=HardBounce") == [(HARD, "HardBounce", "Recipient")]
    assert dump("?Origin=Customer&EmailAddress=ADA@acme.test") == [
        ("ada@acme.test", "ManualSuppression", "Customer")
    ]
    assert dump("?todate=2000-01-01") == []
    assert len(dump("?fromdate=2000-01-01")) == 2
    assert api(postmark, "GET", "message-streams/broadcast/suppressions/dump") == {
        "Suppressions": []
    }
    assert send(postmark, "ada@acme.test", MessageStream="broadcast")["ErrorCode"] == 0

    deleted = api(
        postmark,
        "POST",
        "message-streams/outbound/suppressions/delete",
        json={"Suppressions": [{"EmailAddress": "ada@acme.test"}]},
    )
    assert deleted["Suppressions"] == [
        {"EmailAddress": "ada@acme.test", "Status": "Deleted", "Message": None}
    ]
    settle(postmark)
    reactivated = receiver.bodies("SubscriptionChange")[-1]
    assert (reactivated["SuppressSending"], reactivated["SuppressionReason"]) == (False, None)
    assert (reactivated["MessageID"], reactivated["Metadata"]) == (None, {})
    assert send(postmark, "ada@acme.test")["ErrorCode"] == 0
    assert api(postmark, "GET", "message-streams/nope/suppressions/dump")["ErrorCode"] == 1226


# -- control endpoints and the page ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["__reset", "__clear", "__faults", "__webhooks", "__bounces"])
@pytest.mark.parametrize("origin", ["http://evil.test", "null", "http://localhost.evil.test:9025"])
def test_control_posts_from_another_origin_are_refused(
    postmark: FakePostmark, path: str, origin: str
) -> None:
    answer = requests.post(postmark.url + path, headers={"Origin": origin}, json={}, timeout=5)
    assert answer.status_code == 403


def test_control_posts_from_its_own_pages_or_without_an_origin_are_served(
    postmark: FakePostmark,
) -> None:
    own = postmark.url.rstrip("/")
    assert requests.post(postmark.url + "__reset", headers={"Origin": own}, timeout=5).ok
    localhost = f"http://localhost:{postmark.port}"
    assert requests.post(postmark.url + "__reset", headers={"Origin": localhost}, timeout=5).ok
    assert requests.post(postmark.url + "__reset", timeout=5).ok


def test_webhooks_are_configured_from_another_process_and_reset_forgets_what_happened(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    bad = requests.post(postmark.url + "__webhooks", json={"url": "ftp://x"}, timeout=5)
    assert bad.status_code == 400
    settings = requests.post(
        postmark.url + "__webhooks",
        json={"url": receiver.url, "record_types": ["Bounce"], "retry_scale": FAST},
        timeout=5,
    ).json()
    assert settings["record_types"] == ["Bounce"]
    assert settings["credentials"] is True
    assert "s3cret" not in json.dumps(settings)
    send(postmark, HARD)
    settle(postmark)
    log = requests.get(postmark.url + "__webhooks/log", timeout=5).json()
    assert [d["RecordType"] for d in log["deliveries"]] == ["Bounce"]
    assert log["deliveries"][0]["attempts"][0]["status"] == 200

    postmark.reset()
    assert postmark.webhooks.deliveries == []
    assert postmark.activity.suppressions.entries() == []
    assert postmark.webhooks.url == receiver.url.replace("hook:s3cret@", "")


def test_the_webhooks_page_shows_each_attempt_escaped_and_the_inbox_links_to_it(
    postmark: FakePostmark, receiver: Receiver
) -> None:
    receiver.script = [503]
    send(postmark, "ada@acme.test", Tag="<script>alert(1)</script>")
    settle(postmark)
    page = requests.get(postmark.url + "__webhooks", timeout=5)
    assert page.headers["Content-Security-Policy"].startswith("script-src 'self'")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "503 at" in page.text
    assert "200 at" in page.text
    assert "delivered" in page.text
    assert "s3cret" not in page.text
    inbox = requests.get(postmark.url, timeout=5).text
    assert "href='/__webhooks'" in inbox


def test_webhook_settings_are_checked() -> None:
    server = FakePostmark()
    with pytest.raises(ValueError, match="http"):
        server.webhooks.configure("mailto:a@b.test")
    with pytest.raises(ValueError, match="record types"):
        server.webhooks.configure("http://127.0.0.1:1/", record_types=["Delivered"])
    with pytest.raises(ValueError, match="retry_scale"):
        server.webhooks.configure("http://127.0.0.1:1/", retry_scale=-1)
    with pytest.raises(ValueError, match="bounce types"):
        server.activity.bounce_addresses(["a@b.test"], "Bounced")


def test_the_command_posts_webhooks_to_the_url_it_is_given(receiver: Receiver) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = "from emailevents.cli import main; main(prog_name='emailevents')"
    options = ["--port", str(port), "--webhook-url", receiver.url]
    process = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-c", command, "fake-postmark", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/__health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        answer = requests.post(
            f"http://127.0.0.1:{port}/email",
            headers=HEADERS,
            json={"From": "n@acme.test", "To": "ada@acme.test", "TextBody": "hi"},
            timeout=5,
        ).json()
        while not receiver.received:
            assert time.monotonic() < deadline, "no webhook came"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
    ((headers, body),) = receiver.received
    assert (body["RecordType"], body["MessageID"]) == ("Delivery", answer["MessageID"])
    assert headers["Authorization"].startswith("Basic ")
