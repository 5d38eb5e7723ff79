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

import datetime as dt
import decimal
import difflib
import enum
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any
from urllib.parse import quote

import requests
from postmarker.exceptions import ClientError
from pydantic import ValidationError

from .errors import (
    ConfigurationError,
    PostmarkAPIError,
    PostmarkUnreachableError,
    Problem,
    RegistryError,
    excerpt,
)
from .expressions import Path
from .introspect import PathError, PathInfo, describe_path
from .registry import (
    ALWAYS,
    DefaultsSpec,
    EntityType,
    Event,
    EventSpec,
    Expression,
    Registry,
    _Compiler,
)
from .senders.postmark import TOKEN_VARIABLE, URL_VARIABLE, PostmarkSender
from .yamlnodes import Document, Key, load_document

__all__ = [
    "CODES",
    "NOT_IMPORTED",
    "Finding",
    "LintReport",
    "PostmarkAPIError",
    "PostmarkTemplates",
    "PostmarkUnreachableError",
    "Severity",
    "lint",
    "lint_report",
    "org_settings_toggles",
    "sample_recipients",
    "sample_template_model",
]


class Severity(enum.StrEnum):
    """How bad a finding is; ``--fail-on`` picks the lowest that fails the run."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "info": 1}[self.value]


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO

#: Every finding code: its severity and what it is about. docs/lint.md has a section per code.
CODES: Mapping[str, tuple[Severity, str]] = {
    # The registry as YAML, and its schema.
    "EE001": (_E, "the registry cannot be read or compiled"),
    "EE002": (_E, "invalid YAML"),
    "EE003": (_E, "duplicate key"),
    "EE004": (_E, "YAML anchors, aliases, tags and complex keys are not supported"),
    "EE005": (_E, "unknown field"),
    "EE006": (_E, "missing required field or section"),
    "EE007": (_E, "wrong type or invalid value"),
    "EE008": (_E, "unsupported version"),
    "EE009": (_E, "invalid From address"),
    # Names and references to the application's code.
    "EE010": (_E, "invalid name"),
    "EE011": (_E, "unknown entity type"),
    "EE012": (_E, "module:attr reference cannot be imported"),
    "EE013": (_E, "reference is not the kind of object expected"),
    "EE014": (_E, "callable cannot be called with the names it would get"),
    "EE015": (_E, "SQLAlchemy cannot configure the mapped class"),
    "EE016": (_E, "entity type has no column to load it by"),
    # Expressions.
    "EE020": (_E, "expression syntax"),
    "EE021": (_E, "attribute path not found"),
    "EE022": (_E, "expression is an object or collection, not a value"),
    "EE023": (_E, "recipient object has no email attribute"),
    "EE024": (_E, "name is neither an entity nor a context value"),
    "EE025": (_W, "expression through a nullable column or relationship"),
    "EE026": (_I, "context value not checked without the application"),
    "EE027": (_E, "attribute SQLAlchemy puts on a model, not the application's"),
    # Toggles, recipients, tasks, templates.
    "EE030": (_E, "invalid toggle key"),
    "EE031": (_E, "toggle without the organization entity"),
    "EE032": (_W, "toggle key unknown to the org settings, which hold a similar one"),
    "EE033": (_W, "org settings for a toggle key no event uses"),
    "EE034": (_E, "event sends to nobody"),
    "EE035": (_E, "both to: and recipients:"),
    "EE036": (_E, "invalid task name"),
    "EE037": (_E, "task name used twice"),
    "EE038": (_W, "template used by several events"),
    "EE039": (_E, "address is not one address, or `Name <address>`"),
    # The TemplateModel.
    "EE040": (_E, "payload class has no field for a value the event provides"),
    "EE041": (_E, "payload class requires a value the event does not provide"),
    "EE042": (_E, "payload class rejects the type of a value the event provides"),
    "EE043": (_E, "data.subject clashes with the subject"),
    # Against Postmark.
    "EE050": (_E, "template not found at Postmark"),
    "EE051": (_E, "template is inactive"),
    "EE052": (_E, "template is not a Standard template"),
    "EE053": (_E, "template uses a variable the event does not provide"),
    "EE054": (_W, "template uses a variable only build: could provide"),
    "EE055": (_W, "event provides a value the template never uses"),
    "EE056": (_E, "template uses a variable as a list or object, the event provides a value"),
    "EE057": (_E, "message stream not found or archived"),
    "EE058": (_E, "message stream is not a sending stream"),
    "EE059": (_I, "message stream not checked"),
}

#: What lint leaves out when it imports nothing (``resolve=False``): the checks that need the
#: application's classes and callables.
NOT_IMPORTED = (
    "whether module:attr references import (EE012; their form is checked)",
    "entity classes and attribute paths (EE013, EE015, EE016, EE021-EE023, EE025, EE027, EE056)",
    "callables' signatures (EE013, EE014)",
    "payload classes (EE013, EE040-EE042) and the template variables they provide (EE053)",
)

_IGNORE = re.compile(r"#\s*emailevents:\s*ignore\[(?P<codes>[A-Z0-9,\s]+)\]")
_PAGE = 100  # Postmark's largest page of GET /templates
_WORKERS = 8  # concurrent template requests: a few seconds for 100 templates over the internet
_NOT_A_POSTMARK_ANSWER = frozenset({404, 405})


@dataclass(frozen=True)
class Finding:
    """One thing lint found, and where: ``path:line:col: EE0NN message (hint)``.

    ``source_line`` is the line of the file it is on, when the finding shows it (YAML syntax
    errors): printed on the lines after, with a caret under the column.
    """

    code: str
    severity: Severity
    message: str
    hint: str = ""
    file: str = ""
    line: int = 0
    column: int = 0
    source_line: str = ""

    @classmethod
    def of(
        cls,
        code: str,
        message: str,
        *,
        hint: str = "",
        file: str = "",
        line: int = 0,
        column: int = 0,
    ) -> Finding:
        """A finding with ``code``'s severity (from :data:`CODES`)."""
        return cls(code, CODES[code][0], message, hint, file, line, column)

    @classmethod
    def from_problem(cls, problem: Problem) -> Finding:
        code = problem.code if problem.code in CODES else "EE001"
        return cls(
            code,
            CODES[code][0],
            problem.message,
            problem.hint,
            problem.file,
            problem.line,
            problem.column,
            problem.source_line,
        )

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}: {self.code} {self.message}{hint}{excerpt(self.source_line, self.column)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "source_line": self.source_line,
        }


