"""The /metrics exposition, kept between scrapes: a series' line is formatted again only when its
value changed.

prometheus_client's encoders build a sample object per series and format its name, labels and
value anew on every scrape: with 100 dependencies that is thousands of series, tens of
milliseconds of Python on the HTTP server's thread, and that thread shares the interpreter lock
with the leader's event loop (benchmarks/status_cost.py). Here each series' line is kept with the
value it shows; a scrape reads the values, compares them, and formats only the lines whose value
changed. The text is byte for byte what the library's encoders give (tests/unit/test_exposition.py
compares them on every metric Janus declares).

Gauges and counters with plain values (what Janus's leader declares, almost all of its series)
take that path; anything else (histograms, a gauge with `set_function`, a foreign collector, a
name or label outside the legacy character set, an exemplar) is encoded by the library itself,
one collector at a time. `read` gives /status the same values, read the same way. This reads
prometheus_client's metric objects (their children and values), which its public API does not
expose: a test fails if that ever changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, metrics, values
from prometheus_client import generate_latest as text_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES, VALUES
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LEGACY_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
OPENMETRICS_EOF = "# EOF\n"
GO_MEMO = 4096  # values whose text is remembered, at most
_GO: dict[float, str] = {}
_float_to_go: Callable[[float], str] = floatToGoString


class _Collected:
    """Metrics already collected, as the library's encoders take a registry."""

    def __init__(self, collected: Iterable[Metric]) -> None:
        self._collected = list(collected)

    def collect(self) -> list[Metric]:
        return self._collected


def _encode(collected: Iterable[Metric], openmetrics: bool) -> str:
    """What the library's encoder of that format writes for these metrics (no # EOF)."""
    encoder = openmetrics_encoder if openmetrics else text_encoder
    text: bytes = encoder(_Collected(collected))
    return text.decode().removesuffix(OPENMETRICS_EOF)


def _escape(value: str) -> str:
    """A label value as both text formats write it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _prefix(name: str, labelnames: tuple[str, ...], labelvalues: tuple[str, ...]) -> str:
    if not labelnames:
        return f"{name} "
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(zip(labelnames, labelvalues, strict=True)))
    return f"{name}{{{labels}}} "


def _go(value: float) -> str:
    """floatToGoString, remembered: most values that change are small counts seen before."""
    text = _GO.get(value)
    if text is None or not value:  # 0.0 and -0.0 are one key but two texts
        if len(_GO) >= GO_MEMO:
            _GO.clear()
        text = _GO[value] = _float_to_go(value)
    return text


class _Column:
    """The lines of one sample name of a family (x, x_total or x_created), in series order."""

    def __init__(self, name: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.labelnames = name, labelnames
        self.keys: list[tuple[str, ...]] = []  # the series' label values
        self.values: list[float] = []
        self.prefixes: list[str] = []
        self.lines: list[str] = []

    def update(self, keys: list[tuple[str, ...]], values: list[float]) -> bool:
        """Take the series' current values; False if no line changed."""
        if keys == self.keys:
            if values == self.values:
                return False
            self.lines = [
                line if value == was else f"{prefix}{_go(value)}\n"
                for prefix, value, was, line in zip(
                    self.prefixes, values, self.values, self.lines, strict=True
                )
            ]
        else:  # series came or went: find each one's line by its labels
            known = dict(
                zip(self.keys, zip(self.prefixes, self.values, self.lines, strict=True), strict=True)
            )
            prefixes, lines = [], []
            for key, value in zip(keys, values, strict=True):
                kept = known.get(key)
                if kept is None:
                    prefix = _prefix(self.name, self.labelnames, key)
                    line = f"{prefix}{_go(value)}\n"
                else:
                    prefix, was, line = kept
                    if value != was:
                        line = f"{prefix}{_go(value)}\n"
                prefixes.append(prefix)
                lines.append(line)
            self.keys, self.prefixes, self.lines = keys, prefixes, lines
        self.values = values
        return True


class _Family:
    """The kept text of one gauge or counter (labelled or not), in one of the two formats."""

    def __init__(self, metric: Any, openmetrics: bool) -> None:
        self.metric = metric
        self.openmetrics = openmetrics
        self.counter = isinstance(metric, Counter)
        labelnames = tuple(metric._labelnames)
        name = metric._name
        self.value = _Column(f"{name}_total" if self.counter else name, labelnames)
        self.created = _Column(f"{name}_created", labelnames)
        self.header, self.created_header = self._headers()
        self.with_created = False
        self.text = ""
        self.stale = True

    def _headers(self) -> tuple[str, str]:
        """The family's HELP and TYPE lines (and those of the text format's _created family), as
        the library writes them."""
        metric = self.metric
        family = Metric(metric._name, metric._documentation, metric._type)
        if not self.counter or self.openmetrics:
            return _encode([family], self.openmetrics), ""
        family.add_sample(self.value.name, {}, 0.0)
        family.add_sample(self.created.name, {}, 0.0)
        lines = _encode([family], False).splitlines(keepends=True)
        return "".join(lines[:2]), "".join(lines[3:5])  # HELP, TYPE, x_total, HELP, TYPE, x_created

    def render(self) -> str:
        metric = self.metric
        if metric._labelnames:
            with metric._lock:  # the leader's thread adds and removes series
                children = metric._metrics.copy()
        else:
            children = {(): metric}
        keys = list(children)
        # The value without its lock: reading one attribute is atomic, and a lock per series
        # would cost more than the rest of the line.
        stale = self.value.update(keys, [child._value._value for child in children.values()])
        with_created = self.counter and bool(metrics._use_created)
        if with_created:
            stale |= self.created.update(keys, [child._created for child in children.values()])
        if stale or self.stale or with_created != self.with_created:
            self.text = self._joined(with_created)
            self.stale, self.with_created = False, with_created
        return self.text

    def _joined(self, with_created: bool) -> str:
        lines = self.value.lines
        if not with_created:
            return self.header + "".join(lines)
        created = self.created.lines
        if self.openmetrics:  # each series' _total, then its _created
            return self.header + "".join(chain.from_iterable(zip(lines, created, strict=True)))
        if not lines:
            return self.header
        return self.header + "".join(lines) + self.created_header + "".join(created)


