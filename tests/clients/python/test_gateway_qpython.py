"""qPython 2.x through qgate's gateway mode, in its own venv (numpy < 1.24): the real `qgate
serve` in front of the test upstream (`qgate-upstream`), pinned (the README's one-liner) and
pooled (an `[[upstream]]` table with a service account), as conftest's `gateway` fixture makes
them.

Logins through the password file, every value qPython can write echoed back unchanged, free
text, q errors as QException, and a 20 MB reply. qPython's `sendSync` takes the very next message
as its reply, so nothing here makes the upstream push.
"""

import warnings

import numpy
import pytest

# qPython 2.0.0 uses numpy aliases that numpy 1.20 to 1.23 deprecate: at import, and in the tests.
warnings.filterwarnings("ignore", category=DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from qpython import qconnection  # noqa: E402
from qpython.qtype import QException  # noqa: E402

from cases import PASSWORD  # noqa: E402
from conftest import GATEWAY_USERS  # noqa: E402
from test_qpython import VALUES, wire  # noqa: E402

# A reply far larger than one read or one streamed chunk.
LARGE_REPLY = 20_000_000


def connect(gateway, user=GATEWAY_USERS[0], password=PASSWORD):
    conn = qconnection.QConnection(
        host=gateway.qgate.host, port=gateway.qgate.port, username=user, password=password,
        timeout=30.0,
    )
    conn.open()
    return conn


def as_dict(reply):
    """A QDictionary as a Python dict."""
    return dict(zip(reply.keys, reply.values))


@pytest.fixture
def conn(gateway):
    conn = connect(gateway)
    yield conn
    conn.close()


@pytest.mark.parametrize("user", GATEWAY_USERS)
def test_login_through_the_password_file(gateway, user):
    conn = connect(gateway, user)
    try:
        assert conn.protocol_version == 3
        me = as_dict(conn.sendSync("whoami", None))
        # The upstream sees qgate's login, never the client's.
        assert me[b"upstream"] == b"rdb"
        assert me[b"user"] == gateway.user.encode()
    finally:
        conn.close()


@pytest.mark.parametrize("user,password", [("admin", "wrong"), ("nobody", PASSWORD)])
def test_login_refused(gateway, user, password):
    with pytest.raises(qconnection.QAuthenticationException):
        connect(gateway, user, password)


@pytest.mark.parametrize("name", VALUES)
def test_round_trip(conn, name):
    value = VALUES[name]
    assert wire(conn.sendSync("echo", value)) == wire(value)


def test_free_text_and_q_errors(gateway, conn):
    receipt = as_dict(conn.sendSync("select from trade where sym=`IBM"))
    assert receipt[b"upstream"] == b"rdb"
    assert receipt[b"user"] == gateway.user.encode()
    assert receipt[b"query"] == b"select from trade where sym=`IBM"
    with pytest.raises(QException, match="^b?'?boom'?$"):
        conn.sendSync("fail", "boom")
    # The session survives its error.
    assert conn.sendSync("echo", numpy.int64(5)) == 5


def test_large_reply(conn):
    reply = conn.sendSync("bytes", numpy.int64(LARGE_REPLY))
    assert len(reply) == LARGE_REPLY
    expected = (numpy.arange(LARGE_REPLY) % 256).astype(numpy.uint8)
    assert numpy.array_equal(numpy.asarray(reply).view(numpy.uint8), expected)
    assert conn.sendSync("echo", numpy.int64(6)) == 6
