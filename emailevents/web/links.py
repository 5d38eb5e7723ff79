"""The routes of recipients' links, below where the web app is mounted (``public_url``):

- ``POST /unsubscribe/TOKEN`` with the form ``List-Unsubscribe=One-Click`` (RFC 8058): the
  token's recipient stops getting the token's category; 200, no login, the same answer again.
- ``GET /unsubscribe/TOKEN``: a page asking to confirm, with a button that posts that form.
  It changes nothing: mail scanners fetch the links they find.
- ``GET /preferences/TOKEN``: every category with a switch, and a form to save them.
- ``POST /preferences/TOKEN``: saves every category, then 303 to the page, which says so.
  The form carries a token derived from the link's (:meth:`~emailevents.tokens.Signer.form_token`);
  without it, or with another, 403 and nothing is saved.

A token that is not ours (changed, cut short, signed with a key we do not hold) is refused with
400 before the body is read; the other methods with 405. Every answer is a page
(:mod:`.pages`). The logs say which category and a hint of the recipient, never the token (it
holds the address) nor the whole address.
"""

from __future__ import annotations

import logging
from email import policy
from email.parser import BytesParser
from http import HTTPStatus
from urllib.parse import parse_qs

from ..errors import ConfigurationError, LinkError
from ..preferences import How, Preferences
from ..tokens import Link, Signer
from . import pages
from .answers import UNAVAILABLE, Admitted, Request, Response, unavailable_reason

__all__ = ["FORM_MAX_BODY", "ROUTES", "Links", "hint"]

ROUTES = frozenset({"unsubscribe", "preferences"})
FORM_MAX_BODY = 65_536
"""The largest form read, in bytes: a switch per category is a few dozen."""

logger = logging.getLogger("emailevents.web")

Form = dict[str, list[str]]


def _page(status: HTTPStatus, title: str, explanation: str, *headers: tuple[str, str]) -> Response:
    return Response.of_html(status.value, pages.problem(title, explanation), *headers)


def _too_large() -> Response:
    logger.warning("page: a form over %d bytes refused (413)", FORM_MAX_BODY)
    return _page(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Too much", "That form is too large. Nothing changed."
    )


