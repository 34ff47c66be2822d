"""The bytes of a routed socket's connection under TLS, when the layer reads and writes it
itself (`layer.RoutedWebsocketLayer._own_io`).

Imports neither mitmproxy nor asyncio: it drives the pyOpenSSL connection mitmproxy negotiated,
over the connection's transport (anything with asyncio's ``write``, ``is_closing``,
``pause_reading`` and ``resume_reading``).
"""

from __future__ import annotations

import logging
from typing import Protocol

from OpenSSL import SSL

__all__ = ["TlsTransport"]

logger = logging.getLogger(__name__)


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class TlsTransport:
    """A connection's transport under TLS (`_own_io`): what the layer writes is encrypted with
    the connection's own TLS object (mitmproxy's, which stops reading it once the layer does;
    what still goes through mitmproxy's layers uses the same object, in order)."""

    __slots__ = ("tls", "transport")

    def __init__(self, transport: _Transport, tls: SSL.Connection) -> None:
        self.transport = transport
        self.tls = tls

    def write(self, data: bytes) -> None:
        try:
            self.tls.sendall(data)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return  # as mitmproxy's TLS layer: the peer closed; it may still send
        self.flush()

    def flush(self) -> None:
        """Write out what TLS has to send: records, alerts, session tickets, key updates."""
        out = []
        while True:
            try:
                out.append(self.tls.bio_read(65535))
            except SSL.WantReadError:
                break
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def decrypt(self, data: bytes) -> tuple[bytes, bool]:
        """The plaintext of the records in `data` (and of those before it, partly read), and
        whether the peer ended its TLS stream (close_notify)."""
        tls = self.tls
        tls.bio_write(data)
        plain = bytearray()
        closed = False
        while True:
            try:
                plain += tls.recv(65535)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                closed = True
                break
            except SSL.Error as e:
                logger.warning(f"TLS error: {e}")  # as mitmproxy's TLS layer, which goes on
                break
        self.flush()  # recv() may have advanced the state machine (an answer to send)
        return bytes(plain), closed

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()
