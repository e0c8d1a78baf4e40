# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill report (docs/drill-reports.md, docs/drill-report.schema.json): its model, its checks, and what it is
rendered into for machines: JSON, JUnit XML, a Prometheus textfile and AWX ``set_stats``.

A drill run (one host or a fleet) makes one report. An AWX job sliced into n jobs makes n *parts* of one run (same
run id, part i of n); ``merge_parts`` makes them one report. A report folder keeps the history, one folder per run:
``<folder>/<run id>/report.json`` (a part is ``part-<i>-of-<n>.json`` until merged) beside its junit.xml and
report.html. Everything here is pure but ``write_run``, ``read_parts`` and ``history``, which read and write that
folder. No ``ansible`` import: the controller's code and tests import this file without Ansible.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import secrets
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line

FORMAT = 1
DRILLS = ("logical", "standalone", "pitr", "latest")
RESULTS = ("passed", "failed")
PHASES = ("select", "fetch", "deploy", "recovery", "verify", "cleanup")
PHASE_RESULTS = ("ok", "failed", "skipped")
CLEANUPS = ("done", "kept", "failed")
REPORT_NAME = "report.json"
DEFAULT_HISTORY = 30

# fullmatch only: '$' would let a trailing line feed through
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a folder name: no separator, no leading dot
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_PART = re.compile(r"part-(\d+)-of-(\d+)\.json")


# --- values -------------------------------------------------------------------------------------------------


