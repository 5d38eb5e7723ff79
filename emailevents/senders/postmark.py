"""``PostmarkSender``: template sends through the ``postmarker`` client, one result per message.

One message per recipient. One message goes to ``/email/withTemplate``; more go to
``/email/batchWithTemplates`` in chunks of at most 500, chunked by us (:meth:`Sender.send`) so
that every chunk's per-message results are kept. Request bodies are built here, not by
postmarker's helpers: its template send forces ``TrackLinks`` and sends explicit nulls that
override the server's settings.

Every answer, and every way a request can fail, becomes a :class:`SendResult`; nothing postmarker
or requests raises escapes :meth:`PostmarkSender.send_batch`. The server token is kept out of
reprs, exceptions, results and logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from email.utils import getaddresses
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

import requests
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError
from urllib3.exceptions import MaxRetryError, NewConnectionError

from ..errors import ConfigurationError
from .base import Message, Sender, SendResult, SendStatus

__all__ = [
    "DEFAULT_API_URL",
    "ERROR_CODES",
    "TOKEN_VARIABLE",
    "URL_VARIABLE",
    "PostmarkSender",
    "outcome_of_error_code",
]

SEARCH_PAGE = 500  # Postmark's largest page of /messages/outbound
DEFAULT_API_URL = "https://api.postmarkapp.com/"
TOKEN_VARIABLE = "POSTMARK_SERVER_TOKEN"  # noqa: S105 - the variable's name, not a token
URL_VARIABLE = "POSTMARK_API_URL"

T, P, C = SendStatus.TRANSIENT, SendStatus.PERMANENT, SendStatus.CONFIGURATION

#: Postmark's ErrorCode -> what it means for one message, and why. Quotes are Postmark's own
#: words (postmarkapp.com/developer/api/overview#error-codes, and the template API's codes).
#: ``docs/postmark.md`` lists exactly these rows; a test keeps the two in step.
ERROR_CODES: Mapping[int, tuple[SendStatus, str]] = {
    # "Bad or missing API token" (HTTP 401). Nothing goes out until the settings change.
    10: (C, "bad or missing server API token"),
    # "Maintenance": "The Postmark API is offline for maintenance."
    100: (T, "Postmark is offline for maintenance"),
    # "Invalid email request": "Validation failed for the email request JSON data that you
    # provided." (a bad From or To, Metadata over its limits...)
    300: (P, "invalid email request"),
    # "Sender signature not found" / "Sender signature not confirmed": the registry's From
    # address is not one Postmark lets this server send from.
    400: (C, "the From address has no sender signature"),
    401: (C, "the From address's sender signature is not confirmed"),
    # "Invalid JSON" / "Incompatible JSON" / "JSON required": our request was wrong.
    402: (P, "invalid JSON"),
    403: (P, "incompatible JSON (an invalid field)"),
    409: (P, "JSON required"),
    # "Not allowed to send": "You ran out of credits."
    405: (C, "the account may not send (out of credits)"),
    # "Inactive recipient": "You tried to send to a recipient that has been marked as inactive.
    # Inactive recipients are ones that have generated a hard bounce or a spam complaint."
    406: (P, "the recipient is inactive (hard bounce, spam complaint or manual suppression)"),
    # "Too many batch messages" / "Forbidden attachment type".
    410: (P, "too many messages in one batch"),
    411: (P, "forbidden attachment type"),
    # "Account is pending" / "Account may not send".
    412: (C, "the Postmark account is pending approval"),
    413: (C, "the Postmark account may not send"),
    # "Rate Limit Exceeded", with HTTP 429: back off and try again later.
    429: (T, "rate limit exceeded"),
    # "Template not found": "The 'TemplateId' associated with this request is not valid or was
    # not found." The registry names a template this server does not have, or it is inactive.
    1101: (P, "the template does not exist or is inactive"),
    # "No template data received" / "A required template field is missing" (the TemplateModel).
    1109: (P, "the template data is missing"),
    1120: (P, "a required template field (the TemplateModel) is missing"),
}

BAD_TOKEN = 10  # ErrorCode "Bad or missing API token"
TEMPLATE_NOT_FOUND = 1101  # ErrorCode "Template not found"
UNAUTHORIZED = 401  # HTTP status: the token
NOT_POSTMARK_API = frozenset({404, 405})  # HTTP statuses: the URL is not Postmark's API

_RATE_LIMITED = 429
_SERVER_ERROR = 500
_INACTIVE = 406

# Postmark accepts a message some of whose recipients are inactive with ErrorCode 0 and the
# Message "Message OK, but will not deliver to these inactive addresses: <a list>."
_INACTIVE_ADDRESSES = re.compile(r"inactive addresses: (?P<addresses>.+?)\.?\s*$", re.IGNORECASE)
_CODE_PREFIX = re.compile(r"^\[-?\d+\] ")
# A token is sent as an HTTP header: visible ASCII only. Postmark's tokens are UUIDs.
_TOKEN = re.compile(r"[\x21-\x7e]+")

# postmarker logs every request body (names, addresses, the TemplateModel) and every answer at
# DEBUG on its "Postmarker" logger, which anyone can turn on. Its clients here log to this logger
# instead: outside the logging tree and disabled, so no configuration can turn it on.
_SILENT = logging.Logger("emailevents.senders.postmark.postmarker", logging.CRITICAL)  # noqa: LOG001
_SILENT.disabled = True


def outcome_of_error_code(code: int | None, http_status: int | None = None) -> SendStatus:
    """What a Postmark ErrorCode, with the HTTP status it came with, means for a message.

    An HTTP 429 or 5xx is transient whatever the body says: Postmark did not process the request.
    Otherwise a code in :data:`ERROR_CODES` decides. A code not in it (or none) is a configuration
    problem with HTTP 401 (the token), 404 or 405 (the URL is not Postmark's API), and permanent
    with any other status.
    """
    if http_status is not None and (http_status == _RATE_LIMITED or http_status >= _SERVER_ERROR):
        return SendStatus.TRANSIENT
    if code is not None and code in ERROR_CODES:
        return ERROR_CODES[code][0]
    if http_status == UNAUTHORIZED or http_status in NOT_POSTMARK_API:
        return SendStatus.CONFIGURATION
    return SendStatus.PERMANENT


class ErrorAnswer(NamedTuple):
    """An error answer in Postmark's form: ``{"ErrorCode": ..., "Message": ...}``."""

    status: int | None
    """The HTTP status it came with."""
    code: int | None
    message: str


def error_answer(exc: ClientError) -> ErrorAnswer:
    """The answer postmarker raised ``exc`` for; the HTTP status is on its cause."""
    code = exc.error_code if isinstance(exc.error_code, int) else None
    # postmarker's message is "[ErrorCode] Message"; the code has a field of its own.
    message = _CODE_PREFIX.sub("", str(exc.args[0]) if exc.args else "", count=1)
    return ErrorAnswer(status_of(exc.__cause__), code, message)


def status_of(exc: BaseException | None) -> int | None:
    """The HTTP status of the answer ``exc`` (a requests error) was raised for, if any."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


class _Secret:
    """A string that does not show itself in reprs (and so in ``vars()`` or tracebacks)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


class _Client(PostmarkClient):  # type: ignore[misc]  # postmarker ships no type hints
    """postmarker's client, minus the ways it shows the token or logs message bodies."""

    @property
    def server_token(self) -> str:
        # postmarker reads it in `call()`; kept wrapped so vars(client) does not print it.
        secret: _Secret = self.__dict__["_token"]
        return secret.value

    @server_token.setter
    def server_token(self, value: str) -> None:
        self.__dict__["_token"] = _Secret(value)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.logger = _SILENT
        # requests reads the environment (proxies, NO_PROXY, CA bundle, ~/.netrc) again for
        # every request: a fifth of a millisecond a send. Read once here, for this client.
        session = self.session
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(self.root_api_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle

    def __repr__(self) -> str:
        # postmarker's own repr is f"<PostmarkClient: {self.server_token}>".
        return f"<PostmarkClient {self.root_api_url}>"


class PostmarkSender(Sender):
    """Sends through Postmark's template API, one message per recipient.

    The URL is looked up when the sender is created: the argument, else ``POSTMARK_API_URL``,
    else Postmark's own. The token is needed only where mail is sent: a token given as the
    argument is checked at once; without one, ``POSTMARK_SERVER_TOKEN`` is read the first time
    the sender sends, searches or is :meth:`check`-ed. So a process that only emits (the web
    app) needs no token, and a worker without one records ``configuration_error`` outcomes.

    Args:
        server_token: the Server API token; ``POSTMARK_SERVER_TOKEN`` when not given.
        api_url: Postmark's API root; ``POSTMARK_API_URL`` when not given, else Postmark's own.
            Point it at ``emailevents fake-postmark`` to develop and test without Postmark.
        timeout: seconds to wait to connect, and then for each read of Postmark's answer. A
            connection that never opened is :attr:`SendStatus.TRANSIENT` (nothing was sent); a
            timeout or dropped connection after the request left is :attr:`SendStatus.UNKNOWN`
            (Postmark may have accepted it, and has no idempotency key to ask).
        concurrency: how many batch requests of one fan-out may be in flight at once (a fan-out
            to more than 500 recipients is sent in batches of 500). Each in a thread of its
            own, with its own connection; 1 sends them one after the other.

    Raises:
        ConfigurationError: a ``server_token`` that cannot be sent in an HTTP header, an API
            URL that is not ``http(s)://host...``, or a timeout or concurrency that is not a
            positive number. A missing token is raised where it is needed (:meth:`check`).
    """

    max_batch: ClassVar[int] = 500
    searchable: ClassVar[bool] = True  # Postmark's outbound message search, by Metadata

    def __init__(
        self,
        server_token: str | None = None,
        *,
        api_url: str | None = None,
        timeout: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        given = (server_token or "").strip()
        # None until needed: the environment's token is read on first use (see the docstring).
        self.__token: _Secret | None = None
        if given:
            self.__token = _Secret(_checked_token(given, "server_token"))
        self.api_url = _api_url(api_url)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigurationError(
                f"PostmarkSender(timeout=...) takes a positive number of seconds, not {timeout!r}"
            )
        self.timeout = float(timeout)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(
                "PostmarkSender(concurrency=...) takes a whole number of requests at once, 1 or "
                f"more, not {concurrency!r}"
            )
        self.concurrency = concurrency
        # postmarker's requests.Session is not thread-safe: one client per thread, created on
        # first use, and created anew in a forked worker process (Celery's prefork pool).
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"PostmarkSender(api_url={self.api_url!r})"

    def check(self) -> None:
        """Look up and check the server token now, rather than at the first send.

        Raises:
            ConfigurationError: no token (the message names ``POSTMARK_SERVER_TOKEN``), or one
                that cannot be sent in an HTTP header (the message does not repeat it).
        """
        self._token()

    def _token(self) -> str:
        if self.__token is None:
            # Not cached when missing: the error is raised again, at every send, until it is set.
            found = os.environ.get(TOKEN_VARIABLE, "")
            self.__token = _Secret(_checked_token(found, TOKEN_VARIABLE))
        return self.__token.value

    @property
    def client(self) -> PostmarkClient:
        """This thread's postmarker client, created on first use.

        Raises:
            ConfigurationError: see :meth:`check`.
        """
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            self._local.client = _Client(
                server_token=self._token(),
                root_api_url=self.api_url,
                max_retries=0,  # retries are the engine's, with backoff and a delivery log
                timeout=self.timeout,
                verbosity=0,  # and its logger is silenced: see _SILENT
            )
            self._local.pid = pid
        return self._local.client

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send one chunk; one result per message.

        Raises:
            ConfigurationError: no usable token (see :meth:`check`); the engine records it as
                ``configuration_error`` for every recipient.
        """
        token = self._token()
        results: list[SendResult | None] = [None] * len(messages)
        bodies: dict[int, dict[str, Any]] = {}
        for i, message in enumerate(messages):
            try:
                bodies[i] = _body(message)
            except (TypeError, ValueError) as exc:
                # One message that cannot be JSON must not keep its neighbours from going out.
                results[i] = SendResult(
                    SendStatus.PERMANENT, detail=f"the message cannot be sent as JSON: {exc}"
                )
        for i, result in zip(bodies, self._post(list(bodies.values())), strict=True):
            results[i] = result
        return [_hidden(r, token) for r in results if r is not None]

    def find_sent(self, event_id: str, recipients: Sequence[str]) -> dict[str, str] | None:
        """Search Postmark's outbound messages by the event id in their Metadata.

        Postmark indexes a message for search shortly after accepting it, so this answers for
        runs interrupted longer ago than that (the engine asks only about stale claims).
        """
        wanted = {r.lower() for r in recipients}
        found: dict[str, str] = {}
        offset = 0
        try:
            while True:
                page = self.client.call(
                    "GET",
                    "messages/outbound",
                    count=SEARCH_PAGE,
                    offset=offset,
                    metadata_event_id=event_id,
                )
                messages = page.get("Messages") or []
                for message in messages:
                    for address in message.get("Recipients") or []:
                        if str(address).lower() in wanted:
                            found[str(address).lower()] = str(message.get("MessageID"))
                offset += len(messages)
                if not messages or offset >= int(page.get("TotalCount", 0)):
                    return found
        except Exception:  # noqa: BLE001 - "cannot tell" is an answer the engine handles
            return None

    def _post(self, bodies: list[dict[str, Any]]) -> list[SendResult]:
        if not bodies:
            return []
        try:
            if len(bodies) == 1:
                answer = self.client.call("POST", "email/withTemplate", data=bodies[0])
                return [_result(answer, bodies[0])]
            answers = self.client.call(
                "POST", "email/batchWithTemplates", data={"Messages": bodies}
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome per message
            return [_failure(exc)] * len(bodies)
        if not isinstance(answers, list) or len(answers) != len(bodies):
            count = len(answers) if isinstance(answers, list) else type(answers).__name__
            detail = (
                f"Postmark answered a batch of {len(bodies)} messages with {count} results: "
                "which were sent is unknown"
            )
            return [SendResult(SendStatus.UNKNOWN, detail=detail)] * len(bodies)
        return [_result(a, b) for a, b in zip(answers, bodies, strict=True)]


def _checked_token(value: str, source: str) -> str:
    """The token from ``source`` (the argument or the variable), trimmed and checked."""
    token = value.strip()
    if not token:
        raise ConfigurationError(
            "PostmarkSender needs a Postmark server token: pass server_token=... or set the "
            f"{TOKEN_VARIABLE} environment variable"
        )
    if not _TOKEN.fullmatch(token):
        # Never echo it: requests would, in the InvalidHeader error it raises for this.
        raise ConfigurationError(
            f"the Postmark server token from {source} has spaces or characters that cannot go "
            "in an HTTP header; copy it again from the server's API Tokens tab"
        )
    return token


def _api_url(given: str | None) -> str:
    source = "api_url" if given else URL_VARIABLE
    url = (given or os.environ.get(URL_VARIABLE, "").strip() or DEFAULT_API_URL).strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(
            f"{source} must be Postmark's API URL, such as {DEFAULT_API_URL} or "
            f"http://127.0.0.1:9025/ for `emailevents fake-postmark`; got {url!r}"
        )
    # Endpoints are joined relative to it (urljoin), so a path prefix is kept only with a slash.
    return url if url.endswith("/") else url + "/"


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
    if message.headers:
        body["Headers"] = [
            {"Name": name, "Value": value} for name, value in message.headers.items()
        ]
    # What requests would raise for the whole request, raised here for this message alone.
    json.dumps(body, allow_nan=False)
    return body


def _result(answer: Any, body: Mapping[str, Any]) -> SendResult:
    if not isinstance(answer, Mapping):
        return SendResult(SendStatus.UNKNOWN, detail=f"unexpected answer: {type(answer).__name__}")
    code = answer.get("ErrorCode", 0)
    text = str(answer.get("Message", ""))
    message_id = answer.get("MessageID")
    if code == 0 and message_id:
        inactive = _inactive(text)
        recipients = (  # parsed only when Postmark names inactive addresses
            {a.lower() for _, a in getaddresses([str(body.get("To", ""))]) if a}
            if inactive
            else set()
        )
        if recipients and recipients <= inactive:
            # Accepted, but Postmark "will not deliver" to anyone it was for.
            return SendResult(
                SendStatus.PERMANENT, message_id=str(message_id), error_code=_INACTIVE, detail=text
            )
        # "OK"; or "Message accepted, but delivery may be delayed."; or accepted with a note
        # naming inactive addresses among several recipients: sent, and the detail says which.
        return SendResult(
            SendStatus.SENT, message_id=str(message_id), detail="" if text == "OK" else text
        )
    if isinstance(code, bool) or not isinstance(code, int) or code == 0:
        return SendResult(SendStatus.UNKNOWN, detail=f"no MessageID in Postmark's answer: {text}")
    return SendResult(outcome_of_error_code(code), error_code=code, detail=text)


def _inactive(text: str) -> set[str]:
    found = _INACTIVE_ADDRESSES.search(text)
    if found is None:
        return set()
    return {a.lower() for _, a in getaddresses([found["addresses"]]) if a}


def _failure(exc: Exception) -> SendResult:  # noqa: PLR0911 - one answer per kind of failure
    """The outcome of a request that raised; the detail never repeats headers (the token)."""
    if isinstance(exc, ClientError):
        status, code, text = error_answer(exc)
        return SendResult(
            outcome_of_error_code(code, status), error_code=code, detail=f"HTTP {status}: {text}"
        )
    if isinstance(exc, KeyError) and isinstance(exc.__context__, requests.HTTPError):
        # postmarker raises KeyError for a JSON error answer without an ErrorCode.
        status = status_of(exc.__context__)
        return SendResult(
            outcome_of_error_code(None, status),
            detail=f"HTTP {status} from {_where(exc.__context__)}, without a Postmark ErrorCode",
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        # An error answer that is not JSON: a proxy, a load balancer, not Postmark's API.
        status = exc.response.status_code
        detail = f"HTTP {status} from {_where(exc)}, not a Postmark answer"
        if status in NOT_POSTMARK_API:
            detail += f": is {URL_VARIABLE} Postmark's API URL?"
        return SendResult(outcome_of_error_code(None, status), detail=detail)
    if isinstance(
        exc, requests.ConnectTimeout | requests.exceptions.ProxyError | requests.exceptions.SSLError
    ) or (_never_connected(exc)):
        return SendResult(
            SendStatus.TRANSIENT, detail=f"could not connect to {_where(exc)}: {type(exc).__name__}"
        )
    if isinstance(exc, requests.exceptions.InvalidHeader | requests.exceptions.InvalidURL):
        # Refused by requests before anything left (its message may show the header's value).
        return SendResult(SendStatus.CONFIGURATION, detail=f"{type(exc).__name__} in the request")
    if isinstance(exc, requests.RequestException | ValueError):
        # The request may have reached Postmark: a read timeout, a dropped connection, an
        # answer cut short or not JSON. Postmark may have sent the message; never resend blindly.
        return SendResult(
            SendStatus.UNKNOWN, detail=f"no answer from {_where(exc)}: {type(exc).__name__}"
        )
    # Not a failure postmarker or requests is known to raise: say what it was.
    return SendResult(SendStatus.UNKNOWN, detail=f"{type(exc).__name__} while sending: {exc}")


def _hidden(result: SendResult, token: str) -> SendResult:
    """The result, with the token cut out of its detail should any answer have repeated it."""
    if token not in result.detail:
        return result
    return dataclasses.replace(result, detail=result.detail.replace(token, "<hidden>"))


def _where(exc: BaseException) -> str:
    """The host the request went to (never the URL's query, never a header)."""
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    host = urlsplit(url).netloc.rpartition("@")[2] if isinstance(url, str) else ""
    return host or "Postmark"


def _never_connected(exc: Exception) -> bool:
    if not isinstance(exc, requests.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError)
