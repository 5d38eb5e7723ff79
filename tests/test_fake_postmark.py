"""The local Postmark-compatible server, driven over real HTTP by the real postmarker client."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formataddr
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError

from emailevents.demo import DEMO_TEMPLATES
from emailevents.testing.fake_postmark import MAX_EMAIL_BYTES, FakePostmark, TemplateLoadError
from tests.conftest import examples

TOKEN = "test-token"
NO_TOKEN = "No Account or Server API tokens were supplied in the HTTP headers."
WELCOME = {
    "TemplateId": 42,
    "Name": "Welcome",
    "Alias": "welcome",
    "Subject": "Welcome, {{name}}",
    "HtmlBody": (
        "<p>Hi {{name}} of {{company.name}}</p>{{{signature}}}"
        "<ul>{{#each items}}<li>{{title}}</li>{{/each}}</ul>"
    ),
    "TextBody": "Hi {{name}}",
}
RECEIPT = {
    "Name": "Receipt",
    "Alias": "receipt",
    "Subject": "Your receipt",
    "TextBody": "Total: {{total}}",
}
NOTE = {"Name": "Note", "Subject": "A note", "TextBody": "{{text}}"}
# Ids are assigned from 1000001 up (above any id given) when a template has none.
RECEIPT_ID, NOTE_ID = 1_000_001, 1_000_002
MODEL = {
    "name": "Ada <Lovelace>",
    "company": {"name": "Acme & Co"},
    "signature": "<em>The team</em>",
    "items": [{"title": "one"}, {"title": "two"}],
}


@pytest.fixture
def server() -> Iterator[FakePostmark]:
    with FakePostmark(templates=[WELCOME, RECEIPT, NOTE]) as running:
        yield running


@pytest.fixture
def client(server: FakePostmark) -> PostmarkClient:
    return PostmarkClient(server_token=TOKEN, root_api_url=server.url)


def welcome(**changes: Any) -> dict[str, Any]:
    """A valid /email/withTemplate body, with changes (None values are sent as null)."""
    return {
        "TemplateAlias": "welcome",
        "TemplateModel": MODEL,
        "From": "Acme <notifications@acme.test>",
        "To": "ada@acme.test",
        "Tag": "welcome",
        "Metadata": {"event_id": "ev-1"},
        **changes,
    }


def send(client: PostmarkClient, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = client.call("POST", "/email/withTemplate", data=body)
    return result


def http_status(error: ClientError) -> int:
    """postmarker keeps the HTTP status only on the HTTPError it raises from."""
    cause = error.__cause__
    assert isinstance(cause, requests.HTTPError)
    assert cause.response is not None
    return cause.response.status_code


def status_of(error: pytest.ExceptionInfo[ClientError]) -> int:
    return http_status(error.value)


# -- sending with a template ---------------------------------------------------------------------


def test_a_template_send_answers_like_postmark_and_keeps_the_rendered_message(
    server: FakePostmark, client: PostmarkClient
) -> None:
    answer = client.emails.send_with_template(
        TemplateAlias="welcome",
        TemplateModel=MODEL,
        From="Acme <notifications@acme.test>",
        To="ada@acme.test",
        Tag="welcome",
        Metadata={"event_id": "ev-1"},
        MessageStream="outbound",
    )

    assert set(answer) == {"To", "SubmittedAt", "MessageID", "ErrorCode", "Message"}
    assert (answer["To"], answer["ErrorCode"], answer["Message"]) == ("ada@acme.test", 0, "OK")
    [received] = server.messages
    assert received.message_id == answer["MessageID"]
    assert received.subject == "Welcome, Ada &lt;Lovelace&gt;"
    assert received.html_body == (
        "<p>Hi Ada &lt;Lovelace&gt; of Acme &amp; Co</p><em>The team</em>"
        "<ul><li>one</li><li>two</li></ul>"
    )
    assert received.text_body == "Hi Ada &lt;Lovelace&gt;"
    assert (received.to, received.from_) == ("ada@acme.test", "Acme <notifications@acme.test>")
    assert (received.tag, received.metadata, received.message_stream) == (
        "welcome",
        {"event_id": "ev-1"},
        "outbound",
    )
    assert (received.template_id, received.template_alias) == (42, "welcome")
    assert received.template_model == MODEL
    assert received.request["TrackLinks"] == "None"  # everything received is kept
    # postmarker posts to the trailing-slash path
    assert server.requests == [("POST", "/email/withTemplate/")]


def test_a_template_send_works_by_id_and_without_the_trailing_slash(
    server: FakePostmark, client: PostmarkClient
) -> None:
    answer = send(client, welcome(TemplateAlias=None, TemplateId=42, MessageStream=None))

    assert answer["ErrorCode"] == 0
    assert server.messages[0].message_stream == "outbound"
    assert server.requests == [("POST", "/email/withTemplate")]


def test_an_empty_template_model_is_fine(server: FakePostmark, client: PostmarkClient) -> None:
    send(client, welcome(TemplateModel={}))

    assert server.messages[0].subject == "Welcome, "


def test_the_limits_themselves_are_accepted(client: PostmarkClient) -> None:
    fifty = ", ".join(f"user{i}@acme.test" for i in range(50))
    metadata = {f"k{i}".ljust(20, "x"): "v" * 80 for i in range(10)}

    assert send(client, welcome(To=fifty, Metadata=metadata))["ErrorCode"] == 0


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        pytest.param(
            {"TemplateAlias": "nope"},
            1101,
            "The Template's 'Alias' associated with this request is not valid or was not found.",
            id="unknown-alias",
        ),
        pytest.param(
            {"TemplateAlias": None, "TemplateId": 999},
            1101,
            "The 'TemplateId' associated with this request is not valid or was not found.",
            id="unknown-id",
        ),
        pytest.param({"TemplateAlias": None}, 1101, "'TemplateId'", id="no-template"),
        pytest.param({"TemplateModel": None}, 1120, "'TemplateModel'", id="null-model"),
        pytest.param(
            {"Subject": "Hi"},
            1123,
            "Neither 'TextBody', 'HtmlBody', or 'Subject' may be specified when using a "
            "template for the email.",
            id="subject-with-template",
        ),
        pytest.param({"From": None}, 300, "Invalid 'From' value.", id="no-from"),
        pytest.param(
            {"From": "acme.test"},
            300,
            "Error parsing 'From': Illegal email address 'acme.test'. It must contain the '@' "
            "symbol.",
            id="bad-from",
        ),
        pytest.param({"To": ""}, 300, "Zero recipients specified", id="no-to"),
        pytest.param({"To": "ada@acme"}, 300, "Illegal email address 'ada@acme'", id="bad-to"),
        pytest.param(
            {"To": "ada@acme.test, bob"}, 300, "Illegal email address 'bob'", id="bad-second-to"
        ),
        pytest.param({"To": ",".join(f"u{i}@acme.test" for i in range(51))}, 300, "50", id="51-to"),
        pytest.param({"Cc": "carol"}, 300, "Error parsing 'Cc'", id="bad-cc"),
        pytest.param(
            {"Metadata": {f"k{i}": "v" for i in range(11)}}, 300, "metadata", id="11-fields"
        ),
        pytest.param({"Metadata": {"k" * 21: "v"}}, 300, "20 characters", id="long-key"),
        pytest.param({"Metadata": {"k": "v" * 81}}, 300, "80 characters", id="long-value"),
        pytest.param({"Metadata": {"Id": "1", "id": "2"}}, 300, "case", id="keys-by-case"),
    ],
)
def test_a_bad_template_send_is_refused_with_postmarks_code_and_nothing_is_kept(
    server: FakePostmark,
    client: PostmarkClient,
    changes: dict[str, Any],
    code: int,
    words: str,
) -> None:
    with pytest.raises(ClientError) as error:
        send(client, welcome(**changes))

    assert error.value.error_code == code
    assert words in str(error.value)
    assert status_of(error) == 422
    assert server.messages == []


def test_a_missing_template_model_is_1120(client: PostmarkClient) -> None:
    body = welcome()
    del body["TemplateModel"]

    with pytest.raises(ClientError) as error:
        send(client, body)

    assert error.value.error_code == 1120


def test_an_inactive_template_cannot_be_sent() -> None:
    with FakePostmark(templates=[{**RECEIPT, "Active": False}]) as server:
        client = PostmarkClient(server_token=TOKEN, root_api_url=server.url)
        with pytest.raises(ClientError) as error:
            send(client, welcome(TemplateAlias="receipt"))

    assert error.value.error_code == 1101


def test_invalid_json_is_402(server: FakePostmark) -> None:
    response = requests.post(
        f"{server.url}email/withTemplate",
        data=b'{"From": ',
        headers={"X-Postmark-Server-Token": TOKEN, "Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 422
    assert response.json()["ErrorCode"] == 402


def test_a_body_over_postmarks_size_limit_is_refused_unread(server: FakePostmark) -> None:
    connection = HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1].strip("/")))
    connection.putrequest("POST", "/email/withTemplate")
    connection.putheader("X-Postmark-Server-Token", TOKEN)
    connection.putheader("Content-Length", str(MAX_EMAIL_BYTES + 1))
    connection.endheaders()

    assert connection.getresponse().status == 413
    connection.close()


def test_a_plain_send_needs_a_body(server: FakePostmark, client: PostmarkClient) -> None:
    answer = client.emails.send(
        From="notifications@acme.test", To="ada@acme.test", Subject="Hello", TextBody="Hi"
    )
    with pytest.raises(ClientError) as error:  # postmarker itself refuses this; send it raw
        client.call("POST", "/email", data={"From": "a@acme.test", "To": "b@acme.test"})

    assert answer["ErrorCode"] == 0
    assert (server.messages[0].subject, server.messages[0].text_body) == ("Hello", "Hi")
    assert server.messages[0].template_id is None
    assert error.value.error_code == 300
    assert "Provide either email TextBody or HtmlBody or both." in str(error.value)


# -- batches -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/email/batchWithTemplates", "/email/batchWithTemplates/"])
def test_a_batch_answers_200_with_one_result_per_message_in_request_order(
    server: FakePostmark, client: PostmarkClient, path: str
) -> None:
    messages = [
        welcome(To="one@acme.test"),
        welcome(To="two@acme.test", TemplateAlias="nope"),
        welcome(To="three@acme.test", TemplateModel={"name": "Three"}),
        welcome(To="four@"),
    ]

    answers = client.call("POST", path, data={"Messages": messages})

    assert [a["ErrorCode"] for a in answers] == [0, 1101, 0, 300]
    assert [a.get("To") for a in answers] == ["one@acme.test", None, "three@acme.test", None]
    assert all(a["Message"] == "OK" for a in (answers[0], answers[2]))
    assert [m.to for m in server.messages] == ["one@acme.test", "three@acme.test"]
    assert [m.message_id for m in server.messages] == [
        answers[0]["MessageID"],
        answers[2]["MessageID"],
    ]
    assert server.messages[1].subject == "Welcome, Three"


def test_postmarkers_batch_helper_is_understood(
    server: FakePostmark, client: PostmarkClient
) -> None:
    answers = client.emails.send_template_batch(
        {
            "TemplateAlias": "receipt",
            "TemplateModel": {"total": 3},
            "From": "a@acme.test",
            "To": "b@acme.test",
        },
        {"TemplateId": 42, "TemplateModel": {}, "From": "a@acme.test", "To": "c@acme.test"},
    )

    assert [a["ErrorCode"] for a in answers] == [0, 0]
    assert server.messages[0].text_body == "Total: 3"
    assert ("POST", "/email/batchWithTemplates/") in server.requests


def test_a_batch_of_more_than_500_is_410(server: FakePostmark, client: PostmarkClient) -> None:
    with pytest.raises(ClientError) as error:
        client.call("POST", "/email/batchWithTemplates", data={"Messages": [welcome()] * 501})

    assert error.value.error_code == 410
    assert server.messages == []


# -- authentication ------------------------------------------------------------------------------


def test_a_wrong_token_is_401_and_is_never_echoed(server: FakePostmark) -> None:
    wrong = "s3cret-wrong-token"
    stranger = PostmarkClient(server_token=wrong, root_api_url=server.url)

    with pytest.raises(ClientError) as error:
        stranger.templates.get(42)
    missing = requests.get(f"{server.url}templates?Count=1&Offset=0", timeout=5)

    assert error.value.error_code == 10
    assert status_of(error) == 401
    assert "s3cret" not in str(error.value)
    assert missing.status_code == 401
    assert missing.json() == {"ErrorCode": 10, "Message": NO_TOKEN}


def test_the_page_health_and_fault_endpoints_need_no_token(server: FakePostmark) -> None:
    assert requests.get(server.url, timeout=5).status_code == 200
    assert requests.get(f"{server.url}__health", timeout=5).json()["status"] == "ok"
    assert requests.get(f"{server.url}__faults", timeout=5).status_code == 200


def test_neither_the_token_nor_the_message_is_logged(
    client: PostmarkClient, caplog: pytest.LogCaptureFixture
) -> None:
    other = "another-secret"
    stranger = PostmarkClient(server_token=other, root_api_url=client.root_api_url)
    with caplog.at_level(logging.DEBUG, logger="emailevents"):
        send(client, welcome())
        with pytest.raises(ClientError):
            send(stranger, welcome())

    assert "/email/withTemplate" in caplog.text
    for secret in (TOKEN, "another-secret", "Lovelace", "ada@acme.test", "ev-1"):
        assert secret not in caplog.text


def test_an_unknown_endpoint_is_404(client: PostmarkClient) -> None:
    with pytest.raises(ClientError) as error:
        client.call("GET", "/bounces")

    assert status_of(error) == 404


# -- the templates API ---------------------------------------------------------------------------


def test_templates_are_listed_with_count_offset_and_type(client: PostmarkClient) -> None:
    page = client.call("GET", "/templates", Count=2, Offset=1)
    layouts = client.call("GET", "/templates/", Count=100, Offset=0, TemplateType="Layout")
    everything = client.templates.all()

    assert page["TotalCount"] == 3
    assert [t["Name"] for t in page["Templates"]] == ["Receipt", "Note"]
    assert page["Templates"][0] == {
        "Active": True,
        "TemplateId": RECEIPT_ID,
        "Name": "Receipt",
        "Alias": "receipt",
        "TemplateType": "Standard",
        "LayoutTemplate": None,
    }
    assert layouts == {"TotalCount": 0, "Templates": []}
    assert [t.TemplateId for t in everything] == [42, RECEIPT_ID, NOTE_ID]


def test_a_template_is_fetched_by_id_or_alias(client: PostmarkClient) -> None:
    by_id = client.templates.get(42)
    by_alias = client.templates.get("welcome")

    assert by_id.as_dict() == by_alias.as_dict()
    assert by_id.as_dict() == {
        "TemplateId": 42,
        "Name": "Welcome",
        "Alias": "welcome",
        "Subject": WELCOME["Subject"],
        "HtmlBody": WELCOME["HtmlBody"],
        "TextBody": WELCOME["TextBody"],
        "AssociatedServerId": 1,
        "Active": True,
        "TemplateType": "Standard",
        "LayoutTemplate": None,
    }


@pytest.mark.parametrize("ref", ["999", "no-such-alias"])
def test_an_unknown_template_is_422_with_code_1101(client: PostmarkClient, ref: str) -> None:
    with pytest.raises(ClientError) as error:
        client.templates.get(ref)

    assert error.value.error_code == 1101
    assert status_of(error) == 422
    assert str(error.value) == (
        "[1101] The 'TemplateId' associated with this request is not valid or was not found."
    )


def test_a_created_and_edited_template_is_served_and_sent(
    server: FakePostmark, client: PostmarkClient
) -> None:
    created = client.templates.create(
        Name="Reset", Subject="Reset for {{name}}", TextBody="Go to {{{url}}}", Alias="reset"
    )
    client.templates.edit(created.TemplateId, Subject="Password reset for {{name}}")
    send(client, welcome(TemplateAlias="reset", TemplateModel={"name": "Ada", "url": "a?b&c"}))

    assert created.TemplateId == NOTE_ID + 1
    assert client.templates.get("reset").Subject == "Password reset for {{name}}"
    assert (server.messages[0].subject, server.messages[0].text_body) == (
        "Password reset for Ada",
        "Go to a?b&c",
    )


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"Name": "X", "Subject": "{{#each}}", "TextBody": "x"}, 1122, id="syntax"),
        pytest.param(
            {"Name": "X", "Subject": "S", "TextBody": "x", "Alias": "welcome"},
            1122,
            id="alias-taken",
        ),
        pytest.param({"Name": "X", "TextBody": "x"}, 1120, id="no-subject"),
        pytest.param({"Name": "X", "Subject": "S"}, 1120, id="no-body"),
    ],
)
def test_a_bad_template_is_not_created(
    client: PostmarkClient, fields: dict[str, Any], code: int
) -> None:
    with pytest.raises(ClientError) as error:
        client.call("POST", "/templates", data=fields)

    assert error.value.error_code == code
    assert client.call("GET", "/templates", Count=100, Offset=0)["TotalCount"] == 3


def test_a_template_can_be_deleted(client: PostmarkClient) -> None:
    client.templates.delete(NOTE_ID)

    with pytest.raises(ClientError):
        client.templates.get(NOTE_ID)


# -- validation and rendering --------------------------------------------------------------------


def test_validate_renders_with_escaping_raw_output_dotted_paths_and_each(
    client: PostmarkClient,
) -> None:
    answer = client.templates.validate(
        Subject="{{title}} & {{{title}}}",
        HtmlBody="<p>{{user.name}}</p>{{#each lines}}<li>{{sku}}: {{qty}}</li>{{/each}}",
        TextBody="{{#each tags}}[{{.}}]{{/each}} {{&user.name}}",
        TestRenderModel={
            "title": "<Q&A>",
            "user": {"name": 'O\'Neil "Jr"'},
            "lines": [{"sku": "A1", "qty": 2}, {"sku": "B<2>", "qty": 1.0}],
            "tags": ["x", "<y>"],
        },
    )

    assert answer["AllContentIsValid"] is True
    assert answer["Subject"]["RenderedContent"] == "&lt;Q&amp;A&gt; & <Q&A>"
    assert answer["HtmlBody"]["RenderedContent"] == (
        "<p>O&#39;Neil &quot;Jr&quot;</p><li>A1: 2</li><li>B&lt;2&gt;: 1</li>"
    )
    assert answer["TextBody"]["RenderedContent"] == '[x][&lt;y&gt;] O\'Neil "Jr"'
    assert answer["Subject"]["ValidationErrors"] == []


def test_validate_follows_mustachio_not_plain_mustache(client: PostmarkClient) -> None:
    answer = client.templates.validate(
        Subject="{{#items}}[{{name}}]{{/items}}|{{#person}}{{company}}/{{../company}}{{/person}}",
        TextBody="a\n{{#each items}}\n- {{name}}\n{{/each}}\nz{{missing}}",
        TestRenderModel={
            "items": [{"name": "one"}, {"name": "two"}],
            "person": {"name": "Ada"},
            "company": "Acme",
        },
    )

    # A plain section only tests and scopes into a list; names are not looked up outwards;
    # `../` climbs; lines around section tags are kept; a missing name renders as nothing.
    assert answer["Subject"]["RenderedContent"] == "[]|/Acme"
    assert answer["TextBody"]["RenderedContent"] == "a\n\n- one\n\n- two\n\nz"


def test_the_suggested_model_is_built_as_postmark_builds_it(client: PostmarkClient) -> None:
    answer = client.templates.validate(
        Subject="{{subject}}",
        HtmlBody=(
            "{{#person}}{{first_name}}{{/person}} {{org.address.city}}"
            "{{#each lines}}{{sku}}{{#each notes}}{{.}}{{/each}}{{/each}}"
        ),
        TextBody="{{^flag}}off{{/flag}}{{#each tags}}{{.}}{{/each}}",
    )

    assert answer["SuggestedTemplateModel"] == {
        "subject": "subject_Value",
        "person": {"first_name": "first_name_Value"},
        "org": {"address": {"city": "city_Value"}},
        "lines": [{"sku": "sku_Value", "notes": ["notes_1", "notes_2", "notes_3"]}],
        "flag": {},
        "tags": ["tags_1", "tags_2", "tags_3"],
    }


def test_syntax_errors_are_reported_with_line_and_character(client: PostmarkClient) -> None:
    answer = client.templates.validate(
        Subject="Fine {{name}}",
        HtmlBody="<p>\n  {{#each items}}{{name}}\n{{first name}}</p>",
    )

    assert answer["AllContentIsValid"] is False
    assert answer["Subject"]["ContentIsValid"] is True
    assert answer["TextBody"] is None
    html = answer["HtmlBody"]
    assert html["ContentIsValid"] is False
    assert html["ValidationErrors"] == [
        {
            "Message": "A scope block to the following path was opened but not closed: 'items', "
            "please close it using the appropriate syntax.",
            "Line": 2,
            "CharacterPosition": 3,
        },
        {
            "Message": "The path 'first name' is not valid. Please see documentation for "
            "examples of valid paths.",
            "Line": 3,
            "CharacterPosition": 1,
        },
    ]
    assert answer["SuggestedTemplateModel"] == {"name": "name_Value"}


# -- the outbound messages API -------------------------------------------------------------------


def test_outbound_messages_are_listed_newest_first_with_postmarks_fields(
    server: FakePostmark, client: PostmarkClient
) -> None:
    for number in range(3):
        send(client, welcome(To=f"user{number}@acme.test", Tag=f"tag{number % 2}"))

    page = client.call("GET", "/messages/outbound", count=2, offset=0)
    tagged = client.call("GET", "/messages/outbound", count=10, offset=0, tag="tag0")
    details = client.messages.outbound.get(page["Messages"][0]["MessageID"])

    assert page["TotalCount"] == 3
    first = page["Messages"][0]
    assert first["To"] == [{"Email": "user2@acme.test", "Name": None}]
    assert (first["From"], first["Subject"], first["Status"]) == (
        "Acme <notifications@acme.test>",
        "Welcome, Ada &lt;Lovelace&gt;",
        "Sent",
    )
    assert (first["Tag"], first["Metadata"], first["MessageStream"]) == (
        "tag0",
        {"event_id": "ev-1"},
        "outbound",
    )
    assert first["ReceivedAt"] == server.messages[2].received_at.isoformat()
    assert [m["To"][0]["Email"] for m in tagged["Messages"]] == [
        "user2@acme.test",
        "user0@acme.test",
    ]
    assert details.TextBody == "Hi Ada &lt;Lovelace&gt;"


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(500, 500), (429, 429), (503, 100)])
def test_fail_next_answers_with_the_http_status_then_recovers(
    server: FakePostmark, client: PostmarkClient, status: int, code: int
) -> None:
    server.faults.fail_next(2, status=status)

    for _ in range(2):
        with pytest.raises(ClientError) as error:
            send(client, welcome())
        assert (status_of(error), error.value.error_code) == (status, code)
    send(client, welcome())

    assert len(server.messages) == 1


def test_a_timeout_after_postmark_accepted_still_records_the_message(
    server: FakePostmark,
) -> None:
    impatient = PostmarkClient(server_token=TOKEN, root_api_url=server.url, timeout=0.1)
    server.faults.fail_next(1, timeout=0.4, accept=True)

    with pytest.raises(requests.Timeout):
        send(impatient, welcome())

    # Recorded before the hold began; allow a loaded machine a moment to get there.
    deadline = time.monotonic() + 2
    while not server.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m.to for m in server.messages] == ["ada@acme.test"]


def test_a_timeout_before_postmark_accepted_records_nothing(
    server: FakePostmark, client: PostmarkClient
) -> None:
    impatient = PostmarkClient(server_token=TOKEN, root_api_url=server.url, timeout=0.1)
    server.faults.fail_next(1, timeout=0.3, accept=False)

    with pytest.raises(requests.Timeout):
        send(impatient, welcome())
    send(client, welcome(To="next@acme.test"))

    assert [m.to for m in server.messages] == ["next@acme.test"]


def test_an_inactive_recipient_is_406_and_a_partly_inactive_message_is_sent(
    server: FakePostmark, client: PostmarkClient
) -> None:
    server.faults.fail_recipients({"Gone@Acme.test": 406, "bad@acme.test": 300})

    with pytest.raises(ClientError) as inactive:
        send(client, welcome(To="gone@acme.test"))
    partly = send(client, welcome(To="gone@acme.test, ada@acme.test"))
    with pytest.raises(ClientError) as refused:
        send(client, welcome(To="bad@acme.test"))

    assert inactive.value.error_code == 406
    assert str(inactive.value) == (
        "[406] You tried to send to recipient(s) that have been marked as inactive. Found "
        "inactive addresses: gone@acme.test. Inactive recipients are ones that have generated "
        "a hard bounce, a spam complaint, or a manual suppression."
    )
    assert partly["ErrorCode"] == 0
    assert partly["Message"] == (
        "Message OK, but will not deliver to these inactive addresses: gone@acme.test."
    )
    assert refused.value.error_code == 300
    assert [m.to for m in server.messages] == ["gone@acme.test, ada@acme.test"]


def test_faults_can_be_set_over_http_by_another_process(
    server: FakePostmark, client: PostmarkClient
) -> None:
    setting = requests.post(
        f"{server.url}__faults",
        json={"fail_next": {"n": 1, "status": 500}, "fail_recipients": {"x@acme.test": 406}},
        timeout=5,
    )
    bad = requests.post(f"{server.url}__faults", json={"fail_next": {"n": 0}}, timeout=5)

    assert setting.status_code == 200
    assert setting.json()["queued"] == [{"status": 500, "error_code": None, "message": None}]
    assert bad.status_code == 400
    with pytest.raises(ClientError):
        send(client, welcome())
    with pytest.raises(ClientError) as error:
        send(client, welcome(To="x@acme.test"))
    assert error.value.error_code == 406
    requests.post(f"{server.url}__faults", json={"clear": True}, timeout=5)
    assert send(client, welcome(To="x@acme.test"))["ErrorCode"] == 0


def outcomes(seed: int) -> list[str]:
    with FakePostmark(templates=[WELCOME]) as server:
        impatient = PostmarkClient(server_token=TOKEN, root_api_url=server.url, timeout=0.1)
        server.faults.fail_rate(1.0, seed=seed, timeout=0.2)
        seen = []
        for _ in range(6):
            try:
                send(impatient, welcome())
            except ClientError as error:
                seen.append(str(http_status(error)))
            except requests.Timeout:
                seen.append("timeout")
        return seen


def test_fail_rate_draws_500_429_or_timeout_repeatably_for_a_seed() -> None:
    first, again = outcomes(seed=3), outcomes(seed=3)

    assert first == again
    assert set(first) <= {"500", "429", "timeout"}
    assert len(set(first)) > 1


def test_fail_rate_zero_fails_nothing(server: FakePostmark, client: PostmarkClient) -> None:
    server.faults.fail_rate(0.0, seed=1)

    for _ in range(5):
        send(client, welcome())

    assert len(server.messages) == 5


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda f: f.fail_next(0), id="zero"),
        pytest.param(lambda f: f.fail_next(1, status=200), id="not-an-error"),
        pytest.param(lambda f: f.fail_next(1, timeout=10_000), id="endless"),
        pytest.param(lambda f: f.fail_next(1, timeout=1, status=500), id="both"),
        pytest.param(lambda f: f.fail_next(20_000), id="too-many"),
        pytest.param(lambda f: f.fail_rate(1.5), id="rate-over-1"),
        pytest.param(lambda f: f.fail_recipients({"nobody": 406}), id="not-an-address"),
    ],
)
def test_faults_are_checked_and_bounded(server: FakePostmark, call: Any) -> None:
    with pytest.raises(ValueError):
        call(server.faults)


def test_faults_are_taken_exactly_once_under_concurrency(server: FakePostmark) -> None:
    server.faults.fail_next(5)
    failures: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        own = PostmarkClient(server_token=TOKEN, root_api_url=server.url)
        for _ in range(4):
            try:
                send(own, welcome())
            except ClientError as error:
                with lock:
                    failures.append(error.error_code)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == [500] * 5
    assert len(server.messages) == 15
    assert len({m.message_id for m in server.messages}) == 15


# -- the page ------------------------------------------------------------------------------------


def test_the_inbox_lists_messages_newest_first_compactly_with_everything_escaped(
    server: FakePostmark, client: PostmarkClient
) -> None:
    send(client, welcome(TemplateModel={"name": "First"}))
    evil = {"name": "<b>Second</b>", "signature": '<script>alert("x")</script>'}
    send(client, welcome(TemplateModel=evil, Tag="<i>tag</i>"))

    page = requests.get(server.url, timeout=5)
    second_id = server.messages[1].message_id
    one = requests.get(f"{server.url}messages/{second_id}", timeout=5)
    missing = requests.get(f"{server.url}messages/{'0' * 8}-0000-0000-0000-{'0' * 12}", timeout=5)

    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    # The subject template escapes the name ("&lt;b&gt;"); the page escapes that again.
    assert page.text.index("Welcome, &amp;lt;b&amp;gt;Second") < page.text.index("Welcome, First")
    assert "&lt;i&gt;tag&lt;/i&gt;" in page.text
    assert "<iframe" not in page.text  # the list is a list: bodies only in a message's view
    assert "<script>" not in page.text
    assert "<b>" not in page.text
    assert f"/messages/{second_id}" in page.text
    assert one.status_code == 200
    assert "<script>" not in one.text
    assert "<iframe class='html' sandbox=''" in one.text
    assert 'srcdoc="&lt;p&gt;Hi &amp;lt;b&amp;gt;Second&amp;lt;/b&amp;gt; of &lt;/p&gt;' in one.text
    # The TemplateModel tab holds the model as pretty JSON, escaped.
    model = "&quot;signature&quot;: &quot;&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;"
    assert model in one.text
    assert missing.status_code == 404


def test_the_inbox_searches_recipient_subject_tag_and_event_id(
    server: FakePostmark, client: PostmarkClient
) -> None:
    send(client, welcome(To="ada@acme.test", Tag="welcome", Metadata={"event_id": "ev-ada"}))
    send(client, welcome(To="bob@acme.test", Tag="invite", Metadata={"event_id": "ev-bob"}))
    send(client, welcome(To="cy@acme.test", TemplateModel={"name": "Cy"}))
    ada, bob, cy = (m.message_id for m in server.messages)

    def found(query: str) -> list[str]:
        text = requests.get(server.url, params={"q": query}, timeout=5).text
        return [i for i in (ada, bob, cy) if f"data-id='{i}'" in text]

    assert found("") == [ada, bob, cy]
    assert found("bob@") == [bob]
    assert found("to:ada") == [ada]
    assert found("tag:invite") == [bob]
    assert found("ev-ada") == [ada]
    assert found("event:ev-bob") == [bob]
    assert found('subject:"welcome, cy"') == [cy]
    assert found("welcome acme") == [ada, bob, cy]
    assert found("to:ada tag:invite") == []
    assert found('"unbalanced') == []
    # A message opened from a search links back to it and to its neighbours in it.
    view = requests.get(f"{server.url}messages/{bob}", params={"q": "acme"}, timeout=5).text
    assert "href='/?q=acme'" in view
    assert f"href='/messages/{cy}?q=acme' rel='prev'" in view
    assert f"href='/messages/{ada}?q=acme' rel='next'" in view


def test_the_live_list_answers_its_version_and_the_rows_only_when_they_changed(
    server: FakePostmark, client: PostmarkClient
) -> None:
    first = requests.get(f"{server.url}__inbox", params={"q": ""}, timeout=5).json()
    unchanged = requests.get(
        f"{server.url}__inbox", params={"since": first["version"]}, timeout=5
    ).json()
    send(client, welcome())
    changed = requests.get(
        f"{server.url}__inbox", params={"since": first["version"]}, timeout=5
    ).json()
    script = requests.get(f"{server.url}__inbox.js", timeout=5)

    assert "No messages." in first["rows"]
    assert unchanged == {"version": first["version"]}
    assert changed["version"] != first["version"]
    assert server.messages[0].message_id in changed["rows"]
    assert changed["title"] == "(1) Inbox · FakePostmark"
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "setTimeout(poll, 1000)" in script.text


def test_clear_forgets_the_messages_only_and_sends_the_browser_back_to_the_inbox(
    server: FakePostmark, client: PostmarkClient
) -> None:
    send(client, welcome())
    server.faults.fail_next(2)

    answer = requests.post(f"{server.url}__clear", timeout=5, allow_redirects=False)

    assert (answer.status_code, answer.headers["Location"]) == (303, "/")
    assert server.messages == []
    assert len(server.faults.snapshot()["queued"]) == 2  # the page is never faulted
    assert len(server.templates) == 3


# -- the server's own API ------------------------------------------------------------------------


def test_reset_forgets_messages_requests_faults_and_added_templates(
    server: FakePostmark, client: PostmarkClient
) -> None:
    send(client, welcome())
    client.templates.create(Name="Extra", Subject="x", TextBody="y")
    server.faults.fail_next(3)

    server.reset()

    assert (server.messages, server.requests) == ([], [])
    assert server.faults.snapshot()["queued"] == []
    assert [t.template_id for t in server.templates] == [42, RECEIPT_ID, NOTE_ID]


def test_the_demo_templates_load_one_per_file_with_ids_assigned() -> None:
    server = FakePostmark(templates=DEMO_TEMPLATES)

    aliases = {t.alias for t in server.templates}
    assert aliases == {p.stem for p in DEMO_TEMPLATES.glob("*.yaml")}
    assert len({t.template_id for t in server.templates}) == len(aliases)


def test_a_yaml_file_may_hold_a_list_and_keeps_given_ids(tmp_path: Path) -> None:
    file = tmp_path / "templates.yaml"
    file.write_text(
        json.dumps([{**NOTE, "TemplateId": 7}, {**RECEIPT}]),  # JSON is YAML
        encoding="utf-8",
    )

    server = FakePostmark(templates=file)

    assert [(t.template_id, t.name) for t in server.templates] == [
        (7, "Note"),
        (1_000_001, "Receipt"),
    ]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param({**NOTE, "TextBody": "{{#each}}"}, "line 1, character 1", id="syntax"),
        pytest.param({**NOTE, "Colour": "red"}, "unknown template fields", id="unknown-field"),
        pytest.param([{**RECEIPT}, {**RECEIPT}], "already in use", id="same-alias"),
        pytest.param({"Name": "N", "TextBody": "t"}, "'Subject'", id="no-subject"),
    ],
)
def test_malformed_template_files_are_refused_naming_the_file(
    tmp_path: Path, content: Any, words: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(json.dumps(content), encoding="utf-8")

    with pytest.raises(TemplateLoadError) as error:
        FakePostmark(templates=tmp_path)

    assert str(file) in str(error.value)
    assert words in str(error.value)


def test_the_fake_postmark_fixture_serves_the_demo_templates(fake_postmark: FakePostmark) -> None:
    client = PostmarkClient(server_token=TOKEN, root_api_url=fake_postmark.url)
    model = {
        "subject": "New finding in Acme: Drift",
        "actor_name": "Ada",
        "severity": "high",
        "model_name": "Credit model",
        "org_name": "Acme",
        "finding_title": "Drift",
        "url": "https://app.acme.test/findings/f1",
    }

    client.emails.send_with_template(
        TemplateAlias="model-finding-created",
        TemplateModel=model,
        From="a@acme.test",
        To="b@acme.test",
    )

    [received] = fake_postmark.messages
    assert received.subject == "New finding in Acme: Drift"
    assert "Review the finding: https://app.acme.test/findings/f1" in (received.text_body or "")


# -- latency -------------------------------------------------------------------------------------


def _timed_send(server: FakePostmark, to: str = "ada@acme.test") -> float:
    started = time.perf_counter()
    answer = PostmarkClient(server_token=TOKEN, root_api_url=server.url).emails.send_with_template(
        TemplateAlias="receipt", TemplateModel={"total": "1"}, From="shop@acme.test", To=to
    )
    assert answer["ErrorCode"] == 0
    return time.perf_counter() - started


def test_latency_holds_every_api_answer_until_set_back_to_zero() -> None:
    with FakePostmark(templates=[RECEIPT], latency=0.3) as server:
        assert server.latency == 0.3
        assert _timed_send(server) >= 0.3
        server.reset()  # forgets messages, keeps the latency: it is a setting, not a fault
        assert server.latency == 0.3
        server.set_latency(0)
        assert _timed_send(server) < 0.3
        server.set_latency(0.2)
        assert _timed_send(server) >= 0.2
        assert len(server.messages) == 2


def test_latency_holds_concurrent_requests_together_not_one_after_another() -> None:
    with FakePostmark(templates=[RECEIPT], latency=0.4) as server:
        took: list[float] = []
        threads = [
            threading.Thread(target=lambda n=n: took.append(_timed_send(server, f"u{n}@acme.test")))
            for n in range(8)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        elapsed = time.perf_counter() - started
        assert len(took) == 8
        assert min(took) >= 0.4
        assert elapsed < 8 * 0.4 / 2  # serialised, they would take 3.2 s
        assert len(server.messages) == 8


def test_latency_spares_pages_and_control_endpoints() -> None:
    with FakePostmark(templates=[RECEIPT], latency=2.0) as server:
        started = time.perf_counter()
        assert requests.get(f"{server.url}__health", timeout=5).json() == {"status": "ok"}
        assert requests.get(server.url, timeout=5).status_code == 200
        assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("bad", [-0.1, 121, float("nan"), True, "0.1"])
def test_latency_out_of_range_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="latency"):
        FakePostmark(latency=bad)
    server = FakePostmark()
    with pytest.raises(ValueError, match="latency"):
        server.set_latency(bad)
    assert server.latency == 0.0


def test_stopping_cuts_an_answer_held_by_latency_short() -> None:
    server = FakePostmark(templates=[RECEIPT], latency=60).start()
    failures: list[BaseException] = []

    def send() -> None:
        try:
            _timed_send(server)
        except Exception as exc:  # noqa: BLE001 - the connection is closed under it
            failures.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 5
    while not server.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    server.stop()
    sender.join(10)
    assert not sender.is_alive()
    assert time.perf_counter() - started < 10


# -- strictness: addresses -----------------------------------------------------------------------

ENDPOINTS = ["/email", "/email/batch", "/email/withTemplate", "/email/batchWithTemplates"]
BAD_ADDRESSES = {
    "crlf-header": "b@acme.test\r\nBcc: c@x.test",
    "lf": "b@acme.test\nc@x.test",
    "trailing-crlf": "b@acme.test\r\n",
    "crlf-in-name": "Bob\r\n <b@acme.test>",
    "nul": "b@acme.test\x00",
    "tab": "Ada\t<b@acme.test>",
    "comment-redirect": "x <evil@attacker.test> ( <victim@acme.test>",
    "comment": "b@acme.test (Bob)",
    "two-angles": "x <evil@attacker.test> <victim@acme.test>",
    "unclosed-angle": "Bob <b@acme.test",
    "stray-closing-angle": "b@acme.test>",
    "unbalanced-quote": '"Bob <b@acme.test>',
    "group": "friends: b@acme.test;",
    "semicolon-list": "b@acme.test; c@acme.test",
    "empty-item": "b@acme.test,,c@acme.test",
    "trailing-comma": "b@acme.test,",
    "unquoted-comma-in-name": "Lovelace, Ada <ada@acme.test>",
    "route": "<@relay.test:b@acme.test>",
    "no-at": "bob",
}


def message_for(endpoint: str, **changes: Any) -> dict[str, Any]:
    """A valid message for ``endpoint`` (templated or plain), with changes."""
    if "Template" in endpoint:
        return welcome(**changes)
    return {
        "From": "Acme <notifications@acme.test>",
        "To": "ada@acme.test",
        "Subject": "Hello",
        "TextBody": "Hi",
        **changes,
    }


def answer_for(client: PostmarkClient, endpoint: str, message: dict[str, Any]) -> dict[str, Any]:
    """Post ``message`` alone (single endpoints) or between two good ones (batches).

    Returns its own result: Postmark's error body for a refused single send (checked to come
    with HTTP 422), or its item of the batch's 200 answer (the good neighbours checked sent).
    """
    if "batch" not in endpoint:
        try:
            answer: dict[str, Any] = client.call("POST", endpoint, data=message)
        except ClientError as error:
            refused = error
        else:
            return answer
        assert http_status(refused) == 422
        return {"ErrorCode": refused.error_code, "Message": str(refused).split("] ", 1)[1]}
    good = message_for(endpoint, To="neighbour@acme.test")
    messages = [good, message, good]
    body = {"Messages": messages} if "Template" in endpoint else messages
    answers = client.call("POST", endpoint, data=body)
    assert [answers[0]["ErrorCode"], answers[2]["ErrorCode"]] == [0, 0]
    result: dict[str, Any] = answers[1]
    return result


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("field", ["To", "Cc", "Bcc", "From", "ReplyTo"])
@pytest.mark.parametrize("bad", BAD_ADDRESSES.values(), ids=BAD_ADDRESSES.keys())
def test_an_address_field_holding_anything_but_addresses_is_refused_with_300_naming_it(
    server: FakePostmark, client: PostmarkClient, endpoint: str, field: str, bad: str
) -> None:
    answer = answer_for(client, endpoint, message_for(endpoint, **{field: bad}))

    assert answer["ErrorCode"] == 300
    assert answer["Message"].startswith(f"Error parsing '{field}': Illegal email address")
    assert "MessageID" not in answer
    # In a batch only the neighbours went; nothing of the bad message was kept.
    assert [m.to for m in server.messages] == (
        ["neighbour@acme.test"] * 2 if "batch" in endpoint else []
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_commas_inside_quoted_names_do_not_split_an_address_list(
    server: FakePostmark, client: PostmarkClient, endpoint: str
) -> None:
    to = (
        '"Lovelace, Ada" <ada@acme.test>, bob@acme.test, "Grace \\"Amazing\\" Hopper" <g@acme.test>'
    )

    answer = answer_for(client, endpoint, message_for(endpoint, To=to, Cc='"A, B" <c@acme.test>'))
    received = server.message(answer["MessageID"])
    details = client.call("GET", f"/messages/outbound/{answer['MessageID']}/details")
    page = requests.get(f"{server.url}messages/{answer['MessageID']}", timeout=5).text

    assert answer["ErrorCode"] == 0
    assert received.recipients == ["ada@acme.test", "bob@acme.test", "g@acme.test", "c@acme.test"]
    assert details["To"][0] == {"Email": "ada@acme.test", "Name": "Lovelace, Ada"}
    assert details["Recipients"] == received.recipients
    # The message's view shows the addresses as the server read them, name and address apart.
    shown = "Lovelace, Ada &lt;ada@acme.test&gt;, bob@acme.test, Grace &quot;Amazing&quot; Hopper"
    assert shown in page


def test_fifty_recipients_are_counted_across_to_cc_and_bcc(
    server: FakePostmark, client: PostmarkClient
) -> None:
    def some(prefix: str, n: int) -> str:
        return ", ".join(f"{prefix}{i}@acme.test" for i in range(n))

    accepted = send(client, welcome(To=some("to", 20), Cc=some("cc", 20), Bcc=some("bcc", 10)))
    with pytest.raises(ClientError) as error:
        send(client, welcome(To=some("to", 20), Cc=some("cc", 20), Bcc=some("bcc", 11)))

    assert accepted["ErrorCode"] == 0
    assert len(server.messages[0].recipients) == 50
    assert error.value.error_code == 300
    assert "at most 50 recipients" in str(error.value)
    assert len(server.messages) == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([{"Name": "X-Note", "Value": "a\r\nBcc: c@x.test"}], id="crlf-in-value"),
        pytest.param([{"Name": "X-Note", "Value": "a\nb"}], id="lf-in-value"),
        pytest.param([{"Name": "X-Note\r\nBcc", "Value": "c@x.test"}], id="crlf-in-name"),
        pytest.param([{"Name": "X-Note: y", "Value": "z"}], id="colon-in-name"),
        pytest.param([{"Name": "", "Value": "z"}], id="empty-name"),
    ],
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_header_with_a_line_break_is_refused_with_300(
    server: FakePostmark, client: PostmarkClient, endpoint: str, headers: list[Any]
) -> None:
    answer = answer_for(client, endpoint, message_for(endpoint, Headers=headers))

    assert answer["ErrorCode"] == 300
    assert "'Headers'" in answer["Message"]
    assert len(server.messages) == (2 if "batch" in endpoint else 0)


def test_well_formed_headers_are_accepted(server: FakePostmark, client: PostmarkClient) -> None:
    headers = [{"Name": "X-Campaign", "Value": "Spring: 10% off, \t today"}]

    send(client, welcome(Headers=headers))

    assert server.messages[0].request["Headers"] == headers


# -- strictness: bodies ----------------------------------------------------------------------------


def nested(depth: int) -> Any:
    """A JSON value nested ``depth`` levels deep (lists in an object in lists ...)."""
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def raw_post(
    server: FakePostmark,
    path: str,
    body: bytes,
    content_type: str = "application/json",
    method: str = "POST",
) -> requests.Response:
    return requests.request(
        method,
        f"{server.url}{path.lstrip('/')}",
        data=body,
        headers={"X-Postmark-Server-Token": TOKEN, "Content-Type": content_type},
        timeout=10,
    )


class _Kept(logging.Handler):
    """Keeps what is logged at INFO and above, or with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.INFO or record.exc_info is not None:
            self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """What the server logs at INFO and above, or with a traceback, while the test runs."""
    kept = _Kept()
    log = logging.getLogger("emailevents.testing.fake_postmark")
    level = log.level
    log.addHandler(kept)
    log.setLevel(logging.DEBUG)
    yield kept.records
    log.removeHandler(kept)
    log.setLevel(level)


