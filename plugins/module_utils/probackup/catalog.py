# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drive the pg_probackup command line and its openGauss fork gs_probackup.

Pure functions build argv lists per tool (refusing what the chosen tool does not have), parse the tool's
JSON (``show``, ``show --archive``, ``show-config --no-scale-units``) and turn its exit code and ERROR
lines into one clear message. Results are read from the tool's JSON, never from its log lines (the one
exception: which backups a retention dry run would delete, which the tool reports nowhere else).

Names: a ``Program`` is the tool's binary - its path, which tool it is (pg_probackup or gs_probackup) and
what it lacks; a ``Probackup`` is that program working on one backup catalog, and is called ``catalog``
where it is used.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
from typing import List, NamedTuple, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core import commands
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.recovery_target import parse_target_time, requested_target

PG = "pg_probackup"
GS = "gs_probackup"
TOOLS = (PG, GS)
BACKUP_MODES = {PG: ("FULL", "PAGE", "DELTA", "PTRACK"), GS: ("FULL", "PTRACK")}
COMPRESS_ALGORITHMS = {PG: ("none", "zlib", "pglz"), GS: ("none", "zlib", "pglz", "lz4")}
VALID_STATUSES = ("OK", "DONE")
INVALID_STATUSES = ("CORRUPT", "ORPHAN")
TARGET_KINDS = ("time", "xid", "lsn", "name", "immediate", "latest")
TARGET_ACTIONS = ("pause", "promote", "shutdown")


class ConfigSetting(NamedTuple):
    """Where a module option lives in the instance's configuration, and how its values compare."""

    key: str  # the show-config / set-config key
    kind: str  # int, lower, upper, path, dirs or str: see normalize()


# module option -> its setting
CONFIG_OPTIONS = {
    "pg_data": ConfigSetting("pgdata", "path"),
    "external_dirs": ConfigSetting("external-dirs", "dirs"),
    "retention_redundancy": ConfigSetting("retention-redundancy", "int"),
    "retention_window": ConfigSetting("retention-window", "int"),
    "wal_depth": ConfigSetting("wal-depth", "int"),
    "compress_algorithm": ConfigSetting("compress-algorithm", "lower"),
    "compress_level": ConfigSetting("compress-level", "int"),
    "pgdatabase": ConfigSetting("pgdatabase", "str"),
    "pghost": ConfigSetting("pghost", "str"),
    "pgport": ConfigSetting("pgport", "int"),
    "pguser": ConfigSetting("pguser", "str"),
    "archive_timeout": ConfigSetting("archive-timeout", "int"),
    "remote_proto": ConfigSetting("remote-proto", "str"),
    "remote_host": ConfigSetting("remote-host", "str"),
    "remote_port": ConfigSetting("remote-port", "int"),
    "remote_user": ConfigSetting("remote-user", "str"),
    "remote_path": ConfigSetting("remote-path", "str"),
    "remote_libpath": ConfigSetting("remote-libpath", "str"),
    "ssh_options": ConfigSetting("ssh-options", "str"),
    "log_level_console": ConfigSetting("log-level-console", "upper"),
    "log_level_file": ConfigSetting("log-level-file", "upper"),
    "log_directory": ConfigSetting("log-directory", "str"),
    "log_filename": ConfigSetting("log-filename", "str"),
}


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    """The instance settings a task manages (the options of CONFIG_OPTIONS); None: not managed."""

    pg_data: Optional[str]
    external_dirs: Optional[List[str]]
    retention_redundancy: Optional[int]
    retention_window: Optional[int]
    wal_depth: Optional[int]
    compress_algorithm: Optional[str]
    compress_level: Optional[int]
    pgdatabase: Optional[str]
    pghost: Optional[str]
    pgport: Optional[int]
    pguser: Optional[str]
    archive_timeout: Optional[int]
    remote_proto: Optional[str]
    remote_host: Optional[str]
    remote_port: Optional[int]
    remote_user: Optional[str]
    remote_path: Optional[str]
    remote_libpath: Optional[str]
    ssh_options: Optional[str]
    log_level_console: Optional[str]
    log_level_file: Optional[str]
    log_directory: Optional[str]
    log_filename: Optional[str]

    def managed(self):
        """The options that are set, in CONFIG_OPTIONS order (an empty list is not set)."""
        return [option for option in CONFIG_OPTIONS if getattr(self, option) not in (None, [])]


