"""Entitlements on the way out: PyKX and aiokdb through `qgate serve` in front of the test upstream
(`qgate-upstream`), with the `entitlements` plugin filtering replies and publications per user.

The users are the password file's (cases.PASSWORD_FILES["mixed"]), each with its own entitlement:
- admin may see AAPL and MSFT rows, without the `client` column and with `account` masked, and at
  most 64 KiB of reply;
- adminmd5 may see everything (the `analysts` group);
- adminsha may see IBM rows only.

A reply is a table the test sends and the upstream's `echo` sends back, so that what arrives can be
compared with what the upstream sent; publications come from the upstream's tickerplant
(`.u.sub`, `publish`).
"""

import asyncio

import numpy as np
import pandas as pd
import pytest

import pykx as kx
from aiokdb import kj, kk, ks
from aiokdb.client import ClientContext, open_qipc_connection

from cases import PASSWORD
from conftest import ROOT, address

assert not kx.licensed, "these tests are for PyKX's unlicensed mode: set PYKX_UNLICENSED=true"

PLUGIN = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release" / "entitlements.wasm"

SYMS = ["AAPL", "MSFT", "IBM", "GOOG", "LSE.L"]

CONFIG = f"""
[[plugins]]
name = "entitlements"
path = "{PLUGIN}"

[plugins.config]
column = "sym"
safe = ["count_trades", ".u.sub"]

[plugins.config.users.admin]
allow = ["AAPL", "MSFT"]
remove = ["client"]
mask = ["account"]
max_bytes = "64KiB"

[plugins.config.users.adminsha]
allow = ["IBM"]

[plugins.config.groups.analysts]
members = ["adminmd5"]
allow = ["*"]
"""


@pytest.fixture(scope="module")
def entitled(shared_servers, password_files):
    """A test upstream named `rdb`, and `qgate serve` with the entitlements plugin in front."""
    if not PLUGIN.is_file():
        pytest.fail(f"{PLUGIN} not found: run `cargo xtask plugins`")
    upstream = shared_servers.start("upstream", "--name", "rdb")
    directory = shared_servers.directory("entitlements")
    config = directory / "qgate.toml"
    config.write_text(
        CONFIG + f'\n[[upstream]]\nname = "rdb"\nservers = ["{address(upstream)}"]\n')
    qgate = shared_servers.start(
        "qgate", "-U", password_files["mixed"], "--config", str(config))
    return qgate


def connect(server, user):
    return kx.SyncQConnection(
        host=server.host, port=server.port, username=user, password=PASSWORD, timeout=30.0)


def trades(rows=10):
    return pd.DataFrame({
        "sym": [SYMS[i % 5] for i in range(rows)],
        "price": [float(i) for i in range(rows)],
        "client": [f"c{i}" for i in range(rows)],
        "account": list(range(rows)),
    })


def echoed(server, user, value):
    with connect(server, user) as conn:
        return conn("echo", kx.toq(value))


def test_a_restricted_user_sees_only_allowed_rows_without_removed_columns(entitled):
    sent = trades()
    got = echoed(entitled, "admin", sent).pd()
    assert list(got.columns) == ["sym", "price", "account"]
    assert list(got["sym"]) == ["AAPL", "MSFT", "AAPL", "MSFT"]
    assert list(got["price"]) == [0.0, 1.0, 5.0, 6.0]
    # Masked: nulls of the column's type (long nulls come to pandas as the minimum int64 or NaN).
    assert got["account"].isna().all() or (got["account"] == np.iinfo(np.int64).min).all()


def test_another_user_sees_other_rows_of_the_same_reply(entitled):
    got = echoed(entitled, "adminsha", trades()).pd()
    assert list(got["sym"]) == ["IBM", "IBM"]
    assert list(got.columns) == ["sym", "price", "client", "account"]
    assert list(got["client"]) == ["c2", "c7"]


def test_an_entitled_user_gets_the_reply_unchanged(entitled):
    sent = trades()
    got = echoed(entitled, "adminmd5", sent)
    assert bytes(kx.serialize(got).copy())[8:] == bytes(kx.serialize(kx.toq(sent)).copy())[8:]


