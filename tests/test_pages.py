"""Recipients' links over real HTTP: the one-click unsubscribe (RFC 8058) and the preferences
page, on a real SQLite database, through the WSGI app on a threaded server, the ASGI app once,
and headless Chromium for the page a person uses."""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import sessionmaker

from emailevents import web
from emailevents.preferences import Preferences
from emailevents.tables import preferences as preferences_table
from emailevents.tokens import Signer
from emailevents.web import pages
from tests.conftest import examples
from tests.wsgiserver import post, serve

from .browser import chromium

try:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the dev extra installs it
    pass  # tests.browser.chromium skips the browser test

FORM = "application/x-www-form-urlencoded"
ONE_CLICK = b"List-Unsubscribe=One-Click"
ADA = "Ada@Acme.test"

serving = contextlib.contextmanager(serve)


@dataclass(frozen=True)
class Category:
    title: str
    description: str
    default: bool = True


CATEGORIES = {
    "digest": Category("Weekly digest", "A summary of the week, on Mondays."),
    "comments": Category("Comments", "When someone replies to you."),
    "product": Category("Product news & <offers>", 'Rarely: "what is new".', default=False),
}


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    return sqlite_engine


@pytest.fixture
def signer() -> Signer:
    return Signer(["key-2026"])


def site_for(engine: sa.Engine, signer: Signer) -> web.Site:
    sessions = sessionmaker(engine)
    return web.Site(sessions, preferences=Preferences(sessions, CATEGORIES), signer=signer)


@pytest.fixture
def port(engine: sa.Engine, signer: Signer) -> Iterator[int]:
    yield from serve(web.WsgiApp(site_for(engine, signer)))


def rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(
                preferences_table.c.recipient,
                preferences_table.c.category,
                preferences_table.c.enabled,
                preferences_table.c.how,
                preferences_table.c.changed_at,
            ).order_by(preferences_table.c.category)
        )
        return [tuple(row) for row in found]


def call(
    port: int, method: str, path: str, body: bytes = b"", content_type: str = FORM
) -> tuple[int, Any, str]:
    status, headers, data = post(
        port, body, auth=None, path=path, method=method, content_type=content_type
    )
    return status, headers, data.decode("utf-8")


def csrf_of(page: str) -> str:
    start = page.index('name="csrf" value="') + len('name="csrf" value="')
    return page[start : page.index('"', start)]


# -- one-click unsubscribe ----------------------------------------------------------------------


def test_the_one_click_post_opts_out_and_again_changes_nothing(
    port: int, engine: sa.Engine, signer: Signer
) -> None:
    path = "/unsubscribe/" + signer.sign(ADA, "digest")
    status, headers, page = call(port, "POST", path, ONE_CLICK)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Weekly digest" in page
    ((recipient, category, enabled, how, changed_at),) = rows(engine)
    assert (recipient, category, enabled, how) == ("ada@acme.test", "digest", False, "one_click")
    assert call(port, "POST", path, ONE_CLICK)[0] == 200
    assert rows(engine) == [("ada@acme.test", "digest", False, "one_click", changed_at)]


def test_the_one_click_post_as_multipart_form_data(
    port: int, engine: sa.Engine, signer: Signer
) -> None:
    # RFC 8058, 3.1: the POST "SHOULD be sent as multipart/form-data".
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n"
        b"--b0undary--\r\n"
    )
    path = "/unsubscribe/" + signer.sign(ADA, "comments")
    assert call(port, "POST", path, body, "multipart/form-data; boundary=b0undary")[0] == 200
    assert [row[:4] for row in rows(engine)] == [("ada@acme.test", "comments", False, "one_click")]


def test_a_get_of_the_link_shows_a_button_and_changes_nothing(
    port: int, engine: sa.Engine, signer: Signer
) -> None:
    path = "/unsubscribe/" + signer.sign(ADA, "product")
    status, headers, page = call(port, "GET", path)
    assert status == 200
    assert headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    )
    assert (headers["X-Content-Type-Options"], headers["Referrer-Policy"]) == (
        "nosniff",
        "no-referrer",
    )
    assert headers["Cache-Control"] == "no-store"
    assert "Product news &amp; &lt;offers&gt;" in page
    assert "<offers>" not in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert 'href="../preferences/' in page
    assert rows(engine) == []


