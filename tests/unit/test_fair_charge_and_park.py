"""`FairQueue.charge_and_park` (a scope served its last job) must leave the queue as `charge`
then `park` would: the same turns, passes and virtual time, whatever happens next."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from janus.core.fairness import FairQueue, stride

KEYS = ["a", "b", "c", "d"]
WEIGHTS = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 0.5}

# An operation: ("activate", key), ("park", key), or ("serve", last?) for the scope whose turn it is.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("activate"), st.sampled_from(KEYS)),
        st.tuples(st.just("park"), st.sampled_from(KEYS)),
        st.tuples(st.just("serve"), st.booleans()),
    ),
    max_size=300,
)


def seen(queue: FairQueue[str]) -> tuple[object, ...]:
    return (
        queue.peek(),
        sorted(queue.eligible()),
        {key: queue.pass_of(key) for key in KEYS},
        queue.virtual_time,
        len(queue),
    )


@settings(max_examples=300)
@given(operations)
def test_charge_and_park_is_charge_then_park(ops: list[tuple[str, object]]) -> None:
    combined: FairQueue[str] = FairQueue()
    apart: FairQueue[str] = FairQueue()
    for op, arg in ops:
        if op == "activate":
            assert isinstance(arg, str)
            combined.activate(arg)
            apart.activate(arg)
        elif op == "park":
            assert isinstance(arg, str)
            combined.park(arg)
            apart.park(arg)
        else:
            key = combined.peek()
            assert key == apart.peek()
            if key is None:
                continue
            step = stride(WEIGHTS[key])
            if arg:  # its last job: it leaves the queue
                combined.charge_and_park(key, step)
                apart.charge(key, step)
                apart.park(key)
            else:
                combined.charge(key, step)
                apart.charge(key, step)
        assert seen(combined) == seen(apart)
