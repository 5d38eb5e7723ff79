"""A local Postmark-compatible HTTP server, as moto is for AWS: the real client, no Postmark.

``FakePostmark`` speaks the part of Postmark's server API that emailevents uses, with Postmark's
JSON shapes, error codes and messages: template sends (single and batch), plain sends, the
templates API (list, get, create, edit, delete, validate) and the outbound message search. It
renders templates as Postmark does (see :mod:`emailevents.testing.mustache`), keeps every accepted
message, shows them in an inbox at ``/`` (:mod:`.inbox`) like a local mail catcher, and fails on
demand (``server.faults``) so retry logic can be exercised over real HTTP::

    with FakePostmark(templates="postmark/templates") as server:
        client = PostmarkClient(server_token="test-token", root_api_url=server.url)
        server.faults.fail_next(1, status=429)
        ...
        assert server.messages[0].subject == "..."

Where Postmark's behaviour is known from its documentation, its clients or recorded answers,
the comment next to it says so; the rest is marked "assumed".

After the send it plays Postmark's part too: :mod:`.activity` makes each message's webhook
records (Delivery, Bounce, SpamComplaint, Open, Click, SubscriptionChange) and keeps the
streams' suppression lists (:mod:`.suppressions`, with Postmark's Suppressions API), and
:mod:`.webhooks` posts them from the background with Postmark's retries.

One module per job: :mod:`.server` (the server: lifecycle, state, where requests go),
:mod:`.handler` (HTTP), :mod:`.routes` (Postmark's API), :mod:`.validation` (a send checked as
Postmark checks it), :mod:`.templates`, :mod:`.messages`, :mod:`.faults`, :mod:`.activity`,
:mod:`.suppressions`, :mod:`.webhooks`, and the pages: :mod:`.pages`, rendered by :mod:`.inbox`
and :mod:`.webhook_page`.
"""

from ...errors import TemplateLoadError
from .activity import BOUNCE_TESTING_DOMAIN, BOUNCE_TYPES, Activity
from .faults import Faults
from .handler import MAX_EMAIL_BYTES
from .messages import ReceivedMessage
from .routes import DEFAULT_STREAMS
from .server import FakePostmark
from .suppressions import Suppression
from .templates import StoredTemplate
from .webhooks import RECORD_TYPES, RETRY_SCHEDULE, WebhookDelivery, Webhooks

__all__ = [
    "BOUNCE_TESTING_DOMAIN",
    "BOUNCE_TYPES",
    "DEFAULT_STREAMS",
    "MAX_EMAIL_BYTES",
    "RECORD_TYPES",
    "RETRY_SCHEDULE",
    "Activity",
    "FakePostmark",
    "Faults",
    "ReceivedMessage",
    "StoredTemplate",
    "Suppression",
    "TemplateLoadError",
    "WebhookDelivery",
    "Webhooks",
]
