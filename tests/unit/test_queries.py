"""The SQL files: named blocks that parse, parameters that match their listing, migrations in order.

No database needed: these check the files themselves, and that the Python
calling them agrees with them (names exist, argument counts match).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest

import janus
from janus.errors import StoreError
from janus.store import migrate
from janus.store.migrate import available_migrations
from janus.store.queries import bind, compile_named, parse_blocks, queries, query, sql
from janus.store.session import RetryControlParams, TickParams

# Every file of sql/ (queries.sql, steering.sql), as the loader reads them.
RAW = "\n".join(
    entry.read_text(encoding="utf-8")
    for entry in sorted(resources.files("janus.store").joinpath("sql").iterdir(), key=lambda e: e.name)
    if entry.name.endswith(".sql")
)
# A parameter: positional ("$1") or named (":holder", never the "::" of a cast).
PARAM = re.compile(r"\$\d+|(?<![:\w]):[a-z_][a-z0-9_]*")


def raw_blocks() -> dict[str, list[str]]:
    """Each block's raw lines (comments included), split on every line that *looks* like a name line.

    Deliberately looser than `parse_blocks` ("-- name:" followed by anything), so that a
    name the loader's pattern would not recognise shows up as a difference.
    """
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in RAW.splitlines():
        match = re.match(r"^--\s*name\s*:\s*(.*?)\s*$", line)
        if match:
            name = match.group(1)
            assert name not in blocks, f"query {name!r} is defined twice in queries.sql"
            current = blocks[name] = []
        elif current is not None:
            current.append(line)
    return blocks


def listed_params(lines: list[str]) -> set[str] | None:
    """The parameters ("$1", ":holder") the "-- params:" comment and its indented continuation
    lines name; None if absent."""
    listed: set[str] | None = None
    for line in lines:
        if listed is None:
            if line.startswith("-- params:"):
                text = line.removeprefix("-- params:").strip()
                listed = set() if text == "none" else set(PARAM.findall(text))
                if text != "none":
                    assert listed, f"'-- params:' must list $n or :name, or say 'none', got {text!r}"
        elif re.match(r"^--\s{2,}[$:][\w]", line):  # "--         $7 expires_at, ..." or "--   :now, ..."
            listed |= set(PARAM.findall(line))
        else:
            break
    return listed


def used_params(lines: list[str]) -> set[str]:
    code = "\n".join(line.split("--", 1)[0] for line in lines)
    return set(PARAM.findall(code))


BLOCKS = raw_blocks()


def test_every_named_block_is_loaded() -> None:
    assert BLOCKS, "queries.sql has no named blocks"
    # Same names: nothing the loader skipped (e.g. a name with a capital or a digit), nothing extra.
    assert sorted(queries()) == sorted(BLOCKS)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_is_one_statement_without_comments(name: str) -> None:
    text = sql(name)
    assert text == compile_named(name, queries()[name]).text, "as written, or its :names numbered"
    assert text
    assert text.strip() == text
    assert not any(line.lstrip().startswith("--") for line in text.splitlines())
    # asyncpg prepares exactly one statement: a second one would fail only at run time.
    assert ";" not in text.rstrip(";"), f"{name} holds more than one statement"
    assert "{" not in text, f"{name} looks like a format string"


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_params_comment_lists_exactly_the_parameters_used(name: str) -> None:
    lines = BLOCKS[name]
    listed = listed_params(lines)
    assert listed is not None, f"{name} has no '-- params:' comment right after its name"
    used = used_params(lines)
    assert used == listed, f"{name}: uses {sorted(used)}, lists {sorted(listed)}"
    positional = {p for p in used if p.startswith("$")}
    assert not positional or positional == used, f"{name} mixes $n and :name parameters"
    # PostgreSQL infers a type for every $n up to the highest: a gap fails at PREPARE.
    assert positional == {f"${n}" for n in range(1, len(positional) + 1)}, (
        f"{name}: parameters are not $1..$n"
    )


# They call sql(name) themselves: janus/store/repository.py, janus/store/steering.py.
READ_HELPERS = {"_read", "_read_one", "_fetch"}


def _bound_to(arg: ast.expr) -> str | None:
    """The query name of a `*bind("name", params)` argument, if it is one."""
    if (
        isinstance(arg, ast.Starred)
        and isinstance(arg.value, ast.Call)
        and isinstance(arg.value.func, ast.Name)
        and arg.value.func.id == "bind"
        and isinstance(arg.value.args[0], ast.Constant)
    ):
        return str(arg.value.args[0].value)
    return None


def _sql_calls() -> list[tuple[str, int | None, str]]:
    """(query name, positional arguments passed with it or None if bound by name, where) for
    every `f(sql("name"), ...)` and every `self._read("name", ...)` in janus/."""
    found = []
    for path in Path(janus.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            first = node.args[0]
            if (
                # The store's read helpers: self._read("name", *params, what=...)
                isinstance(node.func, ast.Attribute)
                and node.func.attr in READ_HELPERS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                assert not any(isinstance(arg, ast.Starred) for arg in node.args)
                found.append((first.value, len(node.args) - 1, f"{path.name}:{node.lineno}"))
                continue
            if (
                isinstance(first, ast.Call)
                and isinstance(first.func, ast.Name)
                and first.func.id == "sql"
                and len(first.args) == 1
                and isinstance(first.args[0], ast.Constant)
            ):
                name, where = first.args[0].value, f"{path.name}:{node.lineno}"
                if len(node.args) == 2 and _bound_to(node.args[1]) is not None:
                    assert _bound_to(node.args[1]) == name, f"{where}: sql({name!r}) bound to another query"
                    found.append((name, None, where))
                    continue
                assert not any(isinstance(arg, ast.Starred) for arg in node.args)
                found.append((name, len(node.args) - 1, where))
    return found


SQL_CALLS = _sql_calls()


def test_the_code_uses_every_block_and_only_existing_ones() -> None:
    assert SQL_CALLS, "found no sql('...') calls: the scan is broken"
    assert {name for name, _, _ in SQL_CALLS} == set(queries())


@pytest.mark.parametrize(("name", "arguments", "where"), SQL_CALLS, ids=[w for _, _, w in SQL_CALLS])
def test_each_call_passes_as_many_arguments_as_the_block_has_parameters(
    name: str, arguments: int, where: str
) -> None:
    if arguments is None:  # bound by name: bind() checks its params class against the block
        assert query(name).names, f"{where}: {name!r} takes $n parameters, not named ones"
    else:
        assert not query(name).names, f"{where}: {name!r} takes named parameters: pass *bind({name!r}, ...)"
        assert arguments == len(used_params(BLOCKS[name])), (
            f"{where}: sql({name!r}) with {arguments} arguments"
        )


# -- parse_blocks -------------------------------------------------------------

PARSED = [
    # (text, expected blocks)
    ("", {}),  # nothing
    ("-- just a comment\nSELECT 1;\n", {}),  # SQL before any name belongs to no block
    ("-- name: a\nSELECT 1;\n", {"a": "SELECT 1;"}),  # one block
    (
        "-- name: a\n-- params: none\n-- why\nSELECT 1;\n\n-- name: b\nSELECT 2;",
        {"a": "SELECT 1;", "b": "SELECT 2;"},
    ),
    # ^ comments dropped, blocks end at the next name
    ("-- name: a\nSELECT 1 -- trailing note\n  FROM t;\n", {"a": "SELECT 1 -- trailing note\n  FROM t;"}),
    # ^ only whole comment lines are dropped
    (
        "-- name: a\nSELECT 1\n   -- indented comment\n FROM t;",
        {"a": "SELECT 1\n FROM t;"},
    ),  # indented comment
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse_blocks(text: str, expected: dict[str, str]) -> None:
    assert parse_blocks(text) == expected


BAD_TEXTS = [
    # (text, error)
    ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "query 'a' is defined twice"),  # duplicate
    ("-- name: a\n-- name: b\nSELECT 1;\n", "query 'a' is empty"),  # nothing before the next name
    (
        "-- name: a\n-- params: none\n-- only comments\n\n-- name: b\nSELECT 1;",
        "query 'a' is empty",
    ),  # comments only
    ("-- name: a\nSELECT 1;\n-- name: b\n   \n", "query 'b' is empty"),  # empty at the end
]


@pytest.mark.parametrize(("text", "error"), BAD_TEXTS)
def test_parse_blocks_refuses(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_blocks(text)


def test_unknown_query_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        sql("no_such_query")


# -- the checker itself -------------------------------------------------------

CHECKER = [
    # (block lines, listed, used): the helpers above must see what a reviewer would
    (["-- params: $1 a, $2 b", "SELECT $1, $2;"], {"$1", "$2"}, {"$1", "$2"}),  # plain
    (["-- params: none", "SELECT 1;"], set(), set()),  # none
    (["-- params: $1 a,", "--         $2 b", "SELECT $1, $2;"], {"$1", "$2"}, {"$1", "$2"}),  # continued
    (
        ["-- params: $1 a", "-- $2 is only mentioned here", "SELECT $1 -- $3 in a comment", ";"],
        {"$1"},
        {"$1"},
    ),
    # ^ a prose comment does not extend the listing; a trailing comment is not code
    (["-- params: $1", "SELECT $1, $10;"], {"$1"}, {"$1", "$10"}),  # $10 is ten, not one
    (["SELECT $1;"], None, {"$1"}),  # no listing at all
    (["-- params: :a,", "--     :b_2", "SELECT :a::int, :b_2;"], {":a", ":b_2"}, {":a", ":b_2"}),  # named
    (["-- params: :a (note: text)", "SELECT :a::text[];"], {":a"}, {":a"}),  # a cast and a colon in prose
]


@pytest.mark.parametrize(("lines", "listed", "used"), CHECKER)
def test_param_helpers(lines: list[str], listed: set[str] | None, used: set[str]) -> None:
    assert listed_params(lines) == listed
    assert used_params(lines) == used


# -- named parameters -----------------------------------------------------------


def test_named_parameters_are_numbered_in_the_order_they_first_appear() -> None:
    compiled = compile_named("q", "SELECT :b::int[], :a, x::text FROM t WHERE y = :b")
    assert compiled.text == "SELECT $1::int[], $2, x::text FROM t WHERE y = $1"
    assert compiled.names == ("b", "a")
    assert compile_named("q", "SELECT $1::int").names == ()
    with pytest.raises(ValueError, match="mixes"):
        compile_named("q", "SELECT :a, $2")


@pytest.mark.parametrize(
    ("name", "params"), [("tick", TickParams), ("tick_retry_control", RetryControlParams)]
)
def test_each_params_class_has_exactly_its_statements_parameters(name: str, params: type) -> None:
    # bind() refuses a class that does not fit; this says so without a database.
    assert {f.name for f in dataclasses.fields(params)} == set(query(name).names)


def test_bind_takes_each_value_by_its_name() -> None:
    params = RetryControlParams.of(7.0, [], [])
    arguments = bind("tick_retry_control", params)
    assert arguments == [getattr(params, name) for name in query("tick_retry_control").names]
    assert arguments[query("tick_retry_control").names.index("now")] == 7.0

    @dataclasses.dataclass
    class Short:
        now: float

    with pytest.raises(ValueError, match="missing"):
        bind("tick_retry_control", Short(now=1.0))
    with pytest.raises(ValueError, match="positional"):
        bind("load_pages", params)


# -- migrations ---------------------------------------------------------------


def test_available_migrations_are_numbered_one_to_n() -> None:
    found = available_migrations()
    assert found, "no migrations"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    for migration in found:
        assert re.fullmatch(r"[a-z0-9_]+", migration.name)
        assert migration.sql.strip()
    assert found[0].name == "initial"
    assert "CREATE TABLE janus.jobs" in found[0].sql


def test_every_file_in_migrations_is_a_migration() -> None:
    # A misnamed file ("2_add_index.sql", "0002-add.sql") would be skipped without a word.
    files = [e.name for e in resources.files("janus.store").joinpath("migrations").iterdir() if e.is_file()]
    sql_files = [name for name in files if name.endswith(".sql")]
    assert len(sql_files) == len(available_migrations())


MIGRATION_SETS = [
    # (file names in the migrations folder, expected versions or None for a StoreError)
    (["0002_b.sql", "0001_a.sql", "0003_c.sql"], [1, 2, 3]),  # sorted by number, not by listing order
    (["0001_a.sql", "README.md", "notes.txt"], [1]),  # other files are ignored
    (["0001_a.sql", "0003_c.sql"], None),  # a gap
    (["0002_b.sql"], None),  # not starting at 1
    (["0001_a.sql", "0001_b.sql"], None),  # the same number twice
    ([], []),  # none yet
]


@pytest.mark.parametrize(("names", "versions"), MIGRATION_SETS)
def test_available_migrations_order_and_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str], versions: list[int] | None
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(f"-- {name}\n", encoding="utf-8")
    monkeypatch.setattr(migrate, "resources", SimpleNamespace(files=lambda package: tmp_path))
    if versions is None:
        with pytest.raises(StoreError, match=re.escape("numbered 1..n without gaps")):
            available_migrations()
    else:
        found = available_migrations()
        assert [m.version for m in found] == versions
        assert all(m.sql == f"-- {m.version:04d}_{m.name}.sql\n" for m in found)
