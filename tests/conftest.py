"""Shared test set-up: torch on one thread (tests run beside each other on small machines); headless Chromium."""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from assocgan.config import make_config
from assocgan.data.benchmarks import Benchmark, benchmark_for

# The suite is deterministic: property tests draw the same examples on every run (CI included). To search wider for
# new failures, run with ASSOCGAN_HYPOTHESIS=explore (random draws, 20x the examples).
settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=3000, print_blob=True)
settings.load_profile("explore" if os.environ.get("ASSOCGAN_HYPOTHESIS") == "explore" else "deterministic")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def bench2() -> Benchmark:
    """The smoke preset's restore4 cut to its first two tasks: the smallest continual sequence."""
    full = benchmark_for(make_config("smoke", threads=1))
    return Benchmark("restore2", full.metric, full.tasks[:2])


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (CI runs as root)."""
    from browser import find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is missing and cannot be installed here (needs apt-get as root)")
    assert Path(exe).exists(), "chromium did not install"
    return exe
