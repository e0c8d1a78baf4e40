#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_schedule
short_description: Install a backup job that runs on the host, on a schedule, without the controller
version_added: 0.1.0
description:
  - Installs the C(pgdr-backup) program (a Python zipapp built from this collection, in C(/usr/local/lib/pgdr/)), a
    job file C(/etc/pgdr/backup/<name>.json) (0600, owned by O(os_user), as it holds the backup's secrets), and, with
    O(schedule), what starts it - a systemd service and timer (C(pgdr-backup-<name>.service), C(.timer)) where systemd is
    PID 1, else C(/etc/cron.d/pgdr-backup-<name>).
  - "A run: wait the random delay (cron), take the job's lock (a run that finds the previous one still running is
    skipped), check the server's role (O(run_on)), take the backup with the same code as M(pgdr.backup.pg_logical_dump),
    M(pgdr.backup.pg_basebackup) or M(pgdr.backup.probackup_instance), re-hash the new set (O(verify)), prune with the
    same code as M(pgdr.backup.backup_catalog) (O(prune)), then write the status JSON
    C(<state_dir>/<name>.json) and the Prometheus textfile C(<textfile_dir>/pgdr_backup_<name>.prom)."
  - Nothing is pruned unless the run's backup succeeded (and, with O(verify), re-hashed clean).
  - A failed run exits 1 with one line on stderr and keeps the last success visible in the status; a skipped run exits 0.
  - RV(command) is exactly what the timer or cron line runs; O(run_now=true) runs it (as O(os_user)) right after installing.
author:
  - pgdr.backup developers (@pgdr)
attributes:
  check_mode:
    support: full
    description: Reports which files it would write or remove; writes nothing, runs nothing.
  diff_mode:
    support: none
    description: Reports the files it writes or removes in RV(changed_files) and RV(removed_files), not as a diff.
options:
  name:
    description: The job's name, C([a-z0-9][a-z0-9_-]*), at most 63 characters; unique on the host.
    type: str
    required: true
  state:
    description:
      - V(absent) removes the timer or cron file, the job file and the Prometheus textfile; the status JSON stays as a record,
        the program stays for other jobs.
    type: str
    choices: [present, absent]
    default: present
  kind:
    description:
      - What O(backup) holds - V(logical) the options of M(pgdr.backup.pg_logical_dump), V(base) of M(pgdr.backup.pg_basebackup),
        V(probackup) of M(pgdr.backup.probackup_instance) (its C(action=backup) is implied).
      - V(wal) is the WAL watcher - no backup; each run reads C(pg_stat_archiver) and writes only the C(pgdr_wal_archive_*) metrics.
        O(backup) then holds the connection options and C(cluster) only. Give it O(schedule.every_minutes).
      - Required with O(state=present).
    type: str
    choices: [logical, base, probackup, wal]
  backup:
    description:
      - The backup's options, exactly as that module takes them (connection options and C(repository) included); checked against
        that module's argument spec when the job is installed, so a wrong option fails here, not at 02:30.
      - C(backup_id) cannot be given (every run makes a new set). When C(cluster) is not given it is fixed now to the name the
        module would file the sets under, so backups and the prune always agree.
      - Secrets (C(login_password), repository keys, passphrases) go into the 0600 job file and nowhere else.
    type: dict
  prune:
    description:
      - Retention after each successful backup (V(logical) and V(base) only; a V(probackup) job uses the tool's own retention
        through C(delete_expired), C(merge_expired), C(delete_wal) in O(backup)).
      - The options of M(pgdr.backup.backup_catalog) with C(action=prune) - C(keep_last), C(keep_within), C(incomplete_grace),
        C(kind), C(archive) (the WAL archive, to prune WAL below the oldest kept base set). Its repository and cluster are the backup's.
    type: dict
  verify:
    description:
      - After the backup, re-hash the new set against its manifest (and with C(archive) in O(prune), check its WAL coverage).
      - V(logical) and V(base) only (pg_probackup validates its own backups).
    type: bool
    default: false
  schedule:
    description:
      - When the job runs; without it the job is installed with no timer (run it on demand, or from AWX).
    type: dict
    suboptions:
      weekdays:
        description: The days, from V(mon) V(tue) V(wed) V(thu) V(fri) V(sat) V(sun). With O(schedule.time).
        type: list
        elements: str
      time:
        description: The start time, C(HH:MM) (24 hours). With O(schedule.weekdays).
        type: str
      every_minutes:
        description:
          - Instead of weekdays and time, every N minutes from the hour; N divides an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60).
            Meant for the V(wal) watcher. Not persistent, no random delay.
        type: int
      timezone:
        description:
          - An IANA zone (C(Europe/Paris)); empty - the host's. A cron host accepts only its own zone (cron has no per-job zone).
        type: str
        default: ""
      randomized_delay:
        description: Start up to this many seconds late, at random (spreads a fleet). systemd C(RandomizedDelaySec); on cron the runner waits.
        type: int
        default: 0
      persistent:
        description: systemd C(Persistent) - a run missed while the host was down starts at boot. Cron has no such thing.
        type: bool
        default: true
  timer:
    description: V(auto) - systemd where it is PID 1, else cron.
    type: str
    choices: [auto, systemd, cron]
    default: auto
  run_on:
    description:
      - V(primary) - a run on a server in recovery is skipped (C(pg_is_in_recovery())); V(standby) - the reverse; V(any).
    type: str
    choices: [primary, standby, any]
    default: primary
  os_user:
    description: The user the job runs as and that owns the job file.
    type: str
    default: postgres
  state_dir:
    description: Where the status C(<name>.json) goes (created 0755).
    type: path
    default: /var/lib/pgdr/backup
  textfile_dir:
    description:
      - node_exporter's textfile collector folder (Debian's C(prometheus-node-exporter) reads C(/var/lib/prometheus/node-exporter)).
      - V(none) writes no textfile.
    type: path
    default: /var/lib/prometheus/node-exporter
  run_now:
    description:
      - After installing, run RV(command) as O(os_user), as the timer would (without its random delay), and return RV(status);
        the task fails with the run's one-line reason when the run failed. A skipped run does not fail the task.
    type: bool
    default: false
