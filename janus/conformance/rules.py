"""The conformance rules: the admissions a run publishes, and the judgement of what it saw.

Pure: the harness gives the time and what it observed (results, dead letters, the
handler's starts, the broker's state after the worker was killed), and each rule
returns passed or failed with the evidence. Every rule is a duty of
docs/protocol.md, "A worker's whole duty".
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from janus.conformance.contract import Instructions, Start
from janus.errors import ProtocolError
from janus.protocol import CONTENT_TYPE, ResultMessage, decode_result

PERSISTENT = 2  # AMQP delivery_mode


class Kind(StrEnum):
    """What an admission tests; each conforming worker treats it one way."""

    SUCCEED = "succeed"
    FAIL = "fail"
    RETRY_AFTER = "retry_after"
    EXPIRED = "expired"  # expires_at already past: handed back unstarted
    OUTLIVES_LEASE = "outlives_lease"  # its handler would run past lease_expires_at
    KILLED = "killed"  # the worker is killed while its handler runs
    REDELIVERED = "redelivered"  # delivered again, flagged redelivered, after the worker started it


@dataclass(frozen=True, kw_only=True, slots=True)
class Case:
    """One admission the harness publishes as Janus would."""

    kind: Kind
    job_id: str
    attempt: int
    instructions: Instructions
    admitted_at: float
    expires_at: float
    lease_expires_at: float

    @property
    def handler_ends_at(self) -> float:
        """When the handler would end if nobody cut it off (it starts at the earliest on admission)."""
        return self.admitted_at + self.instructions.sleep


# Timings of the cases, in seconds after publication. Long enough for a loaded machine to
# start every admission in time; the one that outlives its lease sleeps past the lease, so
# that a worker which does not cut it off reports too late (or twice).
TTL = 10.0
LEASE = 30.0
SHORT_TTL = 1.5
SHORT_LEASE = 2.5
OUTLIVING_SLEEP = 4.0
RETRY_AFTER_SECONDS = 2.5
KILLED_SLEEP = 60.0
REDELIVERED_SLEEP = 1.5


def plan(run_id: str, now: float) -> list[Case]:
    """The admissions of the first phase, published together. Attempt numbers differ, and
    none is 1, so that a worker which does not echo the attempt shows."""

    def case(
        kind: Kind,
        attempt: int,
        steps: Instructions,
        *,
        ttl: float = TTL,
        lease: float = LEASE,
        admitted: float = now,
    ) -> Case:
        return Case(
            kind=kind,
            job_id=f"{run_id}-{kind.value}",
            attempt=attempt,
            instructions=steps,
            admitted_at=admitted,
            expires_at=admitted + ttl,
            lease_expires_at=admitted + lease,
        )

    return [
        # First: a worker that runs one handler at a time must reach it before it expires.
        case(
            Kind.OUTLIVES_LEASE,
            3,
            Instructions(sleep=OUTLIVING_SLEEP),
            ttl=SHORT_TTL,
            lease=SHORT_LEASE,
        ),
        case(Kind.SUCCEED, 7, Instructions(sleep=0.05)),
        case(Kind.FAIL, 2, Instructions(outcome="failure", error="instructed to fail")),
        case(Kind.RETRY_AFTER, 5, Instructions(retry_after=RETRY_AFTER_SECONDS)),
        # Already expired when it arrives (as after a wait in a worker's buffer, or clock skew).
        case(Kind.EXPIRED, 4, Instructions(), ttl=SHORT_TTL, admitted=now - SHORT_TTL - 1.0),
    ]


def killed_case(run_id: str, now: float) -> Case:
    """The admission of the second phase: the worker is killed while its handler sleeps."""
    return Case(
        kind=Kind.KILLED,
        job_id=f"{run_id}-{Kind.KILLED.value}",
        attempt=6,
        instructions=Instructions(sleep=KILLED_SLEEP),
        admitted_at=now,
        expires_at=now + TTL,
        lease_expires_at=now + KILLED_SLEEP * 2,
    )


def redelivered_case(run_id: str, now: float) -> Case:
    """The admission the harness holds before the worker starts: the worker gets a copy, and
    once it has started that, the held delivery goes back to the queue, flagged redelivered, as
    after an ack the broker never read."""
    return Case(
        kind=Kind.REDELIVERED,
        job_id=f"{run_id}-{Kind.REDELIVERED.value}",
        attempt=9,
        instructions=Instructions(sleep=REDELIVERED_SLEEP),
        admitted_at=now,
        expires_at=now + TTL * 3,  # held through the worker's start-up, then redelivered in time
        lease_expires_at=now + LEASE * 2,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultSeen:
    """A message a worker published to janus.results, as delivered to the harness."""

    routing_key: str
    body: bytes
    content_type: str | None
    delivery_mode: int | None
    received_at: float

    def job_id(self) -> str | None:
        """The job it claims to be for, read leniently (the fields rule judges its form)."""
        try:
            body = json.loads(self.body)
        except ValueError:
            return None
        job_id = body.get("job_id") if isinstance(body, dict) else None
        return job_id if isinstance(job_id, str) else None

    def decoded(self) -> ResultMessage | None:
        try:
            return decode_result(self.body, self.content_type)
        except ProtocolError:
            return None


@dataclass(frozen=True, kw_only=True, slots=True)
class ReturnSeen:
    """An admission dead-lettered from the ready queue (to janus.returned)."""

    job_id: str | None
    reason: str | None  # x-death's reason: "rejected" (requeue=false), "expired", ...
    received_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class KillSeen:
    """The second phase: the worker killed (SIGKILL) while the handler of `case` ran."""

    case: Case
    started: bool  # its handler started (so the worker was killed mid-handler)
    consumers_gone: bool  # the broker dropped the worker's consumers (and with them any unacked delivery)
    ready_after_kill: int | None  # admissions in the ready queue once it had


@dataclass(frozen=True, kw_only=True, slots=True)
class RedeliverySeen:
    """The redelivery phase: `case`'s held delivery went back to the queue (nack, requeue) after
    the worker had started a copy of it; None in `redelivered_at` if that never happened."""

    case: Case
    redelivered_at: float | None


@dataclass(kw_only=True)
class Observations:
    dependency: str
    cases: list[Case]
    results: list[ResultSeen] = field(default_factory=list)
    returns: list[ReturnSeen] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    kill: KillSeen | None = None
    redelivery: RedeliverySeen | None = None
    confirm_channels: int | None = None  # the worker's channels in confirm mode; None: not checked
    confirm_check_problem: str = ""

    def case(self, kind: Kind) -> Case | None:
        return next((case for case in self.cases if case.kind is kind), None)

    def results_for(self, case: Case) -> list[ResultSeen]:
        return [result for result in self.results if result.job_id() == case.job_id]

    def started(self, case: Case) -> bool:
        return any(start.job_id == case.job_id for start in self.starts)


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleResult:
    rule: str
    passed: bool
    detail: str


def _verdict(rule: str, problems: Sequence[str], passed: str) -> RuleResult:
    """Failed with the problems found, or passed with what shows it."""
    return _fail(rule, problems) if problems else RuleResult(rule=rule, passed=True, detail=passed)


def _fail(rule: str, problems: Sequence[str]) -> RuleResult:
    shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
    return RuleResult(rule=rule, passed=False, detail=shown)


def expired_rejected(seen: Observations) -> RuleResult:
    rule = "expired_rejected"
    case = seen.case(Kind.EXPIRED)
    if case is None:
        return _fail(rule, ["no expired admission was published"])
    problems = []
    returns = [r for r in seen.returns if r.job_id == case.job_id]
    if not returns:
        problems.append(
            "not dead-lettered: an admission past expires_at must be rejected with requeue=false "
            "(it was acked, requeued, or is still held)"
        )
    elif any(r.reason != "rejected" for r in returns):
        problems.append(f"dead-lettered as {sorted({str(r.reason) for r in returns})}, not 'rejected'")
    if seen.started(case):
        problems.append("its handler ran")
    if seen.results_for(case):
        problems.append(f"{len(seen.results_for(case))} result(s) published for it")
    return _verdict(rule, problems, "dead-lettered unstarted (rejected, requeue=false), no result")


def ack_before_start(seen: Observations) -> RuleResult:
    rule = "ack_before_start"
    kill = seen.kill
    if kill is None or not kill.started:
        return _fail(rule, ["the handler of the admission to kill the worker in never started"])
    if not kill.consumers_gone:
        return _fail(rule, ["the broker still showed the worker's consumer after it was killed"])
    problems = []
    if kill.ready_after_kill:
        problems.append(
            "the admission went back to the ready queue when the worker was killed mid-handler: "
            "it was not acked before the work started (the broker would redeliver work that may have run)"
        )
    if any(r.job_id == kill.case.job_id for r in seen.returns):
        problems.append("the admission was dead-lettered after its handler started")
    return _verdict(rule, problems, "killed mid-handler: the admission was not redelivered")


def redelivered_dropped(seen: Observations) -> RuleResult:
    rule = "redelivered_dropped"
    redelivery = seen.redelivery
    if redelivery is None or redelivery.redelivered_at is None:
        return _fail(rule, ["the worker never started the admission to redeliver"])
    case = redelivery.case
    problems = []
    starts = sum(1 for start in seen.starts if start.job_id == case.job_id)
    if starts != 1:
        problems.append(
            f"started {starts} times: a redelivered copy of an admission the worker acked and started "
            "must be acked and dropped, not started again"
        )
    if any(r.job_id == case.job_id for r in seen.returns):
        problems.append(
            "the redelivered copy was handed back to Janus: that frees the slot its first copy holds"
        )
    return _verdict(
        rule, problems, "the redelivered copy of a started admission was neither started nor handed back"
    )


def one_result_per_admission(seen: Observations) -> RuleResult:
    rule = "one_result_per_admission"
    problems = []
    if not any(case.kind not in (Kind.EXPIRED, Kind.KILLED) for case in seen.cases):
        problems.append("no admission to run was published (the run stopped before)")
    counts = Counter(result.job_id() or "<unreadable>" for result in seen.results)
    ours = {case.job_id for case in seen.cases}
    for case in seen.cases:
        if case.kind in (Kind.EXPIRED, Kind.KILLED):
            continue  # expired: no result (expired_rejected); killed: no chance to report
        count = counts.get(case.job_id, 0)
        if not seen.started(case) and count == 0:
            problems.append(f"{case.kind}: neither started nor handed back")
        elif count != 1:
            problems.append(f"{case.kind}: {count} results")
    strays = {job: n for job, n in counts.items() if job not in ours}
    if strays:
        problems.append(f"results for no admission of this run: {strays}")
    return _verdict(rule, problems, f"{len(seen.results)} results, one per started admission")


def result_fields(seen: Observations) -> RuleResult:
    rule = "result_fields"
    problems = []
    for result in seen.results:
        who = result.job_id() or repr(result.body[:60])
        try:
            decode_result(result.body, result.content_type)
        except ProtocolError as exc:
            problems.append(f"{who}: {exc}")
            continue
        if result.content_type != CONTENT_TYPE:
            problems.append(f"{who}: content_type {result.content_type!r}, not {CONTENT_TYPE}")
        if result.delivery_mode != PERSISTENT:
            problems.append(f"{who}: delivery_mode {result.delivery_mode}, not 2 (persistent)")
    if not seen.results:
        problems.append("no result arrived")
    return _verdict(rule, problems, "every result decodes, JSON, persistent")


def routing_key(seen: Observations) -> RuleResult:
    rule = "routing_key"
    if not seen.results:
        return _fail(rule, ["no result arrived"])
    wrong = Counter(r.routing_key for r in seen.results if r.routing_key != seen.dependency)
    if wrong:
        keys = ", ".join(f"{key!r} ({count})" for key, count in sorted(wrong.items()))
        return _fail(
            rule,
            [f"results published with a routing key other than the dependency {seen.dependency!r}: {keys}"],
        )
    return RuleResult(
        rule=rule, passed=True, detail=f"every result published with routing key {seen.dependency!r}"
    )


def attempt_echoed(seen: Observations) -> RuleResult:
    rule = "attempt_echoed"
    problems = []
    checked = 0
    for case in seen.cases:
        for result in seen.results_for(case):
            decoded = result.decoded()
            if decoded is None:
                continue
            checked += 1
            if decoded.attempt != case.attempt:
                problems.append(f"{case.kind}: attempt {decoded.attempt}, the admission's is {case.attempt}")
    if not checked:
        problems.append("no readable result to check")
    return _verdict(rule, problems, f"{checked} results carry their admission's attempt")


def _only_result(seen: Observations, case: Case | None) -> tuple[ResultSeen, ResultMessage] | str:
    if case is None:
        return "not published"
    results = seen.results_for(case)
    if not results:
        return "no result"
    decoded = results[0].decoded()
    if decoded is None:
        return "its result does not decode"
    return results[0], decoded


def outcome(seen: Observations) -> RuleResult:
    rule = "outcome"
    problems = []
    for kind, wanted in ((Kind.SUCCEED, "success"), (Kind.FAIL, "failure")):
        found = _only_result(seen, seen.case(kind))
        if isinstance(found, str):
            problems.append(f"{kind}: {found}")
            continue
        _, decoded = found
        if decoded.outcome != wanted:
            problems.append(f"{kind}: outcome {decoded.outcome!r}, the handler's was {wanted!r}")
        elif wanted == "failure" and not decoded.error:
            problems.append(f"{kind}: a failure without its error")
    passed = "a handler that returns reports success, one that raises a failure with its error"
    return _verdict(rule, problems, passed)


def retry_after(seen: Observations) -> RuleResult:
    rule = "retry_after"
    case = seen.case(Kind.RETRY_AFTER)
    found = _only_result(seen, case)
    if isinstance(found, str):
        return _fail(rule, [found])
    assert case is not None
    _, decoded = found
    wanted = case.instructions.retry_after
    assert wanted is not None
    if decoded.outcome != "failure":
        return _fail(rule, [f"outcome {decoded.outcome!r}: backing off is a failure"])
    if decoded.retry_after is None or not math.isclose(decoded.retry_after, wanted, abs_tol=1e-6):
        return _fail(rule, [f"retry_after {decoded.retry_after!r}, the handler asked for {wanted:g}"])
    return RuleResult(rule=rule, passed=True, detail=f"a failure carrying retry_after {wanted:g}")


def lease_cutoff(seen: Observations) -> RuleResult:
    rule = "lease_cutoff"
    case = seen.case(Kind.OUTLIVES_LEASE)
    found = _only_result(seen, case)
    if isinstance(found, str):
        return _fail(
            rule, [f"{found}: a handler that outlives its lease must be cut off and reported as failed"]
        )
    assert case is not None
    result, decoded = found
    problems = []
    if decoded.outcome != "failure":
        problems.append(f"outcome {decoded.outcome!r}: a handler cut off at its lease failed")
    margin = case.lease_expires_at - result.received_at
    if margin <= 0:
        problems.append(f"its result arrived {-margin:.3f}s after lease_expires_at")
    return _verdict(rule, problems, f"cut off: a failure arrived {margin:.3f}s before lease_expires_at")


def publisher_confirms(seen: Observations) -> RuleResult:
    rule = "publisher_confirms"
    if seen.confirm_channels is None:
        return _fail(rule, [f"could not be checked: {seen.confirm_check_problem or 'no channel listing'}"])
    if seen.confirm_channels == 0:
        return _fail(
            rule, ["no channel of the worker is in confirm mode: results must be published with confirms"]
        )
    return RuleResult(
        rule=rule, passed=True, detail=f"{seen.confirm_channels} channel(s) of the worker in confirm mode"
    )


RULES: tuple[Callable[[Observations], RuleResult], ...] = (
    expired_rejected,
    ack_before_start,
    redelivered_dropped,
    one_result_per_admission,
    result_fields,
    routing_key,
    attempt_echoed,
    outcome,
    retry_after,
    lease_cutoff,
    publisher_confirms,
)
RULE_NAMES = tuple(rule.__name__ for rule in RULES)


def judge(seen: Observations) -> list[RuleResult]:
    return [rule(seen) for rule in RULES]
