"""Every fault of the gateway (issue 20, item 7) through the real `qgate serve` with real clients
(aiokdb, and PyKX where its error type matters): an upstream that is down or hung at start, a
replica that goes down and comes back, a reply cut off mid-way (small and streamed), a
`query_timeout`, a reply over `max_reply_bytes`, a client that goes away while its query runs,
and an upstream that sends garbage.

Beside each fault a well-behaved client (the bystander) sends its own queries, during and after
it, and must get its own answers: a fault costs the client it hits, never another. Each test has
its upstreams and its qgate to itself (started in a fraction of a second, without plugins), so
that counters and logs are its own; the one with a router plugin is shared by its module, since a
debug build takes seconds to compile a plugin.

No timing is asserted: waits are polls with generous bounds, and every slow query is far slower
than the bound of the step that races it.
"""

import asyncio
import re
import socket
import threading

import pytest

import pykx as kx
from aiokdb import KException, cv, kj, kk, ks
from aiokdb.client import open_qipc_connection

from cases import PASSWORD
from conftest import (
    ROOT,
    SERVICE_PASSWORD,
    SERVICE_USER,
    Server,
    address,
    binary,
    eventually,
    start_gateway,
    upstream_table,
)

ROUTER = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release" / "router.wasm"

MODES = ["pinned", "pooled"]


def run(coroutine, timeout=120):
    """Runs one test's coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def connect(server, user="admin"):
    """An aiokdb session through `server`: (reader, writer)."""
    return await open_qipc_connection(
        host=server.host, port=server.port, user=user, password=PASSWORD
    )


async def closed_by_server(reader, timeout=30):
    """Whether the server closed the connection: the next read sees its end."""
    try:
        return await asyncio.wait_for(reader.reader.read(1), timeout) == b""
    except ConnectionResetError:
        return True


async def failing(request):
    """The error that `request` (a sync request) must end with."""
    try:
        reply = await request
    except Exception as error:
        return error
    pytest.fail(f"expected an error, got a reply: {reply!r}")


class Bystander:
    """A well-behaved client beside a fault: each `check()` sends a fresh value and must get it
    back, its own answer and nobody else's. With `via`, the value goes as an argument of that
    function, which the router sends to the test upstream `hdb`, whose receipt must quote it."""

    def __init__(self, writer, via=None):
        self.writer = writer
        self.via = via
        self.sent = 0

    async def check(self):
        self.sent += 1
        value = 1_000_000 + self.sent
        if self.via is None:
            reply = await self.writer.sync_req(kk(ks("echo"), kj(value)))
            assert reply.aJ() == value
        else:
            receipt = await self.writer.sync_req(kk(ks(self.via), kj(value)))
            assert receipt["upstream"].aS() == "hdb"
            assert str(value) in receipt["query"].aS()
        return value


def direct(upstream, question):
    """Asks the upstream directly (not through qgate), as the service account."""
    with kx.SyncQConnection(upstream.host, upstream.port, username=SERVICE_USER,
                            password=SERVICE_PASSWORD, timeout=30.0, no_ctx=True) as conn:
        return conn(question, None).py()


def gateway_for(servers, password_files, upstreams, mode, **keys):
    """qgate in front of `upstreams` as one service named `rdb`, in `mode` (one pooled connection
    per replica, so that a fault has the pool to itself), with these `[[upstream]]` keys."""
    if mode == "pooled":
        keys = {"mode": "pooled", "pool_size": 1, **keys}
    return start_gateway(servers, password_files["mixed"],
                         upstream_table("rdb", upstreams, **keys))


# ---------------------------------------------------------------------------------------------
# An upstream down, or hung, at start.
# ---------------------------------------------------------------------------------------------


class BlackHole:
    """A port that accepts TCP connections and never answers a byte: a kdb+ process that is hung
    (or a firewall that swallows packets) rather than down. `handshakes` counts the logins it has
    read and left unanswered."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = []
        self.handshakes = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(60)
            try:
                # The handshake, up to its NUL.
                data = b""
                while not data.endswith(b"\0"):
                    chunk = conn.recv(256)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            with self._lock:
                self.held.append(conn)
                self.handshakes += 1

    def close(self):
        self.listener.close()
        with self._lock:
            for conn in self.held:
                conn.close()


