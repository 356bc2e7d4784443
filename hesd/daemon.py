"""The hesd daemon: one TaskGroup of named tasks, graceful drain, reload, systemd integration.

Life cycle:

* start: take the state-directory lock, load vendor profiles and secrets, open (and migrate) the
  store, serve the API on the unix socket (and on TCP with TLS for the MDM, ``api.listen``), send
  ``READY=1``;
* SIGHUP: reload vendor profiles and secrets (API keys included), ``[api.clients]``, the API's
  TLS certificate, ``[scheduler]``, the schedules and the intake gate's marks (``[limits]``
  intake_*) from the same config file; a file with errors is refused and the running
  configuration kept; sessions stay up;
* SIGTERM/SIGINT: ``STOPPING=1``, stop accepting, let in-flight work finish for up to
  ``daemon.drain_timeout`` seconds, commit and checkpoint the store, exit 0.

A task that fails brings the TaskGroup down: hesd logs why and exits non-zero, and systemd restarts
it. The watchdog is only pinged while the store writer makes progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import gc
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any, Final

import structlog
from aiohttp import web

from adapters.hooks import MeterContext, load_adapter
from adapters.normalise import Batch, Normaliser
from adapters.profile import VendorProfile
from adapters.schema import ConfigError
from hesd import __version__
from hesd.alerts import Alerts, Yielding
from hesd.api.app import build_app
from hesd.api.audit import ApiAudit
from hesd.api.listener import ApiListenError, ApiSite
from hesd.api.security import ApiGuard
from hesd.commands import command_kinds
from hesd.config import Config, load_config
from hesd.firmware_images import ImageStore
from hesd.intake import IntakeGate
from hesd.notify import Notifier
from hesd.router import CommandRouter
from hesd.schedule_reads import SessionReader
from hesd.scheduler import Scheduler
from hesd.secrets import SecretStore, load_secrets
from hesd.sessions import SessionManager
from hesd.store import InvocationCounters, Registry, Store
from hesd.transports.mqtt import MqttTransport
from hesd.transports.mqtt_json import JsonRecord
from hesd.transports.serial import SerialPorts
from hesd.transports.tcp import TcpDialer, TcpListener
from hesd.uplink.forwarder import Forwarder
from hesd.uplink.outbox import Outbox, OutboxState, Record
from protocols.dlms import apdu as x
from protocols.errors import HesdError

__all__ = ["Daemon", "DaemonError"]

log = structlog.get_logger("hesd.daemon")

STATUS_INTERVAL: Final = 15.0


class DaemonError(HesdError):
    """hesd cannot start (state directory locked, socket in use, ...)."""


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        notifier: Notifier | None = None,
        *,
        tune_gc: bool = False,
    ) -> None:
        self.config = config
        self._tune_gc = tune_gc  # the process is hesd's own (hesd run): tune its collector
        self.config_path = config_path
        self.notifier = notifier or Notifier.from_environ()
        self.state = "starting"
        self.started_at = time.time()
        self.vendors: dict[str, VendorProfile] = {}
        self.secrets = SecretStore(source=None)
        self.import_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._store: Store | None = None
        self._registry: Registry | None = None
        self.counters: InvocationCounters | None = None
        self._sessions: SessionManager | None = None
        self.listener: TcpListener | None = None
        self.serial: SerialPorts | None = None
        self.mqtt: MqttTransport | None = None
        self.normalisers: dict[str, Normaliser] = {}
        self.outbox: Outbox | None = None
        self.router: CommandRouter | None = None
        self.scheduler: Scheduler | None = None
        self.images = ImageStore(
            config.daemon.state_dir / "images", config.firmware.max_image_bytes
        )
        self.forwarder: Forwarder | None = None
        # stops reading meters' TCP sockets while the event loop lags (task intake:gate)
        self.intake = IntakeGate(*_intake_marks(config))
        self.alerts: Alerts | None = None
        self.audit: ApiAudit | None = None
        self.api_guard: ApiGuard | None = None  # with [api.clients]: what the TCP listener checks
        self.api_site: ApiSite | None = None  # the TCP listener, with api.listen
        self.pushes_received = 0
        self.json_records = 0
        self.readings_normalised = 0
        self.normalise_errors = 0
        self.reloads = 0

    # -- what the API reads ------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            raise DaemonError("store is not open")
        return self._store

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise DaemonError("store is not open")
        return self._registry

    @property
    def active_sessions(self) -> int:
        return 0 if self._sessions is None else self._sessions.active

    @property
    def sessions(self) -> SessionManager:
        if self._sessions is None:
            raise DaemonError("sessions are not running")
        return self._sessions

    def _on_notification(
        self, meter_id: str, notification: x.DataNotification | x.EventNotification, now: float
    ) -> None:
        self.pushes_received += 1
        session = self.sessions.attached(meter_id) if self._sessions is not None else None
        if session is None or not isinstance(notification, x.DataNotification):
            log.debug("daemon.push", meter=meter_id)
            return
        profile = session.settings.profile
        normaliser = self.normalisers.get(profile.name)
        if normaliser is None:
            return
        context = MeterContext(meter_id, profile.name, session.firmware, profile.model)
        if self.alerts is not None and self.alerts.on_push(context, normaliser, notification.body):
            return  # an alert push: hesd/alerts.py
        try:
            # the fast path: the readings' wire form without Reading objects, when it applies
            texts = normaliser.push_wire(context, notification.body)
            batch = normaliser.push(context, notification.body) if texts is None else None
        except Exception:  # a vendor adapter's bug must not end the meter's session
            log.exception("daemon.normalise_crashed", meter=meter_id, adapter=profile.adapter)
            self.normalise_errors += 1
            return
        if batch is None:
            self._offer_texts(meter_id, texts or [])
        else:
            self._normalised(batch, meter_id, "push")

    def _on_json(self, meter_id: str, record: JsonRecord, now: float) -> None:
        self.json_records += 1
        session = self.sessions.attached(meter_id) if self._sessions is not None else None
        vendor = None if session is None else session.settings.profile.name
        normaliser = None if vendor is None else self.normalisers.get(vendor)
        if normaliser is None:
            log.debug("daemon.json_record", meter=meter_id, values=len(record.values))
            return
        context = MeterContext(meter_id, normaliser.profile.name, None, normaliser.profile.model)
        try:
            batch = normaliser.json_values(context, record.timestamp, record.values)
        except Exception:  # as for pushes: the adapter's bug is logged, the link lives
            log.exception("daemon.normalise_crashed", meter=meter_id, adapter=vendor)
            self.normalise_errors += 1
            return
        self._normalised(batch, meter_id, "json")

    def _normalised(self, batch: Batch, meter_id: str, what: str) -> None:
        self.readings_normalised += len(batch.readings)
        self.normalise_errors += len(batch.errors)
        for error in batch.errors[:1]:
            log.warning("daemon.normalise_failed", meter=meter_id, kind=what, error=str(error))
        records: list[Record] = [*batch.readings, *batch.events]
        self._offer(meter_id, what, len(records), lambda outbox: outbox.offer(records))

    def _offer_texts(self, meter_id: str, texts: list[str]) -> None:
        """A push's readings in their wire form to the outbox (``_normalised``'s fast path)."""
        self.readings_normalised += len(texts)
        self._offer(
            meter_id,
            "push",
            len(texts),
            lambda outbox: outbox.offer_texts("reading", meter_id, texts),
        )

    def _offer(
        self,
        meter_id: str,
        what: str,
        count: int,
        offer: Callable[[Outbox], asyncio.Future[None]],
    ) -> None:
        """``count`` records to the outbox, by ``offer``: refused (``OutboxFull``, logged and
        counted there; the store closing), logged; lost in a failed commit, logged."""
        if not count or self.outbox is None:
            return
        try:
            committed = offer(self.outbox)
        except HesdError as exc:
            log.error("daemon.records_refused", meter=meter_id, kind=what, error=str(exc))
            return
        committed.add_done_callback(_report_failed_commit(meter_id, count))

    async def outbox_state(self) -> OutboxState:
        if self.outbox is None:
            raise DaemonError("store is not open")
        return await self.outbox.state()

    # -- control -----------------------------------------------------------------------------

    def request_stop(self, reason: str = "request") -> None:
        if not self._stop.is_set():
            log.info("daemon.stopping", reason=reason)
            self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until asked to stop; raises on a startup failure or a crashed task."""
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            state_dir = self.config.daemon.state_dir
            lock = _lock_state_dir(state_dir)
            stack.callback(lock.close)
            self.vendors = self.config.load_vendor_profiles()
            self.normalisers = build_normalisers(self.vendors)
            self.secrets = load_secrets(self.config.daemon.secrets_file)
            if self.config.api.clients:  # their keys and the TLS files, before anything starts
                self.api_guard = ApiGuard.from_config(
                    self.config.api, self.secrets, self.config.source
                )

            for sig, handler in (
                (signal.SIGTERM, lambda: self.request_stop("SIGTERM")),
                (signal.SIGINT, lambda: self.request_stop("SIGINT")),
                (signal.SIGHUP, self.request_reload),
            ):
                loop.add_signal_handler(sig, handler)
                stack.callback(loop.remove_signal_handler, sig)

            self.images.open()
            store = await Store.open(self.config.store)
            self._store = store
            self._registry = Registry(store)
            self.counters = InvocationCounters(store)
            self.outbox = Outbox(
                store, self.config.uplink.max_backlog_bytes, self.config.uplink.batch_size
            )
            await self.outbox.load()
            config = self.config
            if config.uplink.url:
                self.forwarder = Forwarder(
                    config.uplink, store, self.outbox, self.secrets, config.source
                )
            self._sessions = SessionManager(
                registry=self._registry,
                counters=self.counters,
                vendors=self.vendors,
                secrets=self.secrets,
                client_system_title=config.dlms.system_title,
                max_requests=config.limits.max_requests,
                request_timeout=config.limits.request_timeout,
                session_max_bytes=config.limits.session_max_bytes,
                on_notification=self._on_notification,
            )
            self._sessions.dialer = TcpDialer(config.tcp, self.intake)
            self.alerts = Alerts(
                config.alerts,
                store=store,
                access=self._sessions,
                normalisers=lambda: self.normalisers,
                sink=self.outbox,
            )
            stack.push_async_callback(store.close)
            self.audit = ApiAudit(store, config.api.audit_retention_days, config.api.audit_max_rows)

            runner = web.AppRunner(
                build_app(self),
                shutdown_timeout=self.config.daemon.drain_timeout,
                access_log=None,
                handle_signals=False,
            )
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            sock = _bind_unix_socket(self.config.api.socket, self.config.api.socket_mode)
            stack.callback(_unlink_quietly, self.config.api.socket)
            await web.SockSite(runner, sock).start()
            runners = [runner]
            if config.api.listen is not None and self.api_guard is not None:
                runners.append(await self._serve_tcp(stack))
            self.listener = TcpListener(config.tcp, self._sessions, self._registry, self.intake)
            stack.push_async_callback(self.listener.close)
            await self.listener.start()
            self.serial = SerialPorts(config.serial, self._sessions, self._registry)
            self._sessions.providers["serial"] = self.serial  # late imports: docs/transports.md
            stack.push_async_callback(self.serial.close)
            if config.mqtt.broker is not None:  # one broker connection: docs/transports.md
                self.mqtt = MqttTransport(
                    config.mqtt,
                    self._sessions,
                    self._registry,
                    secrets=self.secrets,
                    source=config.source,
                    on_json=self._on_json,
                )
                self._sessions.providers["mqtt"] = self.mqtt
                stack.push_async_callback(self.mqtt.close)

            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(store.run_writer(), name="store:writer")
                helpers = [
                    _named(tg, self.intake.run(), "intake:gate"),
                    _named(tg, self._reloader(), "daemon:reload"),
                    _named(tg, self._status_reporter(), "daemon:status"),
                ]
                self.serial.start(tg)  # serial:{path}:bus tasks: open, attach, reopen
                if self.notifier.watchdog_interval is not None:
                    helpers.append(_named(tg, self._watchdog(), "daemon:watchdog"))
                if self.mqtt is not None:
                    helpers.append(_named(tg, self.mqtt.run(), "mqtt:client"))
                if self.forwarder is not None:
                    helpers.append(_named(tg, self.forwarder.run(), "uplink:forwarder"))
                helpers.append(_named(tg, self.audit.run_retention(), "api:audit:retention"))
                router = self.router = CommandRouter(
                    store,
                    self._sessions,
                    command_kinds(
                        lambda: self.normalisers, images=self.images, firmware=config.firmware
                    ),
                    self.outbox,
                    workers=config.limits.command_workers,
                )
                self._sessions.on_online.append(router.meter_online)
                router_task = _named(tg, router.run(), "router:commands")
                alerts_task = _named(tg, self.alerts.run(), "alerts:reads")
                scheduler = self.scheduler = Scheduler(
                    config.scheduler,
                    config.schedules,
                    store=store,
                    registry=self._registry,
                    reader=SessionReader(self._sessions, lambda: self.normalisers),
                    sink=self.outbox,
                    normalisers=lambda: self.normalisers,
                    commands=Yielding(router, self.alerts),  # a meter's commands, alerts first
                    max_requests=config.limits.max_requests,
                    per_destination=config.tcp.per_destination,
                )
                scheduler_task = _named(tg, scheduler.run(), "scheduler:runs")
                self.state = "running"
                if self._tune_gc:
                    _tune_gc()
                self.notifier.notify("READY=1", f"STATUS={await self._status_line()}")
                log.info(
                    "daemon.ready",
                    version=__version__,
                    config=self.config.source,
                    socket=str(self.config.api.socket),
                    listen=None if self.api_site is None else self.api_site.name,
                    vendors=sorted(self.vendors),
                    pid=os.getpid(),
                )
                await self._stop.wait()

                self.state = "draining"
                self.notifier.notify("STOPPING=1", "STATUS=draining")
                started = time.monotonic()
                await self.listener.close()  # stop accepting meters
                # stop accepting API calls, wait for those in flight (bounded)
                await asyncio.gather(*(r.cleanup() for r in runners))
                scheduler.close()  # runs in progress end 'cancelled'
                await scheduler_task
                router.close()  # commands in flight stay 'sent': judged at the next start
                await router_task
                self.alerts.close()  # event-log reads in flight end; their marks stay
                await alerts_task
                await self._sessions.close(grace=self.config.daemon.drain_timeout)
                await self.serial.close()  # after the sessions: their goodbyes go out first
                if self.mqtt is not None:
                    await self.mqtt.close()  # after the sessions: their releases go out first
                for task in helpers:
                    task.cancel()
                await store.close()  # commits what is queued; the writer task then returns
                await writer
                log.info("daemon.drained", seconds=round(time.monotonic() - started, 3))
        self.state = "stopped"
        self.notifier.close()

    async def _serve_tcp(self, stack: contextlib.AsyncExitStack) -> web.AppRunner:
        """The API for the MDM on ``api.listen``: its own application (the guard's middleware,
        its own body limit) and runner, stopped with the socket's at the drain."""
        listen, guard = self.config.api.listen, self.api_guard
        assert listen is not None
        assert guard is not None
        runner = web.AppRunner(
            build_app(self, guard),
            shutdown_timeout=self.config.daemon.drain_timeout,
            access_log=None,
            handle_signals=False,
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = ApiSite(runner, listen[0], listen[1], guard)
        try:
            await site.start()
        except ApiListenError as exc:
            raise DaemonError(str(exc)) from None
        self.api_site = site
        log.info(
            "api.listening",
            url=site.name,
            clients=[c.name for c in guard.gatekeeper.clients],
            mutual_tls=self.config.api.tls_client_ca_file is not None,
        )
        return runner

    async def _status_line(self) -> str:
        counts = await self.registry.counts()
        outbox = await self.outbox_state()
        return (
            f"{sum(counts.values())} meters ({counts['online']} online), "
            f"{self.active_sessions} sessions, outbox {outbox.depth}"
        )

    async def _status_reporter(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self.notifier.notify(f"STATUS={await self._status_line()}")

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        assert interval is not None
        stall_after = interval * 2  # the full WatchdogSec: a writer stuck that long is not healthy
        while True:
            if self.store.healthy(stall_after):
                self.notifier.notify("WATCHDOG=1")
            else:
                log.error(
                    "daemon.unhealthy",
                    reason="store writer stalled",
                    oldest_write_age=round(self.store.oldest_pending_age(), 3),
                )
            await asyncio.sleep(interval)

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                self.reload()
            finally:
                self.notifier.notify("READY=1", f"STATUS={await self._status_line()}")

    def reload(self) -> bool:
        """Re-read vendor profiles, the secrets file and the schedules; on any error keep what
        runs and log why.

        ``[vendors]``, ``[api.clients]``, ``[scheduler]``, ``[schedules.*]`` and the intake
        gate's marks (``[limits]`` intake_*) apply at once (a run in progress finishes under its
        old definition, or is cancelled if its schedule was removed or disabled:
        ``hesd/scheduler.py``), and the API's TLS files are read again; changes to other
        sections and keys (the secrets file's path included) are logged as
        ``config.restart_required`` and wait for a restart.
        """
        try:
            fresh = load_config(self.config_path)
            vendors = fresh.load_vendor_profiles()
            normalisers = build_normalisers(vendors)
            secrets = load_secrets(self.config.daemon.secrets_file)  # the path is a restart setting
            api = dataclasses.replace(self.config.api, clients=fresh.api.clients)
            # while the TCP listener runs (api.listen waits for a restart), its guard takes the
            # file's clients, none included: a client removed from the file is refused at once
            guard = (
                ApiGuard.from_config(api, secrets, fresh.source)
                if api.clients or self.api_guard is not None
                else None
            )
        except ConfigError as exc:
            log.error("config.reload_failed", error=str(exc))
            return False
        applied = dataclasses.replace(
            self.config,
            vendors=fresh.vendors,
            api=api,
            limits=dataclasses.replace(
                self.config.limits, **{key: getattr(fresh.limits, key) for key in RELOADED_LIMITS}
            ),
            scheduler=fresh.scheduler,
            schedules=fresh.schedules,
        )
        # what the file says beyond what applies now waits for a restart
        changed = [
            name
            for name in (
                "daemon",
                "log",
                "api",
                "store",
                "uplink",
                "dlms",
                "tcp",
                "limits",
                "serial",
                "mqtt",
                "firmware",
                "alerts",
            )
            if getattr(fresh, name) != getattr(applied, name)
        ]
        if changed:
            log.warning(
                "config.restart_required",
                sections=changed,
                detail="these sections apply at the next restart",
            )
        self.config = applied
        self.intake.configure(*_intake_marks(self.config))
        if self.api_guard is not None and guard is not None:
            self.api_guard.replace(guard)
        self.vendors = vendors
        self.normalisers = normalisers
        self.secrets = secrets
        if self._sessions is not None:
            self._sessions.reload(vendors, secrets)
        if self.mqtt is not None:
            self.mqtt.reload()  # the vendors' uplink topics
        if self.scheduler is not None:
            self.scheduler.reload(fresh.scheduler, fresh.schedules)
        self.reloads += 1
        log.info(
            "config.reloaded",
            vendors=sorted(vendors),
            keysets=len(secrets.keysets),
            api_clients=[c.name for c in api.clients],
        )
        return True


# the keys of [limits] a reload applies at once (the intake gate's marks); the rest wait for a
# restart
RELOADED_LIMITS: Final = ("intake_lag_pause", "intake_lag_resume", "intake_max_pause")

GC_YOUNG: Final = 10_000  # allocations less deallocations between young collections


def _tune_gc() -> None:
    """Fewer, cheaper cyclic garbage collections for a daemon of long-lived sessions.

    With CPython's default (a young collection every 700 net allocations) the objects of pushes
    in flight (futures, rows, batches) were promoted into the older generations, whose
    collections walk every session's objects: at 5,000 pushes/s, 10 % of hesd's CPU went to
    collections, and a full one took ~80 ms, stalling the loop. Young collections every 10,000
    cut that to 2 % with no full collection in the run (``bench/uplink.py``, docs/benchmarks.md).
    What start-up built (modules, configuration, profiles) lives as long as the process: frozen,
    collections no longer walk it. Reference counting frees everything else as before.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


def _intake_marks(config: Config) -> tuple[float, float, float]:
    limits = config.limits
    return limits.intake_lag_pause, limits.intake_lag_resume, limits.intake_max_pause


def _report_failed_commit(meter_id: str, count: int) -> Callable[[asyncio.Future[None]], None]:
    def done(future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error(
                "daemon.records_lost",
                meter=meter_id,
                records=count,
                error=str(future.exception()),
            )

    return done


def build_normalisers(vendors: dict[str, VendorProfile]) -> dict[str, Normaliser]:
    """One normaliser per profile, with the adapter it names; ``ConfigError`` if one is missing."""
    return {
        name: Normaliser(profile, load_adapter(profile.adapter, profile.source))
        for name, profile in vendors.items()
    }


def _named(tg: asyncio.TaskGroup, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return tg.create_task(coro, name=name)


def _lock_state_dir(state_dir: Path) -> IO[str]:
    """Hold an exclusive lock on ``state_dir/hesd.lock`` so two daemons never share a store."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = (state_dir / "hesd.lock").open("a+")
    except OSError as exc:
        raise DaemonError(f"{state_dir}: cannot use state directory: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DaemonError(
            f"{state_dir}: another hesd is running with this state directory"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _bind_unix_socket(path: Path, mode: int) -> socket.socket:
    """Bind the API socket with ``mode`` from the start (no window with wider permissions)."""
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            _unlink_quietly(path)  # nobody answers: a stale socket from a crashed hesd
        else:
            raise DaemonError(f"{path}: another process serves this API socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise DaemonError(f"{path}: cannot bind the API socket: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
