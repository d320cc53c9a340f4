"""Real clients against the test upstream (`qgate-upstream`) directly: PyKX (unlicensed, with its
default connect, so its context queries included) and aiokdb.

The test upstream stands in for a kdb+ process in the tests of qgate in front of kdb+; these tests
show that real clients take it for one: logins accepted and refused, `echo` round trips, q errors
as each client's own error type, `whoami`, a free-text query's receipt, a subscription receiving
`upd` messages in order, and a 10 MB reply.
"""

import asyncio

import numpy as np
import pytest

import pykx as kx
from aiokdb import KException, TypeEnum, cv, kj, kk, ks, ktn
from aiokdb.client import ClientContext, open_qipc_connection
from aiokdb.server import CredentialsException

assert not kx.licensed, "these tests are for PyKX's unlicensed mode: set PYKX_UNLICENSED=true"

SYMS = ["AAPL", "MSFT", "IBM", "GOOG", "LSE.L"]


def run(coroutine, timeout=60):
    """Runs one test's coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


@pytest.fixture
def guarded(servers):
    """A test upstream of this test's own, accepting alice and bob only, named `rdb`."""
    return servers.start("upstream", "--name", "rdb", "--user", "alice:secret",
                         "--user", "bob:pw")


def pykx_connect(server, user="", password=""):
    # No `no_ctx`: PyKX sends its context queries, which the upstream answers as q does.
    return kx.SyncQConnection(
        host=server.host, port=server.port, username=user, password=password, timeout=10.0
    )


# ---------------------------------------------------------------------------------------------
# PyKX.
# ---------------------------------------------------------------------------------------------


def test_pykx_login_accepted_and_refused(guarded):
    with pykx_connect(guarded, "alice", "secret") as conn:
        assert conn("whoami", None).py()["user"] == "alice"
    for user, password in [("alice", "wrong"), ("carol", "secret"), ("", "")]:
        with pytest.raises(kx.exceptions.PyKXException, match="(?i)authentication|access"):
            pykx_connect(guarded, user, password)


ECHOED = {
    "long": kx.LongAtom(42),
    "float": kx.FloatAtom(3.5),
    "symbol": kx.SymbolAtom("abc"),
    "string": kx.CharVector("hello"),
    "longs": kx.LongVector([1, 2, 3]),
    "symbols": kx.SymbolVector(["a", "b"]),
    "timestamp": kx.TimestampAtom(np.datetime64("2024-01-02T03:04:05.123456789", "ns")),
    "list": kx.List([kx.LongAtom(1), kx.CharVector("two"), kx.SymbolAtom("three")]),
    "dict": kx.Dictionary({"a": kx.LongAtom(1), "b": kx.LongAtom(2)}),
}


@pytest.mark.parametrize("name", ECHOED)
def test_pykx_echo_round_trips(upstream, name):
    value = ECHOED[name]
    with pykx_connect(upstream, "user", "pw") as conn:
        reply = conn("echo", value)
        assert bytes(kx.serialize(reply).copy())[8:] == bytes(kx.serialize(value).copy())[8:]


def test_pykx_q_error_is_qerror(upstream):
    with pykx_connect(upstream, "user", "pw") as conn:
        with pytest.raises(kx.QError, match="^boom$"):
            conn("fail", kx.CharVector("boom"))
        # The connection survives its error.
        assert conn("echo", kx.LongAtom(1)).py() == 1


def test_pykx_whoami_and_a_receipt(upstream):
    with pykx_connect(upstream, "dave", "pw") as conn:
        me = conn("whoami", None).py()
        assert me["upstream"] == "upstream"
        assert me["user"] == "dave"
        assert isinstance(me["handle"], int) and me["handle"] > 0
        receipt = conn("select from trade where sym=`IBM").py()
        assert receipt == {
            "upstream": "upstream",
            "user": "dave",
            "handle": me["handle"],
            "query": b"select from trade where sym=`IBM",
        }


def test_pykx_context_queries_reach_the_upstream(servers):
    # An upstream of its own, so that its record holds this connection's messages only.
    upstream = servers.start("upstream")
    with pykx_connect(upstream, "erin", "pw") as conn:
        received = conn("received", None).py()
    texts = received["text"]
    assert b'("key";`.q)' in texts, texts
    assert b"@[{2<count .s};(::);{0b}]" in texts, texts
    assert texts[-1] == b'("received";::)'
    assert set(received["user"]) == {"erin"}
    assert set(received["kind"]) == {"sync"}


