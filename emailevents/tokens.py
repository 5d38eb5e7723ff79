"""Signed links for recipients: the token in an unsubscribe or preferences URL says who the
recipient is and which category, and when it was issued; it is verified without a database read.

Signed with itsdangerous (HMAC-SHA1 by default in its URL-safe serializer; Pallets' library,
not hand-rolled crypto). Several keys for rotation: ``signing_keys`` lists the newest first;
tokens are signed with the newest and verified with any, so a link mailed before a rotation
keeps working until its key is dropped from the list.

The preferences page's form carries a second token, derived from the link's: its signature
with the same keys and another salt (:meth:`Signer.form_token`), checked when the form is
posted (:meth:`Signer.check_form_token`), so that the form is refused without it (CSRF).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer
from itsdangerous import Signer as ItsdangerousSigner

from .errors import LinkError

__all__ = ["LINK_VARIABLES", "ONE_CLICK", "Link", "RecipientLinks", "Signer"]

LINK_VARIABLES = ("unsubscribe_url", "preferences_url")
"""What the TemplateModel of a message of a category gets: the recipient's links."""

ONE_CLICK = "List-Unsubscribe=One-Click"
"""RFC 8058: the body of the one-click POST, and the value of ``List-Unsubscribe-Post``."""

_SALT = "emailevents.recipient-link"
_FORM_SALT = "emailevents.preferences-form"


@dataclass(frozen=True)
class Link:
    """What a verified token says."""

    recipient: str
    """The recipient's key (its address, lowercased)."""
    category: str
    issued_at: datetime


class Signer:
    """Signs and verifies recipients' links.

    Args:
        keys: the signing keys, newest first; at least one, none empty.

    Raises:
        ValueError: no key, or an empty one.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(
                "signing_keys is a list of one or more non-empty strings, newest first"
            )
        # itsdangerous signs with the last key and tries them all.
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=_SALT)
        self._forms = ItsdangerousSigner(list(reversed(keys)), salt=_FORM_SALT)

    def sign(self, recipient: str, category: str) -> str:
        """A token for ``recipient`` (its key) and ``category``, issued now."""
        return self._serializer.dumps([recipient.strip().lower(), category])

    def verify(self, token: str) -> Link:
        """What ``token`` says.

        Raises:
            LinkError: the token is not one we signed with any of the keys.
        """
        try:
            payload, signed_at = self._serializer.loads(token, return_timestamp=True)
        except BadSignature:
            raise LinkError(
                "this link is not valid: it was changed, cut short, or is not ours"
            ) from None
        if not (
            isinstance(payload, list)
            and len(payload) == 2  # noqa: PLR2004 - recipient and category
            and all(isinstance(part, str) for part in payload)
        ):
            raise LinkError("this link is not valid: it does not name a recipient and category")
        return Link(payload[0], payload[1], signed_at.astimezone(UTC))

    def form_token(self, token: str) -> str:
        """The token a form served for the link ``token`` carries (signed with the newest key)."""
        return self._forms.get_signature(token).decode("ascii")

    def check_form_token(self, token: str, form_token: str) -> bool:
        """Whether ``form_token`` is :meth:`form_token` of ``token`` under any of the keys."""
        try:
            signature = form_token.encode("ascii")
        except UnicodeEncodeError:
            return False
        return bool(form_token) and self._forms.verify_signature(token.encode("utf-8"), signature)


@dataclass(frozen=True)
class RecipientLinks:
    """Each recipient's unsubscribe and preferences URLs, and the headers that carry them.

    Args:
        public_url: where the web component is mounted, as recipients reach it
            (``https://app.example.com/email``).
        signer: signs the tokens.
        mailto: an address for ``List-Unsubscribe``'s mailto, or ``None``.
    """

    public_url: str
    signer: Signer
    mailto: str | None = None

    def for_recipient(self, recipient: str, category: str) -> tuple[dict[str, str], dict[str, str]]:
        """The TemplateModel's ``unsubscribe_url`` and ``preferences_url``, and the headers
        ``List-Unsubscribe`` (the https URL, then the mailto) and ``List-Unsubscribe-Post``."""
        token = self.signer.sign(recipient, category)
        base = self.public_url.rstrip("/")
        unsubscribe = f"{base}/unsubscribe/{token}"
        model = dict(zip(LINK_VARIABLES, (unsubscribe, f"{base}/preferences/{token}"), strict=True))
        targets = [f"<{unsubscribe}>"]
        if self.mailto:
            targets.append(f"<mailto:{self.mailto}?subject={quote('unsubscribe ' + category)}>")
        headers = {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}
        return model, headers
