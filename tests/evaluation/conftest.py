"""The evaluation tests' benchmark loader (tiny_unclip_pipeline, the LDM + unCLIP folder, is in tests/conftest.py)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of benchmarks/ (not a package) by name, as a module its tests can call into."""
    def load(name: str):
        if str(BENCHMARKS) not in sys.path:  # as when a script runs: its folder first, for benchmarks/_bench.py
            sys.path.insert(0, str(BENCHMARKS))
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # registered before it runs, as an import would (dataclasses look it up)
            spec.loader.exec_module(module)
        return sys.modules[name]
    return load
