# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A drill report as one self-contained HTML page (docs/drill-reports.md, "HTML page").

``render(report, history)`` is pure: a report of format 1 (a dict, as the JSON file holds it) and the previous
runs (oldest first) make the text of one HTML5 page. The page fetches nothing: inline CSS, inline SVG charts, no
script, no font, no image, no link but ``#`` anchors, so it opens from a mail attachment, an AWX artifact or a
browser without network, and it prints. Everything that comes from a report is escaped, SVG text too: a host
name or a reason is data, never markup. Nothing here may import ``ansible`` (the page may be written off the
controller too).
"""

from __future__ import annotations

import datetime
import html
import math
import re

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

FORMAT = 1
PHASES = ("select", "fetch", "deploy", "recovery", "verify", "cleanup")
KINDS = ("logical", "standalone", "pitr", "latest")
CHART_WIDTH = 860  # CSS pixels at 100 %: the page's column on a laptop; scaled down (text too) on a narrower page
TREND_RUNS = 30  # the trend shows the newest runs only: a year of nightly runs would be a smear
UNIT_WORDS = {"s": "seconds", "min": "minutes", "h": "hours"}
# (column, share of the table's width): the same in every host's table, so a person reads down a column across hosts
COLUMNS = (("drill", 12), ("result", 19), ("RTO", 8), ("RPO", 8), ("backup set", 15), ("phases", 17), ("verified", 15), ("cleanup", 6))
DASH = "\u2014"  # what a duration shows when the drill failed before measuring it
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not allowed in XML (SVG text) nor sane in HTML


# --- small formatters --------------------------------------------------------------------------------------


def esc(value):
    """Text of a report value, safe as HTML text, as an attribute value and as SVG (XML) text."""
    text = "" if value is None else str(value)
    return html.escape(_CONTROL.sub(" ", text), quote=True)


def _number(value):
    """A finite float, or None for null, NaN, infinity, booleans and anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def duration(seconds):
    """``0.4 s``, ``41 s``, ``2 min 5 s``, ``1 h 15 min``, ``3 d 4 h``; null (not measured) is a dash."""
    value = _number(seconds)
    if value is None:
        return DASH
    if value < 0:  # clocks of two hosts disagree: show it rather than hide it
        return "-" + duration(-value)
    if value < 10:
        return "%s s" % ("%.1f" % value).rstrip("0").rstrip(".")
    whole = int(round(value))
    if whole < 60:
        return "%d s" % whole
    # two units at most: a person compares RTOs, a third unit is noise
    for big, big_unit, small, small_unit in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if whole >= big_unit:
            count, rest = divmod(whole, big_unit)
            rest = int(round(rest / float(small_unit)))
            if rest * small_unit == big_unit:
                count, rest = count + 1, 0
            return "%d %s %d %s" % (count, big, rest, small) if rest else "%d %s" % (count, big)
    return "%d s" % whole  # not reached: whole >= 60 matched min


def size(count):
    """``123 B``, ``1.5 KiB``, ``42 MiB``; null is a dash."""
    value = _number(count)
    if value is None or value < 0:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return "%d B" % value
            return ("%.1f %s" if value < 10 else "%.0f %s") % (value, unit)
        value /= 1024.0
    return DASH  # not reached


def _plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


def _parse_time(text):
    if not isinstance(text, str):
        return None
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None


def when(text):
    """``2026-12-07 08:00 UTC`` for a report's ``...Z`` time; anything else as it is (escaped by the caller)."""
    moment = _parse_time(text)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ("" if text is None else str(text))


def _short_when(text):
    moment = _parse_time(text)
    return moment.strftime("%m-%d %H:%M") if moment else ("" if text is None else str(text))[:11]


def _seconds_between(start, end):
    first, last = _parse_time(start), _parse_time(end)
    return (last - first).total_seconds() if first and last else None


# --- the report as the page reads it -------------------------------------------------------------------------


def _dict(value):
    return value if isinstance(value, dict) else {}


def _list(value):
    return value if isinstance(value, list) else []


def _run_of(entry):
    """A report's ``run`` (id, started_at, ...); a history entry holds those at its top level."""
    return _dict(entry.get("run")) if isinstance(entry.get("run"), dict) else entry


