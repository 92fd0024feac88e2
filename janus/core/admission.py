"""The admission decision of one dependency: which of its eligible jobs run now, in fair order.

This is the hot path of the core, so it is written for speed, with the same decisions as
asking every limit before every admission:
- The dependency's own limits (pause, circuit, concurrency, rate windows) change within one
  decision only through its own admissions: `Lane.room` says once how many they allow, and
  `Lane.block` is asked again only when that many have been admitted. The admissions are told
  to the rate windows, the retry budget and the circuit in batches (`Lane.record_admissions`),
  always before anything reads them: before `block` and `room`, before a scope's retry asks
  the budget, and at the end.
- Scope caps are checked per admission (a scope may be served again in the same decision),
  but only if the dependency has any.
- The admitted job and its admission are built positionally (`janus.core.jobs.admitted`); the
  lease deadline goes into one heap entry for the whole batch.
"""

from __future__ import annotations

from janus.core.decisions import Blocked, WaitReason
from janus.core.jobs import Admission, admitted
from janus.core.lane import Lane
from janus.core.scope import Scope


def admit_lane(
    lane: Lane,
    now: float,
    budget: int,
    admissions: list[Admission],
    blocked: list[Blocked],
    wakeups: list[float],
) -> int:
    """Admit from one dependency while `budget` (-1: no limit) and its limits allow; returns
    the budget left. Appends to `admissions`, `blocked` and `wakeups`."""
    policy, ledger, fair = lane.policy, lane.ledger, lane.fair
    peek = fair.peek
    name = peek()  # the scope whose turn it is: asked once per turn, after what may change it
    if name is None:
        return budget
    room = _room(lane, now, blocked, wakeups)  # asked before the rest is looked up: often it blocks
    if room is None:
        return budget
    scopes, jobs, changed, lapsed, held = lane.scopes, ledger.jobs, ledger.changed, ledger.lapsed, lane.held
    scope_windows = bool(policy.fairness.scope_rate_limits)  # every scope has windows, or none has
    capped = policy.fairness.scope_concurrency is not None or scope_windows
    expires_at, lease_deadline = now + policy.admission_ttl, now + policy.lease_timeout
    max_attempts = policy.retry.max_attempts  # told to the worker with every admission
    shadow = lane.shadow  # counted, never enforced
    units = lane.units  # limits in units of cost: checked per admission, the estimate of each job
    leases: list[tuple[str, int]] = []
    # `room`: admissions the dependency's limits allow before `block` must be asked again
    pending = retries = 0  # admitted, not yet recorded (record_admissions)
    while name is not None and budget != 0:
        if room <= 0:
            if pending:
                lane.record_admissions(now, pending, retries)
                pending = retries = 0
            opened = _room(lane, now, blocked, wakeups)
            if opened is None:
                break
            room = opened
        scope = scopes[name]
        if capped:
            cap = lane.scope_cap(scope, now)
            if cap is not None:
                lane.park(scope, cap[0], cap[2], cap[1])
                name = peek()
                continue
        job_id: str | None
        if scope.again:
            if pending:  # next_job may ask the retry budget
                lane.record_admissions(now, pending, retries)
                pending = retries = 0
            job_id = lane.next_job(scope, now)
        else:
            job_id = scope.fresh.popleft() if scope.fresh else None
        if job_id is None:  # its next job is in the store, or a retry over the budget
            if _stalled(lane, scope, now, blocked, wakeups):
                break
            name = peek()
            continue
        waiting = jobs[job_id]
        step = scope.stride
        if units is not None:
            charged = lane.charge_units(scope, (job_id, waiting.attempt + 1), waiting.cost, now)
            if charged is None:  # its estimate does not fit a unit limit now: it keeps its turn
                (scope.fresh if waiting.attempt == 0 else scope.again).appendleft(job_id)
                if pending:
                    lane.record_admissions(now, pending, retries)
                    pending = retries = 0
                _room(lane, now, blocked, wakeups)  # says which limit, and when it frees
                break
            step = charged
        job, admission = admitted(waiting, now, expires_at, lease_deadline, max_attempts)
        jobs[job_id] = job
        changed[job_id] = job
        if lapsed:
            lapsed.pop(job_id, None)
        held.add(job_id)
        lane.eligible -= 1
        scope.held += 1
        scope.admitted += 1
        if shadow is not None:
            shadow.observe(now, len(held), name, scope.held)
        if scope_windows:
            for window in scope.windows:
                window.record(now)
        pending += 1
        if admission.retry:
            retries += 1
        if scope.fresh or scope.again or scope.stored:
            fair.charge(name, step)
            if scope.stored and not scope.paging:  # want_page's first test, asked here (most are out)
                lane.want_page(scope)
        else:
            fair.charge_and_park(name, step)  # nothing more to admit: out of the queue
        leases.append((job_id, admission.attempt))
        admissions.append(admission)
        budget -= 1
        room -= 1
        if budget != 0:
            name = peek()
    if pending:
        lane.record_admissions(now, pending, retries)
    if leases:
        ledger.add_leases(lease_deadline, leases)
    return budget


def _room(lane: Lane, now: float, blocked: list[Blocked], wakeups: list[float]) -> int | None:
    """How many admissions the dependency's own limits allow now; None if one of them blocks it
    (then said in `blocked`, with when it frees by the clock in `wakeups`)."""
    found = lane.room_or_block(now)
    if isinstance(found, int):
        return found
    blocked.append(found)
    if found.until is not None:
        wakeups.append(found.until)
    return None


def _stalled(lane: Lane, scope: Scope, now: float, blocked: list[Blocked], wakeups: list[float]) -> bool:
    """The scope whose turn it is has no job to admit now: it is parked for the retry budget,
    or, if its next jobs are in the store, the lane stops (True) rather than pass over the
    scope's turn (which would bend the fairness bound); the next tick pages them in."""
    if not (scope.stored and not scope.fresh):
        lane.park(scope, WaitReason.RETRY_BUDGET, None)
        return False
    dependency, name = lane.policy.name, scope.name
    blocked.append(
        Blocked(
            dependency=dependency,
            reason=WaitReason.PAGING,
            limit=f"reading scope {name!r}",
            until=now,
            waiting=lane.eligible,
        )
    )
    lane.pager.urgent[(dependency, name)] = None
    wakeups.append(now)
    return True