def free_port():
    """A port nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def down_at_start(shared_servers, password_files):
    """qgate started with its upstreams down or hung, and one up, reached by the router plugin:
    `rdb` (the default, pinned) and `pooled` are closed ports, `hung` accepts and never answers,
    and `hdb` is a test upstream, for the bystander. `getHistory` goes to hdb, `pool.*` to pooled,
    `hang.*` to hung, anything else to rdb."""
    if not ROUTER.is_file():
        pytest.fail(f"router.wasm not found at {ROUTER}: run `cargo xtask plugins`")
    hdb = shared_servers.start("upstream", "--name", "hdb")
    hole = BlackHole()
    rdb_port, pooled_port = free_port(), free_port()
    directory = shared_servers.directory("down-at-start")
    config = directory / "qgate.toml"
    config.write_text(
        upstream_table("rdb", [f"127.0.0.1:{rdb_port}"], connect_timeout="2s")
        + upstream_table("pooled", [f"127.0.0.1:{pooled_port}"], mode="pooled",
                         connect_timeout="2s")
        # Checked once, at start: every later login it gets is a query's.
        + upstream_table("hung", [f"127.0.0.1:{hole.port}"], mode="pooled", pool_size=1,
                         connect_timeout="2s", health_interval="1h")
        + upstream_table("hdb", [hdb])
        + "\n[[plugins]]\n"
        'name = "router"\n'
        f'path = "{ROUTER}"\n'
        'routes = ["hdb", "pooled", "hung"]\n'
        "[[plugins.config.rules]]\n"
        'upstream = "hdb"\n'
        'functions = ["getHistory"]\n'
        "[[plugins.config.rules]]\n"
        'upstream = "pooled"\n'
        'functions = ["pool.*"]\n'
        "[[plugins.config.rules]]\n"
        'upstream = "hung"\n'
        'functions = ["hang.*"]\n'
    )
    # A debug build compiles the plugin at start.
    qgate = Server([binary("QGATE_BIN", "qgate"), "serve", "-p", "127.0.0.1:0", "-U",
                    password_files["mixed"], "--config", str(config)],
                   directory / "stderr.log", startup_timeout=180.0)
    yield qgate, {"rdb": rdb_port, "pooled": pooled_port, "hung": hole, "hdb": hdb}
    qgate.stop()
    hole.close()
    hdb.stop()


def test_upstreams_down_at_start_are_logged_and_queries_name_them(down_at_start):
    qgate, upstreams = down_at_start
    # qgate started, and its first health checks logged each down upstream.
    for name in ("rdb", "pooled"):
        pattern = rf'upstream={name} server=127\.0\.0\.1:{upstreams[name]} from="unknown" to="down"'
        eventually(f"{name} is logged down", lambda: re.search(pattern, qgate.log()))

    async def body():
        _, writer = await connect(qgate)
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other, via="getHistory")
        try:
            # Pinned (the default service): the session logged in although its upstream is down,
            # and each query says which upstream cannot be reached and why.
            for _ in range(2):
                with pytest.raises(KException) as error:
                    await writer.sync_req(cv("select from trade"))
                assert str(error.value).startswith(
                    f"qgate: upstream rdb (127.0.0.1:{upstreams['rdb']}): cannot connect")
                await bystander.check()
            # Pooled.
            with pytest.raises(KException) as error:
                await writer.sync_req(kk(ks("pool.query"), kj(1)))
            assert str(error.value).startswith(
                f"qgate: upstream pooled (127.0.0.1:{upstreams['pooled']}): cannot connect")
            await bystander.check()
        finally:
            writer.close()
            other.close()

    run(body())


def test_a_hung_upstream_is_an_error_after_connect_timeout(down_at_start):
    qgate, upstreams = down_at_start
    hole = upstreams["hung"]
    # The first health check found it hung.
    eventually("hung is logged down", lambda: re.search(
        rf'upstream=hung server=127\.0\.0\.1:{hole.port} from="unknown" to="down"', qgate.log()))

    async def body():
        _, writer = await connect(qgate)
        _, other = await connect(qgate, "adminsha")
        bystander = Bystander(other, via="getHistory")
        try:
            before = hole.handshakes
            hung = asyncio.ensure_future(writer.sync_req(kk(ks("hang.query"), kj(1))))
            # Once qgate's login to the hung upstream has arrived, the query waits on it; the
            # bystander, on another service of the same qgate, is answered meanwhile.
            while hole.handshakes == before and not hung.done():
                await asyncio.sleep(0.05)
            await bystander.check()
            error = await failing(hung)
            assert isinstance(error, KException), error
            message = str(error)
            assert message.startswith(f"qgate: upstream hung (127.0.0.1:{hole.port}): "), message
            assert "connect_timeout" in message, message
            # The session goes on.
            assert (await writer.sync_req(kk(ks("getHistory"), kj(3))))["upstream"].aS() == "hdb"
        finally:
            writer.close()
            other.close()

    run(body())


def test_pykx_gets_a_qerror_naming_the_down_upstream(down_at_start):
    qgate, upstreams = down_at_start
    with kx.SyncQConnection(qgate.host, qgate.port, username="admin", password=PASSWORD,
                            timeout=30.0) as conn:
        with pytest.raises(kx.QError, match=r"^qgate: upstream rdb \(127\.0\.0\.1:\d+\): "
                                            r"cannot connect"):
            conn("1+1")
        assert conn("getHistory", kx.LongAtom(1)).py()["upstream"] == "hdb"


# ---------------------------------------------------------------------------------------------
# A replica that goes down, and comes back.
# ---------------------------------------------------------------------------------------------


def test_traffic_leaves_a_replica_that_goes_down_and_returns_when_it_recovers(
        servers, password_files):
    # --concurrent: a query held on one replica does not hold back the direct questions below.
    a = servers.start("upstream", "--name", "a", "--concurrent")
    b = servers.start("upstream", "--name", "b", "--concurrent")
    b_port = b.port
    qgate = gateway_for(servers, password_files, [a, b], "pooled", health_interval="1s",
                        connect_timeout="2s")

    def logged(port, to, times=1):
        pattern = rf'server=127\.0\.0\.1:{port} from="\w+" to="{to}"'
        return lambda: len(re.findall(pattern, qgate.log())) == times

    eventually("a is up", logged(a.port, "up"))
    eventually("b is up", logged(b_port, "up"))

    async def body():
        _, bystander_writer = await connect(qgate, "adminmd5")
        bystander = Bystander(bystander_writer)
        _, writer = await connect(qgate)
        try:
            await bystander.check()
            b.stop()
            # The health check ejects b.
            await asyncio.to_thread(eventually, "b is logged down", logged(b_port, "down"))
            answered = set()
            for _ in range(10):
                answered.add((await writer.sync_req(kk(ks("whoami"), ks(""))))["upstream"].aS())
                await bystander.check()
            assert answered == {"a"}
            # b comes back on its port, and the health check takes it back.
            b2 = servers.start("upstream", "--name", "b", "--concurrent",
                               listen=f"127.0.0.1:{b_port}")
            await asyncio.to_thread(eventually, "b is logged up again", logged(b_port, "up", 2))
            # A long query holds one replica's only pooled connection; the next query must go
            # to the other, whichever that is, so both take traffic.
            _, holder = await connect(qgate, "adminsha")
            held = asyncio.ensure_future(holder.sync_req(kk(ks("sleep"), kj(60_000))))

            def holding():
                for server in (a, b2):
                    texts = direct(server, "received")["text"]
                    if any(b"sleep" in text for text in texts):
                        return server
                return None

            while (busy := await asyncio.to_thread(holding)) is None:
                assert not held.done(), "the long query ended early"
                await asyncio.sleep(0.05)
            who = (await writer.sync_req(kk(ks("whoami"), ks(""))))["upstream"].aS()
            assert who == ("b" if busy is a else "a")
            await bystander.check()
            held.cancel()
            holder.close()
        finally:
            writer.close()
            bystander_writer.close()

    run(body())


# ---------------------------------------------------------------------------------------------
# A reply cut off mid-way.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_upstream_dying_mid_reply(servers, password_files, mode):
    upstream = servers.start("upstream", "--name", "rdb")
    qgate = gateway_for(servers, password_files, [upstream], mode)

    async def body():
        reader, writer = await connect(qgate)
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other)
        try:
            await bystander.check()
            # A small reply is read whole before it is forwarded: its loss is a q error naming
            # the upstream and the cause.
            died, _ = await asyncio.gather(
                failing(writer.sync_req(kk(ks("die"), kj(10_000)))), bystander.check())
            assert isinstance(died, KException), died
            assert str(died).startswith(f"qgate: upstream rdb ({address(upstream)}): "), died
            assert "closed the connection" in str(died), died
            await bystander.check()
            if mode == "pinned":
                # The session's upstream connection is gone, and so is the session.
                assert await closed_by_server(reader)
            else:
                # The pooled connection is replaced; the session goes on. The query is not
                # retried: the upstream received it once.
                assert (await writer.sync_req(kk(ks("echo"), kj(1)))).aJ() == 1
                texts = direct(upstream, "received")["text"]
                assert sum(b"die" in text for text in texts) == 1
                # A large reply streams through: once part of it reached the client, the
                # client's stream is cut and the client closed.
                with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                    await writer.sync_req(kk(ks("die"), kj(4_000_000)))
            await bystander.check()
        finally:
            writer.close()
            other.close()

    run(body())
    log = qgate.log()
    if mode == "pinned":
        assert "the backend ended the session; closing" in log, log
    else:
        assert "the reply was cut off mid-message; closing the client" in log, log


def test_a_large_reply_cut_off_mid_stream_closes_a_pinned_client(servers, password_files):
    upstream = servers.start("upstream", "--name", "rdb")
    qgate = gateway_for(servers, password_files, [upstream], "pinned")

    async def body():
        _, writer = await connect(qgate)
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other)
        try:
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await writer.sync_req(kk(ks("die"), kj(4_000_000)))
            await bystander.check()
        finally:
            writer.close()
            other.close()

    run(body())
    assert "the reply was cut off mid-message; closing the client" in qgate.log()


# ---------------------------------------------------------------------------------------------
# query_timeout.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_query_timeout_answers_timeout_and_replaces_the_connection(
        servers, password_files, mode):
    # --concurrent: the slow query does not hold back the bystander's, or the direct questions,
    # inside the upstream, as a q with -s would not.
    upstream = servers.start("upstream", "--name", "rdb", "--concurrent")
    qgate = gateway_for(servers, password_files, [upstream], mode, query_timeout="1s")

    async def body():
        _, writer = await connect(qgate)
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other)
        try:
            await bystander.check()
            # 60 s: far longer than the timeout, so only the timeout can end the wait.
            slow = asyncio.ensure_future(failing(writer.sync_req(kk(ks("sleep"), kj(60_000)))))
            sleeping = await asyncio.to_thread(wait_received, upstream, b"sleep")
            # The slow query holds its connection (pooled: the pool's only one). The bystander
            # is answered beside it (pinned), or once the timeout has freed the pool (pooled).
            await bystander.check()
            error = await slow
            assert isinstance(error, KException), error
            message = str(error)
            assert message.startswith(f"timeout: upstream rdb ({address(upstream)}) did not "
                                      "answer within 1s (query_timeout)"), message
            # The next query is answered on a new connection, not with the late reply: the old
            # one, still running the sleep upstream, keeps its handle there.
            assert (await writer.sync_req(kk(ks("echo"), kj(424242)))).aJ() == 424242
            echoed = await asyncio.to_thread(wait_received, upstream, b"424242")
            assert echoed != sleeping
            await bystander.check()
        finally:
            writer.close()
            other.close()

    run(body())
    assert "query timed out" in qgate.log()


# ---------------------------------------------------------------------------------------------
# max_reply_bytes.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_reply_over_max_reply_bytes_is_refused_and_the_connection_kept(
        servers, password_files, mode):
    upstream = servers.start("upstream", "--name", "rdb")
    qgate = gateway_for(servers, password_files, [upstream], mode, max_reply_bytes="1MiB")

    async def body():
        _, writer = await connect(qgate)
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other)
        try:
            who = await writer.sync_req(kk(ks("whoami"), ks("")))
            large, _ = await asyncio.gather(
                failing(writer.sync_req(kk(ks("bytes"), kj(2_000_000)))), bystander.check())
            assert isinstance(large, KException), large
            message = str(large)
            assert message.startswith(f"qgate: the reply from upstream rdb ({address(upstream)})"
                                      " is 2000014 bytes, over max_reply_bytes (1048576 bytes)"), \
                message
            # Just under the limit passes.
            reply = await writer.sync_req(kk(ks("bytes"), kj(1_000_000)))
            assert len(reply) == 1_000_000
            # The same upstream connection answers the next query: the reply was read and
            # dropped, not left in the way.
            again = await writer.sync_req(kk(ks("whoami"), ks("")))
            assert again["handle"].aI() == who["handle"].aI()
            await bystander.check()
        finally:
            writer.close()
            other.close()

    run(body())


# ---------------------------------------------------------------------------------------------
# A client that goes away while its query runs.
# ---------------------------------------------------------------------------------------------


def wait_received(upstream, needle):
    """Polls the upstream's record until a message whose text holds `needle` is in it; returns
    that record entry's handle."""
    found = {}

    def check():
        record = direct(upstream, "received")
        for handle, text in zip(record["handle"], record["text"]):
            if needle in text:
                found["handle"] = handle
                return True
        return False

    eventually(f"the upstream received {needle!r}", check)
    return found["handle"]


