"""The package as a user installs it: a wheel in a fresh venv, with no checkout on sys.path.

The venv borrows the test venv's third-party packages (mitmproxy, websockets, pytest) through a
``.pth`` line, so that only mitm_wsroute itself comes from the wheel; the checkout's own
editable install is not visible there (``.pth`` files of an added folder are not read).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.test_cli import ROUTES, start

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), str(ROOT)],
        check=True,
        cwd=tmp,
    )
    (wheel,) = tmp.glob("mitm_wsroute-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        check=True,
    )  # fmt: skip
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run_in(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_the_package_comes_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    out = run_in(venv, tmp_path, "-c", "import mitm_wsroute; print(mitm_wsroute.__file__)")
    assert out.stdout.startswith(str(venv)), out.stdout + out.stderr


def test_cli_and_mitmdump_with_the_installed_addon(venv: Path, tmp_path: Path) -> None:
    routes = tmp_path / "routes.py"
    routes.write_text(textwrap.dedent(ROUTES))
    addon = subprocess.run(
        [str(venv / "bin" / "mitm-wsroute"), "--addon-path"], capture_output=True, text=True
    ).stdout.strip()
    assert addon.startswith(str(venv)) and Path(addon).is_file()
    mitmdump = "from mitmproxy.tools.main import mitmdump; mitmdump()"
    listen = ["-p", "0", "--listen-host", "127.0.0.1"]
    for command in (
        [str(venv / "bin" / "mitm-wsroute"), str(routes), *listen,
         "--", "--set", f"confdir={tmp_path}"],
        [str(venv / "bin" / "python"), "-c", mitmdump, "-s", addon,
         "--set", f"wsroute_scripts={routes}", *listen, "--set", f"confdir={tmp_path}"],
    ):  # fmt: skip
        proc, url = start(*command)
        try:
            with connect("ws://nowhere.invalid/hello", proxy=url) as c:
                assert c.recv(5) == "hello from the CLI"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def test_pytest_fixture_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import mitm_wsroute
            from websockets.sync.client import connect

            def test_it(wsroute):
                assert "venv" in mitm_wsroute.__file__
                wsroute.route_web_socket("**/x", lambda ws: ws.send("from the wheel"))
                with connect("ws://a.invalid/x", proxy=wsroute.url) as c:
                    assert c.recv(5) == "from the wheel"
            """
        )
    )
    out = run_in(venv, tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py")
    assert "1 passed" in out.stdout, out.stdout + out.stderr


def test_the_wheel_carries_its_licenses(venv: Path, tmp_path: Path) -> None:
    out = run_in(
        venv,
        tmp_path,
        "-c",
        "from importlib.metadata import files, metadata\n"
        "print(metadata('mitm-wsroute')['License-Expression'])\n"
        "print(sorted(f.name for f in files('mitm-wsroute') if 'licenses' in str(f)))",
    )
    assert out.stdout.splitlines() == [
        "MIT AND Apache-2.0",  # Apache-2.0: the vendored URL parser, named in NOTICE
        "['Apache-2.0.txt', 'LICENSE', 'NOTICE']",
    ], out.stderr
