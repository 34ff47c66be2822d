"""Fixtures for end-to-end tests: a real mitmdump with the addon, real WebSocket peers.

Everything binds 127.0.0.1 on ephemeral ports, and every process a test starts is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import functools
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from mitm_wsroute.testing import WsRouteProxy

ROOT = Path(__file__).resolve().parent.parent
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
#: For a test about other addons seeing each message: `make test` runs the end-to-end tests
#: with ``wsroute_message_hooks`` off too (``WSROUTE_TEST_MESSAGE_HOOKS=false``).
MESSAGE_HOOKS = ("--set", "wsroute_message_hooks=true")


@dataclass
class Proc:
    """A mitmdump subprocess and what it printed so far."""

    proc: subprocess.Popen[str]
    port: int
    confdir: Path
    lines: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 10, count: int = 1) -> re.Match[str]:
        """Block until `count` lines of output match `pattern` (a regex); the last match."""
        rx = re.compile(pattern)
        with self._cond:
            found = None

            def check() -> bool:
                nonlocal found
                matches = [m for line in self.lines if (m := rx.search(line))]
                found = matches[count - 1] if len(matches) >= count else None
                return found is not None or self.proc.poll() is not None

            self._cond.wait_for(check, timeout)
            if found is None:
                raise AssertionError(f"mitmdump never printed {pattern!r}; output:\n{self.output}")
            return found

    async def async_wait_for(
        self, pattern: str, timeout: float = 10, count: int = 1
    ) -> re.Match[str]:
        return await asyncio.to_thread(self.wait_for, pattern, timeout, count)

    def ca(self) -> ssl.SSLContext:
        """A client TLS context that trusts mitmproxy's CA."""
        ctx = ssl.create_default_context(cafile=str(self.confdir / "mitmproxy-ca-cert.pem"))
        return ctx


def _reader(p: Proc) -> None:
    assert p.proc.stdout is not None
    for line in p.proc.stdout:
        with p._cond:
            p.lines.append(line)
            p._cond.notify_all()
    with p._cond:
        p._cond.notify_all()


@functools.cache
def _ca() -> Path:
    """A mitmproxy CA made once per test run (mitmdump makes one, an RSA key, in each empty
    confdir: about a tenth of a second of every start)."""
    from mitmproxy.certs import CertStore

    made = Path(tempfile.mkdtemp(prefix="wsroute-test-ca-"))
    atexit.register(shutil.rmtree, made, ignore_errors=True)
    CertStore.from_store(made, "mitmproxy", 2048)
    return made


def start_mitmdump(
    tmp: Path, *args: str, addon: Path | None = ROOT / "addons" / "wsroute.py"
) -> Proc:
    """Start mitmdump with the addon (the script `addon`; None: plain mitmdump) on an
    ephemeral port and wait until it listens."""
    confdir = tmp / "confdir"
    confdir.mkdir(exist_ok=True)
    for made in _ca().iterdir():
        if not (confdir / made.name).exists():
            shutil.copy(made, confdir)
    cmd = [
        MITMDUMP,
        "--listen-host", "127.0.0.1",
        "--listen-port", "0",
        "--set", f"confdir={confdir}",
        "--set", "termlog_verbosity=debug",
        *(["-s", str(addon)] if addon is not None else []),
        *args,
    ]  # fmt: skip
    if not any(a.startswith("ssl_insecure=") for a in args):
        cmd += ["--set", "ssl_insecure=true"]  # the test upstream's certificate is self-signed
    hooks = os.environ.get("WSROUTE_TEST_MESSAGE_HOOKS")
    if hooks and not any(a.startswith("wsroute_message_hooks=") for a in args):
        cmd += ["--set", f"wsroute_message_hooks={hooks}"]  # `make test` runs both ways
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    p = Proc(proc, 0, confdir)
    threading.Thread(target=_reader, args=(p,), daemon=True).start()
    m = p.wait_for(r"listening at [\d.]+:(\d+)", timeout=30)
    p.port = int(m.group(1))
    return p


def stop(p: Proc) -> None:
    if p.proc.poll() is None:
        os.killpg(p.proc.pid, signal.SIGTERM)
        try:
            p.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()


