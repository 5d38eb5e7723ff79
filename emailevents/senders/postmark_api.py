"""``PostmarkAPI``: requests to Postmark's API beyond sending (templates, message streams,
suppressions), through a :class:`~emailevents.PostmarkSender`'s own client.

Errors are read as the sender reads them (:func:`~emailevents.senders.postmark.error_answer`);
those that mean the settings are wrong become :class:`~emailevents.ConfigurationError` naming
the setting, never showing the token.
"""

from __future__ import annotations

from typing import Any

import requests
from postmarker.exceptions import ClientError

from ..errors import ConfigurationError, PostmarkAPIError, PostmarkUnreachableError
from .postmark import (
    BAD_TOKEN,
    NOT_POSTMARK_API,
    TOKEN_VARIABLE,
    UNAUTHORIZED,
    URL_VARIABLE,
    PostmarkSender,
    error_answer,
    status_of,
)

__all__ = ["PostmarkAPI"]


class PostmarkAPI:
    """Postmark's API, called with ``sender``'s token at its URL.

    Requests go through the sender's postmarker client (one per thread), so the token and URL are
    exactly the sender's.
    """

    def __init__(self, sender: PostmarkSender) -> None:
        self.sender = sender

    @property
    def url(self) -> str:
        return self.sender.api_url

    def call(self, method: str, endpoint: str, data: Any = None, **params: Any) -> Any:
        """One request; failures that mean wrong settings raise ConfigurationError."""
        try:
            return self.sender.client.call(method, endpoint, data=data, **params)
        except ClientError as exc:
            raise self._error(f"{method} /{endpoint}", exc) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PostmarkUnreachableError(
                f"cannot reach Postmark at {self.url} ({type(exc).__name__}): check --api-url "
                f"or {URL_VARIABLE}"
            ) from None
        except (requests.HTTPError, KeyError, ValueError) as exc:
            # An answer that is not Postmark's JSON: the URL is some other server.
            cause = exc if isinstance(exc, requests.HTTPError) else exc.__context__
            raise self._not_postmark(f"{method} /{endpoint}", status_of(cause)) from None

    def _error(self, request: str, exc: ClientError) -> Exception:
        """What an error answer in Postmark's form means: a token to fix, or an API error."""
        status, code, message = error_answer(exc)
        if code == BAD_TOKEN or status == UNAUTHORIZED:
            return ConfigurationError(
                f"Postmark at {self.url} rejected the server token (ErrorCode {code}): set "
                f"--token or {TOKEN_VARIABLE} to the server's API token"
            )
        return PostmarkAPIError(
            f"{request}: HTTP {status}, ErrorCode {code}: {message}",
            error_code=code,
            status=status,
        )

    def _not_postmark(self, request: str, status: int | None) -> Exception:
        """What an answer that is not Postmark's JSON means, by its HTTP status."""
        if status == UNAUTHORIZED:
            return ConfigurationError(
                f"{self.url} rejected the server token (HTTP 401): set --token or "
                f"{TOKEN_VARIABLE} to the server's API token"
            )
        if status in NOT_POSTMARK_API:
            return PostmarkAPIError(
                f"{request}: HTTP {status}, not a Postmark answer", error_code=None, status=status
            )
        answered = f"HTTP {status}" if status else "not JSON"
        return ConfigurationError(
            f"{self.url} did not answer like Postmark's API ({answered}): check "
            f"--api-url or {URL_VARIABLE}"
        )