def test_a_pooled_connection_is_reused_only_after_a_gone_clients_reply(
        servers, password_files):
    # --concurrent, so that the direct questions are answered while the query runs.
    upstream = servers.start("upstream", "--name", "rdb", "--concurrent")
    qgate = gateway_for(servers, password_files, [upstream], "pooled")

    async def body():
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other)
        _, leaver = await connect(qgate)
        try:
            await bystander.check()
            leaving = asyncio.ensure_future(leaver.sync_req(kk(ks("sleep"), kj(1500))))
            handle = await asyncio.to_thread(wait_received, upstream, b"sleep")
            # The query runs upstream on the pool's only connection; its client goes away.
            leaver.close()
            await failing(leaving)
            # The bystander's query waits for that connection to be drained of the gone
            # client's reply, then gets its own answer on it.
            value = await bystander.check()
            record = await asyncio.to_thread(direct, upstream, "received")
            rows = list(zip(record["handle"], record["text"]))
            echo_handle = next(h for h, text in rows if str(value).encode() in text)
            assert echo_handle == handle
            stats = await asyncio.to_thread(direct, upstream, "stats")
            # Never two queries in flight on one connection: the bystander's was not sent until
            # the sleep's reply had come back.
            assert stats["pipelined"] == 1, stats
        finally:
            other.close()

    run(body())


