"""Registry checks as findings with stable codes (``EE001`` ...), each with a hint.

:func:`lint` reports everything the registry loader checks, one finding per problem instead of one
exception, then checks what loading cannot: expressions through nullable columns, the context
values expressions name, what ``payload:`` classes accept, templates shared by several events,
the org settings the toggles are kept in and, given a :class:`~emailevents.PostmarkSender`, the
templates and message stream at Postmark. ``docs/lint.md`` lists every code with an example and
the fix; :data:`CODES` is that list, and a test keeps the two in step.

``lint(..., resolve=False)`` imports nothing: the registry's ``module:attr`` references name
the application's modules, and importing one runs its top-level code. It checks what needs no
import and says what it left out (:data:`NOT_IMPORTED`), for reviewing a change to a registry
without running the code it names.

A warning or info finding can be silenced where it is written, when it is on purpose, with a
comment on its line: ``template: welcome  # emailevents: ignore[EE038]``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from pydantic import ValidationError

from . import lintdigests
from .errors import PostmarkAPIError, PostmarkUnreachableError, Problem
from .expressions import Path
from .findings import CODES, Finding, LintReport, Severity
from .introspect import PathError, describe_path
from .registry import ALWAYS, Event, EventSpec, Expression, compile_registry
from .registry.model import context_problems, context_references
from .samples import sample_values
from .senders.postmark import PostmarkSender
from .senders.postmark_templates import PostmarkTemplates
from .tokens import LINK_VARIABLES
from .yamlnodes import Key

__all__ = [
    "CODES",
    "NOT_IMPORTED",
    "Finding",
    "LintReport",
    "PostmarkAPIError",
    "PostmarkUnreachableError",
    "Severity",
    "lint",
    "lint_report",
    "org_settings_toggles",
]

#: What lint leaves out when it imports nothing (``resolve=False``): the checks that need the
#: application's classes and callables.
NOT_IMPORTED = (
    "whether module:attr references import (EE012; their form is checked)",
    "entity classes and attribute paths (EE013, EE015, EE016, EE021-EE023, EE025, EE027, EE056)",
    "callables' signatures (EE013, EE014)",
    "payload classes (EE013, EE040-EE042) and the template variables they provide (EE053)",
)

_IGNORE = re.compile(r"#\s*emailevents:\s*ignore\[(?P<codes>[A-Z0-9,\s]+)\]")
_WORKERS = 8  # concurrent template requests: a few seconds for 100 templates over the internet


def lint(
    registry_path: str | FilePath,
    *,
    context_names: Iterable[str] | Mapping[str, Any] | None = None,
    toggle_keys: Mapping[str, int] | None = None,
    sender: PostmarkSender | None = None,
    resolve: bool = True,
) -> list[Finding]:
    """Check a registry file; every problem found, sorted by position.

    Args:
        registry_path: the ``events.yaml`` to check.
        context_names: the context values the application gives ``EmailEvents``: names, or the
            context mapping itself (then context callables' parameters are checked too). None
            when unknown: names that are not entities are then reported as info (EE026).
        toggle_keys: the org settings the engine keeps, as toggle key -> how many orgs switched
            it off (see :func:`org_settings_toggles`); None when not known.
        sender: a :class:`~emailevents.PostmarkSender` to check templates and the message
            stream at Postmark with; None to check offline only.
        resolve: import the registry's ``module:attr`` references and check what they name.
            False imports nothing, and so runs none of the application's code: the checks
            that need it are left out (:data:`NOT_IMPORTED`), the others are the same.

    Raises:
        ConfigurationError: Postmark rejected the token, or cannot be reached at the API URL;
            the message names the setting (never the token).
        PostmarkAPIError: Postmark answered a request with an error lint cannot make sense of
            (an outage: HTTP 5xx).
    """
    report = lint_report(
        registry_path,
        context_names=context_names,
        toggle_keys=toggle_keys,
        sender=sender,
        resolve=resolve,
    )
    return list(report.findings)


def lint_report(
    registry_path: str | FilePath,
    *,
    context_names: Iterable[str] | Mapping[str, Any] | None = None,
    toggle_keys: Mapping[str, int] | None = None,
    sender: PostmarkSender | None = None,
    resolve: bool = True,
) -> LintReport:
    """:func:`lint`, with what it looked at (for the command line's summary)."""
    filename = str(registry_path)
    try:
        text = FilePath(registry_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        finding = Finding.of("EE001", f"cannot read the registry: {exc}", file=filename)
        return LintReport((finding,), 0, {})
    return _Linter(text, filename, resolve=resolve).run(
        context_names=context_names, toggle_keys=toggle_keys, sender=sender
    )


def org_settings_toggles(session: Any) -> dict[str, int]:
    """Toggle key -> how many orgs switched it off, from the engine's org-settings table."""
    import sqlalchemy as sa  # noqa: PLC0415 - only the command line's --app needs it

    from .tables import org_settings  # noqa: PLC0415

    rows = session.execute(
        sa.select(org_settings.c.toggle_key, sa.func.count())
        .where(org_settings.c.enabled.is_(False))
        .group_by(org_settings.c.toggle_key)
    ).all()
    return {str(key): int(count) for key, count in rows}


# --- lint ----------------------------------------------------------------------------------


class _Linter:
    """One lint run over one registry text: the loader's problems, then lint's own checks."""

    def __init__(self, text: str, filename: str, *, resolve: bool = True) -> None:
        self.text = text
        self.filename = filename
        self.resolve = resolve
        self.compiled = compile_registry(text, filename=filename, resolve=resolve)
        self.doc = self.compiled.document
        self.findings: list[Finding] = []

    def run(
        self,
        *,
        context_names: Iterable[str] | Mapping[str, Any] | None,
        toggle_keys: Mapping[str, int] | None,
        sender: PostmarkSender | None,
    ) -> LintReport:
        self.findings = [Finding.from_problem(p) for p in self.compiled.problems]
        events = list(self.compiled.events.values())
        if self.resolve:  # both need the entity and payload classes
            for event in events:
                self._nullable(event)
                self._payload_types(event)
        self._context(context_names)
        self._shared_templates()
        if toggle_keys is not None:
            self._org_settings(toggle_keys)
        checked = 0
        if sender is not None:
            checked = _PostmarkCheck(self, PostmarkTemplates(sender)).run(events)
        findings = self._without_ignored(self.findings)
        findings.sort(key=lambda f: (f.file, f.line, f.column, f.code, f.message))
        return LintReport(
            findings=tuple(dict.fromkeys(findings)),
            events=len(self.compiled.specs),
            shared_toggles=self._shared_toggles(),
            postmark=sender.api_url if sender is not None else None,
            templates_checked=checked,
            skipped=() if self.resolve else NOT_IMPORTED,
        )

    # -- positions --

    def add(
        self, code: str, path: Key, message: str, *, hint: str = "", at_key: bool = False
    ) -> None:
        where = self.doc.locate(path, at_key=at_key)
        self.findings.append(
            Finding.of(
                code, message, hint=hint, file=self.filename, line=where.line, column=where.column
            )
        )

    def add_problem(self, problem: Problem) -> None:
        self.findings.append(Finding.from_problem(problem))

    def _without_ignored(self, findings: list[Finding]) -> list[Finding]:
        """Drop warnings and info silenced by ``# emailevents: ignore[EE0NN]`` on their line."""
        lines = self.text.splitlines()
        kept = []
        for finding in findings:
            if finding.severity is not Severity.ERROR and 0 < finding.line <= len(lines):
                match = _IGNORE.search(lines[finding.line - 1])
                codes = {c.strip() for c in match["codes"].split(",")} if match else set()
                if finding.code in codes:
                    continue
            kept.append(finding)
        return kept

    # -- offline checks --

    def _nullable(self, event: Event) -> None:
        """EE025: a subject or data value that renders blank when a column on its way is null."""
        entities = dict(event.entities)
        for expression in ((event.subject,) if event.subject else ()) + event.data:
            for ref in expression.template.paths:
                entity = entities.get(ref.root)
                if entity is None:
                    continue
                for index, owner, what in _nullable_steps(entity.model, ref.attrs):
                    if _guarded(event, ref, index):
                        continue
                    variable = expression.field.removeprefix("data.")
                    self.add_problem(
                        expression.problem(
                            f"{{{ref}}} renders blank when {owner}.{ref.attrs[index]} is null "
                            f"(a nullable {what})",
                            ref,
                            code="EE025",
                            hint=f"make it NOT NULL, give a fallback from a `build:` callable, or "
                            f"show it only when set: {{{{#{variable}}}}}...{{{{/{variable}}}}}",
                        )
                    )
                    break

    def _payload_types(self, event: Event) -> None:
        """EE042: a ``payload:`` class field that cannot take the type of value the event builds."""
        if event.spec.payload is None:
            return
        model, typed = sample_values(event)
        try:
            event.payload_model.model_validate(model)
        except ValidationError as exc:
            errors = exc.errors()
        else:
            return
        names = {e.field.removeprefix("data."): e for e in event.data}
        for error in errors:
            name = str(error["loc"][0]) if error["loc"] else ""
            # Only what cannot be right whatever the data: a value of the wrong type. A string
            # that an int or URL field would parse is a matter of the data, not of the registry.
            if name not in typed or not str(error["type"]).endswith("_type"):
                continue
            source = names[name].template.source if name in names else name
            self.add(
                "EE042",
                ("events", event.key, "data", name) if name in names else ("events", event.key),
                f"events.{event.key}.data.{name}: {event.payload_model.__name__}.{name} does "
                f"not take {type(typed[name]).__name__} values like {source!r} gives: "
                f"{error['msg']}",
                hint=f"change the field's type, or give {name} a value of its type",
                at_key=True,
            )

    def _context(self, context_names: Iterable[str] | Mapping[str, Any] | None) -> None:
        """EE026 offline; EE024 (and EE014 for callables) against the application's context."""
        events = self.compiled.events.values()
        if context_names is None:
            self._context_unchecked(events)
            return
        context = (
            dict(context_names)
            if isinstance(context_names, Mapping)
            else dict.fromkeys(context_names)
        )
        for problem in context_problems(events, context):
            self.add_problem(problem)

    def _context_unchecked(self, events: Iterable[Event]) -> None:
        """EE026: each name that must be a context value, once, where it is first used."""
        seen: dict[str, list[str]] = {}
        first: dict[str, tuple[Expression, Path]] = {}
        for event, expression, path in context_references(events):
            users = seen.setdefault(path.root, [])
            if event.key not in users:
                users.append(event.key)
            first.setdefault(path.root, (expression, path))
        for name, (expression, path) in first.items():
            users = seen[name]
            self.add_problem(
                expression.problem(
                    f"'{name}' is not an entity, so it must be a context value given to "
                    f"EmailEvents (used by {len(users)} event{'s' if len(users) > 1 else ''})",
                    path,
                    code="EE026",
                    hint="run lint with --app to check it against the application's context",
                )
            )

    def _shared_templates(self) -> None:
        """EE038: one template for several events, reported at each event after the first."""
        first: dict[str, str] = {}
        for key, spec in self.compiled.specs.items():
            if not self.compiled.valid(key, "template"):
                continue
            ref = str(spec.template)
            if ref in first:
                self.add(
                    "EE038",
                    ("events", key, "template"),
                    f"events.{key}.template: template {spec.template!r} is also the template of "
                    f"event '{first[ref]}'",
                    hint="a copy-paste? if it is on purpose, end this line with "
                    "`# emailevents: ignore[EE038]`",
                )
            first.setdefault(ref, key)

    def _toggle_users(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for key, spec in self.compiled.specs.items():
            if self.compiled.valid(key, "toggle") and spec.toggle != ALWAYS:
                users.setdefault(spec.toggle, []).append(key)
        return users

    def _shared_toggles(self) -> dict[str, tuple[str, ...]]:
        return {t: tuple(keys) for t, keys in self._toggle_users().items() if len(keys) > 1}

    def _org_settings(self, toggle_keys: Mapping[str, int]) -> None:
        """EE032/EE033: the registry's toggle keys against the org settings kept for them."""
        users = self._toggle_users()
        stale = sorted(k for k, count in toggle_keys.items() if count and k not in users)
        matched: set[str] = set()
        for toggle, keys in users.items():
            if toggle in toggle_keys:
                continue
            close = difflib.get_close_matches(toggle, stale, n=1)
            if not close:
                continue  # a new toggle nobody has switched off yet
            old = close[0]
            matched.add(old)
            for key in keys:
                self.add(
                    "EE032",
                    ("events", key, "toggle"),
                    f"events.{key}.toggle: no org has a setting for '{toggle}', but "
                    f"{_orgs(toggle_keys[old])} switched off '{old}', which no event uses",
                    hint=f"renamed? move the settings to '{toggle}', or keep the key '{old}'",
                )
        for old in stale:
            if old not in matched:
                self.findings.append(
                    Finding.of(
                        "EE033",
                        f"{_orgs(toggle_keys[old])} switched off toggle '{old}', which no event "
                        "uses: they would get those emails again under another key",
                        hint="move the settings to the event's toggle key, or delete them",
                        file=self.filename,
                    )
                )


def _orgs(count: int) -> str:
    return f"{count} org{'s' if count != 1 else ''}"


def _nullable_steps(model: type, attrs: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Each step of ``attrs`` that can be null on its own: (index, owner class, what it is)."""
    steps: list[tuple[int, str, str]] = []
    target = model
    for index, attr in enumerate(attrs):
        try:
            info = describe_path(target, (attr,))
        except PathError:
            return steps
        if info.kind == "unknown":
            return steps  # a property or a hybrid: what it gives is not known statically
        if info.nullable:
            what = "column" if info.kind == "column" else "relationship"
            steps.append((index, target.__name__, what))
        if info.kind != "object" or info.target is None:
            return steps
        target = info.target
    return steps


def _guarded(event: Event, ref: Path, index: int) -> bool:
    """Whether the email is never rendered when step ``index`` of ``ref`` is null.

    So it is when every recipient is reached through that same step: with it null, the event
    has nobody to send to, a recorded skip rather than a blank in a sent email.
    """
    if event.recipients is not None or not event.to:
        return False
    prefix = ref.attrs[: index + 1]
    for expression in event.to:
        single = expression.template.single_path
        if single is None or single.root != ref.root or single.attrs[: index + 1] != prefix:
            return False
    return True


@dataclass(frozen=True)
class _Provided:
    """The TemplateModel variables an event provides, and which are plain values."""

    names: frozenset[str]
    plain: frozenset[str]
    """Variables known to be text or one column's value (not a list or an object)."""
    written: Mapping[str, Key]
    """Where each subject/data variable is written."""


def _provided(event: Event) -> _Provided:
    names: set[str] = set()
    plain: set[str] = set()
    written: dict[str, Key] = {}
    if event.subject is not None:
        names.add("subject")
        plain.add("subject")
        written["subject"] = ("events", event.key, "subject")
    _, typed = sample_values(event)
    for expression in event.data:
        name = expression.field.removeprefix("data.")
        names.add(name)
        written[name] = ("events", event.key, "data", name)
        if name in typed:
            plain.add(name)
    if event.spec.payload is not None:
        fields = event.payload_model.model_fields
        names |= {info.alias or name for name, info in fields.items()}
        plain = set()  # a payload class may turn values into anything
    if event.category is not None:  # each recipient's own links, added as the message is made
        names |= set(LINK_VARIABLES)
        plain |= set(LINK_VARIABLES)
    return _Provided(frozenset(names), frozenset(plain), written)


@dataclass
class _PostmarkCheck:
    linter: _Linter
    api: PostmarkTemplates

    def run(self, events: list[Event]) -> int:
        """Check the stream and templates; returns how many templates were read."""
        self._stream()
        listed = self.api.templates()
        by_id = {t.get("TemplateId"): t for t in listed}
        by_alias = {t.get("Alias"): t for t in listed if t.get("Alias")}
        wanted: dict[str, Mapping[str, Any]] = {}
        compiled = self.linter.compiled
        for key, spec in compiled.specs.items():
            if not compiled.valid(key, "template"):
                continue
            if isinstance(spec.template, int):
                summary = by_id.get(spec.template)
            else:
                summary = by_alias.get(spec.template)
            if self._usable(key, spec, summary, listed) and summary is not None:
                wanted[str(spec.template)] = summary
        add = self.linter.add
        wanted |= lintdigests.wanted(add, events, (by_id, by_alias), self.api.url)
        suggested = self._suggested_models(wanted)
        for event in events:
            model = suggested.get(str(event.template))
            if model is not None:
                self._variables(event, model)
        lintdigests.check(add, events, suggested, lambda event: _provided(event).names)
        return len(suggested)

    def _usable(
        self,
        key: str,
        spec: EventSpec,
        summary: Mapping[str, Any] | None,
        listed: list[dict[str, Any]],
    ) -> bool:
        where: Key = ("events", key, "template")
        ref = spec.template
        label = f"events.{key}.template"
        if summary is None:
            names = [str(t.get("Alias")) for t in listed if t.get("Alias")]
            names += [str(t.get("TemplateId")) for t in listed]
            close = difflib.get_close_matches(str(ref), names, n=1)
            kind = "TemplateId" if isinstance(ref, int) else "TemplateAlias"
            self.linter.add(
                "EE050",
                where,
                f"{label}: Postmark at {self.api.url} has no template with {kind} {ref!r} "
                f"({len(listed)} template{'s' if len(listed) != 1 else ''} there)",
                hint=f"did you mean '{close[0]}'?"
                if close
                else "create it, or name one of the server's templates",
            )
            return False
        if summary.get("TemplateType", "Standard") != "Standard":
            self.linter.add(
                "EE052",
                where,
                f"{label}: {ref!r} is a {summary.get('TemplateType')} template; emails are sent "
                "with Standard templates",
                hint="name the Standard template that uses this layout",
            )
            return False
        if summary.get("Active") is False:
            self.linter.add(
                "EE051",
                where,
                f"{label}: template {ref!r} is inactive; Postmark refuses to send with it "
                "(ErrorCode 1101)",
                hint="activate it in Postmark, or name another template",
            )
            return False
        return True

    def _suggested_models(self, wanted: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Each wanted template's SuggestedTemplateModel: one GET and one validate per template."""

        def fetch(summary: Mapping[str, Any]) -> dict[str, Any] | None:
            ref = summary.get("TemplateId") or summary.get("Alias")
            details = self.api.template(ref)  # type: ignore[arg-type]
            if details is None:
                return None  # deleted since it was listed
            answer = self.api.validate(details)
            model = answer.get("SuggestedTemplateModel")
            return model if isinstance(model, dict) else {}

        if not wanted:
            return {}
        with ThreadPoolExecutor(max_workers=min(_WORKERS, len(wanted))) as pool:
            results = dict(zip(wanted, pool.map(fetch, wanted.values()), strict=True))
        return {ref: model for ref, model in results.items() if model is not None}

    def _variables(self, event: Event, suggested: Mapping[str, Any]) -> None:
        """EE053-EE056: the variables the template uses against those the event provides."""
        provided = _provided(event)
        where: Key = ("events", event.key, "template")
        label = f"events.{event.key}"
        for name in sorted(set(suggested) - provided.names):
            if event.spec.payload is not None and not self.linter.resolve:
                continue  # the payload class, not imported, may provide it
            if event.spec.build is not None:
                self.linter.add(
                    "EE054",
                    where,
                    f"{label}: template {event.template!r} uses {{{{{name}}}}}, which neither "
                    f"subject nor data provides; only build: {event.spec.build} could",
                    hint=f"make sure build: returns '{name}', or add it under data",
                )
            else:
                self.linter.add(
                    "EE053",
                    where,
                    f"{label}: template {event.template!r} uses {{{{{name}}}}}, which the event "
                    "does not provide: it would render empty",
                    hint=f"add `{name}:` under data, or remove it from the template",
                )
        for name, path in provided.written.items():
            if name not in suggested:
                self.linter.add(
                    "EE055",
                    path,
                    f"{label}: template {event.template!r} never uses {{{{{name}}}}}",
                    hint="remove it from the event, or use it in the template; renamed there?",
                    at_key=True,
                )
            elif name in provided.plain and _structured(suggested[name]):
                shape = (
                    "a list ({{#each ...}})"
                    if isinstance(suggested[name], list)
                    else "an object (a section, or {{" + name + ".field}})"
                )
                self.linter.add(
                    "EE056",
                    path,
                    f"{label}: template {event.template!r} uses {{{{{name}}}}} as {shape}, but "
                    "the event provides a single value",
                    hint="give it a list or mapping from a `build:` callable, or use "
                    f"{{{{{name}}}}} as a value in the template",
                    at_key=True,
                )

    def _stream(self) -> None:
        """EE057-EE059: the registry's message stream exists and sends."""
        defaults = self.linter.compiled.defaults
        if defaults is None:
            return
        stream = defaults.message_stream
        written = ("defaults", "message_stream") in self.linter.doc.values
        where: Key = ("defaults", "message_stream") if written else ("defaults",)
        streams = self.api.streams()
        if streams is None:
            self.linter.add(
                "EE059",
                where,
                f"defaults.message_stream: Postmark at {self.api.url} does not list message "
                f"streams, so '{stream}' is not checked",
                at_key=not written,
            )
            return
        found = next((s for s in streams if s.get("ID") == stream), None)
        if found is None or found.get("ArchivedAt"):
            ids = [str(s.get("ID")) for s in streams if not s.get("ArchivedAt")]
            state = "is archived" if found is not None else "does not exist"
            self.linter.add(
                "EE057",
                where,
                f"defaults.message_stream: message stream '{stream}' {state} at Postmark "
                f"(streams: {', '.join(ids)})",
                hint="name one of the server's transactional streams, like 'outbound'",
                at_key=not written,
            )
        elif found.get("MessageStreamType") == "Inbound":
            self.linter.add(
                "EE058",
                where,
                f"defaults.message_stream: '{stream}' is an Inbound stream; it receives email, "
                "it cannot send",
                hint="name a Transactional stream, like 'outbound'",
                at_key=not written,
            )


def _structured(usage: Any) -> bool:
    """Whether the template reads into the variable (a list, or an object with fields)."""
    return isinstance(usage, list) or (isinstance(usage, dict) and bool(usage))
