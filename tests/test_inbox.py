"""The local Postmark server's inbox, in a real browser: headless Chromium driven by selenium.

One browser and one server for the module (a browser takes a second or two to start); each test
starts from an empty inbox. Set ``EMAILEVENTS_SCREENSHOTS=some/dir`` to keep a screenshot of each
step there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from postmarker.core import PostmarkClient

from emailevents.senders import Message, SendStatus
from emailevents.senders.postmark import PostmarkSender
from emailevents.testing.fake_postmark import FakePostmark, inbox

from .browser import chromium

try:
    from selenium.common.exceptions import NoAlertPresentException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the dev extra installs it
    pass  # tests.browser.chromium skips the tests

pytestmark = pytest.mark.slow

TOKEN = "test-token"
NOTE = {
    "Name": "Note",
    "Alias": "note",
    "Subject": "{{{subject}}}",
    "HtmlBody": "<h1>{{title}}</h1>{{{html}}}",
    "TextBody": "{{title}}\n\n{{text}}",
}
# Every way a message could try to run script in the page, each setting a global if it ran.
EVIL = "<script>window.pwned = 1; alert('subject')</script><img src=x onerror='window.pwned = 1'>"
EVIL_HTML = (
    "<p>Body</p><script>parent.pwned = 2; top.pwned = 2; alert('html')</script>"
    "<img src='x' onerror=\"parent.pwned = 3; top.pwned = 3\">"
)
EVIL_TEXT = "<script>window.pwned = 4</script> plain text"


# -- the browser and the server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    yield from chromium(tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="module")
def running() -> Iterator[FakePostmark]:
    with FakePostmark(templates=[NOTE]) as server:
        yield server


@pytest.fixture
def server(running: FakePostmark) -> FakePostmark:
    running.reset()
    return running


@pytest.fixture
def shot(browser: WebDriver) -> Callable[[str], None]:
    """Save a screenshot as ``name.png`` in ``$EMAILEVENTS_SCREENSHOTS``, when it is set."""
    directory = os.environ.get("EMAILEVENTS_SCREENSHOTS")

    def save(name: str) -> None:
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(directory) / f"{name}.png"))

    return save


def note(to: str, subject: str, **model: Any) -> Message:
    event_id = model.pop("event_id", f"ev-{to.split('@', maxsplit=1)[0]}")
    tag = model.pop("tag", "note_sent")
    return Message(
        event_key=tag,
        event_id=event_id,
        to=to,
        from_="Acme <notifications@acme.test>",
        template="note",
        template_model={"subject": subject, "title": subject, "html": "", "text": "", **model},
        tag=tag,
        metadata={"event_id": event_id},
    )


def send(server: FakePostmark, *messages: Message) -> None:
    sender = PostmarkSender(TOKEN, api_url=server.url)
    results = sender.send(list(messages))
    assert [r.status for r in results] == [SendStatus.SENT] * len(messages)


def subjects(browser: WebDriver) -> list[str]:
    """The list's subjects, read in one step: the live update may replace the rows meanwhile."""
    script = "return [...document.querySelectorAll('#rows td.subject')].map(e => e.innerText)"
    return list(browser.execute_script(script))


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], Any], seconds: float = 5) -> Any:
    return WebDriverWait(browser, seconds, poll_frequency=0.05).until(condition)


def no_alert(browser: WebDriver) -> bool:
    try:
        browser.switch_to.alert  # noqa: B018 - raises when there is none
    except NoAlertPresentException:
        return True
    return False


# -- the list ------------------------------------------------------------------------------------


def test_the_list_shows_messages_newest_first_with_time_to_subject_tag_and_status(
    browser: WebDriver, server: FakePostmark, shot: Callable[[str], None]
) -> None:
    send(server, note("ada@acme.test", "First", tag="user_invited"))
    send(server, note("bob@acme.test", "Second", tag="finding_created", event_id="ev-0123456789"))

    browser.get(server.url)
    shot("inbox-list")

    assert subjects(browser) == ["Second", "First"]
    newest = browser.find_element(By.CSS_SELECTOR, "#rows tr")
    cells = [td.text for td in newest.find_elements(By.TAG_NAME, "td")]
    assert cells[1:] == ["bob@acme.test", "Second", "finding_created ev-01234", "Sent"]
    assert len(cells[0]) == len("07:52:01")
    assert browser.title == "(2) Inbox · FakePostmark"


