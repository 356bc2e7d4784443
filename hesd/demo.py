"""``make demo``: hesd on its embedded defaults, driven by hesctl, then stopped cleanly.

Run from the repository root (the embedded defaults keep state in ./var and read vendor profiles
from ./conf/vendors). Each step prints the command it runs and what it answered.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

BIN: Final = Path(sys.executable).parent
# the embedded defaults, whatever the caller's environment points at
ENV: Final = {k: v for k, v in os.environ.items() if k not in ("HESD_CONFIG", "HESD_SOCKET")}
LOG: Final = Path("var") / "demo-hesd.log"


def step(*args: str) -> None:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"\n$ {shown}", flush=True)
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], check=False, text=True, capture_output=True, env=ENV
    )
    sys.stdout.write(result.stdout)
    sys.stdout.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"demo: `{shown}` exited {result.returncode}")


def main() -> None:
    if not Path("conf/vendors").is_dir():
        raise SystemExit("demo: run it from the repository root (make demo)")
    LOG.parent.mkdir(exist_ok=True)
    print(f"$ hesd run &    # embedded defaults; log in {LOG}", flush=True)
    with LOG.open("w") as log:
        daemon = subprocess.Popen(
            [str(BIN / "hesd"), "run"], stdout=log, stderr=subprocess.STDOUT, env=ENV
        )
    try:
        step("hesctl", "status", "--wait", "20")
        step("hesctl", "meters", "import", "conf/meters.example.csv")
        step("hesctl", "meters")
        step("hesctl", "meters", "show", "MTR-0000002")
        step("hesctl", "vendors", "list")
        step("hesctl", "status")
    finally:
        print("\n$ kill -TERM <hesd>", flush=True)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        print(f"hesd exited with status {code}; its log:")
        sys.stdout.write(LOG.read_text())
    if code != 0:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
