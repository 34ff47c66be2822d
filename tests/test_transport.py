"""`TlsTransport` on a TLS connection in memory (pyOpenSSL, as mitmproxy's): what it decrypts
and encrypts, with OpenSSL called directly and through pyOpenSSL's methods alone (a pyOpenSSL
without the internals it uses), which must agree byte for byte. No mitmproxy, no sockets."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from mitm_wsroute import transport
from mitm_wsroute.transport import TlsTransport
from tests.conftest import make_cert


class Wire:
    """What a `TlsTransport` writes to its connection's transport."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def take(self) -> bytes:
        data, self.written = b"".join(self.written), []
        return data

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _contexts() -> tuple[SSL.Context, SSL.Context]:
    server = SSL.Context(SSL.TLS_METHOD)
    cert, key = make_cert(Path(tempfile.mkdtemp(prefix="wsroute-tls-")))
    server.use_certificate_file(str(cert))
    server.use_privatekey_file(str(key))
    shutil.rmtree(cert.parent)
    return server, SSL.Context(SSL.TLS_METHOD)


_SERVER, _CLIENT = _contexts()


def _pump(a: SSL.Connection, b: SSL.Connection) -> None:
    moved = True
    while moved:
        moved = False
        for x, y in ((a, b), (b, a)):
            try:
                y.bio_write(x.bio_read(65536))
                moved = True
            except SSL.WantReadError:
                pass


def pair(raw: bool) -> tuple[TlsTransport, Wire, SSL.Connection]:
    """A proxy's side of a TLS connection (the `TlsTransport`, and the wire it writes to),
    and its peer, their handshake done."""
    ours, peer = SSL.Connection(_SERVER, None), SSL.Connection(_CLIENT, None)
    ours.set_accept_state()
    peer.set_connect_state()
    for _ in range(10):
        for c in (peer, ours):
            try:
                c.do_handshake()
            except SSL.WantReadError:
                pass
        _pump(peer, ours)
    for c in (ours, peer):  # TLS 1.3's session tickets
        try:
            c.recv(1)
        except SSL.WantReadError:
            pass
    _pump(peer, ours)
    wire = Wire()
    tls = TlsTransport(wire, ours)
    if not raw:
        tls._ssl = tls._into = tls._from = None
    return tls, wire, peer


def records(peer: SSL.Connection, messages: list[bytes]) -> bytes:
    """What `peer` sends: a TLS record (or more) per message."""
    for m in messages:
        peer.sendall(m)
    out = b""
    while True:
        try:
            out += peer.bio_read(65536)
        except SSL.WantReadError:
            return out


def test_direct_calls_are_used_with_this_pyopenssl() -> None:
    tls, _, _ = pair(raw=True)
    assert transport._RAW and tls._ssl is not None


@pytest.mark.parametrize("raw", [True, False], ids=["direct", "pyopenssl"])
def test_many_records_in_one_read(raw: bool) -> None:
    tls, _, peer = pair(raw)
    messages = [bytes([i % 256]) * (1 + i % 70) for i in range(300)]
    assert tls.decrypt(records(peer, messages)) == (b"".join(messages), False)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 20_000), max_size=30),
)
def test_direct_and_pyopenssl_agree_on_any_read_split(sizes: list[int], cuts: list[int]) -> None:
    """The same records, split into reads anywhere (records cut in two, many in one read),
    decrypt to the same bytes, read by read, both ways; and they are the ones sent."""
    rng = random.Random(len(sizes))
    messages = [rng.randbytes(n) for n in sizes]
    results = []
    for raw in (True, False):
        tls, _, peer = pair(raw)
        data = records(peer, messages)
        reads, at = [], 0
        for cut in cuts:
            if at >= len(data):
                break
            reads.append(data[at : at + cut])
            at += cut
        reads.append(data[at:])
        results.append([tls.decrypt(r) for r in reads if r])
    assert results[0] == results[1]
    assert b"".join(plain for plain, _ in results[0]) == b"".join(messages)


@pytest.mark.parametrize("raw", [True, False], ids=["direct", "pyopenssl"])
def test_close_notify_ends_the_stream_after_what_came_before_it(raw: bool) -> None:
    tls, _, peer = pair(raw)
    data = records(peer, [b"last words"])
    peer.shutdown()
    data += records(peer, [])
    assert tls.decrypt(data) == (b"last words", True)


@pytest.mark.parametrize("raw", [True, False], ids=["direct", "pyopenssl"])
def test_a_corrupt_record_is_logged_not_raised(raw: bool, caplog: Any) -> None:
    tls, _, peer = pair(raw)
    good = records(peer, [b"fine"])
    bad = bytearray(records(peer, [b"tampered"]))
    bad[-1] ^= 1
    assert tls.decrypt(good + bytes(bad)) == (b"fine", False)
    assert "TLS error" in caplog.text


@pytest.mark.parametrize("raw", [True, False], ids=["direct", "pyopenssl"])
def test_what_is_written_is_encrypted_for_the_peer(raw: bool) -> None:
    tls, wire, peer = pair(raw)
    sent = [b"a" * 10, b"", b"b" * 100_000]  # larger than a record: split into several
    for data in sent:
        tls.write(data)
    peer.bio_write(wire.take())
    got = b""
    while True:
        try:
            got += peer.recv(65536)
        except SSL.WantReadError:
            break
    assert got == b"".join(sent)


@pytest.mark.parametrize("raw", [True, False], ids=["direct", "pyopenssl"])
def test_after_the_peer_closed_what_is_written_still_reaches_it(raw: bool) -> None:
    """TLS 1.3 closes each direction on its own: after the peer's close_notify our side may
    still write, and the peer read it (as mitmproxy's TLS layer allows)."""
    tls, wire, peer = pair(raw)
    peer.shutdown()
    assert tls.decrypt(records(peer, [])) == (b"", True)
    tls.write(b"still here")
    peer.bio_write(wire.take())
    assert peer.recv(100) == b"still here"


@pytest.mark.parametrize("raw", [True, False], ids=["direct", "pyopenssl"])
def test_writing_after_our_shutdown_raises_as_pyopenssl_does(raw: bool) -> None:
    tls, _, _ = pair(raw)
    tls.tls.shutdown()
    with pytest.raises(SSL.Error, match="protocol is shutdown"):
        tls.write(b"too late")
