"""Writes deploy/grafana/dashboards/janus.json, Janus's Grafana dashboard: python deploy/grafana/dashboard.py

Generated rather than hand-kept so that each panel is one readable line of PromQL;
tests/unit/test_grafana.py checks that the committed JSON is this script's output, that every
metric it reads is one Janus serves, and that it uses the provisioned datasource.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources/prometheus.yml
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "janus.json"
# Per-dependency gauges: the leader's only (a process that led before keeps its last values).
LEADER = "and on (instance) janus_is_leader == 1"
DEP = 'dependency=~"$dependency"'


def panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 12,
    description: str = "",
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
        "gridPos": {"w": width, "h": 8},
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


def overview() -> list[dict[str, Any]]:
    return [
        row("Overview"),
        panel(
            "Admissions/s against the tightest rate limit",
            [
                ("sum by (dependency) (rate(janus_admissions_total[1m]))", "{{dependency}} admitted/s"),
                (
                    f"min by (dependency) (janus_rate_limit_count / janus_rate_limit_window_seconds {LEADER})",
                    "{{dependency}} limit/s",
                ),
            ],
            unit="reqps",
        ),
        panel(
            "Held slots against concurrency",
            [
                (f"max by (dependency) (janus_held_slots {LEADER})", "{{dependency}} held"),
                (f"max by (dependency) (janus_concurrency_limit {LEADER})", "{{dependency}} cap"),
            ],
        ),
        panel(
            "Waiting jobs by reason",
            [(f"sum by (reason) (janus_waiting_jobs_by_reason {LEADER}) > 0", "{{reason}}")],
            description="What holds each waiting job back first (docs/operations.md).",
        ),
        panel(
            "Oldest wait",
            [(f"max by (dependency) (janus_oldest_waiting_seconds {LEADER})", "{{dependency}}")],
            unit="s",
        ),
    ]


def drill_down() -> list[dict[str, Any]]:
    return [
        row("Dependency $dependency"),
        panel(
            "Admissions/s and each rate limit",
            [
                (f"sum by (dependency) (rate(janus_admissions_total{{{DEP}}}[1m]))", "admitted/s"),
                (
                    f"max by (limit) (janus_rate_limit_count{{{DEP}}} / janus_rate_limit_window_seconds{{{DEP}}} {LEADER})",
                    "limit {{limit}}",
                ),
            ],
            unit="reqps",
        ),
        panel(
            "Rate windows used",
            [
                (
                    f"max by (limit) (janus_rate_window_admissions{{{DEP}}} / janus_rate_limit_count{{{DEP}}} {LEADER})",
                    "{{limit}}",
                )
            ],
            unit="percentunit",
        ),
        panel(
            "Waiting by reason",
            [(f"sum by (reason) (janus_waiting_jobs_by_reason{{{DEP}}} {LEADER}) > 0", "{{reason}}")],
        ),
        panel(
            "Next admission in, and what decides it",
            [
                (
                    f"clamp_min(max(janus_next_admission_timestamp_seconds{{{DEP}}} {LEADER}) - time(), 0)",
                    "seconds",
                ),
                (
                    f"max by (reason, limit) (janus_dependency_blocked{{{DEP}}} {LEADER})",
                    "{{reason}}: {{limit}}",
                ),
            ],
            unit="s",
        ),
        panel(
            "Results",
            [(f"sum by (verdict) (rate(janus_job_transitions_total{{{DEP}}}[1m]))", "{{verdict}}")],
            unit="ops",
        ),
        panel(
            "Held against cap",
            [
                (f"max(janus_held_slots{{{DEP}}} {LEADER})", "held"),
                (f"max(janus_concurrency_limit{{{DEP}}} {LEADER})", "cap"),
                (f"max(janus_ready_consumers{{{DEP}}} {LEADER})", "ready-queue consumers"),
            ],
        ),
    ]


def fair_share() -> list[dict[str, Any]]:
    return [
        row("Fair share: the largest backlogs of $dependency"),
        panel(
            "Waiting per scope",
            [(f"max by (scope) (janus_scope_waiting_jobs{{{DEP}}} {LEADER})", "{{scope}}")],
            width=8,
        ),
        panel(
            "Held per scope",
            [(f"max by (scope) (janus_scope_held_slots{{{DEP}}} {LEADER})", "{{scope}}")],
            width=8,
        ),
        panel(
            "Admissions/s per scope",
            [(f"max by (scope) (deriv(janus_scope_admitted_jobs{{{DEP}}}[2m]) {LEADER})", "{{scope}}")],
            unit="reqps",
            width=8,
        ),
    ]


def retry_control() -> list[dict[str, Any]]:
    return [
        row("Retry control"),
        panel(
            "Circuit (0 closed, 1 half-open, 2 open), pauses and overrides",
            [
                (f"max by (dependency) (janus_circuit_state {LEADER})", "{{dependency}} circuit"),
                (f"max by (dependency) (janus_dependency_paused {LEADER})", "{{dependency}} paused"),
                (f"max by (dependency) (janus_dependency_overridden {LEADER})", "{{dependency}} overridden"),
            ],
            width=8,
        ),
        panel(
            "Scopes parked for the retry budget",
            [(f"max by (dependency) (janus_retry_budget_parked_scopes {LEADER})", "{{dependency}}")],
            width=8,
        ),
        panel(
            "Retries and dead jobs",
            [
                (
                    'sum by (dependency) (rate(janus_job_transitions_total{verdict="retry_scheduled"}[5m]))',
                    "{{dependency}} retries/s",
                ),
                (
                    'sum by (dependency) (increase(janus_job_transitions_total{verdict="dead"}[5m]))',
                    "{{dependency}} dead (5m)",
                ),
            ],
            width=8,
        ),
    ]


def leader() -> list[dict[str, Any]]:
    return [
        row("Leader"),
        panel(
            "Leader and term",
            [
                ("max(janus_leader_epoch * on (instance) janus_is_leader)", "epoch"),
                ("sum by (cause) (increase(janus_terms_ended_total[15m]))", "terms ended (15m): {{cause}}"),
            ],
            width=6,
        ),
        panel(
            "Tick duration",
            [
                ("histogram_quantile(0.99, sum by (le) (rate(janus_tick_seconds_bucket[5m])))", "p99"),
                ("histogram_quantile(0.5, sum by (le) (rate(janus_tick_seconds_bucket[5m])))", "p50"),
            ],
            unit="s",
            width=6,
        ),
        panel(
            "Messages per tick, and lingers",
            [
                ("sum(rate(janus_tick_messages_sum[5m])) / sum(rate(janus_tick_messages_count[5m]))", "mean"),
                ("sum(rate(janus_tick_lingers_total[5m]))", "lingers/s"),
            ],
            width=6,
            description="lingers: 5 ms waits before a tick for it to grow (service/linger.py); "
            "rising at a moderate rate, they sit in every job's path",
        ),
        panel(
            "Tick wait and write",
            [
                (
                    "histogram_quantile(0.99, sum by (le) (rate(janus_tick_wait_seconds_bucket[5m])))",
                    "wait p99",
                ),
                (
                    "histogram_quantile(0.5, sum by (le) (rate(janus_tick_wait_seconds_bucket[5m])))",
                    "wait p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(janus_tick_write_seconds_bucket[5m])))",
                    "write p99",
                ),
                (
                    "histogram_quantile(0.5, sum by (le) (rate(janus_tick_write_seconds_bucket[5m])))",
                    "write p50",
                ),
            ],
            unit="s",
            width=12,
            description="wait: a tick's first delivery in the inbox until the tick starts; "
            "write: the tick's statement and commit",
        ),
        panel(
            "Event-loop lag and GC pauses",
            [
                ("max by (instance) (janus_event_loop_lag_seconds)", "lag {{instance}}"),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(janus_gc_pause_seconds_bucket[5m])))",
                    "GC pause p99",
                ),
            ],
            unit="s",
            width=6,
        ),
    ]


def dashboard() -> dict[str, Any]:
    panels = [*overview(), *drill_down(), *fair_share(), *retry_control(), *leader()]
    x = y = 0
    for number, item in enumerate(panels, start=1):
        item["id"] = number
        grid = item["gridPos"]
        if x + grid["w"] > 24 or item["type"] == "row":
            x, y = 0, y + (8 if x else 0)
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        if item["type"] == "row":
            x, y = 0, y + 1
    return {
        "uid": "janus-overview",
        "title": "Janus",
        "tags": ["janus"],
        "timezone": "",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "dependency",
                    "label": "dependency",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(janus_held_slots, dependency)", "refId": "dependency"},
                    "definition": "label_values(janus_held_slots, dependency)",
                    "refresh": 2,
                    "includeAll": False,
                    "multi": False,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