notes:
  - Needs root (C(become)) to install; the job runs as O(os_user).
  - The host needs Python 3 with C(psycopg) (and C(boto3) or C(paramiko) for S3 or SFTP repositories), as the modules do.
seealso:
  - module: pgdr.backup.backup_catalog
  - module: pgdr.backup.pg_logical_dump
  - module: pgdr.backup.pg_basebackup
  - module: pgdr.backup.probackup_instance
"""

EXAMPLES = r"""
- name: Watch the WAL archiver every 5 minutes (pgdr_wal_archive_* metrics, no backup)
  pgdr.backup.backup_schedule:
    name: wal-main
    kind: wal
    backup:
      login_host: /run/postgresql
      login_user: postgres
    schedule:
      every_minutes: 5
  become: true

- name: Dump the app database Mon/Wed/Fri at 02:30, keep 14 days
  pgdr.backup.backup_schedule:
    name: app-nightly
    kind: logical
    backup:
      database: app
      login_user: backup
      login_password: "{{ vault_backup_password }}"
      repository:
        type: s3
        bucket: backups
        endpoint_url: https://s3.example.net
        access_key: "{{ vault_s3_access_key }}"
        secret_key: "{{ vault_s3_secret_key }}"
    prune:
      keep_last: 3
      keep_within: 14d
    schedule:
      weekdays: [mon, wed, fri]
      time: "02:30"
      randomized_delay: 600
  become: true

- name: A base backup now, through the job (status and metrics written), and every Sunday
  pgdr.backup.backup_schedule:
    name: base-weekly
    kind: base
    backup:
      login_user: replicator
      login_password: "{{ vault_replicator_password }}"
      repository:
        type: local
        path: /var/backups/pgdr
    prune:
      keep_last: 4
      archive:
        type: local
        path: /var/backups/pgdr-wal
    verify: true
    schedule:
      weekdays: [sun]
      time: "01:00"
    run_now: true
  become: true
"""

RETURN = r"""
job_file:
  description: The job file.
  returned: always
  type: str
  sample: /etc/pgdr/backup/app-nightly.json
command:
  description: The argv the timer or cron line runs (and O(run_now) ran).
  returned: with state present
  type: list
  elements: str
  sample: [/usr/local/lib/pgdr/pgdr-backup, --job, /etc/pgdr/backup/app-nightly.json, run]
command_line:
  description: RV(command) as a shell line, as written in the cron file.
  returned: with state present
  type: str
  sample: /usr/local/lib/pgdr/pgdr-backup --job /etc/pgdr/backup/app-nightly.json run
timer:
  description: What starts the job - C(systemd), C(cron), or C(none) (no O(schedule)).
  returned: with state present
  type: str
  sample: cron
files:
  description: The files the job consists of (program, job file, units or cron file).
  returned: with state present
  type: list
  elements: str
changed_files:
  description: Those of RV(files) (and folders) this run wrote (or would write, in check mode).
  returned: with state present
  type: list
  elements: str
removed_files:
  description: Files removed (state absent, or a timer kind or schedule that changed).
  returned: always
  type: list
  elements: str
cluster:
  description: The cluster name the job files its sets under (given, or fixed at install).
  returned: with state present and kind logical or base
  type: str
