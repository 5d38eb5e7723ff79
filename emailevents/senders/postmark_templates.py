"""``PostmarkTemplates``: the parts of Postmark's templates and message streams API that lint
and preview read (:class:`~emailevents.senders.postmark_api.PostmarkAPI`'s requests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..errors import PostmarkAPIError
from .postmark import NOT_POSTMARK_API, TEMPLATE_NOT_FOUND
from .postmark_api import PostmarkAPI

__all__ = ["PostmarkTemplates"]

_PAGE = 100  # Postmark's largest page of GET /templates


class PostmarkTemplates(PostmarkAPI):
    """Postmark's templates and message streams, read with the sender's token at its URL."""

    def templates(self) -> list[dict[str, Any]]:
        """Every template of the server (``GET /templates``, page by page)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", "templates", Count=_PAGE, Offset=len(found), TemplateType="All")
            items = page.get("Templates") or []
            found.extend(items)
            if not items or len(found) >= int(page.get("TotalCount", 0)):
                return found

    def template(self, ref: int | str) -> dict[str, Any] | None:
        """One template with its content (``GET /templates/{id or alias}``); None if unknown."""
        try:
            answer: dict[str, Any] = self.call("GET", f"templates/{quote(str(ref), safe='')}")
        except PostmarkAPIError as exc:
            if exc.error_code == TEMPLATE_NOT_FOUND:
                return None
            raise
        return answer

    def validate(
        self, template: Mapping[str, Any], model: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST /templates/validate``: the rendering with ``model``, and the variables used."""
        body: dict[str, Any] = {
            "Subject": template.get("Subject"),
            "HtmlBody": template.get("HtmlBody"),
            "TextBody": template.get("TextBody"),
            "TestRenderModel": dict(model or {}),
            "InlineCssForHtmlTestRender": True,
            "TemplateType": "Standard",
        }
        if template.get("LayoutTemplate"):
            # The layout's variables are part of the TemplateModel too.
            body["LayoutTemplate"] = template["LayoutTemplate"]
        answer: dict[str, Any] = self.call("POST", "templates/validate", data=body)
        return answer

    def streams(self) -> list[dict[str, Any]] | None:
        """Every message stream (``GET /message-streams``); None where the API has none."""
        try:
            answer = self.call(
                "GET", "message-streams", MessageStreamType="All", IncludeArchivedStreams="true"
            )
        except PostmarkAPIError as exc:
            if exc.status in NOT_POSTMARK_API:
                return None
            raise
        return list(answer.get("MessageStreams") or [])