def test_opening_a_message_shows_its_tabs_and_each_part(
    browser: WebDriver, server: FakePostmark, shot: Callable[[str], None]
) -> None:
    send(
        server,
        note("ada@acme.test", "Your report", html="<p class='x'>Rendered <b>HTML</b></p>", n=7),
    )
    browser.get(server.url)

    browser.find_element(By.CSS_SELECTOR, "#rows td.to").click()  # the whole row opens it
    wait_for(browser, lambda b: "/messages/" in b.current_url)
    tabs = browser.find_elements(By.CSS_SELECTOR, "[role=tab]")
    shot("message-html")

    assert [t.text for t in tabs] == ["HTML", "Text", "TemplateModel", "Headers", "Raw request"]
    assert tabs[0].get_attribute("aria-selected") == "true"
    panels = browser.find_elements(By.CSS_SELECTOR, "[role=tabpanel]")
    assert [p.is_displayed() for p in panels] == [True, False, False, False, False]
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.html")
    assert frame.get_attribute("sandbox") == ""
    browser.switch_to.frame(frame)
    assert browser.find_element(By.CSS_SELECTOR, "p.x").text == "Rendered HTML"
    browser.switch_to.default_content()

    shown = {}
    for tab, panel in zip(tabs[1:], panels[1:], strict=True):
        tab.click()
        assert panel.is_displayed()
        assert not panels[0].is_displayed()
        shown[tab.text] = panel.text
        shot(f"message-{tab.get_attribute('data-tab')}")
    assert shown["Text"] == "Your report"
    assert '"n": 7' in shown["TemplateModel"]
    assert '"subject": "Your report",\n  "title"' in shown["TemplateModel"]  # pretty-printed
    assert "X-PM-Metadata-event_id ev-ada" in shown["Headers"]
    assert '"TemplateAlias": "note"' in shown["Raw request"]

    browser.find_element(By.LINK_TEXT, "← Inbox").click()
    wait_for(browser, lambda b: b.current_url == server.url)


def test_search_filters_by_recipient_subject_and_event_id(
    browser: WebDriver, server: FakePostmark, shot: Callable[[str], None]
) -> None:
    send(server, note("ada@acme.test", "Invitation", event_id="ev-ada-1"))
    send(server, note("bob@acme.test", "Finding raised", event_id="ev-bob-2"))
    send(server, note("cy@acme.test", "Another finding", event_id="ev-cy-3"))
    browser.get(server.url)

    def search_for(text: str) -> list[str]:
        box = browser.find_element(By.NAME, "q")
        box.clear()
        box.send_keys(text + "\n")
        wait_for(browser, lambda b: "?q=" in b.current_url)
        return subjects(browser)

    assert search_for("finding") == ["Another finding", "Finding raised"]
    shot("inbox-search")
    assert browser.find_element(By.ID, "count").text == "2 of 3 messages match “finding”."
    assert search_for("to:ada") == ["Invitation"]
    assert search_for("ev-bob-2") == ["Finding raised"]
    assert search_for("nobody") == []
    assert browser.find_element(By.ID, "rows").text == "No messages."


def test_clear_all_asks_first_then_empties_the_inbox(
    browser: WebDriver, server: FakePostmark, shot: Callable[[str], None]
) -> None:
    send(server, note("ada@acme.test", "One"), note("bob@acme.test", "Two"))
    browser.get(server.url)
    clear = browser.find_element(By.CSS_SELECTOR, "form.clear button")

    clear.click()
    wait_for(browser, lambda b: not no_alert(b))
    assert browser.switch_to.alert.text == "Delete every message this server received?"
    browser.switch_to.alert.dismiss()
    time.sleep(0.2)  # a form that was sent anyway would have emptied the list by now
    assert len(server.messages) == 2

    browser.find_element(By.CSS_SELECTOR, "form.clear button").click()
    wait_for(browser, lambda b: not no_alert(b))
    browser.switch_to.alert.accept()
    wait_for(browser, lambda b: b.find_element(By.ID, "rows").text == "No messages.")
    shot("inbox-cleared")
    assert server.messages == []
    assert browser.current_url == server.url