def utc_text(epoch):
    """Epoch seconds as the report writes a time: '2026-12-07T08:00:00Z', milliseconds only when there are some."""
    millis = int(round(float(epoch) * 1000))
    seconds, rest = divmod(millis, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return "%s.%03dZ" % (text, rest) if rest else text + "Z"


def epoch_of(text):
    """The epoch seconds of a report time (see utc_text); PgdrError when it is not one."""
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise PgdrError("%r is not a report time (UTC, like 2026-12-07T08:00:00Z)" % (text,))
    try:
        whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        raise PgdrError("%r is not a report time: no such date or hour" % (text,)) from None
    return whole + (float(match.group(1)) if match.group(1) else 0.0)


def new_run_id(now, token=None):
    """A run id: the UTC start time and 6 random hex digits ('20261207T080000Z-ab12cd'), so runs sort by time and
    two runs started in the same second differ. ``token`` replaces the random part (tests, or a caller's own)."""
    epoch = now.timestamp() if hasattr(now, "timestamp") else now  # a datetime (aware) or epoch seconds
    run_id = "%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(epoch))), token if token is not None else secrets.token_hex(3))
    return validate_run_id(run_id)


def validate_run_id(run_id):
    """A run id is also a folder name: letters, digits, '.', '_', '-', not starting with a dot, at most 100."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise PgdrError("run id %r is not usable as a folder name: use letters, digits, '.', '_' and '-' (not first), at most 100" % (run_id,))
    return run_id


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_line(value):
    return isinstance(value, str) and "\n" not in value and "\r" not in value


def _time_text(value, field):
    """A time given as epoch seconds or as report text, as report text."""
    if _is_number(value):
        return utc_text(value)
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise PgdrError("%s must be a UTC time like 2026-12-07T08:00:00Z or epoch seconds, not %r" % (field, value))
    epoch_of(value)
    return value


# --- the model ----------------------------------------------------------------------------------------------


class _Checker:
    """Checks one object of the report, naming each field by its path ('drills[2].phases[0].seconds')."""

    def __init__(self, data, where, known, extra=False):
        if not isinstance(data, dict):
            raise PgdrError("%s must be an object, not %s" % (where, type(data).__name__))
        unknown = sorted(set(data) - set(known)) if not extra else []
        if unknown:
            raise PgdrError("%s.%s is not a field of a drill report format %d: remove it or fix its name" % (where, unknown[0], FORMAT))
        missing = [key for key in known if key not in data]
        if missing:
            raise PgdrError("%s.%s is missing" % (where, missing[0]))
        self.data = data
        self.where = where

    def fail(self, key, what):
        raise PgdrError("%s.%s must be %s, not %r" % (self.where, key, what, self.data.get(key)))

    def name(self, key):
        value = self.data[key]
        if not _is_line(value) or not value.strip():
            self.fail(key, "a non-empty one-line string")
        return value

    def line(self, key):
        if not _is_line(self.data[key]):
            self.fail(key, "a one-line string")
        return self.data[key]

    def one_of(self, key, choices):
        if self.data[key] not in choices:
            self.fail(key, "one of %s" % ", ".join(choices))
        return self.data[key]

    def seconds(self, key, null=False):
        value = self.data[key]
        if value is None and null:
            return None
        if not _is_number(value) or value < 0:
            self.fail(key, "a number of seconds >= 0" + (" or null" if null else ""))
        return value

    def count(self, key, null=False):
        value = self.data[key]
        if value is None and null:
            return None
        if not _is_count(value):
            self.fail(key, "an integer >= 0" + (" or null" if null else ""))
        return value

    def time(self, key):
        try:
            epoch_of(self.data[key])
        except PgdrError:
            self.fail(key, "a UTC time like 2026-12-07T08:00:00Z")
        return self.data[key]


_DRILL_KEYS = ("cluster", "source_host", "drill_host", "drill", "result", "reason", "started_at", "finished_at", "rto_seconds", "rpo_seconds",
               "phases", "set", "verified", "cleanup")


@dataclass(frozen=True)
class DrillResult:
    """One drill of one host. Times are report times (utc_text); phases, set and verified are JSON values
    (see the model in docs/drill-reports.md)."""

    cluster: str
    source_host: str
    drill_host: str
    drill: str  # logical | standalone | pitr | latest
    result: str  # passed | failed
    reason: str  # one line; '' when passed
    started_at: str
    finished_at: str
    rto_seconds: Optional[float]  # None when the drill failed before measuring
    rpo_seconds: Optional[float]
    phases: tuple  # ({"name", "seconds", "result"}, ...)
    set: Optional[dict]  # {"backup_id", "kind", "size_bytes", "age_seconds", "repository"}; None when none was selected
    verified: tuple  # ({"check", "ok", "detail"}, ...)
    cleanup: str  # done | kept | failed

    @property
    def key(self):
        """What identifies a drill in a run (and a series in Prometheus)."""
        return (self.cluster, self.drill_host, self.drill)

    @property
    def duration_seconds(self):
        return round(max(0.0, epoch_of(self.finished_at) - epoch_of(self.started_at)), 3)

    def describe(self):
        return "drill %s of %s on %s" % (self.drill, self.cluster, self.drill_host)

    def to_dict(self):
        data = {key: getattr(self, key) for key in _DRILL_KEYS}
        data["phases"] = [dict(phase) for phase in self.phases]
        data["verified"] = [dict(check) for check in self.verified]
        data["set"] = dict(self.set) if self.set is not None else None
        return data

    @classmethod
    def from_dict(cls, data, where="drill"):
        """A checked DrillResult of a drill's JSON object; PgdrError naming the field otherwise."""
        check = _Checker(data, where, _DRILL_KEYS)
        for key in ("cluster", "source_host", "drill_host"):
            check.name(key)
        check.one_of("drill", DRILLS)
        result = check.one_of("result", RESULTS)
        reason = check.line("reason")
        if result == "failed" and not reason.strip():
            check.fail("reason", "one line saying why the drill failed")
        if result == "passed" and reason:
            check.fail("reason", "'' for a passed drill")
        started, finished = epoch_of(check.time("started_at")), epoch_of(check.time("finished_at"))
        if finished < started:
            check.fail("finished_at", "at or after started_at %s" % data["started_at"])
        for key in ("rto_seconds", "rpo_seconds"):
            if check.seconds(key, null=True) is None and result == "passed":
                check.fail(key, "measured (a number) for a passed drill")
        phases = _phases(data["phases"], where + ".phases", result)
        verified = _verified(data["verified"], where + ".verified", result)
        backup_set = _backup_set(data["set"], where + ".set")
        if backup_set is None and result == "passed":
            raise PgdrError("%s.set must name the backup set a passed drill restored, not null" % where)
        check.one_of("cleanup", CLEANUPS)
        values = {key: data[key] for key in _DRILL_KEYS}
        values.update(phases=phases, verified=verified, set=backup_set)
        return cls(**values)


def _list(value, where):
    if not isinstance(value, list):
        raise PgdrError("%s must be a list, not %s" % (where, type(value).__name__))
    return value


def _phases(value, where, result):
    seen = set()
    phases = []
    for number, item in enumerate(_list(value, where)):
        check = _Checker(item, "%s[%d]" % (where, number), ("name", "seconds", "result"))
        name = check.one_of("name", PHASES)
        if name in seen:
            check.fail("name", "a phase not already listed")
        seen.add(name)
        check.seconds("seconds")
        if check.one_of("result", PHASE_RESULTS) == "failed" and result == "passed":
            check.fail("result", "ok or skipped in a passed drill")
        phases.append(dict(item))
    return tuple(phases)


def _verified(value, where, result):
    checks = []
    for number, item in enumerate(_list(value, where)):
        # a check may carry more for people (counts, names): only these three are read
        check = _Checker(item, "%s[%d]" % (where, number), ("check", "ok", "detail"), extra=True)
        check.name("check")
        if not isinstance(item["ok"], bool):
            check.fail("ok", "true or false")
        if not isinstance(item["detail"], str):
            check.fail("detail", "a string")
        if result == "passed" and not item["ok"]:
            check.fail("ok", "true in a passed drill")
        checks.append(dict(item))
    if result == "passed" and not checks:
        raise PgdrError("%s must list what proved a passed drill, not be empty" % where)
    return tuple(checks)


def _backup_set(value, where):
    if value is None:
        return None
    check = _Checker(value, where, ("backup_id", "kind", "size_bytes", "age_seconds", "repository"), extra=True)
    check.name("backup_id")
    check.name("kind")
    check.count("size_bytes", null=True)
    check.seconds("age_seconds", null=True)
    check.line("repository")
    return dict(value)


def _drill(value, where):
    # a DrillResult made by hand is checked too: a report must hold only what check_report would accept
    return DrillResult.from_dict(value.to_dict() if isinstance(value, DrillResult) else value, where)


def _order(drill):
    return (drill.cluster, drill.drill_host, DRILLS.index(drill.drill))


def summarize(drills):
    """The summary of a report's drills: counts, the worst RTO and RPO of the drills that passed, distinct drill hosts."""
    passed = [drill for drill in drills if drill.result == "passed"]
    rtos = [drill.rto_seconds for drill in passed if drill.rto_seconds is not None]
    rpos = [drill.rpo_seconds for drill in passed if drill.rpo_seconds is not None]
    return dict(drills=len(drills), passed=len(passed), failed=len(drills) - len(passed), worst_rto_seconds=max(rtos) if rtos else None,
                worst_rpo_seconds=max(rpos) if rpos else None, hosts=len({drill.drill_host for drill in drills}))


@dataclass(frozen=True)
class Report:
    run_id: str
    started_at: str
    finished_at: str
    controller: str
    part_index: int
    part_count: int
    drills: tuple  # DrillResult, in the order cluster, drill host, drill

    @property
    def summary(self):
        return summarize(self.drills)

    @property
    def is_part(self):
        return self.part_count > 1

    @property
    def file_name(self):
        """The report's JSON file in its run folder: report.json, or part-<i>-of-<n>.json for a part of a sliced run."""
        return "part-%d-of-%d.json" % (self.part_index, self.part_count) if self.is_part else REPORT_NAME

    def to_dict(self):
        return dict(format=FORMAT,
                    run=dict(id=self.run_id, started_at=self.started_at, finished_at=self.finished_at, controller=self.controller,
                             part=dict(index=self.part_index, count=self.part_count)),
                    summary=self.summary,
                    drills=[drill.to_dict() for drill in self.drills])

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _unique(drills, where):
    seen = {}
    for number, drill in enumerate(drills):
        if drill.key in seen:
            raise PgdrError("%s[%d]: %s is already %s[%d]: a run drills each (cluster, drill host, drill) once"
                            % (where, number, drill.describe(), where, seen[drill.key]))
        seen[drill.key] = number


def build_report(drills, run_id, started_at, finished_at, controller, part_index=1, part_count=1):
    """The report of a run (or of part ``part_index`` of ``part_count`` of a sliced run). ``drills``: DrillResult or
    their JSON objects (checked); times: epoch seconds or report times. Drills are ordered by cluster, drill host,
    drill (logical, standalone, pitr, latest), so parts merge into the report an unsliced run would have made."""
    checked = [_drill(drill, "drills[%d]" % number) for number, drill in enumerate(drills)]
    _unique(checked, "drills")
    validate_run_id(run_id)
    started, finished = _time_text(started_at, "run.started_at"), _time_text(finished_at, "run.finished_at")
    if epoch_of(finished) < epoch_of(started):
        raise PgdrError("run.finished_at %s is before run.started_at %s" % (finished, started))
    if not _is_line(controller) or not controller.strip():
        raise PgdrError("run.controller must be the controller's name (one line), not %r" % (controller,))
    if not (_is_count(part_index) and _is_count(part_count) and 1 <= part_index <= part_count):
        raise PgdrError("run.part must be index i of count n with 1 <= i <= n, not %r of %r" % (part_index, part_count))
    return Report(run_id, started, finished, controller, part_index, part_count, tuple(sorted(checked, key=_order)))


def check_report(data):
    """The Report of a loaded report.json (a dict); PgdrError in one line naming the field that is wrong."""
    if not isinstance(data, dict):
        raise PgdrError("a drill report must be a JSON object, not %s" % type(data).__name__)
    version = data.get("format")
    if _is_count(version) and version > FORMAT:
        raise PgdrError("drill report format %d is newer than this collection reads (%d): upgrade pgdr.backup" % (version, FORMAT))
    top = _Checker(data, "report", ("format", "run", "summary", "drills"))
    if version != FORMAT:
        top.fail("format", str(FORMAT))
    run = _Checker(data["run"], "run", ("id", "started_at", "finished_at", "controller", "part"))
    if not isinstance(run.data["id"], str) or not _RUN_ID.fullmatch(run.data["id"]):
        run.fail("id", "a run id (letters, digits, '.', '_', '-', not starting with a dot)")
    run.time("started_at")
    run.time("finished_at")
    run.name("controller")
    part = _Checker(run.data["part"], "run.part", ("index", "count"))
    part.count("index")
    part.count("count")
    if not 1 <= part.data["index"] <= part.data["count"]:
        part.fail("index", "between 1 and run.part.count %r" % part.data["count"])
    drills = [DrillResult.from_dict(item, "drills[%d]" % number) for number, item in enumerate(_list(data["drills"], "drills"))]
    report = build_report(drills, run.data["id"], run.data["started_at"], run.data["finished_at"], run.data["controller"],
                          part.data["index"], part.data["count"])
    summary = _Checker(data["summary"], "summary", tuple(report.summary))
    for key, value in report.summary.items():
        if summary.data[key] != value or isinstance(summary.data[key], bool):
            summary.fail(key, "%r as its drills say" % (value,))
    return report


def load_report(text):
    """The Report of report.json's text; PgdrError (one line) when it is not JSON or not a report."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PgdrError("not JSON: %s" % first_line(exc)) from None
    return check_report(data)


# --- parts of a sliced run ----------------------------------------------------------------------------------


def merge_parts(reports):
    """One report of the parts of a sliced run (each a Report or a loaded dict): all of one run id and one part
    count, each index 1..n exactly once. Drills are ordered as build_report orders them; the run spans the
    earliest start to the latest finish; the controllers of the parts are listed (slices run on several nodes)."""
    parts = [report if isinstance(report, Report) else check_report(report) for report in reports]
    if not parts:
        raise PgdrError("no part to merge: give the parts a sliced drill run wrote")
    ids = sorted({part.run_id for part in parts})
    if len(ids) > 1:
        raise PgdrError("the parts are of different runs (%s): merge the parts of one run id" % ", ".join(ids))
    counts = sorted({part.part_count for part in parts})
    if len(counts) > 1:
        raise PgdrError("the parts of run %s disagree on the number of parts (%s): merge the parts of one sliced job"
                        % (ids[0], ", ".join(map(str, counts))))
    count = counts[0]
    indexes = [part.part_index for part in parts]
    twice = sorted({index for index in indexes if indexes.count(index) > 1})
    if twice:
        raise PgdrError("part %d of %d of run %s is given twice: give each part once" % (twice[0], count, ids[0]))
    missing = [index for index in range(1, count + 1) if index not in indexes]
    if missing:
        # a slice relaunched alone is outside the sliced job's workflow, so it would get another run id: run the job again
        many = len(missing) > 1
        raise PgdrError("part%s %s of %d of run %s %s missing: wait for %s to finish, or run the sliced job again"
                        % ("s" if many else "", ", ".join(map(str, missing)), count, ids[0], "are" if many else "is", "their slices" if many else "its slice"))
    parts.sort(key=lambda part: part.part_index)
    seen = {}
    for part in parts:
        for drill in part.drills:
            if drill.key in seen:
                raise PgdrError("%s is in parts %d and %d of run %s: a host belongs to one slice" % (drill.describe(), seen[drill.key], part.part_index,
                                                                                                     ids[0]))
            seen[drill.key] = part.part_index
    controllers = []
    for part in parts:
        if part.controller not in controllers:
            controllers.append(part.controller)
    started = min(parts, key=lambda part: epoch_of(part.started_at)).started_at
    finished = max(parts, key=lambda part: epoch_of(part.finished_at)).finished_at
    return build_report([drill for part in parts for drill in part.drills], ids[0], started, finished, ", ".join(controllers))


# --- the report folder --------------------------------------------------------------------------------------


def run_folder(folder, run_id):
    return os.path.join(folder, validate_run_id(run_id))


def _write_atomic(path, text):
    """A reader sees the old file or the new one, never half of one: temporary file, fsync, rename, fsync of the folder."""
    folder = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)  # a report holds no secret; a web server may publish the folder
            os.fsync(handle.fileno())
        os.rename(temp, path)
        temp = None
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass  # the error that brought us here is the one to report


def write_run(folder, report, files=None):
    """Write ``files`` ({file name: text}, e.g. junit.xml, report.html) and then the report's JSON (report.json, or
    part-<i>-of-<n>.json for a part) into ``<folder>/<run id>/``, each atomically; the JSON last, so a run folder
    whose JSON exists is complete. Returns {file name: path}, the JSON included."""
    files = dict(files or {})
    for name in files:
        if not isinstance(name, str) or not _RUN_ID.fullmatch(name) or name == report.file_name or _PART.fullmatch(name):
            raise PgdrError("cannot write %r into a run folder: give a plain file name other than report.json and part-*.json" % (name,))
    target = run_folder(folder, report.run_id)
    paths = {}
    try:
        os.makedirs(target, 0o755, exist_ok=True)
        for name, text in list(files.items()) + [(report.file_name, report.to_json())]:
            paths[name] = os.path.join(target, name)
            _write_atomic(paths[name], text)
    except OSError as exc:
        raise PgdrError("cannot write the drill report into %s: %s; make the report folder writable by the controller's user"
                        % (target, first_line(exc))) from None
    return paths


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return load_report(handle.read())
    except OSError as exc:
        raise PgdrError("cannot read %s: %s" % (path, first_line(exc))) from None
    except PgdrError as exc:
        raise PgdrError("%s: %s" % (path, exc.msg)) from None


def read_parts(folder, run_id):
    """The parts a sliced run's jobs wrote into its run folder (for merge_parts); PgdrError when one cannot be read."""
    target = run_folder(folder, run_id)
    try:
        names = sorted(name for name in os.listdir(target) if _PART.fullmatch(name))
    except OSError as exc:
        raise PgdrError("cannot read the parts of run %s in %s: %s" % (run_id, folder, first_line(exc))) from None
    return [_read_json(os.path.join(target, name)) for name in names]