def deep_template_body(depth: int) -> bytes:
    """A /email/withTemplate body whose JSON is ``depth`` levels deep in all."""
    # The body object is level 1, TemplateModel level 2, each nested() level one more.
    return json.dumps(welcome(TemplateModel={"deep": nested(depth - 2)})).encode()


UNPARSABLE = {
    "truncated": b'{"From": ',
    "not-utf8": b'{"To": "\xff\xfe@acme.test"}',
    "lone-surrogate": b'{"TemplateAlias": "welcome", "TemplateModel": {"name": "\\ud800"}}',
    "nan": b'{"TemplateAlias": "welcome", "TemplateModel": {"name": NaN}}',
    "infinity": b'{"TemplateAlias": "welcome", "TemplateModel": {"n": -Infinity}}',
    "overflowing-float": b'{"TemplateAlias": "welcome", "TemplateModel": {"n": 1e999}}',
    "5000-digits": b'{"TemplateAlias": "welcome", "TemplateModel": {"n": ' + b"9" * 5000 + b"}}",
    "bom": b'\xef\xbb\xbf{"From": "a@acme.test"}',
    "deep-100000": b"[" * 100_000 + b"]" * 100_000,
    "deep-900": deep_template_body(900),
    "deep-65": deep_template_body(65),
    "deep-65-in-a-string-free-way": b'{"a": ' + b"[" * 64 + b"]" * 64 + b"}",
}


