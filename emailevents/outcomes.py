"""What a task run ends in: one outcome per recipient, or one for the whole emit."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Outcome", "Reason", "RunResult", "Status"]


class Status(StrEnum):
    """Where a recipient's email stands: one of four ends (sent, skipped, failed, unknown), or
    ``retry``, waiting for the task's next try."""

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
    SUPPRESSED = "suppressed"
    OPTED_OUT = "opted_out"
    THROTTLED = "throttled"
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
    DIGESTED = "digested"
    """Added to the recipient's digest (its detail names it), sent when the digest closes."""


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

    @property
    def failed_entirely(self) -> bool:
        """Nothing was sent, and something failed (skips alone are not a failure)."""
        failed = False
        for o in self.outcomes:
            if o.status in (Status.SENT, Status.RETRY, Status.UNKNOWN):
                return False
            failed = failed or o.status is Status.FAILED
        return failed

    def failure(self) -> str:
        """One line: what failed and why, for a log or an exception."""
        failed = self.with_status(Status.FAILED)
        shown = "; ".join(
            f"{o.recipient or 'the emit'}: {o.reason.value} ({o.detail})" for o in failed[:5]
        )
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""  # noqa: PLR2004
        return f"event '{self.event_key}' ({self.event_id}) sent nothing: {shown}{more}"