def _entry(report):
    """What the history keeps of a run: enough for charts of RTO and RPO per run and per host."""
    return dict(id=report.run_id, started_at=report.started_at, finished_at=report.finished_at, summary=report.summary,
                drills=[dict(cluster=drill.cluster, drill_host=drill.drill_host, drill=drill.drill, result=drill.result,
                             finished_at=drill.finished_at, rto_seconds=drill.rto_seconds, rpo_seconds=drill.rpo_seconds)
                        for drill in report.drills])


def _run_report(path, name):
    """The report of the run folder ``path``; PgdrError saying why there is none that can be used."""
    if not os.path.exists(os.path.join(path, REPORT_NAME)):
        try:
            parts = [entry for entry in os.listdir(path) if _PART.fullmatch(entry)]
        except OSError as exc:
            raise PgdrError("cannot read %s: %s" % (path, first_line(exc))) from None
        raise PgdrError("no report.json: %s" % ("%d parts not merged yet" % len(parts) if parts else "an unfinished run"))
    report = _read_json(os.path.join(path, REPORT_NAME))
    if report.run_id != name:
        raise PgdrError("its report.json is of run %s: a copied folder?" % report.run_id)
    return report


def history(folder, limit=DEFAULT_HISTORY):
    """The last ``limit`` runs of a report folder (all when None), oldest first: {"runs": [entry], "skipped":
    [{"run", "reason"}]}. A run folder that cannot be read (corrupt JSON, a report of a newer format, parts never
    merged) is skipped and said so, never fatal: a broken old run must not stop today's report. Entries that are
    not run folders (temporary files, other files) are ignored. A missing folder has no history yet."""
    runs, skipped = [], []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        raise PgdrError("cannot read the report folder %s: %s" % (folder, first_line(exc))) from None
    for name in names:
        path = os.path.join(folder, name)
        if not _RUN_ID.fullmatch(name) or not os.path.isdir(path):
            continue
        try:
            runs.append(_entry(_run_report(path, name)))
        except PgdrError as exc:
            skipped.append(dict(run=name, reason=exc.msg))
    runs.sort(key=lambda entry: (epoch_of(entry["started_at"]), entry["id"]))
    return dict(runs=runs if limit is None else runs[len(runs) - min(limit, len(runs)):], skipped=skipped)


