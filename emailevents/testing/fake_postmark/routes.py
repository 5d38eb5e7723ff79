"""Postmark's API as FakePostmark answers it: sends, templates, the message search, streams.

:class:`Api` routes an authenticated request to its endpoint over the server's templates
(:mod:`.templates`), messages (:mod:`.messages`) and faults (:mod:`.faults`); each send is
checked by :mod:`.validation`. Every refusal is Postmark's error answer.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ...errors import RequestRefusedError
from ..mustache import Template, suggested_model
from .activity import Activity
from .faults import Faults
from .handler import Response, error_response, json_response
from .messages import Mailbox, ReceivedMessage
from .templates import SERVER_ID, StoredTemplate, TemplateStore
from .validation import Envelope, parse_json, plain_content, template_model

__all__ = ["DEFAULT_STREAMS", "STREAM_TYPES", "Api"]

MAX_BATCH = 500

# Assumed wording: the code is Postmark's, the sentence ours.
_TOO_MANY_BATCH = f"Too many batch messages: at most {MAX_BATCH} may be sent in one request."
# ActiveCampaign/postmark-gem spec/unit/postmark/error_spec.rb
_INACTIVE_SOME = "Message OK, but will not deliver to these inactive addresses: {}."

_MESSAGE_DETAILS = re.compile(r"/messages/outbound/([^/]+)/details")
_TEMPLATE_PATH = re.compile(r"/templates/([^/]+)")
_STREAM_PATH = re.compile(r"/message-streams/([^/]+)")
_SUPPRESSIONS_PATH = re.compile(r"/message-streams/([^/]+)/suppressions(/dump|/delete)?")

#: Every Postmark server starts with these three streams ("outbound" is the default one).
DEFAULT_STREAMS: Mapping[str, str] = {
    "outbound": "Transactional",
    "broadcast": "Broadcasts",
    "inbound": "Inbound",
}
STREAM_TYPES = frozenset({"Transactional", "Broadcasts", "Inbound"})
_STREAM_NAMES = {
    "outbound": "Default Transactional Stream",
    "broadcast": "Default Broadcast Stream",
    "inbound": "Default Inbound Stream",
}
# Assumed: Postmark's documentation names the endpoint, not its error for an unknown stream.
_STREAM_NOT_FOUND = (1226, "The message stream for the provided 'ID' was not found.")

_Endpoint = Callable[[str, str, dict[str, str], Any], Response]


class Api:
    """The endpoints of Postmark's server API, over a server's state.

    Args:
        templates: the templates it holds.
        mailbox: where accepted messages go.
        faults: the recipients made to fail.
        streams: its message streams, ID -> ``MessageStreamType``.
        activity: what happens after a send: records, webhooks, suppressions.
    """

    def __init__(
        self,
        templates: TemplateStore,
        mailbox: Mailbox,
        faults: Faults,
        streams: Mapping[str, str],
        activity: Activity,
    ) -> None:
        self._templates = templates
        self._mailbox = mailbox
        self._faults = faults
        self._streams = streams
        self._activity = activity

    def answer(self, method: str, route: str, query: dict[str, str], body: bytes) -> Response:
        """The answer to an authenticated API request; a refused one gets Postmark's error."""
        try:
            handler, allowed = self._route(route)
            if handler is None:
                raise RequestRefusedError(404, f"No such endpoint: {route}", status=404)  # noqa: TRY301
            if method not in allowed:
                raise RequestRefusedError(405, f"{method} is not allowed on {route}", status=405)  # noqa: TRY301
            data = parse_json(body) if method in {"POST", "PUT"} else None
            return handler(method, route, query, data)
        except RequestRefusedError as exc:
            return error_response(exc)

    def _route(self, route: str) -> tuple[_Endpoint | None, set[str]]:
        fixed: dict[str, tuple[_Endpoint, set[str]]]
        fixed = {
            "/email": (self._post_email, {"POST"}),
            "/email/batch": (self._post_email_batch, {"POST"}),
            "/email/withTemplate": (self._post_with_template, {"POST"}),
            "/email/batchWithTemplates": (self._post_batch_with_templates, {"POST"}),
            "/templates": (self._templates_collection, {"GET", "POST"}),
            "/templates/validate": (self._post_validate, {"POST"}),
            "/messages/outbound": (self._get_outbound, {"GET"}),
            "/message-streams": (self._get_streams, {"GET"}),
        }
        if route in fixed:
            return fixed[route]
        if _TEMPLATE_PATH.fullmatch(route):
            return self._template_item, {"GET", "PUT", "DELETE"}
        if _MESSAGE_DETAILS.fullmatch(route):
            return self._get_details, {"GET"}
        suppressions = _SUPPRESSIONS_PATH.fullmatch(route)
        if suppressions:
            return self._suppressions, {"GET"} if suppressions.group(2) == "/dump" else {"POST"}
        if _STREAM_PATH.fullmatch(route):
            return self._get_stream, {"GET"}
        return None, set()

    # -- sending --

    def _post_with_template(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> Response:
        if not isinstance(data, dict):
            raise RequestRefusedError(403, "The request body must be a JSON object.")
        answer = self._send_one(data, templated=True)
        return json_response(200, answer)

    def _post_email(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> Response:
        if not isinstance(data, dict):
            raise RequestRefusedError(403, "The request body must be a JSON object.")
        return json_response(200, self._send_one(data, templated=False))

    def _post_batch_with_templates(
        self, _m: str, _r: str, _q: dict[str, str], data: Any
    ) -> Response:
        messages = data.get("Messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            raise RequestRefusedError(
                403, "The request body must be an object with a 'Messages' list."
            )
        return self._batch(messages, templated=True)

    def _post_email_batch(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> Response:
        if not isinstance(data, list):
            raise RequestRefusedError(403, "The request body must be a JSON list of messages.")
        return self._batch(data, templated=False)

    def _batch(self, messages: list[Any], *, templated: bool) -> Response:
        if len(messages) > MAX_BATCH:
            raise RequestRefusedError(410, _TOO_MANY_BATCH)
        answers = []
        for item in messages:
            # Postmark answers 200 with one result per message, in request order, each with its
            # own ErrorCode ("the results are ordered the same as the original messages").
            try:
                if not isinstance(item, dict):
                    raise RequestRefusedError(403, "Each message must be a JSON object.")  # noqa: TRY301
                answers.append(self._send_one(item, templated=templated))
            except RequestRefusedError as exc:
                answers.append(exc.body())
        return json_response(200, answers)

    def _send_one(self, message: dict[str, Any], *, templated: bool) -> dict[str, Any]:
        """Check, render and record one message; its answer, or raise its RequestRefusedError."""
        template: StoredTemplate | None = None
        model: dict[str, Any] | None = None
        if templated:
            template, model = self._templates.for_send(message), template_model(message)
        envelope = Envelope.of(message)
        recipients = envelope.recipients()
        suppressed = self._activity.suppressions.suppressed(envelope.message_stream, recipients)
        inactive = self._faults.check_recipients(recipients, suppressed)
        if template is not None and model is not None:
            rendered = template.render(model)
            subject = rendered["Subject"]
            html_body, text_body = rendered.get("HtmlBody"), rendered.get("TextBody")
        else:
            subject, html_body, text_body = plain_content(message)
        received = ReceivedMessage(
            message_id=str(uuid.uuid4()),
            received_at=_now(),
            to=envelope.to,
            from_=envelope.from_,
            subject=subject,
            html_body=html_body,
            text_body=text_body,
            tag=envelope.tag,
            metadata=envelope.metadata,
            message_stream=envelope.message_stream,
            template_id=template.template_id if template else None,
            template_alias=template.alias if template else None,
            template_model=_copy(model) if model is not None else None,
            cc=envelope.cc,
            bcc=envelope.bcc,
            reply_to=envelope.reply_to,
            request=message,  # parsed from this request's body: nobody else holds it
        )
        self._mailbox.add(received)
        self._activity.accepted(received, inactive)
        return {
            "To": envelope.to,
            "SubmittedAt": received.received_at.isoformat(),
            "MessageID": received.message_id,
            "ErrorCode": 0,
            "Message": _INACTIVE_SOME.format(", ".join(inactive)) if inactive else "OK",
        }

    # -- templates API --

    def _templates_collection(
        self, method: str, _r: str, query: dict[str, str], data: Any
    ) -> Response:
        if method == "POST":
            if not isinstance(data, dict) or not data:
                raise RequestRefusedError(1109, "No template data was received.")
            allowed = {"Name", "Alias", "Subject", "HtmlBody", "TextBody", "TemplateType"}
            unknown = {k for k, v in data.items() if v is not None} - allowed - {"LayoutTemplate"}
            if unknown or data.get("LayoutTemplate") is not None:
                names = sorted(unknown) or ["LayoutTemplate"]
                raise RequestRefusedError(1123, f"Fields not allowed here: {', '.join(names)}.")
            template = self._templates.add({k: v for k, v in data.items() if k in allowed})
            return json_response(
                200, {"TemplateId": template.template_id, "Name": template.name, "Active": True}
            )
        count = _int_param(query, "Count", default=100, low=1, high=500)
        offset = _int_param(query, "Offset", default=0, low=0, high=10_000)
        kind = _param(query, "TemplateType") or "All"
        if kind.lower() not in {"all", "standard", "layout"}:
            raise RequestRefusedError(403, "TemplateType must be All, Standard or Layout.")
        chosen = [
            t for t in self._templates.listed() if kind.lower() in {"all", t.template_type.lower()}
        ]
        return _page("Templates", chosen, offset, count)

    def _template_item(self, method: str, route: str, _q: dict[str, str], data: Any) -> Response:
        match = _TEMPLATE_PATH.fullmatch(route)
        assert match is not None  # noqa: S101 - routed here by this pattern
        template = self._templates.find(match.group(1))
        if method == "GET":
            return json_response(200, template.details())
        if method == "DELETE":
            self._templates.remove(template.template_id)
            return json_response(
                200, {"ErrorCode": 0, "Message": f"Template {template.template_id} removed."}
            )
        if not isinstance(data, dict):
            raise RequestRefusedError(1109, "No template data was received.")
        changes = {
            "name": data.get("Name"),
            "alias": data.get("Alias"),
            "subject": data.get("Subject"),
            "html_body": data.get("HtmlBody"),
            "text_body": data.get("TextBody"),
        }
        edited = self._templates.edit(template, {k: v for k, v in changes.items() if v is not None})
        return json_response(
            200, {"TemplateId": edited.template_id, "Name": edited.name, "Active": True}
        )

    def _post_validate(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> Response:
        if not isinstance(data, dict):
            raise RequestRefusedError(403, "The request body must be a JSON object.")
        parts: dict[str, str] = {
            key: data[key]
            for key in ("Subject", "HtmlBody", "TextBody")
            if isinstance(data.get(key), str)
        }
        if not parts:
            raise RequestRefusedError(1109, "Give at least one of Subject, HtmlBody and TextBody.")
        model = data.get("TestRenderModel")
        if model is not None and not isinstance(model, dict):
            raise RequestRefusedError(403, "TestRenderModel must be a JSON object.")
        compiled = {key: Template(text) for key, text in parts.items()}
        answer: dict[str, Any] = {"AllContentIsValid": all(t.is_valid for t in compiled.values())}
        for key in ("HtmlBody", "TextBody", "Subject"):
            template = compiled.get(key)
            if template is None:
                answer[key] = None
                continue
            answer[key] = {
                "ContentIsValid": template.is_valid,
                "ValidationErrors": [e.as_postmark() for e in template.errors],
                "RenderedContent": template.render(model or {}) if template.is_valid else None,
            }
        answer["SuggestedTemplateModel"] = suggested_model(*compiled.values())
        return json_response(200, answer)

    # -- messages API --

    def _get_outbound(self, _m: str, _r: str, query: dict[str, str], _d: Any) -> Response:
        count = _int_param(query, "count", default=100, low=1, high=500)
        offset = _int_param(query, "offset", default=0, low=0, high=10_000)
        filters: dict[str, Callable[[ReceivedMessage, str], bool]] = {
            "recipient": lambda m, v: v.lower() in (r.lower() for r in m.recipients),
            "fromemail": lambda m, v: v.lower() in m.from_.lower(),
            "tag": lambda m, v: m.tag == v,
            "subject": lambda m, v: v.lower() in m.subject.lower(),
            "messagestream": lambda m, v: m.message_stream == v,
        }
        chosen = list(reversed(self._mailbox.snapshot()[0]))  # newest first
        for name, keep in filters.items():
            value = _param(query, name)
            if value:
                chosen = [m for m in chosen if keep(m, value)]
        # Postmark: "metadata_": "Filter by metadata key/value, e.g. metadata_color=blue".
        for name, value in query.items():
            if name.lower().startswith("metadata_") and value:
                key = name[len("metadata_") :]
                chosen = [m for m in chosen if m.metadata.get(key) == value]
        return _page("Messages", chosen, offset, count)

    def _get_details(self, _m: str, route: str, _q: dict[str, str], _d: Any) -> Response:
        match = _MESSAGE_DETAILS.fullmatch(route)
        assert match is not None  # noqa: S101 - routed here by this pattern
        try:
            received = self._mailbox.find(match.group(1))
        except KeyError:
            raise RequestRefusedError(701, "This message was not found.") from None
        return json_response(200, received.details())

    # -- message streams API --

    def _stream(self, stream_id: str) -> dict[str, Any]:
        """An item of ``GET /message-streams``, in Postmark's shape."""
        return {
            "ID": stream_id,
            "ServerID": SERVER_ID,
            "Name": _STREAM_NAMES.get(stream_id, stream_id),
            "Description": None,
            "MessageStreamType": self._streams[stream_id],
            "CreatedAt": "2024-01-01T00:00:00-05:00",
            "UpdatedAt": None,
            "ArchivedAt": None,
            "ExpectedPurgeDate": None,
            "SubscriptionManagementConfiguration": {"UnsubscribeHandlingType": "None"},
        }

    def _get_streams(self, _m: str, _r: str, query: dict[str, str], _d: Any) -> Response:
        kind = (_param(query, "MessageStreamType") or "All").lower()
        if kind not in {"all", *(t.lower() for t in STREAM_TYPES)}:
            raise RequestRefusedError(
                403, "MessageStreamType must be All, Inbound, Transactional or Broadcasts."
            )
        streams = [
            self._stream(stream_id)
            for stream_id, stream_type in self._streams.items()
            if kind in {"all", stream_type.lower()}
        ]
        return json_response(200, {"MessageStreams": streams, "TotalCount": len(streams)})

    def _suppressions(self, _m: str, route: str, query: dict[str, str], data: Any) -> Response:
        # https://postmarkapp.com/developer/api/suppressions-api
        match = _SUPPRESSIONS_PATH.fullmatch(route)
        assert match is not None  # noqa: S101 - routed here by this pattern
        stream_id, action = match.group(1), match.group(2)
        if stream_id not in self._streams:
            raise RequestRefusedError(*_STREAM_NOT_FOUND)
        suppressions = self._activity.suppressions
        if action == "/dump":
            return json_response(200, suppressions.dump(stream_id, query))
        if action == "/delete":
            return json_response(200, suppressions.delete_many(stream_id, data))
        return json_response(200, suppressions.create_many(stream_id, data))

    def _get_stream(self, _m: str, route: str, _q: dict[str, str], _d: Any) -> Response:
        match = _STREAM_PATH.fullmatch(route)
        assert match is not None  # noqa: S101 - routed here by this pattern
        stream_id = match.group(1)
        if stream_id not in self._streams:
            raise RequestRefusedError(*_STREAM_NOT_FOUND)
        return json_response(200, self._stream(stream_id))


def _now() -> datetime:
    return datetime.now(UTC)


def _copy(value: Any) -> Any:
    """A deep copy of JSON data, so what was received cannot change under the test."""
    return json.loads(json.dumps(value))


def _param(query: Mapping[str, str], name: str) -> str | None:
    # Postmark's query parameters are matched without regard to case (Count and count both work).
    for key, value in query.items():
        if key.lower() == name.lower():
            return value
    return None


def _int_param(query: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = _param(query, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestRefusedError(403, f"'{name}' must be a whole number.") from None
    if not low <= value <= high:
        raise RequestRefusedError(403, f"'{name}' must be between {low} and {high}.")
    return value


def _page(name: str, chosen: Sequence[Any], offset: int, count: int) -> Response:
    """One page of a listing, as Postmark answers it: the total, and ``count`` items' summaries
    from ``offset``."""
    page = chosen[offset : offset + count]
    return json_response(200, {"TotalCount": len(chosen), name: [item.summary() for item in page]})
