"""Data Docs open offline: a real GX site built through our checkpoint, with no CDN left in it.

The quick tests read the built files; the slow one renders the pages in headless Chromium with
every host name unresolvable, and finds the rows bootstrap-table draws (so its JS ran offline).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR, Settings
from ml.data.quality.docs_offline import ASSETS_DIR, VENDOR_DIR, cdn_assets, make_data_docs_offline
from ml.data.quality.gx import MARTS_RESULT_FORMAT, data_docs_index, gx_context, run_checkpoint

GX_TEMPLATES = Path(gx.__file__).parent / "render" / "view" / "templates"
# A tag that makes the browser fetch something, and what it fetches.
FETCHING = re.compile(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']")
CSS_URL = re.compile(r"url\(\s*[\"']?([^\"')]+)")
# Two suites: a dotted name puts its pages one folder deeper (GX splits suite names on dots).
SUITES = {"offline_check": "plain", "marts.offline_check": "dotted"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Data Docs site with one validation per suite, each with a failing expectation."""
    settings = Settings(
        work_dir=tmp_path_factory.mktemp("docs") / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        pii_salt="test-salt",  # type: ignore[arg-type]
    )
    context = gx_context(settings)
    frame = pd.DataFrame({"item_id": ["A1", "A2", "A3", None], "price": [1.5, 2.0, -3.0, 4.0]})
    for name, asset in SUITES.items():
        suite = gx.ExpectationSuite(
            name=name,
            expectations=[
                gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
                gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0),
                gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            ],
        )
        run_checkpoint(
            context,
            name=name,
            asset=asset,
            suite=suite,
            frame=frame,
            run_id="run-1",
            result_format=MARTS_RESULT_FORMAT,
        )
    index = data_docs_index(context)
    assert index is not None
    return index.parent


def pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def validation_pages(site: Path) -> list[Path]:
    return sorted((site / "validations").rglob("*.html"))


def test_the_site_has_pages_at_every_depth(site):
    depths = {len(p.relative_to(site).parts) for p in pages(site)}
    # index.html; expectations/<suite>.html and expectations/marts/<suite>.html;
    # validations/<suite parts>/<run>/<time>/<batch>.html at 5 and 6 parts.
    assert depths == {1, 2, 3, 5, 6}


def test_no_page_fetches_anything_from_the_internet(site):
    styles = sorted((site / "static" / "styles").glob("*.css"))
    for page in [*pages(site), *styles]:
        text = page.read_text()
        fetched = FETCHING.findall(text) + CSS_URL.findall(text)
        remote = [url for url in fetched if re.match(r"(?:https?:)?//", url)]
        assert remote == [], page.relative_to(site)
        for cdn in cdn_assets():
            assert cdn not in text, (page.relative_to(site), cdn)
        # SRI + CORS mode would make Chromium refuse a file:// script.
        assert "integrity=" not in text and "crossorigin=" not in text


def test_every_local_asset_a_page_names_exists(site):
    checked = set()
    for page in pages(site):
        for url in FETCHING.findall(page.read_text()):
            if url.startswith(("#", "mailto:", "https://", "http://")):
                continue
            target = (page.parent / url.split("?")[0]).resolve()
            assert target.is_file(), (page.relative_to(site), url)
            checked.add(target.relative_to(site.resolve()).as_posix())
    vendored = {f"{VENDOR_DIR}/{local}" for local in cdn_assets().values()}
    assert vendored <= checked  # every vendored script and stylesheet is in use
    assert "static/images/logo-long.png" in checked


def test_fonts_and_images_the_vendored_css_names_exist(site):
    manifest = json.loads((ASSETS_DIR / "manifest.json").read_text())
    omitted = {f"{p['dir']}/{f}" for p in manifest["packages"] for f in p.get("omitted", [])}
    vendor = site / VENDOR_DIR
    for css in vendor.rglob("*.css"):
        for url in CSS_URL.findall(css.read_text()):
            if url.startswith("data:"):
                continue
            target = (css.parent / url.split("?")[0].split("#")[0]).resolve()
            name = target.relative_to(vendor.resolve()).as_posix()
            assert target.is_file() or name in omitted, (css.relative_to(site), url)


def test_rebuilding_is_idempotent(site):
    before = {p: p.read_bytes() for p in pages(site)}
    assert make_data_docs_offline(site) == 0
    assert {p: p.read_bytes() for p in pages(site)} == before


def test_the_manifest_covers_every_cdn_url_in_gx_templates_and_every_vendored_file():
    in_templates = {
        url
        for template in GX_TEMPLATES.glob("*.j2")
        for url in FETCHING.findall(template.read_text())
        if url.startswith("https://") and "{{" not in url
    }
    assert in_templates == set(cdn_assets())
    manifest = json.loads((ASSETS_DIR / "manifest.json").read_text())
    listed = {f"{p['dir']}/{f}" for p in manifest["packages"] for f in p["files"]}
    on_disk = {
        p.relative_to(ASSETS_DIR).as_posix()
        for p in ASSETS_DIR.rglob("*")
        if p.is_file() and p.name not in {"README.md", "manifest.json"}
    }
    assert listed == on_disk
    assert sum((ASSETS_DIR / f).stat().st_size for f in on_disk) < 3 * 1024 * 1024


def test_vendored_files_are_the_bytes_gx_pins_by_hash():
    pinned = re.findall(
        r'src="([^"]+)" integrity="sha384-([^"]+)"', (GX_TEMPLATES / "js_script_imports.j2").read_text()
    )
    assert len(pinned) == 2  # popper and bootstrap's JS
    for url, digest in pinned:
        data = (ASSETS_DIR / cdn_assets()[url]).read_bytes()
        assert base64.b64encode(hashlib.sha384(data).digest()).decode() == digest


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


def _render(page: Path, *extra: str) -> str:
    browser = _chromium()
    assert browser
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            # Offline: no host name resolves, so any CDN request left would fail.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=5000",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None, reason="no chromium binary (make test-slow installs Debian's chromium)"
)
def test_pages_render_offline_in_headless_chromium(site):
    for page in validation_pages(site):
        dom = _render(page, "--dump-dom")
        # bootstrap-table wraps each table it takes over and numbers the rows it draws.
        assert 'class="bootstrap-table' in dom, page.relative_to(site)
        rows = re.findall(r'<tr[^>]*data-index="\d+"', dom)
        assert len(rows) >= 3, page.relative_to(site)
        for column in ("item_id", "price"):
            assert column in dom
    # The index lists the runs in a table bootstrap-table fills from JS data: no JS, no links.
    index = _render(site / "index.html", "--dump-dom")
    for page in validation_pages(site):
        assert page.relative_to(site).as_posix() in index
