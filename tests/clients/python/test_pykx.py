"""PyKX, unlicensed (PYKX_UNLICENSED=true), as a client of qgate.

Unlicensed PyKX connects through KX's C API (`khpunc`) and, unless told `no_ctx=True`, sends a
context query right after connecting: these tests never pass `no_ctx`, because real users don't.
"""

import datetime
import uuid

import numpy as np
import pandas as pd
import pytest

import pykx as kx
from cases import LARGE_COUNT, LOGIN_IDS, LOGINS, PASSWORD, REFUSAL_IDS, REFUSALS

assert not kx.licensed, "these tests are for PyKX's unlicensed mode: set PYKX_UNLICENSED=true"


def connect(server, user="", password=""):
    return kx.SyncQConnection(
        host=server.host, port=server.port, username=user, password=password, timeout=10.0
    )


def wire(value):
    """The value's IPC encoding without the header: what two equal values share exactly."""
    return bytes(kx.serialize(value).copy())[8:]


@pytest.fixture
def conn(echo):
    with connect(echo) as conn:
        yield conn


@pytest.mark.parametrize("kind,user", LOGINS, ids=LOGIN_IDS)
def test_login_accepted(echo_with_file, kind, user):
    with connect(echo_with_file(kind), user, PASSWORD) as conn:
        assert conn("ping").py() == b"ping"


@pytest.mark.parametrize("kind,user,password", REFUSALS, ids=REFUSAL_IDS)
def test_login_refused(echo_with_file, kind, user, password):
    # Unlicensed PyKX reports a refused handshake as "Authentication error"; licensed as 'access.
    with pytest.raises(kx.exceptions.PyKXException, match="(?i)authentication|access"):
        connect(echo_with_file(kind), user, password)


def test_sync(conn):
    assert conn("ping").py() == b"ping"
    reply = conn("f", kx.LongAtom(1), kx.SymbolAtom("x"))
    assert reply.py() == [b"f", 1, "x"]


def test_async_in_order(conn):
    for i in range(20):
        assert conn("tick", kx.LongAtom(i), wait=False) is not None
    # A denied async message is dropped, as q drops async errors; the connection goes on.
    conn("err:dropped", wait=False)
    conn(kx.CharVector("last"), wait=False)
    received = conn("asyncs").py()
    assert received == [[b"tick", i] for i in range(20)] + [b"err:dropped", b"last"]


def test_q_error_is_qerror(conn):
    with pytest.raises(kx.QError, match="^boom$"):
        conn("err:boom")
    # The connection survives its error.
    assert conn("after").py() == b"after"


def test_q_error_with_args_is_qerror(conn):
    # A call list is not a char vector: it is echoed, not treated as an error.
    assert conn("err:boom", kx.LongAtom(1)).py() == [b"err:boom", 1]


