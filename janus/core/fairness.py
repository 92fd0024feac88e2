"""Weighted fair share between the scopes of one dependency (stride scheduling).

Each scope carries a virtual time `pass`: every admission advances it by the
scope's stride, 1 / weight. The next admission goes to the eligible scope with
the smallest pass (ties: the one that queued first). A scope that becomes
eligible starts at max(its own pass, V), where V is the pass of the latest
admission: idleness earns no credit, and leaving and coming back earns none
either. docs/fairness.md derives the bounds this gives:

- two scopes eligible throughout an interval get admissions a_i, a_j with
  |a_i/w_i - a_j/w_j| <= 1/w_i + 1/w_j;
- a scope that becomes eligible is served within (number of eligible scopes)
  admissions.

Passes are integers (strides of SCALE / weight, rounded): float sums would drift,
and a drift of one ulp is enough to reorder two scopes that should tie.

Every operation is O(log eligible scopes) amortised: the heap is lazy (stale
entries are skipped when they surface), and the pass of an idle scope is
forgotten once V has caught up with it, when it no longer matters.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

SCALE = 1 << 40  # the stride of weight 1

# Heap entries are single ints, pass << TOKEN_BITS | token, which order exactly as the pairs
# (pass, token) (passes are >= 0, tokens < 2**64). Comparing two ints is much cheaper than
# comparing tuples, and every admission pays O(log scopes) comparisons: with many scopes they
# are most of the cost of a decision (benchmarks/fairness_core.py).
TOKEN_BITS = 64
TOKEN_MASK = (1 << TOKEN_BITS) - 1


@functools.lru_cache(maxsize=1024)
def stride(weight: float) -> int:
    """Virtual time one admission costs a scope of this weight."""
    return max(1, round(SCALE / weight))


class FairQueue(Generic[K]):
    def __init__(self) -> None:
        self._pass: dict[K, int] = {}  # eligible scopes, and idle ones whose pass is still ahead of V
        self._token: dict[K, int] = {}  # eligible scopes -> the token of their live heap entry
        self._owner: dict[
            int, K
        ] = {}  # live tokens -> their scope; an entry whose token is not here is stale
        self._heap: list[int] = []  # pass << TOKEN_BITS | token
        self._idle: list[tuple[int, int, K]] = []  # (pass, token, scope) of parked scopes, to forget
        self._tokens = itertools.count()
        self.virtual_time = 0

    def __len__(self) -> int:
        return len(self._token)

    def __contains__(self, key: object) -> bool:
        return key in self._token

    def eligible(self) -> list[K]:
        return list(self._token)

    def pass_of(self, key: K) -> int | None:
        return self._pass.get(key)

    def activate(self, key: K) -> None:
        """`key` has something to admit again (no-op if it is already eligible)."""
        if key in self._token:
            return
        start = max(self._pass.get(key, self.virtual_time), self.virtual_time)
        self._push(key, start)

    def park(self, key: K) -> None:
        """`key` has nothing admissible now; its pass is kept while it is ahead of V."""
        token = self._token.pop(key, None)
        if token is None:
            return
        del self._owner[token]
        self._keep_pass(key, token, self._pass[key])

    def _keep_pass(self, key: K, token: int, key_pass: int) -> None:
        """A scope out of the queue: its pass is kept (and forgotten later) while ahead of V."""
        if key_pass > self.virtual_time:
            self._pass[key] = key_pass
            heapq.heappush(self._idle, (key_pass, token, key))
        else:
            del self._pass[key]

    def peek(self) -> K | None:
        """The eligible scope with the smallest pass, or None."""
        heap, owner = self._heap, self._owner
        while heap:
            key = owner.get(heap[0] & TOKEN_MASK)
            if key is not None:
                return key
            heapq.heappop(heap)
        return None

    def serve(self, key: K, weight: float) -> None:
        """Charge one admission to `key`, which must be what `peek` returned."""
        self.peek()  # drops stale entries above the head (usually none: the caller peeked)
        self.charge(key, stride(weight))

    def charge(self, key: K, step: int) -> None:
        """`serve` with the stride worked out (`stride(weight)`), for the scheduler's hot path:
        the caller has just `peek`ed `key`, so the head of the heap is its live entry.
        `charge_and_park` repeats its first lines."""
        heap, owner = self._heap, self._owner
        served = heap[0] & TOKEN_MASK if heap else -1  # the token of the head entry
        if owner.get(served) != key:
            raise ValueError(f"{key!r} is not the scope whose turn it is")
        key_pass = self._pass[key]
        if key_pass > self.virtual_time:
            self.virtual_time = key_pass
        # The served entry is the head: replace it in one sift (heapreplace) rather than pop and
        # push. The heap does not grow, so no rebuild is due (only `activate` adds entries).
        token = next(self._tokens)
        key_pass += step
        self._pass[key] = key_pass
        del owner[served]
        self._token[key] = token
        owner[token] = key
        heapq.heapreplace(heap, key_pass << TOKEN_BITS | token)
        if self._idle and self._idle[0][0] <= self.virtual_time:
            self._forget_idle()

    def charge_and_park(self, key: K, step: int) -> None:
        """`charge(key, step)` and then `park(key)`, for a scope served its last job: the same
        state, but its entry leaves the heap at once instead of being pushed to go stale.
        Its first lines are `charge`'s (kept apart so that `charge`, once per admission of a
        backlog, pays for no branch): a change to one is a change to both."""
        heap, owner = self._heap, self._owner
        served = heap[0] & TOKEN_MASK if heap else -1
        if owner.get(served) != key:
            raise ValueError(f"{key!r} is not the scope whose turn it is")
        key_pass = self._pass[key]
        if key_pass > self.virtual_time:
            self.virtual_time = key_pass
        token = next(self._tokens)  # taken as `charge` takes it: the tokens after are the same
        del owner[served]
        heapq.heappop(heap)
        del self._token[key]
        self._keep_pass(key, token, key_pass + step)
        if self._idle and self._idle[0][0] <= self.virtual_time:
            self._forget_idle()

    def rank(self, key: K) -> int:
        """How many eligible scopes come before `key` (O(eligible); for explanations only)."""
        token = self._token.get(key)
        if token is None:
            return len(self._token)
        mine = (self._pass[key], token)
        return sum(1 for other, t in self._token.items() if (self._pass[other], t) < mine)

    def _push(self, key: K, key_pass: int) -> None:
        token = next(self._tokens)
        old = self._token.get(key)
        if old is not None:
            del self._owner[old]
        self._pass[key] = key_pass
        self._token[key] = token
        self._owner[token] = key
        heapq.heappush(self._heap, key_pass << TOKEN_BITS | token)
        if len(self._heap) > 2 * len(self._token) + 64:
            # Many stale entries (parks, re-activations): rebuild rather than let them pile up.
            self._heap = [self._pass[k] << TOKEN_BITS | t for k, t in self._token.items()]
            heapq.heapify(self._heap)

    def _forget_idle(self) -> None:
        idle = self._idle
        while idle and idle[0][0] <= self.virtual_time:
            _, _, key = heapq.heappop(idle)
            if key not in self._token and self._pass.get(key, self.virtual_time + 1) <= self.virtual_time:
                del self._pass[key]
