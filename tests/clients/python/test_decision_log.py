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


def serve(directory, config):
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config), "-p", "127.0.0.1:0"]
    return Server(argv, directory / "stderr.log", startup_timeout=300.0)


def stop(server):
    """Stops `server` with SIGTERM, which flushes the decision log, and waits for it."""
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=60)
    server.stop()


async def as_alice(server, send):
    """Runs `send(writer)` on a connection of alice's."""
    _, writer = await open_qipc_connection(
        host=server.host, port=server.port, user="alice", password=PASSWORD
    )
    try:
        await send(writer)
    finally:
        writer.close()


def chain_config(directory, functions, log=True):
    """`allowlist` (alice may call `functions`; free text allowed) then `echo`, with a decision log
    that keeps messages whole when `log`."""
    users = ", ".join(f'"{name}"' for name in functions)
    config = directory / ("recorded.toml" if log else "candidate.toml")
    config.write_text(
        f'[server]\nplugin_cache_dir = "{CACHE}"\n'
        + ('[decision_log]\npath = "decisions.jsonl"\ninclude_bytes = "4KiB"\n' if log else "")
        + f'[[plugins]]\nname = "allowlist"\npath = "{PLUGINS / "allowlist.wasm"}"\n'
        f'config = {{ users = {{ alice = [{users}] }}, queries = {{ allow = true }} }}\n'
        f'[[plugins]]\nname = "echo"\npath = "{PLUGINS / "echo.wasm"}"\n'
    )
    return config


def test_replay_reports_exactly_the_decisions_a_candidate_changes(tmp_path):
    import subprocess

    recorded = chain_config(tmp_path, ["f", "g"])
    server = serve(tmp_path, recorded)
    try:
        async def send(writer):
            for name, times in (("f", 3), ("g", 4), ("h", 2)):
                for i in range(times):
                    try:
                        await writer.sync_req(kk(ks(name), kj(i)))
                    except KException:
                        assert name == "h"
            for i in range(2):
                assert (await writer.sync_req(cv(f"select from t{i}"))).aS() == f"select from t{i}"

        asyncio.run(asyncio.wait_for(as_alice(server, send), 120))
    finally:
        stop(server)
    log = tmp_path / "decisions.jsonl"
    ids_of_g = [line["id"] for line in map(json.loads, log.read_text().splitlines())
                if line.get("head") == "g"]
    assert len(ids_of_g) == 4

    # The same chain: nothing changes.
    same = subprocess.run(
        [binary("QGATE_BIN", "qgate"), "replay", "--config", str(recorded), str(log)],
        capture_output=True, text=True, timeout=300,
    )
    assert same.returncode == 0, same
    assert "11 replayed, 0 changed" in same.stdout, same.stdout

    # A candidate that no longer grants g: exactly the four calls of g change.
    candidate = chain_config(tmp_path, ["f"], log=False)
    changed = subprocess.run(
        [binary("QGATE_BIN", "qgate"), "replay", "--config", str(candidate), str(log)],
        capture_output=True, text=True, timeout=300,
    )
    assert changed.returncode == 1, changed
    lines = changed.stdout.splitlines()
    assert sorted(line.split(":", 1)[0] for line in lines[:-1]) == sorted(ids_of_g), lines
    for line in lines[:-1]:
        assert 'call "g": recorded replied by echo, now denied' in line, line
        assert "access: g is not allowed for alice" in line, line
    assert lines[-1].startswith("11 replayed, 4 changed, 2 not replayable"), lines[-1]

    allowed = subprocess.run(
        [binary("QGATE_BIN", "qgate"), "replay", "--allow-changes", "--config", str(candidate),
         str(log)],
        capture_output=True, text=True, timeout=300,
    )
    assert allowed.returncode == 0, allowed
    assert "4 changed" in allowed.stdout


def test_a_shadow_candidate_is_counted_and_logged_and_changes_nothing(tmp_path):
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    config = tmp_path / "qgate.toml"
    config.write_text(
        f'[server]\nplugin_cache_dir = "{CACHE}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        '[decision_log]\npath = "decisions.jsonl"\n'
        f'[[plugins]]\nname = "allowlist"\npath = "{PLUGINS / "allowlist.wasm"}"\n'
        'config = { users = { alice = ["f", "g"] } }\n'
        f'[[plugins]]\nname = "candidate"\npath = "{PLUGINS / "allowlist.wasm"}"\n'
        'mode = "shadow"\nconfig = { users = { alice = ["f"] } }\n'
        f'[[plugins]]\nname = "echo"\npath = "{PLUGINS / "echo.wasm"}"\n'
    )
    server = serve(tmp_path, config)
    try:
        async def send(writer):
            # The live chain answers: the candidate, which would refuse g, has no say.
            for name in ("f", "g", "g"):
                # echo answers with the call itself, a general list.
                reply = await writer.sync_req(kk(ks(name), kj(7)))
                assert reply.t == 0, reply
            with pytest.raises(KException, match="access: h is not allowed"):
                await writer.sync_req(kk(ks("h"), kj(7)))

        asyncio.run(asyncio.wait_for(as_alice(server, send), 120))

        def disagreements():
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            for line in text.splitlines():
                if line.startswith('qgate_shadow_disagreements_total{plugin="candidate"}'):
                    return int(float(line.split()[-1]))
            return 0

        import time
        deadline = time.monotonic() + 60
        while disagreements() < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert disagreements() == 2
    finally:
        stop(server)
    lines = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    shadow = [line for line in lines if line.get("shadow")]
    assert len(shadow) == 2, shadow
    for line in shadow:
        assert line["decided_by"] == "candidate" and line["head"] == "g", line
        assert line["decision"] == "denied" and line["live_decision"] == "replied", line
        assert "g is not allowed for alice" in line["reason"], line
    # The live record of each message is there too, decided by the chain.
    live_g = [line for line in lines if line.get("head") == "g" and not line.get("shadow")]
    assert [line["decision"] for line in live_g] == ["replied", "replied"]