@pytest.mark.parametrize("body", UNPARSABLE.values(), ids=UNPARSABLE.keys())
@pytest.mark.parametrize(
    "path",
    [*ENDPOINTS, "/templates", "/templates/validate", "/templates/42"],
)
def test_a_body_that_does_not_parse_is_402_never_a_500(
    server: FakePostmark, server_log: list[logging.LogRecord], path: str, body: bytes
) -> None:
    method = "PUT" if path == "/templates/42" else "POST"

    response = raw_post(server, path, body, method=method)

    assert (response.status_code, response.json()) == (
        422,
        {"ErrorCode": 402, "Message": "Received invalid JSON input."},
    )
    assert server.messages == []
    assert server_log == []


def test_json_nested_64_deep_is_accepted_and_65_is_not(server: FakePostmark) -> None:
    brackets_in_strings = welcome(TemplateModel={"name": "[[[[{{{{" * 100})

    assert raw_post(server, "/email/withTemplate", deep_template_body(64)).status_code == 200
    assert raw_post(server, "/email/withTemplate", deep_template_body(65)).status_code == 422
    ok = raw_post(server, "/email/withTemplate", json.dumps(brackets_in_strings).encode())
    assert ok.status_code == 200
    assert len(server.messages) == 2


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        pytest.param("/email/withTemplate", [], 403, id="list-for-an-object"),
        pytest.param("/email/withTemplate", "x", 403, id="string-for-an-object"),
        pytest.param("/email/batch", {"Messages": []}, 403, id="object-for-a-list"),
        pytest.param("/email/batchWithTemplates", [], 403, id="list-for-an-object-of-messages"),
        pytest.param("/email/batchWithTemplates", {"Messages": 3}, 403, id="messages-not-a-list"),
        pytest.param("/email/withTemplate", welcome(To=["a@acme.test"]), 403, id="to-a-list"),
        pytest.param("/email/withTemplate", welcome(To=5), 403, id="to-a-number"),
        pytest.param("/email/withTemplate", welcome(From={"a": 1}), 403, id="from-an-object"),
        pytest.param("/email/withTemplate", welcome(Cc=True), 403, id="cc-a-boolean"),
        pytest.param("/email/withTemplate", welcome(Tag=7), 403, id="tag-a-number"),
        pytest.param("/email/withTemplate", welcome(Headers="X: y"), 403, id="headers-a-string"),
        pytest.param("/email/withTemplate", welcome(Headers=[{"Name": 1}]), 403, id="header-name"),
        pytest.param("/email/withTemplate", welcome(TrackLinks=True), 403, id="tracklinks"),
        pytest.param("/email/withTemplate", welcome(TrackLinks=[]), 403, id="tracklinks-a-list"),
        pytest.param("/email/withTemplate", welcome(TrackOpens="yes"), 403, id="trackopens"),
        pytest.param("/email/withTemplate", welcome(TemplateModel=[1]), 403, id="model-a-list"),
        pytest.param(
            "/email/withTemplate",
            welcome(TemplateAlias=None, TemplateId="²"),
            1101,
            id="template-id-a-superscript-digit",
        ),
        pytest.param("/email", message_for("/email", TextBody=["x"]), 403, id="textbody-a-list"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_with_postmarks_code(
    server: FakePostmark,
    server_log: list[logging.LogRecord],
    path: str,
    body: Any,
    code: int,
) -> None:
    response = raw_post(server, path, json.dumps(body).encode())

    assert response.status_code == 422
    assert response.json()["ErrorCode"] == code
    assert server.messages == []
    assert server_log == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", "text/json", ""],
)
def test_a_body_that_is_not_declared_json_is_409(server: FakePostmark, content_type: str) -> None:
    response = raw_post(server, "/email/withTemplate", json.dumps(welcome()).encode(), content_type)

    assert response.status_code == 422
    assert response.json()["ErrorCode"] == 409
    assert server.messages == []


