"""Shared by the bench scripts: figures and the machine they were measured
on. Servers and processes come from `tests.harness`, as in the tests.
Not a benchmark itself.

The scripts put the repository root on sys.path themselves, so they run as
`python bench/<name>.py` from a checkout without installing anything.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    """What the figures were measured on, for bench/README.md."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def quantile_ms(sorted_s: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (0..1) of sorted seconds, in milliseconds."""
    index = max(0, min(len(sorted_s) - 1, int(q * len(sorted_s) + 0.999999) - 1))
    return sorted_s[index] * 1000
