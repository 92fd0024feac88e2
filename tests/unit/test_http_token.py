"""JANUS_HTTP_TOKEN_FILE: a bearer token guards the HTTP API (the status page included) but the
health checks; `janus status` sends it; a browser gives it as the Basic password."""

from __future__ import annotations

import argparse
import asyncio
import base64
import urllib.request
from pathlib import Path

import pytest

from janus.api.auth import TokenGuard, is_loopback
from janus.api.http import serve
from janus.api.status import StatusBoard
from janus.cli.inspect import ask_leader
from janus.config import Settings
from janus.errors import JanusError
from tests.unit.test_metrics import free_port
from tests.unit.test_status import leader_metrics

TOKEN = "s3cret-token"


def status_of(url: str, authorization: str | None = None) -> int:
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_guard_table() -> None:
    guard = TokenGuard(TOKEN)
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    rows = [
        ("/metrics", None, False),  # no token
        ("/metrics", f"Bearer {TOKEN}", True),
        ("/status", f"bearer {TOKEN}", True),  # the scheme in any case
        ("/status", "Bearer wrong", False),
        ("/", f"Basic {basic}", True),  # a browser after its prompt: the token is the password
        ("/", "Basic not-base64!", False),
        ("/why/x", f"Token {TOKEN}", False),  # an unknown scheme
        ("/healthz", None, True),  # probes carry no token
        ("/readyz", None, True),
    ]
    for path, authorization, allowed in rows:
        assert guard.allows(path, authorization) is allowed, (path, authorization)
    with pytest.raises(ValueError, match="empty"):
        TokenGuard("")
    assert is_loopback("127.0.0.1")
    assert not is_loopback("0.0.0.0")


async def test_a_guarded_server_and_the_cli_that_sends_the_token(tmp_path: Path) -> None:
    metrics = leader_metrics()
    loop = asyncio.get_running_loop()
    port = free_port()
    server = serve(
        "127.0.0.1",
        port,
        metrics.registry,
        loop,
        lambda: (True, {"ready": True}),
        status=StatusBoard(metrics.registry, loop),
        guard=TokenGuard(TOKEN),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert await asyncio.to_thread(status_of, f"{base}/status") == 401
        assert await asyncio.to_thread(status_of, f"{base}/") == 401
        assert await asyncio.to_thread(status_of, f"{base}/metrics", f"Bearer {TOKEN}") == 200
        assert await asyncio.to_thread(status_of, f"{base}/readyz") == 200
        args = argparse.Namespace(url=base)
        with pytest.raises(JanusError, match="token"):
            await asyncio.to_thread(ask_leader, args, Settings(), "/status")
        (tmp_path / "token").write_text(TOKEN + "\n")
        settings = Settings(http_token_file=tmp_path / "token")
        body = await asyncio.to_thread(ask_leader, args, settings, "/status")
        assert body["process"]["epoch"] == 7
    finally:
        server.close()
