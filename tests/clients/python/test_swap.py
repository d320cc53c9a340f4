"""Hot-swap from a real client (aiokdb): 64 connections sending sync and async messages while
`qgate reload` swaps the policy 20 times between two versions, and the `conns` table keeping its
rows across a swap.

The policy is the `version-a` / `version-b` fixture pair (plugins/fixtures/versioned.rs): the sync
query `version` answers `a` or `b`, each async message adds one to its connection's counter in kv,
and the sync query `count` answers that counter. So:

- no message fails: every sync answer is `a` or `b`, never an error, and no connection drops;
- no message is lost: at the end each connection's `count` equals the async messages it sent,
  counted across every swap (kv outlives versions);
- the new version's decisions are visible right after each swap: a sync query sent after
  `qgate reload` returned, with no other reload begun before its answer, answers the new version.
"""

import asyncio
import json
import shutil
import subprocess

import pytest
from aiokdb import b9, cv
from aiokdb.client import open_qipc_connection

from conftest import ROOT, Server, binary

PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"
CONNECTIONS = 64
SWAPS = 20
ASYNC_PER_ROUND = 3


def deploy(source, path):
    """Copies `source` beside `path` and renames it over it, as a deploy should."""
    staging = path.with_suffix(".staging")
    shutil.copyfile(source, staging)
    staging.replace(path)


@pytest.fixture
def swap_server(tmp_path):
    for name in ("version_a", "version_b"):
        if not (PLUGINS / f"{name}.wasm").is_file():
            pytest.fail(f"{name}.wasm not found in {PLUGINS}: run `cargo xtask plugins`")
    wasm = tmp_path / "policy.wasm"
    deploy(PLUGINS / "version_a.wasm", wasm)
    socket = tmp_path / "admin.sock"
    config = tmp_path / "qgate.toml"
    # With the compiled-code cache, only the first load of each version compiles: the swaps
    # themselves take milliseconds even in a debug build.
    config.write_text(
        f'[server]\nplugin_cache_dir = "{tmp_path / "cache"}"\n'
        f'[admin]\nsocket = "{socket}"\nwatch = false\n'
        f'[[plugins]]\nname = "policy"\npath = "{wasm}"\n'
    )
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config), "-p", "127.0.0.1:0"]
    server = Server(argv, tmp_path / "stderr.log", startup_timeout=180.0)
    server.wasm = wasm
    server.socket = socket
    yield server
    server.stop()


class Swaps:
    """What the swapper has done, read by the clients between their awaits (one event loop, so no
    lock): `epoch` grows when a reload begins and when it returns; `expected` is the version
    serving, or None while a reload runs."""

    def __init__(self):
        self.epoch = 0
        self.expected = "a"
        self.done = False


