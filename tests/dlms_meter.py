"""A scripted DLMS meter for tests: our ServerConnection over a dict of values, on any Link."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hesd.link import Link, LinkClosed
from hesd.secrets import KeySet, Secret
from protocols.dlms import apdu as x
from protocols.dlms.acse import Mechanism
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.obis import ObisCode
from protocols.dlms.server import ServerAssociation, ServerConnection
from protocols.dlms.wrapper import WrapperFramer, encode_wrapper

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
HES_TITLE = bytes.fromhex("4845530000000001")
METER_TITLE = bytes.fromhex("4953430000000042")
ENERGY = x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 2)
KEYSET = KeySet(
    "lot-a",
    lls_password=Secret(b"12345678"),
    global_unicast_key=Secret(EK),
    authentication_key=Secret(AK),
)


@dataclass
class DictModel:
    """A tiny ObjectModel: values by (class, OBIS, attribute)."""

    values: dict[tuple[int, str, int], Value] = field(default_factory=dict)

    def get(
        self,
        association: str,
        attribute: x.AttributeDescriptor,
        access: x.AccessSelection | None,
        now: float,
    ) -> Value | x.DataAccessResult:
        key = (attribute.class_id, str(attribute.instance), attribute.attribute)
        return self.values.get(key, x.DataAccessResult.OBJECT_UNDEFINED)

    def set(
        self, association: str, attribute: x.AttributeDescriptor, value: Value, now: float
    ) -> x.DataAccessResult:
        self.values[(attribute.class_id, str(attribute.instance), attribute.attribute)] = value
        return x.DataAccessResult.SUCCESS

    def action(
        self, association: str, method: x.MethodDescriptor, parameters: Value | None, now: float
    ) -> tuple[x.ActionResult, Value | None]:
        return x.ActionResult.SUCCESS, None


ASSOCIATIONS = {
    16: ServerAssociation("public", 16, Mechanism.NONE),
    32: ServerAssociation("reader", 32, Mechanism.LLS, password=b"12345678"),
    48: ServerAssociation("utility", 48, Mechanism.HLS_GMAC, ciphered=True),
}


async def run_meter(link: Link, server: ServerConnection, *, mute: bool = False) -> None:
    """The meter's side of the link: WRAPPER frames in, ServerConnection, frames out."""
    framer = WrapperFramer(local_wport=1, remote_wport=None)
    loop = asyncio.get_running_loop()
    try:
        while True:
            framer.receive_data(await link.receive())
            for frame in framer.frames():
                server.receive_apdu(frame.source_wport, frame.apdu, loop.time())
                for apdu in server.data_to_send():
                    if not mute:
                        await link.send(encode_wrapper(1, frame.source_wport, apdu))
    except LinkClosed:
        return


def meter(model: DictModel | None = None) -> ServerConnection:
    model = model or DictModel({(3, "1.0.1.8.0.255", 2): Typed(Tag.DOUBLE_LONG_UNSIGNED, 4242)})
    return ServerConnection(ASSOCIATIONS, model, system_title=METER_TITLE, keys=(EK, AK))
