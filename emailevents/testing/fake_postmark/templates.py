"""The templates a FakePostmark holds: read from YAML, checked, found and rendered as Postmark does.

A template is a :class:`StoredTemplate` with Postmark's fields; a server keeps them in a
:class:`TemplateStore`, which adds, edits and finds them by Postmark's rules and refuses what
Postmark refuses with its ErrorCodes (:class:`~emailevents.errors.RequestRefusedError`).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml

from ...errors import RequestRefusedError, TemplateLoadError
from ..mustache import Template

__all__ = ["SERVER_ID", "StoredTemplate", "TemplateStore", "read_template_files"]

SERVER_ID = 1
"""The id of the one Postmark server this is, as templates and message streams report it."""

MAX_TEMPLATES = 100
FIRST_ID = 1_000_001  # assumed: where ids start for templates given none

_TEMPLATE_FIELDS = frozenset(
    {"TemplateId", "Name", "Alias", "Subject", "HtmlBody", "TextBody", "Active", "TemplateType"}
)
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
# Recorded answers: the team's Postmark reference notes, and the threads and clients cited.
_TEMPLATE_ID_NOT_FOUND = (
    "The 'TemplateId' associated with this request is not valid or was not found."
)
# As quoted by an application's tests around anymail's Postmark backend.
_TEMPLATE_ALIAS_NOT_FOUND = (
    "The Template's 'Alias' associated with this request is not valid or was not found."
)


@dataclass(frozen=True)
class StoredTemplate:
    """A template the server holds, with Postmark's fields."""

    template_id: int
    name: str
    subject: str
    html_body: str | None = None
    text_body: str | None = None
    alias: str | None = None
    active: bool = True
    template_type: str = "Standard"

    @cached_property
    def compiled(self) -> dict[str, Template]:
        """The parsed Subject, HtmlBody and TextBody (those present)."""
        parts = {"Subject": self.subject, "HtmlBody": self.html_body, "TextBody": self.text_body}
        return {key: Template(text) for key, text in parts.items() if text is not None}

    def render(self, model: Mapping[str, Any]) -> dict[str, str]:
        """Subject, HtmlBody and TextBody (those present) rendered with ``model``.

        Raises:
            TemplateSyntaxError: a part has syntax errors.
        """
        return dict(self._rendered(json.dumps(model, sort_keys=True)))

    @cached_property
    def _rendered(self) -> Callable[[str], tuple[tuple[str, str], ...]]:
        # A batch usually carries one TemplateModel for all its messages (a fan-out): render
        # each distinct model once. Rendering is a pure function of the template and the model.
        @lru_cache(maxsize=256)
        def rendered(model_json: str) -> tuple[tuple[str, str], ...]:
            model = json.loads(model_json)
            return tuple((key, part.render(model)) for key, part in self.compiled.items())

        return rendered

    def summary(self) -> dict[str, Any]:
        """The item of ``GET /templates``."""
        return {
            "Active": self.active,
            "TemplateId": self.template_id,
            "Name": self.name,
            "Alias": self.alias,
            "TemplateType": self.template_type,
            "LayoutTemplate": None,
        }

    def details(self) -> dict[str, Any]:
        """The answer of ``GET /templates/{id or alias}``."""
        return {
            "TemplateId": self.template_id,
            "Name": self.name,
            "Alias": self.alias,
            "Subject": self.subject,
            "HtmlBody": self.html_body,
            "TextBody": self.text_body,
            "AssociatedServerId": SERVER_ID,
            "Active": self.active,
            "TemplateType": self.template_type,
            "LayoutTemplate": None,
        }