@pytest.fixture
def mitmdump(tmp_path: Path) -> Iterator[object]:
    """``mitmdump(script_text, *args, other_addon=None)`` starts a mitmdump whose route script
    is `script_text`, and with `other_addon` (the text of a mitmproxy addon script) loaded too."""
    procs: list[Proc] = []

    def start(script: str | None = None, *args: str, other_addon: str | None = None) -> Proc:
        extra = list(args)
        if script is not None:
            path = tmp_path / f"routes{len(procs)}.py"
            path.write_text(textwrap.dedent(script))
            extra += ["--set", f"wsroute_scripts={path}"]
        if other_addon is not None:
            path = tmp_path / f"addon{len(procs)}.py"
            path.write_text(other_addon)
            extra += ["-s", str(path)]
        p = start_mitmdump(tmp_path, *extra)
        procs.append(p)
        return p

    yield start
    for p in procs:
        stop(p)


def make_cert(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

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
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Upstream:
    """A real websockets server that echoes and records what it sees."""

    server: Server
    tls: bool
    accepted: int = 0
    received: list[str | bytes] = field(default_factory=list)
    closes: list[tuple[int | None, str | None]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, path: str = "/") -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"


@pytest_asyncio.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[object]:
    """``await upstream(tls=False, compression="deflate")``: an echo server (with
    python-websockets' permessage-deflate unless `compression` is None);
    ``cmd:close:CODE:REASON`` closes."""
    servers: list[Upstream] = []

    async def start(tls: bool = False, compression: str | None = "deflate") -> Upstream:
        ssl_ctx = None
        if tls:
            cert, key = make_cert(tmp_path)
            ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_ctx.load_cert_chain(cert, key)
        up: Upstream

        async def handler(ws: ServerConnection) -> None:
            up.accepted += 1
            try:
                async for message in ws:
                    up.received.append(message)
                    if isinstance(message, str) and message.startswith("cmd:close:"):
                        _, _, code, reason = message.split(":", 3)
                        await ws.close(int(code), reason)
                        break
                    if message == "cmd:abort":
                        ws.transport.abort()
                        break
                    await ws.send(message)
            except ConnectionClosed:
                pass  # any close code is fine here; the tests look at up.closes
            finally:
                await ws.wait_closed()
                up.closes.append((ws.close_code, ws.close_reason))
                up.closed.set()

        def process_request(ws: ServerConnection, request: Any) -> Any:
            if request.path.startswith("/forbidden"):
                return ws.respond(403, "no entry\n")
            return None

        server = await serve(
            handler,
            "127.0.0.1",
            0,
            process_request=process_request,
            ssl=ssl_ctx,
            ping_interval=None,
            max_size=None,
            compression=compression,
            select_subprotocol=lambda ws, offered: offered[0] if offered else None,
        )
        up = Upstream(server, tls)
        servers.append(up)
        return up

    yield start
    for s in servers:
        s.server.close()
        await s.server.wait_closed()


@pytest_asyncio.fixture
async def sentinel() -> AsyncIterator[object]:
    """A TCP listener that counts accepted connections (must stay 0 for mocks)."""

    class Counter:
        accepted = 0
        port = 0

    counter = Counter()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.accepted += 1
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    counter.port = server.sockets[0].getsockname()[1]
    yield counter
    server.close()
    await server.wait_closed()


PUSH: list[str | bytes] = ["welcome", b"\x00\x01binary push\xff"]


async def app(ws: ServerConnection) -> None:
    """A small real backend: pushes on open, answers requests, sends binary, closes on 'bye'."""
    for m in PUSH:
        await ws.send(m)
    async for message in ws:
        if message == "bye":
            await ws.close(4000, "see you")
            return
        if isinstance(message, bytes):
            await ws.send(message[::-1])
        elif message.startswith("sum "):
            await ws.send(str(sum(int(x) for x in message.split()[1:])))
            await ws.send(b"\x10" * 3)
        else:
            await ws.send(f"echo {message}")


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[Server]:
    """A running `app` server on 127.0.0.1 (tests may close it early, to show a replay)."""
    server = await serve(app, "127.0.0.1", 0, ping_interval=None)
    yield server
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="module")
def _module_proxy() -> Iterator[WsRouteProxy]:
    with WsRouteProxy(options={"ssl_insecure": True}) as p:  # test servers' own certificates
        yield p


@pytest.fixture
def proxy(_module_proxy: WsRouteProxy) -> Iterator[WsRouteProxy]:
    """A test proxy per module (a module may define its own `proxy`), reset after each test:
    its routes, records and handler errors are the test's."""
    yield _module_proxy
    _module_proxy.reset()


# python-socketio's server, for the Socket.IO intercept tests (its module uses `make_cert`).
from tests.app_servers import sio_server  # noqa: E402, F401
