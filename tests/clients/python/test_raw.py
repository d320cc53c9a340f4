"""What no client library sends on its own, over raw sockets: compressed and big-endian requests,
and 1000 connections at once. aiokdb decodes the replies where a second decoder helps.
"""

import asyncio
import struct

import pytest
from aiokdb import cv, d9, kj, kk

import qraw
from cases import C1_SYNC

# The compressed conformance vectors (shared/conformance/ipc-vectors.tsv §10.6), made sync.
C4_SYNC = bytes.fromhex(
    "010101002d000000de070000800b00e80300006161ffaa6161ff6161ff6161ff6161ff2a6161ff6161ff6161bf"
)
C6_SYNC = bytes.fromhex(
    "010101002d000000de070000800b00e80300007171ffaa7171ff7171ff7171ff7171ff2a7171ff7171ff7171bf"
)


def run(coroutine, timeout=120):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


@pytest.mark.parametrize(
    "frame,expected",
    [(C1_SYNC, [True] * 2000), (C4_SYNC, ["a"] * 1000), (C6_SYNC, ["q"] * 1000)],
    ids=["C1-2000#1b", "C4-1000#`a", "C6-1000#`q"],
)
def test_compressed_request(echo, frame, expected):
    async def body():
        conn = await qraw.Conn.open(echo.port)
        try:
            await conn.send(frame)
            msgtype, compressed, reply = await conn.read_frame()
            assert msgtype == qraw.RESPONSE
            # Over 2000 bytes, but q does not compress replies to a local peer, and neither does
            # qgate.
            assert compressed == 0 and len(reply) > 2000
            assert qraw.decode(reply) == expected
            # aiokdb's decoder agrees.
            header = struct.pack("<BBHI", 1, 2, 0, 8 + len(reply))
            value = d9(header + reply)
            items = value.kB() if expected[0] is True else value.kS()
            assert list(items) == expected
            # The connection goes on.
            assert await conn.query(qraw.char_vector("after")) == "after"
        finally:
            await conn.aclose()

    run(body())


def test_big_endian_request(echo):
    # kdbplus sends in native order; a server must read big-endian (kdb-ipc.md §3.2) and answers
    # little-endian.
    async def body():
        conn = await qraw.Conn.open(echo.port)
        try:
            values = [1, -2, 2**40]
            body = struct.pack(">bBi", 7, 0, len(values)) + struct.pack(">3q", *values)
            header = struct.pack(">BBBBI", 0, qraw.SYNC, 0, 0, 8 + len(body))
            await conn.send(header + body)
            msgtype, _, reply = await conn.read_frame()
            assert msgtype == qraw.RESPONSE
            assert qraw.decode(reply) == values
        finally:
            await conn.aclose()

    run(body())


def test_handshake_without_capability_byte(echo):
    # qPython's fallback, and very old clients: credentials and NUL only; capability 0.
    async def body():
        conn = await qraw.Conn.connect(echo.port)
        try:
            await conn.send(b"user:pass\0")
            assert await conn.reader.readexactly(1) == b"\0"
            assert await conn.query(qraw.char_vector("ping")) == "ping"
        finally:
            await conn.aclose()

    run(body())


@pytest.mark.parametrize("capability", [1, 3, 5, 6])
def test_capability_is_at_most_3(echo, capability):
    async def body():
        conn = await qraw.Conn.open(echo.port, capability=capability)
        try:
            assert conn.capability == min(capability, 3)
        finally:
            await conn.aclose()

    run(body())


CONNECTIONS = 1000


def test_1000_concurrent_connections(servers):
    # 1000 handshakes at once from one address are more than one host may have pending by
    # default (`max_handshakes_per_address`, and random early drop past 512): this test is about
    # serving 1000 connections, so it allows them.
    server = servers.start(
        "echo", "--max-connections", "2000", "--max-handshakes", "2000",
        "--handshake-early-drop", "2000", "--max-handshakes-per-address", "2000",
    )

    async def body():
        # A well-behaved real client, connected first, is served throughout.
        from aiokdb.client import open_qipc_connection

        _, good = await open_qipc_connection(host=server.host, port=server.port, user="good")
        conns = await asyncio.gather(
            *(qraw.Conn.open(server.port, f"user{i}:pass".encode(), timeout=30)
              for i in range(CONNECTIONS))
        )
        try:
            assert len(conns) == CONNECTIONS
            assert (await good.sync_req(kk(cv("ping"), kj(1)))).kK()[1].aJ() == 1

            async def one(i, conn):
                return await conn.query(qraw.general_list(qraw.char_vector("n"),
                                                          qraw.long_atom(i)), timeout=30)

            replies = await asyncio.gather(*(one(i, conn) for i, conn in enumerate(conns)))
            assert replies == [["n", i] for i in range(CONNECTIONS)]
            assert (await good.sync_req(kk(cv("ping"), kj(2)))).kK()[1].aJ() == 2
        finally:
            for conn in conns:
                conn.close()
            good.close()
        # The server is still there and serving once they are gone.
        _, again = await open_qipc_connection(host=server.host, port=server.port, user="again")
        assert (await again.sync_req(cv("ping"))).aS() == "ping"
        again.close()

    run(body(), timeout=240)
    assert server.alive()
