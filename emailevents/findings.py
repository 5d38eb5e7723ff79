"""What lint reports: findings with stable codes (``EE001`` ...), their severity, and the report.

:data:`CODES` lists every code; ``docs/lint.md`` has a section per code, and a test keeps the two
in step.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Problem, excerpt

__all__ = ["CODES", "Finding", "LintReport", "Severity"]


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
    # Categories: what recipients may choose to receive, and critical mail.
    "EE060": (_E, "category not declared under categories:"),
    "EE061": (_E, "critical event with a category"),
    "EE062": (_E, "event without a category"),
    "EE063": (_E, "invalid category key"),
    "EE064": (_E, "category without a title"),
    "EE065": (_E, "categories: declared but empty"),
    # Digests (docs/timing.md): the digest itself, then its template at Postmark.
    "EE066": (_E, "digest without a window or a time, or with both"),
    "EE067": (_E, "invalid digest setting"),
    "EE068": (_E, "digest group declared differently"),
    "EE069": (_E, "digest template does not list the items"),
    # Timing: throttles.
    "EE070": (_E, "invalid throttle"),
    "EE071": (_E, "throttle group declared differently across events"),
    # Digests again: the digest template's variables at Postmark.
    "EE072": (_E, "digest template uses a variable the digest does not provide"),
    # Cross-emit batching in the worker.
    "EE080": (_E, "invalid batch setting"),
}


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
    """What :func:`~emailevents.lint.lint_report` found, and what it looked at."""

    findings: tuple[Finding, ...]
    events: int
    """How many events the registry declares."""
    shared_toggles: Mapping[str, tuple[str, ...]]
    """Toggle keys that switch several events, and those events (one org setting, many emails)."""
    postmark: str | None = None
    """The Postmark API URL the templates were checked at; None when offline."""
    templates_checked: int = 0
    skipped: tuple[str, ...] = ()
    """The checks left out: :data:`~emailevents.lint.NOT_IMPORTED` when nothing was imported."""

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.severity is s) for s in Severity}