# options one tool lacks: (tool that lacks it, module option or feature) -> why
TOOL_GAPS = {
    (GS, "stream"): "gs_probackup has no --stream: it always streams the WAL a backup needs (leave stream unset)",
    (GS, "archive-push"): "gs_probackup has no archive-push/archive-get; archive WAL with a plain archive_command",
    (GS, "recovery_target_action"): "gs_probackup has no --recovery-target-action: openGauss pauses at the target (resume with pg_xlog_replay_resume())",
    (GS, "recovery_target_timeline"): "gs_probackup has no --recovery-target-timeline",
    (GS, "db_include"): "gs_probackup has no partial restore (--db-include/--db-exclude)",
    (GS, "target_immediate"): "gs_probackup has no --recovery-target=immediate|latest; use a time, xid, lsn or name target",
    (GS, "restore_to_target"): (
        "restore_cluster restores a gs_probackup backup only to the end of the archive (no recovery_target_*): openGauss "
        "pauses at a target (gs_probackup has no --recovery-target-action), and restore_cluster can only wait for a promotion"
    ),
    (PG, "rw_timeout"): "pg_probackup has no --rw-timeout (-t); that is a gs_probackup option",
    (PG, "remote_libpath"): "pg_probackup has no --remote-libpath; that is a gs_probackup option",
}

# ERROR text (regex) -> what to do about it, appended to the one-line message
HINTS = (
    (r"Instance '.*' does not exist in this backup catalog", "add the instance first (state: present with pg_data)"),
    (r"backup directory already exists", "the instance is already registered in this catalog"),
    (r"The backup catalog already exists and is not empty", "backup_path is not empty and is not a backup catalog; choose an empty or missing folder"),
    (r"Backup catalog '.*' does not exist", "create it first (state: present)"),
    (r"Requested backup \S+ is not found|Failed to find backup \S+|Target backup \S+ is not found", "no such backup id in this instance; see action: show"),
    (
        r"Backup satisfying target options is not found",
        "no valid backup satisfies the request (CORRUPT, ORPHAN and ERROR backups are skipped); run action: show or validate",
    ),
    (r"Restore destination is not empty", "restore into an empty folder, or use an incremental restore"),
    (r"is corrupt", "the backup's files do not match their checksums; take a new FULL backup"),
    (r"No backup catalog path specified", "set backup_path"),
    (r"Unknown subcommand", "this binary does not have that subcommand; check binary and its version"),
    (r"requires an argument|invalid option", "the tool rejected an option it does not know; check binary and its version"),
    (r"Invalid compress algorithm", "choose a compression algorithm this tool supports"),
    (r"could not connect to database|connection to server", "check pghost/pgport/pguser/pgdatabase in the instance config and pg_hba.conf"),
    (r"Valid full backup on current timeline .* is not found", "take a FULL backup first"),
    (r"could not be archived", "WAL archiving to this catalog is not working; check archive_command (archive-push)"),
)


class ProbackupError(PgdrError):
    """A pg_probackup command failed; ``details`` carry cmd, rc, stderr (never secrets)."""


# ------------------------------------------------------------------ the program


class ProgramVersion(NamedTuple):
    kind: str  # PG or GS
    version: Optional[str]


class Program:
    """The tool's binary: its path, which tool it is (``kind``: PG or GS), its version, and what it lacks."""

    def __init__(self, path, kind, version):
        self.path, self.kind, self.version = path, kind, version

    def lacks(self, feature):
        return (self.kind, feature) in TOOL_GAPS

    def refuse(self, feature):
        if self.lacks(feature):
            raise PgdrError(TOOL_GAPS[(self.kind, feature)])


def parse_version(text):
    """ProgramVersion("pg_probackup"|"gs_probackup", "2.5.15") from the output of ``version``; None if it is neither."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    match = re.match(r"^(pg_probackup|gs_probackup)\b(.*)$", line)
    if not match:
        return None
    versions = re.findall(r"\b(\d+\.\d+(?:\.\d+)?)\b", match.group(2))
    if not versions:
        return ProgramVersion(match.group(1), None)
    # pg_probackup 2.5.15 (PostgreSQL 15.18 ...) names itself first; gs_probackup (openGauss x.y.z ...) 2.4.2 last
    return ProgramVersion(match.group(1), versions[0] if match.group(1) == PG else versions[-1])


def program_kind_from_name(binary):
    base = os.path.basename(binary or "")
    return GS if base.startswith("gs_probackup") else PG


def resolve_binary(binary):
    """Absolute path of ``binary`` (a name on PATH or a path)."""
    if "/" in binary:
        path = binary
    else:
        path = shutil.which(binary) or next(
            (os.path.join(d, binary) for d in ("/usr/bin", "/usr/local/bin", "/usr/lib/postgresql/bin") if os.path.exists(os.path.join(d, binary))), None
        )
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise PgdrError("%s not found or not executable; install pg_probackup (or gs_probackup) on this host or set binary to its path" % binary)
    return path


# ------------------------------------------------------------------ errors


class LogRecord(NamedTuple):
    level: str
    message: str


def log_records(stderr):
    """[LogRecord(level, message)] of a tool's stderr, plain (``LEVEL: msg``) or --log-format-console=json; continuation lines join."""
    records = []
    for raw in (stderr or "").splitlines():
        line = raw.rstrip()
        level = re.match(r"^(INFO|LOG|WARNING|ERROR|FATAL|PANIC|VERBOSE|NOTICE): (.*)$", line)
        if level:
            records.append([level.group(1), level.group(2).strip()])
            continue
        if line.startswith("{") and '"level"' in line:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                records.append([str(obj.get("level")), str(obj.get("msg", "")).strip()])
                continue
        if records and line.strip():
            records[-1][1] += " " + line.strip()
    return [LogRecord(*r) for r in records]


