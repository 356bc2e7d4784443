"""The DLMS/COSEM codec, client side: our ``protocols/dlms`` against gurux-dlms in the same run.

Median CPU time per operation (``time.process_time_ns`` over a loop of many operations, garbage
collection off while timed; repeated, the median of the repeats is reported). Every operation
goes through the same layers on both sides: WRAPPER frame in and out (gurux only works on
frames, so ours includes ``encode_wrapper`` and ``WrapperFramer``), the client connection, the
APDU codec, A-XDR and, where ciphered, suite-0 AES-GCM. The server side (AARE, responses,
notifications) is prepared beforehand with our encoders and a ``SecurityContext`` with the
titles swapped, outside the timed region; gurux is given the very same frames, and both sides'
results are checked against the expected values before anything is timed.

    .venv/bin/python bench/codec.py [--repeat 7] [--seconds 0.25] [--quick] [--out PATH]

Prints a table and writes bench/results/codec.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import io
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from gurux_dlms import (
    GXByteBuffer,
    GXDLMSClient,
    GXDLMSNotify,
    GXReplyData,
    GXStructure,
    GXUInt16,
    GXUInt32,
)
from gurux_dlms.enums import Authentication, DataType, InterfaceType, Security
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, write_report
from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms import connection as connection_module
from protocols.dlms.acse import (
    Aare,
    Aarq,
    AssociationResult,
    Conformance,
    InitiateResponse,
    Mechanism,
    decode_acse,
)
from protocols.dlms.axdr import DateTime, Tag, Typed, Value
from protocols.dlms.connection import (
    Associated,
    AssociationParameters,
    ClientConnection,
    GetCompleted,
    NotificationReceived,
)
from protocols.dlms.obis import ObisCode
from protocols.dlms.security import SecurityContext
from protocols.dlms.wrapper import WrapperFramer, encode_wrapper

# Green Book test keys and titles, as in tests/test_dlms_connection.py (gurux's defaults too)
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000BC614E")
SERVER_TITLE = bytes.fromhex("4953430000000001")
CTOS = bytes(range(0x40, 0x50))  # the client's challenge, fixed so server answers precompute
STOC = bytes(range(0x60, 0x70))  # the server's challenge
PUBLIC_CLIENT, HLS_CLIENT, SERVER = 16, 48, 1  # WRAPPER wPorts (client SAPs, logical device)
NOW = 1.0

ENERGY = x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 2)
PROFILE = x.AttributeDescriptor(7, ObisCode.parse("1.0.99.1.0.255"), 2)
ENERGY_VALUE = 123456
PROFILE_ROWS, PROFILE_BLOCKS = 96, 4


def iip(invoke_id: int) -> x.InvokeIdAndPriority:
    return x.InvokeIdAndPriority(invoke_id)


def wrap(apdu: bytes, client: int = PUBLIC_CLIENT) -> bytes:
    """A WRAPPER frame from the meter to ``client``."""
    return encode_wrapper(SERVER, client, apdu)


def invoke_ids(n: int, first: int = 1) -> list[int]:
    """Invoke ids of a connection's next n requests (first, .., 15, 0, 1, ..); a fresh
    connection starts at 1, one after HLS at 2 (pass 3 took 1)."""
    return [(first + i) % 16 for i in range(n)]


# -- the data on the wire -------------------------------------------------------------------------

STAMP = DateTime(2026, 11, 23, 1, 10, 15, 0, 0, -330, 0).to_octets()
# a push of 10 values: date-time, 5 energies, 4 voltages and currents
NOTIFICATION_BODY: tuple[Value, ...] = (
    STAMP,
    *(Typed(Tag.DOUBLE_LONG_UNSIGNED, 100_000 + i) for i in range(5)),
    *(Typed(Tag.LONG_UNSIGNED, 230 + i) for i in range(4)),
)
NOTIFICATION = x.DataNotification(0xC0000001, None, NOTIFICATION_BODY)
NOTIFICATION_VALUE = (STAMP, *range(100_000, 100_005), *range(230, 234))


def profile_rows() -> list[Any]:
    """96 rows of a 15-minute block load profile: clock + 7 columns (IS 15959 style)."""
    start = dt.datetime(2026, 11, 22, tzinfo=dt.timezone(dt.timedelta(minutes=330)))
    rows: list[Any] = []
    for i in range(PROFILE_ROWS):
        stamp = DateTime.from_datetime(start + dt.timedelta(minutes=15 * i)).to_octets()
        rows.append(
            (
                stamp,
                Typed(Tag.LONG_UNSIGNED, 23_000 + i),  # average voltage, V * 100
                Typed(Tag.LONG_UNSIGNED, 500 + i),  # average current, A * 100
                *(Typed(Tag.DOUBLE_LONG_UNSIGNED, 1000 * k + i) for k in range(5)),  # Wh, varh
            )
        )
    return rows


PROFILE_TYPED = profile_rows()
PROFILE_RAW = axdr.encode(PROFILE_TYPED)
PROFILE_VALUE: Any = axdr.decode_all(PROFILE_RAW)


def profile_blocks(invoke_id: int) -> list[bytes]:
    """The profile as 4 GET-Response-With-Datablock frames."""
    size = -(-len(PROFILE_RAW) // PROFILE_BLOCKS)
    parts = [PROFILE_RAW[i : i + size] for i in range(0, len(PROFILE_RAW), size)]
    return [
        encode_wrapper(
            SERVER,
            PUBLIC_CLIENT,
            x.GetResponseWithDatablock(iip(invoke_id), n == len(parts), n, part).encode(),
        )
        for n, part in enumerate(parts, start=1)
    ]


def gurux_value(value: Any) -> Any:
    """A value gurux decoded, in our terms (GXStructure -> tuple, bytearray -> bytes)."""
    if isinstance(value, GXStructure):
        return tuple(gurux_value(v) for v in value)
    if isinstance(value, list):
        return [gurux_value(v) for v in value]
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def check(what: str, got: object, expected: object) -> None:
    if got != expected:
        raise SystemExit(f"{what}: got {got!r:.300}, expected {expected!r:.300}")


class _Sink(io.TextIOBase):
    """gurux prints 'Encryption is applied.' for every ciphered APDU: swallow it."""

    def write(self, s: str) -> int:
        return len(s)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(_Sink()):
        yield


# -- our side: scripted associations --------------------------------------------------------------


class Meter:
    """The server side, from our encoders: a SecurityContext with the titles swapped."""

    def __init__(self) -> None:
        self.security = SecurityContext(
            system_title=SERVER_TITLE, ek=EK, ak=AK, server_system_title=CLIENT_TITLE
        )
        self.counter = 0

    def protect(self, apdu: bytes, *, general: bool = False) -> bytes:
        self.counter += 1
        return self.security.protect(apdu, self.counter, general=general)


HLS: Final = AssociationParameters(mechanism=Mechanism.HLS_GMAC, ciphered=True)


def ours_plain() -> ClientConnection:
    conn = ClientConnection(AssociationParameters())
    conn.associate(NOW)
    conn.data_to_send()
    initiate = InitiateResponse(Conformance(0x00501F), 0xFFFF).encode()
    aare = Aare(False, AssociationResult.ACCEPTED, 1, 0, initiate)
    assert isinstance(conn.receive_apdu(aare.encode(), NOW)[0], Associated)
    return conn


def hls_aare(meter: Meter) -> bytes:
    initiate = meter.protect(InitiateResponse(Conformance(0x00501F), 0xFFFF).encode())
    return Aare(
        True, AssociationResult.ACCEPTED, 1, 14, initiate, SERVER_TITLE, Mechanism.HLS_GMAC, STOC
    ).encode()


def hls_pass4(meter: Meter, pass3: bytes) -> bytes:
    """The meter checks the client's f(StoC) and answers f(CtoS) in a ciphered ACTION-Response."""
    request = x.decode_apdu(meter.security.unprotect(pass3))
    assert isinstance(request, x.ActionRequest)
    assert isinstance(request.parameters, bytes)
    meter.security.verify_gmac(STOC, request.parameters, nested=True)
    meter.counter += 1
    proof = meter.security.gmac(CTOS, meter.counter)
    reply = x.ActionResponse(request.invoke, x.ActionResult.SUCCESS, proof, True)
    return meter.protect(reply.encode())


