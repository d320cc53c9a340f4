"""Hostile inputs: each closes only the offending client, while a well-behaved client (aiokdb,
connected before) keeps being served, and the server's memory does not jump.

Every test starts a fresh echo server with short handshake and idle timeouts, so that its memory
figures are its own. The well-behaved client sends a request every 50 ms for the whole attack.
"""

import asyncio
import struct

import pytest
from aiokdb import cv, kj, kk
from aiokdb.client import open_qipc_connection

import qraw
from cases import C1_SYNC

HANDSHAKE_TIMEOUT_MS = 1000
IDLE_TIMEOUT_MS = 1000
# How long an offending connection may stay open: the timeouts above plus slack for a loaded
# machine.
CLOSE_WITHIN = 10.0
# Resident memory may grow by this much at most during an attack (peak, VmHWM).
MAX_RSS_GROWTH_KIB = 64 * 1024
# The address space may grow by this much at most (peak, VmPeak): an allocation of what a client
# only claims (2 GB and more here) shows there even when its pages are never touched.
MAX_VIRTUAL_GROWTH_KIB = 1024 * 1024


def run(coroutine, timeout=120):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def memory(server):
    """VmHWM and VmPeak of the server, in KiB."""
    fields = {}
    with open(f"/proc/{server.pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmPeak"):
                fields[name] = int(value.split()[0])
    return fields


@pytest.fixture
def server(servers):
    return servers.start(
        "echo",
        "--handshake-timeout-ms", str(HANDSHAKE_TIMEOUT_MS),
        "--idle-timeout-ms", str(IDLE_TIMEOUT_MS),
    )


async def under_attack(server, attack):
    """Runs `attack(server)` while a well-behaved client keeps querying; checks that client's
    answers and the server's memory."""
    _, good = await open_qipc_connection(host=server.host, port=server.port, user="good")
    assert (await good.sync_req(cv("ping"))).aS() == "ping"
    before = memory(server)
    stop = asyncio.Event()
    answered = []

    async def keep_querying():
        i = 0
        while not stop.is_set():
            reply = await asyncio.wait_for(good.sync_req(kk(cv("ping"), kj(i))), 5)
            assert reply.kK()[1].aJ() == i, "a wrong answer to the well-behaved client"
            answered.append(asyncio.get_running_loop().time())
            i += 1
            await asyncio.sleep(0.05)

    querying = asyncio.create_task(keep_querying())
    try:
        await attack(server)
        # A little longer, so that a server that breaks after the offender is gone shows it.
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await querying
    try:
        assert len(answered) >= 3, "the well-behaved client was not served during the attack"
        gaps = [b - a for a, b in zip(answered, answered[1:])]
        assert max(gaps, default=0) < 3.0, f"the well-behaved client waited {max(gaps):.1f}s"
        assert (await good.sync_req(cv("after"))).aS() == "after"
    finally:
        good.close()
    after = memory(server)
    grown = after["VmHWM"] - before["VmHWM"]
    assert grown < MAX_RSS_GROWTH_KIB, f"resident memory peaked {grown} KiB higher"
    grown = after["VmPeak"] - before["VmPeak"]
    assert grown < MAX_VIRTUAL_GROWTH_KIB, f"address space peaked {grown} KiB higher"
    assert server.alive()


async def assert_closed(conn):
    assert await conn.closed_by_peer(CLOSE_WITHIN), "the offending connection is still open"


async def send_ignoring_close(conn, data):
    """Sends `data`; the server may close the connection while we write."""
    try:
        await conn.send(data)
    except (ConnectionError, OSError):
        pass


