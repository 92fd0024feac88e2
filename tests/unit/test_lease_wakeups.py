"""The core's wakeup for lease deadlines: only for admissions still held.

A lease deadline is a wakeup for the service (and an admission step for `janus simulate`):
one whose admission already came back (a result, an unused admission, an earlier expiry)
would find nothing to expire, so the core does not ask for it.
"""

from __future__ import annotations

import random

from janus.core.decisions import Verdict
from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler


def scheduler() -> Scheduler:
    policy = DependencyPolicy(name="api", lease_timeout=30.0, admission_ttl=1.0)
    return Scheduler([policy], random.Random(0))


def admit_at(s: Scheduler, now: float, *ids: str) -> None:
    for job_id in ids:
        s.submit(job_id=job_id, dependency="api", scope="default", payload=None, now=now)
    assert [a.job_id for a in s.admit(now).admissions] == list(ids)


def succeed(s: Scheduler, job_id: str, attempt: int, now: float) -> None:
    done = s.on_result(job_id=job_id, attempt=attempt, success=True, error=None, retry_after=None, now=now)
    assert done.verdict is Verdict.SUCCEEDED


def test_the_wakeup_is_the_earliest_lease_still_held() -> None:
    s = scheduler()
    admit_at(s, 0.0, "a", "b")  # leases end at 30
    admit_at(s, 1.0, "c")  # at 31
    admit_at(s, 2.0, "d")  # at 32
    assert s.admit(3.0).next_wakeup == 30.0
    succeed(s, "a", 1, 4.0)
    assert s.admit(4.0).next_wakeup == 30.0, "b's lease still ends at 30"
    succeed(s, "b", 1, 5.0)
    assert s.admit(5.0).next_wakeup == 31.0, "nothing left to expire at 30"
    s.on_returned(job_id="c", attempt=1, now=6.0)  # c is eligible again, admitted at once
    decision = s.admit(6.0)
    assert [(a.job_id, a.attempt) for a in decision.admissions] == [("c", 2)]
    assert decision.next_wakeup == 32.0, "c's first lease is gone, its second ends at 36"
    succeed(s, "d", 1, 7.0)
    assert s.admit(7.0).next_wakeup == 36.0
    succeed(s, "c", 2, 8.0)
    assert s.admit(8.0).next_wakeup is None, "nothing held: no wakeup at all"


def test_a_held_lease_still_expires_when_stale_ones_were_dropped() -> None:
    s = scheduler()
    admit_at(s, 0.0, "a", "b")
    succeed(s, "a", 1, 1.0)
    assert s.admit(1.0).next_wakeup == 30.0
    assert s.expire_leases(29.9) == []
    (expired,) = s.expire_leases(30.0)
    assert expired.job is not None
    assert expired.job.job_id == "b"
    assert expired.verdict is Verdict.RETRY_SCHEDULED
