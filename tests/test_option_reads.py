# mypy: disallow-untyped-calls=False
# (mitmproxy's option classes are not annotated)
"""The cheaper option reads proposed to mitmproxy (upstream/option-reads/optmanager.patch).

The patch is applied with ``patch`` to a copy of the installed ``mitmproxy/optmanager.py``, and
the tests call that module's `_Option.current` on mitmproxy's own options: it must return what
the installed one returns (an equal value of the same type, a copy wherever a caller could
change it in place), and copy nothing where there is nothing to protect.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import pytest
from mitmproxy import options, optmanager
from mitmproxy.tools.dump import DumpMaster

from mitm_wsroute.addon import WsRoute
from tests.upstream_patch import patched_spec

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(optmanager.__file__).resolve()

Current = Callable[[optmanager._Option], Any]


def _load_patched(directory: Path) -> ModuleType:
    """mitmproxy/optmanager.py with the patch applied, as a module of its own."""
    spec = patched_spec(directory, "option-reads", INSTALLED, "patched_optmanager")
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    module.unset = optmanager.unset  # its `current` then reads mitmproxy's own options
    return module


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _load_patched(tmp_path_factory.mktemp("patched"))


@pytest.fixture
def current(patched: ModuleType) -> Current:
    return patched._Option.current  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def mitmdump_options() -> Iterator[options.Options]:
    """Every option of mitmdump with this project's addon loaded."""
    loop = asyncio.new_event_loop()
    try:
        master = DumpMaster(options.Options(), loop=loop, with_termlog=False)
        master.addons.add(WsRoute())
        yield master.options
    finally:
        loop.close()


def _options(opts: options.Options) -> list[optmanager._Option]:
    return list(opts._options.values())


def test_every_option_of_mitmdump_reads_the_same(
    mitmdump_options: options.Options, current: Current
) -> None:
    read = _options(mitmdump_options)
    assert len(read) > 100
    for option in read:
        stock = option.current()
        assert current(option) == stock and type(current(option)) is type(stock), option.name


def test_set_values_read_the_same(current: Current) -> None:
    for typespec, value in [
        (int, 7),
        (bool, True),
        (str, "x"),
        (float, 0.5),
        (bytes, b"x"),
        (Optional[str], None),  # noqa: UP045  (options are typed so)
        (Sequence[str], ("a", "b")),
        (Sequence[str], ["a", "b"]),
    ]:
        option = optmanager._Option("o", typespec, value, "", None)
        for state in ("unset", "set"):
            if state == "set":
                option.set(copy.deepcopy(value))
            assert current(option) == option.current() == value, (typespec, state)


@pytest.mark.parametrize("state", ["unset", "set"])
def test_a_mutable_value_is_still_a_copy(current: Current, state: str) -> None:
    option = optmanager._Option("hosts", Sequence[str], ["a"], "", None)
    if state == "set":
        option.set(["b"])
    got = current(option)
    got.append("changed")
    assert "changed" not in current(option)
    assert "changed" not in option.current()


def test_an_immutable_value_is_not_copied(
    patched: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[object] = []
    original = copy.deepcopy

    def deepcopy(value: object, memo: object = None) -> object:
        copies.append(value)
        return original(value)

    monkeypatch.setattr(patched.copy, "deepcopy", deepcopy)
    option = optmanager._Option("detail", int, 1, "", None)
    assert patched._Option.current(option) == 1
    option.set(3)
    assert patched._Option.current(option) == 3
    assert copies == []
    patched._Option.current(optmanager._Option("hosts", Sequence[str], [], "", None))
    assert copies == [[]]


def test_a_subclass_of_an_immutable_type_still_copies_itself(current: Current) -> None:
    class Named(str):
        def __deepcopy__(self, memo: object) -> Named:
            return Named("copied")

    option = optmanager._Option("name", str, "", "", None)
    option.set(Named("mine"))
    assert current(option) == option.current() == "copied"


def test_the_overlay_runs_the_proposed_code(tmp_path: Path) -> None:
    """What `bench/instructions.py --upstream NAME` measures: mitmproxy with the patches
    applied, the installed package left as it was."""
    made = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "upstream_patches.py"), str(tmp_path / "o"),
         "option-reads", "hook-dispatch-cache"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    path = made.stdout.strip().removeprefix("PYTHONPATH=")
    probe = (
        "import mitmproxy.optmanager as o, mitmproxy.addonmanager as a, mitmproxy.http as h;"
        "print(o.__file__, hasattr(o, '_IMMUTABLE'), hasattr(a, '_HookWalk'), h.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[0] == str(tmp_path / "o" / "mitmproxy" / "optmanager.py")
    assert out[1:3] == ["True", "True"]
    assert Path(out[3]).resolve() == INSTALLED.parent / "http.py"
    assert not hasattr(optmanager, "_IMMUTABLE")  # the installed one is untouched
