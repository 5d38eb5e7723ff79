"""The Postmark templates of the benchmark's two emails, as the local server loads them."""

from __future__ import annotations

from typing import Any

FINDING_CREATED: dict[str, Any] = {
    "Name": "Model finding created",
    "Alias": "model-finding-created",
    "Subject": "{{{subject}}}",
    "HtmlBody": (
        "<p>{{actor_name}} raised a finding in {{org_name}}:</p>"
        '<blockquote>{{finding_title}}</blockquote><p><a href="{{url}}">Review it</a></p>'
    ),
    "TextBody": (
        "{{{actor_name}}} raised a finding in {{{org_name}}}: {{{finding_title}}} {{{url}}}"
    ),
}

TEAM_BROADCAST: dict[str, Any] = {
    "Name": "Team broadcast",
    "Alias": "team-broadcast",
    "Subject": "{{{subject}}}",
    "HtmlBody": (
        '<p>{{actor_name}} wrote to {{team_name}} ({{org_name}}): <a href="{{url}}">open</a></p>'
    ),
    "TextBody": "{{{actor_name}}} wrote to {{{team_name}}} ({{{org_name}}}): {{{url}}}",
}

TEMPLATES = [FINDING_CREATED, TEAM_BROADCAST]