async def reload(server):
    process = await asyncio.create_subprocess_exec(
        binary("QGATE_BIN", "qgate"), "reload", "policy", "--admin-socket", str(server.socket),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (out, err, server.log())
    assert b"swapped" in out, out


async def swapper(server, swaps):
    try:
        for round_ in range(SWAPS):
            version = "b" if round_ % 2 == 0 else "a"
            deploy(PLUGINS / f"version_{version}.wasm", server.wasm)
            swaps.epoch += 1
            swaps.expected = None
            await reload(server)
            swaps.expected = version
            swaps.epoch += 1
            # Let every client send a few rounds on this version.
            await asyncio.sleep(0.1)
    finally:
        swaps.done = True


async def client(server, swaps, stats):
    _, writer = await open_qipc_connection(host=server.host, port=server.port)
    sent_async = 0
    try:
        while not swaps.done:
            for _ in range(ASYNC_PER_ROUND):
                await writer.async_msg(cv("tick"))
                sent_async += 1
            epoch, expected = swaps.epoch, swaps.expected
            answer = (await writer.sync_req(cv("version"))).aS()
            assert answer in ("a", "b"), answer
            stats["sync"] += 1
            if expected is not None and swaps.epoch == epoch:
                assert answer == expected, (
                    f"a query sent after the swap to {expected} was answered by {answer}"
                )
                stats["checked"] += 1
        # The closing sync query comes after every async message on this connection: their
        # count must be complete.
        count = (await writer.sync_req(cv("count"))).aJ()
        assert count == sent_async, f"sent {sent_async} async messages, {count} arrived"
        stats["async"] += sent_async
    finally:
        writer.close()


def test_64_connections_survive_20_swaps(swap_server):
    async def body():
        swaps = Swaps()
        stats = {"sync": 0, "async": 0, "checked": 0}
        clients = [client(swap_server, swaps, stats) for _ in range(CONNECTIONS)]
        await asyncio.gather(swapper(swap_server, swaps), *clients)
        return stats

    stats = asyncio.run(asyncio.wait_for(body(), 600))
    print(f"swap test: {stats}")
    assert swap_server.alive(), swap_server.log()
    # Every connection was checked against the new version after swaps, many times over.
    assert stats["checked"] >= CONNECTIONS * SWAPS // 2, stats
    assert stats["async"] > 0, stats
    listing = subprocess.run(
        [binary("QGATE_BIN", "qgate"), "plugins", "--admin-socket", str(swap_server.socket)],
        capture_output=True, check=True, text=True,
    ).stdout
    assert "policy" in listing, listing


def test_the_conns_table_keeps_its_rows_across_a_swap(tmp_path):
    """`conns` keeps one kv row per connection; a new build of it (the same component with a custom
    section appended, so another digest) sees the same rows after `qgate reload`."""
    source = PLUGINS / "conns.wasm"
    if not source.is_file():
        pytest.fail(f"conns.wasm not found in {PLUGINS}: run `cargo xtask plugins`")
    wasm = tmp_path / "conns.wasm"
    deploy(source, wasm)
    socket = tmp_path / "admin.sock"
    config = tmp_path / "qgate.toml"
    config.write_text(
        f'[admin]\nsocket = "{socket}"\nwatch = false\n'
        f'[[plugins]]\nname = "conns"\npath = "{wasm}"\n'
    )
    qgate = binary("QGATE_BIN", "qgate")
    argv = [qgate, "serve", "--config", str(config), "-p", "127.0.0.1:0"]
    server = Server(argv, tmp_path / "stderr.log", startup_timeout=180.0)

    def digest():
        listing = subprocess.run(
            [qgate, "plugins", "--json", "--admin-socket", str(socket)],
            capture_output=True, check=True, text=True,
        ).stdout
        return json.loads(listing)[0]["digest"]

    async def body():
        writers = []
        for user in ("alice", "bob", "carol"):
            _, writer = await open_qipc_connection(
                host=server.host, port=server.port, user=user, password="x"
            )
            writers.append(writer)
        try:
            # A connection's open hook runs before its first message is handled, but not
            # necessarily before another connection's: a query on each makes sure that every
            # connection is in the table before it is read.
            for writer in writers:
                await writer.sync_req(cv("conns"))
            before = b9(await writers[0].sync_req(cv("conns")))
            first = digest()
            staging = tmp_path / "conns.staging"
            # A custom section: id 0, size, name length, name.
            staging.write_bytes(source.read_bytes() + bytes([0, 6, 5]) + b"qgate")
            staging.replace(wasm)
            await reload_plugin(qgate, socket, "conns")
            assert digest() != first
            after = b9(await writers[1].sync_req(cv("conns")))
            assert after == before, "the table changed across the swap"
            for user in (b"alice", b"bob", b"carol"):
                assert user in after
        finally:
            for writer in writers:
                writer.close()

    try:
        asyncio.run(asyncio.wait_for(body(), 120))
        assert server.alive(), server.log()
    finally:
        server.stop()


async def reload_plugin(qgate, socket, name):
    process = await asyncio.create_subprocess_exec(
        qgate, "reload", name, "--admin-socket", str(socket),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (out, err)
    assert b"swapped" in out, out