def test_a_post_without_the_one_click_field_changes_nothing(
    port: int, engine: sa.Engine, signer: Signer
) -> None:
    path = "/unsubscribe/" + signer.sign(ADA, "digest")
    assert call(port, "POST", path, b"List-Unsubscribe=Maybe")[0] == 400
    assert call(port, "POST", path, ONE_CLICK, "text/plain")[0] == 400
    assert rows(engine) == []


def _tampered(signer: Signer) -> str:
    # A character of the signature that carries only signature bits (the last one may carry
    # base64's padding bits alone, so that changing it changes nothing once decoded).
    token = signer.sign(ADA, "digest")
    other = "A" if token[-5] != "A" else "B"
    return token[:-5] + other + token[-4:]


BAD_TOKENS = {
    "tampered": _tampered,
    "truncated": lambda signer: signer.sign(ADA, "digest")[:-4],
    "foreign key": lambda _: Signer(["someone-else"]).sign(ADA, "digest"),
    "not a token": lambda _: "hello",
}


@pytest.mark.parametrize("route", ["unsubscribe", "preferences"])
@pytest.mark.parametrize("bad", list(BAD_TOKENS))
def test_a_token_that_is_not_ours_is_refused_and_changes_nothing(
    port: int, engine: sa.Engine, signer: Signer, bad: str, route: str
) -> None:
    path = f"/{route}/{BAD_TOKENS[bad](signer)}"
    for method, body in [("GET", b""), ("POST", ONE_CLICK + b"&enabled=digest")]:
        status, headers, page = call(port, method, path, body)
        assert status == 400, (method, status)
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert "This link is not valid" in page
    assert rows(engine) == []


def test_a_link_signed_before_a_key_rotation_still_works(engine: sa.Engine) -> None:
    token = Signer(["old"]).sign(ADA, "digest")
    with serving(web.WsgiApp(site_for(engine, Signer(["new", "old"])))) as port:
        assert call(port, "POST", f"/unsubscribe/{token}", ONE_CLICK)[0] == 200
        status, _, page = call(port, "GET", f"/preferences/{token}")
        assert status == 200
        form = f"csrf={csrf_of(page)}&enabled=comments".encode()
        assert call(port, "POST", f"/preferences/{token}", form)[0] == 303
        # A page served before the rotation: its form's token was signed with the old key.
        form = f"csrf={Signer(['old']).form_token(token)}&enabled=comments".encode()
        assert call(port, "POST", f"/preferences/{token}", form)[0] == 303
    assert {row[1]: row[2] for row in rows(engine)} == {
        "comments": True,
        "digest": False,
        "product": False,
    }
    with serving(web.WsgiApp(site_for(engine, Signer(["new"])))) as port:
        assert call(port, "POST", f"/unsubscribe/{token}", ONE_CLICK)[0] == 400


# -- the preferences page -----------------------------------------------------------------------


def test_the_page_shows_every_category_and_saves_them_all(
    port: int, engine: sa.Engine, signer: Signer
) -> None:
    path = "/preferences/" + signer.sign(ADA, "digest")
    status, _, page = call(port, "GET", path)
    assert status == 200
    assert "ada@acme.test" in page
    for key, category in CATEGORIES.items():
        assert f'<label for="category-{key}">' in page
        assert html.escape(category.description) in page
    assert 'value="product" aria-describedby="category-product-description">' in page  # off
    assert "saved" not in page
    form = urllib.parse.urlencode({"csrf": csrf_of(page), "enabled": ["product", "comments"]}, True)
    status, headers, _ = call(port, "POST", path, form.encode())
    assert (status, headers["Location"]) == (303, "?saved=1")
    assert [row[1:4] for row in rows(engine)] == [
        ("comments", True, "page"),
        ("digest", False, "page"),
        ("product", True, "page"),
    ]
    _, _, page = call(port, "GET", path + "?saved=1")
    assert "Your choices are saved." in page
    assert 'value="digest" aria-describedby="category-digest-description">' in page


