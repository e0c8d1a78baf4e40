# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What module drill_report runs on the controller, callable without Ansible: the report of a drill run written
into the report folder (docs/drill-reports.md, "Writing a run's report").

``argument_spec()`` is the module's options; ``options_from(params)`` types them once; ``run(options, check_mode,
now)`` writes the run's report (report.json, junit.xml, report.html and the Prometheus textfile), or the part of a
sliced run and, once every part is there, the merged report, and returns the module's result dict. A run whose
drills failed is still a report written: failing the play is the caller's decision (the role fails it after the
report is written). Nothing here imports ``ansible.*``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import time
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.drill import html
from ansible_collections.pgdr.backup.plugins.module_utils.drill import report as drill_report

JUNIT_NAME = "junit.xml"
HTML_NAME = "report.html"
_NUMBER = re.compile(r"\s*\d+(\.\d+)?\s*")  # epoch seconds as a string (ansible_date_time.epoch is one)


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    folder: str
    drills: List[dict]
    run_id: Optional[str]
    part_index: int
    part_count: int
    merge: bool
    started_at: Optional[object]  # epoch seconds (number or numeric string) or a report time
    controller: Optional[str]
    textfile: Optional[str]
    history: int


def argument_spec():
    return dict(
        folder=dict(type="path", required=True),
        drills=dict(type="list", elements="dict", default=[]),
        run_id=dict(type="str"),
        part_index=dict(type="int", default=1),
        part_count=dict(type="int", default=1),
        merge=dict(type="bool", default=False),
        started_at=dict(type="raw"),
        controller=dict(type="str"),
        textfile=dict(type="path"),
        history=dict(type="int", default=drill_report.DEFAULT_HISTORY),
    )


def options_from(params):
    """The task's options, typed once (``params``: the module's, after Ansible's checks and defaults)."""
    return typed(ReportOptions, params)


def _absolute(path, name, example):
    if not os.path.isabs(path):
        # a relative path would be relative to wherever the module happens to run
        raise PgdrError("%s %r must be an absolute path on the controller, such as %s" % (name, path, example))


def check_options(options):
    """PgdrError naming the option, before anything is read or written."""
    _absolute(options.folder, "folder", "/var/lib/pgdr/drills or {{ playbook_dir }}/drill-reports")
    if options.textfile is not None:
        _absolute(options.textfile, "textfile", "/var/lib/node_exporter/textfile/pgdr_drill.prom")
        if not options.textfile.endswith(".prom"):
            raise PgdrError("textfile %r must end in .prom: node_exporter's textfile collector reads only those files" % options.textfile)
    if options.run_id is not None:
        drill_report.validate_run_id(options.run_id)
    if not 1 <= options.history <= html.TREND_RUNS:
        raise PgdrError("history %d must be between 1 and %d: the runs the HTML page charts, this one included" % (options.history, html.TREND_RUNS))
    if options.controller is not None and (not options.controller.strip() or "\n" in options.controller or "\r" in options.controller):
        raise PgdrError("controller %r must be one line naming the controller; leave it out for this host's name" % options.controller)
    if options.merge:
        if options.drills:
            raise PgdrError("merge: true merges the parts the slices already wrote and takes no drills: drop drills, or drop merge to write a part")
        if options.run_id is None:
            raise PgdrError("merge: true needs run_id: the run id every slice of the sliced job wrote its part with")
        if options.part_index != 1:
            raise PgdrError("part_index has no meaning with merge: true (every part is merged): drop it")
        if options.part_count < 1:
            raise PgdrError("part_count %d must be 1 or more: with merge: true, the number of slices (or leave it out)" % options.part_count)
        return
    if options.part_count < 1 or not 1 <= options.part_index <= options.part_count:
        raise PgdrError("part_index %d of part_count %d: give a slice's number i and the number of slices n, 1 <= i <= n"
                        % (options.part_index, options.part_count))
    if options.part_count > 1 and options.run_id is None:
        raise PgdrError("a part of a sliced run (part_count %d) needs run_id, the same in every slice (such as awx-<workflow job id>): "
                        "a run id drawn in each slice would make %d runs of one part each" % (options.part_count, options.part_count))


def _started_at(value, drills, now):
    """The run's start as epoch seconds: the option, else the earliest drill start, else now."""
    if value is None:
        return min(drill_report.epoch_of(drill.started_at) for drill in drills) if drills else now
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise PgdrError("started_at %r must be epoch seconds >= 0 or a UTC time like 2026-12-07T08:00:00Z" % (value,))
        return float(value)
    try:
        return drill_report.epoch_of(value)
    except PgdrError as exc:
        raise PgdrError("started_at: %s; or give epoch seconds" % exc.msg) from None


