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

# pyOpenSSL's binding of OpenSSL (cffi), called directly where its methods cost the most: its
# `recv`, `bio_read` and `bio_write` take 1 to 3 µs a call (a 64 KiB buffer made per read, an
# exception raised for "nothing more to read"), where the calls they wrap take 0.2 to 0.5 µs;
# a client that writes each message as a TLS record of its own costs a call per message.
try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _SSL_read, _SSL_write, _SSL_get_error = _lib.SSL_read, _lib.SSL_write, _lib.SSL_get_error
    _BIO_read, _BIO_write, _ERR_clear_error = _lib.BIO_read, _lib.BIO_write, _lib.ERR_clear_error
    _WANT_READ = _lib.SSL_ERROR_WANT_READ
    #: What records are decrypted into and encrypted ones read out of: one buffer for all (the
    #: event loop runs one call at a time, and each copies out of it at once).
    _BUFFER = _ffi.new("char[]", 65536)
    _VIEW = memoryview(_ffi.buffer(_BUFFER))
    _RAW = True
except (ImportError, AttributeError):  # a pyOpenSSL without them: its public methods only
    _RAW = False

#: The attributes of pyOpenSSL's `Connection` the direct calls need.
_RAW_ATTRIBUTES = ("_ssl", "_into_ssl", "_from_ssl")


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class TlsTransport:
    """A connection's transport under TLS (`_own_io`): what the layer writes is encrypted with
    the connection's own TLS object (mitmproxy's, which stops reading it once the layer does;
    what still goes through mitmproxy's layers uses the same object, in order)."""

    __slots__ = ("_from", "_into", "_ssl", "tls", "transport")

    def __init__(self, transport: _Transport, tls: SSL.Connection) -> None:
        self.transport = transport
        self.tls = tls
        raw = _RAW and all(hasattr(tls, name) for name in _RAW_ATTRIBUTES)
        #: The connection's SSL object and memory BIOs, for direct calls; None: its methods.
        self._ssl: object = tls._ssl if raw else None
        self._into: object = tls._into_ssl if raw else None
        self._from: object = tls._from_ssl if raw else None

    def write(self, data: bytes) -> None:
        if self._ssl is not None:
            sent = _SSL_write(self._ssl, data, len(data))
            if sent == len(data):  # the common case: all of it (memory BIOs never block)
                self.flush()
                return
            if sent <= 0:  # an error: pyOpenSSL tries again below, and raises it
                _ERR_clear_error()
            data = data[max(sent, 0) :]
        try:
            self.tls.sendall(data)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return  # as mitmproxy's TLS layer: the peer closed; it may still send
        self.flush()

    def flush(self) -> None:
        """Write out what TLS has to send: records, alerts, session tickets, key updates."""
        out = []
        if self._from is not None:
            while (n := _BIO_read(self._from, _BUFFER, 65536)) > 0:
                out.append(bytes(_VIEW[:n]))
        else:
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
        plain = bytearray()
        if self._ssl is None or _BIO_write(self._into, data, len(data)) != len(data):
            tls.bio_write(data)  # raises what went wrong, if anything
        else:  # OpenSSL decrypts a record per call
            while (n := _SSL_read(self._ssl, _BUFFER, 65536)) > 0:
                plain += _VIEW[:n]
            if _SSL_get_error(self._ssl, n) == _WANT_READ:  # the common end: nothing more
                self.flush()  # as below
                return bytes(plain), False
        closed = False  # the end of the stream, or an error: as pyOpenSSL reports it
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
