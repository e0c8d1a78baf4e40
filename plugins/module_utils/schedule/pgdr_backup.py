# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr-backup``, the program a systemd timer or a cron line runs for a backup job, without the controller::

    pgdr-backup --job FILE run [--random-delay SECONDS]
    pgdr-backup --job FILE status          print the job's last status (JSON)

A run: wait a random delay (cron has no RandomizedDelaySec) → take the job's lock → check the server's role →
back up → verify the new set (when asked) → prune → write the status JSON and the Prometheus textfile.

Invariants:

- The backup, the verify and the prune are the very code the modules run (``logical.dump_set``,
  ``physical.base_set``, ``probackup.instance``, ``catalog.actions``), typed from the job file as the modules type
  their params: a scheduled set is the same set an Ansible task would have written.
- Nothing is pruned unless this run's backup succeeded (and, with verify, re-hashed clean): retention never
  deletes an old set before its replacement is in the repository, complete and proven.
- A run that finds the previous one of the same job still running is skipped, and says so in the status; so is
  a run on a server in the wrong role (``run_on``). Both exit 0: nothing is wrong.
- A failed run exits 1 with one line on stderr, and its status keeps the last success visible
  (``status.next_status``), so an alert on the age of the last success keeps counting from the right moment.
- No secret is printed: the job file's options are never echoed, and messages are PgdrError's one-liners.

Like pgdr-wal it must stay importable without Ansible, and is packed into a zipapp with what it imports
(``schedule/installer.py``, through ``core.zipapp.closure``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import actions as catalog_actions
from ansible_collections.pgdr.backup.plugins.module_utils.core import locks
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import ConnectionOptions, ConnectionParams
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set
from ansible_collections.pgdr.backup.plugins.module_utils.physical import base_set
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import catalog as probackup_catalog
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance as probackup_instance
from ansible_collections.pgdr.backup.plugins.module_utils.probackup.catalog import parse_tool_time
from ansible_collections.pgdr.backup.plugins.module_utils.schedule import status as run_status
from ansible_collections.pgdr.backup.plugins.module_utils.schedule.job import PROGRAM_NAME, load_job
from ansible_collections.pgdr.backup.plugins.module_utils.sets.backup_set import new_backup_id, parse_iso_utc, set_status
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import open_repository

EXIT_OK, EXIT_FAILED, EXIT_BAD_JOB = 0, 1, 2
PROBACKUP_GOOD = ("OK", "DONE")


# --- the server ------------------------------------------------------------------------------------


def connection_of(job):
    """How the runner reaches the server for the role check and the archiver's figures: the backup's own connection;
    for pg_probackup the server the tool backs up - the instance's pghost, pgport, pguser, pgdatabase settings in
    the catalog (libpq defaults where the instance has none, as the tool itself does)."""
    backup = job.backup
    if job.kind == "probackup":
        tool = probackup_catalog.Probackup.detect(backup["binary"], backup["backup_path"])
        config = tool.show_config(backup["instance"])
        if config is None:
            raise PgdrError("instance %s is not in the catalog %s: add it (pgdr.backup.probackup_instance state present) or remove this job"
                            % (backup["instance"], backup["backup_path"]))
        port = config.get("pgport")
        backup = dict(login_host=config.get("pghost") or None, login_port=int(port) if port else None, login_user=config.get("pguser") or None,
                      login_db=config.get("pgdatabase") or None, connect_timeout=10)
    return ConnectionParams(typed(ConnectionOptions, backup))


def server_facts(job):
    """(in_recovery, wal): the server's role, and pg_stat_archiver's figures (None when archive_mode is off)."""
    conn = connection_of(job).connect(autocommit=True)
    try:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('archive_mode'), extract(epoch FROM a.last_archived_time)::float8,"
            " extract(epoch FROM a.last_failed_time)::float8, a.failed_count, a.archived_count FROM pg_stat_archiver a"
        ).fetchone()
    finally:
        conn.close()
    in_recovery, archive_mode, last_archived, last_failed, failed, archived = row
    wal = None if archive_mode == "off" else dict(last_archived_at=last_archived, last_failed_at=last_failed, failed_count=failed,
                                                  archived_count=archived, checked_at=time.time())
    return in_recovery, wal


def wrong_role(run_on, in_recovery):
    """Why this server must not run the job (its role is not ``run_on``), or None."""
    if run_on == "primary" and in_recovery:
        return "the server is a standby (pg_is_in_recovery) and the job runs on the primary only (run_on: primary)"
    if run_on == "standby" and not in_recovery:
        return "the server is a primary and the job runs on a standby only (run_on: standby)"
    return None


# --- the steps -------------------------------------------------------------------------------------


