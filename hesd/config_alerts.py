"""``[alerts]`` of hesd.toml: what hesd does when a meter pushes an alert (``hesd/alerts.py``).

How a vendor's meters push alerts (the push's layout, the ESW bits) is the vendor profile's
``[alerts]`` (docs/vendors.md); this section says how hesd reacts: whether it reads the event
logs the alert names, how long it lets a burst of alerts gather before it does, how far back a
first read goes, and how near in time a logged event must be to confirm an alert.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.schema import Table

__all__ = ["AlertsConfig", "parse_alerts"]


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    read_logs: bool = True  # read the event logs an alert names (false: forward the alert only)
    coalesce: float = 1.0  # seconds a meter's alerts gather before its event-log read starts
    lookback: float = 86400.0  # a first read starts this long before the alert (no mark yet)
    match_window: float = 300.0  # seconds between an alert and the logged event confirming it

    def __post_init__(self) -> None:
        if min(self.coalesce, self.lookback, self.match_window) < 0:
            raise ValueError("alerts: negative duration")


def parse_alerts(doc: Table) -> AlertsConfig:
    table = doc.table("alerts")
    config = AlertsConfig(
        read_logs=table.boolean("read_logs", default=True),
        coalesce=table.number("coalesce", lo=0, hi=60, default=1.0),
        lookback=table.number("lookback", lo=0, hi=2_592_000, default=86400.0),
        match_window=table.number("match_window", lo=0, hi=86400, default=300.0),
    )
    table.finish()
    return config
