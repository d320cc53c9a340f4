"""The built-in decision log (`[decision_log]`) under load from a real client: 64 aiokdb
connections send sync and async messages through `allowlist` then `echo`, some allowed and some
denied; once the server has stopped, the log has one line per decision (each login, each
connection opened, each message), none lost (the ids run without a gap), each with its keys,
and the password nowhere in it.
"""

import asyncio
import base64
import json
import signal
from collections import Counter

import pytest
from aiokdb import KException, cv, kj, kk, ks
from aiokdb.client import open_qipc_connection

from conftest import ROOT, Server, binary

PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"
CACHE = ROOT / "target" / "qgate-plugin-cache-tests"
CONNECTIONS = 64
SYNC_EACH = 30
ASYNC_EACH = 10
PASSWORD = "hunter2-not-in-the-log"


@pytest.fixture
def server(tmp_path):
    for name in ("allowlist", "echo"):
        if not (PLUGINS / f"{name}.wasm").is_file():
            pytest.fail(f"{name}.wasm not found in {PLUGINS}: run `cargo xtask plugins`")
    config = tmp_path / "qgate.toml"
    config.write_text(
        f'[server]\nplugin_cache_dir = "{CACHE}"\n'
        '[decision_log]\npath = "decisions.jsonl"\ninclude_bytes = "4KiB"\n'
        f'[[plugins]]\nname = "allowlist"\npath = "{PLUGINS / "allowlist.wasm"}"\n'
        'config = { users = { "*" = [] }, queries = { allow = true } }\n'
        f'[[plugins]]\nname = "echo"\npath = "{PLUGINS / "echo.wasm"}"\n'
    )
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config), "-p", "127.0.0.1:0"]
    server = Server(argv, tmp_path / "stderr.log", startup_timeout=300.0)
    server.decisions = tmp_path / "decisions.jsonl"
    yield server
    server.stop()


async def client(server, n):
    _, writer = await open_qipc_connection(
        host=server.host, port=server.port, user=f"user{n}", password=PASSWORD
    )
    try:
        for i in range(SYNC_EACH):
            if i % 3 == 0:
                # A call the allowlist refuses: nobody may call anything.
                with pytest.raises(KException, match="access"):
                    await writer.sync_req(kk(ks(f"fn{i}"), kj(1)))
            else:
                assert (await writer.sync_req(cv(f"q {n} {i}"))).aS() == f"q {n} {i}"
        for i in range(ASYNC_EACH):
            await writer.async_msg(cv(f"a {n} {i}"))
        # A last sync query: every async message before it has been decided.
        assert (await writer.sync_req(cv("done"))).aS() == "done"
    finally:
        writer.close()


def test_one_line_per_decision_under_64_connections(server):
    async def body():
        await asyncio.gather(*(client(server, n) for n in range(CONNECTIONS)))

    asyncio.run(asyncio.wait_for(body(), 300))
    # A clean stop flushes what is queued.
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=60)

    text = server.decisions.read_text()
    assert PASSWORD not in text
    lines = [json.loads(line) for line in text.splitlines()]
    events = Counter(line["event"] for line in lines)
    assert events == {
        "auth": CONNECTIONS,
        "open": CONNECTIONS,
        "sync": CONNECTIONS * (SYNC_EACH + 1),
        "async": CONNECTIONS * ASYNC_EACH,
    }, events
    # Nothing dropped: the sequence numbers run from 1 without a gap.
    sequences = sorted(int(line["id"].rsplit("-", 1)[1]) for line in lines)
    assert sequences == list(range(1, len(lines) + 1))
    keys = {"id", "time", "user", "event", "decision", "decided_by", "version", "reason",
            "latency_us", "handle", "peer", "tls_cn", "head", "size"}
    for line in lines:
        assert keys <= line.keys(), line
    denied = [line for line in lines if line["decision"] == "denied"]
    assert len(denied) == CONNECTIONS * len(range(0, SYNC_EACH, 3)), len(denied)
    for line in denied:
        assert line["decided_by"] == "allowlist", line
        assert len(line["version"]) == 12, line
        assert line["reason"].startswith("access:"), line
        assert line["head"].startswith("fn"), line
    replied = [line for line in lines if line["decision"] == "replied"]
    assert {line["decided_by"] for line in replied} == {"echo"}
    # Free text is kept as text, and messages under the cap whole, for replay.
    sample = next(line for line in replied if line.get("text", "").startswith("q "))
    body_bytes = base64.b64decode(sample["bytes"])
    assert body_bytes[0] == 10 and body_bytes.endswith(sample["text"].encode())
    assert all(line["user"].startswith("user") for line in lines)
