"""Compile the decision core and the simulation engine with mypyc, in place (`make compiled`).

The same typed Python, compiled to C extensions beside the sources: Python imports an
extension module before a .py of the same name, so `janus simulate` (and anything else that
imports them) runs the compiled code; `make clean-compiled` removes it. Left out: the modules
holding NamedTuples (mypyc rejects their `object` fields) and those using pydantic models.
Needs a C compiler and Python's headers. `tests/system/test_compiled.py` checks that the
compiled build decides exactly as the Python one; docs/decisions.md says why mypyc.

    .venv/bin/python scripts/compile_core.py [TREE]   # TREE: another checkout (default: this one)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mypyc.build import mypycify
from setuptools import setup  # type: ignore[import-untyped]

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
NOT_COMPILED = {"__init__.py", "decisions.py", "jobs.py"}
SIMULATION = ["engine.py", "skipping.py", "workers.py", "time_at_limits.py", "logs.py", "distributions.py"]


def modules() -> list[str]:
    core = sorted(p for p in (ROOT / "janus" / "core").glob("*.py") if p.name not in NOT_COMPILED)
    simulation = [ROOT / "janus" / "simulate" / name for name in SIMULATION]
    return [str(path.relative_to(ROOT)) for path in [*core, *simulation]]


if __name__ == "__main__":
    os.chdir(ROOT)  # mypycify takes the sources' paths relative to the tree
    setup(
        name="janus-compiled",
        ext_modules=mypycify(modules(), group_name="janus._compiled", opt_level="3"),
        script_args=["build_ext", "--inplace", "--build-temp", str(ROOT / "build" / "mypyc")],
    )
