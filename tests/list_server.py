"""An HTTP server on 127.0.0.1 in a thread and event loop of its own, for list sources.

Sources fetch synchronously (``requests``, on the caller's or a watcher's
thread), so the server cannot share the test's event loop while a fetch blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence

from aiohttp import web

from livesafe.lists.live import LiveLists
from livesafe.lists.sources import Source

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ThreadedServer:
    """``handler`` answers every request to any path; ``requests`` records (path, headers) of each."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.base = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path_qs, dict(request.headers)))
        return await self.handler(request)

    @contextlib.contextmanager
    def running(self) -> Iterator[ThreadedServer]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        ready = threading.Event()

        def serve() -> None:
            async def start() -> None:
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                self.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
                ready.set()

            loop.run_until_complete(start())
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert ready.wait(10), "the test server did not start"
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


async def failures_keep_the_list(
    source: Source,
    inject: Callable[[web.StreamResponse], None],
    failures: Sequence[tuple[web.StreamResponse, str]],
    secret: str,
) -> None:
    """Load ``source``'s list, then for each (reply, reason) make the next request answer ``reply``: the
    refresh fails saying ``reason``, the list first loaded stays in force and the status says why,
    never showing ``secret``."""
    lists = await asyncio.to_thread(lambda: LiveLists([source.spec], list, context=source.context))
    before = lists.current
    assert before[0], "the source loaded nothing to keep"
    for reply, reason in failures:
        inject(reply)
        messages = await asyncio.to_thread(lists.refresh, 0, force=True)
        assert lists.current is before and reason in messages[0], messages
        error = str(lists.statuses[0].last_error)
        assert reason in error and secret not in error, error
