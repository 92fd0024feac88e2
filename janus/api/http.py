"""/metrics, /healthz, /readyz, /status and its page at / (and the leader's /scopes, /why/JOB) on
one small HTTP server (the page's files: janus/api/page.py; /status: janus/api/status.py; the
optional token: janus/api/auth.py).

aiohttp serves them on an event loop of its own, on its own thread: parsing, slow or idle
clients and encoding answers never run on the service's loop, so nothing an HTTP client does
can delay the tick or the lease renewal. What only the service's loop knows is asked of it
in small, bounded steps:

- the health checks must prove that loop is alive: each asks it to read the Health, and fails
  if it does not answer within `LOOP_DEADLINE`;
- /scopes is cut from a snapshot the leader takes in slices, on a budget of its own
  (janus/api/scopes_cache.py), `top` at most `MAX_TOP` per page, `offset` to page on;
- /why/JOB asks the leader once, its id decoded from the path once;
- /changes (and /status's recent changes) are the leader's copy, which it refreshes itself when
  it applies a change (janus/api/changes.py): never a query per request.

At most `MAX_INSPECTING` /scopes and /why requests are in progress at once (429 beyond), and a
/metrics answer is reused for `METRICS_MAX_AGE` (and formats again only the series whose value
changed: janus/api/exposition.py);
a connection idle for `KEEPALIVE_TIMEOUT` (or that never finishes its request) is closed.
Unknown paths answer 404, other methods than GET and HEAD 405, an unknown job 404, and 503
means the loop did not answer or this process does not lead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from janus.api import auth, page
from janus.api.exposition import Exposition, kept_format
from janus.api.inspection import Inspecting, NotLeading, ScopesSnapshot
from janus.api.scopes_cache import ScopesCache
from janus.api.status import StatusBoard

WHY_QUERY_DEADLINE = 5.0  # seconds more for /why, which may read the job from PostgreSQL
LOOP_DEADLINE = 2.0  # seconds the event loop has to answer a health check
SNAPSHOT_DEADLINE = 10.0  # seconds a /scopes request waits for a snapshot
KEEPALIVE_TIMEOUT = 5.0  # seconds an idle connection (or an unfinished request) is kept
MAX_INSPECTING = 4  # /scopes and /why requests in progress at once; more are answered 429
MAX_TOP = 200  # scopes per dependency in one /scopes answer: page on with offset
METRICS_MAX_AGE = 0.5  # seconds a /metrics answer is reused (scrapes come every 15 s or so)
DEFAULT_TOP = 20
STOP_DEADLINE = 5.0

Readiness = Callable[[], tuple[bool, dict[str, Any]]]
T = TypeVar("T")

NOT_FOUND_HINT = "not found: try /metrics, /healthz, /readyz, /scopes or /why/JOB_ID\n"
NOT_FOUND_WITH_STATUS = (
    "not found: try /, /status, /changes, /metrics, /healthz, /readyz, /scopes or /why/JOB_ID\n"
)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode() + b"\n",
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class _Busy(Exception):
    """The service's loop did not answer in time (or is closed)."""


