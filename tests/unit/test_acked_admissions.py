"""A worker's memory of the admissions it acked (janus/client/acked.py)."""

from __future__ import annotations

from janus.client.acked import FORGET_WITHOUT_LEASE, AckedAdmissions


def test_an_acked_admission_is_known_until_its_lease_ends() -> None:
    acked = AckedAdmissions()
    acked.remember("a", 1, expires_at=10.0, lease_expires_at=40.0, now=9.0)
    assert acked.started_here("a", 1, now=39.9)
    assert not acked.started_here("a", 1, now=40.0)
    assert not acked.started_here("a", 2, now=20.0), "another attempt of the same job is a new admission"
    assert not acked.started_here("b", 1, now=20.0)


def test_without_a_lease_it_is_kept_a_while_past_expiry() -> None:
    acked = AckedAdmissions()
    acked.remember("a", 1, expires_at=10.0, lease_expires_at=None, now=9.0)
    assert acked.started_here("a", 1, now=10.0 + FORGET_WITHOUT_LEASE - 0.1)
    assert not acked.started_here("a", 1, now=10.0 + FORGET_WITHOUT_LEASE)


def test_admissions_past_their_lease_are_forgotten_as_new_ones_come() -> None:
    acked = AckedAdmissions()
    for i in range(1000):
        acked.remember(f"job-{i}", 1, expires_at=i + 1.0, lease_expires_at=i + 5.0, now=float(i))
    assert len(acked) <= 6, "only the admissions whose lease has not ended are kept"
    assert acked.started_here("job-999", 1, now=999.0)
