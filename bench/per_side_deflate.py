"""An experiment of `make bench BENCH_ARGS=--deflate-negotiation` (`transports.py`): what an
intercept's msgs/s would be if the proxy negotiated permessage-deflate with each side itself,
as Mockttp does, instead of passing the upstream's answer on to the client (what the addon
does: the client gets the upstream's extensions).

Loaded after the addon, this script answers the client's offer as a mock does (the client's
own parameters: python-websockets' client then compresses with a 15-bit window, where the
upstream python-websockets server asked for 12 bits). The routed socket then compresses each
side's messages as that side agreed: the client's messages are inflated and compressed again
for the upstream. With ``--set per_side_deflate=both`` the answer also has
``server_no_context_takeover`` (RFC 7692 §7.1.1.1 lets a server add it unasked), so that the
upstream's messages too are compressed again for the client, as Mockttp compresses both ways.
"""

from __future__ import annotations

from mitmproxy import ctx, http

from mitm_wsroute.handshake import negotiate_deflate, split_comma_header


def load(loader) -> None:  # type: ignore[no-untyped-def]
    loader.add_option(
        "per_side_deflate", str, "client", "client: the client's messages; both: both ways"
    )


def response(flow: http.HTTPFlow) -> None:
    response = flow.response
    if response is None or response.status_code != 101:
        return
    if "permessage-deflate" not in response.headers.get("Sec-WebSocket-Extensions", "").lower():
        return  # the upstream declined: so does the proxy, for the client
    offers = flow.request.headers.get_all("Sec-WebSocket-Extensions")
    answer = negotiate_deflate([o for v in offers for o in split_comma_header(v)])
    if answer is not None and ctx.options.per_side_deflate == "both":
        answer += "; server_no_context_takeover"
    if answer is not None:
        response.headers["Sec-WebSocket-Extensions"] = answer
