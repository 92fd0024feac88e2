"""A tick's decision as a value: what `decide` makes of a batch, with no broker and no database.

The commit (`run_tick`) and what the loop does after it are covered end to end by the
integration tests; here every kind of input meets the core and comes back as data.
"""

from __future__ import annotations

import asyncio
import json
import random
from types import SimpleNamespace
from typing import Any, cast

import pytest

from janus.broker.consumer import Delivery
from janus.core.jobs import JobState
from janus.core.policy import DependencyPolicy, RetryPolicy
from janus.core.repeats import StoredAttempt
from janus.core.scheduler import Scheduler
from janus.errors import ProtocolError
from janus.protocol import decode_returned, encode_intake, encode_result
from janus.service.inbox import UNROUTABLE, Batch
from janus.service.tick import TickOptions, decide

OPTIONS = TickOptions(max_payload_bytes=1024)


def delivery(body: bytes, routing_key: str = "", content_type: str | None = "application/json") -> Delivery:
    header = SimpleNamespace(properties=SimpleNamespace(content_type=content_type))
    return cast(Any, SimpleNamespace(body=body, header=header, routing_key=routing_key, channel=None))


def intake(job_id: str, dependency: str = "api") -> Delivery:
    body = encode_intake(job_id=job_id, dependency=dependency, scope="s", payload={"n": 1})
    return delivery(body, routing_key=dependency)  # producers route intake by its dependency


def result(
    job_id: str, attempt: int = 1, outcome: str = "success", routing_key: str = "api", **rest: Any
) -> Delivery:
    """A result as a worker of `routing_key` publishes it (the key its results queue is bound with)."""
    body = encode_result(job_id=job_id, attempt=attempt, outcome=outcome, **rest)  # type: ignore[arg-type]
    return delivery(body, routing_key=routing_key)


def batch(**parts: Any) -> Batch:
    return Batch(
        intake=parts.get("intake", []),
        results=parts.get("results", {}),
        returned=parts.get("returned", []),
        unpublished=parts.get("unpublished", []),
    )


def core(max_attempts: int = 3) -> Scheduler:
    policies = [
        DependencyPolicy(name=name, lease_timeout=60.0, retry=RetryPolicy(max_attempts=max_attempts))
        for name in ("api", "other")
    ]
    return Scheduler(policies, random.Random(1))


def test_bad_intake_is_set_aside_and_a_repeat_in_the_batch_is_a_duplicate() -> None:
    scheduler = core()
    decided = decide(
        batch(
            intake=[
                intake("a"),
                intake("a"),  # the same job again: the first one wins
                intake("b", dependency="nobody"),
                delivery(
                    encode_intake(job_id="c", dependency="api", scope="s", payload=None), routing_key="other"
                ),
                delivery(b"{not json"),
                delivery(b"{}", content_type="text/plain"),
            ],
            returned=[delivery(b"[]")],
            results={UNROUTABLE: [delivery(b"{}", routing_key="nobody")]},
        ),
        scheduler,
        10.0,
        OPTIONS,
    )
    assert [(s.source, s.reason) for s in decided.set_aside] == [
        ("intake", "unknown_dependency"),
        ("intake", "routing_mismatch"),
        ("intake", "malformed_json"),
        ("intake", "wrong_content_type"),
        ("results", "unroutable"),
        ("returned", "malformed_returned"),
    ]
    assert decided.intake == 2
    assert decided.payloads == {"a": '{"n":1}'}
    (new,) = decided.changes.new
    assert (new.job_id, new.state) == ("a", JobState.ADMITTED)
    assert [a.job_id for a in decided.decision.admissions] == ["a"]
    assert decided.now == 10.0


def test_a_job_id_of_another_dependency_is_set_aside_not_a_duplicate() -> None:
    scheduler = core()
    decide(batch(intake=[intake("held")]), scheduler, 1.0, OPTIONS)  # held by the core from now on
    first, again, crossed = intake("new"), intake("new"), intake("new", dependency="other")
    decided = decide(
        batch(intake=[intake("held"), intake("held", dependency="other"), first, again, crossed]),
        scheduler,
        2.0,
        OPTIONS,
    )
    assert [(s.reason, s.detail) for s in decided.set_aside] == [
        ("duplicate_of_other_dependency", "job 'held' is a job of 'api'; published again for 'other'"),
        ("duplicate_of_other_dependency", "job 'new' is a job of 'api'; published again for 'other'"),
    ]
    assert decided.intake == 3, "the repeats for the same dependency are plain duplicates"
    assert [job.job_id for job in decided.changes.new] == ["new"]
    # If the store turns out to have had "new" already, for another dependency, both deliveries
    # that named it for api are set aside after the commit (run_tick).
    assert decided.submitted == {"new": [first, again]}


