"""The core stays pure: no I/O imports, no clock, no randomness of its own (time and randomness are parameters).

Checked on the source with `ast`, so an import inside a function or behind
`if TYPE_CHECKING` is caught as well; the checker is itself tested on snippets
so that a broken walk cannot pass vacuously.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import janus.core
from janus.core.backoff import backoff_ceiling, retry_delay
from janus.core.rate import SlidingWindow
from janus.core.scheduler import Scheduler

CORE = Path(janus.core.__file__).parent
CORE_FILES = sorted(CORE.rglob("*.py"))

FORBIDDEN_MODULES = {"asyncio", "aio_pika", "aiormq", "asyncpg", "prometheus_client", "time", "socket"}
CLOCK_ROOTS = {"time", "datetime", "date"}  # any attribute of these names is a clock read
CLOCK_CALLS = {"now", "utcnow", "today", "monotonic", "perf_counter", "time_ns", "monotonic_ns"}


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def forbidden_imports(source: str) -> list[str]:
    """Every import of a forbidden module, anywhere in the source (including dynamic imports)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name in ("__import__", "import_module"):
                found.append(f"{name}(...)")  # a dynamic import hides what it loads
    return found


def clock_reads(source: str) -> list[str]:
    """Every `time.x`, `datetime.x`, `date.x` attribute and every `.now()`-like call."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _root(node) in CLOCK_ROOTS:
            found.append(f"{_root(node)}...{node.attr}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in CLOCK_CALLS:
                found.append(f".{func.attr}()")
            elif isinstance(func, ast.Name) and func.id in CLOCK_CALLS:
                found.append(f"{func.id}()")  # from time import monotonic; monotonic()
    return found


def module_randomness(source: str) -> list[str]:
    """Calls on the `random` module's hidden global RNG (random.random(), random.uniform(), ...)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and _root(node.func) == "random"
            and node.func.attr != "Random"
        ):
            found.append(f"random.{node.func.attr}()")
    return found


# -- the checkers, on snippets --------------------------------------------------

CHECKER_CASES = [
    # (source, imports found, clock reads found, global randomness found)
    ("import asyncio", ["asyncio"], [], []),  # plain import
    ("import aio_pika.abc as abc", ["aio_pika.abc"], [], []),  # submodule with alias
    ("from asyncpg import Connection", ["asyncpg"], [], []),  # from-import
    ("from prometheus_client.core import Counter", ["prometheus_client.core"], [], []),  # deep from-import
    ("def f():\n    import socket", ["socket"], [], []),  # hidden in a function
    ("if TYPE_CHECKING:\n    import aiormq", ["aiormq"], [], []),  # hidden behind TYPE_CHECKING
    ("import importlib\nimportlib.import_module('asyncio')", ["import_module(...)"], [], []),  # dynamic
    ("import time\nx = time.monotonic()", ["time"], ["time...monotonic", ".monotonic()"], []),  # the clock
    ("from time import monotonic\nx = monotonic()", ["time"], ["monotonic()"], []),  # imported by name
    ("from datetime import datetime\nx = datetime.now()", [], ["datetime...now", ".now()"], []),  # wall clock
    (
        "import datetime\nx = datetime.datetime.utcnow()",
        [],
        ["datetime...datetime", "datetime...utcnow", ".utcnow()"],
        [],
    ),
    ("from datetime import date\nx = date.today()", [], ["date...today", ".today()"], []),  # today
    ("import random\nx = random.random()", [], [], ["random.random()"]),  # the global RNG
    ("import random\nx = random.Random(1).random()", [], [], []),  # a seeded RNG of one's own is fine
    (
        "def f(now: float, rng: random.Random) -> float:\n    return now + rng.uniform(0, 1)",
        [],
        [],
        [],
    ),  # pure
    ("from .rate import SlidingWindow\nimport timeit_helpers", [], [], []),  # relative, and a prefix-alike
]


@pytest.mark.parametrize(("source", "imports", "clocks", "randomness"), CHECKER_CASES)
def test_checkers(source: str, imports: list[str], clocks: list[str], randomness: list[str]) -> None:
    assert forbidden_imports(source) == imports
    assert sorted(clock_reads(source)) == sorted(clocks)
    assert module_randomness(source) == randomness


# -- the core ---------------------------------------------------------------------


def test_the_core_has_the_expected_modules() -> None:
    # Guards the walk: an empty or wrong directory would make every check below pass.
    names = {path.stem for path in CORE_FILES}
    assert {"__init__", "backoff", "jobs", "policy", "rate", "scheduler"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_io(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_reads_no_clock(path: Path) -> None:
    assert clock_reads(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_uses_no_global_randomness(path: Path) -> None:
    assert module_randomness(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_imports_only_the_standard_library_and_itself(path: Path) -> None:
    # Stronger than the deny-list: pydantic, janus.config or janus.store have no business here either.
    allowed = {"__future__", "bisect", "collections", "dataclasses", "enum", "functools", "heapq", "itertools",
               "math", "random", "types", "typing", "janus"}  # fmt: skip
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            modules = [node.module]
        else:
            continue
        for module in modules:
            assert module.split(".")[0] in allowed, f"{path.name} imports {module}"
            if module.startswith("janus"):
                assert module == "janus.core" or module.startswith("janus.core."), (
                    f"{path.name} imports {module}"
                )


TIME_TAKERS = [
    # (callable, the parameter that carries time or randomness)
    (SlidingWindow.room, "now"),
    (SlidingWindow.free_at, "now"),
    (Scheduler.submit, "now"),
    (Scheduler.on_result, "now"),
    (Scheduler.on_returned, "now"),
    (Scheduler.expire_leases, "now"),
    (Scheduler.admit, "now"),
    (Scheduler.__init__, "rng"),  # jitter comes from an RNG the caller owns
    (retry_delay, "rng"),
]


@pytest.mark.parametrize(("function", "parameter"), TIME_TAKERS, ids=lambda v: getattr(v, "__qualname__", v))
def test_core_functions_take_time_as_a_parameter(function: object, parameter: str) -> None:
    assert parameter in inspect.signature(function).parameters  # type: ignore[arg-type]


def test_backoff_ceiling_needs_neither_clock_nor_rng() -> None:
    assert list(inspect.signature(backoff_ceiling).parameters) == ["policy", "failures"]