def error_lines(stderr):
    """The ERROR messages of a tool's stderr (a message's continuation lines joined to it)."""
    return [msg for level, msg in log_records(stderr) if level in ("ERROR", "FATAL", "PANIC")]


def warning_lines(stderr):
    return [msg for level, msg in log_records(stderr) if level == "WARNING"]


def hint_for(text):
    for pattern, hint in HINTS:
        if re.search(pattern, text):
            return hint
    return None


def failure_message(tool_kind, subcommand, rc, stderr):
    """One line: what failed, the tool's own reason, and what to do."""
    errors = error_lines(stderr)
    if errors:
        reason = errors[0]
    else:
        warnings = warning_lines(stderr)
        lines = [x.strip() for x in (stderr or "").splitlines() if x.strip()]
        reason = warnings[-1] if warnings else (lines[-1] if lines else "no error output")
    how = "killed by signal %d" % -rc if rc < 0 else "exit code %d" % rc
    msg = "%s %s failed (%s): %s" % (tool_kind, subcommand, how, reason)
    hint = hint_for(reason)
    return msg + ("; " + hint if hint else "")


# ------------------------------------------------------------------ argv builders


def _base(program, subcommand, backup_path, instance=None):
    argv = [program.path, subcommand, "-B", backup_path]
    if instance:
        argv.append("--instance=%s" % instance)
    return argv


def init_argv(program, backup_path):
    return _base(program, "init", backup_path)


def config_args(program, config):
    """set-config style options for a {show-config key: value} dict (CONFIG_OPTIONS' keys)."""
    args = []
    for key, value in config.items():
        if key == "pgdata":
            args.append("--pgdata=%s" % value)
        else:
            args.append("--%s=%s" % (key, value))
    return args


def add_instance_argv(program, backup_path, instance, pg_data, config=None):
    """``config``: {show-config key: value}; its pgdata is left out (the data directory is ``pg_data``)."""
    settings = {key: value for key, value in (config or {}).items() if key != "pgdata"}
    return _base(program, "add-instance", backup_path, instance) + ["-D", pg_data] + config_args(program, settings)


def del_instance_argv(program, backup_path, instance):
    return _base(program, "del-instance", backup_path, instance)


def set_config_argv(program, backup_path, instance, changes):
    return _base(program, "set-config", backup_path, instance) + config_args(program, changes)


def show_config_argv(program, backup_path, instance):
    return _base(program, "show-config", backup_path, instance) + ["--format=json", "--no-scale-units"]


def show_argv(program, backup_path, instance=None, backup_id=None, archive=False):
    argv = _base(program, "show", backup_path, instance)
    if backup_id:
        argv += ["-i", backup_id]
    if archive:
        argv.append("--archive")
    return argv + ["--format=json"]


