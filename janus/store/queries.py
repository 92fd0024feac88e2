"""Named SQL blocks from `sql/queries.sql`, loaded once, and the binding of named parameters.

Hand-rolled rather than aiosql: we want the exact text asyncpg prepares (plain
`$n` parameters, `unnest` arrays for batches) and nothing between the two; the
format is a few lines to read. See docs/decisions.md.

A block takes either positional `$n` parameters or named `:name` ones. A named block is
compiled to `$n` once, in the order its names first appear, and called with `bind(name,
params)`: each value is taken from the attribute of that name, so a statement with many
parameters cannot be passed them out of order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from importlib import resources

_BLOCK = re.compile(r"^-- name: (?P<name>[a-z_]+)\s*$", re.MULTILINE)
# `:name`, not the `::` of a cast (`$1::text[]`, `:ids::text[]`).
NAMED_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
_POSITIONAL = re.compile(r"\$\d")


@dataclass(frozen=True, slots=True)
class Query:
    text: str  # as asyncpg prepares it: `$n` parameters
    names: tuple[str, ...]  # a named block's parameters, $1 first; () for a positional block


def parse_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    matches = list(_BLOCK.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = "\n".join(
            line for line in text[match.end() : end].splitlines() if not line.lstrip().startswith("--")
        ).strip()
        name = match.group("name")
        if name in blocks:
            raise ValueError(f"query {name!r} is defined twice")
        if not body:
            raise ValueError(f"query {name!r} is empty")
        blocks[name] = body
    return blocks


def compile_named(name: str, text: str) -> Query:
    """`:name` parameters to `$n`, numbered in the order they first appear."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    compiled = NAMED_PARAMETER.sub(number, text)
    if names and _POSITIONAL.search(text):
        raise ValueError(f"query {name!r} mixes $n and :name parameters")
    return Query(text=compiled, names=tuple(names))


@cache
def queries() -> dict[str, str]:
    """Every block of every file in sql/ (queries.sql, steering.sql: one per subject)."""
    files = sorted(
        (
            entry
            for entry in resources.files("janus.store").joinpath("sql").iterdir()
            if entry.name.endswith(".sql")
        ),
        key=lambda entry: entry.name,
    )
    return parse_blocks("\n".join(entry.read_text(encoding="utf-8") for entry in files))


@cache
def query(name: str) -> Query:
    return compile_named(name, queries()[name])


def sql(name: str) -> str:
    """The text of a block, as asyncpg prepares it."""
    return query(name).text


def bind(name: str, params: object) -> list[object]:
    """The arguments of the named block `name`, in its order: each from `params`' attribute of
    that name. `params` (a dataclass) must have exactly the block's parameters."""
    names = query(name).names
    _check(name, type(params))
    return [getattr(params, parameter) for parameter in names]


_FITTING: set[tuple[str, type]] = set()  # (query, params class) pairs already checked


def _check(name: str, kind: type) -> None:
    if (name, kind) in _FITTING:
        return
    names = query(name).names
    if not names:
        raise ValueError(f"query {name!r} takes positional parameters, not named ones")
    given = {field.name for field in fields(kind)} if is_dataclass(kind) else set()
    if given != set(names):
        missing, extra = sorted(set(names) - given), sorted(given - set(names))
        raise ValueError(f"{kind.__name__} does not fit query {name!r}: missing {missing}, extra {extra}")
    _FITTING.add((name, kind))
