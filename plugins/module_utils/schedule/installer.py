# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Installing a backup job on this host: the ``pgdr-backup`` zipapp, the 0600 job file, and what starts it.

What starts it is a systemd service + timer where systemd is PID 1, else a file in /etc/cron.d. Both run the same
argv (``job_command``), which the module returns, so what a test or an admin runs by hand is exactly what the
timer runs. The runner (``schedule/pgdr_backup.py``) never imports this file.

Invariants:

- Every file is written atomically and only when its content, mode or owner differ (``core.zipapp.install_file``):
  a second run changes nothing, and a timer never starts a half-written program or job.
- The job file goes in before the timer or cron file that runs it; on removal the timer goes first. A timer
  therefore never runs a job file that is not there yet, or not there any more.
- systemd is told (daemon-reload, enable --now) only when a unit changed.
"""

from __future__ import annotations

import os

from ansible_collections.pgdr.backup.plugins.module_utils.core import commands, zipapp
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

# pgdr_backup is imported (not only named) so that AnsiballZ, which follows import statements, ships the program and
# everything it imports
from ansible_collections.pgdr.backup.plugins.module_utils.schedule import pgdr_backup, timer
from ansible_collections.pgdr.backup.plugins.module_utils.schedule.job import JOB_DIR, PROGRAM_NAME, job_path, job_text

_ROOTS = (pgdr_backup.__name__[len(zipapp.PACKAGE) + 1:],)
_MAIN = "import sys\nfrom %s import main\nsys.exit(main(sys.argv[1:]))\n" % pgdr_backup.__name__


def program_path(program_dir=zipapp.PROGRAM_DIR):
    return os.path.join(program_dir, PROGRAM_NAME)


def build_program(python=None):
    """The pgdr-backup zipapp as bytes (the runner and every module_utils it imports)."""
    return zipapp.build(zipapp.closure(_ROOTS), _MAIN, python)


def job_command(name, schedule=None, job_dir=JOB_DIR, program_dir=zipapp.PROGRAM_DIR, timer_kind="cron"):
    """The argv a timer runs. Cron has no RandomizedDelaySec: the runner waits the random delay itself."""
    argv = [program_path(program_dir), "--job", job_path(name, job_dir), "run"]
    if schedule is not None and schedule.randomized_delay and timer_kind == "cron":
        argv += ["--random-delay", str(schedule.randomized_delay)]
    return argv


def planned_files(job, schedule, kind, os_user, job_dir, program_dir, systemd_dir, cron_dir):
    """[(path, bytes, mode, owner)] this job needs, in install order (program, job file, then what starts it)."""
    argv = job_command(job.name, schedule, job_dir, program_dir, kind)
    files = [(program_path(program_dir), build_program(), 0o755, "root"), (job_path(job.name, job_dir), job_text(job), 0o600, os_user)]
    if schedule is None:
        return files, argv
    if kind == "systemd":
        service, timer_unit = timer.unit_names(job.name)
        units = timer.systemd_units(job.name, schedule, argv, os_user, "pgdr.backup job %s" % job.name)
        files += [(os.path.join(systemd_dir, service), units["service"].encode(), 0o644, "root"),
                  (os.path.join(systemd_dir, timer_unit), units["timer"].encode(), 0o644, "root")]
    else:
        files.append((timer.cron_path(job.name, cron_dir), timer.cron_file(job.name, schedule, argv, os_user).encode(), 0o644, "root"))
    return files, argv


def stale_files(name, keep, systemd_dir, cron_dir):
    """What an earlier install of this job left that this one does not write (a schedule removed, cron ↔ systemd)."""
    candidates = [os.path.join(systemd_dir, unit) for unit in timer.unit_names(name)] + [timer.cron_path(name, cron_dir)]
    return [path for path in candidates if path not in keep and os.path.lexists(path)]


def job_folders(job):
    """[(folder, mode, what)] the job writes into as its user: made for it when missing, checked when there."""
    folders = [(job.state_dir, 0o755, "state_dir")]
    if job.textfile_dir:
        folders.append((job.textfile_dir, 0o755, "textfile_dir"))
    repository = job.backup.get("repository") if job.kind != "probackup" else None
    if repository and repository.get("type") == "local":
        folders.append((repository["path"], 0o700, "backup.repository.path"))
    return folders


def prepare_folders(job, os_user, uid, gid, check_mode):
    """Make the job's folders (owned by its user) or check that its user can write the existing ones; the folders made."""
    made = []
    for folder, mode, what in job_folders(job):
        if os.path.isdir(folder):
            if not zipapp.writable_by(folder, uid, gid):
                raise PgdrError("%s %s is not writable by %s, who runs the job: give %s write access (chown, chmod or setfacl -m u:%s:rwx) "
                                "or choose another folder" % (what, folder, os_user, os_user, os_user))
        elif zipapp.ensure_dir(folder, mode, uid, gid, check_mode):
            made.append(folder)
    return made