status:
  description:
    - What the run left in the status file (O(run_now)) - C(result) (success, failed, skipped), C(reason), C(backup_id),
      C(size_bytes), C(duration_seconds), C(sets_kept), C(bytes_kept), C(pruned) (ids this run deleted), C(last_success_timestamp).
    - The whole status is C(<state_dir>/<name>.json); C(pgdr-backup --job FILE status) prints it.
  returned: with run_now
  type: dict
  sample:
    result: success
    reason: ""
    backup_id: 20261207T023012Z
    size_bytes: 18093312
    duration_seconds: 4.2
    sets_kept: 3
    bytes_kept: 54210048
    pruned: [20261130T023007Z]
    last_success_timestamp: 1796610612.5
run_output:
  description: The run's one line (stdout, else stderr).
  returned: with run_now
  type: str
"""

import os

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import actions as catalog_actions
from ansible_collections.pgdr.backup.plugins.module_utils.core import commands
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import (
    ConnectionOptions,
    ConnectionParams,
    connection_argument_spec,
    default_cluster_name,
)
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import empty_message, empty_options, null_means_default, run_module
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set
from ansible_collections.pgdr.backup.plugins.module_utils.physical import base_set
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance as probackup_instance
from ansible_collections.pgdr.backup.plugins.module_utils.schedule import installer, timer
from ansible_collections.pgdr.backup.plugins.module_utils.schedule import status as run_status
from ansible_collections.pgdr.backup.plugins.module_utils.schedule.job import FORMAT, JobOptions, job_path

# the module whose options ``backup`` holds, per kind: its name (for messages) and its module_utils entry point
BACKUP_MODULES = {"logical": ("pg_logical_dump", dump_set), "base": ("pg_basebackup", base_set), "probackup": ("probackup_instance", probackup_instance)}
WATCH_KIND = run_status.WATCH_KIND  # kind wal: no backup, only the WAL archiver's state
PRUNE_OPTIONS = ("keep_last", "keep_within", "incomplete_grace", "kind", "archive")


def argument_spec():
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        kind=dict(type="str", choices=list(BACKUP_MODULES) + [WATCH_KIND]),
        backup=dict(type="dict", no_log=False),
        prune=dict(type="dict"),
        verify=dict(type="bool", default=False),
        schedule=dict(type="dict", options=dict(
            weekdays=dict(type="list", elements="str"),
            time=dict(type="str"),
            every_minutes=dict(type="int"),
            timezone=dict(type="str", default=""),
            randomized_delay=dict(type="int", default=0),
            persistent=dict(type="bool", default=True),
        )),
        timer=dict(type="str", default="auto", choices=list(timer.TIMER_KINDS)),
        run_on=dict(type="str", default="primary", choices=["primary", "standby", "any"]),
        os_user=dict(type="str", default="postgres"),
        state_dir=dict(type="path", default="/var/lib/pgdr/backup"),
        textfile_dir=dict(type="path", default="/var/lib/prometheus/node-exporter"),
        run_now=dict(type="bool", default=False),
    )


def checked(module, spec, relations, params, what):
    """``params`` checked against another module's argument spec, defaults applied, as that module would see them."""
    result = ArgumentSpecValidator(spec, **relations).validate(dict(params))
    module.no_log_values.update(result._no_log_values)  # the backup's secrets are masked in anything this task returns
    if result.error_messages:
        raise PgdrError("%s: %s" % (what, result.error_messages[0]))
    values = result.validated_parameters
    empty = empty_options(spec, values)
    if empty:
        raise PgdrError("%s: %s" % (what, empty_message(empty)))
    null_means_default(spec, values)
    return values


def watch_params(module, given):
    """A WAL watcher's ``backup``: the connection (and the cluster name its metrics carry), nothing else."""
    spec = dict(connection_argument_spec(), cluster=dict(type="str"))
    values = checked(module, spec, {}, given, "backup (for kind wal: the connection options and cluster)")
    if not values.get("cluster"):
        values["cluster"] = default_cluster_name(ConnectionParams(typed(ConnectionOptions, values)))
    return values


def backup_params(module, kind, given):
    if kind == WATCH_KIND:
        return watch_params(module, given)
    name, entry = BACKUP_MODULES[kind]
    if "backup_id" in given:
        raise PgdrError("backup.backup_id: a scheduled job makes a new set every run; leave backup_id out")
    if kind == "probackup":
        if given.get("action", "backup") != "backup":
            raise PgdrError("backup.action %s: a probackup job takes backups (action backup); leave action out" % given["action"])
        given = dict(given, action="backup")
    values = checked(module, entry.argument_spec(), entry.ARGUMENT_RELATIONS, given, "backup (the options of pgdr.backup.%s)" % name)
    if kind != "probackup" and not values.get("cluster"):
        values["cluster"] = default_cluster_name(ConnectionParams(typed(ConnectionOptions, values)))
    if kind == "base" and values.get("action", "backup") != "backup":
        raise PgdrError("backup.action %s: a base job takes backups; leave action out" % values["action"])
    return values


