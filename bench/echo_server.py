"""The upstream of the benchmark: a websockets echo server on an ephemeral port."""

import asyncio

from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    async with serve(echo, "127.0.0.1", 0, max_size=None, ping_interval=None, max_queue=None,
                     compression=None) as server:  # fmt: skip
        print(f"echo server on port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


asyncio.run(main())
