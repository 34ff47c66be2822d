"""The upstream of the benchmark: a websockets echo server on an ephemeral port.

It accepts permessage-deflate when the client offers it (python-websockets' default); the
client decides (``compression=None`` offers none). ``echo_server.py --tls DIR`` serves wss://
instead, with a self-signed certificate for 127.0.0.1 and localhost that it writes to
``DIR/echo-server.pem`` at start (the proxies are told not to verify it, and the direct
client trusts that file).

``--aiohttp`` serves with aiohttp instead (``bench/run.py --server aiohttp``): it costs less
per message than python-websockets (its frame reader is compiled), and with permessage-deflate
it answers with 15-bit windows (python-websockets: 12 bits, memLevel 5).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve

#: The certificate's file name in the `--tls` directory.
CERT = "echo-server.pem"


def make_cert(directory: Path) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1 and localhost, written to `directory`, and a
    server context with it (as tests/conftest.py's `make_cert`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / CERT, directory / "echo-server.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def aiohttp_echo(ctx: ssl.SSLContext | None) -> None:
    """The same echo server, served by aiohttp."""
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=True, max_msg_size=0)
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/{path:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    print(f"echo server on port {runner.addresses[0][1]}", flush=True)
    await asyncio.Future()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tls", metavar="DIR", help="serve wss://, the certificate written to DIR")
    ap.add_argument("--aiohttp", action="store_true", help="serve with aiohttp")
    a = ap.parse_args()
    ctx = make_cert(Path(a.tls)) if a.tls else None
    if a.aiohttp:
        await aiohttp_echo(ctx)
        return
    async with serve(echo, "127.0.0.1", 0, max_size=None, ping_interval=None, max_queue=None,
                     ssl=ctx) as server:  # fmt: skip
        print(f"echo server on port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
