"""The opening handshake: permessage-deflate negotiation (RFC 7692), a mock's 101, reject()."""

from __future__ import annotations

import pytest
from mitmproxy.test import tflow

from mitm_wsroute.connection import Accept, Reject
from mitm_wsroute.handshake import accept, negotiate_deflate, reject, request_headers

PMD = "permessage-deflate"


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        ([], None),
        (["x-webkit-deflate-frame"], None),
        ([PMD], PMD),
        # what browsers and python-websockets offer: any client window is fine with us
        ([f"{PMD}; client_max_window_bits"], PMD),
        (
            [f"{PMD}; server_no_context_takeover; client_max_window_bits=10"],
            f"{PMD}; server_no_context_takeover; client_max_window_bits=10",
        ),
        (
            [f"{PMD}; client_no_context_takeover; server_max_window_bits=12"],
            f"{PMD}; client_no_context_takeover; server_max_window_bits=12",
        ),
        ([f'{PMD}; server_max_window_bits="11"'], f"{PMD}; server_max_window_bits=11"),
        # invalid offers are declined (RFC 7692 §5.1), the next one may do
        ([f"{PMD}; server_max_window_bits=8"], None),  # zlib cannot
        ([f"{PMD}; server_max_window_bits=16"], None),
        ([f"{PMD}; server_max_window_bits"], None),  # needs a value
        ([f"{PMD}; server_no_context_takeover=1"], None),  # takes none
        ([f"{PMD}; unknown"], None),
        ([f"{PMD}; client_no_context_takeover; client_no_context_takeover"], None),
        ([f"{PMD}; server_max_window_bits=8", f"{PMD}; client_max_window_bits"], PMD),
    ],
)
def test_negotiate_deflate(offers: list[str], answer: str | None) -> None:
    assert negotiate_deflate(offers) == answer


def upgrade(**headers: str) -> tflow.HTTPFlow:
    f = tflow.tflow()
    f.request.headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    for name, value in headers.items():
        f.request.headers[name.replace("_", "-")] = value
    return f


def test_mock_101_defaults() -> None:
    f = upgrade(Sec_WebSocket_Extensions=f"{PMD}; client_max_window_bits, x-other")
    r = accept(f.request, ["a", "b"])
    assert r.status_code == 101 and "content-length" not in r.headers
    assert r.headers["Sec-WebSocket-Protocol"] == "a"
    assert r.headers["Sec-WebSocket-Extensions"] == PMD
    assert r.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_mock_101_as_accept_asked() -> None:
    f = upgrade(Sec_WebSocket_Extensions=PMD)
    r = accept(f.request, ["a", "b"], Accept(None, (("X-A", "1"), ("X-A", "2")), False))
    assert "Sec-WebSocket-Protocol" not in r.headers
    assert "Sec-WebSocket-Extensions" not in r.headers
    assert r.headers.get_all("X-A") == ["1", "2"]


def test_reject_response() -> None:
    r = reject(Reject(503, (("Retry-After", "3"), ("Content-Length", "999")), b"busy"))
    assert (r.status_code, r.content, r.headers["Retry-After"]) == (503, b"busy", "3")
    assert r.headers.get_all("content-length") == ["4"]  # always the body's


def test_request_headers_keep_repeats_and_case() -> None:
    f = upgrade()
    f.request.headers.add("X-Token", "1")
    f.request.headers.add("x-token", "2")
    h = request_headers(f.request)
    assert h.get_all("X-TOKEN") == ["1", "2"] and ("x-token", "2") in h.fields
    f.request.headers["X-Token"] = "changed"
    assert h["x-token"] == "1, 2"  # a copy