def test_results_move_jobs_and_results_that_cannot_speak_for_a_job_are_set_aside() -> None:
    scheduler = core(max_attempts=1)
    decide(batch(intake=[intake("a"), intake("b"), intake("c", dependency="other")]), scheduler, 1.0, OPTIONS)
    results = {
        "api": [
            result("a"),
            result("b", outcome="failure", error="boom"),
            result("a"),  # reported twice
            result("c"),  # of another dependency
            result("ghost"),
        ],
        # Published with key "api", routed to other's queue too by a CC or BCC header (a broker
        # before 4.0.3 checks only the routing key): whatever the job, only the key vouches.
        "other": [result("c", routing_key="api")],
    }
    decided = decide(batch(results=results), scheduler, 2.0, OPTIONS)
    assert [(s.reason, s.detail) for s in decided.set_aside] == [
        ("wrong_routing_key", "routing key 'api' in the results queue of 'other'"),
        ("wrong_dependency", "job 'c' of 'other' reported as 'api'"),
    ]
    # The results that changed nothing are told apart with the store (asked only about those the
    # tick itself cannot explain), before the commit: here a store that never had `ghost`.
    asked: list[list[tuple[str, int]]] = []

    async def reported_attempts(reported: list[tuple[str, int]]) -> list[StoredAttempt | None]:
        asked.append(reported)
        return [None for _ in reported]

    explained = asyncio.run(decided.unapplied.explain(SimpleNamespace(reported_attempts=reported_attempts)))
    assert [(reason, detail) for _, reason, detail in explained] == [
        ("duplicate_result", "job 'a' attempt 1 (success): applied earlier in the same tick"),
        ("unknown_job", "job 'ghost' attempt 1 (success)"),
    ]
    assert asked == [[("ghost", 1)]]
    assert decided.events == {("result", "succeeded"): 1, ("result", "dead"): 1, ("result", "unknown_job"): 2}
    assert sorted((j.job_id, j.state) for j in decided.finished) == [
        ("a", JobState.SUCCEEDED),
        ("b", JobState.DEAD),
    ]
    assert [(f.job_id, f.attempt, f.failed_at, f.error) for f in decided.failed] == [("b", 1, 2.0, "boom")]
    assert scheduler.job("c") is not None, "still held: a worker of another dependency cannot finish it"


def test_only_the_outcomes_a_dependency_publishes_are_handed_on() -> None:
    scheduler = core(max_attempts=1)
    decide(batch(intake=[intake("a"), intake("b")]), scheduler, 1.0, OPTIONS)
    results = {
        "api": [
            result("a"),
            result("b", outcome="failure"),
        ]
    }
    options = TickOptions(max_payload_bytes=1024, published_outcomes={"api": frozenset({"dead"})})
    decided = decide(batch(results=results), scheduler, 2.0, options)
    assert [j.job_id for j in decided.finished] == ["b"]
    assert [j.job_id for j in decided.changes.updated] == ["a", "b"], "both are written all the same"


def test_a_returned_admission_frees_its_slot_without_charging_an_attempt() -> None:
    scheduler = core()
    (admission,) = decide(batch(intake=[intake("a")]), scheduler, 1.0, OPTIONS).decision.admissions
    body = json.dumps({"job_id": "a", "attempt": admission.attempt}).encode()
    # Dead-lettered with the key Janus published it with; one with another key was not this admission.
    forged = delivery(body, routing_key="other")
    decided = decide(batch(returned=[forged, delivery(body, routing_key="api")]), scheduler, 2.0, OPTIONS)
    assert [(s.source, s.reason) for s in decided.set_aside] == [("returned", "wrong_routing_key")]
    assert decided.events == {("returned", "released"): 1}
    (again,) = decided.decision.admissions
    assert (again.job_id, again.attempt, again.retry) == ("a", 2, False)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"job_id": "a", "attempt": 2}', ("a", 2)),  # what a ready message carries
        (b'{"job_id": "a", "attempt": 2, "scope": "s", "payload": null}', ("a", 2)),  # the rest is ignored
        (b'{"job_id": "a"}', None),  # no attempt
        (b'{"job_id": 1, "attempt": 2}', None),  # job_id not a string
        (b'{"job_id": "a", "attempt": "2"}', None),  # attempt not an integer
        (b"[1, 2]", None),  # not an object
        (b"\xff", None),  # not UTF-8
    ],
)
def test_decode_returned(body: bytes, expected: tuple[str, int] | None) -> None:
    if expected is not None:
        assert decode_returned(body) == expected
    else:
        with pytest.raises(ProtocolError) as refused:
            decode_returned(body)
        assert refused.value.reason == "malformed_returned"
