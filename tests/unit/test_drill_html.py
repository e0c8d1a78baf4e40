"""drill.html: the self-contained HTML page of a drill report.

The page is checked by a strict well-formedness parser (below, on html.parser: every non-void tag closed, in
order), each <svg> is parsed as XML, and nothing in the page may point anywhere but at its own anchors.
"""

import copy
import html.parser
import re
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.drill import html as page

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HOSTILE = '<script>alert("x")</script> & \'quoted\' <img src=x onerror=alert(1)>'


def drill(host="replica15", kind="logical", result="passed", rto=12.3, rpo=3600.5, cluster="db1", reason="", **kw):
    value = {"cluster": cluster, "source_host": "primary-" + host, "drill_host": host, "drill": kind, "result": result,
             "reason": reason if result != "passed" else "", "started_at": "2026-12-07T08:00:05Z", "finished_at": "2026-12-07T08:01:00Z",
             "rto_seconds": rto, "rpo_seconds": rpo,
             "phases": [{"name": "select", "seconds": 0.4, "result": "ok"}, {"name": "fetch", "seconds": 3.0, "result": "ok"},
                        {"name": "deploy", "seconds": 2.5, "result": "ok"}, {"name": "recovery", "seconds": 4.2, "result": "ok"},
                        {"name": "verify", "seconds": 2.2, "result": "ok"}, {"name": "cleanup", "seconds": 1.0, "result": "ok"}],
             "set": {"backup_id": "20261207T020000Z", "kind": "logical-db", "size_bytes": 1536000, "age_seconds": 21600,
                     "repository": "s3://b/p"},
             "verified": [{"check": "row counts and fingerprints", "ok": result == "passed", "detail": "14 tables"}],
             "cleanup": "done"}
    value.update(kw)
    return value


def report(drills, run_id="20261207T080000Z-ab12cd", started="2026-12-07T08:00:00Z", summary=None):
    value = {"format": 1,
             "run": {"id": run_id, "started_at": started, "finished_at": "2026-12-07T08:12:30Z", "controller": "awx-node-1",
                     "part": {"index": 1, "count": 1}},
             "drills": drills}
    if summary is not None:
        value["summary"] = summary
    return value


def fleet():
    """6 drills on 3 hosts, 1 failed (the pitr drill of replica16, listed last in the report)."""
    drills = [drill("replica15", "logical", rto=12.3, rpo=600), drill("replica15", "standalone", rto=41.2, rpo=4500),
              drill("replica16", "logical", rto=9.0, rpo=300), drill("replica17", "logical", rto=20.0, rpo=900),
              drill("replica17", "standalone", rto=30.0, rpo=1200),
              drill("replica16", "pitr", result="failed", rto=None, rpo=None, reason="recovery did not reach the restore point drill_1: "
                    "segment 000000010000000000000007.partial missing; check the archive")]
    return report(drills, summary={"drills": 6, "passed": 5, "failed": 1, "worst_rto_seconds": 41.2, "worst_rpo_seconds": 4500.0, "hosts": 3})


# --- a strict parser of the page ----------------------------------------------------------------------------


