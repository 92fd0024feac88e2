"""The `janus simulate` command: read the policy and the workload, run, print, and optionally plot
and write the timeline."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from janus.config import load_config
from janus.errors import ConfigError
from janus.simulate.engine import simulate
from janus.simulate.report import render, write_timeline
from janus.simulate.workload import load_workload


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "simulate", help="run the scheduler on a virtual clock against a workload: what a policy will do"
    )
    parser.add_argument("--config", required=True, help="TOML policy file, as janus run takes")
    parser.add_argument("--workload", required=True, help="TOML workload file (docs/simulate.md)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument(
        "--plot", type=Path, help="draw admissions and backlogs to this PNG (needs matplotlib)"
    )
    parser.add_argument("--timeline", type=Path, help="write every admission, start and finish to this CSV")


def run(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    policies = config.policies()
    workload = load_workload(Path(args.workload), [policy.name for policy in policies])
    if args.plot is not None:
        from janus.simulate.plot import require_matplotlib

        require_matplotlib()  # before the run: a missing extra should not cost a long simulation
    started = time.perf_counter()
    outcome = simulate(policies, workload, seed=args.seed, timeline=args.timeline is not None)
    elapsed = time.perf_counter() - started
    print(render(outcome, seed=args.seed))
    print(f"simulated in {elapsed:.2f}s of wall time ({outcome.jobs / max(elapsed, 1e-9):,.0f} jobs/s)")
    if args.timeline is not None:
        try:
            rows = write_timeline(outcome, args.timeline)
        except OSError as exc:
            raise ConfigError(f"cannot write the timeline {args.timeline}: {exc.strerror}") from None
        print(f"timeline: {rows} rows in {args.timeline}")
    if args.plot is not None:
        from janus.simulate.plot import plot

        try:
            plot(outcome, args.plot)
        except OSError as exc:
            raise ConfigError(f"cannot write the plot {args.plot}: {exc.strerror}") from None
        print(f"plot: {args.plot}")
    sys.stdout.flush()
    return 0
