"""The exceptions emailevents raises: one root; leaves also inherit the built-in they resemble."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outcomes import Outcome

_EXCERPT_WIDTH = 100


class EmailEventsError(Exception):
    """Raised for every error emailevents itself reports; the root of all others."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a registry, with where it is.

    ``code`` is the problem's stable lint code (``EE001`` when no more specific one applies);
    ``docs/lint.md`` lists every code. It is not part of the printed message. ``source_line``,
    when set, is the line of the file the problem is on, printed under the message with a caret
    under the column (YAML syntax errors have it).
    """

    message: str
    file: str = "<registry>"
    line: int = 0
    column: int = 0
    hint: str = ""
    code: str = "EE001"
    source_line: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}: {self.message}{hint}{excerpt(self.source_line, self.column)}"


def excerpt(source_line: str, column: int) -> str:
    """``source_line`` and a caret under ``column`` (1-based), as lines to print after a message.

    Empty when there is no line to show. Characters a terminal would not print show as '?', and
    a long line is cut around the column, so that the caret stays under its character.
    """
    if not source_line.strip() or column < 1:
        return ""
    shown = "".join(c if c.isprintable() or c == "\t" else "?" for c in source_line).rstrip()
    start = 0
    if len(shown) > _EXCERPT_WIDTH:
        start = max(0, min(column - 1 - _EXCERPT_WIDTH // 2, len(shown) - _EXCERPT_WIDTH))
        end = start + _EXCERPT_WIDTH
        shown = ("..." if start else "") + shown[start:end] + ("..." if end < len(shown) else "")
        start -= 3 if start else 0
    pad = "".join(c if c == "\t" else " " for c in shown[: column - 1 - start])
    return f"\n    {shown}\n    {pad}^"


class RegistryError(EmailEventsError, ValueError):
    """Raised when a registry cannot be loaded; lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the email registry:"
        super().__init__("\n".join([head, *(textwrap.indent(str(p), "  ") for p in problems)]))


class ConfigurationError(EmailEventsError, RuntimeError):
    """Raised when emailevents is set up wrongly; the message names the setting to fix."""


class EmitError(EmailEventsError):
    """Raised when `emit()` is called wrongly; nothing has been queued."""


class UnknownEventError(EmitError, LookupError):
    """Raised when `emit()` names an event the registry does not declare."""


class EmitArgumentError(EmitError, TypeError):
    """Raised when `emit()` gets missing, unexpected or non-string entity arguments."""


class EmitValueError(EmitError, ValueError):
    """Raised when `emit()` gets an empty or malformed CUID."""


class LinkError(EmailEventsError, ValueError):
    """A recipient's link whose token is not ours: tampered with, truncated, or signed with a
    key no longer (or never) in ``signing_keys``."""


class DurationError(EmailEventsError, ValueError):
    """Text that is not a registry duration (``30s``, ``15m``, ``1h``, ``2d``, ``1h30m``); the
    message says what it is and what to write."""


class UnknownCategoryError(EmailEventsError, LookupError):
    """A preference for a category the registry does not declare."""


class DeliveryError(EmailEventsError, RuntimeError):
    """Raised by an event's task when its run sent nothing and something failed.

    Every outcome is recorded before it is raised: it is how Celery (task events, Flower, result
    backends) learns that the run failed. ``result`` is the run's
    :class:`~emailevents.RunResult`. The task is not retried because of it; transient failures
    were retried before it was raised.
    """

    def __init__(self, message: str, result: Any) -> None:
        self.result = result
        super().__init__(message)

    def __reduce__(self) -> tuple[type[DeliveryError], tuple[str, Any]]:
        # Celery pickles a task's exception; it would fall back to a base class otherwise.
        return type(self), (str(self), self.result)


class Stopped(EmailEventsError, RuntimeError):  # noqa: N818 - the run stopped; no error
    """Raised when a step of a task run ends the run early, with one ``outcome`` for the whole
    emit: an entity missing, the toggle off, no recipient, an invalid TemplateModel.

    The pipeline records that outcome, and a preview shows it: it never goes further.
    """

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.detail)


class RenderError(EmailEventsError, ValueError):
    """Raised when an expression cannot be rendered: reading an attribute failed, or gave a
    callable (a method, a function, a class), which an expression never calls nor sends.

    ``path`` is the expression's path (an :class:`emailevents.expressions.Path`).
    """

    def __init__(
        self,
        path: Any,
        cause: BaseException | None = None,
        *,
        doing: str = "reading",
        reason: str = "",
    ) -> None:
        self.path = path
        super().__init__(reason or f"{doing} {{{path}}} failed: {type(cause).__name__}: {cause}")


class ExpressionError(EmailEventsError, ValueError):
    """Raised when an expression does not parse, or names something it may not reach."""

    def __init__(self, message: str, *, source: str, offset: int) -> None:
        self.source = source
        self.offset = offset
        super().__init__(f"{message} at column {offset + 1} of {source!r}")
        self.reason = message


class AddressError(EmailEventsError, ValueError):
    """Raised when a string is not one email address (optionally with a display name)."""


class PathError(EmailEventsError, LookupError):
    """Raised when an attribute path cannot be followed; ``index`` is the attribute at fault.

    ``code`` is the lint code of the problem (docs/lint.md), ``hint`` what to write instead.
    """

    def __init__(self, message: str, index: int, *, code: str = "EE021", hint: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.code = code
        self.hint = hint

    def at(self, offset: int) -> PathError:
        """The same error for a path that starts ``offset`` attributes earlier."""
        return PathError(str(self), self.index + offset, code=self.code, hint=self.hint)


class PostmarkAPIError(EmailEventsError, RuntimeError):
    """Raised when Postmark answers a template or stream request with an unexpected error."""

    def __init__(self, message: str, *, error_code: int | None, status: int | None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status


class PostmarkUnreachableError(ConfigurationError):
    """Raised when no Postmark API answers at the configured URL."""


class PreviewError(EmailEventsError, RuntimeError):
    """Raised when an email cannot be previewed: an entity is missing, its data is invalid, or
    Postmark has no such template."""


class TemplateSyntaxError(EmailEventsError, ValueError):
    """Raised when rendering a template that has syntax errors; ``.errors`` lists them.

    Each error has ``message``, ``line`` and ``character``, as Postmark reports them.
    """

    def __init__(self, errors: tuple[Any, ...]) -> None:
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"line {first.line}, character {first.character}: {first.message}{more}")


class SenderError(EmailEventsError, RuntimeError):
    """Raised when a sender breaks its contract (say, answers the wrong number of results)."""


class TemplateLoadError(EmailEventsError, ValueError):
    """Raised when templates given to FakePostmark are malformed; the message names the file."""


class RequestRefusedError(EmailEventsError, ValueError):
    """Raised inside FakePostmark to refuse a request as Postmark would; it never leaves the server.

    The server answers it with ``status`` and Postmark's error body (:meth:`body`); a template
    given to FakePostmark that it refuses becomes a :class:`TemplateLoadError` instead.
    """

    def __init__(self, error_code: int, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        """Postmark's error answer: ``{"ErrorCode": ..., "Message": ...}``."""
        return {"ErrorCode": self.error_code, "Message": self.message}