@dataclass(frozen=True)
class LintReport:
    """What :func:`lint_report` found, and what it looked at."""

    findings: tuple[Finding, ...]
    events: int
    """How many events the registry declares."""
    shared_toggles: Mapping[str, tuple[str, ...]]
    """Toggle keys that switch several events, and those events (one org setting, many emails)."""
    postmark: str | None = None
    """The Postmark API URL the templates were checked at; None when offline."""
    templates_checked: int = 0
    skipped: tuple[str, ...] = ()
    """The checks left out: :data:`NOT_IMPORTED` when nothing was imported."""

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.severity is s) for s in Severity}


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

    from .store import org_settings  # noqa: PLC0415

    rows = session.execute(
        sa.select(org_settings.c.toggle_key, sa.func.count())
        .where(org_settings.c.enabled.is_(False))
        .group_by(org_settings.c.toggle_key)
    ).all()
    return {str(key): int(count) for key, count in rows}


# --- the loader, keeping what it compiled ---------------------------------------------------


class _LintCompiler(_Compiler):
    """The registry's own compiler, keeping the events that compiled despite problems elsewhere.

    The loader builds no registry when there is any problem; lint goes on checking those events.
    """

    def __init__(self, doc: Document, *, resolve: bool) -> None:
        super().__init__(doc, resolve=resolve)
        self.events: dict[str, Event] = {}
        self.specs: dict[str, EventSpec] = {}
        self.defaults: DefaultsSpec | None = None

    def _defaults(self, data: dict[str, Any]) -> tuple[DefaultsSpec | None, Any]:
        found = super()._defaults(data)
        self.defaults = found[0]
        return found

    def _event(
        self,
        key: str,
        spec: EventSpec,
        defaults: DefaultsSpec | None,
        org: str,
        types: dict[str, EntityType | None] | None,
    ) -> Event | None:
        self.specs[key] = spec
        event = super()._event(key, spec, defaults, org, types)
        if event is not None:
            self.events[key] = event
        return event

    def valid(self, key: str, name: str) -> bool:
        """Whether event ``key``'s field ``name`` was valid as written."""
        return name not in self.invalid.get(("events", key), frozenset())


# --- lint ----------------------------------------------------------------------------------