def test_a_charset_parameter_on_the_json_type_is_fine(server: FakePostmark) -> None:
    body = json.dumps(welcome()).encode()

    response = raw_post(server, "/email/withTemplate", body, "Application/JSON; charset=utf-8")

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/templates", "/templates/validate"])
def test_a_template_nested_past_64_levels_is_invalid_not_a_500(
    client: PostmarkClient, server_log: list[logging.LogRecord], path: str
) -> None:
    deep = "{{#each a}}" * 1000 + "x" + "{{/each}}" * 1000
    long_path = "{{" + ".".join(["a"] * 2000) + "}}"

    if path == "/templates":
        for text in (deep, long_path):
            with pytest.raises(ClientError) as error:
                client.call("POST", path, data={"Name": "Deep", "Subject": "S", "TextBody": text})
            assert error.value.error_code == 1122
            assert "nested more than 64 levels" in str(error.value)
    else:
        answer = client.call("POST", path, data={"Subject": long_path, "TextBody": deep})
        assert answer["AllContentIsValid"] is False
        assert "nested more than 64 levels" in answer["TextBody"]["ValidationErrors"][0]["Message"]
    assert server_log == []


# -- strictness, searched for with hypothesis ------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakePostmark]:
    """One server for many generated examples (hypothesis runs them in one test call)."""
    with FakePostmark(templates=[WELCOME, RECEIPT, NOTE], max_messages=100) as running:
        yield running


