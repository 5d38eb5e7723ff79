"""What happens to a message after Postmark accepted it: deliveries, bounces, complaints, opens,
clicks and subscription changes, each a webhook record in Postmark's shape.

:class:`Activity` makes every accepted message's records (a Delivery per recipient, or a Bounce
for an address told to bounce and for Postmark's bounce-testing addresses), makes the others on
demand, keeps the streams' suppression lists (:mod:`.suppressions`) and hands each record to
:mod:`.webhooks`. Field names and formats are Postmark's, from its webhook references:

- https://postmarkapp.com/developer/webhooks/delivery-webhook
- https://postmarkapp.com/developer/webhooks/bounce-webhook
- https://postmarkapp.com/developer/webhooks/spam-complaint-webhook
- https://postmarkapp.com/developer/webhooks/open-tracking-webhook
- https://postmarkapp.com/developer/webhooks/click-webhook
- https://postmarkapp.com/developer/webhooks/subscription-change-webhook
- https://postmarkapp.com/developer/user-guide/sandbox-mode/generate-fake-bounces
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .messages import Mailbox, ReceivedMessage
from .suppressions import Suppression, SuppressionList
from .templates import SERVER_ID
from .webhooks import Webhooks

__all__ = ["BOUNCE_TESTING_DOMAIN", "BOUNCE_TYPES", "Activity"]

#: Postmark's black hole domain: a message to it bounces, its local part naming the bounce type
#: ("hardbounce@", case and underscores aside); "By default, we classify messages as a hard
#: bounce".
BOUNCE_TESTING_DOMAIN = "bounce-testing.postmarkapp.com"

#: Postmark's bounce types (its Bounce API's table): Type -> (TypeCode, Name, Description).
BOUNCE_TYPES: dict[str, tuple[int, str, str]] = {
    "HardBounce": (
        1,
        "Hard bounce",
        "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    ),
    "Transient": (
        2,
        "Message delayed",
        (
            "The server could not temporarily deliver your message (ex: Message is delayed due to "
            "network troubles)."
        ),
    ),
    "AutoResponder": (
        64,
        "Auto responder",
        'Automatic email responder (ex: "Out of Office" or "On Vacation").',
    ),
    "DnsError": (256, "DNS error", "A temporary DNS error."),
    "SpamNotification": (
        512,
        "Spam notification",
        (
            "The message was delivered, but was either blocked by the user, or classified as spam, "
            "bulk mail, or had rejected content."
        ),
    ),
    "Unknown": (2048, "Unknown", "Unable to classify the NDR."),
    "SoftBounce": (
        4096,
        "Soft bounce/Undeliverable",
        (
            "Unable to temporarily deliver message (i.e. mailbox full, account disabled, exceeds "
            "quota, out of disk space)."
        ),
    ),
    "BadEmailAddress": (
        100000,
        "Invalid email address",
        "The address is not a valid email address.",
    ),
    "SpamComplaint": (
        100001,
        "Spam complaint",
        "The subscriber explicitly marked this message as spam.",
    ),
    "Blocked": (100006, "ISP block", "Blocked from this ISP due to content or blacklisting."),
    "DMARCPolicy": (100009, "DMARC Policy", "Email rejected due DMARC Policy."),
}
# Postmark makes these addresses inactive (suppressed on the stream); the others stay active.
_DEACTIVATING = {"HardBounce": "HardBounce", "SpamComplaint": "SpamComplaint"}
_TESTING_TYPES = {name.lower(): name for name in BOUNCE_TYPES if name != "SpamComplaint"}

# Postmark's examples name a client; these are made up in their shape.
_CLIENT = {
    "UserAgent": "Mozilla/5.0 (X11; Linux x86_64) FakePostmark",
    "OS": {"Name": "Linux", "Family": "Linux", "Company": "Linux Foundation"},
    "Client": {"Name": "FakePostmark", "Family": "FakePostmark", "Company": "emailevents"},
    "Geo": {
        "IP": "127.0.0.1",
        "City": None,
        "Country": None,
        "CountryISOCode": None,
        "Region": None,
        "RegionISOCode": None,
        "Zip": None,
        "Coords": None,
    },
}


def timestamp() -> str:
    """Now in ISO 8601 with a ``Z``, as Postmark's webhooks write ``BouncedAt`` and the rest."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Activity:
    """A server's messages after the send: their records, made and posted, and suppressions.

    Args:
        lock: the server's lock.
        mailbox: the accepted messages, to find one by its MessageID.
        webhooks: where records are posted.
    """

    def __init__(self, lock: threading.RLock, mailbox: Mailbox, webhooks: Webhooks) -> None:
        self._lock = lock
        self._mailbox = mailbox
        self.webhooks = webhooks
        self.suppressions = SuppressionList(lock, changed=self._suppression_changed)
        self._bouncing: dict[str, str] = {}
        self._bounce_ids = itertools.count(4_000_000_001)

    # -- configuration --

    def bounce_addresses(self, addresses: Iterable[str], bounce_type: str = "HardBounce") -> None:
        """Make messages to these addresses bounce with ``bounce_type``, until :meth:`clear`.

        Raises:
            ValueError: not an address, or not one of :data:`BOUNCE_TYPES`.
        """
        if bounce_type not in BOUNCE_TYPES:
            raise ValueError(f"bounce types are {', '.join(BOUNCE_TYPES)}, not {bounce_type!r}")
        chosen = list(addresses)
        if not all(isinstance(a, str) and "@" in a for a in chosen):
            raise ValueError(f"not email addresses: {chosen!r}")
        with self._lock:
            self._bouncing.update({a.strip().lower(): bounce_type for a in chosen})

    def bouncing(self) -> dict[str, str]:
        """The addresses told to bounce, and how."""
        with self._lock:
            return dict(self._bouncing)

    def clear(self) -> None:
        """Forget the addresses told to bounce and every suppression."""
        with self._lock:
            self._bouncing.clear()
        self.suppressions.clear()

    def bounce_type(self, address: str) -> str | None:
        """How a message to ``address`` bounces, or ``None``: it is delivered."""
        key = address.strip().lower()
        with self._lock:
            told = self._bouncing.get(key)
        if told is not None:
            return told
        local, _, domain = key.rpartition("@")
        if domain == BOUNCE_TESTING_DOMAIN:
            return _TESTING_TYPES.get(local.replace("_", "").replace("-", ""), "HardBounce")
        return None

    # -- records --

    def accepted(self, message: ReceivedMessage, inactive: Iterable[str]) -> None:
        """Make the records of a message just accepted: a Delivery or a Bounce per recipient.

        Called inside the request; the records are posted later, from the background.
        """
        skipped = {a.lower() for a in inactive}
        for recipient in message.recipients:
            if recipient.lower() in skipped:
                continue  # Postmark does not send to an inactive recipient
            kind = self.bounce_type(recipient)
            if kind is None:
                self.webhooks.post(self._delivery(message, recipient))
            else:
                self.bounce(message.message_id, recipient, bounce_type=kind)

    def bounce(
        self,
        message_id: str,
        recipient: str | None = None,
        *,
        bounce_type: str = "HardBounce",
        details: str = "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    ) -> dict[str, Any]:
        """A message bounced for ``recipient`` (its first recipient by default); the record.

        A HardBounce suppresses the address on the message's stream (``Inactive: true``), and so
        a SubscriptionChange follows.

        Raises:
            KeyError: no such message.
            ValueError: an unknown bounce type, or not a recipient of the message.
        """
        if bounce_type not in BOUNCE_TYPES:
            raise ValueError(f"bounce types are {', '.join(BOUNCE_TYPES)}, not {bounce_type!r}")
        message, address = self._recipient(message_id, recipient)
        record = self._bounce_record(message, address, bounce_type, details)
        self.webhooks.post(record)
        reason = _DEACTIVATING.get(bounce_type)
        if reason is not None:
            self.suppressions.add(
                message.message_stream, address, reason=reason, origin="Recipient",
                message_id=message.message_id,
            )  # fmt: skip
        return record

    def spam_complaint(self, message_id: str, recipient: str | None = None) -> dict[str, Any]:
        """The recipient marked the message as spam: a SpamComplaint, and it is suppressed.

        Raises:
            KeyError: no such message.
            ValueError: not a recipient of the message.
        """
        return self.bounce(
            message_id, recipient, bounce_type="SpamComplaint", details="Test spam complaint"
        )

    def open(
        self, message_id: str, recipient: str | None = None, *, first_open: bool = True
    ) -> dict[str, Any]:
        """The recipient opened the message: an Open record.

        Raises:
            KeyError: no such message.
            ValueError: not a recipient of the message.
        """
        message, address = self._recipient(message_id, recipient)
        return self._engagement("Open", message, address, FirstOpen=first_open, ReadSeconds=5)

    def click(self, message_id: str, link: str, recipient: str | None = None) -> dict[str, Any]:
        """The recipient clicked ``link`` in the message: a Click record.

        Raises:
            KeyError: no such message.
            ValueError: not a recipient of the message.
        """
        message, address = self._recipient(message_id, recipient)
        return self._engagement("Click", message, address, ClickLocation="HTML", OriginalLink=link)

    def _engagement(
        self, record_type: str, message: ReceivedMessage, address: str, **fields: Any
    ) -> dict[str, Any]:
        """An Open or a Click by ``address``, posted: what both records carry, and ``fields``."""
        record = {
            "RecordType": record_type,
            "MessageStream": message.message_stream,
            "Metadata": dict(message.metadata),
            "Recipient": address,
            "MessageID": message.message_id,
            "ReceivedAt": timestamp(),
            "Platform": "Desktop",
            "Tag": message.tag or "",
            **fields,
            **_CLIENT,
        }
        self.webhooks.post(record)
        return record

    def unsubscribe(self, message_id: str, recipient: str | None = None) -> Suppression | None:
        """The recipient unsubscribed from the message: suppressed by the Recipient, as
        Postmark records it ("If a recipient unsubscribes, they will be suppressed with the
        SuppressionReason of ManualSuppression"); the SubscriptionChange follows.

        Raises:
            KeyError: no such message.
            ValueError: not a recipient of the message.
        """
        message, address = self._recipient(message_id, recipient)
        return self.suppressions.add(
            message.message_stream, address, reason="ManualSuppression", origin="Recipient",
            message_id=message.message_id,
        )  # fmt: skip

    def _recipient(self, message_id: str, recipient: str | None) -> tuple[ReceivedMessage, str]:
        message = self._mailbox.find(message_id)
        if recipient is None:
            return message, message.recipients[0]
        for address in message.recipients:
            if address.lower() == recipient.strip().lower():
                return message, address
        raise ValueError(f"{recipient!r} is not a recipient of message {message_id}")

    @staticmethod
    def _delivery(message: ReceivedMessage, recipient: str) -> dict[str, Any]:
        return {
            "RecordType": "Delivery",
            "ServerID": SERVER_ID,
            "MessageStream": message.message_stream,
            "MessageID": message.message_id,
            "Recipient": recipient,
            "Tag": message.tag or "",
            "DeliveredAt": timestamp(),
            "Details": "smtp;250 2.0.0 OK (FakePostmark)",
            "Metadata": dict(message.metadata),
        }

    def _bounce_record(
        self, message: ReceivedMessage, address: str, bounce_type: str, details: str
    ) -> dict[str, Any]:
        code, name, description = BOUNCE_TYPES[bounce_type]
        return {
            "RecordType": "SpamComplaint" if bounce_type == "SpamComplaint" else "Bounce",
            "MessageStream": message.message_stream,
            "ID": next(self._bounce_ids),
            "Type": bounce_type,
            "TypeCode": code,
            "Name": name,
            "Tag": message.tag or "",
            "MessageID": message.message_id,
            "Metadata": dict(message.metadata),
            "ServerID": SERVER_ID,
            "Description": description,
            "Details": details,
            "Email": address,
            "From": message.addresses("From")[0][1],
            "BouncedAt": timestamp(),
            "DumpAvailable": False,
            "Inactive": bounce_type in _DEACTIVATING,
            # Postmark: a spam complaint cannot be reactivated; a hard bounce can.
            "CanActivate": bounce_type != "SpamComplaint",
            "Subject": message.subject,
            "Content": "",
        }

    def _suppression_changed(self, entry: Suppression, *, added: bool) -> None:
        message: ReceivedMessage | None = None
        if added and entry.message_id is not None:
            try:
                message = self._mailbox.find(entry.message_id)
            except KeyError:
                message = None
        # Postmark: "MessageID is null for Manual Suppressions with Origin value of Customer or
        # Admin and Reactivations"; "The SuppressionReason and Tag fields are null, while the
        # Metadata field is an empty object when SuppressSending = false (reactivation)".
        self.webhooks.post(
            {
                "RecordType": "SubscriptionChange",
                "MessageID": entry.message_id if added else None,
                "ServerID": SERVER_ID,
                "MessageStream": entry.stream,
                "ChangedAt": timestamp(),
                "Recipient": entry.email_address,
                "Origin": entry.origin if added else "Customer",
                "SuppressSending": added,
                "SuppressionReason": entry.reason if added else None,
                "Tag": (message.tag if message else None) if added else None,
                "Metadata": dict(message.metadata) if message and added else {},
            }
        )
