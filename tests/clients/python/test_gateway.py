"""Real clients through qgate's gateway mode: PyKX (unlicensed, with its default connect) and
aiokdb against the real `qgate serve` in front of the test upstream (`qgate-upstream`), in pinned
and in pooled mode; aiokdb subscribing to the upstream's tickerplant through a pinned session; TLS
on both sides of qgate at once; and aiokdb's own server class as a second, independently written
upstream.

The gateways are conftest's: pinned is the README's one-liner (`qgate serve -p PORT -U
passwords.txt --upstream HOST:PORT`), pooled is an `[[upstream]]` table with a service account.
Both take the logins of cases.PASSWORD_FILES["mixed"]. The faults are in test_gateway_faults.py,
qPython in test_gateway_qpython.py and node-q in clients/node/node-q-gateway.test.js.
"""

import asyncio
import uuid

import numpy as np
import pandas as pd
import pytest

import pykx as kx
from aiokdb import KException, TypeEnum, cv, kf, kj, kk, ks, ktn
from aiokdb.client import ClientContext, open_qipc_connection
from aiokdb.server import CredentialsException

from cases import PASSWORD
from conftest import (
    GATEWAY_USERS,
    SERVICE_PASSWORD,
    SERVICE_USER,
    address,
    eventually,
    upstream_table,
)

assert not kx.licensed, "these tests are for PyKX's unlicensed mode: set PYKX_UNLICENSED=true"

SYMS = ["AAPL", "MSFT", "IBM", "GOOG", "LSE.L"]

# A reply far larger than one read or one streamed chunk (qgate streams replies over 64 KiB in
# 256 KiB pieces), so that it crosses the gateway as a stream.
LARGE_REPLY = 20_000_000

# The logins the gateways refuse: a wrong password, an unknown user, no user.
REFUSED = [("admin", "wrong"), ("nobody", PASSWORD), ("", "")]