def prune_params(module, kind, given, backup):
    if kind == WATCH_KIND:
        raise PgdrError("prune: a kind wal job takes no backup and has nothing to prune; leave prune out")
    if kind == "probackup":
        raise PgdrError("prune: a probackup job prunes with the tool's own retention; give delete_expired (and merge_expired, delete_wal) "
                        "in backup and the retention in the instance's settings instead")
    unknown = sorted(set(given) - set(PRUNE_OPTIONS))
    if unknown:
        raise PgdrError("prune.%s: prune takes %s (the repository and cluster are the backup's)" % (unknown[0], ", ".join(PRUNE_OPTIONS)))
    values = checked(module, catalog_actions.argument_spec(), catalog_actions.ARGUMENT_RELATIONS,
                     dict(given, action="prune", repository=backup["repository"], cluster=backup["cluster"]),
                     "prune (the options of pgdr.backup.backup_catalog)")
    options, _repository = catalog_actions.options_from(values)
    catalog_actions.check_options(options)
    return {key: values.get(key) for key in PRUNE_OPTIONS}


def parse_schedule(given):
    """``schedule``: weekdays at a time (backups), or every N minutes (the WAL watcher, or very frequent dumps)."""
    if given["every_minutes"] is not None:
        if given["weekdays"] is not None or given["time"] is not None:
            raise PgdrError("schedule: give every_minutes, or weekdays and time, not both")
        return timer.parse_interval(given["every_minutes"])
    if given["weekdays"] is None or given["time"] is None:
        raise PgdrError("schedule needs weekdays and time (e.g. weekdays: [mon, wed, fri], time: \"02:30\"), or every_minutes")
    return timer.parse_schedule(given["weekdays"], given["time"], given["timezone"], given["randomized_delay"], given["persistent"])


def run(module):
    params = module.params
    name = timer.validate_job_name(params["name"])
    textfile_dir = None if params["textfile_dir"] == "none" else params["textfile_dir"]
    if params["state"] == "absent":
        done = installer.uninstall(name, module.check_mode, textfile=run_status.textfile_path(textfile_dir, name) if textfile_dir else None)
        return dict(done, job_file=job_path(name))
    if not params["kind"] or params["backup"] is None:
        raise PgdrError("state present needs kind and backup (the options of the backup the job takes)")
    kind = params["kind"]
    backup = backup_params(module, kind, params["backup"])
    prune = prune_params(module, kind, params["prune"], backup) if params["prune"] is not None else None
    if params["verify"] and kind in ("probackup", WATCH_KIND):
        raise PgdrError("verify: a kind %s job has no set of ours to re-hash (pg_probackup validates its own backups); leave verify out" % kind)
    schedule = None
    if params["schedule"] is not None:
        schedule = parse_schedule(params["schedule"])
    job = JobOptions(format=FORMAT, name=name, kind=kind, backup=backup, prune=prune, verify=params["verify"], run_on=params["run_on"],
                     state_dir=params["state_dir"], textfile_dir=textfile_dir)
    result = installer.install(job, schedule, params["timer"], params["os_user"], module.check_mode)
    result["job_file"] = job_path(name)
    if kind != "probackup":
        result["cluster"] = backup["cluster"]
    if params["run_now"] and not module.check_mode:
        try:
            result.update(run_job(now_command(result["command"]), params["os_user"], params["state_dir"], name), changed=True)
        except PgdrError as exc:
            # the job is installed all the same: a failed run says so, with what was installed and changed
            details = dict(result)
            details.update(exc.details)
            details["changed"] = True
            raise PgdrError(exc.msg, **details) from None
    return result


def now_command(argv):
    """The timer's command without its random delay: the delay spreads a fleet's scheduled starts, a run asked for now starts now."""
    if "--random-delay" in argv:
        at = argv.index("--random-delay")
        return argv[:at] + argv[at + 2:]
    return argv


def run_job(argv, os_user, state_dir, name):
    """Run the job's command as ``os_user``, as its timer would; dict(status, run_output), or a PgdrError with the run's reason."""
    as_user = ["runuser", "-u", os_user, "--"] if os.geteuid() == 0 and os_user != "root" else []
    ran = commands.run(as_user + argv, check=False)
    output = (ran.stdout.strip() or ran.stderr.strip()).splitlines()
    line = output[-1] if output else ""
    found = run_status.load_status(run_status.status_path(state_dir, name))
    status = run_status.summary(found) if found else None
    if ran.returncodes[0] != 0:
        raise PgdrError(line or "the job's run failed with exit code %d and said nothing" % ran.returncodes[0], status=status, rc=ran.returncodes[0])
    return dict(status=status, run_output=line)


def main():
    run_module(argument_spec(), run, needs_psycopg=False)


if __name__ == "__main__":
    main()
