"""Data Docs that open offline: GX's CDN assets vendored into the site, the pages pointed at them.

GX 1.24's Data Docs pages load Bootstrap, bootstrap-table, jQuery, popper, Font Awesome, vega and
more from CDNs (unpkg, jsDelivr, cdnjs, maxcdn, code.jquery.com) and their logo from an S3 bucket.
On a machine without internet (the embedded default's whole point) a page renders unstyled and
the tables bootstrap-table draws stay empty. No library fixes this: GX has no setting for where
its assets come from, and its ``custom_views_directory`` would mean forking five of its templates
and following every GX upgrade by hand. So after each docs build this module copies the vendored
files (``docs_assets/``; packages, versions and licenses in its ``manifest.json`` and README) into
the site's ``static/vendor/`` and rewrites the CDN URLs of every page into paths relative to that
page (and corrects GX's own relative paths to ``static/``, which it gets wrong on validation
pages). A URL the manifest does not know is left alone (the tests fail on it, e.g. after a GX
upgrade, rather than this code guessing).

Idempotent and cheap, because the docs are rebuilt on every validation: assets already copied are
skipped, and a page that no longer names a CDN is not written again (a rewritten page has none).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from functools import cache
from pathlib import Path

ASSETS_DIR = Path(__file__).with_name("docs_assets")
VENDOR_DIR = "static/vendor"  # where the assets go, relative to the site root
_NOT_ASSETS = {"README.md", "manifest.json"}

# GX's own pictures: its site already holds static/images/logo-long.png; it ships no dark logo, so
# the dark colour scheme gets the light one rather than a request that fails.
_GX_IMAGES_HOST = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
_GX_IMAGES = {"logo-long.png": "logo-long.png", "full_logo_dark.png": "logo-long.png"}

# GX's own static files, wherever a page names them: GX counts the folders up to the site root
# wrongly on validation pages (their favicon points one level short); the depth is known here.
_SITE_STATIC = re.compile(r"""(?<=["'(])(?:\./|(?:\.\./)+)?static/(?=images/|styles/|fonts/)""")

# Subresource Integrity and CORS mode on a file:// page make Chromium refuse the local script
# (a file URL has an opaque origin); the files are the CDN's bytes (tests compare the hashes).
_SRI_ATTRIBUTES = re.compile(r"""\s+(?:integrity|crossorigin)=(?:"[^"]*"|'[^']*')""")
_VENDORED_TAG = re.compile(r"<(?:script|link)\b[^>]*" + re.escape(VENDOR_DIR) + r"/[^>]*>")


@cache
def cdn_assets() -> dict[str, str]:
    """Each CDN URL GX's templates use -> its vendored file, relative to ``docs_assets/``."""
    manifest = json.loads((ASSETS_DIR / "manifest.json").read_text())
    return {
        url: f"{package['dir']}/{local}"
        for package in manifest["packages"]
        for url, local in package["urls"].items()
    }


@cache
def _hosts() -> tuple[str, ...]:
    """The hosts the pages fetch from: a page that names none of them needs no rewrite."""
    return tuple(
        sorted({url[: url.index("/", len("https://")) + 1] for url in cdn_assets()} | {_GX_IMAGES_HOST})
    )


@cache
def _url_pattern() -> re.Pattern[str]:
    # Longest first, and each must end where the attribute does: vega@5 is not vega@5.1's prefix.
    cdn = "|".join(re.escape(url) for url in sorted(cdn_assets(), key=len, reverse=True))
    images = re.escape(_GX_IMAGES_HOST) + r"(?P<image>[\w.-]+)(?:\?[^\"')\s]*)?"
    return re.compile(rf"(?P<cdn>{cdn})(?=[\"'])|{images}")


def rewrite(text: str, to_root: str) -> str:
    """``text`` (a page or stylesheet) with known CDN URLs pointing at the site's local copies.

    Args:
        text: the HTML or CSS.
        to_root: the relative path from the file's folder to the site root ("" or "../../" etc.).
    """
    assets = cdn_assets()

    def local(match: re.Match[str]) -> str:
        if match["cdn"]:
            return f"{to_root}{VENDOR_DIR}/{assets[match['cdn']]}"
        image = _GX_IMAGES.get(match["image"])
        return f"{to_root}static/images/{image}" if image else match[0]

    text = _url_pattern().sub(local, text)
    text = _SITE_STATIC.sub(f"{to_root}static/", text)
    return _VENDORED_TAG.sub(lambda tag: _SRI_ATTRIBUTES.sub("", tag[0]), text)


def copy_assets(site_dir: Path) -> int:
    """Copy the vendored files into ``<site_dir>/static/vendor/``; returns how many were copied."""
    copied = 0
    for source in ASSETS_DIR.rglob("*"):
        if not source.is_file() or source.name in _NOT_ASSETS:
            continue
        target = site_dir / VENDOR_DIR / source.relative_to(ASSETS_DIR)
        have, want = (target.stat() if target.exists() else None), source.stat()
        if have and (have.st_size, have.st_mtime_ns) == (want.st_size, want.st_mtime_ns):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)  # keeps the mtime, which the check above compares
        copied += 1
    return copied


def make_data_docs_offline(site_dir: Path) -> int:
    """Vendor the assets into a built Data Docs site and point its pages at them.

    Args:
        site_dir: the site root (the folder of its ``index.html``).

    Returns:
        How many pages were rewritten (0 when the site was already offline).
    """
    copy_assets(site_dir)
    rewritten = 0
    pages = [*site_dir.rglob("*.html"), *(site_dir / "static" / "styles").glob("*.css")]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if not any(host in text for host in _hosts()):  # GX writes every page with them
            continue
        depth = len(page.relative_to(site_dir).parts) - 1
        new = rewrite(text, "../" * depth)
        if new == text:
            continue
        # Replace in one step: a browser (or a concurrent build) never reads half a page.
        partial = page.with_name(f".{page.name}.{os.getpid()}.tmp")
        partial.write_text(new, encoding="utf-8")
        partial.replace(page)
        rewritten += 1
    return rewritten