@pytest.mark.parametrize(
    "csrf",
    [None, "", "wrong", "another link's"],
)
def test_the_form_without_its_token_is_refused_and_changes_nothing(
    port: int, engine: sa.Engine, signer: Signer, csrf: str | None
) -> None:
    token = signer.sign(ADA, "digest")
    fields = {"enabled": "digest"}
    if csrf == "another link's":
        fields["csrf"] = signer.form_token(signer.sign("bob@acme.test", "digest"))
    elif csrf is not None:
        fields["csrf"] = csrf
    body = urllib.parse.urlencode(fields).encode()
    status, _, page = call(port, "POST", f"/preferences/{token}", body)
    assert status == 403
    assert "Nothing changed" in page
    assert rows(engine) == []


def test_other_methods_are_refused_and_without_preferences_there_is_no_page(
    port: int, engine: sa.Engine, signer: Signer
) -> None:
    path = "/preferences/" + signer.sign(ADA, "digest")
    for method in ["HEAD", "PUT", "DELETE"]:
        status, headers, _ = call(port, method, path)
        assert (status, headers["Allow"]) == (405, "GET, POST")
    with serving(web.WsgiApp(web.Site(sessionmaker(engine)))) as bare:
        assert call(bare, "GET", path)[0] == 404
        assert call(bare, "POST", "/unsubscribe/" + signer.sign(ADA, "digest"), ONE_CLICK)[0] == 404
    assert rows(engine) == []


def test_a_form_over_the_limit_is_refused_unread(port: int, signer: Signer) -> None:
    path = "/preferences/" + signer.sign(ADA, "digest")
    assert call(port, "POST", path, b"enabled=digest&" * 5000)[0] == 413


def test_a_category_no_longer_declared_is_gone(
    port: int, engine: sa.Engine, signer: Signer
) -> None:
    path = "/unsubscribe/" + signer.sign(ADA, "retired")
    assert call(port, "GET", path)[0] == 410
    assert call(port, "POST", path, ONE_CLICK)[0] == 410
    assert rows(engine) == []


def test_the_logs_hold_neither_the_token_nor_the_address(
    port: int, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    token = signer.sign(ADA, "digest")
    with caplog.at_level(logging.INFO, logger="emailevents.web"):
        call(port, "POST", f"/unsubscribe/{token}", ONE_CLICK)
        _, _, page = call(port, "GET", f"/preferences/{token}")
        call(port, "POST", f"/preferences/{token}", f"csrf={csrf_of(page)}".encode())
        call(port, "POST", f"/preferences/{token}", b"csrf=wrong")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "one-click unsubscribe category=digest recipient=a***@acme.test" in logged
    assert "preferences saved recipient=a***@acme.test" in logged
    assert "403" in logged
    assert token not in logged
    assert "ada@" not in logged.lower()


def test_the_asgi_app_answers_the_links_mounted_below_a_path(
    engine: sa.Engine, signer: Signer
) -> None:
    app = web.AsgiApp(site_for(engine, signer))
    token = signer.sign(ADA, "digest")

    def request(method: str, route: str, body: bytes = b"") -> dict[str, Any]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": f"/emails/{route}/{token}",
            "root_path": "/emails",
            "query_string": b"",
            "headers": [(b"content-type", FORM.encode())],
        }
        asyncio.run(app(scope, receive, send))
        return {"status": sent[0]["status"], "body": sent[1]["body"].decode()}

    shown = request("GET", "unsubscribe")
    assert shown["status"] == 200
    assert rows(engine) == []
    assert request("POST", "unsubscribe", ONE_CLICK)["status"] == 200
    assert [row[1:4] for row in rows(engine)] == [("digest", False, "one_click")]
    page = request("GET", "preferences")["body"]
    assert request("POST", "preferences", b"enabled=digest")["status"] == 403
    form = f"csrf={csrf_of(page)}&enabled=digest".encode()
    assert request("POST", "preferences", form)["status"] == 303
    assert {row[1]: row[2] for row in rows(engine)}["digest"] is True


# -- what the page shows is escaped -------------------------------------------------------------