class StrictPage(html.parser.HTMLParser):
    """Fails on an end tag that does not close the newest open tag, and on tags left open at the end."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.starts, self.attrs, self.text, self.decl = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.starts.append(tag)
        self.attrs += [(tag, name, value) for name, value in attrs]
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag, attrs):
        self.starts.append(tag)
        self.attrs += [(tag, name, value) for name, value in attrs]

    def handle_endtag(self, tag):
        assert tag not in VOID, "end tag of the void element %s at %s" % (tag, self.getpos())
        assert self.stack, "</%s> with nothing open at %s" % (tag, self.getpos())
        opened, where = self.stack.pop()
        assert opened == tag, "</%s> at %s closes <%s> opened at %s" % (tag, self.getpos(), opened, where)

    def handle_data(self, data):
        if self.stack and self.stack[-1][0] == "style":
            return
        self.text.append(data)

    def handle_decl(self, decl):
        self.decl.append(decl)


def parse(text):
    parser = StrictPage()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], "left open: %s" % parser.stack
    assert parser.decl == ["DOCTYPE html"]
    return parser


def visible_text(text):
    return re.sub(r"\s+", " ", "".join(parse(text).text))


def svgs(text):
    return [ET.fromstring(match) for match in re.findall(r"<svg\b.*?</svg>", text, re.S)]


def test_the_strict_parser_refuses_a_misnested_or_unclosed_page():
    with pytest.raises(AssertionError):
        parse("<!DOCTYPE html><html><body><p><b>x</p></b></body></html>")
    with pytest.raises(AssertionError):
        parse("<!DOCTYPE html><html><body><p>x</body></html>")
    parse("<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body><p>x<br></p></body></html>")


# --- well-formed, self-contained ------------------------------------------------------------------------------


def test_the_page_is_well_formed_and_every_svg_is_xml():
    text = page.render(fleet(), history=[report([drill(rto=10, rpo=500)], run_id="r0", started="2026-12-06T08:00:00Z")])
    parsed = parse(text)
    assert parsed.starts[0] == "html" and ("html", "lang", "en") in parsed.attrs
    charts = svgs(text)
    assert len(charts) == text.count("<svg")
    # one phase bar per drill, the RTO chart, two trend charts (RTO, RPO)
    assert len(charts) == 6 + 1 + 2


def test_the_page_fetches_nothing():
    text = page.render(fleet(), history=[report([drill()], run_id="r0", started="2026-12-06T08:00:00Z")])
    parsed = parse(text)
    assert not re.search(r"https?://", text, re.I)
    assert "@import" not in text and "url(" not in text
    for tag, name, value in parsed.attrs:
        assert name not in ("src", "srcset", "data", "poster", "action", "xlink:href"), (tag, name, value)
        if name == "href":
            assert value.startswith("#"), (tag, name, value)
    assert not {"script", "link", "img", "iframe", "object", "embed", "image", "use", "base"} & set(parsed.starts)


def test_a_url_in_the_report_is_text_never_an_attribute():
    hostile = drill(set={"backup_id": "x", "kind": "base", "size_bytes": 1, "age_seconds": 1, "repository": "https://s3.example/bucket"})
    text = page.render(report([hostile]))
    parsed = parse(text)
    assert "https://s3.example/bucket" in visible_text(text)
    assert not any("://" in (value or "") for _tag, _name, value in parsed.attrs)


def test_anchors_point_at_ids_in_the_page():
    text = page.render(fleet())
    parsed = parse(text)
    ids = {value for _tag, name, value in parsed.attrs if name == "id"}
    targets = [value[1:] for _tag, name, value in parsed.attrs if name == "href"]
    assert targets and set(targets) <= ids


# --- escaping -------------------------------------------------------------------------------------------------


def test_a_hostile_reason_and_host_name_render_as_text():
    bad = drill(host=HOSTILE, kind="pitr", result="failed", rto=None, rpo=None, reason=HOSTILE, cluster='db"1&<x>',
                phases=[{"name": HOSTILE, "seconds": 2, "result": HOSTILE}], verified=[{"check": HOSTILE, "ok": False, "detail": HOSTILE}],
                set={"backup_id": HOSTILE, "kind": HOSTILE, "repository": HOSTILE}, cleanup=HOSTILE)
    text = page.render(report([bad, drill(host="replica15")]), history=[report([drill(host=HOSTILE, kind="pitr")], run_id="r0")])
    parsed = parse(text)
    assert "<script" not in text.lower() and "<img" not in text.lower()
    assert not {"script", "img", "x"} & set(parsed.starts)
    assert not any(name.startswith("on") for _tag, name, _value in parsed.attrs)
    assert text.count(HOSTILE) == 0
    # as text: the reason (failures, table) and the host (heading, chart) read back exactly
    seen = visible_text(text)
    assert seen.count(HOSTILE) >= 10
    assert 'db"1&<x>' in seen
    labels = [value for _tag, name, value in parsed.attrs if name == "aria-label"]
    assert len([label for label in labels if HOSTILE in label]) >= 2  # the RTO chart and the phase bar
    # escaped once, not twice: no entity survives the parser's unescaping
    assert not re.search(r"&(amp|lt|gt|quot|#x27);", seen + "".join(labels))
    chart_text = "".join("".join(svg.itertext()) for svg in svgs(text))
    assert HOSTILE[:20] in chart_text


def test_control_characters_in_a_reason_do_not_break_the_svg_xml():
    bad = drill(host="rep\x1blica\x00", result="failed", rto=None, reason="tool said \x07bell\x1b[31m")
    text = page.render(report([bad]))
    parse(text)
    assert svgs(text)
    assert "\x1b" not in text and "\x00" not in text and "tool said bell [31m" in visible_text(text)


# --- content --------------------------------------------------------------------------------------------------


def test_the_summary_line_says_the_numbers():
    text = page.render(fleet())
    assert page.summary_line(fleet()) == "6 drills on 3 hosts: 5 passed, 1 failed \u2014 worst RTO 41 s, worst RPO 1 h 15 min"
    assert "FAILED 6 drills on 3 hosts: 5 passed, 1 failed \u2014 worst RTO 41 s, worst RPO 1 h 15 min" in visible_text(text)
    assert "<title>Restore drill 20261207T080000Z-ab12cd \u2014 2026-12-07 08:00 UTC, FAILED</title>" in text


def test_the_summary_comes_from_the_report_and_a_missing_one_from_the_drills():
    given = fleet()
    given["summary"] = {"drills": 60, "passed": 55, "failed": 5, "worst_rto_seconds": 7260, "worst_rpo_seconds": 90000, "hosts": 30}
    assert page.summary_line(given) == "60 drills on 30 hosts: 55 passed, 5 failed \u2014 worst RTO 2 h 1 min, worst RPO 1 d 1 h"
    missing = fleet()
    del missing["summary"]
    assert page.summary_line(missing) == page.summary_line(fleet())
    one = report([drill(rto=5, rpo=None)])
    assert page.summary_line(one) == "1 drill on 1 host: 1 passed, 0 failed \u2014 worst RTO 5 s, worst RPO \u2014"
    assert "PASSED 1 drill" in visible_text(page.render(one))


def test_a_failed_drill_is_listed_first_with_its_reason():
    text = page.render(fleet())
    seen = visible_text(text)
    reason = "recovery did not reach the restore point drill_1"
    failures = seen.index("Failures")
    assert seen.index(reason) > failures
    assert failures < seen.index("RTO per drill host") < seen.index("Drills per host")
    # the failed drill's host is the first table, and the failed drill its first row
    tables = text.split("<h3 ")[1:]
    assert tables[0].startswith('id="host-0">replica16')
    first_row = re.search(r"<tbody>\s*<tr (.*?)</tr>", tables[0], re.S).group(1)
    assert 'class="failed"' in first_row and "pitr" in first_row and reason in first_row
    assert re.search(r'<li><a href="#drill-5"><strong>pitr db1</strong> on replica16</a>', text)


def test_a_null_duration_shows_a_dash():
    text = page.render(fleet())
    row = re.search(r'<tr id="drill-5".*?</tr>', text, re.S).group(0)
    cells = re.findall(r'<td class="num">(.*?)</td>', row)
    assert cells == ["\u2014", "\u2014"]
    assert "\u2014 failed" in "".join(svgs(text)[0].itertext()) or "\u2014 failed" in text


def test_the_table_says_what_a_drill_did():
    seen = visible_text(page.render(fleet()))
    for expected in ("db1 from primary-replica15", "20261207T020000Z", "logical-db", "age 6 h", "1.5 MiB", "s3://b/p",
                     "select 0.4 s \u00b7 fetch 3 s \u00b7 deploy 2.5 s \u00b7 recovery 4.2 s \u00b7 verify 2.2 s \u00b7 cleanup 1 s",
                     "\u2713 row counts and fingerprints (14 tables)", "\u2717 failed: row counts and fingerprints", "done"):
        assert expected in seen, expected
    failed_phase = fleet()
    failed_phase["drills"][0]["phases"][3]["result"] = "failed"
    text = page.render(failed_phase)
    assert "recovery 4.2 s <strong>failed</strong>" in text and "recovery 4.2 s failed, verify" in text  # the cell, the bar's label
    parsed = parse(page.render(fleet()))
    headers = [value for tag, name, value in parsed.attrs if tag == "th" and name == "scope"]
    assert headers.count("col") == 3 * 8 and headers.count("row") == 6


def test_every_svg_is_labelled_for_assistive_technology():
    text = page.render(fleet(), history=[report([drill()], run_id="r0", started="2026-12-06T08:00:00Z")])
    for svg in svgs(text):
        assert svg.get("role") == "img" and svg.get("aria-label")
        children = [child.tag for child in svg]
        assert children[:2] == ["title", "desc"] and svg.find("title").text == svg.get("aria-label")


def test_the_rto_chart_has_a_bar_per_measured_drill_and_an_axis_with_its_unit():
    chart = [svg for svg in svgs(page.render(fleet())) if "rto" in svg.get("class").split()][0]
    bars = chart.findall("rect")
    assert len(bars) == 5  # the failed pitr drill has no RTO, so no bar
    widths = {rect.find("title").text: float(rect.get("width")) for rect in bars}
    assert widths["standalone db1 on replica15: RTO 41 s"] > widths["logical db1 on replica15: RTO 12 s"] > widths["logical db1 on replica16: RTO 9 s"]
    texts = [t.text for t in chart.findall("text")]
    assert "RTO (s)" in texts and "replica16" in texts and "\u2014 failed" in texts
    assert texts.index("replica16") < texts.index("replica15")  # the host with a failure first
    unmeasured = report([drill(rto=None)])  # passed, yet no RTO: the chart must not call it failed
    chart = [svg for svg in svgs(page.render(unmeasured)) if "rto" in svg.get("class").split()][0]
    texts = [t.text for t in chart.findall("text")]
    assert "\u2014 not measured" in texts and "\u2014 failed" not in texts


def test_no_history_renders_a_sentence_instead_of_the_trend():
    text = page.render(fleet())
    assert "No history yet" in visible_text(text)
    assert not [svg for svg in svgs(text) if "trend" in svg.get("class").split()]
    # the run itself in its own history is not a trend either
    assert "No history yet" in visible_text(page.render(fleet(), history=[fleet()]))


def test_the_trend_has_a_line_per_drill_kind_with_axis_labels_and_units():
    old = [report([drill("replica15", "logical", rto=8, rpo=3000 + 60 * n), drill("replica15", "standalone", rto=30 + n, rpo=4000)],
                  run_id="r%d" % n, started="2026-12-0%dT08:00:00Z" % (n + 1)) for n in range(5)]
    old[2]["drills"][1].update(result="failed", rto_seconds=None, rpo_seconds=None, reason="x")
    old[3]["drills"].append(drill("replica16", "logical", result="failed", rto=5000, rpo=90000, reason="verify failed"))  # not a worst
    text = page.render(fleet(), history=old)
    assert "No history yet" not in visible_text(text)
    trends = [svg for svg in svgs(text) if "trend" in svg.get("class").split()]
    assert [t.get("aria-label").split(" ")[0] for t in trends] == ["RTO", "RPO"]
    rto, rpo = trends
    legend = [t.text for t in rto.findall("text") if t.get("class") == "legend"]
    assert legend == ["logical", "standalone", "pitr"]
    assert "RTO (s)" in [t.text for t in rto.findall("text")] and "RPO (min)" in [t.text for t in rpo.findall("text")]
    assert "run (UTC start, this run last)" in [t.text for t in rto.findall("text")]
    # standalone failed in run 2: its line breaks there (two segments), logical is one line over 6 runs
    lines = rto.findall("polyline")
    assert len([p for p in lines if "s1" in p.get("class")]) == 2
    logical = [p for p in lines if "s0" in p.get("class")]
    assert len(logical) == 1 and len(logical[0].get("points").split()) == 6
    # pitr measured nothing in any run: a legend entry, no line, no dot
    assert not [e for e in rto.iter() if "s2" in (e.get("class") or "") and e.tag != "line"]


def entry(run_id, started, drills):
    """A run as report.history keeps it: id and times at the top, the drills without phases, set or checks."""
    return {"id": run_id, "started_at": started, "finished_at": started, "summary": {"drills": len(drills)},
            "drills": [{key: d[key] for key in ("cluster", "drill_host", "drill", "result", "finished_at", "rto_seconds", "rpo_seconds")}
                       for d in drills]}


def test_the_history_as_the_report_folder_returns_it():
    current = fleet()
    folder = {"runs": [entry("r0", "2026-12-05T08:00:00.25Z", [drill(rto=6)]), entry("r1", "2026-12-06T08:00:00Z", [drill(rto=7)]),
                       entry(current["run"]["id"], current["run"]["started_at"], current["drills"])],
              "skipped": [{"run": "r9", "reason": "<b>corrupt</b> JSON & more"}]}
    text = page.render(current, folder)
    parse(text)
    rto = [svg for svg in svgs(text) if "trend" in svg.get("class").split()][0]
    assert rto.get("aria-label").startswith("RTO across the last 3 runs")  # this run once, though the folder holds it too
    assert [t.text for t in rto.findall("text") if t.get("class") == "tick"][-3:] == ["12-05 08:00", "12-06 08:00", "12-07 08:00"]
    logical = [p for p in rto.findall("polyline") if "s0" in p.get("class")][0]
    assert len(logical.get("points").split()) == 3
    assert "Left out of the trend: 1 earlier run that could not be read: r9 (<b>corrupt</b> JSON & more)." in visible_text(text)
    assert "<b>" not in text


def test_the_trend_keeps_the_newest_runs():
    old = [report([drill(rto=n + 1)], run_id="r%d" % n, started="2026-11-%02dT08:00:00Z" % (n % 28 + 1)) for n in range(50)]
    rto = [svg for svg in svgs(page.render(fleet(), history=old)) if "trend" in svg.get("class").split()][0]
    assert "the last %d runs" % page.TREND_RUNS in rto.get("aria-label")
    first = rto.findall("polyline")[0].get("points").split()
    assert len(first) == page.TREND_RUNS


@pytest.mark.parametrize("hosts", [1, 8])
def test_one_host_and_eight_hosts_render(hosts):
    drills = [drill("replica%02d" % n, kind, rto=10.0 * (n + 1) + k, rpo=60.0 * n) for n in range(hosts) for k, kind in enumerate(page.KINDS)]
    if hosts > 1:
        drills[-1].update(result="failed", reason="verify: amcheck found 2 corrupt indexes; reindex on the source", rto_seconds=None)
    text = page.render(report(drills))
    parse(text)
    seen = visible_text(text)
    assert "%s on %s" % ("%d drills" % (4 * hosts), "1 host" if hosts == 1 else "%d hosts" % hosts) in seen
    assert len(re.findall(r"<h3 ", text)) == hosts
    chart = [svg for svg in svgs(text) if "rto" in svg.get("class").split()][0]
    assert len(chart.findall("rect")) == 4 * hosts - (hosts > 1)
    assert int(chart.get("height")) > 20 * 4 * hosts  # grows with the rows instead of squeezing them
    assert ("Failures" in seen) == (hosts > 1)


def test_an_empty_run_renders_and_says_so():
    text = page.render(report([]))
    parse(text)
    seen = visible_text(text)
    assert "0 drills on 0 hosts" in seen and "holds no drills" in seen
    assert svgs(text) == []


def test_a_part_of_a_sliced_run_says_which_part():
    part = fleet()
    part["run"]["part"] = {"index": 2, "count": 4}
    assert "part 2 of 4" in visible_text(page.render(part))
    assert "part 1 of 1" not in visible_text(page.render(fleet()))


def test_light_dark_and_print():
    text = page.render(fleet())
    assert "@media (prefers-color-scheme: dark)" in text and "@media print" in text
    assert '<meta name="color-scheme" content="light dark">' in text


def test_render_does_not_change_its_inputs():
    given, history = fleet(), [fleet()]
    history[0]["run"]["id"] = "r0"
    before = copy.deepcopy((given, history))
    page.render(given, history)
    assert (given, history) == before


@pytest.mark.parametrize("bad", [None, [], "report", {"format": 2, "drills": []}, {"drills": []}])
def test_not_a_report_of_format_1_is_one_line_failure(bad):
    with pytest.raises(PgdrError) as failure:
        page.render(bad)
    assert "\n" not in failure.value.msg and "drill report" in failure.value.msg


@pytest.mark.parametrize("seconds, text", [
    (None, "\u2014"), (float("nan"), "\u2014"), (True, "\u2014"), (0, "0 s"), (0.04, "0 s"), (0.4, "0.4 s"), (9.94, "9.9 s"),
    (12.3, "12 s"), (41.2, "41 s"), (59.6, "1 min"), (60, "1 min"), (125, "2 min 5 s"), (3599.6, "1 h"), (4500, "1 h 15 min"),
    (7170, "2 h"), (86400, "1 d"), (90000, "1 d 1 h"), (-30, "-30 s")])
def test_durations_read_like_a_person_says_them(seconds, text):
    assert page.duration(seconds) == text


@pytest.mark.parametrize("count, text", [(None, "\u2014"), (-1, "\u2014"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                         (1536000, "1.5 MiB"), (42 * 1024 ** 3, "42 GiB"), (3 * 1024 ** 5, "3072 TiB")])
def test_sizes_read_like_a_person_says_them(count, text):
    assert page.size(count) == text


# --- layout the browser test found wanting (tests/integration/test_drill_report_browser.py) ----------------------


@pytest.mark.parametrize("runs", [2, 3, 7, 10, 11, 30])
def test_the_trend_always_labels_this_run_and_no_two_run_labels_crowd(runs):
    old = [report([drill(rto=10 + n)], run_id="r%d" % n, started="2026-11-%02dT08:00:00Z" % (n + 1)) for n in range(runs - 1)]
    rto = [svg for svg in svgs(page.render(fleet(), history=old)) if "trend" in svg.get("class").split()][0]
    ticks = [t for t in rto.findall("text") if t.get("class") == "tick" and "-" in (t.text or "")]
    assert ticks[-1].text == "12-07 08:00"  # this run, at the end
    spaced = [float(b.get("x")) - float(a.get("x")) for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(gap >= 80 for gap in spaced), spaced  # a label "12-07 08:00" is about 65 px wide at 11 px
    assert float(ticks[-1].get("x")) + 40 <= page.CHART_WIDTH  # half the last label fits in the chart


def test_the_trend_writes_this_runs_values_at_the_line_ends_apart():
    now = report([drill(kind="logical", rto=30, rpo=1.0), drill(kind="pitr", rto=31, rpo=1.2), drill(kind="latest", rto=90, rpo=0.5)])
    old = [report([drill(kind="logical", rto=20, rpo=2)], run_id="r0", started="2026-12-06T08:00:00Z")]
    rto, rpo = [svg for svg in svgs(page.render(now, history=old)) if "trend" in svg.get("class").split()]
    for chart, expected in ((rto, ["30 s", "31 s", "1 min 30 s"]), (rpo, ["1 s", "1.2 s", "0.5 s"])):
        ends = [t for t in chart.findall("text") if "end" in t.get("class").split()]
        assert sorted(t.text for t in ends) == sorted(expected)
        ys = sorted(float(t.get("y")) for t in ends)
        assert all(b - a >= 13 for a, b in zip(ys, ys[1:], strict=False)), ys  # close values (30 s and 31 s; all RPOs) pushed apart
        assert all(0 <= y <= 260 for y in ys)


def test_every_host_table_has_the_same_column_widths():
    text = page.render(fleet())
    groups = re.findall(r"<colgroup>(.*?)</colgroup>", text)
    assert len(groups) == 3 and len(set(groups)) == 1
    assert [int(width) for width in re.findall(r"width: (\d+)%", groups[0])] == [share for _name, share in page.COLUMNS]
    assert sum(share for _name, share in page.COLUMNS) == 100
