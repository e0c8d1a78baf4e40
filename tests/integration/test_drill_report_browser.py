"""The drill report's HTML page as a real browser renders it (headless Chromium from Debian's packages, `make apt`).

A fleet run with nine earlier runs (tests/drill_sample.py) is written into a report folder with report.py's real
API, its page rendered by html.render from the report and the folder's history, and opened over file:// in
Chromium, which is asked what it laid out: the summary line's text, one table per drill host with its rows, the
charts' boxes, bars and points, text in the charts that overlaps or leaves its chart, what the page requested
and what it logged. Then the same for print (A4) and a dark colour scheme. The checks are shown to fail on a
page that fetches, logs an error or lays out badly. Needs no lab host: it only touches its own temporary folder.
"""

import re

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.drill import html, report
from tests.browser import Chromium
from tests.drill_sample import EARLIER_RUNS, FAILED_REASON, FLEET, write_sample

# What the page laid out, read in the page (no script of the page's own: this runs from the test only).
FACTS = r"""
(() => {
  const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const shown = e => { const s = getComputedStyle(e), r = e.getBoundingClientRect();
    return s.display !== 'none' && s.visibility !== 'hidden' && parseFloat(s.opacity) > 0 && r.width > 0 && r.height > 0; };
  // a line is drawn when it has a length: a flat one has no height
  const drawn = e => { const s = getComputedStyle(e), r = e.getBoundingClientRect();
    return s.display !== 'none' && s.visibility !== 'hidden' && parseFloat(s.opacity) > 0 && s.stroke !== 'none' && (r.width > 0 || r.height > 0); };
  const text = e => (e ? e.innerText || e.textContent : '').replace(/\s+/g, ' ').trim();
  const summary = document.querySelector('#summary');
  const charts = [...document.querySelectorAll('svg.chart')].map(svg => ({
    id: svg.closest('section') ? svg.closest('section').id : '', css: svg.getAttribute('class'), shown: shown(svg), box: box(svg),
    label: svg.getAttribute('aria-label') || '',
    bars: [...svg.querySelectorAll('rect.bar')].map(r => ({box: box(r), shown: shown(r), title: text(r.querySelector('title'))})),
    lines: [...svg.querySelectorAll('polyline')].filter(drawn).length,
    dots: [...svg.querySelectorAll('circle')].map(c => ({box: box(c), shown: shown(c)})),
    texts: [...svg.querySelectorAll('text')].filter(shown).map(t => ({text: text(t), box: box(t)})),
  }));
  return {
    title: document.title,
    width: document.documentElement.scrollWidth, viewport: window.innerWidth,
    background: getComputedStyle(document.body).backgroundColor, color: getComputedStyle(document.body).color,
    summary: {text: text(summary), shown: !!summary && shown(summary), box: summary ? box(summary) : null},
    failures: [...document.querySelectorAll('#failures li')].map(li => ({text: text(li), shown: shown(li)})),
    hosts: [...document.querySelectorAll('section.host')].map(s => ({
      host: text(s.querySelector('h3').firstChild), shown: shown(s.querySelector('table')), box: box(s.querySelector('table')),
      section: box(s), rows: [...s.querySelectorAll('tbody tr')].map(tr => ({text: text(tr), shown: shown(tr), failed: tr.classList.contains('failed')})),
      columns: [...s.querySelectorAll('thead th')].map(th => Math.round(th.getBoundingClientRect().x)),
    })),
    phase_bars: [...document.querySelectorAll('svg.phases')].filter(shown).length,
    charts: charts,
  };
})()
"""


def overlap(one, other, slack=1.0):
    return (min(one["x"] + one["w"], other["x"] + other["w"]) - max(one["x"], other["x"]) > slack
            and min(one["y"] + one["h"], other["y"] + other["h"]) - max(one["y"], other["y"]) > slack)


def inside(inner, outer, slack=2.0):
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack and inner["x"] + inner["w"] <= outer["x"] + outer["w"] + slack
            and inner["y"] + inner["h"] <= outer["y"] + outer["h"] + slack)