def test_garbage_handshake_without_end(server):
    # Bytes that never contain the NUL ending a handshake: the server stops reading at its
    # handshake limit (64 KiB) and closes.
    async def attack(server):
        conn = await qraw.Conn.connect(server.port)
        chunk = bytes(range(1, 256)) * 16
        for _ in range(1024 * 1024 // len(chunk)):
            if conn.writer.is_closing():
                break
            try:
                await conn.send(chunk)
            except (ConnectionError, OSError):
                break
        await assert_closed(conn)

    run(under_attack(server, attack))


@pytest.mark.parametrize("length", [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF], ids=hex)
def test_length_claim(server, length):
    async def attack(server):
        conn = await qraw.Conn.open(server.port)
        header = struct.pack("<BBBBI", 1, qraw.SYNC, 0, 0, length)
        await send_ignoring_close(conn, header + b"\x07\x00" + b"\xff" * 1000)
        await assert_closed(conn)

    run(under_attack(server, attack))


def test_frame_cut_off_mid_body(server):
    # A header promising 1000 bytes, 100 of them, then silence: the idle timeout closes it.
    async def attack(server):
        conn = await qraw.Conn.open(server.port)
        body = qraw.long_vector(list(range(124)))
        frame = qraw.frame(body)
        assert len(frame) == 1006
        await conn.send(frame[:108])
        await assert_closed(conn)

    run(under_attack(server, attack))


def corrupt_c1(offset, replacement):
    frame = bytearray(C1_SYNC)
    frame[offset:offset + len(replacement)] = replacement
    return bytes(frame)


BAD_COMPRESSED = {
    # The uncompressed size (bytes 8..12) claims 2 GB.
    "size-2GB": corrupt_c1(8, struct.pack("<I", 0x80000000)),
    # ... or less than a header.
    "size-4": corrupt_c1(8, struct.pack("<I", 4)),
    # ... or more than the data makes.
    "size-too-big": corrupt_c1(8, struct.pack("<I", 100_000)),
    # A back-reference before anything was written (the flag byte says every item is one).
    "reference-first": corrupt_c1(12, b"\xff\xff\xff\xff"),
    # The compressed data stops early (the header's length agrees with what is sent).
    "truncated": (lambda f: f[:4] + struct.pack("<I", 20) + f[8:20])(C1_SYNC),
    # Well-formed compression (eight literal bytes after each zero flag byte) of 64 bytes of
    # 0x03: a body whose type does not exist.
    "decompresses-to-garbage": (
        lambda body: struct.pack("<BBBBI", 1, 1, 1, 0, 8 + len(body)) + body
    )(struct.pack("<I", 8 + 64) + (b"\x00" + b"\x03" * 8) * 8),
}


@pytest.mark.parametrize("name", BAD_COMPRESSED)
def test_bad_compressed_frame(server, name):
    async def attack(server):
        conn = await qraw.Conn.open(server.port)
        await send_ignoring_close(conn, BAD_COMPRESSED[name])
        await assert_closed(conn)

    run(under_attack(server, attack))


@pytest.mark.parametrize(
    "body",
    [
        # Type 3 does not exist, as a vector or an atom; nor does 126.
        struct.pack("<bBi", 3, 0, 1) + b"\x00",
        struct.pack("<b", -3) + b"\x00" * 8,
        struct.pack("<b", 126) + b"\x00" * 8,
        # An unknown type inside a list.
        struct.pack("<bBi", 0, 0, 1) + struct.pack("<b", 3) + b"\x00" * 8,
    ],
    ids=["vector-3", "atom-minus-3", "type-126", "in-list"],
)
def test_unknown_type_byte(server, body):
    async def attack(server):
        conn = await qraw.Conn.open(server.port)
        await send_ignoring_close(conn, qraw.frame(body))
        await assert_closed(conn)

    run(under_attack(server, attack))


@pytest.mark.parametrize(
    "body",
    [
        struct.pack("<bBi", 7, 0, 1_000_000) + b"\x00" * 16,
        struct.pack("<bBi", 10, 0, 0x7FFFFFFF) + b"abc",
        struct.pack("<bBi", 0, 0, 0x7FFFFFFF) + qraw.long_atom(1),
        # Symbols: the count promises more names than there are NULs.
        struct.pack("<bBi", 11, 0, 1000) + b"a\x00b\x00",
        # A negative count.
        struct.pack("<bBi", 7, 0, -1),
    ],
    ids=["longs-1M", "chars-2G", "list-2G", "symbols-1000", "negative"],
)
def test_vector_count_larger_than_frame(server, body):
    async def attack(server):
        conn = await qraw.Conn.open(server.port)
        await send_ignoring_close(conn, qraw.frame(body))
        await assert_closed(conn)

    run(under_attack(server, attack))


HALF_OPEN = 200


def test_200_half_open_handshakes(server):
    # Half connect and say nothing; half send part of a handshake, without its NUL. The
    # handshake timeout closes them all.
    async def attack(server):
        conns = await asyncio.gather(*(qraw.Conn.connect(server.port) for _ in range(HALF_OPEN)))
        for conn in conns[HALF_OPEN // 2:]:
            await conn.send(b"user:pa")
        closed = await asyncio.gather(*(conn.closed_by_peer(CLOSE_WITHIN) for conn in conns))
        for conn in conns:
            conn.close()
        still_open = closed.count(False)
        assert still_open == 0, f"{still_open} of {HALF_OPEN} half-open connections stayed open"

    run(under_attack(server, attack))
