"""The recipients' pages, as HTML: the one-click unsubscribe's confirmation and result, the
preferences page, and the page that says what went wrong.

Plain server-rendered HTML: no JavaScript, readable on a phone (the viewport meta, one narrow
column), accessible (every switch has its label and description, a visible focus outline, text
at 4.5:1 contrast or more). Every value shown is escaped here, whatever it is: a category's
title from the registry, the recipient's address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Switch", "confirmation", "preferences", "problem", "unsubscribed"]

_STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #ffffff; color: #1a1a1a;
  font: 1.0625rem/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 40rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 1rem; }
p { margin: 0 0 1rem; }
a { color: #0b4fb3; text-decoration: underline; }
.notice { border-left: 0.3rem solid #1e6b34; background: #eef7f0; padding: 0.75rem 1rem; }
fieldset { border: 0; margin: 0 0 1.5rem; padding: 0; }
legend { font-weight: 600; margin-bottom: 0.5rem; }
.switch { display: flex; gap: 0.75rem; align-items: flex-start; padding: 0.75rem 0;
  border-top: 1px solid #c7c7c7; }
.switch input { width: 1.5rem; height: 1.5rem; margin: 0.1rem 0 0; flex: none;
  accent-color: #0b4fb3; }
.switch label { font-weight: 600; display: block; }
.switch .description { color: #3d3d3d; margin: 0.25rem 0 0; }
button { font: inherit; font-weight: 600; color: #ffffff; background: #0b4fb3;
  border: 0; border-radius: 0.375rem; padding: 0.75rem 1.5rem; min-height: 2.75rem;
  cursor: pointer; }
a:focus-visible, input:focus-visible, button:focus-visible {
  outline: 3px solid #1a1a1a; outline-offset: 3px; }
"""


@dataclass(frozen=True)
class Switch:
    """One category on the preferences page."""

    key: str
    title: str
    description: str
    enabled: bool


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}</main>\n</body>\n</html>\n"
    )


def confirmation(title: str, address: str, preferences_href: str) -> str:
    """The page a GET of an unsubscribe link shows: it changes nothing, its button does."""
    return _document(
        "Unsubscribe?",
        f"<p>Stop sending <strong>{escape(title)}</strong> emails to "
        f"<strong>{escape(address)}</strong>?</p>\n"
        # No action: the form posts to this very URL, as the List-Unsubscribe-Post does.
        '<form method="post">\n'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
        '<p><button type="submit">Unsubscribe</button></p>\n</form>\n'
        f'<p><a href="{escape(preferences_href)}">Choose which emails you get</a></p>\n',
    )


def unsubscribed(title: str, address: str, preferences_href: str) -> str:
    """The answer to the one-click POST (a mail client ignores it; a person sees it)."""
    return _document(
        "You are unsubscribed",
        f'<p class="notice" role="status">No more <strong>{escape(title)}</strong> emails will '
        f"be sent to <strong>{escape(address)}</strong>.</p>\n"
        f'<p><a href="{escape(preferences_href)}">Choose which emails you get</a></p>\n',
    )


def preferences(address: str, switches: Sequence[Switch], form_token: str, saved: bool) -> str:
    """The preferences page: a switch per category, saved with the form."""
    notice = '<p class="notice" role="status">Your choices are saved.</p>\n' if saved else ""
    rows = "".join(_switch(switch) for switch in switches)
    if not switches:
        return _document(
            "Email preferences", notice + "<p>There are no emails to choose from.</p>\n"
        )
    return _document(
        "Email preferences",
        f"{notice}<p>Choose which emails <strong>{escape(address)}</strong> gets.</p>\n"
        '<form method="post">\n'
        f'<input type="hidden" name="csrf" value="{escape(form_token)}">\n'
        f"<fieldset>\n<legend>Emails</legend>\n{rows}</fieldset>\n"
        '<p><button type="submit">Save</button></p>\n</form>\n',
    )


def _switch(switch: Switch) -> str:
    ident = escape(f"category-{switch.key}")
    checked = " checked" if switch.enabled else ""
    return (
        '<div class="switch">\n'
        f'<input type="checkbox" role="switch" id="{ident}" name="enabled" '
        f'value="{escape(switch.key)}" aria-describedby="{ident}-description"{checked}>\n'
        f'<div><label for="{ident}">{escape(switch.title)}</label>\n'
        f'<p class="description" id="{ident}-description">{escape(switch.description)}</p>'
        "</div>\n</div>\n"
    )


def problem(title: str, explanation: str) -> str:
    """What went wrong, in plain words, and that nothing changed."""
    return _document(title, f"<p>{escape(explanation)}</p>\n")
