"""`janus simulate` runs with automatic garbage collection paused (`Simulation.run`): that is only
safe while a run makes no reference cycles, whose memory nothing but the collector frees."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from janus.config import load_config
from janus.core.policy import DependencyPolicy
from janus.simulate.engine import _DRAIN_EVERY, simulate
from janus.simulate.workload import Workload, load_workload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "simulate"


@pytest.fixture
def collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


def example(name: str) -> tuple[list[DependencyPolicy], Workload]:
    policies = load_config(EXAMPLES / "policy.toml").policies()
    return policies, load_workload(EXAMPLES / name, [policy.name for policy in policies])


# Each example drives other parts of the core and the engine: a backlog paged in from the store
# with fair share and steady traffic; a trace; an outage with retries, throttling, a circuit
# and retry_after pauses.
@pytest.mark.parametrize("name", ["tenants.toml", "trace.toml", "outage.toml"])
def test_a_run_leaves_no_reference_cycles(name: str, collector_restored: None) -> None:
    policies, workload = example(name)
    gc.collect()
    gc.disable()
    outcome = simulate(policies, workload, seed=3, timeline=True)
    assert outcome.jobs > 0
    assert outcome.ticks > _DRAIN_EVERY or name != "tenants.toml"  # the periodic drain ran too
    del outcome
    assert gc.collect() == 0  # every object of the run was freed by its reference count


@pytest.mark.parametrize("enabled", [True, False])
def test_a_run_leaves_the_collector_as_it_found_it(enabled: bool, collector_restored: None) -> None:
    policies, workload = example("trace.toml")
    if enabled:
        gc.enable()
    else:
        gc.disable()
    simulate(policies, workload, seed=1)
    assert gc.isenabled() is enabled
