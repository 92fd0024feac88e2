"""What a new operator meets first, as they meet it: whole `janus` processes and their exit codes.

A missing database or vhost, refused credentials or a port in use is a setting to fix: one
line and exit code 2, at once, never "reconnecting" for ever. An outage still reconnects,
and a SIGTERM meanwhile says that it stops.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import janus_cli
from tests.services import Services
from tests.system.janus_process import FAST_TIMINGS, JanusProcess
from tests.system.private_services import free_port
from tests.system.test_crash_restart import write_config

pytestmark = pytest.mark.system

SETTLED = 20.0  # seconds a refused setting may take to be reported (it takes well under one)


async def exit_of(janus: JanusProcess, timeout: float = SETTLED) -> tuple[int, list[str]]:
    """The exit code of a `janus run` that must stop by itself, and its log lines."""
    assert janus.process is not None
    code = await asyncio.wait_for(janus.process.wait(), timeout)
    if janus._reader is not None:
        await janus._reader
    return code, janus.lines


def assert_one_line(lines: list[str], complaint: str) -> None:
    errors = [line for line in lines if line.startswith("janus: ")]
    assert len(errors) == 1, "\n".join(lines)
    assert complaint in errors[0], "\n".join(lines)
    assert not any("Traceback" in line or "reconnecting" in line for line in lines), "\n".join(lines)


async def test_run_on_a_database_that_does_not_exist_stops_with_one_line(
    services: Services, vhost: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    name = f"jt_missing_{uuid.uuid4().hex[:8]}"
    janus = janus_process(write_config(tmp_path, services.pg_dsn(name), vhost))
    await janus.start()
    code, lines = await exit_of(janus)
    assert code == 2
    assert_one_line(lines, f"database '{name}' does not exist (create it: janus migrate --create)")


async def test_migrate_create_makes_the_database_once(services: Services, tmp_path: Path) -> None:
    name = f"jt_create_{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, services.pg_dsn(name), "amqp://unused/")
    try:
        code, out, err = await janus_cli("migrate", "--config", str(config))
        assert code == 2, "without --create, a missing database is an error"
        assert f"database '{name}' does not exist" in err
        code, out, err = await janus_cli("migrate", "--create", "--config", str(config))
        assert code == 0, err
        assert out.startswith(f"created database {name}\napplied migrations: ")
        code, out, err = await janus_cli("migrate", "--create", "--config", str(config))
        assert (code, out.strip()) == (0, "schema is up to date"), err
    finally:
        await services.drop_database(name)


@pytest.mark.parametrize(
    ("amqp", "complaint"),
    [
        ("amqp://guest:wrong@127.0.0.1:5672/{vhost}", "refused the credentials of user 'guest'"),
        ("amqp://guest:guest@127.0.0.1:5672/{vhost}-missing", "it does not exist, or user 'guest' has no"),
    ],
)
async def test_run_with_a_refused_broker_setting_stops_with_one_line(
    database: str,
    vhost: str,
    tmp_path: Path,
    janus_process: Callable[..., JanusProcess],
    amqp: str,
    complaint: str,
) -> None:
    name = vhost.rsplit("/", 1)[1]
    janus = janus_process(write_config(tmp_path, database, amqp.format(vhost=name)))
    await janus.start()
    code, lines = await exit_of(janus)
    assert code == 2
    assert_one_line(lines, complaint)
    assert not any("wrong" in line for line in lines), "the password must not be shown"


async def test_a_second_janus_on_a_port_in_use_says_what_to_set(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        janus = janus_process(
            write_config(tmp_path, database, vhost), env={**FAST_TIMINGS, "JANUS_HTTP_PORT": str(port)}
        )
        await janus.start()
        code, lines = await exit_of(janus)
    assert code == 2
    assert_one_line(lines, f"127.0.0.1:{port}: the port is in use")
    assert "JANUS_HTTP_PORT" in next(line for line in lines if line.startswith("janus: "))


async def test_an_outage_reconnects_and_sigterm_meanwhile_says_it_stops(
    database: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # refused: an outage, not a setting
    janus = janus_process(write_config(tmp_path, database, nobody))
    await janus.start()
    await janus.wait_line("reconnecting in", timeout=SETTLED)
    janus.signal(signal.SIGTERM)
    code, lines = await exit_of(janus)
    assert code == 0, "\n".join(lines)
    assert any("SIGTERM received: stopping" in line for line in lines), "\n".join(lines)
    assert any("stopping while reconnecting" in line for line in lines), "\n".join(lines)


# -- janus submit: fails within seconds, saying what is missing ---------------------------------


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        # a vhost Janus never ran on: no janus.intake (the command used to hang)
        ("{base}/{vhost}", "no exchange 'janus.intake' on amqp://guest:***@127.0.0.1:5672/"),
        ("{base}/{vhost}-missing", "it does not exist, or user 'guest' has no permissions on it"),
        ("amqp://guest:wrong@127.0.0.1:5672/{vhost}", "refused the credentials of user 'guest'"),
    ],
)
async def test_submit_says_what_is_missing_within_seconds(vhost: str, url: str, complaint: str) -> None:
    base, name = vhost.rsplit("/", 1)
    started = time.monotonic()
    code, out, err = await janus_cli(
        "submit", "j-1", "api", env={"JANUS_AMQP_URL": url.format(base=base, vhost=name)}
    )
    took = time.monotonic() - started
    assert (code, out) == (2, ""), err
    (line,) = err.splitlines()
    assert complaint in line
    if "janus.intake" in complaint:
        assert "Janus has never run on this vhost" in line
    assert took < 30, f"took {took:.1f} s"


@pytest.mark.parametrize(
    ("amqp", "env", "complaint"),
    [
        # issue 20: a port like "abc" failed only when connecting (ValueError), and janus run exited
        ("amqp://guest:guest@127.0.0.1:abc/{vhost}", {}, "invalid configuration in"),
        # beyond 65535, bind() raised OverflowError at start
        (
            "{vhost_url}",
            {"JANUS_HTTP_PORT": "99999"},
            "JANUS_HTTP_PORT: Input should be less than or equal to 65535",
        ),
        # a lease LeaseTimings refused at start, with a traceback
        (
            "{vhost_url}",
            {"JANUS_LEADER_LEASE": "1e-9"},
            "JANUS_LEADER_LEASE: Input should be greater than or equal",
        ),
    ],
)
async def test_run_with_a_setting_that_cannot_work_stops_with_one_line(
    database: str,
    vhost: str,
    tmp_path: Path,
    janus_process: Callable[..., JanusProcess],
    amqp: str,
    env: dict[str, str],
    complaint: str,
) -> None:
    name = vhost.rsplit("/", 1)[1]
    janus = janus_process(
        write_config(tmp_path, database, amqp.format(vhost=name, vhost_url=vhost)),
        env={**FAST_TIMINGS, **env},
    )
    await janus.start()
    code, lines = await exit_of(janus)
    assert code == 2
    assert_one_line(lines, complaint)