def backup_argv(
    program,
    backup_path,
    instance,
    mode,
    stream=None,
    temp_slot=False,
    slot=None,
    threads=None,
    note=None,
    ttl=None,
    expire_time=None,
    delete_expired=False,
    merge_expired=False,
    delete_wal=False,
    no_validate=False,
    rw_timeout=None,
):
    mode = (mode or "").upper()
    if mode not in BACKUP_MODES[program.kind]:
        raise PgdrError("%s has no backup mode %s (it has %s)" % (program.kind, mode, ", ".join(BACKUP_MODES[program.kind])))
    argv = _base(program, "backup", backup_path, instance) + ["-b", mode]
    if stream is not None:
        program.refuse("stream")
        if stream:
            argv.append("--stream")
    if (temp_slot or slot) and not (stream or program.kind == GS):
        raise PgdrError("temp_slot and slot stream WAL through a replication slot; they need stream: true")
    if temp_slot:
        argv.append("--temp-slot")
    if slot:
        argv += ["-S", slot]
    if threads:
        argv += ["-j", str(int(threads))]
    if note is not None:
        argv.append("--note=%s" % note)
    argv += pin_args(ttl, expire_time, allow_unpin=False)
    for flag, on in (("--delete-expired", delete_expired), ("--merge-expired", merge_expired), ("--delete-wal", delete_wal), ("--no-validate", no_validate)):
        if on:
            argv.append(flag)
    if rw_timeout is not None:
        program.refuse("rw_timeout")
        argv += ["-t", str(int(rw_timeout))]
    return argv


def pin_args(ttl=None, expire_time=None, allow_unpin=True):
    if ttl is not None and expire_time is not None:
        raise PgdrError("ttl and expire_time exclude each other; choose one")
    if ttl is not None:
        ttl = str(ttl).strip()
        if not re.match(r"^\d+\s*(d|h|min|s)?$", ttl):
            raise PgdrError("ttl %r is not an interval such as 30d, 12h, 90min or 3600 (seconds)" % ttl)
        if not allow_unpin and re.match(r"^0+\s*\D*$", ttl):
            raise PgdrError("ttl 0 unpins; use action: unpin")
        return ["--ttl=%s" % ttl.replace(" ", "")]
    if expire_time is not None:
        return ["--expire-time=%s" % expire_time]
    return []


def legacy_target(target):
    """{kind, value} from the deprecated ``recovery_target: {kind, value}`` dict, its shape checked as its suboptions were."""
    unknown = sorted(str(key) for key in target if key not in ("kind", "value"))
    if unknown:
        raise PgdrError("recovery_target as a dict takes kind and value, not %s" % ", ".join(unknown))
    if target.get("kind") not in TARGET_KINDS:
        raise PgdrError("recovery_target kind %r is not one of %s" % (target.get("kind"), ", ".join(TARGET_KINDS)))
    value = target.get("value")
    return {"kind": target["kind"], "value": None if value is None else str(value)}


def validation_target(options):
    """The {kind, value} a validate reaches, or None when no target is given.

    ``options`` are RecoveryTargetOptions: PostgreSQL's flat ``recovery_target_*`` options, or the deprecated
    ``recovery_target: {kind, value}`` dict. Both shapes give the same target, so the same command line.
    """
    legacy = options.recovery_target if isinstance(options.recovery_target, dict) else None
    flat = dataclasses.replace(options, recovery_target=None) if legacy is not None else options
    if flat.recovery_target not in (None, "immediate", "latest"):
        raise PgdrError("recovery_target %r is not immediate or latest (see recovery_target_time, _xid, _lsn and _name)" % (flat.recovery_target,))
    kind, value = requested_target(flat)  # refuses two flat targets, checks an LSN
    if kind != "latest" and (legacy is not None or flat.recovery_target == "latest"):
        first = "recovery_target (a {kind, value} dict)" if legacy is not None else "recovery_target=latest"
        given = "recovery_target=immediate" if kind == "immediate" else "recovery_target_%s" % kind
        raise PgdrError("give one recovery target, not %s and %s" % (first, given))
    if legacy is not None:
        return legacy_target(legacy)
    if kind == "latest" and flat.recovery_target != "latest":
        return None  # nothing given: the whole instance, or one backup
    return {"kind": kind, "value": value}


def tool_target_time(program, value):
    """``value`` (a recovery_target_time) written the one way the tool's parser reads as PostgreSQL does.

    The tool checks the time with its own parse_time (src/utils/configuration.c, 2.5.15) and writes the text
    unchanged into the restored cluster's recovery_target_time, which PostgreSQL reads. That parser takes
    'YYYY-MM-DD HH:MI:SS' with a numeric offset; it refuses a fraction of a second, 'Z' and 'UTC'; it stops
    reading the time at a 'T' (so the tool checks against midnight) and reads a time without an offset in its
    own TZ, not the server's. So a 'T' becomes a space and Z/UTC become +00 (the same instant for PostgreSQL),
    a fraction of .000... is dropped, and any other fraction is refused: truncating moves the target earlier
    (commits in that fraction left out), rounding up moves it later (commits after it taken in), and which of the
    two the user wants is theirs to say. gs_probackup is a fork of pg_probackup 2.4 and is given the same form.
    """
    moment = parse_target_time(str(value))  # needs a date, a time and a zone
    if moment.microsecond:
        whole = moment.replace(microsecond=0)
        later = whole + datetime.timedelta(seconds=1)
        raise PgdrError(
            "recovery_target_time %r has a fraction of a second, which %s does not take; give whole seconds: %r leaves out "
            "what committed in the %s s before the target, %r takes in what committed in the %s s after it"
            % (
                value,
                program.kind,
                _tool_time_text(whole),
                _seconds(moment - whole),
                _tool_time_text(later),
                _seconds(later - moment),
            )
        )
    return _tool_time_text(moment)


