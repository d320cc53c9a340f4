"""qPython 2.x (exxeleron) as a client of qgate, in a venv of its own (numpy < 1.24).

qPython sends capability 3; after a refused handshake it reconnects once and sends its
credentials without a capability byte, and only then reports QAuthenticationException. Its
`sendSync` requires the very next message to be the response.
"""

import uuid
import warnings

import numpy
import pytest

# qPython 2.0.0 uses numpy aliases that numpy 1.20 to 1.23 deprecate: at import, and in the tests.
warnings.filterwarnings("ignore", category=DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from qpython import qconnection  # noqa: E402
from qpython.qcollection import QDictionary, QKeyedTable, qlist, qtable  # noqa: E402
from qpython.qtemporal import qtemporal  # noqa: E402
from qpython.qtype import (  # noqa: E402
    QBOOL_LIST,
    QBYTE_LIST,
    QDATE,
    QDATE_LIST,
    QDATETIME,
    QDATETIME_LIST,
    QDOUBLE,
    QDOUBLE_LIST,
    QException,
    QFLOAT,
    QFLOAT_LIST,
    QGUID_LIST,
    QINT,
    QINT_LIST,
    QLONG,
    QLONG_LIST,
    QMINUTE,
    QMINUTE_LIST,
    QMONTH,
    QMONTH_LIST,
    QSECOND,
    QSECOND_LIST,
    QSHORT,
    QSHORT_LIST,
    QSYMBOL_LIST,
    QTIME,
    QTIME_LIST,
    QTIMESPAN,
    QTIMESPAN_LIST,
    QTIMESTAMP,
    QTIMESTAMP_LIST,
    qnull,
)
from qpython.qwriter import QWriter  # noqa: E402

from cases import LARGE_COUNT, LOGIN_IDS, LOGINS, PASSWORD, REFUSAL_IDS, REFUSALS  # noqa: E402


def connect(server, user=None, password=None):
    conn = qconnection.QConnection(
        host=server.host, port=server.port, username=user, password=password, timeout=10.0
    )
    conn.open()
    return conn


def wire(value):
    """qPython's encoding of a value, without the header."""
    return QWriter(None, 3).write(value, 0)[8:]


@pytest.fixture
def conn(echo):
    conn = connect(echo, "user", "pass")
    yield conn
    conn.close()


@pytest.mark.parametrize("kind,user", LOGINS, ids=LOGIN_IDS)
def test_login_accepted(echo_with_file, kind, user):
    conn = connect(echo_with_file(kind), user, PASSWORD)
    try:
        assert conn.protocol_version == 3
        assert conn.sendSync("ping") == b"ping"
    finally:
        conn.close()


@pytest.mark.parametrize("kind,user,password", REFUSALS, ids=REFUSAL_IDS)
def test_login_refused(echo_with_file, kind, user, password):
    with pytest.raises(qconnection.QAuthenticationException):
        connect(echo_with_file(kind), user, password)


def test_sync(conn):
    assert conn.sendSync("ping") == b"ping"
    reply = conn.sendSync("f", numpy.int64(1), numpy.string_(b"x"))
    assert wire(reply) == wire([b"f", numpy.int64(1), numpy.string_(b"x")])


def test_async_in_order(conn):
    sent = [["tick", numpy.int64(i)] for i in range(20)]
    for message in sent:
        conn.sendAsync(*message)
    conn.sendAsync("err:dropped")
    conn.sendAsync("last")
    received = conn.sendSync("asyncs")
    assert wire(received) == wire(sent + ["err:dropped", "last"])


def test_q_error_is_qexception(conn):
    with pytest.raises(QException, match="^b?'?boom'?$"):
        conn.sendSync("err:boom")
    assert conn.sendSync("after") == b"after"


def temporal(value, qtype):
    return qtemporal(value, qtype=qtype)


def values():
    """Every kind of value qPython can write. It writes no attributes, cannot write the null of a
    month, date, minute, second or time atom (it overflows its struct.pack; nulls inside vectors
    are fine), and reads temporal values as QTemporal objects (numpy_temporals=False, its
    default)."""
    guid = uuid.UUID("8c680a01-5a49-5aab-5a65-d4bfddb6a661")
    ns = numpy.timedelta64
    return {
        # Atoms.
        "boolean": numpy.bool_(True),
        "guid": guid,
        "guid_null": uuid.UUID(int=0),
        "byte": numpy.byte(42),
        "short": numpy.int16(-234),
        "short_null": qnull(QSHORT),
        "short_inf": numpy.int16(32767),
        "int": numpy.int32(7),
        "int_null": qnull(QINT),
        "int_neg_inf": numpy.int32(-(2**31) + 1),
        "long": numpy.int64(2**62),
        "long_null": qnull(QLONG),
        "long_inf": numpy.int64(2**63 - 1),
        "real": numpy.float32(5.5),
        "real_null": qnull(QFLOAT),
        "float": numpy.float64(3.234),
        "float_null": qnull(QDOUBLE),
        "float_inf": numpy.float64(numpy.inf),
        "char": "a",
        "symbol": numpy.string_(b"abc"),
        "symbol_null": numpy.string_(b""),
        "timestamp": temporal(numpy.datetime64("2018-01-26T01:49:00.884361000", "ns"), QTIMESTAMP),
        "timestamp_null": temporal(qnull(QTIMESTAMP), QTIMESTAMP),
        "month": temporal(numpy.datetime64("2001-01", "M"), QMONTH),
        "date": temporal(numpy.datetime64("2001-01-01", "D"), QDATE),
        "datetime": temporal(numpy.datetime64("2001-01-01T12:00:00.000", "ms"), QDATETIME),
        "timespan": temporal(ns(20217600000000, "ns"), QTIMESPAN),
        "timespan_null": temporal(qnull(QTIMESPAN), QTIMESPAN),
        "minute": temporal(ns(721, "m"), QMINUTE),
        "second": temporal(ns(43500, "s"), QSECOND),
        "time": temporal(ns(43499123, "ms"), QTIME),
        # Vectors.
        "booleans": qlist(numpy.array([True, False, True]), qtype=QBOOL_LIST),
        "guids": qlist(numpy.array([guid, uuid.UUID(int=0)]), qtype=QGUID_LIST),
        "bytes": qlist(numpy.array([0, 1, 127], dtype=numpy.byte), qtype=QBYTE_LIST),
        "shorts": qlist(numpy.array([1, -32768, 32767], dtype=numpy.int16), qtype=QSHORT_LIST),
        "ints": qlist(numpy.array([1, -(2**31), 3], dtype=numpy.int32), qtype=QINT_LIST),
        "longs": qlist(numpy.array([1, -(2**63), 2**63 - 1], dtype=numpy.int64), qtype=QLONG_LIST),
        "reals": qlist(numpy.array([5.5, numpy.nan], dtype=numpy.float32), qtype=QFLOAT_LIST),
        "floats": qlist(numpy.array([1.5, numpy.nan, -numpy.inf]), qtype=QDOUBLE_LIST),
        "string": "hello",
        "string_empty": "",
        "symbols": qlist(numpy.array([b"the", b"quick", b""], dtype=object), qtype=QSYMBOL_LIST),
        "timestamps": qlist(numpy.array([1, qnull(QTIMESTAMP)], dtype=numpy.int64),
                            qtype=QTIMESTAMP_LIST),
        "months": qlist(numpy.array([161, 162], dtype=numpy.int32), qtype=QMONTH_LIST),
        "dates": qlist(numpy.array([4909, qnull(QDATE)], dtype=numpy.int32), qtype=QDATE_LIST),
        "datetimes": qlist(numpy.array([0.5, 1.25]), qtype=QDATETIME_LIST),
        "timespans": qlist(numpy.array([1, -2], dtype=numpy.int64), qtype=QTIMESPAN_LIST),
        "minutes": qlist(numpy.array([0, 21], dtype=numpy.int32), qtype=QMINUTE_LIST),
        "seconds": qlist(numpy.array([0, 21], dtype=numpy.int32), qtype=QSECOND_LIST),
        "times": qlist(numpy.array([0, 21], dtype=numpy.int32), qtype=QTIME_LIST),
        # Lists.
        "list": [numpy.int64(42), numpy.string_(b"foo"), "bar"],
        "list_empty": [],
        "list_nested": [[qlist(numpy.array([1], dtype=numpy.int64), qtype=QLONG_LIST)],
                        numpy.float64(2.0)],
        # Dictionaries and tables.
        "dict": QDictionary(qlist(numpy.array([b"a", b"b"], dtype=object), qtype=QSYMBOL_LIST),
                            [numpy.int64(1), numpy.string_(b"x")]),
        "table": qtable(
            qlist(numpy.array([b"a", b"b"], dtype=object), qtype=QSYMBOL_LIST),
            [qlist(numpy.array([1, 2], dtype=numpy.int64), qtype=QLONG_LIST),
             qlist(numpy.array([b"x", b"y"], dtype=object), qtype=QSYMBOL_LIST)],
        ),
        "keyed_table": QKeyedTable(
            qtable(qlist(numpy.array([b"k"], dtype=object), qtype=QSYMBOL_LIST),
                   [qlist(numpy.array([1, 2], dtype=numpy.int64), qtype=QLONG_LIST)]),
            qtable(qlist(numpy.array([b"v"], dtype=object), qtype=QSYMBOL_LIST),
                   [qlist(numpy.array([b"x", b"y"], dtype=object), qtype=QSYMBOL_LIST)]),
        ),
    }


VALUES = values()


@pytest.mark.parametrize("name", VALUES)
def test_round_trip(conn, name):
    value = VALUES[name]
    reply = conn.sendSync("echo", value)
    assert isinstance(reply, list) and len(reply) == 2
    assert wire(reply[1]) == wire(value)


def test_large_request_and_reply(conn):
    value = qlist(numpy.arange(LARGE_COUNT, dtype=numpy.int64) * 7919, qtype=QLONG_LIST)
    assert len(wire(value)) > 2000
    reply = conn.sendSync("echo", value)
    assert numpy.array_equal(reply[1], value)
