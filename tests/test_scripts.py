"""Route scripts: loading, precedence, reload, and broken scripts (no mitmproxy involved)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mitm_wsroute.router import Router, route_web_socket
from mitm_wsroute.scripts import RouteScripts


def write(path: Path, body: str, bump: float = 0) -> Path:
    path.write_text("from mitm_wsroute import route_web_socket\n" + body)
    if bump:  # a distinct mtime even on coarse file systems
        st = path.stat()
        os.utime(path, (st.st_atime, st.st_mtime + bump))
    return path


def served_by(router: Router, url: str) -> str | None:
    route = router.find(url)
    return None if route is None else route.handler(None)  # type: ignore[arg-type]


@pytest.fixture
def scripts() -> RouteScripts:
    return RouteScripts(Router())


def test_last_registered_wins_and_decorator_form(tmp_path: Path, scripts: RouteScripts) -> None:
    a = write(
        tmp_path / "a.py",
        "route_web_socket('**/x', lambda ws: 'first')\n"
        "@route_web_socket('**/x')\n"
        "def second(ws): return 'second'\n"
        "route_web_socket('**/y', lambda ws: 'y')\n",
    )
    scripts.configure([str(a)], None)
    assert served_by(scripts.router, "ws://h/x") == "second"
    assert served_by(scripts.router, "ws://h/y") == "y"
    assert served_by(scripts.router, "ws://h/z") is None


def test_later_script_wins(tmp_path: Path, scripts: RouteScripts) -> None:
    a = write(tmp_path / "a.py", "route_web_socket('**/x', lambda ws: 'a')\n")
    b = write(tmp_path / "b.py", "route_web_socket('**/x', lambda ws: 'b')\n")
    scripts.configure([str(a), str(b)], None)
    assert served_by(scripts.router, "ws://h/x") == "b"
    scripts.configure([str(b), str(a)], None)
    assert served_by(scripts.router, "ws://h/x") == "a"


def test_same_file_name_in_two_folders(tmp_path: Path, scripts: RouteScripts) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = write(tmp_path / "one" / "routes.py", "route_web_socket('**/one', lambda ws: 'one')\n")
    b = write(tmp_path / "two" / "routes.py", "route_web_socket('**/two', lambda ws: 'two')\n")
    scripts.configure([str(a), str(b)], None)
    assert served_by(scripts.router, "ws://h/one") == "one"
    assert served_by(scripts.router, "ws://h/two") == "two"


def test_reload_on_change(tmp_path: Path, scripts: RouteScripts) -> None:
    a = write(tmp_path / "a.py", "route_web_socket('**/x', lambda ws: 'v1')\n")
    scripts.configure([str(a)], None)
    scripts.poll()  # unchanged: nothing happens
    assert served_by(scripts.router, "ws://h/x") == "v1"
    write(a, "route_web_socket('**/x', lambda ws: 'v2')\n", bump=5)
    scripts.poll()
    assert served_by(scripts.router, "ws://h/x") == "v2"


def test_failed_reload_keeps_previous_version(
    tmp_path: Path, scripts: RouteScripts, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(tmp_path / "a.py", "route_web_socket('**/x', lambda ws: 'v1')\n")
    scripts.configure([str(a)], None)
    write(a, "route_web_socket('**/x', lambda ws: 'v2')\nraise KeyError('oops')\n", bump=5)
    scripts.poll()
    assert served_by(scripts.router, "ws://h/x") == "v1"
    assert "failed to load (previous version stays active)" in caplog.text
    assert re.search(r'a\.py", line 3, in <module>', caplog.text)  # the user's frame
    assert "importlib" not in caplog.text  # ... and not the loader's


@pytest.mark.parametrize("raised", ["SystemExit(3)", "GeneratorExit()", "BaseException('x')"])
def test_a_script_exiting_at_import_is_logged_like_an_exception(
    tmp_path: Path, scripts: RouteScripts, caplog: pytest.LogCaptureFixture, raised: str
) -> None:
    exits = write(
        tmp_path / "exits.py", f"route_web_socket('**/y', lambda ws: 'y')\nraise {raised}\n"
    )
    good = write(tmp_path / "good.py", "route_web_socket('**/x', lambda ws: 'good')\n")
    scripts.configure([str(exits), str(good)], None)  # returns: user code stops no proxy
    assert served_by(scripts.router, "ws://h/x") == "good"
    assert served_by(scripts.router, "ws://h/y") is None and str(exits) not in scripts.router
    assert "exits.py failed to load (no routes)" in caplog.text
    assert re.search(r'exits\.py", line 3, in <module>', caplog.text)  # the user's frame
    assert raised.split("(")[0] in caplog.text


def test_a_reload_that_exits_keeps_the_previous_version(
    tmp_path: Path, scripts: RouteScripts, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(tmp_path / "a.py", "route_web_socket('**/x', lambda ws: 'v1')\n")
    scripts.configure([str(a)], None)
    write(a, "route_web_socket('**/x', lambda ws: 'v2')\nraise SystemExit(3)\n", bump=5)
    scripts.poll()
    assert served_by(scripts.router, "ws://h/x") == "v1"
    assert "failed to load (previous version stays active)" in caplog.text
    assert "SystemExit: 3" in caplog.text


def test_keyboard_interrupt_at_import_is_not_swallowed(
    tmp_path: Path, scripts: RouteScripts
) -> None:
    a = write(tmp_path / "a.py", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        scripts.configure([str(a)], None)


def test_syntax_error_and_invalid_glob_are_logged(
    tmp_path: Path, scripts: RouteScripts, caplog: pytest.LogCaptureFixture
) -> None:
    bad = write(tmp_path / "bad.py", "def broken(:\n")
    glob = write(tmp_path / "glob.py", "route_web_socket('**/{a,{b}}', lambda ws: 1)\n")
    good = write(tmp_path / "good.py", "route_web_socket('**/x', lambda ws: 'good')\n")
    scripts.configure([str(bad), str(glob), str(good)], None)
    assert served_by(scripts.router, "ws://h/x") == "good"  # a broken script stops no other
    assert "SyntaxError" in caplog.text
    assert "ValueError" in caplog.text and "glob.py" in caplog.text


def test_deleted_script_keeps_routes(
    tmp_path: Path, scripts: RouteScripts, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(tmp_path / "a.py", "route_web_socket('**/x', lambda ws: 'v1')\n")
    scripts.configure([str(a)], None)
    a.unlink()
    scripts.poll()
    scripts.poll()
    assert caplog.text.count("is gone") == 1
    assert served_by(scripts.router, "ws://h/x") == "v1"
    write(a, "route_web_socket('**/x', lambda ws: 'back')\n")
    scripts.poll()
    assert served_by(scripts.router, "ws://h/x") == "back"


def test_missing_script_is_a_configuration_error(tmp_path: Path, scripts: RouteScripts) -> None:
    with pytest.raises(ValueError, match="no such route script"):
        scripts.configure([str(tmp_path / "nope.py")], None)


def test_base_url_resolves_relative_globs_and_reloads(
    tmp_path: Path, scripts: RouteScripts
) -> None:
    a = write(tmp_path / "a.py", "route_web_socket('/ws', lambda ws: 'rel')\n")
    scripts.configure([str(a)], None)
    assert served_by(scripts.router, "ws://h/ws") is None
    scripts.configure([str(a)], "http://h")
    assert served_by(scripts.router, "ws://h/ws") == "rel"


def test_predicate_that_raises_is_logged_not_matched(
    tmp_path: Path, scripts: RouteScripts, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(
        tmp_path / "a.py",
        "route_web_socket(lambda url: 'x' in url, lambda ws: 'fallback')\n"
        "route_web_socket(lambda url: 1 / 0, lambda ws: 'never')\n",
    )
    scripts.configure([str(a)], None)
    assert served_by(scripts.router, "ws://h/x") == "fallback"
    assert "ZeroDivisionError" in caplog.text


def test_route_web_socket_outside_a_script_says_how() -> None:
    with pytest.raises(RuntimeError, match="wsroute_scripts"):
        route_web_socket("**", lambda ws: None)
