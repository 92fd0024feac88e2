"""The layers of janus/ stay layered: no import cycles, no upward imports, drivers only in adapters.

Read from the source with `ast` (module-level imports: what runs when a module is loaded).
The core's own purity is tests/unit/test_core_purity.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import janus

ROOT = Path(janus.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(path): path for path in sorted(ROOT.rglob("*.py"))}


def _top_level_imports(source: str) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module loads: at module level, in `if`/`try` blocks too, but
    not under `if TYPE_CHECKING`, nor inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(ast.parse(source).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending += [*node.body, *node.orelse]
        elif isinstance(node, ast.Try):
            pending += [
                *node.body,
                *node.orelse,
                *node.finalbody,
                *(s for h in node.handlers for s in h.body),
            ]
    return found


def imported(source: str) -> set[str]:
    """Every module a source imports at load time: `from a import b` counts as a.b when that is
    a module of janus/, else as a."""
    modules: set[str] = set()
    for node in _top_level_imports(source):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif node.module is not None and node.level == 0:
            modules.add(node.module)
            modules.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in MODULES
            )
    return modules


# A package that imports its own modules (`from janus.cli import run`) is no cycle: self-edges are left out.
GRAPH = {
    name: {m for m in imported(path.read_text(encoding="utf-8")) if m in MODULES and m != name}
    for name, path in MODULES.items()
}

# What each part of janus/ may import from janus/ (besides itself).
ALLOWED = {
    "janus.core": set(),
    "janus.errors": set(),
    "janus.urls": set(),  # what a message may say of a connection URL
    "janus.logs": set(),  # the log format: the CLI configures it, the service sets the term's epoch
    "janus.protocol": {"janus.core", "janus.errors"},
    # janus.config re-exports its parts: bounds, then the models, the settings, the loading.
    "janus.config": {
        "janus.core",
        "janus.errors",
        "janus.urls",
        "janus.adaptive_config",
        "janus.config_limits",
        "janus.scale_out_config",
        "janus.config_bounds",
        "janus.config_policy",
        "janus.config_settings",
        "janus.config_loading",
    },
    "janus.config_bounds": {"janus.core", "janus.config_limits"},
    "janus.config_policy": {
        "janus.core",
        "janus.errors",
        "janus.urls",
        "janus.adaptive_config",
        "janus.config_bounds",
        "janus.scale_out_config",
    },
    "janus.config_settings": {"janus.errors"},
    "janus.config_loading": {"janus.errors", "janus.config_policy", "janus.config_settings"},
    "janus.scale_out_config": set(),  # `[scale_out]`: a process key, kept out of config.py's bulk
    # `[dependencies.X.adaptive]`, a part of the file's model kept out of config.py's bulk; it
    # reaches config.py's parsers at validation time only (a function-level import).
    "janus.adaptive_config": {"janus.core", "janus.errors", "janus.config"},
    "janus.config_limits": {"janus.core"},  # durations and rate limits as a policy file writes them
    # The policy of record: a configuration as PostgreSQL keeps its versions (`janus apply`).
    "janus.policy_record": {"janus.core", "janus.errors", "janus.config", "janus.urls"},
    "janus.store": {"janus.core", "janus.errors", "janus.urls"},
    "janus.broker": {"janus.core", "janus.errors", "janus.protocol", "janus.config", "janus.urls"},
    "janus.api": {"janus.core", "janus.errors"},
    # The SDK reads JANUS_AMQP_URL(_FILE) as janus run does (janus.config, which the broker loads anyway).
    "janus.client": {
        "janus.core",
        "janus.errors",
        "janus.protocol",
        "janus.broker",
        "janus.config",
        "janus.urls",
    },
    "janus.local_services": {"janus.errors"},
    "janus.service": {
        "janus.core",
        "janus.errors",
        "janus.protocol",
        "janus.config",
        "janus.policy_record",
        "janus.store",
        "janus.broker",
        "janus.api",
        "janus.urls",
        "janus.logs",
    },
}

# Where each driver may be imported: nowhere else speaks SQL or AMQP. The conformance harness
# plays Janus's side of the broker against a worker under test: a broker client like the SDK.
AMQP_HOMES = ("janus.broker", "janus.client", "janus.conformance")
DRIVERS = {
    "asyncpg": ("janus.store", "janus.local_services"),
    "aio_pika": AMQP_HOMES,
    "aiormq": AMQP_HOMES,
    "pamqp": AMQP_HOMES,
}


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _within(module: str, parts: tuple[str, ...]) -> bool:
    return any(module == part or module.startswith(f"{part}.") for part in parts)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph` (each once, from its smallest module)."""
    found: list[list[str]] = []

    def visit(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                found.append(path)
            elif nxt not in path and nxt > path[0]:
                visit([*path, nxt])

    for start in sorted(graph):
        visit([start])
    return found


def test_the_walk_sees_the_layers() -> None:
    # Guards the scan: an empty graph would make every check below pass.
    assert "janus.core.scheduler" in GRAPH["janus.service.tick"]
    assert "janus.store.queries" in GRAPH["janus.store.repository"]
    assert imported("import asyncpg\nfrom janus.core import jobs\nif TYPE_CHECKING:\n    import x\n") == {
        "asyncpg",
        "janus.core",
        "janus.core.jobs",
    }
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m) in ALLOWED))
def test_no_upward_imports(module: str) -> None:
    part = _part(module)
    upward = {m for m in GRAPH[module] if _part(m) != part and _part(m) not in ALLOWED[part] and m != "janus"}
    assert upward == set(), f"{module} imports {sorted(upward)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_drivers_stay_in_their_adapters(module: str) -> None:
    # Anywhere in the file, functions included: a driver call hidden in a function still leaks.
    source = MODULES[module].read_text(encoding="utf-8")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module.split(".")[0])
    for driver, homes in DRIVERS.items():
        assert driver not in names or _within(module, homes), f"{module} imports {driver}"
