"""Shared test set-up: torch on one thread (tests run beside each other on small machines); headless Chromium."""
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (CI runs as root)."""
    from browser import find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is missing and cannot be installed here (needs apt-get as root)")
    assert Path(exe).exists(), "chromium did not install"
    return exe
