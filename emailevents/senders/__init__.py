"""Senders: where built messages go (Postmark, an in-memory outbox, a directory)."""

from .base import Message, Sender, SenderError, SendResult, SendStatus
from .outbox import DirectoryOutbox, OutboxSender, SentMessage
from .postmark import PostmarkSender

__all__ = [
    "DirectoryOutbox",
    "Message",
    "OutboxSender",
    "PostmarkSender",
    "SendResult",
    "SendStatus",
    "Sender",
    "SenderError",
    "SentMessage",
]