def _drills(report):
    return [drill for drill in _list(report.get("drills")) if isinstance(drill, dict)]


def _failed(drill):
    return drill.get("result") != "passed"


def _measured(drills, key):
    """The values of ``key`` the passed drills measured: the worst RTO or RPO is the worst a restore that worked took."""
    return [v for v in (_number(d.get(key)) for d in drills if not _failed(d)) if v is not None]


def _summary(report):
    """The report's summary; a count it lacks is taken from its drills (a part written by an older run)."""
    drills = _drills(report)
    given = _dict(report.get("summary"))
    rtos, rpos = _measured(drills, "rto_seconds"), _measured(drills, "rpo_seconds")
    computed = dict(drills=len(drills), passed=sum(1 for d in drills if not _failed(d)), failed=sum(1 for d in drills if _failed(d)),
                    hosts=len({str(d.get("drill_host")) for d in drills}), worst_rto_seconds=max(rtos) if rtos else None,
                    worst_rpo_seconds=max(rpos) if rpos else None)
    for key, value in given.items():
        if key in computed and (key.startswith("worst_") or _number(value) is not None):
            computed[key] = value
    return computed


def summary_line(report):
    """The sentence a person reads first: ``6 drills on 3 hosts: 5 passed, 1 failed — worst RTO 41 s, worst RPO 1 h 15 min``."""
    s = _summary(report)
    return "%s on %s: %d passed, %d failed %s worst RTO %s, worst RPO %s" % (
        _plural(int(s["drills"]), "drill"), _plural(int(s["hosts"]), "host"), int(s["passed"]), int(s["failed"]), DASH,
        duration(s["worst_rto_seconds"]), duration(s["worst_rpo_seconds"]))


def _check(report):
    if not isinstance(report, dict):
        raise PgdrError("a drill report must be a JSON object, not %s: pass the report the drill run wrote" % type(report).__name__)
    if "format" not in report:
        raise PgdrError("this is not a drill report (it has no format): pass the report.json a drill run wrote")
    if report.get("format") != FORMAT:
        raise PgdrError("the drill report is of format %r, this page renders format %d: render it with the collection version that wrote it"
                        % (report.get("format"), FORMAT))


def _hosts(drills):
    """[(drill host, [(index, drill)])]: hosts with a failure first, then by name; failed drills first in a host."""
    by_host = {}
    for index, drill in enumerate(drills):
        by_host.setdefault(str(drill.get("drill_host") or "?"), []).append((index, drill))
    groups = []
    for host, items in by_host.items():
        items.sort(key=lambda item: (not _failed(item[1]), _kind_order(item[1].get("drill")), item[0]))
        groups.append((host, items))
    groups.sort(key=lambda group: (not any(_failed(d) for _i, d in group[1]), group[0]))
    return groups


def _kind_order(kind):
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), str(kind))


def _drill_name(drill):
    return "%s %s" % (drill.get("drill") or "drill", drill.get("cluster") or "")


# --- SVG ---------------------------------------------------------------------------------------------------


def _svg_open(width, height, label, desc, css_class):
    # no xmlns: inside HTML the parser puts <svg> in the SVG namespace itself, and the page names no URL at all
    return ['<svg class="%s" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">' % (css_class, width, height, width, height, esc(label)),
            "<title>%s</title>" % esc(label), "<desc>%s</desc>" % esc(desc)]


def _fit(text, limit):
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _unit(top_seconds):
    """(divisor, unit) for an axis whose largest value is top_seconds."""
    if top_seconds < 120:
        return 1.0, "s"
    if top_seconds < 7200:
        return 60.0, "min"
    return 3600.0, "h"


def _ticks(top_seconds, wanted=5):
    """(divisor, unit, step, top) of a nice axis from 0: steps of 1, 2 or 5 times a power of ten, in the unit."""
    divisor, unit = _unit(top_seconds)
    top = max(top_seconds / divisor, 1e-9)
    raw = top / wanted
    power = 10 ** math.floor(math.log10(raw))
    step = next(factor * power for factor in (1, 2, 5, 10) if factor * power >= raw)
    return divisor, unit, step, step * math.ceil(top / step - 1e-9)


def _tick_text(value):
    return ("%.2f" % value).rstrip("0").rstrip(".")


