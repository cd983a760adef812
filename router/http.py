"""The daemon's HTTP server: operations endpoints plus the adapters' routes.

``/healthz``  the process is alive (always 200 while it runs)
``/readyz``   Redis answers and every adapter is connected (else 503 + why)
``/metrics``  Prometheus text format
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.adapters.base import Adapter

log = structlog.get_logger("router.http")

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


def build_app(
    *,
    adapters: Iterable[Adapter],
    max_body_bytes: int,
    redis_ready: Callable[[], Awaitable[tuple[bool, str]]],
    render_metrics: Callable[[], Awaitable[bytes]],
) -> web.Application:
    """The aiohttp application with the ops routes and every adapter's routes."""
    adapters = list(adapters)
    app = web.Application(middlewares=[json_errors], client_max_size=max_body_bytes)
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