def last_successes(runs):
    """{(cluster, drill host, drill): epoch of its last passed drill} over ``runs``: Reports or history entries.
    textfile takes it as ``previous``, so that a drill that fails now still shows when it last passed."""
    last = {}
    for run in runs:
        drills = [drill.to_dict() for drill in run.drills] if isinstance(run, Report) else run["drills"]
        for drill in drills:
            if drill["result"] == "passed":
                key = (drill["cluster"], drill["drill_host"], drill["drill"])
                last[key] = max(last.get(key, 0.0), epoch_of(drill["finished_at"]))
    return last


# --- JUnit XML ----------------------------------------------------------------------------------------------

# XML 1.0 allows tab, line feed, carriage return and these ranges; anything else (NUL, ESC, a lone surrogate)
# makes the file unreadable to every parser, so it is removed
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value):
    return _NOT_XML.sub("", str(value))


def _seconds_text(value):
    return "%.3f" % value


def _phase_lines(drill):
    lines = ["%-9s %-8s %.3f s" % (phase["name"], phase["result"], phase["seconds"]) for phase in drill.phases]
    return lines or ["(no phase ran)"]


def _out_lines(drill):
    def measured(value):
        return "not measured" if value is None else "%.3f s" % value
    lines = ["RTO %s" % measured(drill.rto_seconds), "RPO %s" % measured(drill.rpo_seconds),
             "set %s" % ("%s (%s, %s)" % (drill.set["backup_id"], drill.set["kind"], drill.set["repository"]) if drill.set else "none selected"),
             "source %s" % drill.source_host, "cleanup %s" % drill.cleanup]
    lines += ["verified %s: %s%s" % ("ok" if check["ok"] else "FAILED", check["check"], " (%s)" % check["detail"] if check["detail"] else "")
              for check in drill.verified]
    return lines


