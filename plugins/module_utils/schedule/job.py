# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup job: what ``pgdr-backup`` runs on a schedule, as written to ``/etc/pgdr/backup/<name>.json`` (0600).

The module ``backup_schedule`` writes the file after Ansible has checked the options and applied their defaults
(the ``backup`` part against the backup module's own argument spec), so the runner reads complete options and
types them exactly as the module would. The file holds secrets (login password, S3 keys, passphrases): it is
0600, owned by the user the job runs as, and its content is never printed.

This file must stay importable without Ansible: the runner reads it on hosts that have none.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.schedule.timer import validate_job_name

FORMAT = 1
JOB_DIR = "/etc/pgdr/backup"
STATE_DIR = "/var/lib/pgdr/backup"  # status <name>.json
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # Debian's prometheus-node-exporter reads *.prom here
PROGRAM_NAME = "pgdr-backup"
KINDS = ("logical", "base", "probackup", "wal")  # wal: the WAL watcher, no backup (status.WATCH_KIND)
RUN_ON = ("primary", "standby", "any")


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """A job file, read. ``backup`` and ``prune`` stay mappings: the runner types them with the backup's own classes."""

    format: int
    name: str
    kind: str
    backup: dict  # the backup module's options, checked and defaulted (cluster always set: prune must file under the same name)
    prune: Optional[dict]  # backup_catalog's options for action prune (repository and cluster: the backup's)
    verify: bool  # re-hash the new set after the backup
    run_on: str
    state_dir: str
    textfile_dir: Optional[str]  # None: no Prometheus textfile


def job_path(name, job_dir=JOB_DIR):
    return os.path.join(job_dir, validate_job_name(name) + ".json")


def job_text(options):
    """The file's bytes for JobOptions ``options``: stable (sorted keys), so an unchanged job rewrites nothing."""
    check(options)
    return (json.dumps(dataclasses.asdict(options), indent=2, sort_keys=True) + "\n").encode()


def check(options):
    validate_job_name(options.name)
    if options.format != FORMAT:
        raise PgdrError("job %s has format %r, this pgdr-backup reads %d: reinstall the job with the collection that installed the program"
                        % (options.name, options.format, FORMAT))
    if options.kind not in KINDS:
        raise PgdrError("job %s: kind %r is not one of %s" % (options.name, options.kind, ", ".join(KINDS)))
    if options.run_on not in RUN_ON:
        raise PgdrError("job %s: run_on %r is not one of %s" % (options.name, options.run_on, ", ".join(RUN_ON)))
    if not isinstance(options.backup, dict):
        raise PgdrError("job %s has no backup options: reinstall it with pgdr.backup.backup_schedule" % options.name)
    if options.prune is not None and options.kind in ("probackup", "wal"):
        raise PgdrError("job %s: a %s job has no prune" % (options.name, options.kind))


def load_job(path):
    """The JobOptions in ``path``; a PgdrError naming the file when it cannot be read or is not a job."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise PgdrError("cannot read job file %s: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise PgdrError("job file %s is not JSON (%s): reinstall the job with pgdr.backup.backup_schedule" % (path, exc)) from None
    if not isinstance(data, dict):
        raise PgdrError("job file %s is not a job: reinstall it with pgdr.backup.backup_schedule" % path)
    options = typed(JobOptions, data)
    check(options)
    return options
