# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a backup run leaves behind: the job's status (JSON) and its Prometheus textfile (docs/monitoring.md).

``next_status`` is pure: the previous status and this run's outcome make the new status. A failed or skipped run
keeps the last good values (last success, its size, the sets kept) visible and says why in ``last_reason``;
counters accumulate across runs. ``textfile`` renders a status in the Prometheus text exposition format for
node_exporter's textfile collector. The host-side runner imports this file: nothing here may import ``ansible``.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import tempfile
from typing import NamedTuple, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.schedule.timer import validate_job_name

FORMAT = 1
RESULTS = ("success", "failed", "skipped")
VERIFY_RESULTS = (None, "ok", "failed")
STATE_DIR = "/var/lib/pgdr/backup"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
WAL_KEYS = ("last_archived_at", "last_failed_at", "failed_count", "archived_count", "checked_at")
WATCH_KIND = "wal"  # a job that takes no backup and only reads the WAL archiver's state (backup_schedule kind wal)


class RunOutcome(NamedTuple):
    job: str
    cluster: str
    kind: str  # the set kind: logical-db, logical-cluster, logical-table, base, probackup
    repository: str  # the repository's describe()
    result: str  # success | failed | skipped
    reason: str  # one line; '' on success
    started_at: float  # epoch seconds
    finished_at: float
    backup_id: Optional[str] = None
    size_bytes: Optional[int] = None
    sets_kept: Optional[int] = None  # after the prune, of this job's kind in the repository
    bytes_kept: Optional[int] = None
    oldest_set_at: Optional[float] = None  # epoch of the oldest kept set
    pruned: tuple = ()  # backup ids removed by this run's prune
    verify: Optional[str] = None  # None (not run) | ok | failed
    wal: Optional[dict] = None  # pg_stat_archiver: last_archived_at, last_failed_at (epoch or None), failed_count, archived_count


def status_path(state_dir, name):
    return os.path.join(state_dir, "%s.json" % validate_job_name(name))


def textfile_path(textfile_dir, name):
    # node_exporter reads only files ending in .prom: the temporary file of write_atomic does not
    return os.path.join(textfile_dir, "pgdr_backup_%s.prom" % validate_job_name(name))


# --- the status ---------------------------------------------------------------------------------------------


def _check(outcome):
    if outcome.result not in RESULTS:
        raise PgdrError("a run's result must be one of %s, not %r" % (", ".join(RESULTS), outcome.result))
    if outcome.verify not in VERIFY_RESULTS:
        raise PgdrError("a run's verify must be ok, failed or None, not %r" % (outcome.verify,))
    if outcome.wal is not None and not isinstance(outcome.wal, dict):
        raise PgdrError("a run's wal must be a dict of %s, not %r" % (", ".join(WAL_KEYS), outcome.wal))


def _usable(previous):
    """The previous status if it is one this code wrote (a status of another format starts afresh)."""
    return previous if isinstance(previous, dict) and previous.get("format") == FORMAT else None


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _number_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


# the last good values a failed or skipped run carries over, each with what a value must be to be carried
# (a hand-edited status must not break the textfile: a wrong value is dropped, as if never known)
_GOOD = dict(
    last_success_timestamp=_number_or_none,
    last_success_duration_seconds=_number_or_none,
    last_backup_id=lambda value: value if isinstance(value, str) else None,
    last_size_bytes=_number_or_none,
    sets_kept=_number_or_none,
    bytes_kept=_number_or_none,
    oldest_set_timestamp=_number_or_none,
)


def next_status(previous, outcome):
    """The status after the run ``outcome``, given the ``previous`` status (a dict from load_status, or None)."""
    _check(outcome)
    before = _usable(previous) or {}
    runs_before = before.get("runs_total") if isinstance(before.get("runs_total"), dict) else {}
    runs = {result: _count(runs_before.get(result)) for result in RESULTS}
    runs[outcome.result] += 1
    status = dict(
        format=FORMAT,
        job=outcome.job,
        cluster=outcome.cluster,
        kind=outcome.kind,
        repository=outcome.repository,
        last_result=outcome.result,
        last_reason=outcome.reason or "",
        last_run_started_at=outcome.started_at,
        last_run_finished_at=outcome.finished_at,
        last_run_duration_seconds=round(max(0.0, outcome.finished_at - outcome.started_at), 3),
        runs_total=runs,
        # what this run removed (a prune may have run before a later step failed: it still happened)
        last_pruned=list(outcome.pruned),
        pruned_sets_total=_count(before.get("pruned_sets_total")) + len(outcome.pruned),
    )
    # the last good backup: only a successful run replaces it
    if outcome.result == "success":
        status.update(
            last_success_timestamp=outcome.finished_at,
            last_success_duration_seconds=status["last_run_duration_seconds"],
            last_backup_id=outcome.backup_id,
            last_size_bytes=outcome.size_bytes,
            sets_kept=outcome.sets_kept,
            bytes_kept=outcome.bytes_kept,
            oldest_set_timestamp=outcome.oldest_set_at,
        )
    else:
        status.update((key, check(before.get(key))) for key, check in _GOOD.items())
    # independent observations: a verify that failed must show even though it failed the run, and the archiver's
    # state is read fresh each run; a run that did not look keeps what the last look saw
    if outcome.verify is not None:
        status.update(verify=outcome.verify, verify_timestamp=outcome.finished_at)
    else:
        verify = before.get("verify") if before.get("verify") in VERIFY_RESULTS else None
        status.update(verify=verify, verify_timestamp=_number_or_none(before.get("verify_timestamp")) if verify else None)
    wal = outcome.wal if outcome.wal is not None else before.get("wal")
    status["wal"] = {key: _number_or_none(wal.get(key)) for key in WAL_KEYS} if isinstance(wal, dict) else None
    return status


