"""Named SQL blocks from `sql/queries.sql`, loaded once.

Hand-rolled rather than aiosql: we want the exact text asyncpg prepares (plain
`$n` parameters, `unnest` arrays for batches) and nothing between the two; the
format is a few lines to read. See docs/decisions.md.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_BLOCK = re.compile(r"^-- name: (?P<name>[a-z_]+)\s*$", re.MULTILINE)


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


@cache
def queries() -> dict[str, str]:
    text = resources.files("janus.store").joinpath("sql/queries.sql").read_text(encoding="utf-8")
    return parse_blocks(text)


def sql(name: str) -> str:
    return queries()[name]
