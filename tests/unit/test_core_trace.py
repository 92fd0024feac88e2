"""Every decision of the core, over random schedules, is what it was when the traces were recorded.

The property tests check invariants and bounds; they would not notice a change that keeps
them but admits a different scope or job, reports a different limit or wakes at another
time. This test replays seeded random schedules through the public API of `Scheduler`
(submissions, ticks with paging, lease expiry and admission with and without a `limit`,
results, returns, retractions, policy reloads, crashes rebuilt from a simulated store,
and every inspection call) and compares a digest of everything the core returned with
the digest recorded in `core_traces.json`, from the implementation before the hot path
was optimised.

If a change of behaviour is intended, say why in the commit and record again:

    .venv/bin/python -m tests.unit.test_core_trace --record

What the core has said since the traces were recorded without changing a decision is read as
it was then (`_as_recorded`): the ready message's try fields, the scopes a cap holds counted
among a dependency's scopes, and durations instead of epoch times in the gates' texts. Only
those, each put back exactly, so everything else is still compared in full.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
import sys
from collections import defaultdict
from enum import Enum
from pathlib import Path
from typing import cast

import pytest

from janus.core.circuit import CircuitSnapshot
from janus.core.jobs import Job, JobState
from janus.core.policy import (
    RECOVERY_OFF,
    CircuitPolicy,
    DependencyPolicy,
    FairnessPolicy,
    RateCounting,
    RateLimit,
    RetryPolicy,
)
from janus.core.scheduler import Scheduler
from janus.core.scope import NO_AGAIN
from tests.unit.simulated_store import page_for, snapshot_of

TRACES = Path(__file__).with_name("core_traces.json")
SEEDS = range(240)
STEPS = 400
DEPENDENCIES = ("alpha", "beta", "gamma")
ADMISSIONS = RateCounting.ADMISSIONS


# Fields added to the core's values since the traces were recorded: left out of the digest.
_ADDED_FIELDS = {
    "Admission": ("failures", "max_attempts", "cost"),
    "LaneStats": ("parked",),
    "Job": ("cost",),  # costed jobs (issue 23): every job of the traces costs the default 1
    "RateLimit": ("units",),
    "DependencyPolicy": ("unit_limits", "max_cost"),
}
_PAUSED_FOR = re.compile(r"nothing admitted for \S+ s$")
_OPEN_FOR = re.compile(r"; admits nothing for \S+ s$")


def _as_recorded(kind: str, fields: dict[str, object]) -> dict[str, object]:
    """A value's fields as the core said them when the traces were recorded (see the docstring)."""
    added = {name: fields.pop(name) for name in _ADDED_FIELDS.get(kind, ())}
    reason, until = fields.get("reason"), fields.get("until")
    if kind == "LaneStats":  # the scopes parked at a cap of their own were not counted
        fields["scopes"] = cast(int, fields["scopes"]) - cast(int, added["parked"])
    elif kind == "Blocked" and reason == "paused":
        fields["limit"] = f"retry_after until {cast(float, until):.3f}"
    elif kind == "WhyWaiting" and reason == "paused":
        fields["detail"] = f"retry_after until {cast(float, until):.3f}"
    elif kind == "GateEvent" and fields["kind"] == "paused":
        detail = cast(str, fields["detail"])
        fields["detail"] = _PAUSED_FOR.sub(f"nothing admitted until {cast(float, until):.3f}", detail)
    elif kind == "GateEvent" and isinstance(circuit := fields["circuit"], CircuitSnapshot):
        detail = cast(str, fields["detail"])
        fields["detail"] = _OPEN_FOR.sub(f"; open until {circuit.open_until:.3f}", detail)
    return fields