@contextlib.contextmanager
def fixed_challenge() -> Iterator[None]:
    """Our CtoS fixed (as gurux's is by ``ctoSChallenge``) so the meter's answers precompute:
    ``ClientConnection.associate`` calls ``make_challenge``, patched here."""
    original = connection_module.make_challenge  # type: ignore[attr-defined]
    connection_module.make_challenge = lambda length=16: CTOS  # type: ignore[attr-defined]
    try:
        yield
    finally:
        connection_module.make_challenge = original  # type: ignore[attr-defined]


def ours_hls() -> tuple[ClientConnection, Meter, bytes, bytes]:
    """A ciphered HLS-GMAC association: the connection, the meter, its AARE and pass-4 APDUs.

    The AARE and pass 4 answer any fresh client SecurityContext (no counter history) with
    challenge CTOS, so ``ours_associate`` and ``gurux_associate`` reuse them."""
    meter = Meter()
    conn = ClientConnection(HLS, SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=AK))
    conn.grant_invocation_counters(1, (1 << 32) - 1)
    with fixed_challenge():
        conn.associate(NOW)
    aarq = decode_acse(conn.data_to_send()[0])
    assert isinstance(aarq, Aarq)
    meter.security.unprotect(aarq.user_information)
    aare = hls_aare(meter)
    assert conn.receive_apdu(aare, NOW) == []
    pass4 = hls_pass4(meter, conn.data_to_send()[0])
    assert isinstance(conn.receive_apdu(pass4, NOW)[-1], Associated)
    return conn, meter, aare, pass4