def fresh_backup_id(job, repository, sleep=time.sleep):
    """A backup id no set of the job's cluster has yet. Ids have one-second resolution, and a module given the id of a
    complete set returns that set unchanged: two runs within a second would otherwise report one set twice."""
    repo = open_repository(repository)
    try:
        for _attempt in range(5):
            backup_id = new_backup_id()
            if set_status(repo, job.backup["cluster"], backup_id) == "absent":
                return backup_id
            sleep(1.0)
    finally:
        repo.close()
    raise PgdrError("no free backup id in %s after 5 seconds: is another program writing sets of cluster %s every second?"
                    % (repository_label(job), job.backup["cluster"]))


def take_backup(job):
    """Run the job's backup; dict(backup_id, size_bytes) of the new set."""
    if job.kind == "logical":
        options, connection, repository = dump_set.options_from(job.backup)
        options = dataclasses.replace(options, backup_id=fresh_backup_id(job, repository))
        result = dump_set.run(options, connection, repository, check_mode=False)
    elif job.kind == "base":
        options, connection, repository = base_set.options_from(job.backup)
        options = dataclasses.replace(options, backup_id=fresh_backup_id(job, repository))
        result = base_set.run(options, connection, repository, check_mode=False)
    else:
        options = probackup_instance.options_from(dict(job.backup, action="backup"))
        result = probackup_instance.run(options, check_mode=False)
        return dict(backup_id=result.get("backup_id"), size_bytes=(result.get("backup") or {}).get("data_bytes"))
    if result.get("skipped_reason"):  # the module's own lock: a backup of this source into this repository is running
        raise Skipped(result["skipped_reason"])
    manifest = result.get("manifest") or {}
    size = sum(item["size"] for item in manifest.get("files", ())) if manifest else result.get("bytes")
    return dict(backup_id=result["backup_id"], size_bytes=size)


def set_kind(job):
    """The kind of set the job makes (the metrics' ``kind`` label: one per job, whatever a run did); ``wal`` for the watcher."""
    if job.kind == "logical":
        return {"cluster": "logical-cluster", "table": "logical-table"}.get(job.backup.get("mode"), "logical-db")
    return job.kind


def repository_label(job):
    """Where the job's sets go, for the metrics' ``repository`` label: from the options alone (stable for every run,
    and no connection to an SFTP server or S3 just to name it)."""
    if job.kind == "probackup":
        return "probackup:%s#%s" % (job.backup["backup_path"], job.backup["instance"])
    if job.kind == run_status.WATCH_KIND:
        return ""  # watches the server's archiver, whatever the archive is
    repo = job.backup["repository"]
    if repo["type"] == "s3":
        return "s3://%s/%s" % (repo["bucket"], repo.get("prefix") or "")
    if repo["type"] == "sftp":
        return "sftp://%s@%s:%s%s" % (repo.get("user"), repo.get("host"), repo.get("port"), repo.get("path"))
    return "local:%s" % repo.get("path")


CATALOG_OPTIONS = ("backup_id", "kind", "since", "until", "newest_before", "pin_expires", "keep_last", "keep_within", "max_age", "archive")


def catalog_params(job, action, **task):
    """backup_catalog's params for ``action`` on the job's sets: the job's repository and cluster; for prune the job's rules,
    for verify the job's WAL archive (so a base set's WAL coverage is checked where it is pruned)."""
    params = dict.fromkeys(CATALOG_OPTIONS, None)
    params["incomplete_grace"] = "1d"
    if action == "prune":
        params.update(job.prune)
    elif action == "verify" and job.prune:
        params["archive"] = job.prune.get("archive")
    params.update(task, action=action, repository=job.backup["repository"], cluster=job.backup["cluster"])
    return params


def catalog_run(job, action, **task):
    options, repository = catalog_actions.options_from(catalog_params(job, action, **task))
    return catalog_actions.run(options, repository, check_mode=False)


def verify_set(job, backup_id):
    """Re-hash the new set against its manifest (and, for a base set with an archive to prune, its WAL coverage)."""
    catalog_run(job, "verify", backup_id=backup_id)


def prune(job):
    """The job's retention; the ids it deleted (sets, then WAL below the oldest kept base set when the job names the archive)."""
    if not job.prune:
        return []
    return catalog_run(job, "prune").get("deleted", [])


def kept_sets(job):
    """(count, bytes, oldest epoch) of the complete sets like the new one (same kind, same database) that remain."""
    if job.kind == "probackup":
        shown = probackup_instance.run(probackup_instance.options_from(dict(job.backup, action="show")), check_mode=False)
        good = [b for b in shown.get("backups", ()) if b.get("status") in PROBACKUP_GOOD]
        starts = [parse_tool_time(b.get("start_time")) for b in good]
        starts = [moment.timestamp() for moment in starts if moment is not None]
        return len(good), sum(b.get("data_bytes") or 0 for b in good), min(starts) if starts else None
    kind = set_kind(job)
    database = job.backup.get("database") if kind != "logical-cluster" else None
    sets = catalog_run(job, "list")["sets"]
    same = [s for s in sets if s["complete"] and s["kind"] == kind and (database is None or s["database"] in (None, database))]
    finished = [parse_iso_utc(s["finished_at"]).timestamp() for s in same if s["finished_at"]]
    return len(same), sum(s["size"] or 0 for s in same), min(finished) if finished else None


