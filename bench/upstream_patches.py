"""mitmproxy with the hook-dispatch cache proposed in upstream/hook-dispatch-cache/, for measuring.

`overlay(directory)` makes ``directory/mitmproxy``: the installed mitmproxy package, every entry a
symbolic link to the installed one except ``addonmanager.py``, which is the installed file with
``upstream/hook-dispatch-cache/addonmanager.patch`` applied (by ``patch``, as a user would). With
`directory` first on ``PYTHONPATH``, ``mitmdump`` runs exactly the proposed `AddonManager`;
``python bench/instructions.py --cached-dispatch`` measures every case that way.

``python bench/cached_dispatch.py DIRECTORY`` makes the overlay and prints the ``PYTHONPATH``
to use.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mitmproxy

PATCH = (
    Path(__file__).resolve().parent.parent
    / "upstream"
    / "hook-dispatch-cache"
    / "addonmanager.patch"
)
INSTALLED = Path(mitmproxy.__file__).resolve().parent


def overlay(directory: str | Path) -> Path:
    """The installed mitmproxy with the patch applied, in `directory`; returns `directory`."""
    root = Path(directory)
    package = root / "mitmproxy"
    package.mkdir(parents=True)
    for entry in INSTALLED.iterdir():
        if entry.name not in ("addonmanager.py", "__pycache__"):
            (package / entry.name).symlink_to(entry)
    (package / "addonmanager.py").write_bytes((INSTALLED / "addonmanager.py").read_bytes())
    subprocess.run(
        ["patch", "-p1", "--forward", "--batch", "--quiet", "-i", str(PATCH)],
        cwd=root, check=True,
    )  # fmt: skip
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} DIRECTORY (a new one)")
    print(f"PYTHONPATH={overlay(sys.argv[1])}")