EVERY_ENDPOINT = [
    ("POST", "/email"),
    ("POST", "/email/batch"),
    ("POST", "/email/withTemplate"),
    ("POST", "/email/batchWithTemplates"),
    ("POST", "/templates"),
    ("PUT", "/templates/42"),
    ("POST", "/templates/validate"),
    ("GET", "/templates"),
    ("GET", "/templates/welcome"),
    ("DELETE", "/templates/999"),
    ("GET", "/messages/outbound"),
    ("GET", "/message-streams"),
]
FIELDS = [
    *("From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "HtmlBody", "TextBody", "Tag"),
    *("Headers", "Metadata", "MessageStream", "TrackOpens", "TrackLinks", "TemplateId"),
    *("TemplateAlias", "TemplateModel", "Name", "Alias", "TestRenderModel", "Messages"),
]


@dataclass(frozen=True)
class Deep:
    """``depth`` nested lists in a generated body, written out by :func:`to_json`."""

    depth: int

    @property
    def marker(self) -> str:
        return f"<deep {self.depth} {id(self)}>"


def to_json(body: Any) -> bytes:
    """``body`` as JSON, each ``Deep`` as its nested lists (json.dumps itself would recurse)."""
    deep: list[Deep] = []

    def placeholder(value: Any) -> str:
        assert isinstance(value, Deep)
        deep.append(value)
        return value.marker

    text = json.dumps(body, default=placeholder)
    for value in deep:
        text = text.replace(json.dumps(value.marker), "[" * value.depth + "]" * value.depth, 1)
    return text.encode()


# Any text, lone surrogates included (JSON escapes them as "\\ud800"), and some that trip
# careless code: digits int() refuses, too many digits, addresses with line breaks.
any_text = st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(
    ["a@acme.test", "welcome", "42", "\u00b2", "9" * 5000, "{{name}}", "a@acme.test\r\nBcc: b"]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: json.dumps writes them, JSON has no such thing
    | any_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(any_text, inner, max_size=4)
        | st.integers(60, 3000).map(Deep)  # deeper than a recursive parser goes
    ),
    max_leaves=20,
)
# A good message with some fields replaced by anything: gets past the first checks.
message_like = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([welcome(), message_for("/email")]),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
)
json_bodies = st.one_of(
    json_values,
    message_like,
    st.lists(message_like, max_size=3),
    st.fixed_dictionaries({"Messages": st.lists(message_like | json_values, max_size=3)}),
)
WELL_FORMED_ERROR = {"ErrorCode", "Message"}


