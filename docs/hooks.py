"""MkDocs hook: links from the guide to the project's own files (examples, tests, bench).

MkDocs checks links between pages, but a link such as ``../examples/mock_chat.py`` leaves the
docs folder and would be reported as not found (a failure under ``--strict``). This hook checks
that such a file exists in the checkout (a missing one is a warning, so ``--strict`` fails), and
points the link at it: at ``repo_url``'s ``blob/main/`` when the configuration has a
``repo_url``, else at the file in the checkout the site was built from.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.wsroute")

_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
_SCHEME = "wsroute-repo:"


def _repo_root(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace links that leave the docs folder with a placeholder that MkDocs leaves alone."""
    docs = Path(config["docs_dir"]).resolve()
    root = _repo_root(config)
    source = Path(page.file.abs_src_path).resolve().parent

    def rewrite(m: re.Match[str]) -> str:
        target = m.group("target")
        if ":" in target or target.startswith("/"):
            return m.group(0)  # a URL, or an absolute link MkDocs itself reports
        path = (source / target).resolve()
        if path.is_relative_to(docs):
            return m.group(0)  # a page or a file of the guide: MkDocs checks it
        if not path.is_relative_to(root) or not path.exists():
            log.warning(
                "Doc file '%s' links to '%s', which is not in the project",
                page.file.src_uri,
                target,
            )
            return m.group(0)
        relative = path.relative_to(root).as_posix()
        return f"]({_SCHEME}{relative}{m.group('anchor') or ''})"

    return _LINK.sub(rewrite, markdown)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Turn the placeholders into links to the project's files."""
    repo_url = config.get("repo_url")
    if repo_url:
        base = repo_url.rstrip("/") + "/blob/main/"
    else:
        page_dir = Path(config["site_dir"]).resolve() / os.path.dirname(page.file.dest_uri)
        base = os.path.relpath(_repo_root(config), page_dir).replace(os.sep, "/") + "/"
    return html.replace(f'href="{_SCHEME}', f'href="{base}')
