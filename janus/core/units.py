"""Rate limits in units of cost (tokens, credits, items): charged at admission, settled by the result.

A job declares an estimated `cost`; each admission charges it in every unit window of its
dependency. When the worker reports the actual cost, the admission's charge is replaced by it
in the window it was charged in (`settle`): an over-estimate gives units back, an under-estimate
charges the rest. An admission goes only if its estimate fits in every window beside what they
hold (estimates of unsettled admissions, actual costs of settled ones).

Units are counted in integer thousandths (`UNIT_SCALE`): sums of floats would drift, and a window
that believes it holds 0.0000001 units more than it does refuses an admission that fits.

The windows are exact sliding logs over the span of `RateLimit.admission_window`, like
`core/rate.py`, with one entry per admission carrying its units, and the running sum.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from janus.core.policy import DependencyPolicy, RateLimit

UNIT_SCALE = 1000  # units are counted in thousandths: a cost is exact to 0.001

Key = tuple[str, int]  # (job_id, attempt): the admission a charge belongs to


def scaled(cost: float) -> int:
    """A cost in thousandths of a unit (the windows' integer currency)."""
    return round(cost * UNIT_SCALE)


def describe_window(seconds: float) -> str:
    """A window as a policy writes it ("1m", "1s", "250ms"): `janus why` names the limit so."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _amount(thousandths: int) -> str:
    """Units for people: 88,400 or 12.5 (thousandths only when there are some)."""
    return (
        f"{thousandths // UNIT_SCALE:,}"
        if thousandths % UNIT_SCALE == 0
        else f"{thousandths / UNIT_SCALE:,.3g}"
    )


class _Charge:
    """One admission's charge in one window: its units change once, when the result settles it,
    and its end once, when the result tells when the call had started (`UnitWindow.trim`)."""

    __slots__ = ("at", "end", "key", "units")

    def __init__(self, at: float, end: float, key: Key, units: int) -> None:
        self.at, self.end, self.key, self.units = at, end, key, units


def _end(charge: _Charge) -> float:
    return charge.end


class UnitWindow:
    """The charges of one unit limit that still fall inside its span, and their sum.

    Kept sorted by their end (a list with a moving head, like `core/rate.py`): an admission's
    charge ends `span` after it, or earlier once trimmed."""

    __slots__ = ("_by_key", "_entries", "_head", "capacity", "limit", "span", "used")

    def __init__(self, limit: RateLimit, span: float) -> None:
        if span <= 0:
            raise ValueError("a window's span must be positive")
        self.limit = limit
        self.span = span
        self.capacity = limit.count * UNIT_SCALE
        self._entries: list[_Charge] = []  # by end; those before `_head` have ended
        self._head = 0
        self._by_key: dict[Key, _Charge] = {}  # unsettled charges, to settle by admission
        self.used = 0

    def _prune(self, now: float) -> None:
        entries, by_key, head = self._entries, self._by_key, self._head
        size = len(entries)
        while head < size and entries[head].end <= now:
            charge = entries[head]
            head += 1
            self.used -= charge.units
            if by_key.get(charge.key) is charge:
                del by_key[charge.key]
        if head > 32 and head * 2 > size:
            del entries[:head]
            head = 0
        self._head = head

    def room(self, now: float) -> int:
        """Thousandths of a unit that fit at `now`."""
        self._prune(now)
        return self.capacity - self.used

    def charge(self, at: float, key: Key, units: int) -> None:
        # The latest end yet: `at` never decreases, and a trimmed end is only earlier.
        charge = _Charge(at, at + self.span, key, units)
        self._entries.append(charge)
        self._by_key[key] = charge
        self.used += units

    def settle(self, key: Key, units: int) -> int:
        """Replace the charge of admission `key` by `units` (its actual cost), if the window still
        holds it; returns the difference charged (negative: given back)."""
        charge = self._by_key.pop(key, None)
        if charge is None:
            return 0
        delta = units - charge.units
        charge.units = units
        self.used += delta
        return delta

    def trim(self, key: Key, started_by: float) -> None:
        """Admission `key` started its call by `started_by`: its charge ends T after that, never
        before T after its admission nor later than before (`SlidingWindow.trim`). Only an
        unsettled charge is found: trim before settling."""
        charge = self._by_key.get(key)
        if charge is None:
            return
        end = min(charge.end, max(charge.at, started_by) + self.limit.window)
        if end >= charge.end:
            return
        entries = self._entries
        index = bisect_left(entries, charge.end, self._head, key=_end)
        while entries[index] is not charge:  # among the charges that end at the same time
            index += 1
        del entries[index]
        charge.end = end
        insort(entries, charge, self._head, key=_end)

    def free_at(self, now: float, units: int) -> float:
        """The earliest time at which `units` more fit (inf if they never can)."""
        if units > self.capacity:
            return float("inf")
        self._prune(now)
        need = self.used + units - self.capacity
        if need <= 0:
            return now
        entries = self._entries
        for index in range(self._head, len(entries)):
            charge = entries[index]
            need -= charge.units
            if need <= 0:
                return charge.end
        return now  # unreachable: every charge gone leaves room for `units` <= capacity

    def restore(self, charges: Iterable[tuple[float, Key, int]]) -> None:
        """Reload charges (at, key, units) after a restart or a takeover, in any order. Admission
        times only: a trimmed charge comes back whole, which errs on the safe side."""
        merged = sorted([*self.charges(), *charges], key=lambda charge: charge[0])
        self._entries, self._head, self._by_key, self.used = [], 0, {}, 0
        for at, key, units in merged:
            self.charge(at, key, units)

    def charges(self) -> list[tuple[float, Key, int]]:
        return [(charge.at, charge.key, charge.units) for charge in self._entries[self._head :]]


@dataclass(frozen=True, kw_only=True, slots=True)
class UnitUse:
    """One unit limit's use at a moment, in units: for metrics and `janus why`."""

    limit: RateLimit
    used: float


class UnitLimits:
    """Every unit limit of one dependency, and the estimate that stopped its last admission."""

    __slots__ = ("stopped", "windows")

    def __init__(self, limits: Sequence[RateLimit], admission_ttl: float) -> None:
        self.windows = [UnitWindow(limit, limit.admission_window(admission_ttl)) for limit in limits]
        # Thousandths of the job whose turn it was and did not fit: `block` asks for them until
        # they fit (a hint: the job may have gone since, which only delays by one window at most).
        self.stopped: int | None = None

    def fits(self, now: float, units: int) -> bool:
        return all(window.room(now) >= units for window in self.windows)

    def never_fits(self, units: int) -> bool:
        return any(units > window.capacity for window in self.windows)

    def charge(self, at: float, key: Key, units: int) -> None:
        for window in self.windows:
            window.charge(at, key, units)

    def settle(self, key: Key, units: int) -> int:
        """The actual cost of admission `key`: the difference (in thousandths) charged in the window
        that charged the estimate the longest (the others hold it too, or have let it go)."""
        return max((window.settle(key, units) for window in self.windows), key=abs, default=0)

    def trim(self, key: Key, started_by: float) -> None:
        for window in self.windows:
            window.trim(key, started_by)

    def free_at(self, now: float, units: int) -> float:
        return max((window.free_at(now, units) for window in self.windows), default=now)

    def blocking(self, now: float) -> UnitWindow | None:
        """The window the stopped job's estimate does not fit in at `now`, if any."""
        units = self.stopped
        if units is None:
            return None
        for window in self.windows:
            if window.room(now) < units:
                return window
        self.stopped = None
        return None

    def detail(self, now: float) -> str | None:
        """What `janus why` says of the unit limit that stops the dependency: '90000 units/1m: 88,400
        used, frees 1,200 in 3.2 s'."""
        window = self.blocking(now)
        if window is None or self.stopped is None:
            return None
        limit = window.limit
        need = window.used + self.stopped - window.capacity
        wait = window.free_at(now, self.stopped) - now
        return (
            f"{limit.count} units/{describe_window(limit.window)}: {_amount(window.used)} used, "
            f"frees {_amount(need)} in {wait:.1f} s"
        )

    def uses(self, now: float) -> list[UnitUse]:
        return [UnitUse(limit=w.limit, used=(w.capacity - w.room(now)) / UNIT_SCALE) for w in self.windows]

    def rebuilt(self, limits: Sequence[RateLimit], admission_ttl: float) -> UnitLimits:
        """New windows for new limits (a policy change), holding the charges the old ones held."""
        longest = max(self.windows, key=lambda window: window.span, default=None)
        fresh = UnitLimits(limits, admission_ttl)
        if longest is not None:
            for window in fresh.windows:
                window.restore(longest.charges())
        return fresh

    def same(self, limits: Sequence[RateLimit], admission_ttl: float) -> bool:
        return [(w.limit, w.span) for w in self.windows] == [
            (x, x.admission_window(admission_ttl)) for x in limits
        ]


def cost_refusal(policy: DependencyPolicy, cost: float) -> str | None:
    """Why a job of this cost can never be admitted (above `max_cost`, or above a unit limit's
    COUNT, which no window can ever hold), or None: the intake sets such a job aside."""
    if policy.max_cost is not None and cost > policy.max_cost:
        return f"cost {cost:g} is above max_cost {policy.max_cost:g} of {policy.name!r}"
    for limit in policy.unit_limits:
        if scaled(cost) > limit.count * UNIT_SCALE:
            return f"cost {cost:g} can never fit the unit limit {limit} of {policy.name!r}"
    return None