# -- gurux's side ---------------------------------------------------------------------------------


def gurux_plain() -> GXDLMSClient:
    return GXDLMSClient(
        True, PUBLIC_CLIENT, SERVER, Authentication.NONE, None, InterfaceType.WRAPPER
    )


def gurux_secure() -> GXDLMSSecureClient:
    client = GXDLMSSecureClient(
        True, HLS_CLIENT, SERVER, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER
    )
    client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    client.ciphering.systemTitle = bytearray(CLIENT_TITLE)
    client.ciphering.blockCipherKey = bytearray(EK)
    client.ciphering.authenticationKey = bytearray(AK)
    client.ciphering.invocationCounter = 1
    client.ctoSChallenge = bytearray(CTOS)  # gurux's way to fix CtoS: useCustomChallenge
    return client


def reply(client: GXDLMSClient, frame: bytes) -> GXReplyData:
    data = GXReplyData()
    client.getData(frame, data)
    return data


def gurux_hls(meter: Meter) -> GXDLMSSecureClient:
    """gurux through AARQ, AARE, pass 3 and pass 4 against our scripted meter."""
    client = gurux_secure()
    (aarq,) = client.aarqRequest()
    check("gurux AARQ", decode_acse(bytes(aarq)[8:]).__class__, Aarq)
    client.parseAareResponse(reply(client, wrap(hls_aare(meter), HLS_CLIENT)).data)
    (pass3,) = client.getApplicationAssociationRequest()
    pass4 = wrap(hls_pass4(meter, bytes(pass3)[8:]), HLS_CLIENT)
    client.parseApplicationAssociationResponse(reply(client, pass4).data)
    check("gurux association state", client.settings.connected & 2, 2)  # ConnectionState.DLMS
    return client


# -- the operations -------------------------------------------------------------------------------
# Each side of an operation is a ``prepare(n)`` that builds everything n operations need (server
# frames with fresh counters, connections) and returns ``run()``: the n operations, timed, which
# returns what the last one produced, for the check.

Prepare = Callable[[int], Callable[[], Any]]


def energy_response(invoke_id: int) -> bytes:
    return x.GetResponseNormal(
        iip(invoke_id), Typed(Tag.DOUBLE_LONG_UNSIGNED, ENERGY_VALUE)
    ).encode()


