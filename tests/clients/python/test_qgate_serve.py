"""The real `qgate serve`, with no backend: password files, a clear q error for every query, and
a clean stop. aiokdb is the client, and PyKX where its connection-time context query matters."""

import asyncio
import signal

import pytest
from aiokdb import KException, cv, kj, kk
from aiokdb.client import open_qipc_connection
from aiokdb.server import CredentialsException

from cases import LOGIN_IDS, LOGINS, PASSWORD, REFUSAL_IDS, REFUSALS


def run(coroutine, timeout=60):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


@pytest.fixture
def qgate(servers):
    return servers.shared("qgate")


@pytest.fixture
def qgate_with_file(servers, password_files):
    return lambda kind, flag="-U": servers.shared("qgate", flag, password_files[kind])


async def connect(server, user=None, password=None):
    _, writer = await open_qipc_connection(
        host=server.host, port=server.port, user=user, password=password
    )
    return writer


@pytest.mark.parametrize("kind,user", LOGINS, ids=LOGIN_IDS)
def test_login_accepted(qgate_with_file, kind, user):
    async def body():
        writer = await connect(qgate_with_file(kind), user, PASSWORD)
        writer.close()

    run(body())


@pytest.mark.parametrize("kind,user,password", REFUSALS, ids=REFUSAL_IDS)
def test_login_refused(qgate_with_file, kind, user, password):
    async def body():
        with pytest.raises(CredentialsException):
            await connect(qgate_with_file(kind), user, password)

    run(body())


@pytest.mark.parametrize("kind", ["plain", "mixed"])
def test_restricted_password_file(qgate_with_file, kind):
    # `-u file` checks logins as `-U file` does.
    async def body():
        writer = await connect(qgate_with_file(kind, "-u"), "admin", PASSWORD)
        writer.close()
        with pytest.raises(CredentialsException):
            await connect(qgate_with_file(kind, "-u"), "admin", "wrong")

    run(body())


def test_sync_without_backend_is_a_q_error(qgate):
    async def body():
        writer = await connect(qgate, "user")
        try:
            for request in (cv("2+2"), kk(cv("f"), kj(1))):
                with pytest.raises(KException) as error:
                    await asyncio.wait_for(writer.sync_req(request), 10)
                assert str(error.value), "the error says nothing"
        finally:
            writer.close()

    run(body())


def test_async_without_backend_keeps_the_connection(qgate):
    async def body():
        writer = await connect(qgate, "user")
        try:
            for i in range(10):
                await writer.async_msg(kk(cv("tick"), kj(i)))
            # Async messages are dropped; the next sync still gets its (error) answer.
            with pytest.raises(KException):
                await asyncio.wait_for(writer.sync_req(cv("after")), 10)
        finally:
            writer.close()

    run(body())


def test_pykx_connects_and_gets_a_q_error(qgate):
    # PyKX asks for the `.q` context as it connects (no_ctx=False, its default): the server must
    # answer that, and then give PyKX's own error type for a query it cannot answer.
    import pykx as kx

    with kx.SyncQConnection(host=qgate.host, port=qgate.port, timeout=10.0) as conn:
        with pytest.raises(kx.QError):
            conn("2+2")


def test_sigterm_stops_the_server(servers):
    server = servers.start("qgate")

    async def body():
        writer = await connect(server, "user")
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 30)
        writer.close()

    run(body())
    assert server.proc.returncode == 0
