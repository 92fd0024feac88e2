"""The README and docs/ stay true where that is cheap to check: the commands, metrics,
configuration keys, benchmarks and links they show exist."""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

import janus.cli
from janus.adaptive_config import AdaptiveConfig
from janus.api.metrics import Metrics
from janus.config import (
    CircuitConfig,
    DependencyConfig,
    FairnessConfig,
    JanusConfig,
    RecoveryConfig,
    RetentionConfig,
    RetryConfig,
    Settings,
    ShadowConfig,
    parse_config,
)
from janus.scale_out_config import ScaleOutConfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"  # the metrics reference table
CONFIGURATION = ROOT / "docs" / "configuration.md"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
README_MAX_LINES = 220

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
# `janus` where a command starts: at the start of a line or of an inline code span, after a
# path (.venv/bin/janus), after a shell separator or `do`. Not `-p janus` (a vhost) or janus.x.
COMMAND = re.compile(
    r"(?:^\s*|[;&|(]\s*|\bdo\s+|/)janus[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?(.*)$", re.M
)
METRIC = re.compile(r"\bjanus_[a-z0-9_]*[a-z0-9*]")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def code_segments(text: str) -> Iterator[str]:
    """Fenced code blocks, then inline code spans of the prose around them."""
    yield from (match.group(1) for match in FENCE.finditer(text))
    yield from (match.group(1) for match in INLINE.finditer(FENCE.sub("", text)))


def shown_commands(path: Path) -> list[tuple[str, str | None, list[str]]]:
    """(subcommand, its first argument, the --options after it) of every `janus ...` shown."""
    found = []
    for segment in code_segments(path.read_text(encoding="utf-8")):
        for match in COMMAND.finditer(segment):
            rest = re.split(r"\s#|\||;|&&", match.group(3))[0]
            options = [token.split("=")[0] for token in re.findall(r"--[a-z][a-z-]*(?:=\S*)?", rest)]
            found.append((match.group(1), match.group(2), options))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public listing of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("path", [README, OPERATIONS, METRICS_DOC], ids=lambda p: p.name)
def test_every_janus_command_shown_exists_with_its_options(path: Path) -> None:
    commands = subcommands(janus.cli.build_parser())
    shown = shown_commands(path)
    assert shown, f"no janus commands found in {path.name}: the extraction is broken"
    for name, argument, options in shown:
        assert name in commands, f"{path.name} shows `janus {name}`, which the CLI does not have"
        parser = commands[name]
        nested = subcommands(parser)
        if nested:
            assert argument in nested, f"{path.name} shows `janus {name} {argument}`, which does not exist"
            parser = nested[argument]
        unknown = set(options) - option_strings(parser)
        assert not unknown, f"{path.name}: `janus {name}` has no option {sorted(unknown)}"


def declared_metrics() -> dict[str, list[str]]:
    """Every metric Metrics defines, by its exposed name (counters end in _total), with its labels."""
    declared = {}
    for value in vars(Metrics()).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            name = family.name + "_total" if family.type == "counter" else family.name
            declared[name] = list(value._labelnames)  # no public accessor for the label names
    return declared


def test_metrics_doc_lists_every_metric_with_its_labels_and_no_other() -> None:
    declared = declared_metrics()
    assert len(declared) > 20, "Metrics() defines fewer metrics than expected: the lookup is broken"
    for doc in (OPERATIONS, METRICS_DOC):  # the operations guide names metrics too
        for mentioned in set(METRIC.findall(doc.read_text(encoding="utf-8"))):
            if mentioned.endswith("*"):
                assert any(name.startswith(mentioned[:-1]) for name in declared), (
                    f"no metric matches {mentioned}"
                )
            else:
                assert mentioned in declared, (
                    f"docs/{doc.name} mentions {mentioned}, which janus does not define"
                )
    text = METRICS_DOC.read_text(encoding="utf-8")
    for name, labels in declared.items():
        rows = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, f"docs/metrics.md needs one table row for {name}"
        for label in labels:
            assert f"`{label}`" in rows[0], f"the row of {name} does not name its label {label}"


def model_keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_configuration_reference_shows_every_key_and_variable() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    reference = "\n".join(block for block in code_segments(text) if "[dependencies." in block)
    shown = set(re.findall(r"^([a-z_]+) = ", reference, re.M))
    expected = (
        model_keys(JanusConfig) - {"dependencies", "retention", "scale_out"}
        | model_keys(ScaleOutConfig)
        | model_keys(DependencyConfig)
        - {"retry", "circuit", "fairness", "shadow", "retention", "recovery", "adaptive"}
        | model_keys(ShadowConfig)
        | model_keys(RetentionConfig)
        | model_keys(RecoveryConfig)
        | model_keys(AdaptiveConfig)
        | model_keys(RetryConfig)
        | model_keys(CircuitConfig)
        | model_keys(FairnessConfig)
    )
    assert expected - shown == set(), "keys missing from the reference in docs/configuration.md"
    assert shown - expected == set(), "keys in docs/configuration.md that the configuration does not have"
    for field in Settings.model_fields:
        assert f"`JANUS_{field.upper()}`" in text, (
            f"docs/configuration.md does not list JANUS_{field.upper()}"
        )


@pytest.mark.parametrize("path", [README, CONFIGURATION], ids=lambda p: p.name)
def test_policy_examples_are_valid(path: Path) -> None:
    blocks = re.findall(r"^```toml\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)
    assert blocks, f"no policy example in {path.name}"
    for block in blocks:
        parse_config(tomllib.loads(block), source=path.name, env={})  # raises ConfigError, naming the key


def test_benchmarks_doc_covers_every_benchmark_and_runs_only_real_ones() -> None:
    text = BENCHMARKS.read_text(encoding="utf-8")
    # A leading underscore marks a helper the benchmarks share, not a benchmark.
    modules = {path.stem for path in (ROOT / "benchmarks").glob("*.py") if not path.stem.startswith("_")}
    # "## a: ...", "## a and b: ..." or "## a, b and c: ..."
    headings = re.findall(r"^## ([a-z_]+(?:, [a-z_]+)*(?: and [a-z_]+)?):", text, re.M)
    headed = {name for heading in headings for name in re.split(r", | and ", heading)}
    assert modules <= headed, f"benchmarks without a section: {sorted(modules - headed)}"
    for module in re.findall(r"-m benchmarks\.([a-z_]+)", text):
        assert module in modules, f"docs/benchmarks.md runs benchmarks.{module}, which does not exist"


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def docs_with_links() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", docs_with_links(), ids=lambda p: p.name)
def test_relative_links_lead_to_files_and_headings_that_exist(path: Path) -> None:
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        file, _, fragment = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name} links to {target}, which does not exist"
        if fragment:
            headings = re.findall(r"^#+ (.+)$", FENCE.sub("", linked.read_text(encoding="utf-8")), re.M)
            assert fragment in {anchor(h) for h in headings}, f"{path.name} links to a missing #{fragment}"


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, "the README is for users: details belong in docs/"
    assert "make demo" in "\n".join(lines)
    assert "make test" in "\n".join(lines)
