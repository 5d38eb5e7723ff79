"""The pages of the local Postmark-compatible server: an inbox, like a local mail catcher.

Server-rendered HTML: a compact list of the received messages, newest first, searched on the
server (``?q=``); a message view with tabs (HTML, text, TemplateModel, headers, the raw
request); a small script (:data:`SCRIPT`, served by the server as a file of its own so the
pages' Content-Security-Policy can refuse every inline script) switches the tabs, asks before
clearing and polls the server every second for new messages. :func:`snapshot` is the same list
and every message on one self-contained page, for keeping (``emailevents demo``).

Everything a client sent (subjects, names, bodies, the TemplateModel) is HTML-escaped; a
message's HTML is shown in a frame with an empty ``sandbox`` (no scripts, no same origin) whose
``srcdoc`` is escaped as an attribute value, so nothing in a message can run in the page.
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from .messages import ReceivedMessage

__all__ = [
    "LIST_LIMIT",
    "SCRIPT",
    "index_page",
    "layout",
    "list_rows",
    "live_answer",
    "message_page",
    "not_found_page",
    "search",
    "snapshot",
]

LIST_LIMIT = 200
"""How many messages the list shows, newest first (the search looks through all of them)."""

_e = html.escape


# -- search ----------------------------------------------------------------------------------------

_FIELDS: dict[str, Callable[[ReceivedMessage], list[str]]] = {
    "to": lambda m: [m.to, m.cc or "", m.bcc or "", *m.recipients],
    "from": lambda m: [m.from_],
    "subject": lambda m: [m.subject],
    "tag": lambda m: [m.tag or ""],
    "event": lambda m: list(m.metadata.values()),
    "id": lambda m: [m.message_id],
    "template": lambda m: [m.template_alias or "", str(m.template_id or "")],
}


def search(messages: Sequence[ReceivedMessage], query: str) -> list[ReceivedMessage]:
    """The messages that match ``query``, newest first.

    Each word of the query must be found, without regard to case, in the recipients, sender,
    subject, tag, a Metadata value (the event id), the MessageID or the template; a word with a
    field prefix (``to:``, ``from:``, ``subject:``, ``tag:``, ``event:``, ``id:``,
    ``template:``) only in that field. Quotes keep words together: ``subject:"new finding"``.
    """
    try:
        words = shlex.split(query)
    except ValueError:  # an unbalanced quote: take the words as they are
        words = query.split()
    tests = [_word_test(word.lower()) for word in words if word]
    newest_first = list(reversed(messages))
    return [m for m in newest_first if all(test(m) for test in tests)]


def _word_test(word: str) -> Callable[[ReceivedMessage], bool]:
    prefix, _, rest = word.partition(":")
    if rest and prefix in _FIELDS:
        fields = [_FIELDS[prefix]]
        word = rest
    else:
        fields = list(_FIELDS.values())
    return lambda m: any(word in value.lower() for read in fields for value in read(m))


# -- the list --------------------------------------------------------------------------------------


def index_page(
    messages: Sequence[ReceivedMessage], *, query: str, version: int, api_url: str
) -> str:
    """The inbox at ``/``: search, clear, and the list of ``messages`` that match ``query``."""
    found = search(messages, query)
    search_form = (
        "<form class='search' method='get' action='/' role='search'>"
        f"<input type='search' name='q' value='{_e(query)}' placeholder="
        "'Search to:, subject:, tag:, event: or any word' aria-label='Search messages' "
        "autocomplete='off'>"
        "<button type='submit'>Search</button>"
        + (" <a href='/'>Show all</a>" if query else "")
        + "</form>"
    )
    clear = (
        "<form class='clear' method='post' action='/__clear' "
        "data-confirm='Delete every message this server received?'>"
        "<button type='submit' class='danger'>Clear all</button></form>"
    )
    live = f"/__inbox?q={_e(_url_quote(query))}"
    body = (
        f"<div class='toolbar'>{search_form}{clear}</div>"
        # A screen reader reads the count out when the live list changes, not every row.
        f"<p class='count' id='count' aria-live='polite'>"
        f"{_count(len(found), len(messages), query)}</p>"
        f"{_table(list_rows(found, query=query))}"
        f"<p class='api'>Postmark API at <code>{_e(api_url)}</code> · "
        "<a href='/__webhooks'>Webhooks sent</a></p>"
    )
    attributes = f"data-live='{live}' data-version='{version}'"
    return layout(_title(len(messages)), body, attributes=attributes)


def list_rows(found: Sequence[ReceivedMessage], *, query: str = "", anchors: bool = False) -> str:
    """The rows of the list, newest first, at most :data:`LIST_LIMIT` (the live update's HTML).

    Args:
        found: the messages to show, newest first.
        query: the search, kept in each message's link so that its view can go back to it.
        anchors: link to ``#m-{MessageID}`` on the same page (the snapshot) instead.
    """
    if not found:
        return "<tr class='empty'><td colspan='5'>No messages.</td></tr>"
    rows = []
    for m in found[:LIST_LIMIT]:
        link = f"#m-{m.message_id}" if anchors else _message_link(m.message_id, query)
        when = m.received_at.isoformat(timespec="seconds")
        event_id = m.metadata.get("event_id")
        event = (
            f"<span class='event' title='event_id {_e(event_id)}'>{_e(event_id[:8])}</span>"
            if event_id
            else ""
        )
        rows.append(
            f"<tr data-id='{_e(m.message_id)}'>"
            f"<td class='time'><time datetime='{when}' title='{when}'>"
            f"{m.received_at:%H:%M:%S}</time></td>"
            f"<td class='to' title='{_e(m.to)}'>{_e(', '.join(m.recipients))}</td>"
            f"<td class='subject' title='{_e(m.subject)}'>"
            f"<a href='{link}'>{_e(m.subject or '(no subject)')}</a></td>"
            f"<td class='tag'><span class='tag-name'>{_e(m.tag or '')}</span> {event}</td>"
            f"<td class='status'><span class='badge'>{_e(m.summary()['Status'])}</span></td>"
            "</tr>"
        )
    return "".join(rows)


def _table(rows: str) -> str:
    return (
        "<table class='messages'><thead><tr><th>Time (UTC)</th><th>To</th><th>Subject</th>"
        f"<th>Tag / event</th><th>Status</th></tr></thead><tbody id='rows'>{rows}</tbody>"
        "</table>"
    )


def _count(found: int, total: int, query: str) -> str:
    shown = f" (the newest {LIST_LIMIT} shown)" if found > LIST_LIMIT else ""
    if query:
        return f"{found} of {total} messages match “{_e(query)}”{shown}."
    return f"{total} message{'' if total == 1 else 's'}, newest first{shown}."


def live_answer(
    messages: Sequence[ReceivedMessage], *, query: str, version: int, since: str | None
) -> dict[str, Any]:
    """The JSON of ``GET /__inbox``: the version, and the list's HTML when it changed."""
    if since == str(version):
        return {"version": version}
    found = search(messages, query)
    return {
        "version": version,
        "title": _title(len(messages)),
        "count": _count(len(found), len(messages), query),
        "rows": list_rows(found, query=query),
    }


def _title(total: int) -> str:
    return f"({total}) Inbox · FakePostmark" if total else "Inbox · FakePostmark"


# -- one message -----------------------------------------------------------------------------------


def message_page(
    message: ReceivedMessage,
    *,
    query: str = "",
    newer: str | None = None,
    older: str | None = None,
) -> str:
    """The view of one message at ``/messages/{MessageID}``, with links back and to its neighbours.

    Args:
        message: the message.
        query: the search it was opened from, kept in the links.
        newer: the MessageID of the next newer message in that search, if any.
        older: the MessageID of the next older one, if any.
    """
    back = "/" + (f"?q={_e(_url_quote(query))}" if query else "")
    links = [f"<a href='{back}'>← Inbox</a>"]
    if newer:
        links.append(f"<a href='{_message_link(newer, query)}' rel='prev'>↑ Newer</a>")
    if older:
        links.append(f"<a href='{_message_link(older, query)}' rel='next'>↓ Older</a>")
    nav = f"<nav class='pager'>{' '.join(links)}</nav>"
    return layout(message.subject or "(no subject)", nav + _message_view(message, "m"))


def not_found_page() -> str:
    """The page for a MessageID the server does not hold (any more)."""
    return layout("Not found", "<p>No such message. <a href='/'>Back to the inbox</a>.</p>")


def _message_view(m: ReceivedMessage, prefix: str) -> str:
    subject = m.subject or "(no subject)"
    tabs: list[tuple[str, str, str]] = []  # (key, label, panel HTML)
    if m.html_body:
        tabs.append(("html", "HTML", _frame(m.html_body, f"HTML body of {subject}")))
    if m.text_body:
        tabs.append(("text", "Text", f"<pre class='text'>{_e(m.text_body)}</pre>"))
    if m.template_model is not None:
        model = json.dumps(m.template_model, indent=2, ensure_ascii=False)
        tabs.append(("model", "TemplateModel", f"<pre class='json'>{_e(model)}</pre>"))
    tabs.append(("headers", "Headers", _headers(m)))
    raw = json.dumps(m.request, indent=2, ensure_ascii=False)
    tabs.append(("raw", "Raw request", f"<pre class='json'>{_e(raw)}</pre>"))
    buttons = "".join(
        f"<button type='button' role='tab' id='{prefix}-tab-{key}' data-tab='{key}' "
        f"aria-controls='{prefix}-panel-{key}'>{label}</button>"
        for key, label, _ in tabs
    )
    panels = "".join(
        f"<section role='tabpanel' class='panel' id='{prefix}-panel-{key}' "
        f"aria-labelledby='{prefix}-tab-{key}'><h3 class='panel-title'>{label}</h3>"
        f"{panel}</section>"
        for key, label, panel in tabs
    )
    return (
        f"<article class='message' id='{_e(prefix)}'><h2>{_e(subject)}</h2>{_fields(m)}"
        f"<div role='tablist' aria-label='Message parts'>{buttons}</div>{panels}</article>"
    )


def _fields(m: ReceivedMessage) -> str:
    template = (m.template_alias or str(m.template_id)) if m.template_id is not None else None
    rows = [
        ("From", _shown(m, "From")),
        ("To", _shown(m, "To")),
        ("Cc", _shown(m, "Cc")),
        ("Bcc", _shown(m, "Bcc")),
        ("Reply-To", _shown(m, "ReplyTo")),
        ("Tag", m.tag),
        ("Metadata", ", ".join(f"{k}={v}" for k, v in m.metadata.items()) or None),
        ("Stream", m.message_stream),
        ("Template", template),
        ("Received", m.received_at.isoformat(timespec="seconds")),
        ("MessageID", m.message_id),
        ("Status", m.summary()["Status"]),
    ]
    cells = "".join(f"<dt>{name}</dt><dd>{_e(value)}</dd>" for name, value in rows if value)
    return f"<dl class='fields'>{cells}</dl>"


def _shown(m: ReceivedMessage, field_name: str) -> str | None:
    """An address field as the server read it: ``Name <address>``, comma-separated."""
    pairs = m.addresses(field_name)
    return ", ".join(f"{n} <{a}>" if n else a for n, a in pairs) or None


def _headers(m: ReceivedMessage) -> str:
    """The message's header fields as Postmark would write them, then the request's Headers."""
    rows: list[tuple[str, str]] = [
        ("Message-ID", f"<{m.message_id}>"),
        ("Date", m.received_at.strftime("%a, %d %b %Y %H:%M:%S +0000")),
        ("From", m.from_),
        ("To", m.to),
    ]
    rows += [(name, value) for name, value in (("Cc", m.cc), ("Reply-To", m.reply_to)) if value]
    rows.append(("Subject", m.subject))
    if m.tag:
        rows.append(("X-PM-Tag", m.tag))
    rows += [(f"X-PM-Metadata-{k}", v) for k, v in m.metadata.items()]
    rows.append(("X-PM-Message-Stream", m.message_stream))
    sent = m.request.get("Headers")
    if isinstance(sent, list):
        rows += [(str(h.get("Name")), str(h.get("Value"))) for h in sent if isinstance(h, dict)]
    cells = "".join(f"<tr><th>{_e(n)}</th><td>{_e(v)}</td></tr>" for n, v in rows)
    return f"<table class='headers'>{cells}</table>"


def _frame(html_body: str, title: str) -> str:
    # An empty sandbox: no scripts, no forms, no same origin, no top navigation. srcdoc is
    # escaped as an attribute value, so the body cannot end the attribute or the element.
    return (
        f"<iframe class='html' sandbox='' title='{_e(title)}' "
        f'srcdoc="{_e(html_body, quote=True)}"></iframe>'
    )


def _message_link(message_id: str, query: str) -> str:
    tail = f"?q={_e(_url_quote(query))}" if query else ""
    return f"/messages/{_e(message_id)}{tail}"


def _url_quote(text: str) -> str:
    return quote(text, safe="")


# -- the snapshot ----------------------------------------------------------------------------------


def snapshot(messages: Sequence[ReceivedMessage]) -> str:
    """The list and every message on one page that needs no server (``messages.html``).

    The script is inline here (a file opened from disk has no Content-Security-Policy), so the
    tabs work; without it every part of every message is shown, one after the other.
    """
    found = search(messages, "")
    views = "".join(_message_view(m, f"m-{m.message_id}") for m in found)
    body = (
        f"<p class='count'>{_count(len(found), len(messages), '')} "
        "A snapshot: open a message from the list below.</p>"
        f"{_table(list_rows(found, anchors=True))}{views}"
    )
    # The header's link goes to the top of this page: "/" would be the disk's root folder.
    return layout(_title(len(messages)), body, script=f"<script>{SCRIPT}</script>", home="#")


# -- layout ----------------------------------------------------------------------------------------

_STYLE = """
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 12px;
  align-items: baseline; }
header a { color: #fff; text-decoration: none; }
header .live { margin-left: auto; font-size: 12px; color: #9aa3b5; }
header .live.off { color: #f3a4a4; }
main { padding: 12px 20px; max-width: 1280px; }
a { color: #2553b8; }
.toolbar { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; }
.search { display: flex; gap: 6px; flex: 1; align-items: center; }
.search input { flex: 1; max-width: 520px; padding: 6px 8px; border: 1px solid #c5cbd6;
  border-radius: 4px; font: inherit; }
button { font: inherit; padding: 5px 12px; border: 1px solid #c5cbd6; border-radius: 4px;
  background: #fff; cursor: pointer; }
button.danger { border-color: #c0392b; color: #c0392b; }
.count, .api { color: #4a5263; font-size: 13px; margin: 4px 0 8px; }
table.messages { width: 100%; border-collapse: collapse; background: #fff; table-layout: fixed;
  border: 1px solid #dde1e8; }
table.messages th { text-align: left; font-size: 12px; color: #4a5263; background: #eef0f4;
  padding: 6px 8px; }
table.messages th:nth-child(1) { width: 88px; } table.messages th:nth-child(2) { width: 24%; }
table.messages th:nth-child(4) { width: 22%; } table.messages th:nth-child(5) { width: 72px; }
table.messages td { padding: 6px 8px; border-top: 1px solid #eef0f4; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
table.messages tbody tr { cursor: pointer; }
table.messages tbody tr:hover { background: #f0f4ff; }
table.messages tr.new { animation: arrived 2s ease-out; }
@keyframes arrived { from { background: #fff4c2; } to { background: transparent; } }
td.subject a { color: inherit; text-decoration: none; font-weight: 600; }
td.time, .event { font-variant-numeric: tabular-nums; color: #4a5263; }
.tag-name { background: #eef0f4; border-radius: 3px; padding: 1px 5px; font-size: 12px; }
.event { font-family: ui-monospace, monospace; font-size: 12px; }
.badge { background: #def3e5; color: #17643a; border-radius: 3px; padding: 1px 6px;
  font-size: 12px; }
.pager { display: flex; gap: 16px; margin-bottom: 8px; }
article.message { background: #fff; border: 1px solid #dde1e8; border-radius: 6px;
  padding: 12px 16px; margin-bottom: 16px; }
article.message h2 { font-size: 18px; margin: 0 0 8px; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px;
  margin: 0 0 12px; font-size: 13px; color: #4a5263; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
[role=tablist] { display: flex; gap: 2px; border-bottom: 1px solid #dde1e8; }
[role=tab] { border: 1px solid transparent; border-bottom: none; border-radius: 4px 4px 0 0;
  background: none; color: #4a5263; }
[role=tab][aria-selected=true] { border-color: #dde1e8; background: #fff; color: #1d2330;
  font-weight: 600; margin-bottom: -1px; }
.panel { padding-top: 10px; }
.js .panel-title { display: none; }
.panel-title { font-size: 14px; margin: 12px 0 6px; }
iframe.html { width: 100%; height: 70vh; border: 1px solid #dde1e8; background: #fff; }
pre { background: #f7f8fa; border: 1px solid #dde1e8; padding: 8px; overflow: auto;
  white-space: pre-wrap; margin: 0; font-size: 13px; }
table.headers { border-collapse: collapse; font-size: 13px; }
table.headers th { text-align: left; padding: 3px 12px 3px 0; vertical-align: top;
  font-family: ui-monospace, monospace; font-weight: 600; white-space: nowrap; }
table.headers td { padding: 3px 0; overflow-wrap: anywhere; }
"""

SCRIPT = """
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function tabs(list) {
    var all = Array.prototype.slice.call(list.querySelectorAll("[role=tab]"));
    function select(tab) {
      all.forEach(function (t) {
        var on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      });
    }
    all.forEach(function (tab, i) {
      tab.addEventListener("click", function () { select(tab); });
      tab.addEventListener("keydown", function (event) {
        var step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (!step) { return; }
        var next = all[(i + step + all.length) % all.length];
        select(next);
        next.focus();
      });
    });
    if (all.length) { select(all[0]); }
  }
  Array.prototype.forEach.call(document.querySelectorAll("[role=tablist]"), tabs);

  var rows = document.getElementById("rows");
  if (rows) {
    rows.addEventListener("click", function (event) {
      var row = event.target.closest("tr");
      var link = row && row.querySelector("a");
      if (link && event.target.tagName !== "A") { link.click(); }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  var live = document.body.getAttribute("data-live");
  var version = document.body.getAttribute("data-version");
  var state = document.getElementById("live");
  if (!live || !rows) { return; }
  function poll() {
    fetch(live + "&since=" + encodeURIComponent(version), { cache: "no-store" })
      .then(function (answer) { return answer.json(); })
      .then(function (data) {
        state.textContent = "live";
        state.className = "live";
        if (String(data.version) === version) { return; }
        version = String(data.version);
        var seen = {};
        Array.prototype.forEach.call(rows.querySelectorAll("tr[data-id]"), function (row) {
          seen[row.getAttribute("data-id")] = true;
        });
        // The server escaped every field of these rows (inbox.list_rows).
        rows.innerHTML = data.rows;
        Array.prototype.forEach.call(rows.querySelectorAll("tr[data-id]"), function (row) {
          if (!seen[row.getAttribute("data-id")]) { row.classList.add("new"); }
        });
        document.getElementById("count").innerHTML = data.count;
        document.title = data.title;
      })
      .catch(function () {
        state.textContent = "server not answering";
        state.className = "live off";
      })
      .then(function () { window.setTimeout(poll, 1000); });
  }
  window.setTimeout(poll, 1000);
})();
"""
"""The pages' script, served at ``/__inbox.js``: tabs, the confirmation, the live list."""


def layout(
    title: str, body: str, *, script: str | None = None, attributes: str = "", home: str = "/"
) -> str:
    """A whole page around ``body`` (already escaped HTML), with the pages' style and script."""
    live = "<span class='live' id='live'>live</span>" if "data-live" in attributes else ""
    script = script if script is not None else "<script src='/__inbox.js' defer></script>"
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body {attributes}>"
        f"<header><a href='{home}'><strong>FakePostmark</strong></a><span>a local "
        f"Postmark-compatible server</span>{live}</header>"
        f"<main>{body}</main>{script}</body></html>\n"
    )