def install(job, schedule, requested_timer, os_user, check_mode, job_dir=JOB_DIR, program_dir=zipapp.PROGRAM_DIR,
            systemd_dir=timer.SYSTEMD_DIR, cron_dir=timer.CRON_DIR, booted_path=timer.SD_BOOTED, host_zone=None):
    """Install the JobOptions ``job`` and its Schedule (None: on demand only); dict(changed, timer, command, files)."""
    kind = timer.timer_kind(requested_timer, booted_path) if schedule is not None else "none"
    if kind == "systemd" and not os.path.isdir(booted_path):
        raise PgdrError("timer systemd: systemd is not running on this host (%s is missing); use timer: cron or auto" % booted_path)
    if kind == "cron" and not timer.cron_timezone_ok(schedule, host_zone or timer.host_timezone()):
        raise PgdrError("schedule.timezone %s: cron runs jobs in the host's time zone (%s) and has no per-job zone; leave timezone "
                        "empty or give the host's, or use a systemd host" % (schedule.timezone, host_zone or timer.host_timezone()))
    if os.geteuid() != 0 and not check_mode:
        raise PgdrError("installing backup job %s into %s needs root: run the task with become (as root)" % (job.name, job_dir))
    owners = {"root": (0, 0), os_user: zipapp.owner_ids(os_user)}
    files, argv = planned_files(job, schedule, kind, os_user, job_dir, program_dir, systemd_dir, cron_dir)
    changed_paths = []
    try:
        stale = stale_files(job.name, {path for path, *_rest in files}, systemd_dir, cron_dir)
        for folder in {os.path.dirname(path) for path, *_rest in files}:
            if zipapp.ensure_dir(folder, 0o755, 0, 0, check_mode):
                changed_paths.append(folder)
        changed_paths += prepare_folders(job, os_user, *owners[os_user], check_mode)
        for path, data, mode, owner in files:
            if zipapp.install_file(path, data, mode, *owners[owner], check_mode):
                changed_paths.append(path)
        removed = remove_timer(job.name, stale, check_mode)
    except OSError as exc:
        raise PgdrError("installing backup job %s failed: %s (%s)" % (job.name, exc.strerror or exc, getattr(exc, "filename", "") or "")) from None
    if kind == "systemd" and not check_mode and any(path.startswith(systemd_dir) for path in changed_paths):
        _systemctl(["daemon-reload"])
        _systemctl(["enable", "--now", timer.unit_names(job.name)[1]])
    return dict(changed=bool(changed_paths or removed), timer=kind, command=argv, command_line=timer.command_line(argv),
                files=[path for path, *_rest in files], changed_files=changed_paths, removed_files=removed)


def remove_timer(name, paths, check_mode):
    """Stop and remove a job's timer or cron file (``paths``: those of them that exist); the paths removed."""
    units = [path for path in paths if path.endswith(".timer")]
    if units and os.path.isdir(timer.SD_BOOTED) and not check_mode:
        _systemctl(["disable", "--now", os.path.basename(units[0])], check=False)
    removed = [path for path in sorted(paths, key=lambda p: not p.endswith(".timer")) if zipapp.remove_file(path, check_mode)]
    if units and os.path.isdir(timer.SD_BOOTED) and not check_mode:
        _systemctl(["daemon-reload"])
    return removed


def uninstall(name, check_mode, job_dir=JOB_DIR, systemd_dir=timer.SYSTEMD_DIR, cron_dir=timer.CRON_DIR, textfile=None):
    """Remove a job: its timer or cron file first, then the job file, and its textfile (a removed job must not keep exporting
    a last-success time that ages into an alert); the status JSON stays as a record. The program stays (other jobs use it)."""
    starters = [os.path.join(systemd_dir, unit) for unit in timer.unit_names(name)] + [timer.cron_path(name, cron_dir)]
    try:
        removed = remove_timer(name, [path for path in starters if os.path.lexists(path)], check_mode)
        for path in (job_path(name, job_dir), textfile):
            if path and zipapp.remove_file(path, check_mode):
                removed.append(path)
    except OSError as exc:
        raise PgdrError("removing backup job %s failed: %s" % (name, exc.strerror or exc)) from None
    return dict(changed=bool(removed), removed_files=removed)


def _systemctl(args, check=True):
    return commands.run(["systemctl"] + args, check=check)
