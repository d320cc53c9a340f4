"""aiokdb's server as a benchmark peer for qgate-bench (bench/src/targets.rs starts it).

It runs aiokdb's own connection handling (`aiokdb.server.handle_connection`: login check, frame
reading, d9 decoding, dispatch) with a context whose sync handler answers the generic null (::),
as the floor does. It listens on loopback only, prints `aiokdb listening on ADDR` once bound, and
exits when its stdin closes, so a harness that dies cannot leak it.
"""

import argparse
import asyncio
import os
import sys
import threading
from functools import partial

from aiokdb import kNil
from aiokdb.server import ServerContext, handle_connection


class BenchContext(ServerContext):
    """Checks the password like aiokdb's ServerContext; answers every sync query with (::)."""

    async def on_sync_request(self, cmd, dotzw):
        return kNil


def exit_when_stdin_closes() -> None:
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


async def main(port: int, password: str) -> None:
    context = BenchContext(password)
    server = await asyncio.start_server(
        partial(handle_connection, context), "127.0.0.1", port, backlog=1024
    )
    host, bound = server.sockets[0].getsockname()[:2]
    print(f"aiokdb listening on {host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--password", default=None)
    args = parser.parse_args()
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(main(args.port, args.password))
