"""How a Janus process runs (timings, connections, what it serves), apart from the policy:
built from the environment's settings (`janus run`) or directly (tests, the demo)."""

from __future__ import annotations

from dataclasses import dataclass, field

from janus.config import Settings
from janus.core.policy import RetryPolicy
from janus.service.leadership import LeaseTimings
from janus.service.worker_watch import POLL_EVERY


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceOptions:
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    serve_metrics: bool = True
    amqp_heartbeat: int = 2  # seconds; 0: the broker's choice
    db_timeout: float = 5.0  # connecting, and every short statement
    reconnect: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=1, base_delay=0.1, max_delay=5.0, jitter=0.5)
    )
    worker_poll_every: float = POLL_EVERY  # how often the leader counts each ready queue's consumers

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceOptions:
        return cls(
            timings=LeaseTimings(
                lease=settings.leader_lease,
                renew_every=settings.leader_renew_every,
                poll_every=settings.standby_poll_every,
            ),
            serve_metrics=settings.http_port != 0,
            amqp_heartbeat=settings.amqp_heartbeat,
            db_timeout=settings.db_timeout,
            reconnect=RetryPolicy(
                max_attempts=1,
                base_delay=min(0.1, settings.reconnect_max_delay),
                max_delay=settings.reconnect_max_delay,
                jitter=0.5,
            ),
        )