class _Reader(HTMLParser):
    """The page's tags, and the text inside each label and description."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.inside: list[str] = []
        self.texts: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "label":
            self.inside.append(f"label:{found['for']}")
        elif found.get("class") == "description":
            self.inside.append(f"description:{found['id']}")
        else:
            self.inside.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"label", "p"} and self.inside:
            self.inside.pop()

    def handle_data(self, data: str) -> None:
        if self.inside and self.inside[-1]:
            self.texts[self.inside[-1]] = self.texts.get(self.inside[-1], "") + data


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"))


@given(title=TEXT, description=TEXT, address=TEXT)
def test_any_title_or_description_is_shown_escaped(
    title: str, description: str, address: str
) -> None:
    switch = pages.Switch("news", title, description, enabled=True)
    page = pages.preferences(address, [switch], "form-token", saved=False)
    reader = _Reader()
    reader.feed(page)
    reader.close()
    assert reader.texts.get("label:category-news", "") == title
    assert reader.texts.get("description:category-news-description", "") == description
    assert "script" not in reader.tags
    assert reader.tags.count("input") == 2  # the form's token and the one switch


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    asked=st.fixed_dictionaries(
        {
            "method": st.sampled_from(["GET", "POST", "PUT"]),
            "route": st.sampled_from(["unsubscribe", "preferences", "elsewhere"]),
            "token": st.text(max_size=80),
            "signed": st.booleans(),
            "body": st.binary(max_size=300),
            "content_type": st.sampled_from(
                [FORM, "multipart/form-data; boundary=x", "text/plain", ""]
            ),
        }
    )
)
def test_any_request_to_the_pages_is_answered_never_a_500(
    engine: sa.Engine, signer: Signer, asked: dict[str, Any]
) -> None:
    method, route, token, body = (asked[k] for k in ("method", "route", "token", "body"))
    content_type = asked["content_type"]
    signed = asked["signed"]
    app = web.WsgiApp(site_for(engine, signer))
    link = signer.sign(token or ADA, "digest") if signed else urllib.parse.quote(token, safe="")
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": f"/{route}/{link}",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    answered: list[str] = []
    app(environ, lambda status, _headers: answered.append(status))
    assert int(answered[0][:3]) < 500, (method, route, token, body, answered)


# -- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    # A phone's window: the page must fit it without scrolling sideways.
    yield from chromium(tmp_path_factory.mktemp("chromium"), window="390,844")


def switch_state(browser: WebDriver) -> dict[str, bool]:
    boxes = browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
    return {box.get_attribute("value") or "": box.is_selected() for box in boxes}


def save(browser: WebDriver) -> None:
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # A new page (the URL may say saved=1 already, from the save before), then the notice.
    WebDriverWait(browser, 5, poll_frequency=0.05).until(staleness_of(page))
    WebDriverWait(browser, 5, poll_frequency=0.05).until(lambda b: "saved=1" in b.current_url)
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text == "Your choices are saved."


@pytest.mark.slow
def test_a_person_switches_a_category_off_and_on_in_a_browser(
    browser: WebDriver, port: int, engine: sa.Engine, signer: Signer
) -> None:
    url = f"http://127.0.0.1:{port}/preferences/{signer.sign(ADA, 'digest')}"
    browser.get(url)
    viewport = browser.find_element(By.CSS_SELECTOR, "meta[name=viewport]")
    assert viewport.get_attribute("content") == "width=device-width, initial-scale=1"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"
    )
    for box in browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox]"):
        label = browser.find_element(By.CSS_SELECTOR, f"label[for='{box.get_attribute('id')}']")
        assert label.text == CATEGORIES[box.get_attribute("value") or ""].title
    assert switch_state(browser) == {"digest": True, "comments": True, "product": False}

    # The keyboard reaches the first switch, and its focus shows.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "category-digest"
    assert focused.value_of_css_property("outline-style") == "solid"

    browser.find_element(By.CSS_SELECTOR, "label[for='category-digest']").click()
    save(browser)
    browser.refresh()
    assert switch_state(browser) == {"digest": False, "comments": True, "product": False}
    assert [row[1:4] for row in rows(engine) if row[1] == "digest"] == [("digest", False, "page")]

    browser.find_element(By.ID, "category-digest").click()
    save(browser)
    browser.get(url)
    assert switch_state(browser) == {"digest": True, "comments": True, "product": False}

    # A form without its token (another site's, say) is refused, and nothing changes.
    browser.execute_script("document.querySelector('input[name=csrf]').remove()")
    browser.find_element(By.ID, "category-comments").click()
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The heading is read while the answer replaces the page: a stale one is read again.
    WebDriverWait(browser, 5, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: b.find_element(By.TAG_NAME, "h1").text == "Not saved"
    )
    browser.get(url)
    assert switch_state(browser) == {"digest": True, "comments": True, "product": False}