class _Linter:
    """One lint run over one registry text: the loader's problems, then lint's own checks."""

    def __init__(self, text: str, filename: str, *, resolve: bool = True) -> None:
        self.text = text
        self.filename = filename
        self.resolve = resolve
        self.doc = load_document(text, filename)
        self.compiler = _LintCompiler(self.doc, resolve=resolve)
        self.findings: list[Finding] = []

    def run(
        self,
        *,
        context_names: Iterable[str] | Mapping[str, Any] | None,
        toggle_keys: Mapping[str, int] | None,
        sender: PostmarkSender | None,
    ) -> LintReport:
        doc, compiler = self.doc, self.compiler
        if doc.data is not None or not doc.problems:  # as parse_registry: no data, no compiling
            compiler.compile()
        self.findings = [Finding.from_problem(p) for p in doc.problems]
        events = list(compiler.events.values())
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
            events=len(compiler.specs),
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
        model, typed = _sample_values(event)
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
        refs = self.compiler.context_refs
        if not refs:
            return
        if context_names is None:
            seen: dict[str, list[str]] = {}
            first: dict[str, tuple[Expression, Path]] = {}
            for event, expression, path in refs:
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
            return
        context = (
            dict(context_names)
            if isinstance(context_names, Mapping)
            else dict.fromkeys(context_names)
        )
        defaults = self.compiler.defaults
        assert defaults is not None  # noqa: S101 - events compiled, so defaults did
        stand_in = Registry(
            source=self.filename,
            version=1,
            defaults=defaults,
            entity_types={},
            events={},
            _context_refs=tuple(refs),
        )
        try:
            stand_in.check_context(context)
        except RegistryError as exc:
            for problem in exc.problems:
                self.add_problem(problem)

    def _shared_templates(self) -> None:
        """EE038: one template for several events, reported at each event after the first."""
        first: dict[str, str] = {}
        for key, spec in self.compiler.specs.items():
            if not self.compiler.valid(key, "template"):
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
        for key, spec in self.compiler.specs.items():
            if self.compiler.valid(key, "toggle") and spec.toggle != ALWAYS:
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


# --- sample values ---------------------------------------------------------------------------

_SAMPLES: tuple[tuple[type, Callable[[str], Any]], ...] = (
    (bool, lambda _: True),
    (int, lambda _: 1),
    (float, lambda _: 1.5),
    (decimal.Decimal, lambda _: decimal.Decimal("1.50")),
    (dt.datetime, lambda _: dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)),
    (dt.date, lambda _: dt.date(2025, 1, 31)),
    (dt.time, lambda _: dt.time(9, 30)),
    (dt.timedelta, lambda _: dt.timedelta(hours=1)),
    (uuid.UUID, lambda _: uuid.UUID(int=1)),
    (str, lambda path: f"<{path}>"),
)


def _sample_of(event: Event, ref: Path) -> tuple[Any, bool]:
    """A sample value for ``ref`` of the type its column holds; whether that type is known."""
    entity = dict(event.entities).get(ref.root)
    info: PathInfo | None = None
    if entity is not None:
        try:
            info = describe_path(entity.model, ref.attrs)
        except PathError:
            info = None
    python_type = info.python_type if info is not None and info.kind == "column" else None
    if python_type is not None:
        if issubclass(python_type, enum.Enum):
            members = list(python_type)
            if members:
                return members[0], True
        for cls, make in _SAMPLES:
            if issubclass(python_type, cls):
                return make(str(ref)), True
    return f"<{ref}>", False


def _sample_text(expression: Expression) -> str:
    return "".join(
        part if isinstance(part, str) else f"<{part}>" for part in expression.template.parts
    )


