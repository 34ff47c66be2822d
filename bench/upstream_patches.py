"""mitmproxy with changes proposed in upstream/ applied, for measuring.

`overlay(directory, names)` makes ``directory/mitmproxy``: the installed mitmproxy package, every
entry a symbolic link to the installed one except the files that the patches of
``upstream/NAME/*.patch`` change, which are copies of the installed files with the patches
applied (by ``patch -p1``, as a user would). With `directory` first on ``PYTHONPATH``,
``mitmdump`` runs exactly the proposed code; ``python bench/instructions.py --upstream NAME``
measures every case that way.

``python bench/upstream_patches.py DIRECTORY NAME...`` makes the overlay and prints the
``PYTHONPATH`` to use.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import mitmproxy

UPSTREAM = Path(__file__).resolve().parent.parent / "upstream"
INSTALLED = Path(mitmproxy.__file__).resolve().parent


def overlay(directory: str | Path, names: list[str]) -> Path:
    """The installed mitmproxy with the patches of `names` applied, in `directory` (a new
    one); returns `directory`."""
    root = Path(directory)
    patches = [patch for name in names for patch in sorted((UPSTREAM / name).glob("*.patch"))]
    if not patches:
        raise SystemExit(f"no patches in upstream/{{{','.join(names)}}}/")
    _mirror(root / "mitmproxy", INSTALLED)
    for patch in patches:
        for path in re.findall(r"^\+\+\+ b/mitmproxy/(\S+)", patch.read_text(), re.MULTILINE):
            _own_copy(root / "mitmproxy", Path(path))
        subprocess.run(
            ["patch", "-p1", "--forward", "--batch", "--quiet", "-i", str(patch)],
            cwd=root, check=True,
        )  # fmt: skip
    return root


def _mirror(target: Path, source: Path) -> None:
    """`target`, a directory of links to each entry of `source` (but its bytecode cache)."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "__pycache__":
            (target / entry.name).symlink_to(entry)


def _own_copy(package: Path, path: Path) -> None:
    """Make `package / path` a file of its own (a copy), and the directories on the way real
    ones, so that patching it leaves the installed package alone."""
    here = package
    for part in path.parts[:-1]:
        here = here / part
        if here.is_symlink():
            source = here.resolve()
            here.unlink()
            _mirror(here, source)
    file = here / path.name
    if file.is_symlink():
        source = file.resolve()
        file.unlink()
        shutil.copyfile(source, file)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(f"usage: {sys.argv[0]} DIRECTORY (a new one) NAME... (of upstream/)")
    print(f"PYTHONPATH={overlay(sys.argv[1], sys.argv[2:])}")