def run(coroutine, timeout=120):
    """Runs one test's coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def pykx_connect(server, user=GATEWAY_USERS[0], password=PASSWORD, **options):
    # No `no_ctx`: PyKX sends its context queries, which qgate answers itself.
    return kx.SyncQConnection(
        host=server.host, port=server.port, username=user, password=password, timeout=30.0,
        **options,
    )


async def aiokdb_connect(server, user=GATEWAY_USERS[0], password=PASSWORD, context=None):
    return await open_qipc_connection(
        host=server.host, port=server.port, user=user, password=password, context=context
    )


def open_connections(upstream):
    """The upstream's open connections now, asked directly (this question's own connection
    included)."""
    with pykx_connect(upstream, SERVICE_USER, SERVICE_PASSWORD) as conn:
        return conn("stats", None).py()["open"]


# ---------------------------------------------------------------------------------------------
# PyKX, pinned and pooled.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", GATEWAY_USERS)
def test_pykx_logs_in_through_the_password_file(gateway, user):
    with pykx_connect(gateway.qgate, user) as conn:
        me = conn("whoami", None).py()
    # The upstream sees qgate's login, never the client's: its service account when pooled, no
    # user with the one-liner.
    assert me["upstream"] == "rdb"
    assert me["user"] == gateway.user


@pytest.mark.parametrize("user,password", REFUSED)
def test_pykx_refused_logins_never_reach_the_upstream(gateway, user, password):
    with pytest.raises(kx.exceptions.PyKXException, match="(?i)authentication|access"):
        pykx_connect(gateway.qgate, user, password)
    assert gateway.qgate.alive()


ECHOED = {
    "long": kx.LongAtom(42),
    "float": kx.FloatAtom(3.5),
    "symbol": kx.SymbolAtom("abc"),
    "string": kx.CharVector("hello"),
    "longs": kx.LongVector([1, 2, 3]),
    "symbols": kx.SymbolVector(["a", "b"]),
    "timestamp": kx.TimestampAtom(np.datetime64("2024-01-02T03:04:05.123456789", "ns")),
    "guid": kx.GUIDAtom(uuid.UUID("8c680a01-5a49-5aab-5a65-d4bfddb6a661")),
    "list": kx.List([kx.LongAtom(1), kx.CharVector("two"), kx.SymbolAtom("three")]),
    "dict": kx.Dictionary({"a": kx.LongAtom(1), "b": kx.LongAtom(2)}),
    "table": kx.toq(pd.DataFrame({"sym": ["a", "b"], "px": [1.5, 2.5]})),
    # 10 000 longs: a request and a reply over q's 2000-byte compression threshold.
    "many": kx.LongVector(list(range(10_000))),
}


@pytest.mark.parametrize("name", ECHOED)
def test_pykx_values_round_trip(gateway, name):
    value = ECHOED[name]
    with pykx_connect(gateway.qgate) as conn:
        reply = conn("echo", value)
    assert bytes(kx.serialize(reply).copy())[8:] == bytes(kx.serialize(value).copy())[8:]


def test_pykx_free_text_and_q_errors(gateway):
    with pykx_connect(gateway.qgate) as conn:
        receipt = conn("select from trade where sym=`IBM").py()
        assert receipt["upstream"] == "rdb"
        assert receipt["user"] == gateway.user
        assert receipt["query"] == b"select from trade where sym=`IBM"
        with pytest.raises(kx.QError, match="^boom$"):
            conn("fail", kx.CharVector("boom"))
        # The session survives its error, on the same upstream connection when pinned.
        again = conn("whoami", None).py()
        if gateway.mode == "pinned":
            assert again["handle"] == receipt["handle"]


def test_pykx_large_reply(gateway):
    with pykx_connect(gateway.qgate) as conn:
        reply = conn("bytes", kx.LongAtom(LARGE_REPLY))
        assert isinstance(reply, kx.ByteVector)
        data = reply.np()
        assert len(data) == LARGE_REPLY
        assert np.array_equal(data, (np.arange(LARGE_REPLY) % 256).astype(np.uint8))
        # The connection is in step after it.
        assert conn("echo", kx.LongAtom(5)).py() == 5


def test_pinned_sessions_each_have_an_upstream_connection(servers, password_files):
    # A gateway of this test's own, so that the upstream's connections are this test's alone.
    upstream = servers.start("upstream", "--name", "rdb")
    qgate = servers.start("qgate", "-U", password_files["mixed"], "--upstream", address(upstream))

    def open_now():
        # The health check's connection and this question's own, besides the sessions'.
        return open_connections(upstream) - 2

    eventually("the health check connects", lambda: open_now() == 0)
    first = pykx_connect(qgate)
    second = pykx_connect(qgate)
    try:
        a = first("whoami", None).py()["handle"]
        b = second("whoami", None).py()["handle"]
        assert a != b
        # Each session's connection was opened at its login.
        assert open_now() == 2
    finally:
        second.close()
    # And closed with it.
    eventually("the closed session's upstream connection closes", lambda: open_now() == 1)
    try:
        assert first("whoami", None).py()["handle"] == a
    finally:
        first.close()
    eventually("the last session's upstream connection closes", lambda: open_now() == 0)


def test_pooled_sessions_share_the_pool(gateways):
    gateway = gateways("pooled")
    conns = [pykx_connect(gateway.qgate, user) for user in GATEWAY_USERS * 2]
    try:
        for i, conn in enumerate(conns):
            assert conn("echo", kx.LongAtom(i)).py() == i
        # Six sessions, at most pool_size (2) connections, besides the health check's and this
        # question's own.
        assert open_connections(gateway.upstream) <= 2 + 2
    finally:
        for conn in conns:
            conn.close()


# ---------------------------------------------------------------------------------------------
# aiokdb, pinned and pooled.
# ---------------------------------------------------------------------------------------------


def test_aiokdb_logins_through_the_password_file(gateway):
    async def body():
        for user in GATEWAY_USERS:
            _, writer = await aiokdb_connect(gateway.qgate, user)
            try:
                me = await writer.sync_req(kk(ks("whoami"), ks("")))
                assert me["upstream"].aS() == "rdb"
                assert me["user"].aS() == gateway.user
            finally:
                writer.close()
        for user, password in REFUSED:
            with pytest.raises(CredentialsException):
                await aiokdb_connect(gateway.qgate, user or None, password or None)

    run(body())


def test_aiokdb_values_free_text_and_q_errors(gateway):
    async def body():
        _, writer = await aiokdb_connect(gateway.qgate)
        try:
            longs = ktn(TypeEnum.KJ)
            longs.kJ().extend(range(5000))
            symbols = ktn(TypeEnum.KS)
            symbols.appendS("IBM", "GOOG")
            for value in [kj(42), kf(2.5), cv("hello"), ks("sym"), longs, symbols,
                          kk(kj(1), cv("two"), ks("three"))]:
                reply = await writer.sync_req(kk(cv("echo"), value))
                assert reply.t == value.t
                assert repr(reply) == repr(value)
            with pytest.raises(KException, match="^boom$"):
                await writer.sync_req(kk(ks("fail"), cv("boom")))
            receipt = await writer.sync_req(cv("exec sum size from trade"))
            assert receipt["query"].aS() == "exec sum size from trade"
            assert receipt["user"].aS() == gateway.user
        finally:
            writer.close()

    run(body())


def test_aiokdb_large_reply(gateway):
    async def body():
        _, writer = await aiokdb_connect(gateway.qgate)
        try:
            reply = await writer.sync_req(kk(ks("bytes"), kj(LARGE_REPLY)))
            assert reply.t == TypeEnum.KG
            data = np.frombuffer(bytes(reply.kG()), dtype=np.uint8)
            assert len(data) == LARGE_REPLY
            assert np.array_equal(data, (np.arange(LARGE_REPLY) % 256).astype(np.uint8))
            assert (await writer.sync_req(kk(ks("echo"), kj(6)))).aJ() == 6
        finally:
            writer.close()

    run(body())


def test_aiokdb_async_messages_reach_the_upstream(gateway):
    marker = f"async-{gateway.mode}"

    async def body():
        _, writer = await aiokdb_connect(gateway.qgate)
        try:
            for i in range(10):
                await writer.async_msg(cv(f"{marker} {i}"))
            # Pinned, they arrive in order on the session's connection before the next query;
            # pooled, on any connection: wait for all of them.
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                received = await writer.sync_req(kk(ks("received"), ks("")))
                texts = [text for text, kind in zip(received["text"].kK(), received["kind"].kS())
                         if kind == "async" and text.aS().startswith(marker)]
                if len(texts) == 10 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            texts = [text.aS() for text in texts]
            if gateway.mode == "pinned":
                assert texts == [f"{marker} {i}" for i in range(10)]
            else:
                assert sorted(texts) == sorted(f"{marker} {i}" for i in range(10))
        finally:
            writer.close()

    run(body())


# ---------------------------------------------------------------------------------------------
# Subscriptions through a pinned session.
# ---------------------------------------------------------------------------------------------


class Subscriber(ClientContext):
    """An aiokdb client context that queues the async messages it receives."""

    def __init__(self):
        self.messages = asyncio.Queue()

    async def on_async_message(self, cmd, dotzw):
        await self.messages.put(cmd)


def test_aiokdb_subscribers_receive_publications_in_order(servers, password_files):
    # An upstream and a gateway of this test's own, so that the tickerplant's `seq` counts only
    # this test's publications.
    tickerplant = servers.start("upstream", "--name", "tp")
    qgate = servers.start("qgate", "-U", password_files["mixed"], "--upstream",
                          address(tickerplant))

    async def body():
        every = Subscriber()
        _, all_writer = await aiokdb_connect(qgate, "admin", context=every)
        some = Subscriber()
        _, some_writer = await aiokdb_connect(qgate, "adminmd5", context=some)
        _, publisher = await aiokdb_connect(qgate, "adminsha")
        try:
            # As kdb+tick's subscribers do: `.u.sub[`trade;`]` and `.u.sub[`trade;`IBM`GOOG]`.
            reply = await all_writer.sync_req(kk(ks(".u.sub"), ks("trade"), ks("")))
            assert reply.kK()[0].aS() == "trade"
            assert reply.kK()[1].kS() == ["time", "sym", "price", "size", "seq"]
            wanted = ktn(TypeEnum.KS)
            wanted.appendS("IBM", "GOOG")
            await some_writer.sync_req(kk(ks(".u.sub"), ks("trade"), wanted))

            count, rows = 200, 7
            sent = await publisher.sync_req(kk(ks("publish"), ks("trade"), kj(count), kj(rows)))
            assert sent.aJ() == count

            seqs = []
            for _ in range(count):
                message = await asyncio.wait_for(every.messages.get(), 30)
                head, table, data = message.kK()
                assert (head.aS(), table.aS()) == ("upd", "trade")
                assert len(data) == rows
                seqs.extend(data["seq"].kJ())
            # Every row, in order, without a gap: the tickerplant's first publication is seq 0.
            assert seqs == list(range(count * rows))

            wanted_seqs = [s for s in seqs if SYMS[s % 5] in ("IBM", "GOOG")]
            filtered = []
            while len(filtered) < len(wanted_seqs):
                message = await asyncio.wait_for(some.messages.get(), 30)
                data = message.kK()[2]
                assert set(data["sym"].kS()) <= {"IBM", "GOOG"}
                filtered.extend(data["seq"].kJ())
            assert filtered == wanted_seqs
            # Nothing more than what was published came.
            assert every.messages.empty() and some.messages.empty()
        finally:
            for writer in (all_writer, some_writer, publisher):
                writer.close()

    run(body())


def test_aiokdb_callback_arrives_before_its_reply_through_a_pinned_session(gateways):
    gateway = gateways("pinned")

    async def body():
        context = Subscriber()
        _, writer = await aiokdb_connect(gateway.qgate, context=context)
        try:
            reply = await writer.sync_req(kk(ks("callback"), kj(7)))
            assert reply.aJ() == 7
            # The upstream's `neg[.z.w]` message was forwarded before the reply.
            assert not context.messages.empty()
            message = context.messages.get_nowait()
            assert message.kK()[0].aS() == "callback"
            assert message.kK()[1].aJ() == 7
        finally:
            writer.close()

    run(body())


# ---------------------------------------------------------------------------------------------
# TLS on both sides: clients to qgate, and qgate to its upstream.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_gateway(shared_servers, password_files, certs):
    """An upstream that requires TLS and a client certificate from qgate (`qgate-upstream
    --tls-cert --tls-key --tls-client-ca`), and `qgate serve` in front of it with `[tls] mode =
    "required"` and `[upstream.tls]`, all with certificates from `qgate certs`."""
    upstream = shared_servers.start(
        "upstream", "--name", "secure", "--tls-cert", str(certs / "server.pem"),
        "--tls-key", str(certs / "server.key"), "--tls-client-ca", str(certs / "ca.pem"))
    directory = shared_servers.directory("tls-gateway")
    config = directory / "qgate.toml"
    config.write_text(
        "[tls]\n"
        'mode = "required"\n'
        f'cert_file = "{certs / "server.pem"}"\n'
        f'key_file = "{certs / "server.key"}"\n'
        "\n"
        + upstream_table(
            "secure", [upstream], mode="pooled", pool_size=1,
            tls={"enabled": True, "ca_file": certs / "ca.pem", "server_name": "localhost",
                 "cert_file": certs / "client-qgate.pem", "key_file": certs / "client-qgate.key"},
        )
    )
    qgate = shared_servers.start("qgate", "-U", password_files["mixed"], "--config", str(config))
    yield qgate, upstream
    qgate.stop()
    upstream.stop()


def test_tls_on_both_sides_of_the_gateway(tls_gateway):
    qgate, upstream = tls_gateway
    with pykx_connect(qgate, tls=True) as conn:
        me = conn("whoami", None).py()
        assert me["upstream"] == "secure"
        reply = conn("bytes", kx.LongAtom(3_000_000)).np()
        assert np.array_equal(reply, (np.arange(3_000_000) % 256).astype(np.uint8))
        with pytest.raises(kx.QError, match="^boom$"):
            conn("fail", kx.CharVector("boom"))
    # A plain client is refused by qgate, and the upstream takes no plain connection either.
    with pytest.raises(kx.PyKXException):
        pykx_connect(qgate)
    with pytest.raises(kx.PyKXException):
        pykx_connect(upstream)
    assert "this port requires TLS" in qgate.log()
    assert qgate.alive() and upstream.alive()


# ---------------------------------------------------------------------------------------------
# aiokdb's own server as the upstream.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pinned", "pooled"])
def test_aiokdb_server_class_as_the_upstream(servers, password_files, mode):
    # aiokdb_upstream.py: aiokdb's `handle_connection` and a `ServerContext` of ours.
    upstream = servers.start("aiokdb")
    if mode == "pinned":
        qgate = servers.start("qgate", "-U", password_files["mixed"], "--upstream",
                              address(upstream))
    else:
        config = servers.directory("aiokdb-upstream") / "qgate.toml"
        config.write_text(upstream_table("aiokdb", [upstream], mode="pooled", pool_size=2))
        qgate = servers.start("qgate", "-U", password_files["mixed"], "--config", str(config))

    with pykx_connect(qgate) as conn:
        assert conn("echo", kx.LongAtom(42)).py() == 42
        assert conn("echo", kx.SymbolVector(["a", "b"])).py() == ["a", "b"]
        assert conn("echo", kx.LongVector(list(range(10_000)))).py() == list(range(10_000))
        assert conn("1+1").py() == ["aiokdb", b"1+1"]
        with pytest.raises(kx.QError, match="^no such table$"):
            conn("fail", kx.CharVector("no such table"))
        assert conn("echo", kx.FloatAtom(2.5)).py() == 2.5

    async def body():
        _, writer = await aiokdb_connect(qgate, "adminmd5")
        try:
            assert (await writer.sync_req(kk(cv("echo"), kj(7)))).aJ() == 7
            reply = await writer.sync_req(cv("til 3"))
            assert reply.kK()[0].aS() == "aiokdb"
            assert reply.kK()[1].aS() == "til 3"
            with pytest.raises(KException, match="^bad$"):
                await writer.sync_req(kk(cv("fail"), cv("bad")))
            # qgate logged in to it: its health check, and the sessions' connections (pinned)
            # or the pool's (pooled).
            assert (await writer.sync_req(kk(cv("logins"), ks("")))).aJ() >= 2
        finally:
            writer.close()

    run(body())
