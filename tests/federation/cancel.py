"""Cancelling a coroutine at every point, as a client that goes away mid-request does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio

DELAYS = (0, 0.0005, 0.001, 0.002, 0.004, 0.008)


async def cancel_at_every_point(
    call: Callable[[], Coroutine[Any, Any, object]], delays: Sequence[float] = DELAYS
) -> None:
    """For each delay: six calls at once, every other one cancelled after it (a task's cancel);
    then six bounded by anyio scopes timing out at fractions of it (a request's scope, which
    cancels again at every await until it exits)."""
    for delay in delays:
        tasks = [asyncio.create_task(call()) for _ in range(6)]
        await asyncio.sleep(delay)
        for t in tasks[::2]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        async def bounded(after: float) -> None:
            with anyio.move_on_after(after):
                await call()

        await asyncio.gather(*(bounded(delay * i / 3) for i in range(6)))
