"""Reading speed of the WebSocket codecs a proxy could use, on the same bytes: this project's
(`mitm_wsroute.codec`), python-websockets' sans-I/O `Protocol` and wsproto (mitmproxy's).

Messages of 32 bytes of text, as a client sends them (masked), in 16 KiB reads, with and
without permessage-deflate; messages per second, one CPU. ``python bench/codec_speed.py``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from websockets.extensions.permessage_deflate import PerMessageDeflate as WebsocketsDeflate
from websockets.protocol import OPEN, Protocol, Side
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mitm_wsroute.codec import Codec
from mitm_wsroute.deflate import Deflate

N = 50_000
READ = 16_384


def ours(compressed: bool) -> Callable[[bytes], int]:
    codec = Codec(True, Deflate() if compressed else None)
    return lambda data: len(codec.receive(data))


def websockets(compressed: bool) -> Callable[[bytes], int]:
    protocol = Protocol(Side.SERVER, state=OPEN, max_size=None)
    if compressed:
        protocol.extensions = [WebsocketsDeflate(False, False, 15, 15)]

    def read(data: bytes) -> int:
        protocol.receive_data(data)
        return len(protocol.events_received())

    return read


def wsproto(compressed: bool) -> Callable[[bytes], int]:
    extensions: list[Extension] = []
    if compressed:
        deflate = WsprotoDeflate()
        deflate.finalize("permessage-deflate")
        extensions.append(deflate)
    connection = Connection(ConnectionType.SERVER, extensions=extensions)

    def read(data: bytes) -> int:
        connection.receive_data(data)
        return sum(1 for _ in connection.events())

    return read


def main() -> None:
    print(f"{'codec':<22}{'plain':>14}{'deflate':>14}   (32 B messages read per second)")
    rows: dict[str, list[float]] = {}
    for compressed in (False, True):
        client = Codec(False, Deflate() if compressed else None)
        data = b"".join(client.message("x" * 32) for _ in range(N))
        reads = [data[i : i + READ] for i in range(0, len(data), READ)]
        for name, make in (("mitm_wsroute.codec", ours), ("python-websockets", websockets),
                           ("wsproto", wsproto)):  # fmt: skip
            best = 0.0
            for _ in range(3):
                read = make(compressed)
                start = time.perf_counter()
                for chunk in reads:
                    read(chunk)
                best = max(best, N / (time.perf_counter() - start))
            rows.setdefault(name, []).append(best)
    for name, (plain, deflate) in rows.items():
        print(f"{name:<22}{plain:>14,.0f}{deflate:>14,.0f}")


if __name__ == "__main__":
    main()