def summary(status):
    """The module's ``status`` return value (backup_schedule's RETURN) of a status dict."""
    return dict(
        result=status.get("last_result"),
        reason=status.get("last_reason"),
        backup_id=status.get("last_backup_id"),
        size_bytes=status.get("last_size_bytes"),
        duration_seconds=status.get("last_run_duration_seconds"),
        sets_kept=status.get("sets_kept"),
        bytes_kept=status.get("bytes_kept"),
        pruned=status.get("last_pruned") or [],
        last_success_timestamp=status.get("last_success_timestamp"),
    )


# --- the Prometheus textfile --------------------------------------------------------------------------------

# (name, type, help); names follow Prometheus conventions: base units in the name, counters end in _total
METRICS = (
    ("pgdr_backup_last_success_timestamp_seconds", "gauge", "When the last successful backup run of the job finished (0: never)."),
    ("pgdr_backup_last_run_timestamp_seconds", "gauge", "When the last run of the job finished, whatever its result."),
    ("pgdr_backup_last_run_duration_seconds", "gauge", "How long the last run took, whatever its result."),
    ("pgdr_backup_last_duration_seconds", "gauge", "How long the last successful run took (backup, prune, verify)."),
    ("pgdr_backup_last_size_bytes", "gauge", "Size of the backup set the last successful run made."),
    ("pgdr_backup_last_run_success", "gauge", "1 if the last run succeeded, 0 if it failed; absent while the last run was skipped."),
    ("pgdr_backup_last_run_skipped", "gauge", "1 if the last run was skipped (not on the wanted server role, or the previous run still running)."),
    ("pgdr_backup_runs_total", "counter", "Runs of the job by result (success, failed, skipped)."),
    ("pgdr_backup_sets_kept", "gauge", "Complete backup sets of the job's cluster and kind in the repository after the last successful run."),
    ("pgdr_backup_kept_bytes", "gauge", "Bytes of the sets kept after the last successful run."),
    ("pgdr_backup_oldest_set_timestamp_seconds", "gauge", "When the oldest kept set was taken."),
    ("pgdr_backup_pruned_sets_total", "counter", "Backup sets removed by the job's prune."),
    ("pgdr_backup_verify_success", "gauge", "1 if the last verify of a new set matched its manifest, 0 if it did not."),
    ("pgdr_backup_last_verify_timestamp_seconds", "gauge", "When the last verify ran."),
    ("pgdr_wal_archive_last_archived_timestamp_seconds", "gauge", "When the server last archived a WAL file (pg_stat_archiver, read by the last run)."),
    ("pgdr_wal_archive_last_failed_timestamp_seconds", "gauge", "When archiving a WAL file last failed (pg_stat_archiver; 0: never)."),
    ("pgdr_wal_archive_failures_total", "counter", "Failed WAL archive attempts since the server's statistics were reset (pg_stat_archiver)."),
    ("pgdr_wal_archive_archived_total", "counter", "WAL files archived since the server's statistics were reset (pg_stat_archiver)."),
    ("pgdr_wal_archive_last_check_timestamp_seconds", "gauge", "When pg_stat_archiver was last read (by a backup run or the WAL watcher job)."),
)
# (label, status key). The job's name is the label backup_job, not job: Prometheus gives every scraped series the
# target labels job and instance (job is the scrape job, e.g. "node"), and renames an exposed job label to
# exported_job, so a label job would never be found under that name.
BACKUP_LABELS = (("backup_job", "job"), ("cluster", "cluster"), ("kind", "kind"), ("repository", "repository"))
# the WAL archive belongs to the cluster, not to the job's kind or repository: those labels would mislead
WAL_LABELS = (("backup_job", "job"), ("cluster", "cluster"))