def _phase_words(phase):
    """(``fetch 3 s``, None), or (``fetch 3 s``, ``failed``) for a phase that did not end ok; not escaped."""
    words = "%s %s" % (phase.get("name"), duration(phase.get("seconds")))
    return words, None if phase.get("result", "ok") == "ok" else str(phase.get("result"))


def phase_bar(drill):
    """A small inline bar of the phases, each as wide as its share of the drill's time."""
    phases = [phase for phase in _list(drill.get("phases")) if isinstance(phase, dict)]
    total = sum(max(_number(phase.get("seconds")) or 0.0, 0.0) for phase in phases)
    width, height = 160, 10
    label = "phases: " + ", ".join(" ".join(w for w in _phase_words(phase) if w) for phase in phases) if phases else "no phases recorded"
    out = _svg_open(width, height, label, "Time of each phase of the drill, as a share of its total.", "phases")
    out.append('<rect class="track" x="0" y="0" width="%d" height="%d"/>' % (width, height))
    x = 0.0
    for phase in phases:
        seconds = max(_number(phase.get("seconds")) or 0.0, 0.0)
        if total <= 0 or seconds <= 0:
            continue
        part = max(seconds / total * width, 1.0)
        name = phase.get("name") if phase.get("name") in PHASES else "other"
        failed = " failed" if phase.get("result") == "failed" else ""
        out.append('<rect class="ph-%s%s" x="%.1f" y="0" width="%.1f" height="%d"><title>%s %s</title></rect>'
                   % (name, failed, x, part, height, esc(phase.get("name")), esc(duration(seconds))))
        x += part
    out.append("</svg>")
    return "".join(out)


def _rto_words(drill):
    rto = _number(drill.get("rto_seconds"))
    if rto is None:
        return "%s %s" % (DASH, "failed" if _failed(drill) else "not measured")
    return duration(rto) + (" failed" if _failed(drill) else "")


def rto_chart(drills):
    """Horizontal bars: one row per drill, grouped under its drill host, length the RTO; a failed drill says so."""
    groups = _hosts(drills)
    values = [v for v in (_number(d.get("rto_seconds")) for d in drills) if v is not None and v > 0]
    divisor, unit, step, top = _ticks(max(values) if values else 60.0)
    left, right, row, head, axis = 200, 90, 18, 22, 34
    plot = CHART_WIDTH - left - right
    rows = sum(len(items) for _host, items in groups)
    height = head * len(groups) + row * rows + axis + 6
    label = "RTO per drill host: " + "; ".join(
        "%s: %s" % (host, ", ".join("%s %s" % (_drill_name(d).strip(), _rto_words(d)) for _i, d in items)) for host, items in groups)
    out = _svg_open(CHART_WIDTH, height, label, "Horizontal bars, one per drill, grouped by drill host; length is the RTO in %s. "
                    "A drill that failed before its RTO was measured has no bar and says failed." % UNIT_WORDS[unit], "chart rto")
    y = 4
    bottom = height - axis
    for index in range(int(round(top / step)) + 1):
        x = left + plot * (index * step) / top
        out.append('<line class="grid" x1="%.1f" y1="4" x2="%.1f" y2="%d"/>' % (x, x, bottom))
        out.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, bottom + 14, _tick_text(index * step)))
    out.append('<text class="axis" x="%.1f" y="%d" text-anchor="middle">RTO (%s)</text>' % (left + plot / 2, bottom + 30, unit))
    for host, items in groups:
        out.append('<text class="host" x="4" y="%d">%s</text>' % (y + 15, esc(_fit(host, 30))))
        y += head
        for _index, drill in items:
            name = _fit(_drill_name(drill).strip(), 26)
            out.append('<text class="label" x="%d" y="%d" text-anchor="end">%s</text>' % (left - 8, y + 13, esc(name)))
            rto = _number(drill.get("rto_seconds"))
            state = "fail" if _failed(drill) else "pass"
            if rto is None:
                out.append('<text class="value %s" x="%d" y="%d">%s</text>' % (state, left + 4, y + 13, esc(_rto_words(drill))))
            else:
                length = max(plot * (rto / divisor) / top, 1.0) if rto > 0 else 0.0
                out.append('<rect class="bar %s" x="%d" y="%d" width="%.1f" height="%d"><title>%s on %s: RTO %s</title></rect>'
                           % (state, left, y + 3, length, row - 6, esc(_drill_name(drill).strip()), esc(host), esc(duration(rto))))
                out.append('<text class="value %s" x="%.1f" y="%d">%s</text>' % (state, left + length + 4, y + 13, esc(_rto_words(drill))))
            y += row
    out.append('<line class="axisline" x1="%d" y1="4" x2="%d" y2="%d"/>' % (left, left, bottom))
    out.append("</svg>")
    return "".join(out)