def problems(facts, requests, console, page_url):
    """What a person would see wrong, or what the page must never do, in one line each; [] for a good page."""
    found = ["requested %s" % url for url in requests if url != page_url]
    found += ["console %s: %s" % (level, said) for level, said in console if level in ("error", "warning", "assert")]
    if not facts["summary"]["shown"]:
        found.append("the summary line is not visible")
    if facts["width"] > facts["viewport"]:
        found.append("the page is %d px wide in a %d px window: it scrolls sideways" % (facts["width"], facts["viewport"]))
    for host in facts["hosts"]:
        if not host["shown"] or not all(row["shown"] for row in host["rows"]):
            found.append("the table of %s is not visible" % host["host"])
        elif host["box"]["x"] + host["box"]["w"] > host["section"]["x"] + host["section"]["w"] + 1:
            found.append("the table of %s is wider than the page" % host["host"])
    for chart in facts["charts"]:
        name = "%s %s" % (chart["label"].split(" ")[0], "trend" if "trend" in chart["css"].split() else "chart")  # "RTO chart", "RPO trend"
        if not chart["shown"]:
            found.append("the %s is not laid out (no box)" % name)
            continue
        found += ["a bar of the %s is not visible: %s" % (name, rect["title"]) for rect in chart["bars"] if not rect["shown"]]
        texts = chart["texts"]
        found += ["%r sticks out of the %s" % (t["text"], name) for t in texts if not inside(t["box"], chart["box"])]
        found += ["%r overlaps %r in the %s" % (one["text"], other["text"], name)
                  for number, one in enumerate(texts) for other in texts[number + 1:] if overlap(one["box"], other["box"])]
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The sample's report folder, this run's Report and its page written as the drill role writes it."""
    folder = tmp_path_factory.mktemp("drill-reports")
    this = write_sample(folder)
    text = html.render(this.to_dict(), history=report.history(str(folder)))
    paths = report.write_run(str(folder), this, {"report.html": text})
    return this, paths["report.html"]


@pytest.fixture(scope="module")
def browser():
    with Chromium() as chromium:
        yield chromium


def look(browser, path, **view):
    """(facts, problems) of the page at ``path`` as the browser lays it out with ``view`` (width, media)."""
    since = browser.open(path, **view)
    facts = browser.evaluate(FACTS)
    return facts, problems(facts, browser.requests(since), browser.console(since), "file://" + str(path))


def test_the_page_renders_what_the_report_says(browser, run):
    this, path = run
    facts, found = look(browser, path, width=1280)
    assert found == []

    summary = this.summary
    assert facts["summary"]["text"] == "FAILED 10 drills on 4 hosts: 9 passed, 1 failed %s worst RTO %s, worst RPO %s" % (
        html.DASH, html.duration(summary["worst_rto_seconds"]), html.duration(summary["worst_rpo_seconds"]))
    assert facts["summary"]["box"]["w"] > 600 and facts["summary"]["box"]["y"] < 250, "the summary line is not near the top"
    assert facts["title"].endswith("FAILED") and this.run_id in facts["title"]

    # a table per drill host, the host with the failure first, a row per drill; the failure's reason shown in it
    per_host = {drill_host: len(kinds) for _c, _s, drill_host, kinds, _m in FLEET}
    assert [host["host"] for host in facts["hosts"]] == ["drill-us-2", "drill-eu-1", "drill-eu-2", "drill-us-1"]
    assert {host["host"]: len(host["rows"]) for host in facts["hosts"]} == per_host
    failed_rows = [row["text"] for host in facts["hosts"] for row in host["rows"] if row["failed"]]
    assert len(failed_rows) == 1 and FAILED_REASON in failed_rows[0]
    assert [item["text"] for item in facts["failures"] if item["shown"]] == ["pitr ledger on drill-us-2 (from pg-ledger-1): " + FAILED_REASON]
    # the columns line up from one host's table to the next, so a person can read down them (within a few pixels: each
    # table still widens a column a little for its own content; without the shared widths they were 100 px apart)
    starts = list(zip(*(host["columns"] for host in facts["hosts"]), strict=True))
    assert len(starts) == 8 and all(max(column) - min(column) <= 8 for column in starts), starts
    assert facts["phase_bars"] == len(this.drills)

    rto, trend_rto, trend_rpo = facts["charts"]
    assert (rto["id"], trend_rto["id"], trend_rpo["id"]) == ("rto-chart", "trend", "trend")
    # a bar per passed drill, as long as its RTO: the longest is the worst; the failed drill says so instead
    passed = [drill for drill in this.drills if drill.result == "passed"]
    assert len(rto["bars"]) == len(passed) and all(rect["box"]["w"] > 2 for rect in rto["bars"])
    widths = {rect["title"]: rect["box"]["w"] for rect in rto["bars"]}
    longest = max(passed, key=lambda drill: drill.rto_seconds)
    assert max(widths, key=widths.get).startswith("%s %s on %s" % (longest.drill, longest.cluster, longest.drill_host))
    assert html.DASH + " failed" in [t["text"] for t in rto["texts"]]
    # the trend: a line per drill kind, a point per run and kind, oldest left, this run last, in both charts
    kinds = {kind for _c, _s, _h, kinds, _m in FLEET for kind in kinds}
    for chart in (trend_rto, trend_rpo):
        assert chart["lines"] == len(kinds)
        assert len(chart["dots"]) == len(kinds) * (EARLIER_RUNS + 1) and all(dot["shown"] for dot in chart["dots"])
        assert chart["box"]["w"] > 600 and chart["box"]["h"] > 150
    assert "RTO (min)" in [t["text"] for t in trend_rto["texts"]] and "RPO (h)" in [t["text"] for t in trend_rpo["texts"]]


def test_the_page_prints_on_a4_and_reads_in_the_dark(browser, run):
    _this, path = run
    # A4 at 96 dpi less Chromium's default margins is about 720 CSS pixels wide
    facts, found = look(browser, path, width=720, height=1040, media="print")
    assert found == []
    assert facts["background"] == "rgb(255, 255, 255)", "print is not on white"
    assert all(chart["box"]["w"] <= 720 for chart in facts["charts"])
    pages = len(re.findall(rb"/Type\s*/Page\b", browser.pdf()))
    assert 2 <= pages <= 8, "the report printed on %d A4 pages" % pages

    browser.call("Emulation.setEmulatedMedia", media="", features=[{"name": "prefers-color-scheme", "value": "dark"}])
    facts = browser.evaluate(FACTS)
    assert facts["background"] != "rgb(255, 255, 255)" and facts["color"] != facts["background"]
    browser.call("Emulation.setEmulatedMedia", media="", features=[])

    facts, found = look(browser, path, width=420)  # a phone: the charts shrink with the page, nothing scrolls sideways
    assert found == [] and facts["summary"]["shown"]


@pytest.mark.parametrize("spoil, expected", [
    ('<img src="http://127.0.0.1:9/open.png" alt="">', "requested http://127.0.0.1:9/open.png"),
    ("<style>@import url('http://127.0.0.1:9/theme.css');</style>", "requested http://127.0.0.1:9/theme.css"),
    ("<script>console.error('chart data missing')</script>", "console error: chart data missing"),
    ("<style>#rto-chart svg { display: none }</style>", "the RTO chart is not laid out (no box)"),
    ("<style>svg.trend text.tick { font-size: 40px }</style>", "in the RTO trend"),
    ("<style>svg.rto text.label { font-size: 30px }</style>", "sticks out of the RTO chart"),
    ("<style>table { min-width: 2000px }</style>", "scrolls sideways"),
], ids=["image", "stylesheet", "console", "hidden-chart", "overlapping-ticks", "label-outside", "too-wide"])
def test_the_checks_catch_a_page_that_fetches_logs_or_breaks_its_layout(browser, run, tmp_path, spoil, expected):
    _this, path = run
    spoiled = tmp_path / "spoiled.html"
    spoiled.write_text(open(path, encoding="utf-8").read().replace("</body>", spoil + "</body>"), encoding="utf-8")
    _facts, found = look(browser, spoiled, width=1280)
    assert any(expected in problem for problem in found), found
