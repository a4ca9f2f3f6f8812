"""`make bench` runs every benchmark of bench/: a new one cannot be left out of it."""

from __future__ import annotations

from pathlib import Path

from bench.run_all import BENCHMARKS

HELPERS = {"__init__", "lib", "reference_app", "run_all"}


def test_every_benchmark_module_is_run_by_make_bench() -> None:
    modules = {f"bench.{p.stem}" for p in (Path(__file__).resolve().parents[2] / "bench")
               .glob("*.py") if p.stem not in HELPERS}
    assert modules == set(BENCHMARKS)
    assert len(BENCHMARKS) == len(set(BENCHMARKS))
