"""Prometheus metrics, named janus_<noun>_<unit>, on a registry passed in (tests use their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        for declare in (self._messages, self._backlog, self._process, self._retry_control):
            declare(self.registry)

    def _messages(self, r: CollectorRegistry) -> None:
        """What happens to the messages Janus takes and sends."""
        self.intake_messages = Counter(
            "janus_intake_messages_total",
            "Intake messages handled, by outcome (accepted, duplicate, rejected).",
            ["outcome"],
            registry=r,
        )
        self.rejected_messages = Counter(
            "janus_rejected_messages_total",
            "Messages set aside on janus.rejected, by source queue and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.admissions = Counter(
            "janus_admissions_total", "Admissions published to workers.", ["dependency"], registry=r
        )
        self.bad_results_held = Counter(
            "janus_bad_results_held_total",
            "Times a results queue was held because more of its results were bad than "
            "bad_results_limit allows; the rest waited in the broker.",
            ["queue"],
            registry=r,
        )
        self.publish_failures = Counter(
            "janus_publish_failures_total",
            "Admissions the broker refused; the job waits again, no attempt charged.",
            ["dependency"],
            registry=r,
        )
        self.events = Counter(
            "janus_job_events_total",
            "What results, returned admissions and lease time-outs did to jobs, by verdict.",
            ["source", "verdict"],
            registry=r,
        )
        self.tick_failures = Counter(
            "janus_tick_failures_total",
            "Ticks that failed for what a message carried: retried message by message.",
            registry=r,
        )

    def _backlog(self, r: CollectorRegistry) -> None:
        """What waits and what is held, per dependency and per scope."""
        self.held = Gauge("janus_held_slots", "Admissions held (no result yet).", ["dependency"], registry=r)
        self.waiting = Gauge(
            "janus_waiting_jobs",
            "Jobs waiting: ready (eligible, in memory), stored (eligible first attempts left in "
            "PostgreSQL until their scope needs them) or delayed (retry backoff).",
            ["dependency", "kind"],
            registry=r,
        )
        self.active_scopes = Gauge(
            "janus_active_scopes", "Scopes with eligible jobs.", ["dependency"], registry=r
        )
        self.oldest_waiting = Gauge(
            "janus_oldest_waiting_seconds",
            "Age of the oldest eligible job in memory, over the dependency's scopes.",
            ["dependency"],
            registry=r,
        )
        # Per scope, only the TOP_SCOPES largest backlogs of each dependency: bounded cardinality.
        self.scope_waiting = Gauge(
            "janus_scope_waiting_jobs",
            "Jobs waiting in one of the scopes with the largest backlogs.",
            ["dependency", "scope"],
            registry=r,
        )
        self.scope_held = Gauge(
            "janus_scope_held_slots",
            "Slots held by one of those scopes.",
            ["dependency", "scope"],
            registry=r,
        )
        self.scope_admitted = Gauge(
            "janus_scope_admitted_jobs",
            "Admissions of one of those scopes in this leader's term.",
            ["dependency", "scope"],
            registry=r,
        )
        self.scope_oldest_waiting = Gauge(
            "janus_scope_oldest_waiting_seconds",
            "Age of the oldest eligible job of one of those scopes.",
            ["dependency", "scope"],
            registry=r,
        )
        self.pages_loaded = Counter(
            "janus_backlog_pages_total", "Pages of waiting first attempts read from PostgreSQL.", registry=r
        )

    def _process(self, r: CollectorRegistry) -> None:
        """The leader process: its ticks, its pauses, its terms."""
        self.tick_seconds = Histogram(
            "janus_tick_seconds",
            "Duration of one admission tick (decide, commit, ack).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.tick_messages = Histogram(
            "janus_tick_messages",
            "Messages handled per tick.",
            buckets=(1, 4, 16, 64, 256, 1024, 4096),
            registry=r,
        )
        self.gc_pause = Histogram(
            "janus_gc_pause_seconds",
            "Pauses of the event loop by Python's cyclic garbage collector, by generation.",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.is_leader = Gauge("janus_is_leader", "1 while this process leads.", registry=r)
        self.leader_epoch = Gauge(
            "janus_leader_epoch", "The epoch of this process's current term.", registry=r
        )
        self.terms_ended = Counter(
            "janus_terms_ended_total",
            "Terms this process led that ended, by cause (stopped, lease_lost, database, broker).",
            ["cause"],
            registry=r,
        )
        self.recovering = Gauge(
            "janus_recovering",
            "1 while this process reconnects to the broker or the database after losing one.",
            registry=r,
        )

    def _retry_control(self, r: CollectorRegistry) -> None:
        """Circuits, pauses, the retry budget, outcomes and revived jobs."""
        # Retry control: small label sets, one series per dependency (and kind).
        self.circuit_state = Gauge(
            "janus_circuit_state",
            "Circuit of each dependency: 0 closed, 1 half-open, 2 open.",
            ["dependency"],
            registry=r,
        )
        self.paused = Gauge(
            "janus_dependency_paused",
            "1 while a worker's retry_after pauses the dependency.",
            ["dependency"],
            registry=r,
        )
        self.recovery_ramp = Gauge(
            "janus_recovery_ramp_ratio",
            "Share of its capacity each dependency's recovery ramp allows after an outage "
            "(1 when no ramp is in force; above 1 past the ramp, until the cap no longer binds).",
            ["dependency"],
            registry=r,
        )
        self.ready_consumers = Gauge(
            "janus_ready_consumers",
            "Consumers of each dependency's ready queue, as the leader last counted them; "
            "with 0, nothing of the dependency is admitted (wait reason no_worker).",
            ["dependency"],
            registry=r,
        )
        self.retry_budget_parked = Gauge(
            "janus_retry_budget_parked_scopes",
            "Scopes whose next job is a retry waiting for the dependency's retry budget.",
            ["dependency"],
            registry=r,
        )
        self.gate_events = Counter(
            "janus_gate_events_total",
            "Circuit state changes (circuit_open, circuit_half_open, circuit_closed), pauses, "
            "clamped retry_after values.",
            ["dependency", "kind"],
            registry=r,
        )
        self.outcomes = Counter(
            "janus_outcomes_total",
            "Terminal outcomes published to janus.outcomes (succeeded, dead; as the dependency's outcomes key lists).",
            ["dependency", "outcome"],
            registry=r,
        )
        self.revived = Counter(
            "janus_revived_jobs_total",
            "Dead jobs made eligible again by janus jobs retry.",
            ["dependency"],
            registry=r,
        )