def _plain(value: object) -> object:
    """A value as nested lists of primitives, whatever class carries it (dataclass or tuple)."""
    if isinstance(value, Enum):
        return value.value
    names: tuple[str, ...] | None = getattr(value, "_fields", None)  # a NamedTuple
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        kind = type(value).__name__
        fields = _as_recorded(kind, {name: getattr(value, name) for name in names})
        return [kind, *(_plain(field) for field in fields.values())]
    if isinstance(value, dict):
        return [[_plain(k), _plain(v)] for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return repr(value)  # exact, and inf/nan are not JSON
    return value


def _policy(rng: random.Random, name: str) -> DependencyPolicy:
    ttl = rng.choice([0.2, 1.0])
    scopes = [f"s{i}" for i in range(6)]
    return DependencyPolicy(
        name=name,
        # Counting admissions: the meaning every limit had when the traces were recorded, which
        # the option must keep exactly (limits that count starts only widen the span).
        rate_limits=tuple(
            RateLimit(count=rng.randint(1, 8), window=rng.choice([0.5, 1.0, 2.5]), counts=ADMISSIONS)
            for _ in range(rng.choice([0, 0, 1, 2]))
        ),
        concurrency=rng.choice([None, None, 1, 3, 6]),
        admission_ttl=ttl,
        lease_timeout=ttl + rng.choice([0.5, 3.0, 20.0]),
        retry=RetryPolicy(
            max_attempts=rng.randint(1, 4),
            base_delay=rng.choice([0.1, 0.5]),
            max_delay=rng.choice([2.0, 5.0]),
            jitter=rng.choice([0.0, 0.5, 1.0]),
            budget=rng.choice([0.1, 0.5, 1.0]),
            budget_window=rng.choice([1.0, 5.0]),
            min_retries=rng.randint(1, 3),
            max_retry_after=rng.choice([1.0, 10.0]),
        ),
        circuit=CircuitPolicy(
            enabled=rng.random() < 0.8,
            failure_threshold=rng.choice([0.3, 0.5, 1.0]),
            min_outcomes=rng.randint(1, 5),
            window=rng.choice([1.0, 5.0]),
            open_for=rng.choice([0.3, 1.0]),
            max_open_for=rng.choice([1.0, 4.0]),
            half_open_probes=rng.randint(1, 3),
        ),
        fairness=FairnessPolicy(
            default_weight=rng.choice([1.0, 0.5, 3.0]),
            weights={s: rng.choice([0.25, 1.0, 4.0]) for s in rng.sample(scopes, rng.randint(0, 3))},
            scope_concurrency=rng.choice([None, None, 1, 2]),
            scope_rate_limits=tuple(
                RateLimit(count=rng.randint(1, 3), window=rng.choice([0.5, 2.5]), counts=ADMISSIONS)
                for _ in range(rng.choice([0, 0, 1]))
            ),
        ),
        # The recovery ramp came after the traces: off, so that every other decision is still
        # compared with what was recorded (tests/unit/test_recovery.py checks the ramp itself).
        recovery=RECOVERY_OFF,
    )


class _World:
    """A shell around the core: a store, a clock, workers; every answer goes into the trace."""

    def __init__(self, seed: int) -> None:
        rng = self.rng = random.Random(seed)
        self.policies = {name: _policy(rng, name) for name in DEPENDENCIES[: rng.randint(1, 3)]}
        self.fail_rate = rng.choice([0.1, 0.3, 0.7])
        self.per_scope = rng.choice([(1, 1), (2, 2), (4, 4), (4, 1024)])
        self.scheduler = self._new_core(seed)
        self.now = rng.uniform(0, 1e6)
        self.serial = 0
        self.stored: dict[str, Job] = {}
        self.held: dict[str, int] = {}  # job -> attempt
        self.admitted: dict[str, list[tuple[str, float, bool]]] = defaultdict(list)  # (scope, at, retry)
        self.retractable: list[str] = []
        self.trace = hashlib.sha256()
        self.restarts = 0

    def _new_core(self, seed: int) -> Scheduler:
        return Scheduler(
            self.policies.values(), random.Random(seed), per_scope=self.per_scope, memory_budget=12
        )

    def record(self, label: str, value: object) -> None:
        self.trace.update(json.dumps([label, _plain(value)]).encode())

    def commit(self) -> None:
        changes = self.scheduler.drain_changes()
        self.record("changes", changes)
        self.retractable = [job.job_id for job in changes.new]
        for job in [*changes.new, *changes.updated]:
            self.stored[job.job_id] = job
            if job.state is not JobState.ADMITTED:
                self.held.pop(job.job_id, None)

    def step(self) -> None:
        rng, core = self.rng, self.scheduler
        dependency = rng.choice(list(self.policies))
        roll = rng.random()
        if roll < 0.30:
            for _ in range(rng.choice([1, 1, 2, 6])):
                self.serial += 1
                job = core.submit(
                    job_id=f"j{self.serial}",
                    dependency=dependency,
                    scope=f"s{min(rng.randint(0, 6), rng.randint(0, 6))}",
                    payload={"n": self.serial},
                    now=self.now,
                )
                self.record("submit", job)
        elif roll < 0.45:
            self.now += rng.choice([0.0, 1e-9, 0.01, 0.1, 0.25, 0.499, 0.5, 1.0, 2.5, rng.uniform(0, 3)])
        elif roll < 0.47:
            self.now -= rng.uniform(0.01, 2.0)  # the wall clock jumps back
        elif roll < 0.65:
            self.tick()
        elif roll < 0.80 and self.held:
            job_id = rng.choice(sorted(self.held))
            attempt = self.held[job_id] - (1 if rng.random() < 0.05 else 0)  # sometimes stale
            success = rng.random() >= self.fail_rate
            retry_after = rng.choice([None] * 8 + [0.0, 0.3, 30.0, math.inf])
            transition = core.on_result(
                job_id=job_id,
                attempt=attempt,
                success=success,
                error=None if success else "boom",
                retry_after=None if success else retry_after,
                now=self.now,
            )
            self.record("result", transition)
            self.commit()
        elif roll < 0.84 and self.held:
            job_id = rng.choice(sorted(self.held))
            self.record("returned", core.on_returned(job_id=job_id, attempt=self.held[job_id], now=self.now))
            self.commit()
        elif roll < 0.85:
            self.record(
                "unknown",
                core.on_result(
                    job_id="nope", attempt=1, success=True, error=None, retry_after=None, now=self.now
                ),
            )
        elif roll < 0.87 and self.retractable:
            job_id = self.retractable.pop(rng.randrange(len(self.retractable)))
            core.retract(job_id)
            self.stored.pop(job_id, None)
            self.held.pop(job_id, None)
            self.record("retract", job_id)
        elif roll < 0.89:
            self.policies[dependency] = policy = dataclasses.replace(
                _policy(rng, dependency),
                rate_limits=self.policies[dependency].rate_limits
                if rng.random() < 0.5
                else self.policies[dependency].rate_limits[:1],
            )
            core.update_policy(policy)
            self.record("policy", policy.name)
        elif roll < 0.90:
            self.rebuild()
        else:
            self.inspect(dependency)

    def inspect(self, dependency: str) -> None:
        core, rng = self.scheduler, self.rng
        candidates = sorted(self.stored)
        if candidates:
            job_id = rng.choice(candidates)
            self.record("job", core.job(job_id))
            self.record("why", core.why(job_id, self.now))
        scope = f"s{rng.randint(0, 6)}"
        self.record(
            "why_scope", core.why_scope(dependency, scope, self.now, ahead_in_scope=rng.randint(0, 2))
        )
        self.record("in_memory_ahead", core.in_memory_ahead(dependency, scope))
        self.record("stats", core.stats())
        self.record("scope_stats", core.scope_stats(dependency, top=rng.choice([None, 2])))
        self.record("oldest", core.oldest_waiting_since(dependency))
        self.record("gates", core.gate_states())
        self.record("drain_gates", core.drain_gates())
        self.record("retry_parked", core.retry_budget_parked())
        self.record("clock", core.clock)

    def tick(self) -> None:
        core = self.scheduler
        for request in core.page_requests(max_rows=self.rng.choice([4, 4096])):
            page = page_for(request, self.stored.values())
            self.record("page", [request, core.load_page(request, page)])
        self.record("expired", core.expire_leases(self.now))
        decision = core.admit(self.now, limit=self.rng.choice([None, None, 1, 2, 5]))
        self.record("admit", decision)
        for admission in decision.admissions:
            self.held[admission.job_id] = admission.attempt
            self.admitted[admission.dependency].append(
                (admission.scope, admission.admitted_at, admission.retry)
            )
        self.commit()

    def rebuild(self) -> None:
        """A new leader, from the store alone (as `crash_and_rebuild` in the property tests)."""
        self.commit()
        self.restarts += 1
        snapshot = snapshot_of(
            self.stored.values(),
            self.admitted,
            admissions_since=self.now - 10.0,
            budget_since=self.now - 10.0,
            gates=self.scheduler.gate_states(),  # what the old leader persisted
        )
        core = self.scheduler = Scheduler.rebuilt(
            self.policies.values(),
            snapshot,
            self.now,
            random.Random(self.restarts),
            per_scope=self.per_scope,
            memory_budget=12,
        )
        for job in snapshot.jobs:
            self.record("restore", core.job(job.job_id) is not None)
        self.retractable = []


def run(seed: int) -> str:
    world = _World(seed)
    for _ in range(STEPS):
        world.step()
    world.tick()
    assert not NO_AGAIN, "a job was queued on the empty queue the scopes share"
    return world.trace.hexdigest()


@pytest.mark.parametrize("seed", SEEDS)
def test_decisions_are_as_recorded(seed: int) -> None:
    recorded = json.loads(TRACES.read_text())
    assert run(seed) == recorded[str(seed)]


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        TRACES.write_text(json.dumps({str(seed): run(seed) for seed in SEEDS}, indent=0) + "\n")
        print(f"recorded {len(SEEDS)} traces in {TRACES}")