def ours_loop(
    conn: ClientConnection,
    ops: list[list[bytes]],
    get: x.AttributeDescriptor | None,
    finish: Callable[[Any], Any] | None = None,
) -> Callable[[], Any]:
    """Per operation: GET ``get`` (None: a push, nothing asked), then every frame of ``ops`` in,
    each preceded by what the connection has to send (GET, GET-Request-Next), WRAPPER-framed;
    then ``finish`` on the events, if given."""
    framer = WrapperFramer(HLS_CLIENT if conn.parameters.ciphered else PUBLIC_CLIENT, SERVER)
    client = framer.local_wport

    def run() -> Any:
        events: Any = None
        for frames in ops:
            if get is not None:
                conn.get(get, NOW)
            for frame in frames:
                for apdu in conn.data_to_send():
                    encode_wrapper(client, SERVER, apdu)
                framer.receive_data(frame)
                received = framer.next_frame()
                assert received is not None
                events = conn.receive_apdu(received.apdu, NOW)
            if finish is not None:
                events = finish(events)
        return events

    return run


def gurux_loop(
    client: GXDLMSClient,
    ops: list[list[bytes]],
    read: Any,
    finish: Callable[[Any], Any] | None = None,
) -> Callable[[], Any]:
    """The same with gurux: ``read(object, 2)`` (None: a push), ``getData`` on every frame,
    ``receiverReady`` for the GET-Request-Next while gurux says more data is due."""

    def run() -> Any:
        value = None
        for frames in ops:
            if read is not None:
                client.read(read, 2)
            data = GXReplyData()
            for frame in frames:
                client.getData(frame, data)
                if data.isMoreData():
                    client.receiverReady(data)
            value = data.value if finish is None else finish(data.value)
        return value

    return run


def ours_get_plain(n: int) -> Callable[[], Any]:
    by_invoke = [wrap(energy_response(i)) for i in range(16)]
    return ours_loop(ours_plain(), [[by_invoke[i]] for i in invoke_ids(n)], ENERGY)


def ours_get_ciphered(n: int) -> Callable[[], Any]:
    conn, meter, _, _ = ours_hls()
    ops = [[wrap(meter.protect(energy_response(i)), HLS_CLIENT)] for i in invoke_ids(n, first=2)]
    return ours_loop(conn, ops, ENERGY)


def ours_result(events: Any) -> Any:
    [event] = events
    assert isinstance(event, GetCompleted)
    return event.result


def gurux_get_plain(n: int) -> Callable[[], Any]:
    client = gurux_plain()
    register = GXDLMSRegister("1.0.1.8.0.255")
    (request,) = client.read(register, 2)
    check("gurux GET", bytes(request)[8:], x.GetRequestNormal(iip(1), ENERGY).encode())
    return gurux_loop(client, [[wrap(energy_response(1))]] * n, register)


def gurux_get_ciphered(n: int) -> Callable[[], Any]:
    meter = Meter()
    client = gurux_hls(meter)
    register = GXDLMSRegister("1.0.1.8.0.255")
    (request,) = client.read(register, 2)
    plain = meter.security.unprotect(bytes(request)[8:])
    check("gurux ciphered GET", plain, x.GetRequestNormal(iip(1), ENERGY).encode())
    ops = [[wrap(meter.protect(energy_response(1)), HLS_CLIENT)] for _ in range(n)]
    return gurux_loop(client, ops, register)


def ours_notification_plain(n: int) -> Callable[[], Any]:
    return ours_loop(ours_plain(), [[wrap(NOTIFICATION.encode())]] * n, None)


def ours_notification_ciphered(n: int) -> Callable[[], Any]:
    conn, meter, _, _ = ours_hls()
    plain = NOTIFICATION.encode()
    ops = [[wrap(meter.protect(plain, general=True), HLS_CLIENT)] for _ in range(n)]
    check("general-glo-ciphering, SC 0x30", (ops[0][0][8], ops[0][0][19]), (0xDB, 0x30))
    return ours_loop(conn, ops, None)


def ours_pushed(events: Any) -> Any:
    [event] = events
    assert isinstance(event, NotificationReceived)
    assert isinstance(event.notification, x.DataNotification)
    return event.notification.body


