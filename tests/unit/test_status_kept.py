"""/status keeps each dependency's lane between refreshes (janus/api/status.py, KeptPicture): what
it answers is, refresh after refresh while samples change, exactly the picture built afresh."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from janus.api.metrics import Metrics
from janus.api.status import KeptPicture, picture
from tests.unit.test_status import leader_metrics

CHANGES = [{"version": 3, "what": "apply"}]


def fresh(metrics: Metrics, now: float) -> dict[str, object]:
    body = picture(metrics.registry, now=now)
    body["recent_changes"] = CHANGES if body["process"]["leading"] else []  # type: ignore[index]
    return body


def test_every_refresh_answers_the_picture_built_afresh() -> None:
    metrics = leader_metrics()
    kept = KeptPicture(metrics.registry)
    steps: list[Callable[[], object]] = [
        lambda: None,  # nothing changed: every lane reused, the countdown of `api` moves on
        lambda: metrics.held.labels("mail").set(1),  # one dependency's sample
        lambda: metrics.scope_waiting.labels("api", "tenant-c").set(50),  # a new top scope
        lambda: metrics.scope_waiting.remove("api", "tenant-b"),  # one that left the top
        lambda: metrics.blocked.remove("api", "rate", "rate 100/1s"),  # no longer blocked
        lambda: metrics.held.labels("new").set(3),  # a new dependency
        lambda: metrics.steering.labels("mail", "pause", "ops: incident").set(math.inf),
        lambda: metrics.admissions.labels("api").inc(7),  # a counter
        lambda: metrics.loop_lag.set(0.25),  # the process's own figures
        lambda: metrics.is_leader.set(0),  # a standby shows no lanes and no changes
        lambda: metrics.is_leader.set(1),
    ]
    for step, action in enumerate(steps):
        action()
        now = 1000.0 + step / 10
        leading, encoded = kept.encoded(now, CHANGES)
        expected = fresh(metrics, now)
        assert json.loads(encoded) == expected, step
        assert leading is expected["process"]["leading"]  # type: ignore[index]
        assert encoded == json.dumps(expected).encode(), step  # the same text too


def test_a_lane_is_built_again_only_when_its_samples_changed() -> None:
    import janus.api.status as status

    metrics = leader_metrics()
    metrics.blocked.remove("api", "rate", "rate 100/1s")  # no countdown: api is kept as it is
    kept = KeptPicture(metrics.registry)
    built: list[str] = []
    real = status.lane

    def counting(samples: status.Samples, dependency: str, now: float) -> dict[str, object]:
        built.append(dependency)
        return real(samples, dependency, now)

    status.lane = counting  # type: ignore[assignment]
    try:
        kept.encoded(1.0, [])
        assert built == ["api", "mail"]
        built.clear()
        kept.encoded(2.0, [])
        assert built == []
        metrics.held.labels("mail").set(5)
        metrics.leader_epoch.set(8)  # the process's own figures are in no lane
        kept.encoded(3.0, [])
        assert built == ["mail"]
    finally:
        status.lane = real
