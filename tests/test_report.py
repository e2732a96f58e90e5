"""The HTML report: self-contained, escaped, formatted, and checked in a real headless Chromium at 1,400 px."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import vrprobe
from vrprobe.reporting.tables import p_value, params, r_interval, sig3

from cdp import Browser, chromium

WIDTH, HEIGHT = 1400, 1000  # a laptop's browser window

CHECK = """(() => {
  const vis = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
                      return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const table = document.querySelector('#study-table');
  return {table: !!table && vis(table), rows: table ? table.querySelectorAll('tr').length : 0,
          plots: [...document.querySelectorAll('img.plot')].map(i => ({name: i.dataset.plot,
                   loaded: i.complete && i.naturalWidth > 0, visible: vis(i)})),
          external: document.querySelectorAll('script[src], link[href], img:not([src^="data:"])').length,
          definitions: document.querySelectorAll('#definitions tr').length,
          manifest: !!document.querySelector('#manifest'),
          tableText: table ? table.innerText : '',
          scroll: {width: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
                   inner: window.innerWidth, innerHeight: window.innerHeight},
          overview: [...document.querySelectorAll('img.plot[data-plot^="overview"]')].map(i => {
                      const r = i.getBoundingClientRect();
                      return {loaded: i.complete && i.naturalWidth > 0, visible: vis(i), top: r.top,
                              bottom: r.bottom, width: r.width}; }),
          verdict: document.querySelectorAll('#verdict .headline dt').length,
          verdictFirst: !!table && !!document.querySelector('#verdict') &&
                        !!(document.querySelector('#verdict').compareDocumentPosition(table) &
                           Node.DOCUMENT_POSITION_FOLLOWING),
          sideBySide: [...document.querySelectorAll('section.model')].map(s =>
                        [...s.querySelectorAll('.col')].map(c => { const r = c.getBoundingClientRect();
                                                                  return [r.left, r.top]; }))};
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
        probe_limit=200,
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
    browser = Browser(WIDTH, HEIGHT)
    try:
        browser.viewport(WIDTH, HEIGHT)
        browser.open((study_dir / "report.html").resolve().as_uri())
        seen = browser.evaluate(CHECK)
        shot = Path(os.environ.get("VRPROBE_ARTIFACTS", study_dir)) / "report-screenshot.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.screenshot(shot)
        browser.screenshot(shot.with_name("report-first-screen.png"), full_page=False)
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
    # no horizontal scroll at 1,400 px: nothing wider than the page's visible width (scrollbar excluded)
    scroll = seen["scroll"]
    assert scroll["inner"] == WIDTH and scroll["width"] <= scroll["client"] <= scroll["inner"], scroll
    # the page answers first: the verdict, then the overview forest plot, visible on the first screen
    assert seen["verdict"] >= 3 and seen["verdictFirst"]
    (overview,) = seen["overview"]
    assert overview["loaded"] and overview["visible"], overview
    assert overview["top"] < scroll["innerHeight"] and overview["width"] > 0.6 * WIDTH, overview
    # formatted numbers: parameters as 1.47M, no raw counts or long decimals
    text = seen["tableText"]
    assert re.search(r"\b\d\.\d\dM\b", text) and not re.search(r"\d{5,}|\.\d{5,}", text), text
    assert re.search(r"[+-]0\.\d{3} \[[+-]\d\.\d\d, [+-]\d\.\d\d\]", text), text
    # each model's clean and shifted datasets side by side: same top, left to right
    assert len(seen["sideBySide"]) == 2
    for cols in seen["sideBySide"]:
        assert len(cols) == 2 and cols[0][1] == cols[1][1] and cols[0][0] < cols[1][0], cols


def test_number_formats():
    cases = {0.9479: "0.948", 0.5: "0.500", 0.029106: "0.0291", 1.98483: "1.98", 96: "96", 1468288.0: "1,468,288"}
    assert {x: sig3(x) for x in cases} == cases and sig3(None) == sig3(float("nan")) == "n/a"
    assert [params(n) for n in (1468288, 7.2e9, 350_000, 950)] == ["1.47M", "7.20B", "350k", "950"]
    assert [p_value(p) for p in (0.16291, 0.002, 0.0004, None)] == ["0.16", "0.002", "<0.001", "n/a"]
    assert r_interval({"r": 0.48171, "ci": [0.0078, 0.7803]}) == "+0.482 [+0.01, +0.78]"
    assert r_interval({"r": None, "ci": [None, None]}) == "n/a"


def test_report_template_ships_with_the_package():
    from importlib.resources import files

    assert (files("vrprobe.reporting") / "templates" / "report.html.j2").is_file()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"reporting/templates/*.j2"' in pyproject and '"jinja2' in pyproject
