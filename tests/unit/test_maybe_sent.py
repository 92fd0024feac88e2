"""Admissions a new term cannot tell sent from unsent (service/maybe_sent.py): held until their
lease ends, then returned unused instead of charged as a failed attempt."""

from __future__ import annotations

from janus.core.decisions import Verdict
from janus.core.scheduler import Scheduler
from janus.service.maybe_sent import MaybeSent
from janus.service.tick import decide
from tests.unit.test_tick import OPTIONS, batch, core, intake


def test_due_pops_by_lease_deadline_and_only_once() -> None:
    maybe = MaybeSent([("b", 2, 20.0), ("a", 1, 10.0), ("c", 1, 30.0)])
    assert len(maybe) == 3
    assert maybe.due(9.99) == []
    assert maybe.due(20.0) == [("a", 1), ("b", 2)]  # a deadline reached at `now` is due
    assert maybe.due(25.0) == []
    assert maybe.due(100.0) == [("c", 1)]
    assert len(maybe) == 0


def admitted_job(max_attempts: int) -> tuple[Scheduler, float]:
    """A core holding job "j" admitted at 0.0 (its lease: 60 s), as a new term rebuilds it."""
    scheduler = core(max_attempts=max_attempts)
    decided = decide(batch(intake=[intake("j")]), scheduler, 0.0, OPTIONS)
    (admission,) = decided.decision.admissions
    return scheduler, admission.lease_deadline


def test_a_maybe_sent_admission_is_returned_at_its_lease_end_without_a_charge() -> None:
    scheduler, deadline = admitted_job(max_attempts=1)
    maybe = MaybeSent([("j", 1, deadline)])
    before = decide(batch(), scheduler, deadline - 1.0, OPTIONS, maybe)
    assert before.events == {}, "held until its lease ends: it may be running"
    at_end = decide(batch(), scheduler, deadline, OPTIONS, maybe)
    assert at_end.events == {("unpublished", Verdict.RELEASED.value): 1}
    # ...and admitted again at once, as attempt 2, with no failure counted (one attempt allowed).
    (again,) = at_end.decision.admissions
    assert (again.job_id, again.attempt, again.failures) == ("j", 2, 0)


def test_without_it_the_lease_end_is_a_failed_attempt() -> None:
    scheduler, deadline = admitted_job(max_attempts=1)
    at_end = decide(batch(), scheduler, deadline, OPTIONS)
    assert at_end.events == {("lease_timeout", Verdict.DEAD.value): 1}
    assert at_end.decision.admissions == []