def _trend_points(runs, key):
    """{drill kind: [worst value of that kind in run i, or None]} over the runs."""
    kinds = sorted({str(d.get("drill")) for run in runs for d in _drills(run)}, key=_kind_order)
    series = {}
    for kind in kinds:
        points = []
        for run in runs:
            values = _measured([d for d in _drills(run) if str(d.get("drill")) == kind], key)
            points.append(max(values) if values else None)
        series[kind] = points
    return series


def _end_labels(lasts, x, y_of, upper, bottom, gap=13.0):
    """This run's value at the end of each line, in the line's colour; labels of close values pushed apart, not overlapping."""
    placed = sorted(((y_of(value) + 4, value, css) for value, css in lasts if value is not None), key=lambda item: -item[0])
    ys = []
    for y, _value, _css in placed:  # from the bottom up: each at least a line above the one below it
        ys.append(min(y, ys[-1] - gap) if ys else min(y, bottom + 4))
    if ys and ys[-1] < upper:  # pushed over the top: shift them all down together
        ys = [y + upper - ys[-1] for y in ys]
    return ['<text class="end %s" x="%.1f" y="%.1f">%s</text>' % (placed[number][2], x, y, esc(duration(placed[number][1])))
            for number, y in enumerate(ys)]


def trend_chart(runs, key, name):
    """Lines per drill kind of the worst ``key`` (RTO or RPO) of the passed drills in each run, oldest left; a gap where none passed."""
    series = _trend_points(runs, key)
    values = [v for points in series.values() for v in points if v is not None and v > 0]
    divisor, unit, step, top = _ticks(max(values) if values else 60.0)
    # the right margin holds this run's value at the end of each line, and half the last run's date label
    width, height, left, right, upper, lower = CHART_WIDTH, 260, 56, 88, 34, 46
    plot_w, plot_h = width - left - right, height - upper - lower
    bottom = upper + plot_h
    count = len(runs)

    def x_of(index):
        return left + (plot_w * index / (count - 1) if count > 1 else plot_w / 2)

    def y_of(seconds):
        return bottom - plot_h * min(seconds / divisor / top, 1.0)

    label = "%s across the last %s, worst of the passed drills per drill kind: %s" % (name, _plural(count, "run"), "; ".join(
        "%s: %s" % (kind, ", ".join(duration(v) for v in points)) for kind, points in series.items()))
    out = _svg_open(width, height, label, "Line chart, one line per drill kind, of the worst %s of that kind in each run, in %s; "
                    "runs evenly spaced from oldest (left) to this run (right), labelled by their UTC start. "
                    "A gap is a run where no drill of that kind passed; this run's value is written at the end of each line."
                    % (name, UNIT_WORDS[unit]), "chart trend")
    for index in range(int(round(top / step)) + 1):
        y = bottom - plot_h * index * step / top
        out.append('<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>' % (left, y, width - right, y))
        out.append('<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 6, y + 4, _tick_text(index * step)))
    out.append('<text class="axis" x="12" y="%.1f" text-anchor="middle" transform="rotate(-90 12 %.1f)">%s (%s)</text>'
               % (upper + plot_h / 2, upper + plot_h / 2, esc(name), unit))
    every = max(1, int(math.ceil(count / 7.0)))  # at most about seven run labels, or they overlap
    for index, run in enumerate(runs):
        if (count - 1 - index) % every == 0:  # counted from this run, which is always labelled, so none crowd it
            started = _run_of(run).get("started_at")
            out.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x_of(index), bottom + 16, esc(_short_when(started))))
    out.append('<text class="axis" x="%.1f" y="%d" text-anchor="middle">run (UTC start, this run last)</text>' % (left + plot_w / 2, height - 6))
    out.append('<line class="axisline" x1="%d" y1="%d" x2="%d" y2="%d"/>' % (left, bottom, width - right, bottom))
    legend_x = left
    for number, (kind, points) in enumerate(series.items()):
        css = "s%d" % (number % 6)
        out.append('<line class="line %s" x1="%d" y1="14" x2="%d" y2="14"/>' % (css, legend_x, legend_x + 22))
        out.append('<text class="legend" x="%d" y="18">%s</text>' % (legend_x + 26, esc(_fit(kind, 16))))
        legend_x += 26 + 8 * min(len(kind), 16) + 18
        segment = []
        for index, value in enumerate(points + [None]):
            if value is not None:
                segment.append("%.1f,%.1f" % (x_of(index), y_of(value)))
                continue
            if len(segment) > 1:
                out.append('<polyline class="line %s" points="%s"/>' % (css, " ".join(segment)))
            segment = []
        for index, value in enumerate(points):
            if value is not None:
                started = _run_of(runs[index]).get("started_at")
                out.append('<circle class="dot %s" cx="%.1f" cy="%.1f" r="3"><title>%s, %s: %s %s</title></circle>'
                           % (css, x_of(index), y_of(value), esc(kind), esc(when(started)), esc(name), esc(duration(value))))
    out += _end_labels([(points[-1], "s%d" % (number % 6)) for number, points in enumerate(series.values())], x_of(count - 1) + 8, y_of,
                       upper, bottom)
    out.append("</svg>")
    return "".join(out)