def gurux_notification_plain(n: int) -> Callable[[], Any]:
    return gurux_loop(gurux_plain(), [[wrap(NOTIFICATION.encode())]] * n, None)


def gurux_notification_ciphered(n: int) -> Callable[[], Any]:
    meter = Meter()
    client = gurux_hls(meter)
    plain = NOTIFICATION.encode()
    ops = [[wrap(meter.protect(plain, general=True), HLS_CLIENT)] for _ in range(n)]
    return gurux_loop(client, ops, None)


def ours_notification_encode(n: int) -> Callable[[], Any]:
    body = NOTIFICATION_BODY

    def run() -> Any:
        frame = b""
        for _ in range(n):
            frame = wrap(x.DataNotification(0xC0000001, None, body).encode())
        return frame

    return run


def gurux_notification_encode(n: int) -> Callable[[], Any]:
    notify = GXDLMSNotify(True, PUBLIC_CLIENT, SERVER, InterfaceType.WRAPPER)
    stamp = bytearray(STAMP)

    def run() -> Any:
        frame = b""
        for _ in range(n):
            body = GXStructure()
            body.append(stamp)
            body.extend(GXUInt32(100_000 + i) for i in range(5))
            body.extend(GXUInt16(230 + i) for i in range(4))
            buffer = GXByteBuffer()
            _GXCommon.setData(notify.settings, buffer, DataType.STRUCTURE, body)
            (frame,) = notify.generateDataNotificationMessages(None, buffer)
        return bytes(frame)

    return run


def ours_profile_single(n: int) -> Callable[[], Any]:
    by_invoke = [wrap(x.GetResponseNormal(iip(i), PROFILE_TYPED).encode()) for i in range(16)]
    return ours_loop(ours_plain(), [[by_invoke[i]] for i in invoke_ids(n)], PROFILE)


def ours_profile_blocks(n: int) -> Callable[[], Any]:
    by_invoke = [profile_blocks(i) for i in range(16)]
    return ours_loop(ours_plain(), [by_invoke[i] for i in invoke_ids(n)], PROFILE)


def gurux_profile_single(n: int) -> Callable[[], Any]:
    frame = wrap(x.GetResponseNormal(iip(1), PROFILE_TYPED).encode())
    return gurux_loop(gurux_plain(), [[frame]] * n, GXDLMSProfileGeneric("1.0.99.1.0.255"))


def gurux_profile_blocks(n: int) -> Callable[[], Any]:
    ops = [profile_blocks(1)] * n
    return gurux_loop(gurux_plain(), ops, GXDLMSProfileGeneric("1.0.99.1.0.255"))


def ours_profile_stamped(n: int) -> Callable[[], Any]:
    def stamped(events: Any) -> Any:
        return [(DateTime.from_octets(row[0]), *row[1:]) for row in ours_result(events)]

    by_invoke = [wrap(x.GetResponseNormal(iip(i), PROFILE_TYPED).encode()) for i in range(16)]
    return ours_loop(ours_plain(), [[by_invoke[i]] for i in invoke_ids(n)], PROFILE, stamped)


def gurux_profile_stamped(n: int) -> Callable[[], Any]:
    """``updateValue`` turns the clock column into GXDateTime (and would apply scalers)."""
    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    profile.addCaptureObject(GXDLMSClock("0.0.1.0.0.255"), 2, 0)
    for column in range(7):
        profile.addCaptureObject(GXDLMSRegister(f"1.0.{column + 1}.29.0.255"), 2, 0)
    client = gurux_plain()

    def rows(value: Any) -> Any:
        profile.buffer = []  # updateValue appends
        client.updateValue(profile, 2, value)
        return profile.buffer

    frame = wrap(x.GetResponseNormal(iip(1), PROFILE_TYPED).encode())
    return gurux_loop(client, [[frame]] * n, profile, rows)


def stamped_rows(rows: Any) -> Any:
    """Rows with the clock as an aware datetime, from ours (DateTime) or gurux (GXDateTime)."""
    return [
        (row[0].to_datetime() if isinstance(row[0], DateTime) else row[0].value, *row[1:])
        for row in rows
    ]