def _tool_time_text(moment):
    """'2026-12-06 23:05:16+00' or '... +05:30': the wall time and offset as given, in the form the tool parses."""
    minutes = int(moment.utcoffset().total_seconds()) // 60
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    zone = "%s%02d" % (sign, minutes // 60) + (":%02d" % (minutes % 60) if minutes % 60 else "")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + zone


def _seconds(delta):
    return ("%.6f" % delta.total_seconds()).rstrip("0")


def target_args(program, target=None, inclusive=None, timeline=None):
    """--recovery-target-* options for restore and validate; ``target`` is {kind, value}."""
    args = []
    if target:
        kind, value = target.get("kind"), target.get("value")
        if kind not in TARGET_KINDS:
            raise PgdrError("recovery target kind %r is not one of %s" % (kind, ", ".join(TARGET_KINDS)))
        if kind in ("immediate", "latest"):
            program.refuse("target_immediate")
            if value not in (None, ""):
                raise PgdrError("recovery target %s takes no value" % kind)
            args.append("--recovery-target=%s" % kind)
        else:
            if value in (None, ""):
                raise PgdrError("recovery target %s needs a value" % kind)
            if kind == "lsn" and not re.match(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$", str(value)):
                raise PgdrError("recovery target lsn %r is not an LSN such as 0/3000060" % value)
            if kind == "xid" and not re.match(r"^\d+$", str(value)):
                raise PgdrError("recovery target xid %r is not a transaction id" % value)
            if kind == "time":
                value = tool_target_time(program, value)
            args.append("--recovery-target-%s=%s" % (kind, value))
    if inclusive is not None:
        if not target or target.get("kind") not in ("time", "xid", "lsn", "name"):
            raise PgdrError("inclusive applies only to time, xid, lsn and name targets")
        args.append("--recovery-target-inclusive=%s" % ("true" if inclusive else "false"))
    if timeline is not None:
        program.refuse("recovery_target_timeline")
        if not re.match(r"^(current|latest|\d+)$", str(timeline)):
            raise PgdrError("timeline %r is not current, latest or a timeline number" % timeline)
        args.append("--recovery-target-timeline=%s" % timeline)
    return args


def validate_argv(program, backup_path, instance=None, backup_id=None, target=None, inclusive=None, timeline=None):
    argv = _base(program, "validate", backup_path, instance)
    if (backup_id or target) and not instance:
        raise PgdrError("validating one backup or a recovery target needs instance")
    if backup_id:
        argv += ["-i", backup_id]
    return argv + target_args(program, target, inclusive, timeline)


def merge_argv(program, backup_path, instance, backup_id, threads=None):
    if not backup_id:
        raise PgdrError("action merge needs backup_id (the incremental backup to merge with its parents)")
    argv = _base(program, "merge", backup_path, instance) + ["-i", backup_id]
    return argv + (["-j", str(int(threads))] if threads else [])


def delete_argv(program, backup_path, instance, backup_id=None, expired=False, status=None, dry_run=False, delete_wal=False, merge_expired=False):
    chosen = [name for name, on in (("backup_id", backup_id), ("delete_expired", expired), ("status", status)) if on]
    if len(chosen) > 1:
        raise PgdrError("action delete takes one of backup_id, delete_expired or status, not %s" % " and ".join(chosen))
    if not chosen and not (delete_wal or merge_expired):
        raise PgdrError("action delete needs backup_id, delete_expired: true, merge_expired: true, delete_wal: true or status")
    argv = _base(program, "delete", backup_path, instance)
    if backup_id:
        argv += ["-i", backup_id]
    if expired:
        argv.append("--delete-expired")
    if merge_expired:
        argv.append("--merge-expired")
    if delete_wal:
        argv.append("--delete-wal")
    if status:
        argv.append("--status=%s" % status.upper())
    if dry_run:
        argv.append("--dry-run")
    return argv


def set_backup_argv(program, backup_path, instance, backup_id, ttl=None, expire_time=None):
    if not backup_id:
        raise PgdrError("pinning needs backup_id")
    return _base(program, "set-backup", backup_path, instance) + ["-i", backup_id] + pin_args(ttl, expire_time)


def _program_for(program):
    if isinstance(program, Program):
        return program
    if program in TOOLS:
        return Program(program, program, None)
    return Program(program, program_kind_from_name(program), None)


def restore_argv(
    program,
    backup_path,
    instance,
    pg_data,
    backup_id=None,
    threads=None,
    incremental_mode=None,
    target=None,
    target_action="promote",
    inclusive=None,
    timeline=None,
    db_include=None,
    db_exclude=None,
):
    """argv of a restore into ``pg_data``. ``program`` is a Program, a tool name or a binary path; ``target`` is {kind, value}.

    ``target_action`` is passed explicitly for pg_probackup whenever there is a target (its default, pause,
    leaves a restored cluster waiting); without a target the tool refuses it, and PostgreSQL would ignore it.
    gs_probackup has no such option: pass None (anything else is refused).
    """
    program = _program_for(program)
    if not pg_data:
        raise PgdrError("a restore needs the target data directory")
    argv = _base(program, "restore", backup_path, instance) + ["-D", pg_data]
    if backup_id and backup_id != "latest":
        argv += ["-i", backup_id]
    if threads:
        argv += ["-j", str(int(threads))]
    if incremental_mode not in (None, "none"):
        if incremental_mode not in ("checksum", "lsn"):
            raise PgdrError("incremental_mode %r is not checksum or lsn" % incremental_mode)
        argv += ["-I", incremental_mode]
    argv += target_args(program, target, inclusive, timeline)
    if target_action is not None and target:
        program.refuse("recovery_target_action")
        if target_action not in TARGET_ACTIONS:
            raise PgdrError("target_action %r is not one of %s" % (target_action, ", ".join(TARGET_ACTIONS)))
        argv.append("--recovery-target-action=%s" % target_action)
    if db_include and db_exclude:
        raise PgdrError("db_include and db_exclude exclude each other; choose one")
    for option, names in (("--db-include", db_include), ("--db-exclude", db_exclude)):
        if names:
            program.refuse("db_include")
            for name in names:
                argv.append("%s=%s" % (option, name))
    return argv


# ------------------------------------------------------------------ JSON parsing


def _load(text_or_obj):
    if isinstance(text_or_obj, (list, dict)):
        return text_or_obj
    try:
        return json.loads(text_or_obj)
    except (TypeError, ValueError) as exc:
        raise PgdrError("the tool's JSON output could not be parsed (%s): %r" % (exc, (text_or_obj or "")[:200])) from None


def parse_show(text):
    """``show --format=json``: [{instance, backups: [backup, ...]}], backups newest first as the tool lists them."""
    data = _load(text)
    if not isinstance(data, list) or any(not isinstance(i, dict) or "backups" not in i for i in data):
        raise PgdrError("unexpected show JSON: expected a list of {instance, backups}")
    return data


def parse_archive(text):
    """``show --archive --format=json``: [{instance, timelines: [...]}] with lost segments per timeline."""
    data = _load(text)
    if not isinstance(data, list) or any(not isinstance(i, dict) or "timelines" not in i for i in data):
        raise PgdrError("unexpected show --archive JSON: expected a list of {instance, timelines}")
    return data


def archive_summary(archive):
    """Per instance and timeline: segments range, counts, status and lost segments (backups listed by id only)."""
    out = []
    for inst in archive:
        for tl in inst["timelines"]:
            out.append(
                {
                    "instance": inst["instance"],
                    "tli": tl.get("tli"),
                    "parent_tli": tl.get("parent-tli"),
                    "switchpoint": tl.get("switchpoint"),
                    "min_segno": tl.get("min-segno"),
                    "max_segno": tl.get("max-segno"),
                    "n_segments": tl.get("n-segments"),
                    "size": tl.get("size"),
                    "zratio": tl.get("zratio"),
                    "status": tl.get("status"),
                    "lost_segments": tl.get("lost-segments") or [],
                    "backups": [b.get("id") for b in tl.get("backups") or []],
                }
            )
    return out


def parse_show_config(text):
    data = _load(text)
    if not isinstance(data, dict):
        raise PgdrError("unexpected show-config JSON: expected an object")
    return data


def backups_of(catalog, instance=None):
    """The backup list of one instance from parsed show JSON (the only one when instance is None)."""
    catalog = parse_show(catalog)
    if instance is None:
        if len(catalog) != 1:
            raise PgdrError("the catalog holds %d instances (%s); name one" % (len(catalog), ", ".join(i["instance"] for i in catalog)))
        return catalog[0]["backups"]
    for inst in catalog:
        if inst["instance"] == instance:
            return inst["backups"]
    return []


def parse_tool_time(text):
    """'2026-11-21 13:14:43+00' -> aware datetime (None if absent)."""
    if not text:
        return None
    match = re.match(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.\d+)?([+-]\d{2})(?::?(\d{2}))?$", text.strip())
    if not match:
        return None
    offset = datetime.timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0) * (1 if match.group(2)[0] == "+" else -1))
    naive = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    return naive.replace(tzinfo=datetime.timezone(offset))