class HealthApp:
    """The routes; every handler runs on the server's own loop."""

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
        self._registry = registry
        self._status = status
        self._guard = guard
        self._loop = loop  # the service's
        self._readiness = readiness
        self._deadline = deadline
        self._inspector = inspector
        self._inspecting = 0
        self._exposition: dict[str, tuple[float, bytes]] = {}  # per content type: (when, encoded)
        self._kept: dict[bool, Exposition] = {}  # per format (OpenMetrics or not): its kept lines
        self._scopes = ScopesCache(self._take_snapshot) if inspector is not None else None

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guarded, self._hint_on_404])
        if self._status is not None:
            app.router.add_get("/status", self.status)
            app.router.add_get("/changes", self.changes)
            for path in page.FILES:
                app.router.add_get(path, self.page)
        else:
            app.router.add_get("/", self.metrics)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self._inspector is not None:
            app.router.add_get("/scopes", self._limited(self.scopes))
            app.router.add_get(r"/why/{job_id:.+}", self._limited(self.why))
        return app

    @web.middleware
    async def _hint_on_404(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return web.Response(
                status=404, text=NOT_FOUND_HINT if self._status is None else NOT_FOUND_WITH_STATUS
            )

    @web.middleware
    async def _guarded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._guard is not None and not self._guard.allows(
            request.path, request.headers.get("Authorization")
        ):
            return web.Response(
                status=401,
                text="a token is needed (JANUS_HTTP_TOKEN_FILE of this process)\n",
                headers=dict([auth.CHALLENGE]),
            )
        return await handler(request)

    async def page(self, request: web.Request) -> web.Response:
        found = page.asset(request.path)
        assert found is not None  # only its files are routed here
        content_type, body = found
        return web.Response(body=body, headers={"Content-Type": content_type, **dict(page.HEADERS)})

    async def status(self, request: web.Request) -> web.Response:
        assert self._status is not None
        ok, body = await self._status.answer()
        return web.Response(
            status=200 if ok else 503,
            body=body + b"\n",
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def changes(self, request: web.Request) -> web.Response:
        """The recent changes, as the leader last read them (janus/api/changes.py)."""
        assert self._status is not None
        body = self._status.changes.encoded() + b"\n"
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})

    def _limited(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def limited(request: web.Request) -> web.Response:
            if self._inspecting >= MAX_INSPECTING:
                response = _json(429, {"error": f"more than {MAX_INSPECTING} inspections at once: retry"})
                response.headers["Retry-After"] = "1"
                return response
            self._inspecting += 1
            try:
                return await handler(request)
            finally:
                self._inspecting -= 1

        return limited

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        now = time.monotonic()
        taken, body = self._exposition.get(content_type, (float("-inf"), b""))
        if now - taken >= METRICS_MAX_AGE:  # a flood of scrapes encodes the registry once
            body = self._encoded(encoder)
            self._exposition[content_type] = (now, body)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    def _encoded(self, encoder: Callable[[CollectorRegistry], bytes]) -> bytes:
        openmetrics = kept_format(encoder)
        if openmetrics is None:  # a format the kept lines do not write: the library's way
            return encoder(self._registry)
        kept = self._kept.get(openmetrics)
        if kept is None:
            kept = self._kept[openmetrics] = Exposition(self._registry, openmetrics=openmetrics)
        return kept.render()

    async def healthz(self, request: web.Request) -> web.Response:
        body: dict[str, Any]
        try:
            ok, body = await self._ask_loop(lambda: (True, {"alive": True}))
        except _Busy:
            ok, body = False, {"alive": False, "detail": "event loop busy"}
        return _json(200 if ok else 503, body)

    async def readyz(self, request: web.Request) -> web.Response:
        body: dict[str, Any]
        try:
            ok, body = await self._ask_loop(self._readiness)
        except _Busy:
            ok, body = False, {"ready": False, "detail": "event loop busy"}
        except Exception as exc:  # reported as not ready, never raised into the server
            ok, body = False, {"detail": f"health check failed: {exc!r}"}
        return _json(200 if ok else 503, body)

    async def scopes(self, request: web.Request) -> web.Response:
        assert self._scopes is not None
        query = request.query
        dependency = query.get("dependency")
        try:
            asked = int(query.get("top", str(DEFAULT_TOP)))
            offset = max(0, int(query.get("offset", "0")))
        except ValueError:
            return _json(400, {"error": "top and offset must be integers"})
        top = max(1, min(MAX_TOP, asked))
        try:
            cut = await self._scopes.get()
        except NotLeading as exc:
            return _json(503, {"error": str(exc)})
        except (_Busy, TimeoutError):
            return _json(503, {"error": "event loop busy"})
        key = (dependency, top, offset, asked > MAX_TOP)
        cached = self._scopes.answers.get(key)
        if cached is not None:
            return web.Response(body=cached, content_type="application/json")
        snapshot = cut.snapshot
        found, body = snapshot.answer(dependency, top, offset)
        if found:
            # Extensions of the answer (docs/operations.md): what was cut, and from when.
            body |= {"top": top, "offset": offset, "max_top": MAX_TOP, "as_of": snapshot.taken_at}
            if asked > MAX_TOP:
                body["note"] = f"top is capped at {MAX_TOP}: page on with offset"
            if offset + top > snapshot.depth:
                body["note"] = f"only the {snapshot.depth} largest backlogs per dependency are listed"
        encoded = json.dumps(body).encode() + b"\n"
        if not found:
            return web.Response(status=404, body=encoded, content_type="application/json")
        self._scopes.remember(key, encoded)
        return web.Response(body=encoded, content_type="application/json")

    async def why(self, request: web.Request) -> web.Response:
        assert self._inspector is not None
        # Decoded once, from the raw path: `pct%41-1` stays itself, `a/b` and `café-1` too.
        raw = request.raw_path.split("?", 1)[0].removeprefix("/why/")
        try:
            job_id = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return _json(400, {"error": "the job id is not UTF-8"})
        try:
            found, body = await self._on_loop(self._inspector.why(job_id), WHY_QUERY_DEADLINE)
        except NotLeading as exc:
            return _json(503, {"error": str(exc)})
        except _Busy:
            return _json(503, {"error": "event loop busy"})
        except Exception as exc:  # reported, never raised into the server
            return _json(503, {"error": f"could not answer: {exc}"})
        return _json(200 if found else 404, body)

    async def _take_snapshot(self) -> ScopesSnapshot:
        assert self._inspector is not None
        return await self._on_loop(self._inspector.snapshot(), SNAPSHOT_DEADLINE)

    async def _on_loop(self, coroutine: Coroutine[Any, Any, T], more: float) -> T:
        """Run `coroutine` on the service's loop; _Busy if it does not finish in time."""
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the service's loop is closed
            coroutine.close()
            raise _Busy() from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self._deadline + more)
        except TimeoutError:
            future.cancel()
            raise _Busy() from None

    async def _ask_loop(self, question: Callable[[], T]) -> T:
        """`question()` answered on the service's loop within the deadline, else _Busy."""
        answer: concurrent.futures.Future[T] = concurrent.futures.Future()

        def ask() -> None:
            if not answer.set_running_or_notify_cancel():
                return
            try:
                answer.set_result(question())
            except Exception as exc:  # reported to the asker, never raised into the loop
                answer.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(ask)
        except RuntimeError:  # the service's loop is closed
            raise _Busy() from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(answer), self._deadline)
        except TimeoutError:
            raise _Busy() from None