def read_template_files(source: str | os.PathLike[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(where, template fields)`` of each template in a YAML file or a directory of them.

    Raises:
        TemplateLoadError: no such file, no template files, not YAML, or not a mapping.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise TemplateLoadError(f"{path}: no .yaml or .yml template files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise TemplateLoadError(f"{path}: no such file or directory")
    found: list[tuple[str, Mapping[str, Any]]] = []
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TemplateLoadError(f"{file}: not valid YAML: {exc}") from exc
        items = data if isinstance(data, list) else [data]
        for index, item in enumerate(items):
            where = f"{file}" if len(items) == 1 else f"{file} (item {index + 1})"
            if not isinstance(item, Mapping):
                raise TemplateLoadError(f"{where}: a template is a mapping of Postmark fields")
            found.append((where, item))
    return found


class TemplateStore(dict[int, StoredTemplate]):
    """The templates a server holds, by TemplateId, added and found by Postmark's rules.

    Args:
        lock: the server's lock, held while the store changes or is searched: the server's
            state changes as one.
    """

    def __init__(self, lock: threading.RLock) -> None:
        super().__init__()
        self._lock = lock
        self._next_id = FIRST_ID

    def listed(self) -> list[StoredTemplate]:
        """The templates held now, by id."""
        with self._lock:
            return [self[i] for i in sorted(self)]

    def load(self, items: list[tuple[str, Mapping[str, Any]]]) -> list[StoredTemplate]:
        """Add templates given with Postmark's field names, each with where it comes from.

        Raises:
            TemplateLoadError: a template is malformed, its content does not parse, or an id or
                alias is used twice.
        """
        loaded = []
        for where, item in items:
            unknown = set(item) - _TEMPLATE_FIELDS
            if unknown:
                raise TemplateLoadError(f"{where}: unknown template fields {sorted(unknown)}")
            try:
                template = self.add(item)
            except RequestRefusedError as exc:
                raise TemplateLoadError(f"{where}: {exc.message}") from None
            loaded.append(template)
        return loaded

    def reset(self, items: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Hold only ``items`` again, with ids assigned as at the start."""
        with self._lock:
            self.clear()
            self._next_id = FIRST_ID
            self.load(items)

    def add(self, item: Mapping[str, Any]) -> StoredTemplate:
        """A checked template from Postmark's fields, added (``POST /templates`` and loading)."""
        with self._lock:
            if len(self) >= MAX_TEMPLATES:
                # Postmark: "a Server may have up to 100 templates"; 1105 is its limit code.
                raise RequestRefusedError(
                    1105, f"Template limit would be exceeded ({MAX_TEMPLATES})."
                )
            template_id = item.get("TemplateId")
            if template_id is None:
                template_id = self._next_id
            elif (
                isinstance(template_id, bool) or not isinstance(template_id, int) or template_id < 1
            ):
                raise RequestRefusedError(
                    1122, f"TemplateId must be a positive integer, not {template_id!r}."
                )
            elif template_id in self:
                raise RequestRefusedError(1122, f"TemplateId {template_id} is already used.")
            if (item.get("TemplateType") or "Standard") != "Standard":
                raise RequestRefusedError(
                    1122, "Only Standard templates are supported by this server."
                )
            template = self._checked(
                StoredTemplate(
                    template_id=template_id,
                    name=item.get("Name", ""),  # checked by _checked, like the rest
                    subject=item.get("Subject", ""),
                    html_body=item.get("HtmlBody"),
                    text_body=item.get("TextBody"),
                    alias=item.get("Alias"),
                    active=item.get("Active", True),
                ),
                replacing=None,
            )
            self._next_id = max(self._next_id, template_id + 1)
            self[template.template_id] = template
            return template

    def edit(self, template: StoredTemplate, changes: Mapping[str, Any]) -> StoredTemplate:
        """``template`` with ``changes`` (StoredTemplate's field names), checked and kept."""
        with self._lock:
            edited = self._checked(replace(template, **changes), replacing=template.template_id)
            self[template.template_id] = edited
            return edited

    def remove(self, template_id: int) -> None:
        """Forget a template (``DELETE /templates/{id}``)."""
        with self._lock:
            self.pop(template_id, None)

    def find(self, ref: str) -> StoredTemplate:
        """The template a path names, by id or alias (the templates API)."""
        with self._lock:
            if _is_id(ref):
                found = self.get(int(ref))
            else:
                found = next((t for t in self.values() if t.alias and t.alias == ref), None)
        if found is None:
            raise RequestRefusedError(1101, _TEMPLATE_ID_NOT_FOUND)
        return found

    def for_send(self, message: Mapping[str, Any]) -> StoredTemplate:
        """The active template a send names with ``TemplateId`` or ``TemplateAlias``."""
        template_id, alias = message.get("TemplateId"), message.get("TemplateAlias")
        found: StoredTemplate | None = None
        if template_id is not None:
            error = _TEMPLATE_ID_NOT_FOUND
            if isinstance(template_id, str) and _is_id(template_id):
                template_id = int(template_id)  # JSON deserialisers take "123" for 123
            if isinstance(template_id, int) and not isinstance(template_id, bool):
                with self._lock:
                    found = self.get(template_id)
        elif alias is not None:
            error = _TEMPLATE_ALIAS_NOT_FOUND
            with self._lock:
                found = next((t for t in self.values() if t.alias == alias), None)
        else:
            error = _TEMPLATE_ID_NOT_FOUND  # assumed: with neither, Postmark finds no template
        if found is None or not found.active:
            raise RequestRefusedError(1101, error)
        return found

    def _checked(self, template: StoredTemplate, replacing: int | None) -> StoredTemplate:
        # Codes: 1120 a required template field is missing, 1122 a templated field is invalid
        # (Postmark's list of template API codes); the sentences are assumed.
        _check_template_fields(template)
        if template.alias is not None:
            for other in self.values():
                same = other.alias and other.alias.lower() == template.alias.lower()
                if same and other.template_id != replacing:
                    raise RequestRefusedError(
                        1122, f"The Alias '{template.alias}' is already in use."
                    )
        problems = _content_errors(template)
        if problems:
            raise RequestRefusedError(1122, f"The template content is invalid: {problems}")
        return template


def _check_template_fields(template: StoredTemplate) -> None:
    for required, text in (("Name", template.name), ("Subject", template.subject)):
        if not isinstance(text, str) or not text.strip():
            raise RequestRefusedError(1120, f"The template's '{required}' field is required.")
    for optional, body in (("HtmlBody", template.html_body), ("TextBody", template.text_body)):
        if body is not None and not isinstance(body, str):
            raise RequestRefusedError(1122, f"The template's '{optional}' field must be a string.")
    if not template.html_body and not template.text_body:
        raise RequestRefusedError(1120, "A template needs an HtmlBody or a TextBody, or both.")
    if not isinstance(template.active, bool):
        raise RequestRefusedError(1122, "The template's 'Active' field must be true or false.")
    alias = template.alias
    if alias is not None and (not isinstance(alias, str) or not _ALIAS.fullmatch(alias)):
        raise RequestRefusedError(
            1122,
            f"Invalid Alias {alias!r}: letters, digits, '.', '-' and '_', starting with a letter.",
        )


def _content_errors(template: StoredTemplate) -> str | None:
    problems = [
        f"{part}: line {error.line}, character {error.character}: {error.message}"
        for part, compiled in template.compiled.items()
        for error in compiled.errors
    ]
    return "; ".join(problems) or None


def _is_id(text: str) -> bool:
    # Not str.isdigit: "²" is a digit that int() refuses, and 5000 digits are past int()'s limit.
    return text.isascii() and text.isdecimal() and len(text) <= 18  # noqa: PLR2004 - an int64