def assert_answered_well(response: requests.Response, log: list[logging.LogRecord]) -> None:
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code >= 400:
        assert set(answer) >= WELL_FORMED_ERROR
        assert isinstance(answer["ErrorCode"], int)
        assert isinstance(answer["Message"], str)
    elif isinstance(answer, list):  # a batch: one result per message, each with its code
        assert all(set(item) >= WELL_FORMED_ERROR for item in answer)
    assert log == [], [r.getMessage() for r in log]


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(endpoint=st.sampled_from(EVERY_ENDPOINT), body=json_bodies)
def test_any_json_body_gets_a_postmark_answer_never_a_500(
    shared_server: FakePostmark,
    server_log: list[logging.LogRecord],
    endpoint: tuple[str, str],
    body: Any,
) -> None:
    method, path = endpoint
    shared_server.reset()  # keep WELCOME to edit, and room for new templates
    server_log.clear()  # one example's log at a time

    response = raw_post(shared_server, path, to_json(body), method=method)

    assert_answered_well(response, server_log)


@settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(EVERY_ENDPOINT),
    body=st.binary(max_size=200)
    | st.builds(lambda n, tail: b"[" * n + tail, st.integers(1, 5000), st.binary(max_size=5))
    | st.builds(
        lambda good, cut, junk: good[:cut] + junk,
        st.sampled_from([json.dumps(welcome()).encode(), json.dumps([welcome()]).encode()]),
        st.integers(0, 400),
        st.binary(max_size=20),
    ),
)
def test_any_bytes_get_a_postmark_answer_never_a_500(
    shared_server: FakePostmark,
    server_log: list[logging.LogRecord],
    endpoint: tuple[str, str],
    body: bytes,
) -> None:
    method, path = endpoint
    server_log.clear()  # one example's log at a time

    response = raw_post(shared_server, path, body, method=method)

    assert_answered_well(response, server_log)


local_parts = st.from_regex(r"[a-z0-9]{1,8}([._+-][a-z0-9]{1,8}){0,2}", fullmatch=True)
addresses = st.builds(
    "{}@{}.test".format, local_parts, st.from_regex(r"[a-z]{1,10}", fullmatch=True)
)
# Anything a person's name may hold, but control characters (line breaks, NUL) and lone
# surrogates, which are not names and which the server refuses wherever they stand.
display_names = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=30)


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    people=st.lists(st.tuples(display_names, addresses), min_size=1, max_size=4),
    sender_name=display_names,
)
def test_any_display_name_quoted_by_formataddr_is_accepted_and_read_back(
    shared_server: FakePostmark, people: list[tuple[str, str]], sender_name: str
) -> None:
    client = PostmarkClient(server_token=TOKEN, root_api_url=shared_server.url)
    to = ", ".join(formataddr(person) for person in people)

    answer = send(client, welcome(To=to, From=formataddr((sender_name, "notifications@acme.test"))))

    received = shared_server.message(answer["MessageID"])
    assert received.recipients == [address for _, address in people]
