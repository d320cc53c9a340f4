"""WebSocket on the q port through the real `qgate serve`, with the `websockets` client library
from PyPI, as a dashboard's Python backend or a notebook would connect:

- the `demo-api` plugin answering text frames that hold q data literals with their values as
  text, and echoing binary frames;
- Basic auth on the upgrade: refused (401, before any upgrade) and accepted;
- gateway mode: messages relayed both ways to the test upstream's own WebSocket (`.z.ws`), which
  sees qgate's service login and the client's user in `X-Forwarded-User`, and whose pushes reach
  the client unasked.
"""

import asyncio
import base64

import pytest
import websockets

from conftest import ROOT

PLUGINS = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"


def basic(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def run(coroutine):
    """Runs `coroutine` to its end, within a bound."""
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def start_qgate(servers, directory, extra):
    """`qgate serve` with the password file `alice:secret` and `extra` TOML."""
    passwords = directory / "passwords.txt"
    passwords.write_text("alice:secret\n")
    config = directory / "qgate.toml"
    config.write_text(f'[auth]\npassword_file = "{passwords}"\n{extra}')
    return servers.start("qgate", "--config", str(config))


@pytest.fixture
def demo(servers, tmp_path):
    component = PLUGINS / "demo_api.wasm"
    if not component.is_file():
        pytest.fail(f"{component} not found: run `cargo xtask plugins`")
    return start_qgate(
        servers, tmp_path, f'[[plugins]]\nname = "demo-api"\npath = "{component}"\n'
    )


def test_text_and_binary_frames_both_ways_through_demo_api(demo):
    async def talk():
        url = f"ws://{demo.host}:{demo.port}/"
        async with websockets.connect(url, additional_headers=basic("alice", "secret")) as ws:
            await ws.send("1 2 3")
            assert await ws.recv() == "1 2 3"
            await ws.send("`a`b!1 2")
            assert await ws.recv() == "`a`b!1 2"
            await ws.send("2000.01.01D12:00:00.000000000")
            assert await ws.recv() == "2000.01.01D12:00:00.000000000"
            await ws.send(b"\x00\x01\xfe\xff")
            assert await ws.recv() == b"\x00\x01\xfe\xff"
            await ws.send("select from trade")
            error = await ws.recv()
            assert error.startswith("'nyi"), error

    run(talk())


def test_basic_auth_is_refused_and_accepted(demo):
    url = f"ws://{demo.host}:{demo.port}/"

    async def status_of(headers):
        try:
            async with websockets.connect(url, additional_headers=headers) as ws:
                await ws.send("1")
                assert await ws.recv() == "1"
                return 101
        except websockets.exceptions.InvalidStatus as refused:
            return refused.response.status_code

    assert run(status_of({})) == 401
    assert run(status_of(basic("alice", "wrong"))) == 401
    assert run(status_of(basic("alice", "secret"))) == 101


def test_frames_flow_both_ways_through_the_gateway_with_the_upstreams_pushes(servers, tmp_path):
    upstream = servers.start("upstream", "--user", "svc:pw", "--name", "rdb")
    qgate = start_qgate(
        servers,
        tmp_path,
        "[[upstream]]\n"
        'name = "rdb"\n'
        f'servers = ["{upstream.host}:{upstream.port}"]\n'
        'user = "svc"\npassword = "pw"\n',
    )

    async def talk():
        url = f"ws://{qgate.host}:{qgate.port}/"
        async with websockets.connect(url, additional_headers=basic("alice", "secret")) as ws:
            # The upstream sees the service login, and alice only as X-Forwarded-User.
            await ws.send("hello")
            assert await ws.recv() == "svc/alice:hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"svc/alice:\x00\x01"
            # Messages the upstream sends unasked reach the client, in order.
            await ws.send("push 3")
            assert await ws.recv() == "svc/alice:push 3"
            for i in range(1, 4):
                assert await ws.recv() == f"push {i} of 3"
            await ws.send("after")
            assert await ws.recv() == "svc/alice:after"

    run(talk())
