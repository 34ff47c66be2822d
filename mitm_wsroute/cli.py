"""The `mitm-wsroute` command: mitmdump (or mitmweb) with the addon and the given route scripts.

    mitm-wsroute [SCRIPT ...] [-p PORT] [--listen-host H] [--mode MODE] [--web]
                 [--har FILE [--har-url GLOB] [--har-update]] [--console [HOST:PORT]]
                 [-- any mitmdump/mitmweb argument]
    mitm-wsroute --addon-path

Unlike mitmdump, it listens on 127.0.0.1 only, unless ``--listen-host`` (or a ``listen_host``
passed on after ``--``) says otherwise. Only argument parsing lives here; mitmproxy's own runner
does the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import ctx, master, options
from mitmproxy.addons import errorcheck

from .addon import WsRoute
from .cassettes import RECORD_MODES

__all__ = ["Announce", "main"]

HERE = Path(__file__).resolve().parent
#: The addon as a script for ``mitmdump -s`` (printed by ``--addon-path``).
ADDON_PATH = HERE / "wsroute_addon.py"
#: Where the command listens unless told otherwise: this machine only, not its network.
DEFAULT_LISTEN_HOST = "127.0.0.1"
#: Where ``--console`` serves the live console unless told otherwise.
DEFAULT_CONSOLE = "127.0.0.1:8082"


class Announce:
    """Says, once the proxy listens, where it is and which CA clients must trust."""

    def running(self) -> None:
        addrs = ctx.master.addons.get("proxyserver").listen_addrs()
        ca = Path(os.path.expanduser(ctx.options.confdir)) / "mitmproxy-ca-cert.pem"
        for host, port, *_ in addrs:
            if host in ("", "0.0.0.0", "::"):
                host = "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            # The command's own output, for the user (not a log line).
            print(f"mitm-wsroute: proxy at http://{host}:{port}, CA certificate {ca}", flush=True)
        console = ctx.master.addons.get("wsroute_console")
        if console is not None and console.url is not None:
            print(f"mitm-wsroute: console at {console.url}", flush=True)


class _StartupErrors(errorcheck.ErrorCheck):
    """mitmproxy's start-up check, saying each error in one line of stderr (not "Error logged
    during startup, exiting..."), e.g. a port in use."""

    name = "errorcheck"  # where mitmproxy's master looks for it

    async def shutdown_if_errored(self) -> None:
        await asyncio.sleep(0)  # let the log handlers run first, as mitmproxy's check does
        if self.logger.has_errored:
            for record in self.logger.has_errored:
                line = record.getMessage().strip().splitlines()[0]
                print(f"mitm-wsroute: error: {line}", file=sys.stderr)
            sys.exit(1)


def _master(base: type[master.Master]) -> Any:
    """`base` (mitmproxy's DumpMaster or WebMaster) with the addon added as an addon, not a
    script, so that a bad option is reported as one line by mitmproxy's runner."""

    class Master(base):  # type: ignore[valid-type,misc]
        def __init__(self, opts: options.Options, **kwargs: Any) -> None:
            super().__init__(opts, **kwargs)
            check = self.addons.get("errorcheck")
            check.logger.uninstall()
            self.addons.remove(check)
            self.addons.add(WsRoute(), Announce(), _StartupErrors())

    return Master


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mitm-wsroute",
        description="Run mitmdump (or mitmweb) with mitm_wsroute and the given route scripts. "
        "Arguments after -- go to mitmdump/mitmweb as they are.",
    )
    p.add_argument("scripts", nargs="*", metavar="SCRIPT", help="route script (a later one wins)")
    p.add_argument("-p", "--listen-port", type=int, metavar="PORT", help="proxy port (8080)")
    p.add_argument(
        "--listen-host",
        metavar="HOST",
        help=f"address to listen on ({DEFAULT_LISTEN_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument("--mode", action="append", help="mitmproxy's proxy mode (regular)")
    p.add_argument("--web", action="store_true", help="run mitmweb instead of mitmdump")
    p.add_argument("--har", metavar="FILE", help="replay WebSockets recorded in this HAR")
    p.add_argument("--har-url", metavar="GLOB", help="only sockets matching this URL glob")
    p.add_argument(
        "--har-update", action="store_true", help="record into --har instead of replaying"
    )
    p.add_argument(
        "--record-mode",
        choices=RECORD_MODES,
        help="record mode of every route_from_har (--har's and the route scripts'): none "
        "replays only, once records a missing file, new_episodes records what does not match, "
        "all records",
    )
    p.add_argument(
        "--console",
        nargs="?",
        const=DEFAULT_CONSOLE,
        metavar="HOST:PORT",
        help=f"serve the live console (watch, pause, edit, inject) at HOST:PORT "
        f"({DEFAULT_CONSOLE}); its URL, with its token, is printed",
    )
    p.add_argument(
        "--addon-path", action="store_true", help="print the path of the addon script and exit"
    )
    return p


def mitmproxy_args(ns: argparse.Namespace, rest: Sequence[str]) -> list[str]:
    """The mitmdump/mitmweb command line for parsed arguments `ns` plus `rest` (after ``--``)."""
    args = []
    for script in ns.scripts:
        args += ["--set", f"wsroute_scripts={os.path.abspath(script)}"]
    if ns.listen_port is not None:
        args += ["--listen-port", str(ns.listen_port)]
    if ns.listen_host is not None:
        args += ["--listen-host", ns.listen_host]
    elif not any(a.startswith("--listen-host") or "listen_host=" in a for a in rest):
        args += ["--listen-host", DEFAULT_LISTEN_HOST]  # mitmdump's own default is every address
    for mode in ns.mode or ():
        args += ["--mode", mode]
    if ns.har:
        args += ["--set", f"wsroute_har={os.path.abspath(ns.har)}"]
        if ns.har_url:
            args += ["--set", f"wsroute_har_url={ns.har_url}"]
        if ns.har_update:
            args += ["--set", "wsroute_har_update=true"]
    if ns.record_mode:
        args += ["--set", f"wsroute_record_mode={ns.record_mode}"]
    if ns.console:
        args += ["--set", f"wsroute_console={ns.console}"]
    return [*args, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, rest = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    ns = _parser().parse_args(own)
    if ns.addon_path:
        print(ADDON_PATH)
        return 0
    for script in ns.scripts:
        if not os.path.isfile(script):
            print(f"mitm-wsroute: error: no such route script: {script}", file=sys.stderr)
            return 2
    if (ns.har_url or ns.har_update) and not ns.har:
        print("mitm-wsroute: error: --har-url and --har-update need --har FILE", file=sys.stderr)
        return 2
    from mitmproxy.tools import cmdline, dump, web
    from mitmproxy.tools.main import run

    sys.argv[0] = "mitm-wsroute"  # mitmproxy's runner names the command in its errors
    if ns.web:
        run(_master(web.master.WebMaster), cmdline.mitmweb, mitmproxy_args(ns, rest))
    else:
        run(_master(dump.DumpMaster), cmdline.mitmdump, mitmproxy_args(ns, rest))
    return 0
