"""The worker's prefetch, raised so that batches can fill.

A batch is made of the messages a worker holds unacknowledged (docs/performance.md,
"Cross-emit batching: design"). Celery's consumer asks the broker for ``concurrency x
worker_prefetch_multiplier`` of them (``celery.worker.components:Consumer.create`` computes
that initial prefetch count from the worker's ``prefetch_multiplier``, then the consumer's
``Tasks`` bootstep sets it with ``basic_qos``, and pool grow and shrink recompute it from the
same multiplier). With the multiplier of 1 that guarantees.md once advised, a worker of 8
threads holds 8 messages and no batch of 500 can form.

:func:`add_prefetch_step` adds a bootstep to the Celery app's worker blueprint that runs before
the consumer is created (Celery creates the consumer last), whatever the pool (prefork,
threads, solo): when any event is batched, it raises the worker's multiplier to
``ceil(largest batch max / concurrency)`` (never lowers it; 0, unlimited, is left alone) and
logs so at INFO. With ``raise_prefetch=False`` it leaves the multiplier and logs a WARNING that
batches cannot fill, and why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps

__all__ = ["PrefetchPlan", "add_prefetch_step", "plan_prefetch"]

logger = logging.getLogger("emailevents")


class PrefetchPlan:
    """What the worker's prefetch becomes: ``multiplier`` from ``before``, for batches of
    ``batch_max`` over ``slots`` pool slots; ``raised`` when it changed."""

    def __init__(self, before: int, slots: int, batch_max: int, *, allowed: bool) -> None:
        self.before = before
        self.slots = max(slots, 1)
        self.batch_max = batch_max
        self.needed = math.ceil(batch_max / self.slots)
        # 0 is Celery's "no limit": the worker holds every message it is sent already.
        self.short = before != 0 and before < self.needed
        self.multiplier = self.needed if self.short and allowed else before
        self.raised = self.multiplier != before

    def log(self) -> None:
        """At INFO what was raised, or a WARNING when the prefetch cannot fill a batch."""
        fields = {
            "prefetch_multiplier_before": self.before,
            "prefetch_multiplier": self.multiplier,
            "concurrency": self.slots,
            "batch_max": self.batch_max,
        }
        if self.raised:
            logger.info(
                "batching: the worker's prefetch multiplier raised from %d to %d (%d slots x "
                "%d = %d messages held, for batches of up to %d); a worker that dies holds that "
                "many unacknowledged until the broker gives them back",
                self.before,
                self.multiplier,
                self.slots,
                self.multiplier,
                self.slots * self.multiplier,
                self.batch_max,
                extra=fields,
            )
        elif self.short:
            logger.warning(
                "batching: the worker holds %d messages (%d slots x prefetch multiplier %d), "
                "fewer than the largest batch (%d): batches cannot fill, since a batch is made "
                "of the messages the worker holds; set worker_prefetch_multiplier=%d, or let "
                "EmailEvents raise it (raise_prefetch=True, the default)",
                self.slots * self.before,
                self.slots,
                self.before,
                self.batch_max,
                self.needed,
                extra=fields,
            )


def plan_prefetch(worker: Any, batch_max: int, *, allowed: bool) -> PrefetchPlan:
    """The plan for a Celery ``WorkController`` whose largest batch is ``batch_max``: its
    slots as Celery counts them for the prefetch (``--autoscale``'s maximum, else
    ``--concurrency``)."""
    slots = int(worker.max_concurrency or worker.concurrency or 1)
    return PrefetchPlan(int(worker.prefetch_multiplier), slots, batch_max, allowed=allowed)


def add_prefetch_step(
    celery: Celery, largest_batch: Callable[[], int | None], *, allowed: Callable[[], bool]
) -> None:
    """Add to ``celery``'s workers the bootstep that raises the prefetch for batches of
    ``largest_batch()`` messages (None: nothing is batched, nothing is done), if ``allowed()``;
    both are asked when a worker starts."""

    class RaisePrefetch(bootsteps.Step):  # type: ignore[misc]  # celery ships no type hints
        label = "emailevents prefetch"
        # After the pool's step has read --autoscale; before the consumer, created last.
        requires = ("celery.worker.components:Pool",)

        def create(self, worker: Any) -> None:
            batch_max = largest_batch()
            if batch_max is None:
                return
            plan = plan_prefetch(worker, batch_max, allowed=allowed())
            worker.prefetch_multiplier = plan.multiplier
            plan.log()

    celery.steps["worker"].add(RaisePrefetch)
