"""JANUS_LOG_FORMAT=json: one JSON object per line, with the dependency, job id and epoch where
the event has them."""

from __future__ import annotations

import json
import logging

import pytest

from janus import logs
from janus.api.metrics import Metrics
from janus.config import Settings
from janus.core.gates import GateEvent
from janus.service.observe import Observer


def line(record: logging.LogRecord) -> dict[str, object]:
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text
    loaded: dict[str, object] = json.loads(text)
    return loaded


def test_a_record_with_its_context_and_the_term_s_epoch() -> None:
    record = logging.LogRecord("janus.admission", logging.WARNING, __file__, 1, "api: %s", ("paused",), None)
    record.dependency = "api"
    record.job_id = "order-1"
    token = logs.term_epoch.set(12)
    try:
        event = line(record)
    finally:
        logs.term_epoch.reset(token)
    assert event["message"] == "api: paused"
    assert (event["level"], event["logger"]) == ("WARNING", "janus.admission")
    assert (event["dependency"], event["job_id"], event["epoch"]) == ("api", "order-1", 12)
    assert str(event["time"]).endswith("Z")
    assert "epoch" not in line(record)  # outside a term


def test_an_exception_stays_on_its_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = logging.LogRecord("janus", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in str(line(record)["exception"])


def test_gate_events_carry_their_dependency(caplog: pytest.LogCaptureFixture) -> None:
    observer = Observer(Metrics())
    with caplog.at_level(logging.INFO, logger="janus.admission"):
        observer.gate_events([GateEvent(dependency="api", kind="paused", detail="retry_after 2s", at=0.0)])
    (record,) = caplog.records
    assert line(record)["dependency"] == "api"
    assert line(record)["kind"] == "paused"


def test_the_setting() -> None:
    assert Settings(_env_file=None).log_format == "text"  # type: ignore[call-arg]
    assert Settings(log_format="json").log_format == "json"
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")  # type: ignore[arg-type]


def test_a_set_aside_message_names_its_job_when_it_can(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from janus.service.tick import SetAside

    def aside(body: bytes) -> SetAside:
        return SetAside(
            message=SimpleNamespace(body=body), source="results", reason="stale_attempt", detail="x"
        )  # type: ignore[arg-type]

    observer = Observer(Metrics())
    with caplog.at_level(logging.WARNING, logger="janus.admission"):
        observer.set_aside([aside(b'{"job_id": "order-7", "attempt": 1}')])
        observer.set_aside([aside(b"not json")])  # throttled anyway: the same reason
    (record,) = caplog.records
    assert (line(record)["job_id"], line(record)["reason"]) == ("order-7", "stale_attempt")
    from janus.service.observe import job_id_of

    assert job_id_of(aside(b"[1]")) is None
    assert job_id_of(aside(b'{"job_id": 5}')) is None
    assert job_id_of(aside(b'{"job_id": "' + b"x" * 5000 + b'"}')) is None