def test_an_entitled_users_later_replies_go_through_unchanged(entitled):
    """The plugin passes adminmd5 for the whole connection on the first reply (`pass-always`);
    the later ones, large ones included, go through without it, byte for byte."""
    with connect(entitled, "adminmd5") as conn:
        for rows in (10, 200_000, 3, 200_000):
            sent = kx.toq(trades(rows))
            got = conn("echo", sent)
            assert bytes(kx.serialize(got).copy())[8:] == bytes(kx.serialize(sent).copy())[8:]


def test_an_aggregate_is_denied_to_a_restricted_user_and_allowed_to_an_entitled_one(entitled):
    average = pd.DataFrame({"price": [2.5]})
    with pytest.raises(kx.QError, match="entitlements: .*aggregate"):
        echoed(entitled, "admin", average)
    with pytest.raises(kx.QError, match="entitlements: .*not a table"):
        echoed(entitled, "admin", kx.FloatAtom(2.5))
    assert echoed(entitled, "adminmd5", average).pd()["price"].tolist() == [2.5]
    assert echoed(entitled, "adminmd5", kx.FloatAtom(2.5)).py() == 2.5


def test_a_reply_over_the_byte_cap_is_refused_and_the_session_goes_on(entitled):
    with connect(entitled, "admin") as conn:
        with pytest.raises(kx.QError, match="max_bytes"):
            conn("echo", kx.toq(trades(10_000)))
        assert list(conn("echo", kx.toq(trades(2))).pd()["sym"]) == ["AAPL", "MSFT"]


def test_a_large_reply_is_filtered(entitled):
    sent = trades(200_000)
    got = echoed(entitled, "adminsha", sent).pd()
    assert len(got) == 40_000
    assert set(got["sym"]) == {"IBM"}
    assert list(got["price"][:3]) == [2.0, 7.0, 12.0]


class Subscriber(ClientContext):
    """An aiokdb client context that queues the async messages it receives."""

    def __init__(self):
        self.messages = asyncio.Queue()

    async def on_async_message(self, cmd, dotzw):
        await self.messages.put(cmd)


def test_two_subscribers_receive_differently_filtered_publications(entitled):
    async def body():
        alice, bob = Subscriber(), Subscriber()
        _, alice_writer = await open_qipc_connection(
            host=entitled.host, port=entitled.port, user="admin", password=PASSWORD, context=alice)
        _, bob_writer = await open_qipc_connection(
            host=entitled.host, port=entitled.port, user="adminsha", password=PASSWORD,
            context=bob)
        _, publisher = await open_qipc_connection(
            host=entitled.host, port=entitled.port, user="adminmd5", password=PASSWORD)
        try:
            for writer in (alice_writer, bob_writer):
                await writer.sync_req(kk(ks(".u.sub"), ks("trade"), ks("")))
            count, rows = 20, 10
            sent = await publisher.sync_req(kk(ks("publish"), ks("trade"), kj(count), kj(rows)))
            assert sent.aJ() == count

            async def received(subscriber, wanted):
                seqs, syms = [], set()
                while len(seqs) < wanted:
                    message = await asyncio.wait_for(subscriber.messages.get(), 30)
                    head, table, data = message.kK()
                    assert (head.aS(), table.aS()) == ("upd", "trade")
                    seqs.extend(data["seq"].kJ())
                    syms |= set(data["sym"].kS())
                return seqs, syms

            every = list(range(count * rows))
            alice_seqs, alice_syms = await received(
                alice, sum(1 for s in every if SYMS[s % 5] in ("AAPL", "MSFT")))
            bob_seqs, bob_syms = await received(
                bob, sum(1 for s in every if SYMS[s % 5] == "IBM"))
            assert alice_syms == {"AAPL", "MSFT"}
            assert alice_seqs == [s for s in every if SYMS[s % 5] in ("AAPL", "MSFT")]
            assert bob_syms == {"IBM"}
            assert bob_seqs == [s for s in every if SYMS[s % 5] == "IBM"]
        finally:
            for writer in (alice_writer, bob_writer, publisher):
                writer.close()

    asyncio.run(asyncio.wait_for(body(), 120))