def test_a_message_sent_while_the_page_is_open_appears_without_a_reload(
    browser: WebDriver, server: FakePostmark, shot: Callable[[str], None]
) -> None:
    send(server, note("ada@acme.test", "Before"))
    browser.get(server.url)
    browser.execute_script("window.sameDocument = true")

    send(server, note("bob@acme.test", "After, live"))
    try:
        wait_for(browser, lambda b: subjects(b) == ["After, live", "Before"], seconds=4)
    except TimeoutException:
        pytest.fail(f"the list did not update by itself: {subjects(browser)}")
    shot("inbox-live")

    assert browser.execute_script("return window.sameDocument") is True  # no reload
    assert "new" in browser.find_element(By.CSS_SELECTOR, "#rows tr").get_attribute("class")
    assert browser.find_element(By.ID, "count").text == "2 messages, newest first."
    assert browser.title == "(2) Inbox · FakePostmark"


def test_script_in_a_message_never_runs_and_is_shown_as_text(
    browser: WebDriver, server: FakePostmark, shot: Callable[[str], None]
) -> None:
    client = PostmarkClient(server_token=TOKEN, root_api_url=server.url)
    browser.get(server.url)  # so that the message comes in through the live list's update
    client.emails.send(
        From="Acme <notifications@acme.test>",
        To="ada@acme.test",
        Subject=EVIL,
        HtmlBody=EVIL_HTML,
        TextBody=EVIL_TEXT,
        Tag="<b>tag</b>",
    )
    wait_for(browser, lambda b: subjects(b) == [EVIL])
    assert no_alert(browser)
    assert browser.execute_script("return window.pwned") is None
    browser.refresh()  # and as the server renders the list

    assert no_alert(browser)
    assert subjects(browser) == [EVIL]
    assert browser.find_element(By.CSS_SELECTOR, "#rows .tag-name").text == "<b>tag</b>"
    shot("evil-list")

    browser.find_element(By.CSS_SELECTOR, "#rows td.subject a").click()
    wait_for(browser, lambda b: "/messages/" in b.current_url)
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.html")
    browser.switch_to.frame(frame)
    wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "p").text == "Body")
    in_frame = browser.execute_script("return window.pwned")
    browser.switch_to.default_content()
    browser.find_element(By.CSS_SELECTOR, "[data-tab=text]").click()
    shot("evil-message")

    assert no_alert(browser)
    assert in_frame is None
    assert browser.execute_script("return window.pwned") is None
    assert browser.find_element(By.CSS_SELECTOR, "article h2").text == EVIL
    assert browser.find_element(By.CSS_SELECTOR, "pre.text").text == EVIL_TEXT


def test_the_snapshot_needs_no_server_and_its_tabs_work(
    browser: WebDriver, server: FakePostmark, shot: Callable[[str], None], tmp_path: Path
) -> None:
    send(server, note("ada@acme.test", "Older", html="<p>one</p>"))
    send(server, note("bob@acme.test", "Newer", html="<p>two</p>", text="second text"))
    older, newer = (m.message_id for m in server.messages)
    page = tmp_path / "messages.html"
    page.write_text(inbox.snapshot(server.messages), encoding="utf-8")

    browser.get(page.as_uri())
    assert subjects(browser) == ["Newer", "Older"]
    browser.find_element(By.CSS_SELECTOR, "#rows td.to").click()
    wait_for(browser, lambda b: b.current_url.endswith(f"#m-{newer}"))
    message = browser.find_element(By.ID, f"m-{newer}")
    message.find_element(By.CSS_SELECTOR, "[data-tab=text]").click()
    shot("snapshot")

    assert message.find_element(By.CSS_SELECTOR, "pre.text").text == "Newer\n\nsecond text"
    assert not message.find_element(By.CSS_SELECTOR, "iframe.html").is_displayed()
    # Each message's tabs are its own: the other one still shows its HTML.
    assert browser.find_element(By.CSS_SELECTOR, f"#m-{older} iframe.html").is_displayed()
    assert no_alert(browser)