def ours_associate(n: int) -> Callable[[], Any]:
    _, _, aare, pass4 = ours_hls()
    aare, pass4 = wrap(aare, HLS_CLIENT), wrap(pass4, HLS_CLIENT)
    clients = []
    for _ in range(n):
        conn = ClientConnection(HLS, SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=AK))
        conn.grant_invocation_counters(1, 1000)
        clients.append((conn, WrapperFramer(HLS_CLIENT, SERVER)))

    def run() -> Any:
        events: Any = None
        for conn, framer in clients:
            conn.associate(NOW)
            for apdu in conn.data_to_send():  # AARQ
                encode_wrapper(HLS_CLIENT, SERVER, apdu)
            framer.receive_data(aare)
            received = framer.next_frame()
            assert received is not None
            conn.receive_apdu(received.apdu, NOW)
            for apdu in conn.data_to_send():  # pass 3: ACTION reply_to_HLS_authentication
                encode_wrapper(HLS_CLIENT, SERVER, apdu)
            framer.receive_data(pass4)
            received = framer.next_frame()
            assert received is not None
            events = conn.receive_apdu(received.apdu, NOW)
        return events

    return run


def gurux_associate(n: int) -> Callable[[], Any]:
    _, _, aare, pass4 = ours_hls()
    aare, pass4 = wrap(aare, HLS_CLIENT), wrap(pass4, HLS_CLIENT)
    clients = [gurux_secure() for _ in range(n)]

    def run() -> Any:
        client = None
        for client in clients:
            client.aarqRequest()
            client.parseAareResponse(reply(client, aare).data)
            client.getApplicationAssociationRequest()
            client.parseApplicationAssociationResponse(reply(client, pass4).data)
        return None if client is None else client.settings.connected & 2

    return run


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    name: str
    target_us: float | None  # for ours; None: information only
    ours: Prepare
    gurux: Prepare
    ours_value: Callable[[Any], Any]
    gurux_value: Callable[[Any], Any]
    expected: Any
    ours_context: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext


def _identity(value: Any) -> Any:
    return value


def _pushed_body(frame: bytes) -> Any:
    """The body of an encoded Data-Notification (gurux counts its long-invoke-id up)."""
    notification = x.decode_apdu(frame[8:])
    assert isinstance(notification, x.DataNotification)
    return notification.body


def _associated(events: Any) -> Any:
    return isinstance(events[-1], Associated) and 2


OPERATIONS = [
    Operation(
        "register GET (WRAPPER)", 15, ours_get_plain, gurux_get_plain,
        ours_result, _identity, ENERGY_VALUE,
    ),
    Operation(
        "register GET, suite 0 auth+enc (WRAPPER)", 40, ours_get_ciphered, gurux_get_ciphered,
        ours_result, _identity, ENERGY_VALUE,
    ),
    Operation(
        "Data-Notification 10 values, plain", 20, ours_notification_plain,
        gurux_notification_plain, ours_pushed, gurux_value, NOTIFICATION_VALUE,
    ),
    Operation(
        "Data-Notification 10 values, 0xDB SC 0x30", 40, ours_notification_ciphered,
        gurux_notification_ciphered, ours_pushed, gurux_value, NOTIFICATION_VALUE,
    ),
    Operation(
        "Data-Notification encode (server side)", None, ours_notification_encode,
        gurux_notification_encode, _pushed_body, _pushed_body, NOTIFICATION_VALUE,
    ),
    Operation(
        "96-row profile, 1 GET-Response-Normal", 1000, ours_profile_single, gurux_profile_single,
        ours_result, gurux_value, PROFILE_VALUE,
    ),
    Operation(
        "96-row profile, 4 datablocks", 1000, ours_profile_blocks, gurux_profile_blocks,
        ours_result, gurux_value, PROFILE_VALUE,
    ),
    Operation(
        "96-row profile to rows with datetimes", None, ours_profile_stamped,
        gurux_profile_stamped, stamped_rows, stamped_rows, stamped_rows(
            [(DateTime.from_octets(row[0]), *row[1:]) for row in PROFILE_VALUE]),
    ),
    Operation(
        "AARQ + AARE + HLS-GMAC pass 3/4, ciphered", 200, ours_associate, gurux_associate,
        _associated, _identity, 2, fixed_challenge,
    ),
]  # fmt: skip