def _sample_values(event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
    """The subject and data with sample values; and those whose type is known, by name."""
    model: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    if event.subject is not None:
        model["subject"] = typed["subject"] = _sample_text(event.subject)
    for expression in event.data:
        name = expression.field.removeprefix("data.")
        single = expression.template.single_path
        if single is None:
            model[name] = typed[name] = _sample_text(expression)
            continue
        value, known = _sample_of(event, single)
        model[name] = value
        if known:
            typed[name] = value
    return model, typed


def sample_recipients(event: Event) -> list[str]:
    """The event's ``to:`` with each path as ``<path>``, or where ``recipients:`` come from."""
    if event.recipients is not None:
        return [f"<whoever {event.spec.recipients} returns>"]
    return [_sample_text(expression) for expression in event.to]


def sample_template_model(event: Event) -> tuple[dict[str, Any], list[str]]:
    """A TemplateModel of sample values for ``event``, built without a database.

    Each value that is one column gets a sample of the column's type (strings read like
    ``<org.name>``), text gets its paths as ``<path>``; the result goes through the event's
    payload model as a task's would. Returns the model and notes on what could not be shown.
    """
    model, _ = _sample_values(event)
    notes: list[str] = []
    if event.build is not None:
        notes.append(
            f"build: {event.spec.build} adds values when the task runs; they are not shown"
        )
        for name, info in event.payload_model.model_fields.items():
            alias = info.alias or name
            if info.is_required() and alias not in model:
                model[alias] = f"<build: {alias}>"
    try:
        validated = event.payload_model.model_validate(model)
        return validated.model_dump(mode="json", by_alias=True), notes
    except ValidationError as exc:
        notes.append(
            f"{event.payload_model.__name__} rejects the samples ({exc.error_count()} errors); "
            "shown unvalidated"
        )
        return json.loads(json.dumps(model, default=str)), notes


# --- Postmark ----------------------------------------------------------------------------------


class PostmarkTemplates:
    """The parts of Postmark's templates and message streams API that lint and preview read.

    Requests go through the sender's postmarker client (one per thread), so the token and URL are
    exactly the sender's. Errors that mean the settings are wrong become
    :class:`~emailevents.ConfigurationError` naming the setting, never showing the token.
    """

    def __init__(self, sender: PostmarkSender) -> None:
        self.sender = sender

    @property
    def url(self) -> str:
        return self.sender.api_url

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
            if exc.error_code == 1101:  # noqa: PLR2004 - Postmark's "Template not found"
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
            if exc.status in _NOT_A_POSTMARK_ANSWER:
                return None
            raise
        return list(answer.get("MessageStreams") or [])

    def call(self, method: str, endpoint: str, data: Any = None, **params: Any) -> Any:
        """One request; failures that mean wrong settings raise ConfigurationError."""
        try:
            return self.sender.client.call(method, endpoint, data=data, **params)
        except ClientError as exc:
            status = _status(exc.__cause__)
            code = exc.error_code if isinstance(exc.error_code, int) else None
            if code == 10 or status == 401:  # noqa: PLR2004 - Postmark's bad or missing token
                raise ConfigurationError(
                    f"Postmark at {self.url} rejected the server token (ErrorCode {code}): set "
                    f"--token or {TOKEN_VARIABLE} to the server's API token"
                ) from None
            text = re.sub(r"^\[-?\d+\] ", "", str(exc.args[0]) if exc.args else "")
            raise PostmarkAPIError(
                f"{method} /{endpoint}: HTTP {status}, ErrorCode {code}: {text}",
                error_code=code,
                status=status,
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PostmarkUnreachableError(
                f"cannot reach Postmark at {self.url} ({type(exc).__name__}): check --api-url "
                f"or {URL_VARIABLE}"
            ) from None
        except (requests.HTTPError, KeyError, ValueError) as exc:
            # An answer that is not Postmark's JSON: the URL is some other server.
            cause = exc if isinstance(exc, requests.HTTPError) else exc.__context__
            status = _status(cause)
            if status == 401:  # noqa: PLR2004
                raise ConfigurationError(
                    f"{self.url} rejected the server token (HTTP 401): set --token or "
                    f"{TOKEN_VARIABLE} to the server's API token"
                ) from None
            if status in _NOT_A_POSTMARK_ANSWER:
                raise PostmarkAPIError(
                    f"{method} /{endpoint}: HTTP {status}, not a Postmark answer",
                    error_code=None,
                    status=status,
                ) from None
            answered = f"HTTP {status}" if status else "not JSON"
            raise ConfigurationError(
                f"{self.url} did not answer like Postmark's API ({answered}): check "
                f"--api-url or {URL_VARIABLE}"
            ) from None


def _status(exc: BaseException | None) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


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
    _, typed = _sample_values(event)
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
        wanted: dict[str, dict[str, Any]] = {}
        compiler = self.linter.compiler
        for key, spec in compiler.specs.items():
            if not compiler.valid(key, "template"):
                continue
            if isinstance(spec.template, int):
                summary = by_id.get(spec.template)
            else:
                summary = by_alias.get(spec.template)
            if self._usable(key, spec, summary, listed) and summary is not None:
                wanted[str(spec.template)] = summary
        suggested = self._suggested_models(wanted)
        for event in events:
            model = suggested.get(str(event.template))
            if model is not None:
                self._variables(event, model)
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
        defaults = self.linter.compiler.defaults
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
