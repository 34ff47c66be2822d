"""Route scripts: import them, collect their routes, reload them when they change.

A route script is a plain Python file that calls `route_web_socket()` at import. Each script
is imported as its own module (two scripts with the same file name in different folders do not
collide) and owns one group in the `Router`. A script that fails to import is logged with the
user's traceback and leaves the routes of its previous version active; so does one that raises
`SystemExit` (or any exception but `KeyboardInterrupt`) at import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import traceback
from dataclasses import dataclass

from .router import Router

__all__ = ["RouteScripts", "user_traceback"]

logger = logging.getLogger(__name__)


def user_traceback(exc: BaseException, cut_at: str) -> str:
    """The traceback of `exc` from the frame after `cut_at` on: the user's frames only."""
    tb = exc.__traceback__
    frames = traceback.extract_tb(tb)
    for i, frame in enumerate(frames):
        if frame.name == cut_at:
            for _ in range(i + 1):
                tb = tb.tb_next if tb is not None else None
            break
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


@dataclass(slots=True)
class _Script:
    path: str
    mtime: float | None = None


class RouteScripts:
    """The scripts of ``wsroute_scripts``, kept in sync with a `Router`."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.base_url: str | None = None
        #: The ``wsroute_record_mode`` option, for the scripts' `route_from_har` calls.
        self.record_mode: str | None = None
        #: How load failures are logged. mitmdump exits on any error logged at start-up, and a
        #: broken script must not stop the others, so the addon raises this once it runs.
        self.failure_level = logging.WARNING
        self._scripts: dict[str, _Script] = {}

    def configure(
        self, paths: list[str], base_url: str | None, record_mode: str | None = None
    ) -> None:
        """Load the given scripts (a later one wins). Unchanged scripts are not re-imported,
        unless the base URL changed, which changes what their relative globs mean, or the
        record mode, which changes what their `route_from_har` calls do.

        Raises:
            ValueError: a path is not a file.
        """
        full = [os.path.abspath(os.path.expanduser(p.strip("'\" "))) for p in paths]
        for path in full:
            if not os.path.isfile(path):
                raise ValueError(f"no such route script: {path}")
        reload_all = base_url != self.base_url or record_mode != self.record_mode
        self.base_url, self.record_mode = base_url, record_mode
        self.router.set_order(full)
        self._scripts = {p: self._scripts.get(p) or _Script(p) for p in full}
        for script in self._scripts.values():
            if reload_all or script.mtime is None:
                self._load(script)

    def poll(self) -> None:
        """Reload the scripts whose file changed since they were loaded."""
        for script in self._scripts.values():
            try:
                mtime = os.stat(script.path).st_mtime
            except OSError:
                if script.mtime is not None:
                    logger.error(
                        f"route script {script.path} is gone; its routes stay active "
                        "until it comes back or wsroute_scripts changes"
                    )
                    script.mtime = None
                continue
            if mtime != script.mtime:
                self._load(script)

    def _load(self, script: _Script) -> None:
        try:
            script.mtime = os.stat(script.path).st_mtime
        except OSError as e:
            logger.error(f"cannot read route script {script.path}: {e}")
            return
        try:
            with Router.collect(self.base_url, self.record_mode) as routes:
                _import(script.path)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit too: a script never stops the proxy
            what = "previous version stays active" if script.path in self.router else "no routes"
            logger.log(
                self.failure_level,
                f"route script {script.path} failed to load ({what}):\n"
                + user_traceback(e, "_call_with_frames_removed"),
            )
            return
        self.router.replace(script.path, routes)
        logger.info(f"loaded {len(routes)} WebSocket route(s) from {script.path}")


def _import(path: str) -> None:
    """Execute the script as a fresh module, its folder first on ``sys.path`` (like ``-s``)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    name = f"__wsroute_script__.{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    old_path = sys.path[:]
    sys.path.insert(0, os.path.dirname(path))
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path[:] = old_path