class Skipped(Exception):
    """This run does nothing, by design (the previous one still runs, or the server is in the other role)."""


# --- one run ----------------------------------------------------------------------------------------


def run_job(job, job_file, random_delay=0, sleep=time.sleep):
    """Run the job once and write its status; the exit code."""
    if random_delay > 0:
        sleep(random.uniform(0, random_delay))
    outcome = dict(job=job.name, kind=set_kind(job), cluster=job.backup.get("cluster") or job.backup.get("instance"), repository=repository_label(job),
                   started_at=time.time())
    with locks.exclusive("%s job %s" % (PROGRAM_NAME, job.name), os.path.realpath(job_file)) as (taken, holder):
        if not taken:
            return finish(job, outcome, "skipped", "the previous run of job %s is still running (%s)" % (job.name, holder or "pid unknown"))
        try:
            in_recovery, wal = server_facts(job)
            outcome["wal"] = wal
            reason = wrong_role(job.run_on, in_recovery)
            if reason:
                raise Skipped(reason)
            if job.kind == run_status.WATCH_KIND:
                if wal is None:
                    raise PgdrError("archive_mode is off on %s: there is no WAL archiving to watch; turn it on (wal_archiving role) "
                                    "or remove this job" % connection_of(job).describe())
                return finish(job, outcome, "success", "")
            backup = take_backup(job)
            outcome.update(backup)
            if job.verify and job.kind != "probackup":  # pg_probackup validates its own backups unless no_validate
                try:
                    verify_set(job, backup["backup_id"])
                    outcome["verify"] = "ok"
                except PgdrError:
                    outcome["verify"] = "failed"
                    raise
            outcome["pruned"] = tuple(prune(job))
            outcome["sets_kept"], outcome["bytes_kept"], outcome["oldest_set_at"] = kept_sets(job)
        except Skipped as exc:
            return finish(job, outcome, "skipped", str(exc))
        except PgdrError as exc:
            return finish(job, outcome, "failed", exc.msg)
        except Exception as exc:  # a program without a traceback: the one line says what broke, the status keeps it
            return finish(job, outcome, "failed", "%s: %s" % (type(exc).__name__, first_line(exc)))
    return finish(job, outcome, "success", "")


def finish(job, outcome, result, reason):
    outcome.update(result=result, reason=reason, finished_at=time.time())
    path = run_status.status_path(job.state_dir, job.name)
    status = run_status.next_status(run_status.load_status(path), run_status.RunOutcome(**outcome))
    try:
        run_status.write_status(path, status)
        if job.textfile_dir:
            run_status.write_atomic(run_status.textfile_path(job.textfile_dir, job.name), run_status.textfile(status))
    except PgdrError as exc:
        say("%s %s: %s; and its status could not be written: %s" % (PROGRAM_NAME, job.name, reason or result, exc.msg), file=sys.stderr)
        return EXIT_FAILED
    if result == "failed":
        say("%s %s: %s" % (PROGRAM_NAME, job.name, reason), file=sys.stderr)
        return EXIT_FAILED
    if reason:
        detail = ": " + reason
    elif job.kind == run_status.WATCH_KIND:
        detail = " (archived %s, failed %s)" % (outcome["wal"]["archived_count"], outcome["wal"]["failed_count"])
    else:
        detail = " (set %s, %s pruned)" % (outcome.get("backup_id"), len(outcome.get("pruned") or ()))
    say("%s %s: %s%s" % (PROGRAM_NAME, job.name, result, detail))
    return EXIT_OK


def say(text, file=None):
    """One line to stdout (or ``file``): what cron mails and the journal keeps. A program, not a module: no module.log here."""
    (file or sys.stdout).write(text + "\n")


def main(argv):
    parser = argparse.ArgumentParser(prog=PROGRAM_NAME, description="Run a pgdr.backup backup job (installed by pgdr.backup.backup_schedule).")
    parser.add_argument("--job", required=True, help="the job file, /etc/pgdr/backup/<name>.json")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="back up, prune, write the status")
    run.add_argument("--random-delay", type=int, default=0, metavar="SECONDS", help="first wait up to this long (spreads a fleet's start)")
    commands.add_parser("status", help="print the job's last status")
    args = parser.parse_args(argv)
    try:
        job = load_job(args.job)
    except PgdrError as exc:
        say("%s: %s" % (PROGRAM_NAME, exc.msg), file=sys.stderr)
        return EXIT_BAD_JOB
    if args.command == "status":
        found = run_status.load_status(run_status.status_path(job.state_dir, job.name))
        if found is None:
            say("%s %s: no status yet (the job has not run)" % (PROGRAM_NAME, job.name), file=sys.stderr)
            return EXIT_FAILED
        say(json.dumps(found, indent=2, sort_keys=True))
        return EXIT_OK
    return run_job(job, args.job, args.random_delay)
