"""An upstream written with aiokdb's own server classes: a second, independently written kdb+
stand-in behind qgate, beside the test upstream (`qgate-upstream`).

It serves aiokdb's `handle_connection` (what aiokdb's `start_qserver` serves, there on every
interface) on 127.0.0.1 and a free port, with a `ServerContext` that answers sync queries:

- `("echo";x)` replies `x`;
- `("fail";text)` raises, which aiokdb answers with the q error `'text`;
- `("logins";::)` replies the number of logins it has accepted;
- anything else replies `(`aiokdb;text)`, the query's text (or aiokdb's repr of a non-string).

Run it as `python aiokdb_upstream.py` from a venv with aiokdb: it prints `aiokdb-upstream
listening on 127.0.0.1:PORT` once bound, and stops when its stdin closes, on SIGTERM, or after
`--lifetime-secs`. It is a process of its own rather than a thread of the test's: PyKX holds
Python's interpreter lock while it waits in its connect, which would stall a server on a thread
of the same process.
"""

import argparse
import asyncio
import logging
import sys
import threading
from functools import partial

from aiokdb import TypeEnum, cv, kj, kk, ks
from aiokdb.server import ServerContext, handle_connection


class Context(ServerContext):
    """Answers sync queries as the module's docstring says; accepts every login."""

    def __init__(self):
        super().__init__(password=None)
        self.logins = 0

    async def writer_available(self, dotzw):
        self.logins += 1

    async def on_sync_request(self, cmd, dotzw):
        if cmd.t == TypeEnum.K and len(cmd) >= 1:
            # The function's name, a symbol or a string (`(`echo;x)` or `("echo";x)`).
            name, arguments = cmd.kK()[0].aS(), cmd.kK()[1:]
            if name == "echo" and len(arguments) == 1:
                return arguments[0]
            if name == "fail" and len(arguments) == 1:
                raise Exception(arguments[0].aS())
            if name == "logins":
                return kj(self.logins)
        text = cmd.aS() if cmd.t == TypeEnum.KC else repr(cmd)
        return kk(ks("aiokdb"), cv(text))


async def serve(lifetime):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def watch_stdin():
        # The test that started this process holds the other end: its end is ours.
        while sys.stdin.buffer.read(256):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    server = await asyncio.start_server(partial(handle_connection, Context()), "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"aiokdb-upstream listening on {host}:{port}", flush=True)
    async with server:
        try:
            await asyncio.wait_for(stop.wait(), lifetime)
        except asyncio.TimeoutError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifetime-secs", type=float, default=900,
                        help="stop after this long whatever happens")
    args = parser.parse_args()
    # aiokdb logs every command at INFO; warnings and errors are enough on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args.lifetime_secs))


if __name__ == "__main__":
    main()