# --- the page ------------------------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --pass: #1a7f37; --fail: #cf222e; --bar: #2f6fb5; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --soft: #151b23;
    --pass: #3fb950; --fail: #ff7b72; --bar: #58a6ff; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 1.5rem; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 1.75rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 1.25rem 0 .4rem; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: .92em; }
a { color: inherit; }
.run, .note, footer { color: var(--muted); }
.summary { font-size: 1.15rem; padding: .75rem 1rem; border-radius: 6px; border: 1px solid var(--line); border-left: 6px solid var(--pass);
  background: var(--soft); }
.summary.fail { border-left-color: var(--fail); }
.verdict { font-weight: 700; margin-right: .5rem; }
.pass .verdict, td.pass, .ok { color: var(--pass); }
.fail .verdict, td.fail, .bad, .failures a { color: var(--fail); }
.failures li { margin: .25rem 0; }
.reason { color: var(--fg); }
caption { text-align: left; }
table { border-collapse: collapse; width: 100%; margin-bottom: .5rem; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
thead th { background: var(--soft); font-weight: 600; }
tbody th { font-weight: 600; }
td.num, .nw { white-space: nowrap; }
.reason, .id { overflow-wrap: anywhere; }
.vh { position: absolute; width: 1px; height: 1px; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
tr.failed { background: var(--soft); background: color-mix(in srgb, var(--fail) 8%, transparent); }
ul.checks { list-style: none; margin: 0; padding: 0; }
.small { font-size: .85em; color: var(--muted); }
.legend-row { display: flex; flex-wrap: wrap; gap: .25rem 1rem; font-size: .85em; color: var(--muted); margin: 0 0 .5rem; padding: 0;
  list-style: none; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .3em; vertical-align: -.05em; border-radius: 2px; }
svg { max-width: 100%; height: auto; overflow: visible; }
svg.phases { display: block; margin-bottom: .2rem; }
svg text { fill: var(--fg); font: 12px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
svg text.host { font-weight: 700; font-size: 13px; }
svg text.tick, svg text.legend { fill: var(--muted); font-size: 11px; }
svg text.end { stroke: none; font-size: 11px; font-weight: 600; }
svg text.axis { fill: var(--muted); }
svg text.value.fail { fill: var(--fail); }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axisline { stroke: var(--muted); stroke-width: 1; }
svg .track { fill: var(--soft); stroke: var(--line); stroke-width: .5; }
svg .bar.pass { fill: var(--bar); }
svg .bar.fail { fill: var(--fail); }
svg .line { fill: none; stroke-width: 2; }
svg .dot { stroke: var(--bg); stroke-width: 1; }
.ph-select { fill: #8250df; background: #8250df; } .ph-fetch { fill: #1f8ad6; background: #1f8ad6; }
.ph-deploy { fill: #1b998b; background: #1b998b; } .ph-recovery { fill: #d4860b; background: #d4860b; }
.ph-verify { fill: #3f9f3f; background: #3f9f3f; } .ph-cleanup { fill: #8c959f; background: #8c959f; }
.ph-other { fill: #b08800; background: #b08800; }
svg rect.failed { fill: var(--fail); }
.s0 { stroke: #2f81f7; fill: #2f81f7; } .s1 { stroke: #d4860b; fill: #d4860b; stroke-dasharray: 7 3; }
.s2 { stroke: #1b998b; fill: #1b998b; stroke-dasharray: 2 3; } .s3 { stroke: #bf3989; fill: #bf3989; stroke-dasharray: 9 3 2 3; }
.s4 { stroke: #8250df; fill: #8250df; stroke-dasharray: 4 4; } .s5 { stroke: #8c959f; fill: #8c959f; stroke-dasharray: 1 2; }
svg line.line { fill: none; }
@media screen and (max-width: 720px) {
  body { padding: .75rem; font-size: 14px; }
  section.host table, section.host tbody, section.host tr, section.host th, section.host td { display: block; width: auto; }
  section.host colgroup { display: none; }
  section.host thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  section.host tr { padding: .4rem 0; border-bottom: 2px solid var(--line); }
  section.host th, section.host td { border: 0; padding: .1rem .25rem; }
  section.host td::before { font-weight: 600; color: var(--muted); margin-right: .5em; }
  /* the column names */
}
@media print {
  :root { --bg: #ffffff; --fg: #000000; --muted: #444444; --line: #bbbbbb; --soft: #f3f3f3; }
  body { max-width: none; padding: 0; font-size: 11pt; }
  table { font-size: 9pt; }
  th, td { padding: .25rem .3rem; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section.host, tr, svg, .summary, .failures li { break-inside: avoid; }
  h2, h3, p.note { break-after: avoid; }
  #rto-chart, #trend { break-inside: avoid; }  /* a chart's heading and note on the chart's page (a longer one breaks all the same) */
  a { text-decoration: none; }
}
"""
# a narrow screen shows each row as a block, its cells named by their column
_NAMED_CELLS = "\n".join('  section.host td:nth-of-type(%d)::before { content: "%s"; }' % (number, name)
                         for number, (name, _share) in enumerate(COLUMNS[1:], 1))
CSS = CSS.replace("  /* the column names */", _NAMED_CELLS)


def _head(report, summary):
    run = _dict(report.get("run"))
    state = "FAILED" if summary["failed"] else "passed"
    title = "Restore drill %s %s %s, %s" % (run.get("id") or "", DASH, when(run.get("started_at")), state)
    return ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">', '<meta name="color-scheme" content="light dark">',
            "<title>%s</title>" % esc(title), "<style>%s</style>" % CSS, "</head>"]


def _run_line(report):
    run = _dict(report.get("run"))
    parts = ["Run <code>%s</code>" % esc(run.get("id") or "?"), "started %s" % esc(when(run.get("started_at")))]
    took = _seconds_between(run.get("started_at"), run.get("finished_at"))
    if took is not None:
        parts.append("took %s" % esc(duration(took)))
    if run.get("controller"):
        parts.append("controller %s" % esc(run.get("controller")))
    part = _dict(run.get("part"))
    if isinstance(part.get("count"), int) and part.get("count") > 1:
        parts.append("part %s of %s (a job slice: the other parts hold the other hosts)" % (esc(part.get("index")), esc(part.get("count"))))
    return '<p class="run">%s</p>' % ", ".join(parts)


def _failures(drills):
    failed = [(index, drill) for index, drill in enumerate(drills) if _failed(drill)]
    if not failed:
        return []
    failed.sort(key=lambda item: (str(item[1].get("drill_host")), _kind_order(item[1].get("drill")), item[0]))
    out = ['<section class="failures" id="failures" aria-labelledby="failures-h">', '<h2 id="failures-h">Failures</h2>', "<ul>"]
    for index, drill in failed:
        out.append('<li><a href="#drill-%d"><strong>%s</strong> on %s</a> (from %s): <span class="reason">%s</span></li>'
                   % (index, esc(_drill_name(drill).strip()), esc(drill.get("drill_host")), esc(drill.get("source_host")),
                      esc(drill.get("reason") or "no reason recorded (result %s)" % drill.get("result"))))
    out += ["</ul>", "</section>"]
    return out


def _set_cell(drill):
    backup = _dict(drill.get("set"))
    if not backup:
        return '<td class="small">%s</td>' % DASH
    lines = ['<code class="id">%s</code>' % esc(backup.get("backup_id") or "?"), esc(backup.get("kind") or "?")]
    facts = []
    if backup.get("age_seconds") is not None:
        facts.append("age %s" % esc(duration(backup.get("age_seconds"))))
    if backup.get("size_bytes") is not None:
        facts.append(esc(size(backup.get("size_bytes"))))
    if facts:  # "age 4 h 6 min" and "2.4 GiB" each on one line: a number apart from its unit reads wrong
        lines.append(", ".join('<span class="nw">%s</span>' % fact for fact in facts))
    if backup.get("repository"):
        lines.append('<span class="small id">%s</span>' % esc(backup.get("repository")))
    return "<td>%s</td>" % "<br>".join(lines)


def _verified_cell(drill):
    checks = [c for c in _list(drill.get("verified")) if isinstance(c, dict)]
    if not checks:
        return '<td class="small">nothing verified</td>'
    items = []
    for check in checks:
        good = check.get("ok") is True
        detail = ' <span class="small">(%s)</span>' % esc(check.get("detail")) if check.get("detail") else ""
        items.append('<li class="%s">%s <span class="reason">%s</span>%s</li>'
                     % ("ok" if good else "bad", "\u2713" if good else "\u2717 failed:", esc(check.get("check")), detail))
    return '<td><ul class="checks">%s</ul></td>' % "".join(items)


def _phases_cell(drill):
    phases = [p for p in _list(drill.get("phases")) if isinstance(p, dict)]
    words = [_phase_words(phase) for phase in phases]
    text = " \u00b7 ".join('<span class="nw">%s%s</span>' % (esc(done), " <strong>%s</strong>" % esc(result) if result else "")
                           for done, result in words)
    return '<td>%s<span class="small">%s</span></td>' % (phase_bar(drill), text or "none recorded")


def _host_table(number, host, items):
    failed = sum(1 for _i, d in items if _failed(d))
    out = ['<section class="host" aria-labelledby="host-%d">' % number,
           '<h3 id="host-%d">%s <span class="small">%s%s</span></h3>'
           % (number, esc(host), _plural(len(items), "drill"), ", %d failed" % failed if failed else ", all passed"),
           "<table>", '<caption class="vh">Drills on %s</caption>' % esc(host),  # the heading above says it to the eye
           "<colgroup>%s</colgroup>" % "".join('<col style="width: %d%%">' % share for _name, share in COLUMNS),
           "<thead><tr>%s</tr></thead>" % "".join('<th scope="col">%s</th>' % name for name, _share in COLUMNS),
           "<tbody>"]
    for index, drill in items:
        bad = _failed(drill)
        result = '<strong>%s</strong>' % esc(drill.get("result") or "?")
        if bad and drill.get("reason"):
            result += '<br><span class="reason small">%s</span>' % esc(drill.get("reason"))  # in full under Failures above
        cleanup = drill.get("cleanup") or "?"
        cells = ['<td class="%s">%s</td>' % ("fail" if bad else "pass", result), '<td class="num">%s</td>' % esc(duration(drill.get("rto_seconds"))),
                 '<td class="num">%s</td>' % esc(duration(drill.get("rpo_seconds"))), _set_cell(drill), _phases_cell(drill), _verified_cell(drill),
                 '<td class="%s">%s</td>' % ("bad" if cleanup == "failed" else "", esc(cleanup))]
        out.append('<tr id="drill-%d"%s><th scope="row">%s<br><span class="small"><span class="nw">%s</span> from <span class="nw">%s</span></span></th>%s</tr>'
                   % (index, ' class="failed"' if bad else "", esc(drill.get("drill") or "?"), esc(drill.get("cluster") or "?"),
                      esc(drill.get("source_host") or "?"), "".join(cells)))
    out += ["</tbody>", "</table>", "</section>"]
    return out


def _legend():
    items = "".join('<li><span class="swatch ph-%s"></span>%s</li>' % (name, name) for name in PHASES)
    return '<ul class="legend-row" aria-label="phase colours">%s</ul>' % items


def _history_runs(report, history):
    """(the runs the trend shows, oldest first and this run last; the runs the history skipped, as [{run, reason}]).

    ``history`` is a list of earlier reports or history entries, or what ``report.history`` returns ({"runs",
    "skipped"}). Entries of another format are left out."""
    skipped = []
    if isinstance(history, dict):
        skipped = [entry for entry in _list(history.get("skipped")) if isinstance(entry, dict)]
        history = _list(history.get("runs"))
    own_id = _run_of(report).get("id")
    runs = []
    for entry in history or ():
        if not isinstance(entry, dict) or entry.get("format", FORMAT) != FORMAT:
            continue
        if own_id is not None and _run_of(entry).get("id") == own_id:
            continue  # the history folder may already hold this run: count it once
        runs.append(entry)
    return runs[len(runs) - min(len(runs), TREND_RUNS - 1):] + [report], skipped


def _skipped_note(skipped):
    if not skipped:
        return []
    shown = "; ".join("%s (%s)" % (esc(entry.get("run")), esc(entry.get("reason"))) for entry in skipped[:5])
    more = ", and %d more" % (len(skipped) - 5) if len(skipped) > 5 else ""
    return ['<p class="note" id="skipped-runs">Left out of the trend: %s that could not be read: %s%s.</p>'
            % (_plural(len(skipped), "earlier run"), shown, more)]


def render(report, history=()):
    """The HTML page of a drill report (format 1), as text. ``history``: the earlier runs, oldest first, as
    reports or history entries, or ``report.history(folder)`` as it returns them (see _history_runs)."""
    _check(report)
    drills = _drills(report)
    summary = _summary(report)
    failed = summary["failed"] > 0
    out = _head(report, summary)
    out += ["<body>", "<header>", "<h1>Restore drill report</h1>", _run_line(report), "</header>", "<main>",
            '<p class="summary %s" id="summary"><span class="verdict">%s</span> <span class="line">%s</span></p>'
            % ("fail" if failed else "pass", "FAILED" if failed else "PASSED", esc(summary_line(report)))]
    out += _failures(drills)
    if not drills:
        out.append('<p class="note">This run holds no drills: no host was drilled, so there is nothing to chart or list.</p>')
    else:
        out += ['<section id="rto-chart" aria-labelledby="rto-h">', '<h2 id="rto-h">RTO per drill host</h2>',
                '<p class="note">RTO: from the backup set selected to the restored cluster verified.</p>', rto_chart(drills), "</section>"]
    runs, skipped = _history_runs(report, history)
    out += ['<section id="trend" aria-labelledby="trend-h">', '<h2 id="trend-h">RTO and RPO across runs</h2>']
    if len(runs) < 2:
        out.append('<p class="note" id="no-history">No history yet: the report folder holds no earlier run to compare with, '
                   "so there is no trend to chart. The trend of RTO and RPO appears from the next run on.</p>")
    else:
        out += ['<p class="note">The worst value per drill kind among the drills that passed, in each of the last %s (this one last). '
                "RPO: from the drill's start back to the newest transaction the restore recovered.</p>" % _plural(len(runs), "run"),
                trend_chart(runs, "rto_seconds", "RTO"), trend_chart(runs, "rpo_seconds", "RPO")]
    out += _skipped_note(skipped)
    out.append("</section>")
    if drills:
        out += ['<section id="hosts" aria-labelledby="hosts-h">', '<h2 id="hosts-h">Drills per host</h2>', _legend()]
        for number, (host, items) in enumerate(_hosts(drills)):
            out += _host_table(number, host, items)
        out.append("</section>")
    out += ["</main>", '<footer><p class="small">pgdr.backup restore drill report, format %d. RTO and RPO as measured on the drill hosts; '
            "a dash is a value the drill failed before measuring.</p></footer>" % FORMAT, "</body>", "</html>", ""]
    return "\n".join(out)