def backup_summary(backup):
    """The facts a task returns about one backup, with snake_case names."""
    start, end = parse_tool_time(backup.get("start-time")), parse_tool_time(backup.get("end-time"))
    return {
        "id": backup.get("id"),
        "mode": backup.get("backup-mode"),
        "status": backup.get("status"),
        "wal": backup.get("wal"),
        "parent_backup_id": backup.get("parent-backup-id"),
        "timeline": backup.get("current-tli"),
        "start_lsn": backup.get("start-lsn"),
        "stop_lsn": backup.get("stop-lsn"),
        "start_time": backup.get("start-time"),
        "end_time": backup.get("end-time"),
        "recovery_time": backup.get("recovery-time"),
        "recovery_xid": backup.get("recovery-xid"),
        "expire_time": backup.get("expire-time"),
        "note": backup.get("note"),
        "data_bytes": backup.get("data-bytes"),
        "wal_bytes": backup.get("wal-bytes"),
        "uncompressed_bytes": backup.get("uncompressed-bytes"),
        "pgdata_bytes": backup.get("pgdata-bytes"),
        "compress_alg": backup.get("compress-alg"),
        "server_version": backup.get("server-version"),
        "program_version": backup.get("program-version"),
        "duration": int((end - start).total_seconds()) if start and end else None,
    }


