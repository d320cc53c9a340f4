"""aiokdb as a client of qgate: asyncio, its own codec, and a handshake that requires the server to
answer exactly the capability it sent (3)."""

import asyncio
import uuid

import pytest
from aiokdb import (
    AttrEnum,
    KException,
    TypeEnum,
    b9,
    cv,
    ka,
    kb,
    kc,
    kf,
    kg,
    kh,
    ki,
    kj,
    kk,
    kp,
    ks,
    ktn,
    kuu,
    xd,
    xt,
)
from aiokdb import Infs, Nulls
from aiokdb import ke as kreal
from aiokdb.client import ClientContext, open_qipc_connection
from aiokdb.server import CredentialsException

from cases import LARGE_COUNT, LOGIN_IDS, LOGINS, PASSWORD, REFUSAL_IDS, REFUSALS


def run(coroutine, timeout=60):
    """Runs one test's coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def connect(server, user=None, password=None):
    return await open_qipc_connection(
        host=server.host, port=server.port, user=user, password=password
    )


def wire(value):
    return b9(value)[8:]


@pytest.mark.parametrize("kind,user", LOGINS, ids=LOGIN_IDS)
def test_login_accepted(echo_with_file, kind, user):
    async def body():
        _, writer = await connect(echo_with_file(kind), user, PASSWORD)
        try:
            assert (await writer.sync_req(cv("ping"))).aS() == "ping"
            assert writer.version == 3
        finally:
            writer.close()

    run(body())


@pytest.mark.parametrize("kind,user,password", REFUSALS, ids=REFUSAL_IDS)
def test_login_refused(echo_with_file, kind, user, password):
    async def body():
        with pytest.raises(CredentialsException):
            await connect(echo_with_file(kind), user, password)

    run(body())


def test_login_without_credentials(echo):
    # aiokdb with no user sends `03 00` alone (kdb-ipc.md §2.4).
    async def body():
        _, writer = await connect(echo)
        try:
            assert (await writer.sync_req(cv("ping"))).aS() == "ping"
        finally:
            writer.close()

    run(body())


def test_sync(echo):
    async def body():
        _, writer = await connect(echo, "user")
        try:
            reply = await writer.sync_req(kk(cv("f"), kj(1), ks("x")))
            assert wire(reply) == wire(kk(cv("f"), kj(1), ks("x")))
        finally:
            writer.close()

    run(body())


def test_sync_pipelined(echo):
    # With a context, aiokdb reads in a task of its own and can have many requests in flight;
    # it matches responses to requests by order alone.
    async def body():
        _, writer = await open_qipc_connection(
            host=echo.host, port=echo.port, user="user", context=ClientContext()
        )
        try:
            replies = await asyncio.gather(*(writer.sync_req(kj(i)) for i in range(100)))
            assert [reply.aJ() for reply in replies] == list(range(100))
        finally:
            writer.close()

    run(body())


def test_async_in_order(echo):
    async def body():
        _, writer = await connect(echo, "user")
        try:
            sent = [kk(cv("tick"), kj(i)) for i in range(20)] + [cv("err:dropped"), cv("last")]
            for message in sent:
                await writer.async_msg(message)
            received = await writer.sync_req(cv("asyncs"))
            assert wire(received) == wire(kk(*sent))
        finally:
            writer.close()

    run(body())


def test_q_error_is_kexception(echo):
    async def body():
        _, writer = await connect(echo, "user")
        try:
            with pytest.raises(KException, match="^boom$"):
                await writer.sync_req(cv("err:boom"))
            assert (await writer.sync_req(cv("after"))).aS() == "after"
        finally:
            writer.close()

    run(body())


ACCESSORS = {
    TypeEnum.KB: "kB", TypeEnum.KG: "kG", TypeEnum.UU: "kU", TypeEnum.KH: "kH",
    TypeEnum.KI: "kI", TypeEnum.KM: "kI", TypeEnum.KD: "kI", TypeEnum.KU: "kI",
    TypeEnum.KV: "kI", TypeEnum.KT: "kI", TypeEnum.KJ: "kJ", TypeEnum.KP: "kJ",
    TypeEnum.KN: "kJ", TypeEnum.KE: "kE", TypeEnum.KF: "kF", TypeEnum.KZ: "kF",
}


def vector(t, items, attr=AttrEnum.NONE):
    """A vector of type `t` filled through aiokdb's typed accessor for it."""
    v = ktn(t, attr=attr)
    if t == TypeEnum.KS:
        v.appendS(*items)
    else:
        getattr(v, ACCESSORS[t])().extend(items)
    return v


