"""The HTML report: self-contained, escaped, and checked in a real headless Chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import vrprobe

from cdp import Browser, chromium

CHECK = """(() => {
  const vis = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
                      return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const table = document.querySelector('#study-table');
  return {table: !!table && vis(table), rows: table ? table.querySelectorAll('tr').length : 0,
          plots: [...document.querySelectorAll('img.plot')].map(i => ({name: i.dataset.plot,
                   loaded: i.complete && i.naturalWidth > 0, visible: vis(i)})),
          external: document.querySelectorAll('script[src], link[href], img:not([src^="data:"])').length,
          definitions: document.querySelectorAll('#definitions tr').length,
          manifest: !!document.querySelector('#manifest')};
})()"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "study"
    vrprobe.study(
        ["zoo:llava", "zoo:paligemma"],
        ["easy-vqa:test", "easy-vqa:test?occlude=0.25"],
        out=out,
        limit=48,
        trace_limit=3,
    )
    return out


def test_report_is_self_contained_and_escaped(study_dir, tmp_path):
    html = (study_dir / "report.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count('class="plot"') >= 2 * 2 * 3  # per model × dataset: reliability, scatter, band
    # text coming from datasets and models is escaped
    run = vrprobe.eval("zoo:llava", "easy-vqa:test", out=tmp_path / "eval", limit=4)
    summary = run.out / "summary.json"
    summary.write_text(summary.read_text().replace('"easy-vqa:test"', '"<b onmouseover=alert(1)>evil</b>"'))
    page = Path(vrprobe.report(run.out)).read_text()
    assert "<b onmouseover" not in page and "&lt;b onmouseover=alert(1)&gt;evil&lt;/b&gt;" in page


@pytest.mark.slow
def test_report_in_headless_chromium(study_dir):
    assert chromium(), "chromium is missing: `make test` installs Debian's chromium package"
    browser = Browser()
    try:
        browser.open((study_dir / "report.html").resolve().as_uri())
        seen = browser.evaluate(CHECK)
        shot = Path(os.environ.get("VRPROBE_ARTIFACTS", study_dir)) / "report-screenshot.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.screenshot(shot)
        errors = browser.console_errors()
    finally:
        browser.close()
    assert seen["table"] and seen["rows"] == 1 + 4  # header + 2 models × 2 datasets
    names = [p["name"] for p in seen["plots"]]
    for kind in ("reliability", "scatter", "band", "trace"):
        assert any(n.startswith(kind) for n in names), kind
    assert all(p["loaded"] and p["visible"] for p in seen["plots"]), seen["plots"]
    assert seen["external"] == 0 and seen["definitions"] > 5 and seen["manifest"]
    assert errors == []
    assert shot.stat().st_size > 10_000 and re.match(rb"\x89PNG", shot.read_bytes()[:4])