def _chain_valid(backup, by_id):
    seen = set()
    current = backup
    while current is not None:
        if current.get("status") not in VALID_STATUSES or current["id"] in seen:
            return False
        seen.add(current["id"])
        parent_id = current.get("parent-backup-id")
        if not parent_id:
            return current.get("backup-mode") == "FULL"
        current = by_id.get(parent_id)
        if current is None:
            return False
    return False


def latest_valid_backup(catalog_json, instance=None):
    """The newest backup that can be restored: status OK or DONE, with every parent present and OK or DONE.

    ``catalog_json`` is show's JSON (text or parsed: a list of {instance, backups}, one such dict, or a list
    of backups). Returns the backup dict as the tool printed it, or None.
    """
    data = _load(catalog_json)
    if isinstance(data, dict):
        backups = data.get("backups", [])
    elif data and isinstance(data[0], dict) and "backups" in data[0]:
        backups = backups_of(data, instance)
    else:
        backups = data
    by_id = {b["id"]: b for b in backups}
    ordered = sorted(backups, key=lambda b: (b.get("start-time") or "", _id_number(b["id"])), reverse=True)
    for backup in ordered:
        if _chain_valid(backup, by_id):
            return backup
    return None


def _id_number(backup_id):
    try:
        return int(backup_id, 36)
    except (TypeError, ValueError):
        return 0


def invalid_backups(backups):
    """[(id, status)] of the CORRUPT and ORPHAN backups."""
    return [(b["id"], b["status"]) for b in backups if b.get("status") in INVALID_STATUSES]


def retention_verdicts(stderr):
    """From a retention run's log: [{id, mode, status, verdict}] (the tool prints these nowhere else)."""
    out = []
    for m in re.finditer(r"Backup (\w+), mode: (\w+), status: (\w+)\. .*\. (Active|Expired)\s*$", stderr or "", re.M):
        out.append({"id": m.group(1), "mode": m.group(2), "status": m.group(3), "verdict": m.group(4)})
    return out


def wal_purge_ranges(stderr):
    """From a run with --delete-wal: [{timeline, first, last}] the tool says can (dry run) or will be removed.

    As the tool words it: ``last`` is the first segment it keeps. A dry run reckons with the backups as they are,
    not as --delete-expired would leave them, so it may name less than the real run then removes.
    """
    out = []
    for m in re.finditer(r"On timeline (\d+) WAL segments between (\w+) and (\w+) (?:can|will) be removed\s*$", stderr or "", re.M):
        out.append({"timeline": int(m.group(1)), "first": m.group(2), "last": m.group(3)})
    return out


# ------------------------------------------------------------------ configuration


