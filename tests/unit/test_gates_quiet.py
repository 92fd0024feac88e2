"""`DependencyGates.quiet` is `block`'s fast answer on the admission step's hot path: whenever it
says quiet, `block` must find nothing, over any history of outcomes, pauses and worker counts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from janus.core.gates import DependencyGates
from janus.core.policy import CircuitPolicy, DependencyPolicy

POLICY = DependencyPolicy(
    name="api",
    admission_ttl=1.0,
    lease_timeout=30.0,
    circuit=CircuitPolicy(min_outcomes=3, window=10.0, open_for=2.0),
)

events = st.lists(
    st.one_of(
        st.tuples(st.just("outcome"), st.booleans()),
        st.tuples(st.just("pause"), st.floats(min_value=0.1, max_value=5.0)),
        st.tuples(st.just("workers"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=4.0)),
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(events)
def test_whenever_the_gates_are_quiet_block_finds_nothing(history: list[tuple[str, object]]) -> None:
    gates = DependencyGates(POLICY)
    now = 0.0
    for kind, value in history:
        if kind == "outcome":
            assert isinstance(value, bool)
            gates.on_outcome(failed=value, admitted_at=now, now=now)
        elif kind == "pause":
            assert isinstance(value, float)
            gates.pause(value, now)
        elif kind == "workers":
            assert isinstance(value, int)
            gates.workers.observe(value, "janus.ready.api")
        else:
            assert isinstance(value, float)
            now += value
        if gates.quiet():
            assert gates.block(now) is None
