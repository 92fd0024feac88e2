"""The rate-limited API that benchmarks/versus_naive.py puts behind both stacks: its own process.

It accepts at most COUNT calls in any sliding window of T (by arrival) and answers 429, with a
Retry-After of when the next call would fit, beyond that; during an outage window it answers
503 to everything. Every call is recorded (arrival time, job, tenant, status), so what each
stack does to the API is measured where the API sees it.

    .venv/bin/python -m benchmarks.fake_api --limit 20/1s --latency 0.02   # prints {"port": N}

HTTP: POST /call {"job", "tenant"} -> 200 | 429 | 503; POST /outage {"start", "end"} (Unix
seconds); POST /reset; GET /calls -> [[t, job, tenant, status], ...].
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ApiError(Exception):
    """The API refused a call: 503 (an outage) or 429 (`retry_after` set)."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(status, retry_after)  # the arguments, so that it pickles (Celery's retries)
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {'Too Many Requests' if self.status == 429 else 'Service Unavailable'}"


class Limiter:
    """The API's own state: a sliding log of accepted calls, the outage, and every call seen."""

    def __init__(self, count: int, window: float) -> None:
        self.count = count
        self.window = window
        self.lock = threading.Lock()
        self.accepted: deque[float] = deque()
        self.calls: list[tuple[float, str, str, int]] = []
        self.outage: tuple[float, float] | None = None

    def decide(self, job: str, tenant: str) -> tuple[int, float | None]:
        now = time.time()
        with self.lock:
            if self.outage is not None and self.outage[0] <= now < self.outage[1]:
                status, retry_after = 503, None
            else:
                accepted = self.accepted
                while accepted and accepted[0] + self.window <= now:
                    accepted.popleft()
                if len(accepted) >= self.count:
                    status, retry_after = 429, accepted[0] + self.window - now
                else:
                    accepted.append(now)
                    status, retry_after = 200, None
            self.calls.append((now, job, tenant, status))
        return status, retry_after

    def reset(self) -> None:
        with self.lock:
            self.accepted.clear()
            self.calls.clear()
            self.outage = None


def serve(limiter: Limiter, latency: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _answer(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/call":
                status, retry_after = limiter.decide(str(body["job"]), str(body["tenant"]))
                if status == 200 and latency > 0:
                    time.sleep(latency)
                headers = {"Retry-After": f"{retry_after:.3f}"} if retry_after is not None else None
                self._answer(status, None, headers)
            elif self.path == "/outage":
                with limiter.lock:
                    limiter.outage = (float(body["start"]), float(body["end"]))
                self._answer(200)
            elif self.path == "/reset":
                limiter.reset()
                self._answer(200)
            else:
                self._answer(404)

        def do_GET(self) -> None:
            if self.path == "/calls":
                with limiter.lock:
                    calls = list(limiter.calls)
                self._answer(200, calls)
            else:
                self._answer(404)

    class Server(ThreadingHTTPServer):
        # The default backlog of 5 drops the SYNs of a burst of connections, and each dropped
        # one is retried a second later: calls would reach the API a second after they started.
        request_queue_size = 1024

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


# -- the client side, for the workers of both stacks and the benchmark -------------------


def request(
    port: int, method: str, path: str, body: object = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        return response.status, dict(response.getheaders()), json.loads(payload or b"null")
    finally:
        connection.close()


def call(port: int, job: str, tenant: str) -> None:
    """One call to the API; raises ApiError unless it answered 200."""
    status, headers, _ = request(port, "POST", "/call", {"job": job, "tenant": tenant})
    if status == 200:
        return
    retry_after = headers.get("Retry-After")
    raise ApiError(status, float(retry_after) if retry_after is not None else None)


def main() -> None:
    parser = argparse.ArgumentParser(description="a rate-limited fake API for benchmarks/versus_naive.py")
    parser.add_argument("--limit", default="20/1s", help="COUNT/SECONDS accepted in any sliding window")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds an accepted call takes")
    parser.add_argument(
        "--nice", type=int, default=0, help="change this process's priority (negative: higher)"
    )
    args = parser.parse_args()
    if args.nice:
        # The API must not be the one late: on a busy machine its arrival times would bunch up.
        with contextlib.suppress(PermissionError):
            os.nice(args.nice)
    count, window = args.limit.split("/")
    server = serve(Limiter(int(count), float(window.removesuffix("s") or 1)), args.latency)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