def test_pykx_10_mb_reply(upstream):
    n = 10_000_000
    with pykx_connect(upstream, "user", "pw") as conn:
        reply = conn("bytes", kx.LongAtom(n))
        assert isinstance(reply, kx.ByteVector)
        data = reply.np()
        assert len(data) == n
        assert np.array_equal(data, (np.arange(n) % 256).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# aiokdb.
# ---------------------------------------------------------------------------------------------


async def aiokdb_connect(server, user=None, password=None, context=None):
    return await open_qipc_connection(
        host=server.host, port=server.port, user=user, password=password, context=context
    )


def test_aiokdb_login_accepted_and_refused(guarded):
    async def body():
        _, writer = await aiokdb_connect(guarded, "bob", "pw")
        try:
            assert (await writer.sync_req(kk(ks("whoami"), ks(""))))["user"].aS() == "bob"
        finally:
            writer.close()
        with pytest.raises(CredentialsException):
            await aiokdb_connect(guarded, "bob", "wrong")

    run(body())


def test_aiokdb_echo_round_trips_and_q_errors(upstream):
    async def body():
        _, writer = await aiokdb_connect(upstream, "user", "pw")
        try:
            longs = ktn(TypeEnum.KJ)
            longs.kJ().extend([5, 6, 7])
            for value in [kj(42), cv("hello"), ks("sym"), longs, kk(kj(1), cv("two"))]:
                reply = await writer.sync_req(kk(cv("echo"), value))
                assert reply.t == value.t
                assert repr(reply) == repr(value)
            with pytest.raises(KException, match="^boom$"):
                await writer.sync_req(kk(ks("fail"), cv("boom")))
            receipt = await writer.sync_req(cv("::"))
            assert receipt["query"].aS() == "::"
            assert receipt["user"].aS() == "user"
        finally:
            writer.close()

    run(body())


class Subscriber(ClientContext):
    """An aiokdb client context that queues the async messages it receives."""

    def __init__(self):
        self.messages = asyncio.Queue()

    async def on_async_message(self, cmd, dotzw):
        await self.messages.put(cmd)


def test_aiokdb_subscriber_receives_publications_in_order(upstream):
    async def body():
        every = Subscriber()
        _, all_writer = await aiokdb_connect(upstream, "sub", "pw", context=every)
        some = Subscriber()
        _, some_writer = await aiokdb_connect(upstream, "sub", "pw", context=some)
        _, publisher = await aiokdb_connect(upstream, "feed", "pw")
        try:
            # As kdb+tick's subscribers do: `.u.sub[`trade;`]` and `.u.sub[`trade;`IBM`GOOG]`.
            reply = await all_writer.sync_req(kk(ks(".u.sub"), ks("trade"), ks("")))
            assert reply.kK()[0].aS() == "trade"
            assert reply.kK()[1].kS() == ["time", "sym", "price", "size", "seq"]
            wanted = ktn(TypeEnum.KS)
            wanted.appendS("IBM", "GOOG")
            await some_writer.sync_req(kk(ks(".u.sub"), ks("trade"), wanted))

            count, rows = 50, 7
            sent = await publisher.sync_req(kk(ks("publish"), ks("trade"), kj(count), kj(rows)))
            assert sent.aJ() == count

            seqs = []
            for _ in range(count):
                message = await asyncio.wait_for(every.messages.get(), 30)
                head, table, data = message.kK()
                assert (head.aS(), table.aS()) == ("upd", "trade")
                assert len(data) == rows
                assert data["time"].t == TypeEnum.KN
                seqs.extend(data["seq"].kJ())
            # Every row, in order, without a gap.
            assert seqs == list(range(seqs[0], seqs[0] + count * rows))

            filtered = []
            while len(filtered) < sum(SYMS[s % 5] in ("IBM", "GOOG") for s in seqs):
                message = await asyncio.wait_for(some.messages.get(), 30)
                data = message.kK()[2]
                assert set(data["sym"].kS()) <= {"IBM", "GOOG"}
                filtered.extend(data["seq"].kJ())
            assert filtered == [s for s in seqs if SYMS[s % 5] in ("IBM", "GOOG")]
        finally:
            for writer in (all_writer, some_writer, publisher):
                writer.close()

    run(body())


def test_aiokdb_callback_arrives_before_its_reply(upstream):
    async def body():
        context = Subscriber()
        _, writer = await aiokdb_connect(upstream, "user", "pw", context=context)
        try:
            reply = await writer.sync_req(kk(ks("callback"), kj(7)))
            assert reply.aJ() == 7
            # The async message was handled before the reply completed the request.
            assert not context.messages.empty()
            message = context.messages.get_nowait()
            assert [item.t for item in message.kK()] == [-TypeEnum.KS, -TypeEnum.KJ]
            assert message.kK()[0].aS() == "callback"
        finally:
            writer.close()

    run(body())