def test_a_pinned_connection_closes_with_a_client_gone_mid_query(servers, password_files):
    upstream = servers.start("upstream", "--name", "rdb", "--concurrent")
    qgate = gateway_for(servers, password_files, [upstream], "pinned")

    async def body():
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other)
        _, leaver = await connect(qgate)
        try:
            await bystander.check()
            # The health check's, the bystander's, the leaver's, and the question's own.
            assert direct(upstream, "stats")["open"] == 4
            leaving = asyncio.ensure_future(leaver.sync_req(kk(ks("sleep"), kj(2000))))
            await asyncio.to_thread(wait_received, upstream, b"sleep")
            leaver.close()
            await failing(leaving)
            # qgate closes the leaver's upstream connection at once; the upstream, as a kdb+
            # process does, sees the close (its .z.pc) once it has finished the query.
            await asyncio.to_thread(eventually, "the gone client's upstream connection closes",
                                    lambda: direct(upstream, "stats")["open"] == 3)
            await bystander.check()
        finally:
            other.close()

    run(body())


# ---------------------------------------------------------------------------------------------
# Garbage from the upstream.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_garbage_from_the_upstream_closes_that_connection_with_an_error(
        servers, password_files, mode):
    upstream = servers.start("upstream", "--name", "rdb")
    qgate = gateway_for(servers, password_files, [upstream], mode)

    async def body():
        reader, writer = await connect(qgate)
        _, other = await connect(qgate, "adminmd5")
        bystander = Bystander(other)
        try:
            garbage, _ = await asyncio.gather(
                failing(writer.sync_req(kk(ks("garbage"), ks("")))), bystander.check())
            assert isinstance(garbage, KException), garbage
            message = str(garbage)
            assert message.startswith(f"qgate: upstream rdb ({address(upstream)}): the upstream "
                                      "sent bytes that are not q IPC"), message
            if mode == "pinned":
                assert await closed_by_server(reader)
            else:
                assert (await writer.sync_req(kk(ks("echo"), kj(3)))).aJ() == 3
            await bystander.check()
            # qgate closed the connection that carried the garbage: open now are the health
            # check's, the bystander's (pinned) or the pool's new one (pooled), and this
            # question's own.
            await asyncio.to_thread(eventually, "the garbage connection closes",
                                    lambda: direct(upstream, "stats")["open"] == 3)
        finally:
            writer.close()
            other.close()

    run(body())
    if mode == "pinned":
        # The session ends with its upstream connection, and the log says why.
        log = qgate.log()
        assert "the backend ended the session; closing" in log, log
        assert "the upstream sent bytes that are not q IPC" in log, log
