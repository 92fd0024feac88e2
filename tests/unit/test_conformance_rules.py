"""The conformance rules judged on hand-made observations: a conforming worker's pass every
rule, each way of breaking a duty fails the rule(s) named for it, and nothing seen fails all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from janus.conformance.contract import Instructions, Start, read_starts
from janus.conformance.rules import (
    RULE_NAMES,
    Case,
    KillSeen,
    Kind,
    Observations,
    RedeliverySeen,
    ResultSeen,
    ReturnSeen,
    judge,
    killed_case,
    plan,
    redelivered_case,
)
from janus.protocol import CONTENT_TYPE, encode_result

NOW = 1_000.0
DEPENDENCY = "api"


def result_of(case: Case, *, received_at: float | None = None, **changes: Any) -> ResultSeen:
    """What a conforming worker publishes for `case` (fields overridden by `changes`)."""
    steps = case.instructions
    fields: dict[str, Any] = {"job_id": case.job_id, "attempt": case.attempt, "outcome": "success"}
    if case.kind is Kind.OUTLIVES_LEASE:
        fields |= {"outcome": "failure", "error": "cut off at the lease"}
    elif steps.retry_after is not None:
        fields |= {"outcome": "failure", "error": "backing off", "retry_after": steps.retry_after}
    elif steps.outcome == "failure":
        fields |= {"outcome": "failure", "error": steps.error}
    fields |= changes
    arrival = case.lease_expires_at - 0.4 if case.kind is Kind.OUTLIVES_LEASE else case.admitted_at + 0.1
    return ResultSeen(
        routing_key=DEPENDENCY,
        body=encode_result(**fields),
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        received_at=arrival if received_at is None else received_at,
    )


def conforming() -> Observations:
    held = redelivered_case("run", NOW - 1)
    cases = [*plan("run", NOW), held]
    killed = killed_case("run", NOW + 5)
    seen = Observations(dependency=DEPENDENCY, cases=[*cases, killed], confirm_channels=1)
    seen.redelivery = RedeliverySeen(case=held, redelivered_at=NOW + 0.5)
    for case in cases:
        if case.kind is Kind.EXPIRED:
            seen.returns.append(ReturnSeen(job_id=case.job_id, reason="rejected", received_at=NOW + 0.01))
            continue
        seen.starts.append(Start(job_id=case.job_id, attempt=case.attempt, started_at=NOW + 0.01))
        seen.results.append(result_of(case))
    seen.starts.append(Start(job_id=killed.job_id, attempt=killed.attempt, started_at=NOW + 5.01))
    seen.kill = KillSeen(case=killed, started=True, consumers_gone=True, ready_after_kill=0)
    return seen


def case(seen: Observations, kind: Kind) -> Case:
    found = seen.case(kind)
    assert found is not None
    return found


def without_result(seen: Observations, kind: Kind) -> list[ResultSeen]:
    return [r for r in seen.results if r.job_id() != case(seen, kind).job_id]


def replace_result(seen: Observations, kind: Kind, **changes: Any) -> Observations:
    new = result_of(case(seen, kind), **changes)
    return dataclasses.replace(seen, results=[*without_result(seen, kind), new])


def with_kill(seen: Observations, **changes: Any) -> Observations:
    assert seen.kill is not None
    return dataclasses.replace(seen, kill=dataclasses.replace(seen.kill, **changes))


Breach = Callable[[Observations], Observations]


def redelivered_started_again(seen: Observations) -> Observations:
    held = case(seen, Kind.REDELIVERED)
    again = Start(job_id=held.job_id, attempt=held.attempt, started_at=NOW + 0.6)
    return dataclasses.replace(seen, starts=[*seen.starts, again], results=[*seen.results, result_of(held)])


BREACHES: list[tuple[str, Breach, set[str]]] = [
    # A copy the broker delivered again after a lost ack: started (and reported) a second time,
    # handed back to Janus, or the worker never started the first copy.
    (
        "redelivered copy started again",
        redelivered_started_again,
        {"redelivered_dropped", "one_result_per_admission"},
    ),
    (
        "redelivered copy handed back",
        lambda s: dataclasses.replace(
            s,
            returns=[
                *s.returns,
                ReturnSeen(job_id=case(s, Kind.REDELIVERED).job_id, reason="rejected", received_at=NOW + 0.6),
            ],
        ),
        {"redelivered_dropped"},
    ),
    (
        "copy to redeliver never started",
        lambda s: dataclasses.replace(
            s, redelivery=RedeliverySeen(case=case(s, Kind.REDELIVERED), redelivered_at=None)
        ),
        {"redelivered_dropped"},
    ),
    # The expired admission acked and dropped, or requeued: it never comes back to Janus.
    ("expired not handed back", lambda s: dataclasses.replace(s, returns=[]), {"expired_rejected"}),
    # Dead-lettered, but by the broker's TTL rather than the worker's reject.
    (
        "expired dead-lettered for another reason",
        lambda s: dataclasses.replace(s, returns=[dataclasses.replace(s.returns[0], reason="expired")]),
        {"expired_rejected"},
    ),
    # Rejected, but only after its handler ran.
    (
        "expired admission's handler ran",
        lambda s: dataclasses.replace(
            s, starts=[*s.starts, Start(job_id=case(s, Kind.EXPIRED).job_id, attempt=4, started_at=NOW)]
        ),
        {"expired_rejected"},
    ),
    # Run and reported although it had expired.
    (
        "expired admission reported",
        lambda s: dataclasses.replace(s, results=[*s.results, result_of(case(s, Kind.EXPIRED))]),
        {"expired_rejected"},
    ),
    # Acked after the work: killed mid-handler, the broker put it back in the queue.
    (
        "redelivered after the kill",
        lambda s: with_kill(s, ready_after_kill=1),
        {"ack_before_start"},
    ),
    # The admission to kill the worker in never started: nothing could be checked.
    (
        "killed admission never started",
        lambda s: with_kill(s, started=False),
        {"ack_before_start"},
    ),
    # Two results for one admission.
    (
        "a result published twice",
        lambda s: dataclasses.replace(s, results=[*s.results, result_of(case(s, Kind.SUCCEED))]),
        {"one_result_per_admission"},
    ),
    # A cut-off handler whose late end is reported as well.
    (
        "a late second result after the cut-off",
        lambda s: dataclasses.replace(
            s, results=[*s.results, result_of(case(s, Kind.OUTLIVES_LEASE), outcome="success", error=None)]
        ),
        {"one_result_per_admission"},
    ),
    # Started, never reported: one result missing (and so its outcome unseen).
    (
        "a started admission never reported",
        lambda s: dataclasses.replace(s, results=without_result(s, Kind.FAIL)),
        {"one_result_per_admission", "outcome"},
    ),
    # A result for a job this run never admitted.
    (
        "a result for no admission",
        lambda s: dataclasses.replace(
            s,
            results=[
                *s.results,
                dataclasses.replace(
                    s.results[0], body=b'{"job_id": "other", "attempt": 1, "outcome": "success"}'
                ),
            ],
        ),
        {"one_result_per_admission"},
    ),
    (
        "no content_type",
        lambda s: dataclasses.replace(
            s, results=[dataclasses.replace(r, content_type=None) for r in s.results]
        ),
        {"result_fields"},
    ),
    (
        "not persistent",
        lambda s: dataclasses.replace(
            s, results=[dataclasses.replace(r, delivery_mode=1) for r in s.results]
        ),
        {"result_fields"},
    ),
    # An outcome outside the protocol: the result does not decode (nor count as the outcome).
    (
        "an unknown outcome",
        lambda s: replace_result(s, Kind.SUCCEED, outcome="done"),
        {"result_fields", "outcome"},
    ),
    (
        "empty routing key",
        lambda s: dataclasses.replace(s, results=[dataclasses.replace(r, routing_key="") for r in s.results]),
        {"routing_key"},
    ),
    ("attempt not echoed", lambda s: replace_result(s, Kind.SUCCEED, attempt=1), {"attempt_echoed"}),
    (
        "a raising handler reported as success",
        lambda s: replace_result(s, Kind.FAIL, outcome="success", error=None),
        {"outcome"},
    ),
    ("a failure without its error", lambda s: replace_result(s, Kind.FAIL, error=None), {"outcome"}),
    ("retry_after dropped", lambda s: replace_result(s, Kind.RETRY_AFTER, retry_after=None), {"retry_after"}),
    ("retry_after changed", lambda s: replace_result(s, Kind.RETRY_AFTER, retry_after=1.0), {"retry_after"}),
    (
        "the cut-off failure arrives at the lease's end",
        lambda s: replace_result(
            s, Kind.OUTLIVES_LEASE, received_at=case(s, Kind.OUTLIVES_LEASE).lease_expires_at
        ),
        {"lease_cutoff"},
    ),
    (
        "the handler outlived its lease and succeeded",
        lambda s: replace_result(
            s,
            Kind.OUTLIVES_LEASE,
            outcome="success",
            error=None,
            received_at=case(s, Kind.OUTLIVES_LEASE).handler_ends_at,
        ),
        {"lease_cutoff"},
    ),
    ("no confirm channel", lambda s: dataclasses.replace(s, confirm_channels=0), {"publisher_confirms"}),
    ("channels not listed", lambda s: dataclasses.replace(s, confirm_channels=None), {"publisher_confirms"}),
]


def failed(seen: Observations) -> set[str]:
    return {result.rule for result in judge(seen) if not result.passed}


def test_a_conforming_worker_passes_every_rule() -> None:
    results = judge(conforming())
    assert [r.rule for r in results] == list(RULE_NAMES)
    assert failed(conforming()) == set(), [r.detail for r in results if not r.passed]


@pytest.mark.parametrize(
    ("breach", "rules"), [(b, r) for _, b, r in BREACHES], ids=[n for n, _, _ in BREACHES]
)
def test_each_breach_fails_exactly_its_rules(breach: Breach, rules: set[str]) -> None:
    assert failed(breach(conforming())) == rules


def test_a_worker_that_did_nothing_fails_every_rule() -> None:
    cases = [*plan("run", NOW), killed_case("run", NOW)]
    assert failed(Observations(dependency=DEPENDENCY, cases=cases)) == set(RULE_NAMES)


def test_a_run_that_published_nothing_fails_every_rule() -> None:
    assert failed(Observations(dependency=DEPENDENCY, cases=[])) == set(RULE_NAMES)


def test_every_rule_has_a_breach_that_fails_it() -> None:
    assert set().union(*(rules for _, _, rules in BREACHES)) == set(RULE_NAMES)


def test_instructions_survive_the_payload_and_the_log_skips_a_half_written_line() -> None:
    steps = Instructions(sleep=1.5, outcome="failure", error="no", retry_after=2.0)
    assert Instructions.from_payload(steps.payload()) == steps
    assert Instructions.from_payload({"other": 1}) == Instructions()
    line = Start(job_id="a", attempt=2, started_at=3.5).line()
    assert read_starts(line + '{"job_id": "b", "att') == [Start(job_id="a", attempt=2, started_at=3.5)]
