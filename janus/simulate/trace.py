"""A recorded trace of arrivals for `janus simulate`: a CSV of `t, job_id, dependency, scope`
and an optional `cost` (the estimate the job declares at submission), sorted by t."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from janus.errors import ConfigError

COLUMNS = ["t", "job_id", "dependency", "scope"]
COSTED_COLUMNS = [*COLUMNS, "cost"]


class TraceError(ConfigError):
    """A trace that cannot be read: one line naming the key, the file and the line."""


class Trace(NamedTuple):
    jobs: tuple[tuple[float, str, str, str], ...]  # (t, job_id, dependency, scope), in time order
    costs: Mapping[str, float]  # job_id -> its declared cost, for the rows that give one


def read_trace(path: Path, key: str) -> Trace:
    """The trace at `path` (a header row naming the columns is optional; an empty scope is
    `default`; an empty cost, or no cost column, leaves the job the stream's cost)."""
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
    except OSError as exc:
        raise TraceError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{key}: {path} is not UTF-8 text") from None
    first_line = 1
    if rows and [cell.strip() for cell in rows[0]] in (COLUMNS, COSTED_COLUMNS):
        rows = rows[1:]
        first_line = 2
    jobs: list[tuple[float, str, str, str]] = []
    costs: dict[str, float] = {}
    for number, row in enumerate(rows, start=first_line):
        if not row or not "".join(row).strip():
            continue
        where = f"{key}: {path.name} line {number}"
        if len(row) not in (4, 5):
            raise TraceError(f"{where}: expected t, job_id, dependency, scope (and optionally cost)")
        t_text, job_id, dependency, scope = (cell.strip() for cell in row[:4])
        try:
            t = float(t_text)
        except ValueError:
            raise TraceError(f"{where}: t {t_text!r} is not a number") from None
        if not math.isfinite(t) or t < 0:
            raise TraceError(f"{where}: t must be a non-negative number")
        if not job_id:
            raise TraceError(f"{where}: job_id is empty")
        cost_text = row[4].strip() if len(row) == 5 else ""
        if cost_text:
            try:
                cost = float(cost_text)
            except ValueError:
                raise TraceError(f"{where}: cost {cost_text!r} is not a number") from None
            if not math.isfinite(cost) or cost < 0:
                raise TraceError(f"{where}: cost must be a non-negative number")
            costs[job_id] = cost
        jobs.append((t, job_id, dependency, scope or "default"))
    jobs.sort(key=lambda job: job[0])
    return Trace(tuple(jobs), costs)
