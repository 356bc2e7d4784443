"""hesd.toml: typed, frozen configuration with embedded defaults.

Every key has a default, so ``hesd run`` works without a file (the *embedded defaults*); the
example ``hesd.toml`` at the repository root documents every key and ``docs/configuration.md`` is
the reference. Relative paths in a file are taken relative to the file's directory; with the
embedded defaults, relative to the working directory. Unknown keys are errors.

Which file: ``--config PATH``, else ``$HESD_CONFIG``, else the embedded defaults.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from adapters.profile import VENDOR_NAME, VendorProfile, load_profiles
from adapters.schema import NAME_PATTERN, ConfigError, Table, load_toml
from hesd.config_alerts import AlertsConfig, parse_alerts
from hesd.config_api import (
    API_SCOPES,
    ApiClientConfig,
    ApiConfig,
    optional_path,
    parse_api,
)
from hesd.config_schedules import (
    ScheduleConfig,
    ScheduledRead,
    SchedulerConfig,
    check_schedules,
    parse_scheduler,
    parse_schedules,
)

__all__ = [
    "API_SCOPES",
    "EMBEDDED",
    "AlertsConfig",
    "ApiClientConfig",
    "ApiConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "FirmwareConfig",
    "LogConfig",
    "MqttConfig",
    "ScheduleConfig",
    "ScheduledRead",
    "SchedulerConfig",
    "SerialConfig",
    "SerialPortConfig",
    "StoreConfig",
    "UplinkConfig",
    "VendorsConfig",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

EMBEDDED: Final = "<embedded defaults>"
LOG_FORMATS: Final = ("console", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
SERIAL_KINDS: Final = ("rs485", "optical")
SERIAL_BAUDS: Final = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
OPTICAL_BAUDS: Final = (300, 600, 1200, 2400, 4800, 9600, 19200)  # IEC 62056-21 §6.3.2 Z


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_dir: Path
    secrets_file: Path | None
    drain_timeout: float


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str
    level: str


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path
    commit_interval: float
    commit_max_batch: int
    slow_commit: float


@dataclass(frozen=True, slots=True)
class VendorsConfig:
    dir: Path
    enabled: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    url: str  # MDM base URL; "" : records stay in the outbox
    batch_size: int  # most records in one POST
    batch_delay: float  # seconds a record may wait for its batch to fill
    max_backlog_bytes: int  # outbox disk budget (payload bytes)
    hes_id: str  # who hesd is to the MDM (the batches' hes_id and idempotency keys)
    auth: str  # "bearer" | "api-key" | "none"
    token: str  # name of the token in the secrets file's [tokens]; "" : none
    lanes: int  # batches in flight at once; a meter's records always go through one lane
    timeout: float  # seconds for one POST, connect included
    backoff_initial: float  # retry back-off, doubling, with jitter
    backoff_max: float
    ca_file: Path | None  # None: the system's CAs
    cert_file: Path | None  # client certificate (and key, unless key_file)
    key_file: Path | None


@dataclass(frozen=True, slots=True)
class DlmsConfig:
    system_title: bytes  # hesd's own system title (client side of ciphering and HLS)


@dataclass(frozen=True, slots=True)
class TcpConfig:
    listen: tuple[tuple[str, int], ...]  # where meters dial in; empty: no listener
    identify_timeout: float  # seconds an unknown peer has to identify itself
    identify_max_bytes: int  # bytes it may send before it has
    connect_timeout: float  # dial-out
    backoff_initial: float
    backoff_max: float
    per_destination: int  # concurrent dial-out connections per destination host
    idle_close: float  # dial-out connections idle this long are closed


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_requests: int  # requests in flight across the fleet
    request_timeout: float  # the longest one request (incl. association and blocks) may take
    session_max_bytes: int  # the most a meter may send in one request (blocks included)
    command_workers: int = 64  # commands the router runs at once across the fleet
    # the intake gate (hesd/intake.py): event-loop lag that pauses reading meters' TCP sockets
    # (0: never), the lag below which they are read again, the longest one pause
    intake_lag_pause: float = 0.1
    intake_lag_resume: float = 0.02
    intake_max_pause: float = 1.0


@dataclass(frozen=True, slots=True)
class MqttConfig:
    broker: tuple[str, int] | None  # None: no MQTT transport
    tls: bool
    tls_verify: bool  # check the broker's certificate and host name
    ca_file: Path | None  # None: the system's CAs
    cert_file: Path | None  # client certificate (and key, unless key_file)
    key_file: Path | None
    username: str  # "" : none
    password_token: str  # name in the secrets file's [tokens]; "" : none
    client_id: str  # "" : hesd-{hostname}
    keepalive: int
    shared_group: str  # "" : a plain subscription; else $share/{group}/...
    uplink_topic: str  # template with one {meter_id} level
    downlink_topic: str
    max_queue: int  # messages waiting per meter before the oldest is dropped
    backoff_initial: float  # reconnect back-off, doubling, with jitter
    backoff_max: float


@dataclass(frozen=True, slots=True)
class SerialPortConfig:
    path: str  # the device, as the inventory's serial addresses name it
    kind: str  # "rs485": a multidrop bus; "optical": an IEC 62056-21 probe, one meter
    baud: int  # rs485: the line's rate; optical: the highest rate mode E may switch to
    bytesize: int  # rs485 only (optical: 7E1 for the sign-on, then 8N1)
    parity: str  # "N", "E" or "O"
    stopbits: int
    inter_request_gap: float  # silence between one exchange and the next
    settle_time: float  # silence after an exchange whose answer did not come
    inactivity: float  # optical: the meter's HDLC inactivity time-out (back to 300 Bd)
    software_parity: bool  # optical: sign on at 300 8N1 with the parity bit made in software


@dataclass(frozen=True, slots=True)
class SerialConfig:
    ports: tuple[SerialPortConfig, ...]
    reopen_initial: float  # back-off reopening a port that failed or was lost
    reopen_max: float


@dataclass(frozen=True, slots=True)
class FirmwareConfig:
    """Firmware upgrades over the air (``hesd/firmware.py``)."""

    max_image_bytes: int = 16 << 20  # the largest image accepted for upload
    max_attempts: int = 10  # attempts of one upgrade; each resumes the transfer
    retry_backoff: float = 10.0  # seconds before the second attempt, doubled for each next one
    attempt_timeout: float = 3600.0  # the longest one attempt may take (transfer included)
    verify_timeout: float = 300.0  # polling the meter's verification or activation at most


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it came from, or EMBEDDED
    daemon: DaemonConfig
    log: LogConfig
    api: ApiConfig
    store: StoreConfig
    vendors: VendorsConfig
    uplink: UplinkConfig
    dlms: DlmsConfig
    tcp: TcpConfig
    limits: LimitsConfig
    serial: SerialConfig
    mqtt: MqttConfig
    scheduler: SchedulerConfig
    schedules: tuple[ScheduleConfig, ...]
    firmware: FirmwareConfig = FirmwareConfig()
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def load_vendor_profiles(self) -> dict[str, VendorProfile]:
        """The enabled vendor profiles; the schedules are checked against them."""
        profiles = load_profiles(self.vendors.dir, self.vendors.enabled, self.source)
        check_schedules(self.source, self.schedules, profiles)
        return profiles


def parse_config(doc: Table, base: Path) -> Config:
    """Validate a parsed hesd.toml; ``base`` anchors its relative paths."""
    daemon_t = doc.table("daemon")
    state_dir = daemon_t.path("state_dir", base=base, default="var")
    daemon = DaemonConfig(
        state_dir=state_dir,
        secrets_file=optional_path(daemon_t, "secrets_file", base),
        drain_timeout=daemon_t.number("drain_timeout", lo=0, hi=3600, default=15.0),
    )
    daemon_t.finish()

    log_t = doc.table("log")
    log = LogConfig(
        format=log_t.choice("format", LOG_FORMATS, default="console"),
        level=log_t.choice("level", LOG_LEVELS, default="info"),
    )
    log_t.finish()

    api = parse_api(doc.table("api"), base, state_dir)

    store_t = doc.table("store")
    store = StoreConfig(
        path=store_t.path("path", base=state_dir, default="hesd.db"),
        commit_interval=store_t.number("commit_interval", lo=0, hi=1, default=0.0),
        commit_max_batch=store_t.integer("commit_max_batch", lo=1, hi=100_000, default=2000),
        slow_commit=store_t.number("slow_commit", lo=0.001, hi=60, default=0.5),
    )
    store_t.finish()

    vendors_t = doc.table("vendors")
    vendors = VendorsConfig(
        dir=vendors_t.path("dir", base=base, default="conf/vendors"),
        enabled=vendors_t.string_list(
            "enabled", default=(), pattern=VENDOR_NAME, describe="vendor names (a-z, 0-9, _ and -)"
        ),
    )
    vendors_t.finish()

    uplink_t = doc.table("uplink")
    uplink = _uplink_config(uplink_t, base)
    uplink_t.finish()

    dlms_t = doc.table("dlms")
    dlms = DlmsConfig(
        system_title=bytes.fromhex(
            dlms_t.string(
                "system_title",
                default="4845534400000001",
                pattern=r"[0-9A-Fa-f]{16}",
                describe="16 hex digits (an 8-byte system title)",
            )
        ),
    )
    dlms_t.finish()

    tcp_t = doc.table("tcp")
    listen = tuple(
        _host_port(tcp_t, "listen", i, item)
        for i, item in enumerate(
            tcp_t.string_list("listen", default=(), describe="host:port strings")
        )
    )
    tcp = TcpConfig(
        listen=listen,
        identify_timeout=tcp_t.number("identify_timeout", lo=1, hi=3600, default=30.0),
        identify_max_bytes=tcp_t.integer("identify_max_bytes", lo=64, hi=1 << 20, default=4096),
        connect_timeout=tcp_t.number("connect_timeout", lo=0.1, hi=600, default=10.0),
        backoff_initial=tcp_t.number("backoff_initial", lo=0.01, hi=3600, default=1.0),
        backoff_max=tcp_t.number("backoff_max", lo=0.01, hi=86400, default=300.0),
        per_destination=tcp_t.integer("per_destination", lo=1, hi=10_000, default=4),
        idle_close=tcp_t.number("idle_close", lo=1, hi=86400, default=300.0),
    )
    tcp_t.finish()

    limits_t = doc.table("limits")
    intake_pause, intake_resume, intake_max_pause = _intake_marks(limits_t)
    limits = LimitsConfig(
        max_requests=limits_t.integer("max_requests", lo=1, hi=1_000_000, default=2000),
        request_timeout=limits_t.number("request_timeout", lo=1, hi=86400, default=120.0),
        session_max_bytes=limits_t.integer(
            "session_max_bytes", lo=1024, hi=1 << 30, default=16 << 20
        ),
        command_workers=limits_t.integer("command_workers", lo=1, hi=100_000, default=64),
        intake_lag_pause=intake_pause,
        intake_lag_resume=intake_resume,
        intake_max_pause=intake_max_pause,
    )
    limits_t.finish()

    serial_t = doc.table("serial")
    serial = SerialConfig(
        ports=tuple(_serial_port(port_t) for port_t in serial_t.table_list("ports")),
        reopen_initial=serial_t.number("reopen_initial", lo=0.01, hi=3600, default=1.0),
        reopen_max=serial_t.number("reopen_max", lo=0.01, hi=86400, default=60.0),
    )
    paths = [port.path for port in serial.ports]
    for index, path in enumerate(paths):
        if path in paths[:index]:
            raise ConfigError(
                serial_t.source,
                f"{serial_t.key_path('ports')}[{index}].path",
                f'"{path}" is already serial.ports[{paths.index(path)}]',
            )
    serial_t.finish()

    mqtt = _mqtt_config(doc.table("mqtt"), base)
    scheduler = parse_scheduler(doc.table("scheduler"))
    schedules = parse_schedules(doc)
    alerts = parse_alerts(doc)

    firmware_t = doc.table("firmware")
    firmware = FirmwareConfig(
        max_image_bytes=firmware_t.integer(
            "max_image_bytes", lo=1024, hi=1 << 30, default=16 << 20
        ),
        max_attempts=firmware_t.integer("max_attempts", lo=1, hi=100, default=10),
        retry_backoff=firmware_t.number("retry_backoff", lo=0, hi=3600, default=10.0),
        attempt_timeout=firmware_t.number("attempt_timeout", lo=10, hi=86400, default=3600.0),
        verify_timeout=firmware_t.number("verify_timeout", lo=1, hi=3600, default=300.0),
    )
    firmware_t.finish()

    doc.finish()
    return Config(
        doc.source,
        daemon,
        log,
        api,
        store,
        vendors,
        uplink,
        dlms,
        tcp,
        limits,
        serial,
        mqtt,
        scheduler,
        schedules,
        firmware,
        alerts,
    )


def _intake_marks(table: Table) -> tuple[float, float, float]:
    """``[limits]`` intake_lag_pause, intake_lag_resume, intake_max_pause (hesd/intake.py)."""
    pause = table.number("intake_lag_pause", lo=0, hi=10, default=0.1)
    resume = table.number("intake_lag_resume", lo=0.001, hi=10, default=0.02)
    if pause > 0 and resume >= pause:  # blame the key the file set (both: the resume mark)
        if "intake_lag_resume" in table:
            raise table.error(
                "intake_lag_resume",
                f"must be below limits.intake_lag_pause ({pause:g}), got {resume:g}",
            )
        raise table.error(
            "intake_lag_pause",
            f"must be above limits.intake_lag_resume ({resume:g}), or 0 (off), got {pause:g}",
        )
    return pause, resume, table.number("intake_max_pause", lo=0.05, hi=60, default=1.0)


def _serial_port(table: Table) -> SerialPortConfig:
    path = table.string(
        "path",
        pattern=r"/[^\s:]+",
        describe="an absolute device path without spaces or colons (e.g. /dev/ttyUSB0)",
    )
    kind = table.choice("kind", SERIAL_KINDS, default="rs485")
    optical = kind == "optical"
    baud = table.integer("baud", lo=300, hi=115200, default=9600)
    rates = OPTICAL_BAUDS if optical else SERIAL_BAUDS
    if baud not in rates:
        raise table.error("baud", f"expected one of {', '.join(map(str, rates))}, got {baud}")
    if optical:
        for key in ("bytesize", "parity", "stopbits"):
            if key in table:  # IEC 62056-21 §5.4: 7E1 to sign on; IEC 62056-46: 8N1 after
                raise table.error(key, "not for optical ports (7E1 to sign on, then 8N1)")
    else:
        for key in ("inactivity", "software_parity"):
            if key in table:
                raise table.error(key, "only for optical ports")
    port = SerialPortConfig(
        path=path,
        kind=kind,
        baud=baud,
        bytesize=8 if optical else table.integer("bytesize", lo=5, hi=8, default=8),
        parity="N" if optical else table.choice("parity", ("N", "E", "O"), default="N"),
        stopbits=1 if optical else table.integer("stopbits", lo=1, hi=2, default=1),
        inter_request_gap=table.number("inter_request_gap", lo=0, hi=10, default=0.05),
        settle_time=table.number("settle_time", lo=0, hi=60, default=0.5),
        inactivity=table.number("inactivity", lo=1, hi=86400, default=120.0),
        software_parity=table.boolean("software_parity", default=False),
    )
    table.finish()
    return port


def _tls_files(
    table: Table, base: Path, section: str, requirement: str, tls: bool
) -> dict[str, Path | None]:
    files: dict[str, Path | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        path = optional_path(table, key, base)
        if path is not None and not tls:
            raise table.error(key, f"is only used with {requirement}")
        if path is not None and not path.is_file():
            raise table.error(key, f"file {path} not found")
        files[key] = path
    if files["key_file"] is not None and files["cert_file"] is None:
        raise table.error("key_file", f"needs {section}.cert_file (the client certificate)")
    return files


def _uplink_config(table: Table, base: Path) -> UplinkConfig:
    url = table.string(
        "url",
        default="",
        pattern=r"(https?://[^\s/]+(/\S*)?)?",
        describe="an http(s) URL, or empty",
    )
    files = _tls_files(table, base, "uplink", "an https uplink.url", url.startswith("https://"))
    auth = table.choice("auth", ("bearer", "api-key", "none"), default="bearer")
    token = table.string(
        "token",
        default="",
        pattern=f"({NAME_PATTERN})?",
        describe="the name of a token in the secrets file's [tokens], or empty",
    )
    if auth == "none" and token:
        raise table.error("token", 'is not used with uplink.auth = "none"')
    backoff_initial = table.number("backoff_initial", lo=0.01, hi=3600, default=1.0)
    backoff_max = table.number("backoff_max", lo=0.01, hi=86400, default=300.0)
    if backoff_max < backoff_initial:
        raise table.error("backoff_max", f"must be at least backoff_initial ({backoff_initial})")
    config = UplinkConfig(
        url=url.rstrip("/"),
        batch_size=table.integer("batch_size", lo=1, hi=10_000, default=1000),
        batch_delay=table.number("batch_delay", lo=0, hi=60, default=1.0),
        max_backlog_bytes=table.integer(
            "max_backlog_bytes", lo=1 << 20, hi=1 << 42, default=4 << 30
        ),
        hes_id=table.string(
            "hes_id",
            default="",
            pattern=r"([A-Za-z0-9._-]{1,64})?",
            describe="1..64 of A-Z a-z 0-9 . _ -, or empty for the host name",
        )
        or _default_hes_id(),
        auth=auth,
        token=token,
        lanes=table.integer("lanes", lo=1, hi=64, default=4),
        timeout=table.number("timeout", lo=0.1, hi=600, default=30.0),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
    )
    table.finish()
    return config


def _default_hes_id() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
    return host or "hesd"


def _mqtt_config(table: Table, base: Path) -> MqttConfig:
    broker_text = table.string("broker", default="", describe='"host:port", or empty for none')
    broker = _host_port(table, "broker", None, broker_text) if broker_text else None
    tls = table.boolean("tls", default=False)
    files = _tls_files(table, base, "mqtt", "mqtt.tls = true", tls)
    username = table.string("username", default="", max_length=256)
    password_token = table.string(
        "password_token",
        default="",
        pattern=f"({NAME_PATTERN})?",
        describe="the name of a token in the secrets file's [tokens], or empty",
    )
    if password_token and not username:
        raise table.error("password_token", "needs mqtt.username")
    uplink = _topic_template(table, "uplink_topic", "meters/{meter_id}/up")
    downlink = _topic_template(table, "downlink_topic", "meters/{meter_id}/down")
    if uplink == downlink:
        raise table.error("downlink_topic", "must differ from mqtt.uplink_topic")
    config = MqttConfig(
        broker=broker,
        tls=tls,
        tls_verify=table.boolean("tls_verify", default=True),
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        username=username,
        password_token=password_token,
        client_id=table.string(
            "client_id",
            default="",
            pattern=r"[A-Za-z0-9_.:-]{0,128}",
            describe="up to 128 of A-Z a-z 0-9 _ . : - (empty: hesd-<hostname>)",
        ),
        keepalive=table.integer("keepalive", lo=5, hi=3600, default=60),
        shared_group=table.string(
            "shared_group",
            default="",
            pattern=f"({NAME_PATTERN})?",
            describe="a group name of 1..64 of A-Z a-z 0-9 _ . -, or empty",
        ),
        uplink_topic=uplink,
        downlink_topic=downlink,
        max_queue=table.integer("max_queue", lo=1, hi=100_000, default=64),
        backoff_initial=table.number("backoff_initial", lo=0.01, hi=3600, default=1.0),
        backoff_max=table.number("backoff_max", lo=0.01, hi=86400, default=60.0),
    )
    table.finish()
    return config


def _topic_template(table: Table, key: str, default: str) -> str:
    """An MQTT topic with one whole level ``{meter_id}`` and no wildcards (MQTT 3.1.1 §4.7)."""
    text = table.string(
        key, default=default, describe='a topic with one "{meter_id}" level', max_length=256
    )
    levels = text.split("/")
    if levels.count("{meter_id}") != 1:
        raise table.error(
            key, f'expected exactly one whole topic level "{{meter_id}}", got "{text}"'
        )
    rest = "/".join(level for level in levels if level != "{meter_id}")
    if any(c in rest for c in "+#{}\x00") or text.startswith("$"):
        raise table.error(
            key,
            f'expected no wildcards (+ #), braces or leading $ besides {{meter_id}}, got "{text}"',
        )
    return text


def _host_port(table: Table, key: str, index: int | None, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            table.source,
            table.key_path(key) if index is None else f"{table.key_path(key)}[{index}]",
            f'expected "host:port" (port 1..65535), got "{text}"',
        )
    return host, int(port)


def resolve_config_path(explicit: Path | None) -> Path | None:
    """``--config`` wins, then ``$HESD_CONFIG``; ``None`` means the embedded defaults."""
    if explicit is not None:
        return explicit
    env = os.environ.get("HESD_CONFIG", "")
    return Path(env) if env else None


def load_config(path: Path | None) -> Config:
    """Load hesd.toml from ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        return parse_config(Table(EMBEDDED, {}), Path.cwd())
    return parse_config(load_toml(path, source=str(path)), path.resolve().parent)