def values():
    """Every kind of value aiokdb can build with its API. Its short and int vectors are written
    unsigned, so they hold no negative numbers (and no nulls); its month, date, minute, second,
    time and timespan atoms have no setter, so they are their zero."""
    guid = uuid.UUID("8c680a01-5a49-5aab-5a65-d4bfddb6a661")
    table = xt(xd(vector(TypeEnum.KS, ["a", "b"]), kk(vector(TypeEnum.KJ, [1, 2]),
                                                     vector(TypeEnum.KS, ["x", "y"]))))
    keys = xt(xd(vector(TypeEnum.KS, ["k"]), kk(vector(TypeEnum.KJ, [1, 2]))))
    return {
        "boolean": kb(True),
        "guid": kuu(guid),
        "guid_null": kuu(Nulls.uu),
        "byte": kg(42),
        "short": kh(-234),
        "short_null": kh(Nulls.h),
        "short_inf": kh(Infs.h),
        "int": ki(7),
        "int_null": ki(Nulls.i),
        "int_inf": ki(Infs.i),
        "long": kj(2**62),
        "long_null": kj(Nulls.j),
        "long_inf": kj(Infs.j),
        "long_neg_inf": kj(-Infs.j),
        "real": kreal(5.5),
        "real_inf": kreal(Infs.e),
        "float": kf(3.234),
        "float_inf": kf(Infs.f),
        "float_neg_inf": kf(-Infs.f),
        "char": kc("a"),
        "char_null": kc(Nulls.c),
        "symbol": ks("abc"),
        "symbol_null": ks(""),
        "symbol_utf8": ks("größe"),
        "timestamp": kp(570246540884361000),
        "timestamp_null": kp(Nulls.j),
        "month": ka(-TypeEnum.KM),
        "date": ka(-TypeEnum.KD),
        "datetime": ka(-TypeEnum.KZ),
        "timespan": ka(-TypeEnum.KN),
        "minute": ka(-TypeEnum.KU),
        "second": ka(-TypeEnum.KV),
        "time": ka(-TypeEnum.KT),
        "generic_null": ka(TypeEnum.NIL),
        "booleans": vector(TypeEnum.KB, [True, False, True]),
        "guids": vector(TypeEnum.UU, [guid, Nulls.uu]),
        "bytes": vector(TypeEnum.KG, [0, 1, 255]),
        "shorts": vector(TypeEnum.KH, [1, 2, Infs.h]),
        "ints": vector(TypeEnum.KI, [1, 2, Infs.i]),
        "longs": vector(TypeEnum.KJ, [1, Nulls.j, Infs.j, -Infs.j]),
        "longs_sorted": vector(TypeEnum.KJ, [1, 2, 3], AttrEnum.SORTED),
        "reals": vector(TypeEnum.KE, [5.5, Infs.e]),
        "floats": vector(TypeEnum.KF, [1.5, -Infs.f]),
        "string": cv("hello"),
        "string_empty": cv(""),
        "symbols": vector(TypeEnum.KS, ["the", "quick", ""]),
        "symbols_empty": vector(TypeEnum.KS, []),
        "timestamps": vector(TypeEnum.KP, [1, Nulls.j]),
        "months": vector(TypeEnum.KM, [161, 162]),
        "dates": vector(TypeEnum.KD, [4909]),
        "datetimes": vector(TypeEnum.KZ, [0.5, 1.25]),
        "timespans": vector(TypeEnum.KN, [1, -2]),
        "minutes": vector(TypeEnum.KU, [0, 21]),
        "seconds": vector(TypeEnum.KV, [0, 21]),
        "times": vector(TypeEnum.KT, [0, 21]),
        "list": kk(kj(42), ks("foo"), cv("bar")),
        "list_empty": ktn(TypeEnum.K),
        "list_nested": kk(kk(vector(TypeEnum.KJ, [1])), kf(2.0)),
        "dict": xd(vector(TypeEnum.KS, ["a", "b"]), kk(kj(1), ks("x"))),
        "dict_sorted": xd(vector(TypeEnum.KS, ["a", "b"], AttrEnum.SORTED),
                          vector(TypeEnum.KJ, [1, 2]), sorted=True),
        "table": table,
        "keyed_table": xd(keys, xt(xd(vector(TypeEnum.KS, ["v"]),
                                      kk(vector(TypeEnum.KS, ["x", "y"]))))),
    }


VALUES = values()


@pytest.mark.parametrize("name", VALUES)
def test_round_trip(echo, name):
    value = VALUES[name]

    async def body():
        _, writer = await connect(echo, "user")
        try:
            reply = await writer.sync_req(kk(cv("echo"), value))
            assert wire(reply) == wire(kk(cv("echo"), value))
            assert reply.kK()[1].t == value.t
        finally:
            writer.close()

    run(body())


def test_large_request_and_reply(echo):
    async def body():
        _, writer = await connect(echo, "user")
        try:
            value = vector(TypeEnum.KJ, [i * 7919 for i in range(LARGE_COUNT)])
            assert len(wire(value)) > 2000
            reply = await writer.sync_req(kk(cv("echo"), value))
            assert list(reply.kK()[1].kJ()) == [i * 7919 for i in range(LARGE_COUNT)]
        finally:
            writer.close()

    run(body())
