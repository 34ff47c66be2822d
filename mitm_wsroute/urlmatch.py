# Glob handling ported from playwright-python 1.65.2, playwright/_impl/isomorphic/url_match.py
# (a port of microsoft/playwright packages/isomorphic/urlMatch.ts).
# Copyright (c) Microsoft Corporation. Licensed under the Apache License, Version 2.0:
# http://www.apache.org/licenses/LICENSE-2.0

"""Playwright's URL matching for WebSockets, and the ws(s) URL a route sees.

Pure: this module imports neither mitmproxy nor asyncio. The rules are Playwright's
(reference/playwright-semantics.md §1.2): a glob is resolved against the base URL (http(s) is
taken as ws(s)), turned into an anchored regex, and compared with the WHATWG-normalised URL; a
compiled pattern is searched; a predicate gets the URL string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from ._whatwg_url import parse_url

__all__ = [
    "URLMatch",
    "compile_url_match",
    "glob_to_regex_pattern",
    "parse_base_url",
    "websocket_url",
]

URLMatch = str | re.Pattern[str] | Callable[[str], bool]

# https://developer.mozilla.org/en-US/docs/Web/JavaScript/Guide/Regular_expressions#escaping
_ESCAPED = {"$", "^", "+", ".", "*", "(", ")", "|", "\\", "?", "{", "}", "[", "]"}


def compile_url_match(match: URLMatch, base_url: str | None = None) -> Callable[[str], bool]:
    """A function telling whether a ws(s) URL matches `match`, compiled once.

    Raises:
        ValueError: `match` is an invalid glob (Playwright's message).
        TypeError: `match` is neither a str, a compiled pattern nor a callable.
    """
    if isinstance(match, str):
        if match == "":
            return lambda url: True
        regex = re.compile(resolve_glob_to_regex_pattern(base_url, match))
        return lambda url: regex.search(url) is not None
    if isinstance(match, re.Pattern):
        pattern = match
        return lambda url: pattern.search(url) is not None
    if callable(match):
        predicate = match
        return lambda url: parse_url(url) is not None and bool(predicate(url))
    raise TypeError(
        f"url must be a glob str, a compiled re.Pattern or a callable, not {type(match).__name__}"
    )


def glob_to_regex_pattern(glob: str) -> str:
    """Playwright's glob → anchored regex: ``*`` stays within a path segment, ``**`` crosses
    them, ``{a,b}`` is an alternative, ``\\`` escapes; ``?`` and ``[]`` are literal."""
    tokens = ["^"]
    in_group = False
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "\\" and i + 1 < len(glob):
            char = glob[i + 1]
            tokens.append("\\" + char if char in _ESCAPED else char)
            i += 1
        elif c == "*":
            char_before = glob[i - 1] if i > 0 else None
            star_count = 1
            while i + 1 < len(glob) and glob[i + 1] == "*":
                star_count += 1
                i += 1
            if star_count > 1:
                char_after = glob[i + 1] if i + 1 < len(glob) else None
                # Match either /..something../ or /.
                if char_after == "/":
                    tokens.append("((.+/)|)" if char_before == "/" else "(.*/)")
                    i += 1
                else:
                    tokens.append("(.*)")
            else:
                tokens.append("([^/]*)")
        elif c == "{":
            if in_group:
                raise ValueError(f"Invalid glob pattern {_js(glob)}: nested '{{' is not supported")
            in_group = True
            tokens.append("(")
        elif c == "}":
            if not in_group:
                raise ValueError(f"Invalid glob pattern {_js(glob)}: unmatched '}}'")
            in_group = False
            tokens.append(")")
        elif c == ",":
            tokens.append("|" if in_group else "\\,")
        else:
            tokens.append("\\" + c if c in _ESCAPED else c)
        i += 1
    if in_group:
        raise ValueError(f"Invalid glob pattern {_js(glob)}: unmatched '{{'")
    tokens.append("$")
    return "".join(tokens)


def _js(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON.stringify() of a string


def resolve_glob_to_regex_pattern(base_url: str | None, glob: str) -> str:
    return glob_to_regex_pattern(_resolve_glob_base(_to_websocket_base_url(base_url), glob))


def _to_websocket_base_url(base_url: str | None) -> str | None:
    # http(s) base URLs match ws(s) URLs; schemes are case-insensitive (PR #41557).
    if base_url and re.match(r"^https?://", base_url, re.IGNORECASE):
        return re.sub(
            r"^https?",
            lambda m: "wss" if m.group(0).lower() == "https" else "ws",
            base_url,
            count=1,
            flags=re.IGNORECASE,
        )
    return base_url


def _resolve_glob_base(base_url: str | None, match: str) -> str:
    if match.startswith("*"):
        return match
    token_map: dict[str, str] = {}

    def map_token(original: str, replacement: str) -> str:
        if not original:
            return ""
        token_map[replacement] = original
        return replacement

    # Escaped `\\?` behaves the same as `?` in our glob patterns.
    match = match.replace(r"\\?", "?")
    # about: and friends are not relative to the base URL.
    if match.startswith(("about:", "data:", "chrome:", "edge:", "file:")):
        return match
    # Glob symbols may be escaped in the URL and some of them such as ? affect resolution,
    # so we replace them with safe components first.
    parts = []
    for index, token in enumerate(match.split("/")):
        if token in (".", "..", ""):
            parts.append(token)
        elif index == 0 and token.endswith(":"):
            # A wildcard scheme (http*://) becomes a web scheme so that slashes are kept;
            # an explicit scheme stays, as it affects trailing slashes after the domain.
            parts.append(map_token(token, "http:") if "*" in token or "{" in token else token)
        elif not re.search(r"[*?{}\\]", token):
            # Literal components round-trip through the URL parser, to be normalised
            # (default ports, percent-encoding, IDN hosts).
            parts.append(token)
        elif (q := token.find("?")) == -1:
            parts.append(map_token(token, f"$_{index}_$"))
        else:
            parts.append(
                map_token(token[:q], f"$_{index}_$") + map_token(token[q:], f"?$_{index}_$")
            )
    relative = "/".join(parts)
    url = parse_url(relative, base_url)
    # new URL(relative, base); where it throws, the glob stays as written.
    resolved, origin = (relative, None) if url is None else (url.href, url.origin)
    for token, original in token_map.items():
        # Scheme and host are case-insensitive.
        lower = origin is not None and token in origin
        resolved = resolved.replace(token, original.lower() if lower else original, 1)
    return resolved


def websocket_url(scheme: str, host: str, port: int | None, path: str) -> str:
    """The URL a route sees, from the parts of an HTTP request: ``ws`` for http/ws, ``wss`` for
    https/wss, normalised as a browser would (lowercase host, IDN as punycode, no default port,
    ``/`` for an empty path). `path` includes the query."""
    ws_scheme = "wss" if scheme.lower() in ("https", "wss") else "ws"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if not path.startswith("/"):
        path = "/" + path
    raw = f"{ws_scheme}://{host}{'' if port is None else f':{port}'}{path}"
    url = parse_url(raw)
    return raw if url is None else url.href


def parse_base_url(value: str) -> str:
    """Validate ``wsroute_base_url``: an absolute http(s) or ws(s) URL with a host.

    Raises:
        ValueError: it is not one; the message says what is expected.
    """
    value = value.strip()
    url = parse_url(value)
    if url is None or url.scheme not in ("http", "https", "ws", "wss") or not url.host:
        raise ValueError(
            f"{value!r} is not an absolute http(s) or ws(s) URL; "
            "expected something like http://localhost:3000"
        )
    return value
