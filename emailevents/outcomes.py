"""What a task run ends in: one outcome per recipient, or one for the whole emit."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Outcome", "Reason", "RunResult", "Status"]


class Status(StrEnum):
    """The four ends a recipient's email can come to."""

    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNKNOWN = "unknown"
    """The request left but no answer came: it may have been sent. Never resent automatically."""
    RETRY = "retry"
    """A transient failure; the task tries again later, for this recipient only."""


class Reason(StrEnum):
    """Why an email was (not) sent; stable strings, stored in the delivery log."""

    SENT = "sent"
    ENTITY_MISSING = "entity_missing"
    TOGGLE_OFF = "toggle_off"
    NO_RECIPIENTS = "no_recipients"
    INVALID_RECIPIENT = "invalid_recipient"
    INVALID_PAYLOAD = "invalid_payload"
    APPLICATION_ERROR = "application_error"
    ALREADY_RECORDED = "already_recorded"
    IN_PROGRESS = "in_progress"
    INTERRUPTED = "interrupted"
    REJECTED = "rejected"
    TRANSIENT_ERROR = "transient_error"
    CONFIGURATION_ERROR = "configuration_error"
    NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class Outcome:
    """One recipient's outcome (``recipient`` is empty for an outcome about the whole emit)."""

    status: Status
    reason: Reason
    recipient: str = ""
    detail: str = ""
    message_id: str | None = None


@dataclass(frozen=True)
class RunResult:
    """Everything one task run decided, in order."""

    event_key: str
    event_id: str
    outcomes: tuple[Outcome, ...] = field(default=())

    def with_status(self, status: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is status]

    @property
    def needs_retry(self) -> bool:
        """Some recipient failed transiently and waits for the task's next try."""
        return any(o.status is Status.RETRY for o in self.outcomes)