def normalize(kind, value):
    """A config value as a comparable string (show-config --no-scale-units gives numbers, pgport a string)."""
    if value is None:
        return None
    if kind == "int":
        try:
            return str(int(str(value).strip()))
        except ValueError:
            return str(value).strip()
    if kind == "lower":
        return str(value).strip().lower()
    if kind == "upper":
        return str(value).strip().upper()
    if kind == "path":
        return os.path.normpath(str(value)) if str(value) else ""
    if kind == "dirs":
        if isinstance(value, (list, tuple)):
            return ":".join(os.path.normpath(v) for v in value)
        return ":".join(os.path.normpath(v) for v in str(value).split(":") if v)
    return str(value)


def desired_config(config, program):
    """{config key: normalized value} for the settings ``config`` (an InstanceConfig) manages."""
    out = {}
    for option, (key, kind) in CONFIG_OPTIONS.items():
        value = getattr(config, option)
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        if option in ("remote_libpath",):
            program.refuse(option)
        if option == "compress_algorithm" and str(value).lower() not in COMPRESS_ALGORITHMS[program.kind]:
            raise PgdrError("%s has no compression algorithm %s (it has %s)" % (program.kind, value, ", ".join(COMPRESS_ALGORITHMS[program.kind])))
        if option == "compress_level" and not 0 <= int(value) <= 9:
            raise PgdrError("compress_level must be between 0 and 9")
        out[key] = normalize(kind, value)
    return out


def current_config(show_config):
    """{config key: normalized value} from parsed show-config JSON."""
    kinds = dict(CONFIG_OPTIONS.values())
    return {key: normalize(kinds.get(key, "str"), value) for key, value in show_config.items()}


def config_changes(current, desired):
    """{key: value} of the desired settings that differ from the current ones."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


# ------------------------------------------------------------------ running


class Probackup:
    """One program working on one backup catalog; every failure becomes a ProbackupError with a one-line message.

    ``commands`` lists what ran (the binary's name, then its arguments), for a task's result.
    """

    def __init__(self, program, backup_path, env=None, run=commands.run):
        self.program, self.backup_path, self.env, self._run = program, backup_path, env, run
        self.commands = []

    @classmethod
    def detect(cls, binary, backup_path, env=None, run=commands.run):
        path = resolve_binary(binary)
        result = run([path, "version"], env=env, check=False)
        parsed = parse_version(result.stdout) or parse_version(result.stderr)
        if result.returncodes[0] != 0 or parsed is None:
            raise PgdrError(
                "%s does not look like pg_probackup or gs_probackup (its version output: %r)" % (path, (result.stdout or result.stderr).strip()[:200])
            )
        return cls(Program(path, parsed.kind, parsed.version), backup_path, env=env, run=run)

    def run(self, argv, check=True):
        self.commands.append([os.path.basename(argv[0])] + list(argv[1:]))
        result = self._run(argv, env=self.env, check=False)
        rc = result.returncodes[0]
        if check and rc != 0:
            raise ProbackupError(
                failure_message(self.program.kind, argv[1], rc, result.stderr),
                cmd=self.commands[-1],
                rc=rc,
                stderr=result.stderr[-commands.STDERR_TAIL :],
                errors=error_lines(result.stderr),
            )
        return result

    def show(self, instance=None, backup_id=None):
        return parse_show(self.run(show_argv(self.program, self.backup_path, instance, backup_id)).stdout)

    def backups(self, instance):
        return backups_of(self.show(instance), instance)

    def show_archive(self, instance=None):
        return parse_archive(self.run(show_argv(self.program, self.backup_path, instance, archive=True)).stdout)

    def show_config(self, instance):
        """Parsed show-config, or None when the instance is not in the catalog."""
        result = self.run(show_config_argv(self.program, self.backup_path, instance), check=False)
        if result.returncodes[0] != 0:
            if any("does not exist in this backup catalog" in e for e in error_lines(result.stderr)):
                return None
            self.run(show_config_argv(self.program, self.backup_path, instance))  # raises with the tool's message
        return parse_show_config(result.stdout)


def catalog_state(path):
    """'missing', 'empty' (a folder to init), 'catalog' (has backups/ and wal/) or 'other' (not empty, not a catalog)."""
    if not os.path.exists(path):
        return "missing"
    if not os.path.isdir(path):
        return "other"
    entries = os.listdir(path)
    if not entries:
        return "empty"
    if os.path.isdir(os.path.join(path, "backups")) and os.path.isdir(os.path.join(path, "wal")):
        return "catalog"
    return "other"


def wal_segments(backup_path, instance):
    folder = os.path.join(backup_path, "wal", instance)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