class HttpServer:
    """The server, its loop and its thread. `close()` from any thread stops all three."""

    def __init__(
        self, app: web.Application, host: str, port: int, *, keepalive_timeout: float = KEEPALIVE_TIMEOUT
    ) -> None:
        self._app, self._host, self._port = app, host, port
        self._keepalive_timeout = keepalive_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="janus-http", daemon=True)

    def start(self) -> None:
        """Bind and serve; raises OSError (port in use...) here, in the caller's thread."""
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    @property
    def port(self) -> int:
        assert self._runner is not None
        for address in self._runner.addresses:
            return int(address[1])
        raise RuntimeError("not serving")

    def close(self) -> None:
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(STOP_DEADLINE)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:
            self._error = exc
            loop.close()
            self._started.set()
            return
        self._loop = loop
        self._started.set()
        try:
            loop.run_forever()
        finally:
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _setup(self) -> None:
        # No access log: probes every few seconds would flood it.
        runner = web.AppRunner(
            self._app, access_log=None, keepalive_timeout=self._keepalive_timeout, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    loop: asyncio.AbstractEventLoop,
    readiness: Readiness,
    *,
    deadline: float = LOOP_DEADLINE,
    inspector: Inspecting | None = None,
    keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    status: StatusBoard | None = None,
    guard: auth.TokenGuard | None = None,
) -> HttpServer:
    """Serve on a thread of its own; stop with `.close()`."""
    app = HealthApp(registry, loop, readiness, deadline, inspector, status, guard)
    server = HttpServer(app.application(), host, port, keepalive_timeout=keepalive_timeout)
    server.start()
    return server
