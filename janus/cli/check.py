"""`janus check-config`: validate a policy file and say what it means."""

from __future__ import annotations

import argparse
from typing import Any

from janus.cli.common import config_of, with_config
from janus.config import Settings, describe_rate_limits, format_duration


def add_parsers(commands: Any) -> None:
    with_config(commands.add_parser("check-config", help="validate a configuration file"))


async def check_config(args: argparse.Namespace, settings: Settings) -> int:
    config = config_of(args, settings)
    retention = config.retention_policies()
    for policy in config.policies():
        limits = ", ".join(str(limit) for limit in policy.rate_limits) or "no rate limit"
        concurrency = policy.concurrency if policy.concurrency is not None else "unlimited"
        print(
            f"{policy.name}: {limits}; concurrency {concurrency}; lease {policy.lease_timeout:g}s; "
            f"admission ttl {policy.admission_ttl:g}s; up to {policy.retry.max_attempts} attempts"
        )
        for line in describe_rate_limits(policy):
            print(f"  {line}")
        retry, circuit = policy.retry, policy.circuit
        opens = (
            f"circuit opens at {circuit.failure_threshold:.0%} failed of >= {circuit.min_outcomes} outcomes "
            f"in {circuit.window:g}s, for {circuit.open_for:g}s..{circuit.max_open_for:g}s, "
            f"{circuit.half_open_probes} probes"
            if circuit.enabled
            else "no circuit"
        )
        print(
            f"  retries <= {retry.budget:.0%} of admissions per {retry.budget_window:g}s "
            f"(at least {retry.min_retries}); retry_after up to {retry.max_retry_after:g}s; {opens}"
        )
        kept = retention.of(policy.name)
        print(
            f"  keeps succeeded jobs {format_duration(kept.succeeded)}, dead jobs {format_duration(kept.dead)}; "
            f"a job_id repeated within {format_duration(kept.dedup_window)} of its job finishing is a duplicate"
        )
        recovery = policy.recovery
        print(
            f"  after an outage: ramp from {recovery.start:.0%} of capacity over {recovery.ramp:g}s"
            if recovery.ramp > 0
            else "  after an outage: no recovery ramp"
        )
    print("configuration is valid")
    return 0
