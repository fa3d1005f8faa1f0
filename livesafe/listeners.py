"""The optional admin listener (``[server] admin_port``): which routes the public port may serve.

With ``admin_port`` set, the proxy listens on two ports and the public one
serves only the routes marked public -- WHIP/WHEP, the player and publish pages
(with their script and the viewer's stream state and reports), ``/healthz``;
everything else (``/metrics``, the dashboard and its assets, the moderation,
lists and banks APIs, the stream listing) answers 404 there and is served on
the admin port, which serves the public routes as well (so the dashboard's
links to a player work from inside).  Without ``admin_port`` every route is on
the one port, as before.

Why one application and a middleware that looks at the listening socket,
rather than two applications: the relay, the moderation service and the
cluster node hang their state and their startup/cleanup hooks on the app, in
an order that matters (the relay's last events are recorded before the event
store closes).  One app keeps that one lifecycle, one set of keys and one
middleware chain (CORS, cluster forwarding) for both ports; two apps would have
to mirror every key and hook and order their cleanups across two runners.

Routes are private unless marked (``serve_publicly``): a route added later
stays off the public port until someone decides it belongs there.  Until the
admin listener is bound, nothing counts as arriving on it, so the private
routes are refused everywhere rather than served publicly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute


@dataclass
class AdminListener:
    """Whether the proxy has an admin listener (``enabled``), the ports it is bound to, the public routes."""

    enabled: bool
    ports: set[int] = field(default_factory=set)
    public: set[AbstractResource] = field(default_factory=set)

    def serves(self, request: web.Request) -> bool:
        """May ``request`` be answered on the listener it came in on?"""
        if not self.enabled or request.match_info.http_exception is not None:
            return True  # one port for all; or no route matched (its own 404, or 405 for a wrong method)
        if request.match_info.route.resource in self.public:
            return True
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        return isinstance(sockname, tuple) and sockname[1] in self.ports

    def middleware(self) -> Middleware:
        @web.middleware
        async def admin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.serves(request):
                raise web.HTTPNotFound()
            return await handler(request)

        return admin_only


ADMIN_LISTENER: web.AppKey[AdminListener] = web.AppKey("admin_listener")


def serve_publicly(app: web.Application, *routes: AbstractRoute) -> None:
    """Mark ``routes`` as served on the public port too (the rest are the admin port's when there is one).

    What is marked is each route's resource, its path: every method added on that path is public.
    """
    for route in routes:
        assert route.resource is not None  # a route added with a path always has one
        app[ADMIN_LISTENER].public.add(route.resource)


async def listen_admin(runner: web.AppRunner, host: str, port: int) -> web.TCPSite:
    """Start the admin listener on ``runner`` (before the public one, whose ports it must not count).

    Raises ``OSError`` if it cannot bind.  ``port`` 0: a free one (see ``AdminListener.ports``).
    """
    known = {address[1] for address in runner.addresses}
    site = web.TCPSite(runner, host, port)
    await site.start()
    listener = runner.app[ADMIN_LISTENER]
    listener.ports |= {address[1] for address in runner.addresses} - known
    return site