def timed(run: Callable[[], Any]) -> tuple[int, Any]:
    """CPU nanoseconds of one run, garbage collection off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        started = time.process_time_ns()
        result = run()
        elapsed = time.process_time_ns() - started
    finally:
        gc.enable()
    return elapsed, result


def measure(prepare: Prepare, seconds: float, repeat: int) -> tuple[float, list[float], int, Any]:
    """(median µs per operation, every repeat's µs, operations per repeat, last result)."""
    n = 1
    while True:  # calibrate: grow n until one run takes a fifth of the time wanted
        elapsed, result = timed(prepare(n))
        if elapsed >= seconds * 1e9 / 5 or n >= 1 << 20:
            break
        n *= 4
    n = max(3, round(seconds * 1e9 * n / max(elapsed, 1)))
    samples = []
    for _ in range(repeat):
        elapsed, result = timed(prepare(n))
        samples.append(elapsed / n / 1000)
    return statistics.median(samples), samples, n, result


def run_operation(op: Operation, seconds: float, repeat: int) -> dict[str, Any]:
    with op.ours_context():
        check(f"{op.name}, ours", op.ours_value(op.ours(2)()), op.expected)
        ours, ours_samples, ours_n, result = measure(op.ours, seconds, repeat)
        check(f"{op.name}, ours (timed)", op.ours_value(result), op.expected)
    with quiet():
        check(f"{op.name}, gurux", op.gurux_value(op.gurux(2)()), op.expected)
        gurux, gurux_samples, gurux_n, result = measure(op.gurux, seconds, repeat)
        check(f"{op.name}, gurux (timed)", op.gurux_value(result), op.expected)
    return {
        "operation": op.name,
        "ours_us": ours,
        "gurux_us": gurux,
        "ratio": gurux / ours,
        "target_us": op.target_us,
        "meets_target": None if op.target_us is None else ours <= op.target_us,
        "operations_per_repeat": {"ours": ours_n, "gurux": gurux_n},
        "samples_us": {"ours": ours_samples, "gurux": gurux_samples},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per side; the median is kept")
    parser.add_argument("--seconds", type=float, default=0.25, help="CPU seconds per run")
    parser.add_argument("--quick", action="store_true", help="3 runs of 10 ms: a smoke test")
    parser.add_argument("--only", default="", help="operations whose name contains this")
    parser.add_argument("--out", default="bench/results/codec.json")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.seconds = 3, 0.01
    results = []
    for op in OPERATIONS:
        if args.only.lower() in op.name.lower():
            results.append(run_operation(op, args.seconds, args.repeat))
    header = (
        f"{'operation':44} {'ours µs':>9} {'gurux µs':>9} {'ratio':>6} {'target':>7} {'meets':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        target = "-" if r["target_us"] is None else f"{r['target_us']:g}"
        meets = {None: "-", True: "yes", False: "no"}[r["meets_target"]]
        print(
            f"{r['operation']:44} {r['ours_us']:9.1f} {r['gurux_us']:9.1f} "
            f"{r['ratio']:5.1f}x {target:>7} {meets:>5}"
        )
    write_report(
        args.out,
        "codec",
        machine=machine(
            gurux_dlms=metadata.version("gurux-dlms"),
            cryptography=metadata.version("cryptography"),
        ),
        params={
            "repeat": args.repeat,
            "seconds_per_run": args.seconds,
            "quick": args.quick,
            "timer": "time.process_time_ns, gc disabled while timed",
            "statistic": "median over repeats of (CPU time of a run / operations in it)",
            "ratio": "gurux_us / ours_us",
        },
        operations=results,
    )
    print(f"ratio = gurux / ours; median of {args.repeat} runs")


if __name__ == "__main__":
    main()
