"""/metrics, /healthz, /readyz, /status and its page at / (and the leader's /scopes, /why/JOB) on one
small HTTP server (the page's files: janus/api/page.py; /status: janus/api/status.py).

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
from collections.abc import Callable, Coroutine, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from janus.api import auth, page
from janus.api.status import StatusBoard

WHY_QUERY_DEADLINE = 5.0  # seconds more for /why, which may read the job from PostgreSQL
LOOP_DEADLINE = 2.0  # seconds the event loop has to answer a health check

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class Inspecting(Protocol):
    """The leader's answers to `janus scopes` and `janus why` (janus.service.inspect)."""

    def scopes(self, dependency: str | None, top: int) -> tuple[bool, dict[str, Any]]: ...

    def why(self, job_id: str) -> Coroutine[Any, Any, tuple[bool, dict[str, Any]]]: ...


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
        inspector: Inspecting | None = None,
        status: StatusBoard | None = None,
        guard: auth.TokenGuard | None = None,
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._status = status
        self._guard = guard
        self._loop = loop
        self._readiness = readiness
        self._deadline = deadline
        self._inspector = inspector

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if self._guard is not None and not self._guard.allows(path, environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), auth.CHALLENGE])
            return [b"a token is needed (JANUS_HTTP_TOKEN_FILE of this process)\n"]
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if self._status is not None and (found := page.asset(path)) is not None:
            start_response("200 OK", [("Content-Type", found[0]), *page.HEADERS])
            return [found[1]]
        if path == "/healthz":
            alive = self._ask_loop(lambda: (True, {"alive": True}))
            return _json(start_response, *(alive or (False, {"alive": False, "detail": "event loop busy"})))
        if path == "/readyz":
            ready = self._ask_loop(self._readiness)
            return _json(start_response, *(ready or (False, {"ready": False, "detail": "event loop busy"})))
        if self._status is not None and path == "/status":
            return _json(start_response, *self._status.answer())
        inspector = self._inspector
        if inspector is not None and path == "/scopes":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            dependency = query.get("dependency", [None])[0]
            try:
                top = max(1, min(1000, int(query.get("top", ["20"])[0])))
            except ValueError:
                return _json(
                    start_response, False, {"error": "top must be an integer"}, status="400 Bad Request"
                )
            answer = self._ask_loop(lambda: inspector.scopes(dependency, top))
            return _json(start_response, *(answer or (False, {"error": "event loop busy"})))
        if inspector is not None and path.startswith("/why/"):
            job_id = unquote(path.removeprefix("/why/"))
            try:
                future = asyncio.run_coroutine_threadsafe(inspector.why(job_id), self._loop)
                ok, body = future.result(timeout=self._deadline + WHY_QUERY_DEADLINE)
            except (RuntimeError, concurrent.futures.TimeoutError):
                ok, body = False, {"error": "event loop busy"}
            except Exception as exc:  # reported, never raised into the server
                ok, body = False, {"error": f"could not answer: {exc}"}
            return _json(start_response, ok, body)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /, /status, /metrics, /healthz, /readyz, /scopes or /why/JOB_ID\n"]

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


def _json(
    start_response: StartResponse, ok: bool, body: dict[str, Any], *, status: str | None = None
) -> list[bytes]:
    status = status or ("200 OK" if ok else "503 Service Unavailable")
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
    inspector: Inspecting | None = None,
    status: StatusBoard | None = None,
    guard: auth.TokenGuard | None = None,
) -> WSGIServer:
    """Serve on a background thread; stop with `.shutdown()` then `.server_close()`."""
    app = HealthApp(registry, loop, readiness, deadline, inspector, status, guard)
    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="janus-http", daemon=True).start()
    return server