def hint(address: str) -> str:
    """Enough of ``address`` to tell two apart in a log, not enough to write to it."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


class Links:
    """Answers the recipients' links with the application's preferences.

    Args:
        preferences: where recipients' choices are kept (``events.preferences``).
        signer: verifies the links' tokens and the form's.
    """

    def __init__(self, preferences: Preferences, signer: Signer) -> None:
        self.preferences = preferences
        self.signer = signer

    def admit(self, request: Request, route: str, token: str) -> Response | Admitted:
        """The answer to a request for ``/ROUTE/TOKEN`` refused before its body is read, or what
        to read and answer it with."""
        if request.method not in {"GET", "POST"}:
            return _page(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Not allowed",
                "This page can only be viewed or its form sent.",
                ("Allow", "GET, POST"),
            )
        try:
            link = self.signer.verify(token)
        except LinkError:
            logger.warning("page: %s link refused (400): not a token we signed", route)
            return _page(
                HTTPStatus.BAD_REQUEST,
                "This link does not work",
                "This link is not valid: it may have been cut short or changed when it was "
                "copied. Nothing changed. Open the link from the email again, or copy all of it.",
            )
        if request.method == "GET":
            show = self._confirm if route == "unsubscribe" else self._show
            return Admitted(0, lambda _: show(link, token, request), _too_large)
        if request.content_length is not None and request.content_length > FORM_MAX_BODY:
            return _too_large()
        post = self._one_click if route == "unsubscribe" else self._save
        return Admitted(FORM_MAX_BODY, lambda body: post(link, token, request, body), _too_large)

    def _confirm(self, link: Link, _token: str, _request: Request) -> Response:
        title = self._title(link)
        if title is None:
            return _gone(link)
        page = pages.confirmation(title, link.recipient, _preferences_href(self.signer, link))
        return Response.of_html(HTTPStatus.OK.value, page)

    def _one_click(self, link: Link, _token: str, request: Request, body: bytes) -> Response:
        form = _form(request.content_type, body)
        if form is None or "One-Click" not in form.get("List-Unsubscribe", []):
            logger.warning("page: unsubscribe refused (400): not List-Unsubscribe=One-Click")
            return _page(
                HTTPStatus.BAD_REQUEST,
                "Nothing changed",
                "To unsubscribe, send the form List-Unsubscribe=One-Click.",
            )
        title = self._title(link)
        if title is None:
            return _gone(link)
        where = {"category": link.category, "recipient": hint(link.recipient)}
        try:
            current = self.preferences.get(link.recipient)[link.category]
            if current.enabled or current.how in {How.DEFAULT, How.APPLICATION}:
                self.preferences.set(
                    link.recipient, link.category, enabled=False, how=How.ONE_CLICK
                )
                done = "unsubscribed"
            else:
                done = "unsubscribed already"  # the same answer, and the first choice's time
        except ConfigurationError:
            return _kept_by_application(where)
        except UNAVAILABLE as exc:
            return _unavailable(exc, where)
        logger.info(
            "page: one-click unsubscribe category=%s recipient=%s: %s",
            link.category,
            where["recipient"],
            done,
            extra={**where, "done": done},
        )
        page = pages.unsubscribed(title, link.recipient, _preferences_href(self.signer, link))
        return Response.of_html(HTTPStatus.OK.value, page)

    def _show(self, link: Link, token: str, request: Request) -> Response:
        try:
            chosen = self.preferences.get(link.recipient)
        except UNAVAILABLE as exc:
            return _unavailable(exc, {"recipient": hint(link.recipient)})
        switches = [
            pages.Switch(key, category.title, category.description, chosen[key].enabled)
            for key, category in self.preferences.categories.items()
        ]
        saved = "1" in parse_qs(request.query).get("saved", [])
        page = pages.preferences(link.recipient, switches, self.signer.form_token(token), saved)
        return Response.of_html(HTTPStatus.OK.value, page)

    def _save(self, link: Link, token: str, request: Request, body: bytes) -> Response:
        form = _form(request.content_type, body)
        where = {"recipient": hint(link.recipient)}
        if form is None or not self.signer.check_form_token(token, "".join(form.get("csrf", []))):
            logger.warning(
                "page: preferences not saved (403): the form's token is missing or wrong"
            )
            return _page(
                HTTPStatus.FORBIDDEN,
                "Not saved",
                "This form is out of date or did not come from this page. Nothing changed. "
                "Open the page again and save from there.",
            )
        on = set(form.get("enabled", []))
        enabled = {key: key in on for key in self.preferences.categories}
        try:
            self.preferences.set_many(link.recipient, enabled, how=How.PAGE)
        except ConfigurationError:
            return _kept_by_application(where)
        except UNAVAILABLE as exc:
            return _unavailable(exc, where)
        off = sorted(key for key, value in enabled.items() if not value)
        logger.info(
            "page: preferences saved recipient=%s off=%s",
            where["recipient"],
            ",".join(off) or "-",
            extra={**where, "off": off},
        )
        # Post/redirect/get: a reload shows the page, it does not post again. A reference of
        # only a query keeps the path, wherever the app is mounted (RFC 3986, 5.2.2).
        return Response(HTTPStatus.SEE_OTHER.value, b"", "text/plain", (("Location", "?saved=1"),))

    def _title(self, link: Link) -> str | None:
        category = self.preferences.categories.get(link.category)
        return None if category is None else category.title


def _preferences_href(signer: Signer, link: Link) -> str:
    """The preferences page from an unsubscribe page: the same mount, a link of its own."""
    return f"../preferences/{signer.sign(link.recipient, link.category)}"


def _form(content_type: str | None, body: bytes) -> Form | None:
    """The fields of a form body, or ``None`` when it is not one.

    RFC 8058 (3.1): the one-click POST "SHOULD be sent as multipart/form-data" and "MAY be sent
    as application/x-www-form-urlencoded"; browsers send the latter.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        if kind == "application/x-www-form-urlencoded":
            return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
        if kind == "multipart/form-data":
            head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
            message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
            form: Form = {}
            for part in message.iter_parts() if message.is_multipart() else ():
                name = part.get_param("name", header="content-disposition")
                if isinstance(name, str):
                    form.setdefault(name, []).append(str(part.get_content()).strip())
            return form
    except (UnicodeError, ValueError, LookupError):
        return None
    return None


def _gone(link: Link) -> Response:
    logger.warning("page: category=%s is not in the registry (410)", link.category)
    return _page(
        HTTPStatus.GONE,
        "No such emails any more",
        "The emails this link was for are no longer sent. Nothing changed.",
    )


def _kept_by_application(where: dict[str, str]) -> Response:
    logger.error(
        "page: recipient=%s: the application keeps preferences itself (defaults.preferences in "
        "its registry): its own page changes them (409)",
        where["recipient"],
        extra=where,
    )
    return _page(
        HTTPStatus.CONFLICT, "Not here", "These choices are made elsewhere. Nothing changed."
    )


def _unavailable(exc: Exception, where: dict[str, str]) -> Response:
    logger.warning(
        "page: recipient=%s: the database is unavailable (503): %s",
        where["recipient"],
        unavailable_reason(exc),
        extra=where,
    )
    return _page(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "Try again later",
        "We could not reach your choices just now. Nothing changed. Please try again in a few "
        "minutes.",
        ("Retry-After", "60"),
    )
