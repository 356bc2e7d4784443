"""sd_notify(3) without a systemd binding: datagrams to ``$NOTIFY_SOCKET``.

systemd's protocol is a newline-separated list of ``KEY=VALUE`` sent as one datagram to the unix
socket named by ``NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). hesd sends
``READY=1`` once it serves, ``STATUS=…`` as it changes, ``WATCHDOG=1`` at half of ``WatchdogSec``
while it is healthy, ``RELOADING=1``/``READY=1`` around a SIGHUP reload and ``STOPPING=1`` when it
drains. Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger("hesd.notify")


class Notifier:
    """Sends sd_notify messages; construct with ``Notifier.from_environ()``."""

    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self.watchdog_usec = watchdog_usec
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_environ(cls) -> Notifier:
        address = os.environ.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout systemd enforces), or None."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def notify(self, *lines: str) -> None:
        if self._sock is None or self._address is None:
            return
        address = self._address
        target = "\0" + address[1:] if address.startswith("@") else address
        try:
            self._sock.sendto("\n".join(lines).encode("utf-8"), target)
        except OSError as exc:  # systemd gone or socket full: never fatal for the daemon
            log.warning("notify.failed", error=exc.strerror, message=lines[0])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
