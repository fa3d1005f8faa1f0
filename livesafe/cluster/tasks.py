"""Stopping the cluster's background loops for certain.

Each loop retries on Redis errors, as it must (Redis goes away and comes
back).  But a cancellation that lands inside a redis-py call can come out of
it as redis's ``TimeoutError`` (its socket timeout is an ``asyncio.timeout``,
which on Python 3.11 can turn the outer cancel into its own timeout), and the
loop then retries instead of ending: a node that never finishes shutting down.
So stopping cancels again until the task has really ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again any that swallowed it."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
