"""The proposals to mitmproxy in upstream/, applied for their tests."""

from __future__ import annotations

import importlib.util
import subprocess
from importlib.machinery import ModuleSpec
from pathlib import Path

UPSTREAM = Path(__file__).resolve().parent.parent / "upstream"


def patched_spec(directory: Path, proposal: str, installed: Path, name: str) -> ModuleSpec:
    """The spec of module `name`: mitmproxy's file `installed` (of its package's top level),
    copied to `directory` and patched there by the proposal's ``upstream/PROPOSAL/*.patch``
    with ``patch -p1``, as a user would apply it. The installed file is left alone."""
    target = directory / "mitmproxy" / installed.name
    target.parent.mkdir(parents=True)
    target.write_bytes(installed.read_bytes())
    for patch in sorted((UPSTREAM / proposal).glob("*.patch")):
        subprocess.run(
            ["patch", "-p1", "--batch", "--quiet", "-i", str(patch)], cwd=directory, check=True
        )
    spec = importlib.util.spec_from_file_location(name, target)
    assert spec is not None and spec.loader is not None
    return spec