def escape_label_value(value):
    """A label value as the text exposition format wants it: backslash, double quote and line feed escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise PgdrError("a metric value is not a finite number: %r" % (value,))
    text = "%.3f" % value  # timestamps and durations to the millisecond
    return text.rstrip("0").rstrip(".") if "." in text else text


def _labels(pairs):
    return "{%s}" % ",".join('%s="%s"' % (key, escape_label_value(value)) for key, value in pairs)


def _samples(status):
    """{metric name: [(extra label pairs, value)]} for the status (a metric without samples is not written)."""
    out = {name: [] for name, _type, _help in METRICS}

    def put(name, value, *extra):
        if value is not None:
            out[name].append((extra, value))

    result = status.get("last_result")
    put("pgdr_backup_last_success_timestamp_seconds", status.get("last_success_timestamp") or 0)
    put("pgdr_backup_last_run_timestamp_seconds", status.get("last_run_finished_at"))
    put("pgdr_backup_last_run_duration_seconds", status.get("last_run_duration_seconds"))
    put("pgdr_backup_last_duration_seconds", status.get("last_success_duration_seconds"))
    put("pgdr_backup_last_size_bytes", status.get("last_size_bytes"))
    if result in ("success", "failed"):
        put("pgdr_backup_last_run_success", 1 if result == "success" else 0)
    put("pgdr_backup_last_run_skipped", 1 if result == "skipped" else 0)
    runs = status.get("runs_total") or {}
    for name in RESULTS:  # every result, 0 included, so that increase() sees the first failure
        put("pgdr_backup_runs_total", _count(runs.get(name)), ("result", name))
    put("pgdr_backup_sets_kept", status.get("sets_kept"))
    put("pgdr_backup_kept_bytes", status.get("bytes_kept"))
    put("pgdr_backup_oldest_set_timestamp_seconds", status.get("oldest_set_timestamp"))
    put("pgdr_backup_pruned_sets_total", _count(status.get("pruned_sets_total")))
    if status.get("verify") in ("ok", "failed"):
        put("pgdr_backup_verify_success", 1 if status["verify"] == "ok" else 0)
        put("pgdr_backup_last_verify_timestamp_seconds", status.get("verify_timestamp"))
    wal = status.get("wal")
    if isinstance(wal, dict):
        put("pgdr_wal_archive_last_archived_timestamp_seconds", wal.get("last_archived_at"))
        put("pgdr_wal_archive_last_failed_timestamp_seconds", wal.get("last_failed_at") or 0)
        put("pgdr_wal_archive_failures_total", wal.get("failed_count"))
        put("pgdr_wal_archive_archived_total", wal.get("archived_count"))
        put("pgdr_wal_archive_last_check_timestamp_seconds", wal.get("checked_at"))
    if status.get("kind") == WATCH_KIND:
        # a WAL watcher takes no backup: backup metrics of it would only feed the backup alerts with a job that has none
        out = {name: values if name.startswith("pgdr_wal_") else [] for name, values in out.items()}
    return out


def textfile(status):
    """The Prometheus text exposition (format 0.0.4) of a status: HELP and TYPE, then the samples, no timestamps
    (node_exporter's textfile collector refuses samples with timestamps)."""
    samples = _samples(status)
    lines = []
    for name, kind, text in METRICS:
        if not samples[name]:
            continue
        keys = WAL_LABELS if name.startswith("pgdr_wal_") else BACKUP_LABELS
        base = [(label, status.get(key) or "") for label, key in keys]
        lines.append("# HELP %s %s" % (name, _escape_help(text)))
        lines.append("# TYPE %s %s" % (name, kind))
        for extra, value in samples[name]:
            lines.append("%s%s %s" % (name, _labels(base + list(extra)), _number(value)))
    return "\n".join(lines) + "\n"


# --- files --------------------------------------------------------------------------------------------------


def _owner_ids(owner):
    if owner is None:
        return None
    if isinstance(owner, str):
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            raise PgdrError("user %r does not exist on this host: create it or name the user the backup runs as" % owner) from None
        return entry.pw_uid, entry.pw_gid
    return tuple(owner)


def _make_folder(folder, ids):
    """Create ``folder`` and missing parents 0755 whatever the umask (node_exporter must read the textfile); the
    folder itself is given to ``ids`` (the job's user writes there later), parents stay as made (root's)."""
    missing = []
    path = folder
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue  # made meanwhile by another run
        os.chmod(path, 0o755)
        if ids is not None and path == folder and os.geteuid() == 0:
            os.chown(path, *ids)


def write_atomic(path, text, mode=0o644, owner=None):
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half of one: a temporary
    file in the same folder, fsync, rename, fsync of the folder. ``owner``: a user name or (uid, gid), applied
    when running as root. Raises PgdrError (one line) when it cannot."""
    folder = os.path.dirname(os.path.abspath(path))
    ids = _owner_ids(owner)
    temp = None
    try:
        _make_folder(folder, ids)
        # a name node_exporter ignores (not *.prom) and status readers never take for the status
        fd, temp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if ids is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), *ids)
            os.fsync(handle.fileno())
        os.rename(temp, path)
        temp = None
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise PgdrError("cannot write %s: %s; make %s writable by the user the job runs as" % (path, first_line(exc), folder)) from None
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass


def write_status(path, status, owner=None):
    """The status as JSON (0644: it holds no secret, and monitoring may read it)."""
    write_atomic(path, json.dumps(status, indent=2, sort_keys=True) + "\n", 0o644, owner)


def load_status(path):
    """The status saved at ``path``, or None when there is none or it cannot be read.

    A missing, unreadable or corrupt status (a full disk, a hand edit) is not fatal: the status only reports on
    backups, so a broken one must never stop the next backup. The run then starts afresh (counters from 0, no
    last success until one), and its write replaces the broken file.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None
    return status if isinstance(status, dict) else None
