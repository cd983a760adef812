"""The daemon's HTTP server: operations endpoints plus the adapters' routes.

``/healthz``  the process is alive (always 200 while it runs)
``/readyz``   Redis answers and every adapter is connected (else 503 + why)
``/metrics``  Prometheus text format
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.adapters.base import Adapter
from router.logs import Outage

log = structlog.get_logger("router.http")

# Methods whose body the server reads before the handler runs (under read_timeout).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON with a reason; a bug in a handler never kills the server."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return web.json_response({"error": reason}, status=exc.status)
    except Exception:
        log.exception("http_handler_failed", path=request.path, method=request.method)
        return web.json_response(
            {"error": "internal error; the daemon logged the details"}, status=500
        )


def body_deadline(read_timeout: float) -> Any:
    """Middleware: a request's body is read in full within ``read_timeout``
    seconds before its handler runs (aiohttp keeps it for ``read()``,
    ``json()`` and ``post()``), else 408. Without it a client that trickles a
    body, or sends a chunked body that never ends, holds a connection and a
    handler forever."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        limit = request.client_max_size
        too_big = request.content_length is not None and request.content_length > limit
        if request.method in _BODY_METHODS and request.body_exists and not too_big:
            try:
                async with asyncio.timeout(read_timeout):
                    await request.read()
            except web.HTTPRequestEntityTooLarge:  # a chunked body past the limit
                response = web.json_response(
                    {"error": f"body is over the limit of {limit} bytes"}, status=413
                )
                response.force_close()
                return response
            except TimeoutError:
                response = web.json_response(
                    {"error": f"the request body did not arrive within {read_timeout:g}s"},
                    status=408,
                )
                response.force_close()  # the rest of the body is not waited for
                return response
        return await handler(request)

    return middleware


def build_app(
    *,
    adapters: Iterable[Adapter],
    max_body_bytes: int,
    redis_ready: Callable[[], Awaitable[tuple[bool, str]]],
    render_metrics: Callable[[], Awaitable[bytes]],
    read_timeout: float = 60.0,
) -> web.Application:
    """The aiohttp application with the ops routes and every adapter's routes."""
    adapters = list(adapters)
    app = web.Application(
        middlewares=[json_errors, body_deadline(read_timeout)], client_max_size=max_body_bytes
    )
    started = time.time()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "uptime_s": round(time.time() - started)})

    async def readyz(_: web.Request) -> web.Response:
        ok, why = await redis_ready()
        checks = {"redis": why}
        for a in adapters:
            a_ok, a_why = a.ready()
            checks[a.name] = a_why
            ok = ok and a_ok
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        body = await render_metrics()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    for a in adapters:
        app.router.add_routes(a.routes())
    return app


class _Refuse(asyncio.Protocol):
    """A connection over ``http.max_connections``: 503 at once, then closed
    (what nginx's limit_conn does), so it holds no file descriptor."""

    BODY = orjson.dumps({"error": "too many connections to this daemon; retry shortly"})
    RESPONSE = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: 1\r\nConnection: close\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's are not subclasses
        transport.write(self.RESPONSE)
        # Half-close, and close for good a moment later: closing at once with
        # the client's request unread would send a reset, which can discard
        # the 503 before the client reads it.
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read

    def eof_received(self) -> bool:
        return False  # the client is done too: close now


class CappedTCPSite(web.TCPSite):
    """A TCPSite that serves at most ``max_connections`` connections at once;
    the ones beyond get an immediate 503 (counted in ``on_refused``)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        on_refused: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._max_connections = max_connections
        self._on_refused = on_refused

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site (TCPSite.start creates the server)
        server = self._runner.server
        assert server is not None
        limit = self._max_connections
        outage = Outage(log, "http_connections_refused", "http_connections_accepted", every=30)

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= limit:
                self._on_refused()
                outage.failed(
                    max_connections=limit,
                    hint="raise http.max_connections (and LimitNOFILE) or add daemons",
                )
                return _Refuse()
            outage.ok()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def raise_open_file_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never past the hard
    limit); returns (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard
