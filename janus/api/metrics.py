"""Prometheus metrics, named janus_<noun>_<unit>, on a registry passed in (tests use their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        for declare in (
            self._messages,
            self._backlog,
            self._limits,
            self._process,
            self._retry_control,
            self._steering,
            self._retention,
            self._owners,
        ):
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
        self.transitions = Counter(
            "janus_job_transitions_total",
            "What results, returned admissions and lease time-outs did to the dependency's jobs: "
            "succeeded, retry_scheduled, dead, released (events that changed nothing are not counted).",
            ["dependency", "verdict"],
            registry=r,
        )
        self.cost_units = Counter(
            "janus_job_cost_units_total",
            "Units of cost of the attempts whose result reported an actual cost, per dependency: the "
            "estimate charged at admission (kind=estimated) against what the worker reported (kind=actual).",
            ["dependency", "kind"],
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

    def _limits(self, r: CollectorRegistry) -> None:
        """Each dependency's limits as they stand, and what holds its waiting jobs back.

        Labels stay bounded: `limit` takes the configured rate limits' values, `reason` the
        wait reasons (janus.core.decisions.WaitReason)."""
        self.rate_limit = Gauge(
            "janus_rate_limit_count",
            "COUNT of each of the dependency's rate limits (limit: as configured, e.g. 100/1s).",
            ["dependency", "limit"],
            registry=r,
        )
        self.rate_window = Gauge(
            "janus_rate_limit_window_seconds",
            "T of each rate limit: COUNT / T is the limit in admissions per second, to draw against "
            "rate(janus_admissions_total).",
            ["dependency", "limit"],
            registry=r,
        )
        self.rate_used = Gauge(
            "janus_rate_window_admissions",
            "Admissions in the current window of each rate limit (its span: T, plus admission_ttl "
            "for a limit that counts starts); none may be admitted while it equals the COUNT.",
            ["dependency", "limit"],
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "janus_concurrency_limit",
            "The dependency's concurrency limit (absent when it has none).",
            ["dependency"],
            registry=r,
        )
        self.next_admission = Gauge(
            "janus_next_admission_timestamp_seconds",
            "When the dependency may admit again by the clock alone (Unix time): 0 when nothing "
            "holds it back, +Inf when it waits for a slot or a worker rather than for time.",
            ["dependency"],
            registry=r,
        )
        self.blocked = Gauge(
            "janus_dependency_blocked",
            "1 for the limit that decides the dependency's next admission (reason, limit), while one does.",
            ["dependency", "reason", "limit"],
            registry=r,
        )
        self.waiting_by_reason = Gauge(
            "janus_waiting_jobs_by_reason",
            "Waiting jobs by the first thing that holds each back: a limit of the dependency, a cap "
            "of its scope, backoff, or fair_share (its scope's turn has not come).",
            ["dependency", "reason"],
            registry=r,
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
        self.tick_wait = Histogram(
            "janus_tick_wait_seconds",
            "How long a tick's first delivery waited in the inbox for the tick to start.",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.tick_write = Histogram(
            "janus_tick_write_seconds",
            "Round trip of a tick's statement to PostgreSQL, commit included.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.tick_lingers = Counter(
            "janus_tick_lingers_total",
            "Waits of the admission loop before a tick, for the tick to take more messages.",
            registry=r,
        )
        self.gc_pause = Histogram(
            "janus_gc_pause_seconds",
            "Pauses of the event loop by Python's cyclic garbage collector, by generation.",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.loop_lag = Gauge(
            "janus_event_loop_lag_seconds",
            "How late the event loop last ran a callback it was asked to run at once (measured "
            "every 0.5 s): a busy loop delays ticks, lease renewals and health checks.",
            registry=r,
        )
        self.is_leader = Gauge("janus_is_leader", "1 while this process leads.", registry=r)
        self.leader_epoch = Gauge(
            "janus_leader_epoch", "The epoch of this process's current term.", registry=r
        )
        self.dependency_led = Gauge(
            "janus_dependency_led",
            "Member mode (docs/scale-out.md): 1 for each dependency this process leads, 0 once it no longer does.",
            ["dependency"],
            registry=r,
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
            "1 while the dependency is paused: by a worker's retry_after, or by `janus pause`.",
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
        # Adaptive limits (core/adaptive.py): only for dependencies that have them.
        self.adaptive_rate = Gauge(
            "janus_adaptive_rate",
            "The adaptive rate limit in force, in calls per second.",
            ["dependency"],
            registry=r,
        )
        self.adaptive_concurrency = Gauge(
            "janus_adaptive_concurrency",
            "The adaptive concurrency limit in force.",
            ["dependency"],
            registry=r,
        )
        self.adaptive_changed = Gauge(
            "janus_adaptive_changed_timestamp_seconds",
            "When the adaptive limits last moved, labelled with the signal that moved them "
            "(throttled, clean, latency_rise, latency_floor): one series per dependency.",
            ["dependency", "signal"],
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

    def _steering(self, r: CollectorRegistry) -> None:
        """The policy of record this process runs while it leads (`janus apply`)."""
        self.policy_version = Gauge(
            "janus_policy_version",
            "The stored version of the policy this process runs (0: not leading yet).",
            registry=r,
        )
        self.overridden = Gauge(
            "janus_dependency_overridden",
            "1 while `janus override` replaces the dependency's limits; the limit gauges then show "
            "the limits in force (the override's).",
            ["dependency"],
            registry=r,
        )
        # At most one series per dependency and kind: a new pause or override replaces the last.
        self.steering = Gauge(
            "janus_dependency_steering_until_timestamp_seconds",
            "When an operator's pause or override in force ends (Unix seconds; +Inf: until "
            "`janus resume`), with who set it and why (by: actor: reason).",
            ["dependency", "kind", "by"],
            registry=r,
        )
        self.shadow_held_back = Counter(
            "janus_shadow_held_back_total",
            "Admissions a shadow limit ([dependencies.X.shadow]) would have held back; never enforced.",
            ["dependency", "limit"],
            registry=r,
        )
        self.policy_file_differs = Gauge(
            "janus_policy_file_differs",
            "1 if this process's policy file differs from the version it runs (the stored one wins).",
            registry=r,
        )

    def _retention(self, r: CollectorRegistry) -> None:
        """Finished jobs leaving PostgreSQL, and how big its tables are (docs/operations.md)."""
        self.pruned = Counter(
            "janus_pruned_jobs_total",
            "Finished jobs deleted past their retention (with their error history), by state.",
            ["state"],
            registry=r,
        )
        self.pruned_records = Counter(
            "janus_pruned_records_total",
            "The leader's own records deleted past the longest default retention, by table "
            "(handled retry requests, ended leader terms).",
            ["table"],
            registry=r,
        )
        self.oldest_finished = Gauge(
            "janus_oldest_finished_job_seconds",
            "Age of the oldest finished job still stored, by state; stays near the retention "
            "when pruning keeps up.",
            ["state"],
            registry=r,
        )
        self.prune_batch = Gauge(
            "janus_prune_batch_jobs",
            "The size the last pruning batch was given (it adapts to retention.batch_budget).",
            registry=r,
        )
        self.table_rows = Gauge(
            "janus_table_rows",
            "Live rows of Janus's largest tables, as PostgreSQL's statistics count them.",
            ["table"],
            registry=r,
        )
        self.table_bytes = Gauge(
            "janus_table_bytes",
            "On-disk size of Janus's largest tables, with their indexes and TOAST.",
            ["table"],
            registry=r,
        )

    def _owners(self, r: CollectorRegistry) -> None:
        """Who leads which dependency, as the database says (scale-out: janus/service/owners.py),
        on whatever process is scraped. Set only in member mode; a single leader's stay 0."""
        self.members_live = Gauge(
            "janus_members_live",
            "Janus processes whose member row is live in the database, as last read.",
            registry=r,
        )
        self.dependency_owner = Gauge(
            "janus_dependency_owner_info",
            "1 for the member holding the dependency's live lease, as last read from the database; "
            "no series while nobody holds it.",
            ["dependency", "member"],
            registry=r,
        )
        self.dependencies_unowned = Gauge(
            "janus_dependencies_unowned",
            "Dependencies of the policy without a live lease, as last read from the database.",
            registry=r,
        )