def _kept(collector: Collector) -> bool:
    """Whether this module can keep the collector's lines (else the library encodes it)."""
    if type(collector) not in (Gauge, Counter):
        return False
    metric: Any = collector
    if metric._unit or not LEGACY_NAME.match(metric._name):
        return False
    if not all(LEGACY_NAME.match(n) and ":" not in n for n in metric._labelnames):
        return False
    return "_child_samples" not in vars(metric)  # set_function replaces it on the instance


def _exemplars(metric: Any) -> bool:
    if metric._labelnames:
        with metric._lock:
            children = list(metric._metrics.values())
    else:
        children = [metric]
    return any(child._value._exemplar is not None for child in children)


def kept_format(encoder: Callable[..., bytes]) -> bool | None:
    """Which format `Exposition` writes exactly as `encoder` (from prometheus_client's
    choose_encoder) does: False the text format, True OpenMetrics 1.0.0, None neither (an escaping
    that rewrites even legacy names, another OpenMetrics version: the library encodes those)."""
    keywords: dict[str, Any] = {}
    if isinstance(encoder, partial):
        if encoder.args:
            return None
        keywords = dict(encoder.keywords)
        encoder = encoder.func
    if keywords.get("escaping", UNDERSCORES) not in (UNDERSCORES, ALLOWUTF8, VALUES):
        return None
    if encoder is text_encoder and keywords.keys() <= {"escaping"}:
        return False
    if encoder is openmetrics_encoder and keywords.get("version", "1.0.0") == "1.0.0":
        return True
    return None


class Exposition:
    """The registry in one of the two text formats, keeping each series' line between scrapes.
    Not thread-safe: one per format, used from the HTTP server's thread."""

    def __init__(self, registry: CollectorRegistry, *, openmetrics: bool = False) -> None:
        self._registry = registry
        self._openmetrics = openmetrics
        self._families: dict[int, _Family] = {}

    def render(self) -> bytes:
        registry: Any = self._registry
        if values.ValueClass is not values.MutexValue or registry._target_info:
            encoder = openmetrics_encoder if self._openmetrics else text_encoder
            return bytes(encoder(registry))  # multiprocess mode, target info: the library's way
        with registry._lock:
            collectors = list(registry._collector_to_names)
        out: list[str] = []
        families: dict[int, _Family] = {}
        for collector in collectors:
            family = self._families.get(id(collector))
            if family is None or family.metric is not collector:
                family = _Family(collector, self._openmetrics) if _kept(collector) else None
            if family is None or (self._openmetrics and family.counter and _exemplars(collector)):
                out.append(_encode(collector.collect(), self._openmetrics))
                continue
            families[id(collector)] = family
            out.append(family.render())
        self._families = families
        if self._openmetrics:
            out.append(OPENMETRICS_EOF)
        return "".join(out).encode()


@dataclass(frozen=True, kw_only=True, slots=True)
class Series:
    """The series of one sample name: their label names, and each one's label values and value."""

    labelnames: tuple[str, ...]
    keys: list[tuple[str, ...]]  # label values, in labelnames' order
    values: list[float]


def read(registry: CollectorRegistry, names: Collection[str]) -> dict[str, Series]:
    """The series of these sample names (x, x_total, x_created) as a scrape would show them, read
    as the kept exposition reads them: no sample object per series (what /status reads)."""
    found: dict[str, Series] = {}
    some: Any = registry
    with some._lock:
        collectors = {name: some._names_to_collectors.get(name) for name in names}
    plain = values.ValueClass is values.MutexValue
    for name, collector in collectors.items():
        if collector is None:
            continue
        series = _read_kept(collector, name) if plain and _kept(collector) else None
        found[name] = series if series is not None else _read_collected(collector, name)
    return found


def _read_kept(metric: Any, name: str) -> Series | None:
    if metric._labelnames:
        with metric._lock:
            children = metric._metrics.copy()
    else:
        children = {(): metric}
    counter = isinstance(metric, Counter)
    if name == (f"{metric._name}_total" if counter else metric._name):
        numbers = [child._value._value for child in children.values()]
    elif counter and name == f"{metric._name}_created" and metrics._use_created:
        numbers = [child._created for child in children.values()]
    else:
        return None
    return Series(labelnames=tuple(metric._labelnames), keys=list(children), values=numbers)


def _read_collected(collector: Collector, name: str) -> Series:
    """The library's way: collect, keep the samples of that name (their label names sorted)."""
    labelnames: tuple[str, ...] = ()
    keys: list[tuple[str, ...]] = []
    numbers: list[float] = []
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == name:
                labelnames = tuple(sorted(sample.labels))
                keys.append(tuple(sample.labels[n] for n in labelnames))
                numbers.append(sample.value)
    return Series(labelnames=labelnames, keys=keys, values=numbers)
