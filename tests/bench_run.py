"""Running a benchmark as its smoke test does (tests/test_bench_*.py): from the repository, with
the test's options, its report written to ``out``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def run_bench(script: str, *options: str, out: Path, timeout: float = 120) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``options`` and ``--out out``; the report it wrote. The
    benchmark must exit 0 (else its output is the failure's message)."""
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *options, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report