def junit_xml(report):
    """JUnit XML as Jenkins, GitLab and AWX read it: a testsuite per drill host, a testcase per drill (classname
    pgdr.drill.<cluster>, name '<drill> on <drill host>'), a failure with the reason as its message and the
    phases as its text, and RTO, RPO and the set in system-out."""
    hosts = {}
    for drill in report.drills:
        hosts.setdefault(drill.drill_host, []).append(drill)
    total_time = sum(drill.duration_seconds for drill in report.drills)
    summary = report.summary
    root = ET.Element("testsuites", dict(name=xml_text("pgdr drill run %s" % report.run_id), tests=str(summary["drills"]),
                                         failures=str(summary["failed"]), errors="0", time=_seconds_text(total_time)))
    for number, host in enumerate(sorted(hosts)):
        drills = hosts[host]
        first = min((drill.started_at for drill in drills), key=epoch_of)
        suite = ET.SubElement(root, "testsuite", dict(
            name=xml_text(host), id=str(number), tests=str(len(drills)), failures=str(sum(drill.result == "failed" for drill in drills)), errors="0",
            skipped="0", time=_seconds_text(sum(drill.duration_seconds for drill in drills)), timestamp=first[:19], hostname=xml_text(host)))
        for drill in drills:
            case = ET.SubElement(suite, "testcase", dict(classname=xml_text("pgdr.drill.%s" % drill.cluster),
                                                         name=xml_text("%s on %s" % (drill.drill, drill.drill_host)),
                                                         time=_seconds_text(drill.duration_seconds)))
            if drill.result == "failed":
                failure = ET.SubElement(case, "failure", dict(message=xml_text(drill.reason), type="DrillFailed"))
                failure.text = xml_text("\n".join([drill.reason, ""] + _phase_lines(drill)))
            ET.SubElement(case, "system-out").text = xml_text("\n".join(_out_lines(drill)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- the Prometheus textfile --------------------------------------------------------------------------------

# (name, help); all gauges, base units in the names (docs/monitoring.md's conventions)
METRICS = (
    ("pgdr_drill_last_success_timestamp_seconds", "When the drill last passed on the host (0: never, as far as the report history goes)."),
    ("pgdr_drill_last_run_timestamp_seconds", "When the drill last ran on the host, whatever its result."),
    ("pgdr_drill_last_result", "1 if the last run of the drill passed, 0 if it failed."),
    ("pgdr_drill_rto_seconds", "Recovery time of the last run of the drill, backup selected to restored cluster verified (only when it passed)."),
    ("pgdr_drill_rpo_seconds", "Recovery point of the last run of the drill: its reference time (the start, for latest) minus the newest "
                               "commit it recovered (only when it passed)."),
)


def escape_label_value(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = "%.3f" % float(value)
    return text.rstrip("0").rstrip(".")


def textfile(report, previous=None):
    """The Prometheus text exposition (0.0.4, no timestamps: node_exporter's textfile collector refuses them) of a
    report, one series per drill, labels cluster, host (the drill host) and drill. ``previous``: the last successes
    before this run (``last_successes(history(folder, None)["runs"])``), so that a drill that failed in this run
    still shows when it last passed; without it a failed drill's last success is 0."""
    previous = previous or {}
    samples = {name: [] for name, _help in METRICS}
    for drill in report.drills:
        labels = '{cluster="%s",host="%s",drill="%s"}' % tuple(escape_label_value(value) for value in (drill.cluster, drill.drill_host, drill.drill))
        finished = epoch_of(drill.finished_at)
        passed = drill.result == "passed"
        last = max(finished if passed else 0.0, previous.get(drill.key, 0.0))
        samples["pgdr_drill_last_success_timestamp_seconds"].append((labels, last))
        samples["pgdr_drill_last_run_timestamp_seconds"].append((labels, finished))
        samples["pgdr_drill_last_result"].append((labels, 1 if passed else 0))
        if passed:
            samples["pgdr_drill_rto_seconds"].append((labels, drill.rto_seconds))
            samples["pgdr_drill_rpo_seconds"].append((labels, drill.rpo_seconds))
    lines = []
    for name, text in METRICS:
        # HELP and TYPE even without samples (a run without drills): the file then still says what it is
        lines += ["# HELP %s %s" % (name, text), "# TYPE %s gauge" % name]
        lines += ["%s%s %s" % (name, labels, _number(value)) for labels, value in samples[name]]
    return "\n".join(lines) + "\n"


# --- set_stats ----------------------------------------------------------------------------------------------


def stats(report, paths):
    """The fleet summary a role hands to ``set_stats`` for the next nodes of an AWX workflow: flat keys (a workflow
    node's extra variables), the failures one line each, and ``paths`` ({"json": ..., "junit": ..., "html": ...})."""
    summary = report.summary
    return dict(
        pgdr_drill_run_id=report.run_id,
        pgdr_drill_drills=summary["drills"],
        pgdr_drill_passed=summary["passed"],
        pgdr_drill_failed=summary["failed"],
        pgdr_drill_hosts=summary["hosts"],
        pgdr_drill_worst_rto_seconds=summary["worst_rto_seconds"],
        pgdr_drill_worst_rpo_seconds=summary["worst_rpo_seconds"],
        pgdr_drill_failures=["%s: %s" % (drill.describe(), drill.reason) for drill in report.drills if drill.result == "failed"],
        pgdr_drill_report_paths=dict(paths),
    )
