"""Playwright's URL matching: its own test table, WebSocket cases, and a differential test
against the playwright package's implementation."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from playwright._impl.errors import Error as PlaywrightError
from playwright._impl.isomorphic.url_match import url_matches as playwright_url_matches

from mitm_wsroute.urlmatch import compile_url_match, parse_base_url, websocket_url


def matches(glob: Any, url: str, base: str | None = None) -> bool:
    return compile_url_match(glob, base)(url)


# microsoft/playwright tests/page/interception.spec.ts, "should work with glob"
PLAYWRIGHT_GLOBS = [
    ("https://localhost:8080/foo.js", "**/*.js", True),
    ("https://localhost:8080/foo.js", "*.js", False),
    ("foo/bar.js", "foo*", False),
    ("http://localhost:3000/signin-oidcnice", "http://localhost:3000/signin-oidc*", True),
    ("http://example.com/api/v[0-9]", "**/api/v[0-9]", True),
    ("http://example.com/api?param", "**/api\\?param", True),
    ("http://playwright.dev/foo", "http://playwright.dev/f??", False),
    ("http://playwright.dev/", "http://playwright.dev", True),
    ("http://api.playwright.dev/?x=y", "http://*.playwright.dev?x=y", True),
    ("https://playwright.dev/fooBAR", "HtTpS://pLaYwRiGhT.dEv/fooBAR", True),
    ("https://playwright.dev/foobar", "HtTpS://pLaYwRiGhT.dEv/fooBAR", False),
    ("http://example.com/path", "http://example.com:80/path", True),
    ("http://xn--mnchen-3ya.de/", "http://münchen.de/", True),
    ("https://localhost:3000/?a=b", "**?a=b", True),
    ("https://localhost:3000/?a=b", "**=b", True),
    ("https://foo/bar.js", "https://foo/**/bar.js", True),
    ("https://foo/a/b/bar.js", "https://foo/**/bar.js", True),
    ("https://foo/a/b/bar.js", "https://foo/*/bar.js", False),
    ("https://foo/bar.js", "https://foo/{bar,baz}.js", True),
    ("https://foo/baz.js", "https://foo/{bar,baz}.js", True),
    ("https://foo/qux.js", "https://foo/{bar,baz}.js", False),
    ("https://foo/a,b", "https://foo/a,b", True),
    ("https://foo/a*b", "https://foo/a\\*b", True),
    ("https://foo/axb", "https://foo/a\\*b", False),
    ("https://foo/bar?", "https://foo/bar?", True),
    ("https://foo/barx", "https://foo/bar?", False),
]


@pytest.mark.parametrize(("url", "glob", "expected"), PLAYWRIGHT_GLOBS)
def test_playwright_glob_table(url: str, glob: str, expected: bool) -> None:
    assert matches(glob, url) is expected


@pytest.mark.parametrize(
    ("url", "match", "base", "expected"),
    [
        ("ws://localhost:8907/ws", "/ws", "http://localhost:8907", True),
        ("ws://localhost:8907/ws", "/ws", "HTTP://localhost:8907", True),
        ("wss://localhost:8907/ws", "/ws", "https://localhost:8907", True),
        ("ws://localhost:8907/ws", "/ws", None, False),  # relative, no base: matches nothing
        ("ws://localhost:8907/", "ws://localhost:8907", None, True),
        ("ws://localhost:8907/something/something/mock-ws", "**/mock-ws", None, True),
        ("ws://localhost:8907/ws", re.compile(r".*/ws$"), None, True),
        ("ws://h/q?x=1", "**/q?x=*", None, True),
        ("ws://h/qx=1", "**/q?x=*", None, False),
        ("ws://h/ws", "http://h/ws", None, False),  # an explicit http glob is not ws
        ("ws://h/a b", "ws://h/a b", None, False),  # the glob is normalised to %20...
        ("ws://h/a%20b", "ws://h/a b", None, True),  # ...as the URL would be
        ("ws://h/ws", "", None, True),
        ("ws://h/anything", lambda url: url.endswith("thing"), None, True),
        ("ws://h/other", lambda url: url.endswith("thing"), None, False),
        ("ws://h/chat", re.compile("/chat"), None, True),  # searched, not anchored
    ],
)
def test_websocket_cases(url: str, match: Any, base: str | None, expected: bool) -> None:
    assert matches(match, url, base) is expected


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("**/{a,{b}}", "nested '{' is not supported"),
        ("**/{a,b", "unmatched '{'"),
        ("**/a,b}", "unmatched '}'"),
    ],
)
def test_invalid_glob_raises_value_error(glob: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f'Invalid glob pattern "{glob}": {message}')):
        compile_url_match(glob)


def test_wrong_type_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"glob str, a compiled re\.Pattern or a callable"):
        compile_url_match(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parts", "url"),
    [
        (("http", "example.com", 80, "/ws"), "ws://example.com/ws"),
        (("https", "example.com", 443, "/ws"), "wss://example.com/ws"),
        (("http", "example.com", 8080, "/ws?x=1"), "ws://example.com:8080/ws?x=1"),
        (("https", "example.com", 80, "/"), "wss://example.com:80/"),
        (("http", "EXAMPLE.com", 80, ""), "ws://example.com/"),
        (("http", "münchen.de", 80, "/"), "ws://xn--mnchen-3ya.de/"),
        (("http", "::1", 8080, "/ws"), "ws://[::1]:8080/ws"),
        (("http", "127.0.0.1", None, "/ws"), "ws://127.0.0.1/ws"),
    ],
)
def test_websocket_url(parts: tuple[str, str, int | None, str], url: str) -> None:
    assert websocket_url(*parts) == url


@pytest.mark.parametrize(
    "value", ["http://localhost:3000", " https://h/app ", "ws://h", "wss://h/"]
)
def test_parse_base_url_accepts(value: str) -> None:
    assert parse_base_url(value) == value.strip()


@pytest.mark.parametrize("value", ["", "localhost:3000", "/ws", "ftp://h/", "http://", "not a url"])
def test_parse_base_url_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="expected something like http://localhost:3000"):
        parse_base_url(value)


# --- properties -------------------------------------------------------------------------------

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
paths = st.from_regex(r"(/[A-Za-z0-9._~-]{0,8}){0,4}(\?[a-z]=[a-z0-9]{0,4})?", fullmatch=True)
urls = st.builds(
    websocket_url, st.sampled_from(["http", "https"]), hosts, st.integers(1, 65535), paths
)
glob_text = st.text(alphabet="ab/*?{},\\.:[]", max_size=16)


@given(url=urls)
def test_a_literal_url_glob_matches_itself(url: str) -> None:
    assert matches(url, url)


@given(url=urls)
def test_catch_all_globs_match_everything(url: str) -> None:
    assert matches("**/*", url)
    assert matches("**", url)


@given(glob=glob_text, url=st.one_of(urls, st.text(max_size=30)))
def test_never_raises_but_value_error(glob: str, url: str) -> None:
    try:
        m = compile_url_match(glob)
    except ValueError:
        return
    assert m(url) in (True, False)


@given(
    glob=st.one_of(glob_text, st.builds(lambda h, p: f"ws://{h}{p}*", hosts, paths)),
    url=urls,
    base=st.sampled_from([None, "http://localhost:3000/app/", "https://example.com"]),
)
def test_same_answer_as_playwright(glob: str, url: str, base: str | None) -> None:
    try:
        theirs: bool | str = playwright_url_matches(base, url, glob, True)
    except PlaywrightError:
        theirs = "error"
    try:
        ours: bool | str = matches(glob, url, base)
    except ValueError:
        ours = "error"
    assert ours == theirs