def build(options, now):
    """The Report of this call's drills: the whole run, or part ``part_index`` of ``part_count``."""
    # checked here once, so that a wrong drill is named as drills[i] before any time or id is derived from it
    drills = [drill_report.DrillResult.from_dict(item, "drills[%d]" % number) for number, item in enumerate(options.drills)]
    started = _started_at(options.started_at, drills, now)
    # the run ends now, when its report is written; a drill host whose clock runs ahead may have ended later
    finished = max([now, started] + [drill_report.epoch_of(drill.finished_at) for drill in drills])
    run_id = options.run_id if options.run_id is not None else drill_report.new_run_id(started)
    controller = options.controller if options.controller is not None else socket.gethostname()
    return drill_report.build_report(drills, run_id, started, finished, controller, options.part_index, options.part_count)


# --- the Prometheus textfile --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Carried:
    """A drill of an earlier run that this run did not drill (its host unreachable, another cluster's run written
    into the same folder): its series keep their last values, so that the age of its last success keeps growing
    and alerts, instead of the series vanishing from the textfile. What report.textfile reads of a drill."""

    cluster: str
    drill_host: str
    drill: str
    result: str
    finished_at: str
    rto_seconds: Optional[float]
    rpo_seconds: Optional[float]

    @property
    def key(self):
        return (self.cluster, self.drill_host, self.drill)


@dataclasses.dataclass(frozen=True)
class _Series:
    drills: tuple


def _series_order(drill):
    return (drill.cluster, drill.drill_host, drill_report.DRILLS.index(drill.drill))


def textfile_text(report, earlier, window):
    """The textfile of ``report``: a series per drill of this run, and per drill of the last ``window`` earlier
    runs (history entries, oldest first) that this run did not drill, with its last values; the last success of
    each from the whole of ``earlier``."""
    previous = drill_report.last_successes(earlier)
    present = {drill.key for drill in report.drills}
    carried = {}
    for entry in earlier[len(earlier) - min(window, len(earlier)):]:
        for drill in entry["drills"]:
            key = (drill["cluster"], drill["drill_host"], drill["drill"])
            if key not in present:  # a later run replaces an earlier one's values
                carried[key] = _Carried(**{field.name: drill[field.name] for field in dataclasses.fields(_Carried)})
    series = sorted(list(report.drills) + list(carried.values()), key=_series_order)
    return drill_report.textfile(_Series(tuple(series)), previous), sorted(carried)


# --- writing ------------------------------------------------------------------------------------------------


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None  # not written yet (or cannot be: writing it then says why)
    except OSError as exc:
        raise PgdrError("cannot read %s: %s" % (path, first_line(exc))) from None


def _parts_on_disk(folder, run_id):
    """The parts of run ``run_id`` in the report folder; none when the run has no folder yet."""
    if not os.path.isdir(drill_report.run_folder(folder, run_id)):
        return []
    return drill_report.read_parts(folder, run_id)


def _write_whole(options, report, check_mode):
    """Write (or, in check mode, plan) the run's report.json, junit.xml, report.html and textfile; each file only
    when its content differs, so merging the same parts again changes nothing. Returns (paths, written, carried)."""
    earlier = drill_report.history(options.folder, limit=None)
    runs = [entry for entry in earlier["runs"] if entry["id"] != report.run_id]  # a run written again is not its own history
    skipped = [entry for entry in earlier["skipped"] if entry["run"] != report.run_id]  # its own parts, not merged until now
    shown = runs[len(runs) - min(len(runs), options.history - 1):] if options.history > 1 else []
    files = {JUNIT_NAME: drill_report.junit_xml(report), HTML_NAME: html.render(report.to_dict(), {"runs": shown, "skipped": skipped})}
    target = drill_report.run_folder(options.folder, report.run_id)
    paths = dict(json=os.path.join(target, drill_report.REPORT_NAME), junit=os.path.join(target, JUNIT_NAME),
                 html=os.path.join(target, HTML_NAME), textfile=options.textfile)
    contents = {paths["json"]: report.to_json(), paths["junit"]: files[JUNIT_NAME], paths["html"]: files[HTML_NAME]}
    carried = []
    if options.textfile is not None:
        folder = os.path.dirname(options.textfile)
        if not os.path.isdir(folder):
            raise PgdrError("the textfile's folder %s does not exist: create it (node_exporter's --collector.textfile.directory) or fix textfile" % folder)
        contents[options.textfile], carried = textfile_text(report, runs, options.history)
    written = [path for path, text in contents.items() if _read_text(path) != text]
    if check_mode:
        return paths, written, carried
    if set(written) - {options.textfile}:
        drill_report.write_run(options.folder, report, files)  # the JSON last: a run folder with report.json is complete
    if options.textfile in written:
        try:
            drill_report._write_atomic(options.textfile, contents[options.textfile])  # temporary file is .*.tmp: never read as .prom
        except OSError as exc:
            raise PgdrError("the report of run %s is written, but not the textfile %s: %s; make it writable by the controller's user"
                            % (report.run_id, options.textfile, first_line(exc))) from None
    return paths, written, carried