def values():
    """Every kind of value unlicensed PyKX can build (all q types but datetime, type 15, which
    PyKX cannot make without q)."""
    guid = uuid.UUID("8c680a01-5a49-5aab-5a65-d4bfddb6a661")
    timespan = np.timedelta64
    return {
        # Atoms, with their nulls and infinities.
        "boolean": kx.BooleanAtom(True),
        "boolean_false": kx.BooleanAtom(False),
        "guid": kx.GUIDAtom(guid),
        "guid_null": kx.GUIDAtom.null,
        "byte": kx.ByteAtom(42),
        "short": kx.ShortAtom(-234),
        "short_null": kx.ShortAtom.null,
        "short_inf": kx.ShortAtom.inf,
        "short_neg_inf": kx.ShortAtom(-32767),
        "int": kx.IntAtom(7),
        "int_null": kx.IntAtom.null,
        "int_inf": kx.IntAtom.inf,
        "int_neg_inf": kx.IntAtom(-(2**31) + 1),
        "long": kx.LongAtom(2**62),
        "long_null": kx.LongAtom.null,
        "long_inf": kx.LongAtom.inf,
        "long_neg_inf": kx.LongAtom(-(2**63) + 1),
        "real": kx.RealAtom(5.5),
        "real_null": kx.RealAtom.null,
        "real_inf": kx.RealAtom.inf,
        "float": kx.FloatAtom(3.234),
        "float_null": kx.FloatAtom.null,
        "float_inf": kx.FloatAtom.inf,
        "float_neg_inf": kx.FloatAtom(float("-inf")),
        "char": kx.CharAtom(b"a"),
        "char_null": kx.CharAtom(b" "),
        "symbol": kx.SymbolAtom("abc"),
        "symbol_null": kx.SymbolAtom(""),
        "symbol_utf8": kx.SymbolAtom("größe"),
        "timestamp": kx.TimestampAtom(datetime.datetime(2018, 1, 26, 1, 49, 0, 884361)),
        "timestamp_null": kx.TimestampAtom.null,
        "timestamp_inf": kx.TimestampAtom.inf,
        "month": kx.MonthAtom(np.datetime64("2001-01", "M")),
        "month_null": kx.MonthAtom.null,
        "date": kx.DateAtom(datetime.date(2001, 1, 1)),
        "date_null": kx.DateAtom.null,
        "date_inf": kx.DateAtom.inf,
        "timespan": kx.TimespanAtom(timespan(20217600000000, "ns")),
        "timespan_null": kx.TimespanAtom.null,
        "minute": kx.MinuteAtom(timespan(721, "m")),
        "minute_null": kx.MinuteAtom.null,
        "second": kx.SecondAtom(timespan(43500, "s")),
        "second_null": kx.SecondAtom.null,
        "time": kx.TimeAtom(timespan(43499123, "ms")),
        "time_null": kx.TimeAtom.null,
        # Vectors, with nulls inside.
        "booleans": kx.BooleanVector([True, False, True]),
        "guids": kx.GUIDVector([guid, uuid.UUID(int=0)]),
        "bytes": kx.ByteVector(np.arange(5, dtype=np.uint8)),
        "shorts": kx.ShortVector(np.array([1, -32768, 32767], dtype=np.int16)),
        "ints": kx.IntVector(np.array([1, -(2**31), 3], dtype=np.int32)),
        "longs": kx.LongVector([1, -(2**63), 3]),
        "reals": kx.RealVector(np.array([5.5, np.nan, np.inf], dtype=np.float32)),
        "floats": kx.FloatVector([1.5, float("nan"), float("-inf")]),
        "string": kx.CharVector("hello"),
        "string_empty": kx.CharVector(""),
        "symbols": kx.SymbolVector(["the", "quick", ""]),
        "symbols_empty": kx.SymbolVector([]),
        "timestamps": kx.TimestampVector(
            np.array(["2020-01-01T00:00:00.000000001", "NaT"], dtype="datetime64[ns]")
        ),
        "months": kx.MonthVector(np.array(["2013-06", "2013-07"], dtype="datetime64[M]")),
        "dates": kx.DateVector(np.array(["2013-06-10", "NaT"], dtype="datetime64[D]")),
        "timespans": kx.TimespanVector(np.array([1, -2], dtype="timedelta64[ns]")),
        "minutes": kx.MinuteVector(np.array([0, 21], dtype="timedelta64[m]")),
        "seconds": kx.SecondVector(np.array([0, 21], dtype="timedelta64[s]")),
        "times": kx.TimeVector(np.array([0, 21], dtype="timedelta64[ms]")),
        "longs_empty": kx.LongVector(np.array([], dtype=np.int64)),
        # Lists.
        "list": kx.List([kx.LongAtom(42), kx.SymbolAtom("foo"), kx.CharVector("bar")]),
        "list_empty": kx.List([]),
        "list_nested": kx.List([kx.List([kx.LongVector([1])]), kx.FloatAtom(2.0)]),
        "strings": kx.List([kx.CharVector("one"), kx.CharVector("two")]),
        # Dictionaries and tables.
        "dict": kx.Dictionary({"a": kx.LongAtom(1), "b": kx.SymbolAtom("x")}),
        "dict_of_vectors": kx.Dictionary({"a": kx.LongVector([1, 2]), "b": kx.FloatVector([3.0])}),
        "table": kx.toq(
            pd.DataFrame(
                {"a": np.array([1, 2], dtype=np.int64), "b": ["x", "y"], "c": [1.5, 2.5]}
            )
        ),
        "table_empty": kx.toq(pd.DataFrame({"a": np.array([], dtype=np.int64)})),
        "keyed_table": kx.toq(
            pd.DataFrame({"k": np.array([1, 2], dtype=np.int64), "v": ["x", "y"]}).set_index("k")
        ),
    }


VALUES = values()


def echoed(value):
    """What the echo server answers to `conn("echo", value)`: the whole call list. (Unlicensed
    PyKX cannot index into a K object, so replies are compared whole.)"""
    return kx.List([kx.CharVector("echo"), value])


@pytest.mark.parametrize("name", VALUES)
def test_round_trip(conn, name):
    value = VALUES[name]
    reply = conn("echo", value)
    assert isinstance(reply, kx.List)
    assert wire(reply) == wire(echoed(value))


def test_round_trip_all_at_once(conn):
    everything = kx.List(list(VALUES.values()))
    assert wire(conn("echo", everything)) == wire(echoed(everything))


def test_large_request_and_reply(conn):
    value = kx.LongVector(np.arange(LARGE_COUNT, dtype=np.int64) * 7919)
    assert len(wire(value)) > 2000
    reply = conn("echo", value)
    assert wire(reply) == wire(echoed(value))
    name, numbers = reply.py()
    assert name == b"echo" and numbers == list(range(0, LARGE_COUNT * 7919, 7919))


def test_large_string(conn):
    text = "q" * 100_000
    assert conn(text).py() == text.encode()
