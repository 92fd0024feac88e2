"""Costed jobs at the edges (issue 23): the policy file's unit limits and `max_cost`, the wire's
`cost` fields, and the tick that sets aside a cost that can never fit and settles actual costs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from janus.config import load_config
from janus.core.policy import DependencyPolicy, RateCounting, RateLimit
from janus.core.scheduler import Scheduler
from janus.errors import ConfigError, ProtocolError
from janus.policy_record import config_of_record, record_of
from janus.protocol import decode_intake, decode_result, encode_intake, encode_result
from janus.service.tick import TickOptions, decide
from tests.unit.test_tick import batch, delivery, result

OPTIONS = TickOptions(max_payload_bytes=1024)


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "janus.toml"
    path.write_text("[dependencies.llm]\n" + body, encoding="utf-8")
    return path


def test_unit_limits_sit_beside_job_counts(tmp_path: Path) -> None:
    path = config(tmp_path, 'rate_limits = ["100/1m", "90000 units/1m"]\nmax_cost = 20000\n')
    (policy,) = load_config(path).policies()
    assert policy.rate_limits == (RateLimit(count=100, window=60.0),)
    assert policy.unit_limits == (RateLimit(count=90000, window=60.0, units=True),)
    assert policy.max_cost == 20000
    assert str(policy.unit_limits[0]) == "90000 units/60s"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        # a scope's limits count jobs: units there have no meaning the core implements
        ('[dependencies.llm.fairness]\nscope_rate_limits = ["10 units/1s"]\n', "units are counted only"),
        ("max_cost = -1\n", "greater than or equal to 0"),
        ('rate_limits = ["0 units/1s"]\n', "COUNT must be at least 1"),
    ],
)
def test_bad_unit_settings_are_refused(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(config(tmp_path, body))


@pytest.mark.parametrize(
    ("cost", "expected"),
    [(None, 1.0), (0, 0.0), (7, 7.0), (12.5, 12.5)],  # absent: 1; an integer is a number too
)
def test_intake_cost(cost: float | None, expected: float) -> None:
    body = encode_intake(job_id="j", dependency="llm", scope="s", payload=None, cost=cost)
    assert decode_intake(body, "application/json", 1024)[0].cost == expected


@pytest.mark.parametrize("raw", [b"-1", b'"5"', b"true", b"1e400"])
def test_a_cost_that_is_not_a_number_at_least_0_is_refused(raw: bytes) -> None:
    body = b'{"job_id":"j","dependency":"llm","cost":' + raw + b"}"
    with pytest.raises(ProtocolError):
        decode_intake(body, "application/json", 1024)
    result_body = b'{"job_id":"j","attempt":1,"outcome":"success","cost":' + raw + b"}"
    with pytest.raises(ProtocolError):
        decode_result(result_body, "application/json")


def test_result_cost_is_optional() -> None:
    assert decode_result(encode_result(job_id="j", attempt=1, outcome="success"), None).cost is None
    assert decode_result(encode_result(job_id="j", attempt=1, outcome="success", cost=3), None).cost == 3.0


def costed(job_id: str, cost: float) -> object:
    body = encode_intake(job_id=job_id, dependency="llm", scope="s", payload=None, cost=cost)
    return delivery(body, routing_key="llm")


def test_the_tick_sets_aside_what_can_never_fit_and_settles_what_was_reported() -> None:
    policy = DependencyPolicy(
        name="llm",
        unit_limits=(RateLimit(count=100, window=60.0, counts=RateCounting.ADMISSIONS, units=True),),
        max_cost=80.0,
        lease_timeout=60.0,
    )
    core = Scheduler([policy], random.Random(0))
    intake = [costed("ok", 70.0), costed("capped", 90.0), costed("small", 40.0)]
    decided = decide(batch(intake=intake), core, 1.0, OPTIONS)
    assert [(s.reason, s.detail) for s in decided.set_aside] == [
        ("cost_too_large", "cost 90 is above max_cost 80 of 'llm'")
    ]
    assert [a.job_id for a in decided.decision.admissions] == ["ok"]  # 70 + 40 > 100: small waits
    decided = decide(batch(results={"llm": [result("ok", routing_key="llm", cost=20.0)]}), core, 2.0, OPTIONS)
    assert [(s.job_id, s.attempt, s.admitted_at, s.cost) for s in decided.settled] == [("ok", 1, 1.0, 20.0)]
    assert dict(decided.costs) == {("llm", "estimated"): 70.0, ("llm", "actual"): 20.0}
    assert [a.job_id for a in decided.decision.admissions] == ["small"], "50 units came back"


def test_an_admission_returned_unused_is_settled_at_0_in_the_store_only_where_units_count() -> None:
    limited = DependencyPolicy(
        name="llm",
        unit_limits=(RateLimit(count=100, window=60.0, units=True),),
        lease_timeout=60.0,
    )
    core = Scheduler([limited, DependencyPolicy(name="api", lease_timeout=60.0)], random.Random(0))
    intake = [
        costed("llm-1", 70.0),
        delivery(encode_intake(job_id="api-1", dependency="api", scope="s", payload=None), routing_key="api"),
    ]
    assert len(decide(batch(intake=intake), core, 1.0, OPTIONS).decision.admissions) == 2
    returned = [
        delivery(json.dumps({"job_id": job_id, "attempt": 1}).encode(), routing_key=dependency)
        for job_id, dependency in (("llm-1", "llm"), ("api-1", "api"))
    ]
    decided = decide(batch(returned=returned), core, 2.0, OPTIONS)
    assert decided.events == {("returned", "released"): 2}
    # Written as 0 units, not as a reported cost (no actual cost for the job, no metric); a
    # dependency without unit limits writes nothing.
    assert [(s.job_id, s.attempt, s.admitted_at, s.cost, s.reported) for s in decided.settled] == [
        ("llm-1", 1, 1.0, 0.0, False)
    ]
    assert dict(decided.costs) == {}


def test_a_stored_policy_version_keeps_its_unit_limits(tmp_path: Path) -> None:
    # A version of the policy is stored as text the parser reads back (janus apply, failover).
    file = load_config(config(tmp_path, 'rate_limits = ["100/1m", "90000 units/1m"]\nmax_cost = 5\n'))
    again = config_of_record(record_of(file), 1, file)
    assert again.policies() == file.policies()
    assert '"90000 units/60s"' in record_of(file)