def _result(report, paths, written, check_mode, merged, complete, present, missing, carried):
    stats = drill_report.stats(report, paths)
    summary = report.summary
    if complete:
        msg = "drill run %s: %d drills on %d hosts, %d passed, %d failed; report %s" % (
            report.run_id, summary["drills"], summary["hosts"], summary["passed"], summary["failed"], paths["html"])
    else:
        msg = "part %d of %d of drill run %s: %d drills, %d failed; waiting for part%s %s" % (
            report.part_index, report.part_count, report.run_id, summary["drills"], summary["failed"], "s" if len(missing) > 1 else "",
            ", ".join(map(str, missing)))
    if check_mode and written:
        msg = "would write %s; %s" % (", ".join(written), msg)
    return dict(changed=bool(written), msg=msg, run_id=report.run_id, paths=paths, written=written, summary=summary, stats=stats,
                failures=stats["pgdr_drill_failures"], merged=merged, complete=complete, parts_present=present, parts_missing=missing,
                carried=[dict(cluster=key[0], drill_host=key[1], drill=key[2]) for key in carried])


def _merge_and_write(options, parts, check_mode):
    merged = drill_report.merge_parts(parts)
    paths, written, carried = _write_whole(options, merged, check_mode)
    return merged, paths, written, carried


def _check_counts(parts, count, run_id):
    counts = sorted({part.part_count for part in parts} - {count})
    if counts:
        raise PgdrError("run %s already holds parts of %s parts, this is of %d: the slices of one run must agree on part_count "
                        "(or use another run_id)" % (run_id, ", ".join(map(str, counts)), count))


def write_part(options, part, check_mode):
    """Write part i of n; when that makes every part present, merge them and write the run's report."""
    existing = _parts_on_disk(options.folder, part.run_id)
    _check_counts(existing, part.part_count, part.run_id)
    target = drill_report.run_folder(options.folder, part.run_id)
    path = os.path.join(target, part.file_name)
    written = [path] if _read_text(path) != part.to_json() else []
    if not check_mode:
        drill_report.write_run(options.folder, part)
        existing = _parts_on_disk(options.folder, part.run_id)  # read again: a slice that finished meanwhile is seen
    parts = [other for other in existing if other.part_index != part.part_index] + [part]
    present = sorted(other.part_index for other in parts)
    missing = [index for index in range(1, part.part_count + 1) if index not in present]
    if missing:
        paths = dict(json=path, junit=None, html=None, textfile=None)
        return _result(part, paths, written, check_mode, False, False, present, missing, [])
    # the last slice to finish merges; two finishing at once both write the same merged files, each atomically
    merged, paths, more, carried = _merge_and_write(options, parts, check_mode)
    return _result(merged, paths, written + more, check_mode, True, True, present, [], carried)


def merge_run(options, check_mode):
    """``merge: true``: merge the parts already in the run folder (a workflow node after the sliced job)."""
    parts = _parts_on_disk(options.folder, options.run_id)
    count = options.part_count if options.part_count > 1 else (parts[0].part_count if parts else None)
    if count is None:
        raise PgdrError("no part of run %s in %s: did the sliced job write its parts into this folder with this run_id?"
                        % (options.run_id, options.folder))
    _check_counts(parts, count, options.run_id)
    present = sorted(part.part_index for part in parts)
    missing = [index for index in range(1, count + 1) if index not in present]
    if missing:
        many = len(missing) > 1
        raise PgdrError("part%s %s of %d of run %s %s missing: wait for %s to finish, or run the sliced job again"
                        % ("s" if many else "", ", ".join(map(str, missing)), count, options.run_id, "are" if many else "is",
                           "their slices" if many else "its slice"))
    merged, paths, written, carried = _merge_and_write(options, parts, check_mode)
    return _result(merged, paths, written, check_mode, True, True, present, [], carried)


def run(options, check_mode, now=None):
    """The task's result dict; a PgdrError (one line naming the option or the drill field) on failure.
    ``now``: epoch seconds the run ends at (its report written), else the clock's."""
    check_options(options)
    now = time.time() if now is None else now
    if options.merge:
        return merge_run(options, check_mode)
    report = build(options, now)
    if report.is_part:
        return write_part(options, report, check_mode)
    paths, written, carried = _write_whole(options, report, check_mode)
    return _result(report, paths, written, check_mode, False, True, [], [], carried)
