"""Raw kdb+ IPC over asyncio streams, for the tests that must send what no client library would:
hostile frames, hand-made compressed requests, hundreds of bare connections.

Only the few value types these tests use are encoded and decoded here; the clients' own codecs are
what the client tests exercise.
"""

import asyncio
import struct

ASYNC, SYNC, RESPONSE = 0, 1, 2


def frame(body, msgtype=SYNC, compressed=False):
    """A little-endian frame around `body`."""
    return struct.pack("<BBBBI", 1, msgtype, 1 if compressed else 0, 0, 8 + len(body)) + body


def char_vector(text):
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<bBi", 10, 0, len(data)) + data


def long_vector(values):
    return struct.pack("<bBi", 7, 0, len(values)) + struct.pack(f"<{len(values)}q", *values)


def long_atom(value):
    return struct.pack("<bq", -7, value)


def general_list(*encoded_items):
    return struct.pack("<bBi", 0, 0, len(encoded_items)) + b"".join(encoded_items)


def error(text):
    """A q error value (type -128), as a client sends in a response to refuse a server query."""
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<b", -128) + data + b"\0"


def byte_vector(data):
    return struct.pack("<bBi", 4, 0, len(data)) + data


def compress(message):
    """q's compression of a whole message (header included), as `-18!` makes it: a port of
    qgate-ipc's `compress`, for tests that must send what a remote q client would. None when q
    would send the message as it is (2000 bytes or fewer, or not under half the size)."""
    y = message
    t = len(y)
    if t <= 2000:
        return None
    order = "<" if y[0] == 1 else ">"
    e = t // 2
    out = bytearray(e)
    out[:4] = y[:4]
    out[2] = 1
    out[8:12] = struct.pack(f"{order}I", t)
    table = [0] * 257
    d, s = 12, 8
    s0, h0, h = 0, 256, 0
    last = t - 2
    while s < t:
        if d > e - 17:
            return None
        block = bytearray(17)
        k, f, bit = 1, 0, 1
        while bit and s < t:
            if s >= last:
                literal, p = True, 0
            else:
                h = y[s] ^ y[s + 1]
                p = table[h]
                literal = p == 0 or y[s] != y[p]
            table[h0] = s0
            h0 = 256
            if literal:
                h0, s0 = h, s
                block[k] = y[s]
                k += 1
                s += 1
            else:
                table[h] = s
                f |= bit
                r = s + 2
                q = min(r + 255, t)
                n = _match_len(y[p + 2:p + 2 + (q - r)], y[r:q])
                s = r + n
                block[k], block[k + 1] = h, n
                k += 2
            bit = (bit << 1) & 0xFF
        block[0] = f
        out[d:d + 17] = block
        d += k
    out[4:8] = struct.pack(f"{order}I", d)
    return bytes(out[:d])


def _match_len(a, b):
    if a == b:
        return len(a)
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class QError(Exception):
    """A q error in a response (type -128)."""


def decode(body):
    """Decodes the value types these tests use; raises QError for an error body."""
    value, end = _decode(body, 0)
    if end != len(body):
        raise ValueError(f"{len(body) - end} bytes after the value")
    return value


_VECTOR_FORMATS = {1: "?", 4: "B", 5: "h", 6: "i", 7: "q", 8: "f", 9: "d"}


def _decode(body, pos):
    (t,) = struct.unpack_from("<b", body, pos)
    pos += 1
    if t == -128:
        end = body.index(b"\0", pos)
        raise QError(body[pos:end].decode(errors="replace"))
    if t == 101:
        return None, pos + 1
    if t == -7:
        return struct.unpack_from("<q", body, pos)[0], pos + 8
    if t == -11:
        end = body.index(b"\0", pos)
        return body[pos:end].decode(), end + 1
    if t in (0, 10, 11) or t in _VECTOR_FORMATS:
        _attr, count = struct.unpack_from("<Bi", body, pos)
        pos += 5
        if t == 10:
            return body[pos:pos + count].decode(), pos + count
        if t == 11:
            names = []
            for _ in range(count):
                end = body.index(b"\0", pos)
                names.append(body[pos:end].decode())
                pos = end + 1
            return names, pos
        if t == 0:
            items = []
            for _ in range(count):
                item, pos = _decode(body, pos)
                items.append(item)
            return items, pos
        fmt = _VECTOR_FORMATS[t]
        size = struct.calcsize(fmt)
        return list(struct.unpack_from(f"<{count}{fmt}", body, pos)), pos + size * count
    raise ValueError(f"type {t} is not decoded by qraw")


class Conn:
    """One raw connection."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port, credentials=b"user:pass", capability=3, timeout=10.0):
        """Connects and completes the handshake; raises ConnectionRefused... on a refusal."""
        conn = await cls.connect(port, timeout)
        conn.writer.write(credentials + bytes([capability, 0]))
        await conn.writer.drain()
        reply = await asyncio.wait_for(conn.reader.read(1), timeout)
        if len(reply) != 1:
            conn.close()
            raise ConnectionRefusedError("the server closed the connection during the handshake")
        conn.capability = reply[0]
        return conn

    @classmethod
    async def connect(cls, port, timeout=10.0):
        """Connects without a handshake."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 24), timeout
        )
        return cls(reader, writer)

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout=10.0):
        """(message type, compressed flag, body) of the next frame."""
        header = await asyncio.wait_for(self.reader.readexactly(8), timeout)
        endian, msgtype, compressed, _, length = struct.unpack("<BBBBI", header)
        assert endian == 1, "qgate always sends little-endian"
        body = await asyncio.wait_for(self.reader.readexactly(length - 8), timeout)
        return msgtype, compressed, body

    async def query(self, body, timeout=10.0):
        """Sends a sync request and returns the decoded response."""
        await self.send(frame(body, SYNC))
        msgtype, compressed, reply = await self.read_frame(timeout)
        assert msgtype == RESPONSE, f"message type {msgtype} where a response was due"
        assert compressed == 0, "qgate does not compress on loopback"
        return decode(reply)

    async def closed_by_peer(self, timeout=10.0):
        """True when the server closes this connection (EOF or reset) within `timeout`; any
        bytes it sends first are discarded."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
                if not data:
                    return True
        except (ConnectionError, OSError):
            return True
        except asyncio.TimeoutError:
            return False

    def close(self):
        self.writer.close()

    async def aclose(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
