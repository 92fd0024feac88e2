"""/metrics, /healthz and /readyz on one small HTTP server beside the event loop.

The server runs on its own threads (the standard library's WSGI server, as
prometheus-client's own `start_http_server` does), so a scrape never waits for the
loop. The two health checks, on the contrary, must prove the loop is alive: each
asks the loop to answer (read the Health) and fails if it does not within
`LOOP_DEADLINE`. No web framework is needed for three fixed paths.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

LOOP_DEADLINE = 2.0  # seconds the event loop has to answer a health check

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never holds the process up at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


class HealthApp:
    def __init__(
        self,
        registry: CollectorRegistry,
        loop: asyncio.AbstractEventLoop,
        readiness: Readiness,
        deadline: float = LOOP_DEADLINE,
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._loop = loop
        self._readiness = readiness
        self._deadline = deadline

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/metrics", "/"):
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            alive = self._ask_loop(lambda: (True, {"alive": True}))
            return _json(start_response, *(alive or (False, {"alive": False, "detail": "event loop busy"})))
        if path == "/readyz":
            ready = self._ask_loop(self._readiness)
            return _json(start_response, *(ready or (False, {"ready": False, "detail": "event loop busy"})))
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    def _ask_loop(self, question: Readiness) -> tuple[bool, dict[str, Any]] | None:
        answer: concurrent.futures.Future[tuple[bool, dict[str, Any]]] = concurrent.futures.Future()

        def ask() -> None:
            try:
                answer.set_result(question())
            except Exception as exc:  # reported as not ready, never raised into the loop
                answer.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(ask)
            return answer.result(timeout=self._deadline)
        except (RuntimeError, concurrent.futures.TimeoutError):  # loop closed, or not answering
            return None
        except Exception as exc:
            return False, {"detail": f"health check failed: {exc!r}"}


def _json(start_response: StartResponse, ok: bool, body: dict[str, Any]) -> list[bytes]:
    status = "200 OK" if ok else "503 Service Unavailable"
    start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
    return [json.dumps(body).encode() + b"\n"]


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    loop: asyncio.AbstractEventLoop,
    readiness: Readiness,
    *,
    deadline: float = LOOP_DEADLINE,
) -> WSGIServer:
    """Serve on a background thread; stop with `.shutdown()` then `.server_close()`."""
    app = HealthApp(registry, loop, readiness, deadline)
    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="janus-http", daemon=True).start()
    return server
