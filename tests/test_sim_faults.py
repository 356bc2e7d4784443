"""The ``--faults`` grammar, which meters get a fault, and what each fault does to an answer
(sans-IO, with our ClientConnection seeing the result). Over real sockets: test_sim_tcp.py."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hesd.sim.faults import Fault, FaultPlan, FaultSpecError, MeterFaults, Reply, parse_faults
from protocols.dlms.wrapper import WrapperFramer
from protocols.errors import RemoteProtocolError
from tests.test_sim_client import (
    CLOCK,
    DlmsClient,
    EndpointPipe,
    association,
    make_sim,
)

FULL = (
    "latency=20ms..200ms, drop=0.01, garbage=0.001, silent@0.05, disconnect=0.005, "
    "wrong_tag=0.01, replay=0.01, drift=120ppm@0.1, hang@0.01"
)


def test_the_full_example_parses() -> None:
    plan = parse_faults(FULL)
    by_name = {f.name: f for f in plan.faults}
    assert by_name["latency"] == Fault("latency", (0.02, 0.2))
    assert by_name["drop"] == Fault("drop", 0.01)
    assert by_name["silent"] == Fault("silent", None, 0.05)
    assert by_name["drift"] == Fault("drift", 120.0, 0.1)
    assert by_name["hang"] == Fault("hang", 2, 0.01)
    assert parse_faults(str(plan)) == plan  # the text form reads back


@pytest.mark.parametrize(
    ("spec", "plan"),
    [
        ("", FaultPlan()),
        ("drop", FaultPlan((Fault("drop", 1.0),))),
        ("latency=1s", FaultPlan((Fault("latency", (1.0, 1.0)),))),
        ("hang=0@5%", FaultPlan((Fault("hang", 0, 0.05),))),
        ("drift=-30", FaultPlan((Fault("drift", -30.0),))),
        (" garbage = 0.5 @ 0.25 ", FaultPlan((Fault("garbage", 0.5, 0.25),))),
    ],
)
def test_items(spec: str, plan: FaultPlan) -> None:
    assert parse_faults(spec) == plan


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lag=1", "fault 'lag=1': unknown fault 'lag'"),
        ("drop=2", "fault 'drop=2': probability 2 outside 0..1"),
        ("drop=x", "fault 'drop=x': 'x' is not a probability"),
        ("latency", "fault 'latency': latency needs a value"),
        ("latency=20", "fault 'latency=20': '20' is not a duration like 20ms"),
        ("latency=200ms..20ms", "the range '200ms..20ms' ends before it starts"),
        ("silent=1", "fault 'silent=1': silent takes no value"),
        ("hang=two", "hang takes a number of answers"),
        ("drift=1e6ppm", "drift 1e+06 ppm outside"),
        ("drop@0", "fraction 0 outside (0, 1]"),
        ("drop@150%", "fraction 150% outside (0, 1]"),
        ("drop,drop=0.5", "drop is given twice"),
        ("drop,,silent", "an empty item"),
    ],
)
def test_errors_name_the_item(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=re.escape(message)):
        parse_faults(spec)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_fault_spec_error(spec: str) -> None:
    with contextlib.suppress(FaultSpecError):
        parse_faults(spec)


def test_the_faulty_meters_follow_the_seed_and_the_fraction() -> None:
    plan = parse_faults("silent@0.1")
    ids = [f"SIM-is15959-{n:06d}" for n in range(1, 2001)]
    chosen = [i for i in ids if plan.for_meter(1, i) is not None]
    assert 150 < len(chosen) < 250  # about 10 %
    assert chosen == [i for i in ids if plan.for_meter(1, i) is not None]
    assert chosen != [i for i in ids if plan.for_meter(2, i) is not None]


def test_draws_are_deterministic_and_uniform() -> None:
    a, b = MeterFaults((), 42), MeterFaults((), 42)
    draws = [a.random() for _ in range(10_000)]
    assert draws == [b.random() for _ in range(10_000)]
    assert all(0 <= d < 1 for d in draws)
    assert 0.48 < sum(draws) / len(draws) < 0.52


def faulty(spec: str) -> MeterFaults:
    found = parse_faults(spec).for_meter(1, "M")
    assert found is not None
    return found


def test_silent_drop_hang_and_latency_on_bytes() -> None:
    reply = Reply()
    faulty("silent").deliver(b"answer", reply)
    assert reply.data == b""
    assert reply.notes == [("sim.fault", {"kind": "silent"})]
    reply = Reply()
    faulty("drop").deliver(b"answer", reply)
    assert reply.data == b""
    hang = faulty("hang=2")
    sent = []
    for _ in range(4):
        reply = Reply()
        hang.deliver(b"answer", reply)
        sent.append(reply.data)
    assert sent == [b"answer", b"answer", b"", b""]
    hang.new_session()
    reply = Reply()
    hang.deliver(b"answer", reply)
    assert reply.data == b"answer"
    latency = faulty("latency=20ms..30ms")
    delays = []
    for _ in range(50):
        reply = Reply()
        latency.deliver(b"answer", reply)
        delays.append(reply.delay)
    assert all(0.02 <= d <= 0.03 for d in delays)
    assert len(set(delays)) > 1


def test_garbage_makes_the_wrapper_framer_fail_and_disconnect_cuts() -> None:
    garbage = faulty("garbage")
    for _ in range(20):
        reply = Reply()
        garbage.deliver(b"\x00\x01\x00\x01\x00\x10\x00\x01\x0f", reply)
        framer = WrapperFramer(16, 1)
        framer.receive_data(reply.data)
        with pytest.raises(RemoteProtocolError):
            framer.next_frame()
    reply = Reply()
    faulty("disconnect").deliver(b"0123456789", reply)
    assert (reply.data, reply.close) == (b"01234", True)


async def test_wrong_tag_fails_the_clients_tag_check() -> None:
    sim = make_sim(faults="wrong_tag")
    client = DlmsClient(EndpointPipe(sim.endpoints[0]), **association(sim, "utility"))
    client.conn.associate(0.0)
    with pytest.raises(RemoteProtocolError, match="tag"):
        await client.exchange()  # HLS pass 4 comes back ciphered, with a bad tag
    assert sim.stats.faults["wrong_tag"] == 1


async def test_replay_is_refused_by_the_client() -> None:
    sim = make_sim(faults="replay=0.5")
    client = DlmsClient(EndpointPipe(sim.endpoints[0]), **association(sim, "utility"))
    await client.associate()
    with pytest.raises(RemoteProtocolError, match=r"counter|replay"):
        await client.get_until_refused(CLOCK, 50)
    assert sim.stats.faults["replay"] >= 1


async def test_a_plain_association_is_not_hurt_by_cipher_faults() -> None:
    sim = make_sim(faults="wrong_tag, replay")
    client = DlmsClient(EndpointPipe(sim.endpoints[0]), **association(sim, "reader"))
    await client.associate()
    for _ in range(5):
        await client.get(CLOCK)
    assert not sim.stats.faults
