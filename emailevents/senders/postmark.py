"""``PostmarkSender``: template sends through the ``postmarker`` client, one result per message.

One message per recipient. One message goes to ``/email/withTemplate``; more go to
``/email/batchWithTemplates`` in chunks of at most 500, chunked by us so that every chunk's
per-message results are kept. Request bodies are built here, not by postmarker's helpers: its
template send forces ``TrackLinks`` and sends explicit nulls that override the server's settings.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import requests
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError
from urllib3.exceptions import MaxRetryError, NewConnectionError

from ..errors import ConfigurationError
from .base import Message, Sender, SendResult, SendStatus

__all__ = ["DEFAULT_API_URL", "ERROR_CODES", "PostmarkSender", "outcome_of_error_code"]

DEFAULT_API_URL = "https://api.postmarkapp.com/"
TOKEN_VARIABLE = "POSTMARK_SERVER_TOKEN"  # noqa: S105 - the variable's name, not a token
URL_VARIABLE = "POSTMARK_API_URL"

T, P, C = SendStatus.TRANSIENT, SendStatus.PERMANENT, SendStatus.CONFIGURATION

#: Postmark's ErrorCode -> what it means for one message. The quotes are Postmark's own words
#: (postmarkapp.com/developer/api/overview#error-codes).
ERROR_CODES: Mapping[int, tuple[SendStatus, str]] = {
    # Postmark, code 10: "Bad or missing API token". Nothing goes out until the settings change.
    10: (C, "bad or missing server API token"),
    # Postmark, code 100: "The Postmark API is offline for maintenance."
    100: (T, "Postmark is offline for maintenance"),
    # Postmark, code 300: "Validation failed for the email request JSON data that you provided."
    300: (P, "invalid email request"),
    # "Sender signature not found" / "Sender signature not confirmed": the From address.
    400: (C, "the From address has no sender signature in Postmark"),
    401: (C, "the From address's sender signature is not confirmed"),
    # "Invalid JSON" / "Incompatible JSON" / "JSON required": our request was wrong.
    402: (P, "invalid JSON"),
    403: (P, "incompatible JSON"),
    409: (P, "JSON required"),
    # Postmark, "Not allowed to send": "You have run out of credits."
    405: (C, "the account may not send (out of credits)"),
    # Postmark, "Inactive recipient": "You tried to send to a recipient that has been marked as
    # inactive. Inactive recipients are ones that have generated a hard bounce or a spam
    # complaint."
    406: (P, "the recipient is inactive (hard bounce, spam complaint or unsubscribe)"),
    # "Too many batch messages" / "Forbidden attachment type".
    410: (P, "too many messages in one batch"),
    411: (P, "forbidden attachment type"),
    # "Account is pending" / "Account may not send".
    412: (C, "the Postmark account is pending approval"),
    413: (C, "the Postmark account may not send"),
    # Postmark, "Template not found": "The 'TemplateId' associated with this request is not
    # valid or was not found."
    1101: (P, "the template does not exist"),
    # "Template data missing" / "TemplateModel is required".
    1109: (P, "the template data is missing"),
    1120: (P, "TemplateModel is missing"),
}


def outcome_of_error_code(code: int, http_status: int | None = None) -> SendStatus:
    """What a Postmark ErrorCode (and HTTP status) means for a message."""
    if code in ERROR_CODES:
        return ERROR_CODES[code][0]
    if http_status == 429 or (http_status is not None and http_status >= 500):  # noqa: PLR2004
        return SendStatus.TRANSIENT
    return SendStatus.PERMANENT


class _Client(PostmarkClient):  # type: ignore[misc]  # postmarker ships no type hints
    def __repr__(self) -> str:
        # postmarker's own repr prints the server token.
        return "<PostmarkClient>"


class PostmarkSender(Sender):
    """Sends through Postmark's template API.

    Args:
        server_token: the Server API token; ``POSTMARK_SERVER_TOKEN`` when not given.
        api_url: Postmark's API root; ``POSTMARK_API_URL``, else Postmark's own. Point it at
            ``emailevents fake-postmark`` to develop and test without Postmark.
        timeout: seconds to wait for Postmark's answer. A timeout after the request left is
            reported as :attr:`SendStatus.UNKNOWN`: the message may have been sent.

    Raises:
        ConfigurationError: no token given and ``POSTMARK_SERVER_TOKEN`` is not set.
    """

    max_batch: ClassVar[int] = 500

    def __init__(
        self, server_token: str | None = None, *, api_url: str | None = None, timeout: float = 30.0
    ) -> None:
        token = server_token or os.environ.get(TOKEN_VARIABLE, "")
        if not token:
            raise ConfigurationError(
                f"PostmarkSender needs a Postmark server token: pass server_token=... or set "
                f"the {TOKEN_VARIABLE} environment variable"
            )
        url = api_url or os.environ.get(URL_VARIABLE) or DEFAULT_API_URL
        self.api_url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.__token = token
        # postmarker's requests.Session is not thread-safe: one client per thread, created on
        # first use, and created anew in a forked worker process.
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"PostmarkSender(api_url={self.api_url!r})"

    @property
    def client(self) -> PostmarkClient:
        """This thread's postmarker client."""
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            self._local.client = _Client(
                server_token=self.__token,
                root_api_url=self.api_url,
                max_retries=0,  # retries are the engine's, with backoff and a delivery log
                timeout=self.timeout,
                verbosity=0,  # verbose postmarker logs request bodies: personal data
            )
            self._local.pid = pid
        return self._local.client

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        if not messages:
            return []
        try:
            if len(messages) == 1:
                answer = self.client.call("POST", "email/withTemplate", data=_body(messages[0]))
                return [_result(answer)]
            answers = self.client.call(
                "POST", "email/batchWithTemplates", data={"Messages": [_body(m) for m in messages]}
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome per message
            return [_failure(exc)] * len(messages)
        if not isinstance(answers, list) or len(answers) != len(messages):
            detail = f"Postmark answered the batch with {type(answers).__name__}, not one item "
            "per message"
            return [SendResult(SendStatus.UNKNOWN, detail=detail)] * len(messages)
        return [_result(a) for a in answers]


def _body(message: Message) -> dict[str, Any]:
    template = "TemplateId" if isinstance(message.template, int) else "TemplateAlias"
    body: dict[str, Any] = {
        template: message.template,
        "TemplateModel": dict(message.template_model),
        "From": message.from_,
        "To": message.to,
        "MessageStream": message.message_stream,
    }
    if message.tag:
        body["Tag"] = message.tag
    if message.metadata:
        body["Metadata"] = dict(message.metadata)
    return body


def _result(answer: Any) -> SendResult:
    if not isinstance(answer, Mapping):
        return SendResult(SendStatus.UNKNOWN, detail=f"unexpected answer: {type(answer).__name__}")
    code = answer.get("ErrorCode", 0)
    text = str(answer.get("Message", ""))
    if code == 0 and answer.get("MessageID"):
        # "OK", or "Message accepted, but delivery may be delayed.", or accepted with a note
        # about inactive addresses: all sent.
        return SendResult(
            SendStatus.SENT,
            message_id=str(answer["MessageID"]),
            detail="" if text == "OK" else text,
        )
    if not isinstance(code, int) or code == 0:
        return SendResult(SendStatus.UNKNOWN, detail=f"no MessageID in Postmark's answer: {text}")
    return SendResult(outcome_of_error_code(code), error_code=code, detail=text)


def _failure(exc: Exception) -> SendResult:  # noqa: PLR0911 - one answer per kind of failure
    if isinstance(exc, ClientError):
        status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
        code = int(exc.error_code) if exc.error_code is not None else -1
        return SendResult(
            outcome_of_error_code(code, status), error_code=code, detail=f"HTTP {status}: {exc}"
        )
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 429 or (status is not None and status >= 500):  # noqa: PLR2004
            return SendResult(SendStatus.TRANSIENT, detail=f"HTTP {status} from Postmark")
        if status in (404, 405):
            return SendResult(
                SendStatus.CONFIGURATION,
                detail=f"HTTP {status}: is {URL_VARIABLE} Postmark's API URL?",
            )
        return SendResult(SendStatus.PERMANENT, detail=f"HTTP {status} from Postmark")
    if isinstance(exc, requests.ConnectTimeout) or _never_connected(exc):
        return SendResult(SendStatus.TRANSIENT, detail=f"could not connect: {type(exc).__name__}")
    if isinstance(exc, requests.RequestException):
        # The request may have reached Postmark (a read timeout, a dropped connection).
        return SendResult(
            SendStatus.UNKNOWN, detail=f"no answer from Postmark: {type(exc).__name__}"
        )
    if isinstance(exc, KeyError | ValueError):
        return SendResult(
            SendStatus.TRANSIENT, detail="Postmark answered an error without an ErrorCode"
        )
    raise exc


def _never_connected(exc: Exception) -> bool:
    if not isinstance(exc, requests.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError)
