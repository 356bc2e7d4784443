"""What every benchmark under ``bench/`` reports: the machine, medians, a table, a JSON file.

``docs/benchmarks.md`` quotes these files; keeping one way to describe the machine and write the
results keeps the numbers comparable from one benchmark (and one run) to the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["loadavg", "machine", "median_of", "print_results", "write_report"]


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews every number)."""
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def machine(**extra: Any) -> dict[str, Any]:
    """CPUs, CPU model, Python, platform and load average, plus what the caller adds."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": loadavg(),
        **extra,
    }


def median_of(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the median over runs (every run has the same keys)."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def print_results(results: Mapping[str, object]) -> None:
    """One aligned ``key  value`` line per result."""
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:{width}}  {value}")


def write_report(path: str | Path, benchmark: str, **sections: Any) -> Path:
    """Write ``{"benchmark": …, "machine": machine(), **sections}`` as JSON; say where.

    A ``machine`` section given by the caller replaces the default one.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": benchmark, "machine": sections.pop("machine", None) or machine()}
    report.update(sections)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {out}")
    return out
