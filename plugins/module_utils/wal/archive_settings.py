# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL archiving settings of a server (ALTER SYSTEM), the archiver's health, and an end-to-end archive check.

Settings are compared with what the configuration files say (``pg_file_settings``, where ALTER SYSTEM
writes), not only with what the server runs: a change that waits for a restart is not made again on the
next run, but it is reported as ``restart_required`` until the restart happens.

A setting given on the server's command line (``-c``, pg_settings source ``command line``) outranks every
configuration file, and ``pg_ctl restart`` starts the server again with the same command line
(``postmaster.opts``): its configured value is the running one. It is applied when it equals the wanted
value, never waits for a restart, and a different wanted value fails, since neither ALTER SYSTEM nor a
restart could change it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import SEGMENT_RE, STORE_TYPES, ArchiveOptions, archive_command, open_archive

try:
    from psycopg import sql
except ImportError:  # run_module reports the missing library
    sql = None

MANAGED = (
    "wal_level",
    "archive_mode",
    "archive_command",
    "archive_library",
    "archive_timeout",
    "max_wal_senders",
    "max_replication_slots",
    "wal_keep_size",
)

_MEMORY = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}
_VALUE_RE = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_UNIT_RE = re.compile(r"^([0-9]*)\s*([A-Za-z]+)$")
_TRUE = ("on", "true", "yes", "1", "t", "y")
_FALSE = ("off", "false", "no", "0", "f", "n")


# --- values ---------------------------------------------------------------------------------------


def _unit_scale(unit):
    """(family, factor) of a pg_settings unit such as '8kB', 'MB', 's'; None when the setting has no unit."""
    if not unit:
        return None
    match = _UNIT_RE.match(unit)
    if not match:
        return None
    count = int(match.group(1) or 1)
    name = match.group(2)
    if name in _MEMORY:
        return "memory", count * _MEMORY[name]
    if name in _TIME:
        return "time", count * _TIME[name]
    return None


def normalize(value, vartype, unit=None):
    """A canonical text for comparing ``value`` of a setting ('0' and '0MB', '1min' and '60s' compare equal)."""
    if value is None:
        return None
    text = str(value).strip()
    if vartype == "bool":
        low = text.lower()
        if low in _TRUE:
            return "on"
        if low in _FALSE:
            return "off"
        return low
    if vartype == "enum":
        return text.lower()
    if vartype in ("integer", "real"):
        match = _VALUE_RE.match(text)
        if not match:
            return text
        number = float(match.group(1))
        given = match.group(2)
        scale = _unit_scale(unit)
        if given:
            if scale is None:
                return text
            family, base = scale
            table = _MEMORY if family == "memory" else _TIME
            if given not in table:
                return text
            number = number * table[given] / base
        if vartype == "integer":
            number = round(number)
            return str(int(number))
        return repr(float(number))
    return text


COMMAND_LINE = "command line"  # pg_settings.source of a -c option: it outranks the configuration files


def read_settings(conn, names=MANAGED):
    """{name: dict(running, configured, vartype, unit, context, pending_restart, source)} for the settings the server has.

    ``configured`` is what the server will run after a restart: the configuration files' value (ALTER SYSTEM's
    included), the default when no file sets it, or the running value when the command line sets it.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT name, setting, vartype, unit, context, pending_restart, boot_val, source FROM pg_settings WHERE name = ANY(%s)",
            (list(names),),
        )
        rows = cur.fetchall()
        cur.execute(
            # rows waiting for a restart carry an error ("could not be applied"): they still are the configured value
            "SELECT name, setting FROM pg_file_settings WHERE name = ANY(%s) ORDER BY seqno",
            (list(names),),
        )
        in_files = {}
        for name, setting in cur.fetchall():
            in_files[name] = setting  # the last one read wins, as in the server
    found = {}
    for name, setting, vartype, unit, context, pending, boot_val, source in rows:
        found[name] = dict(
            running=setting,
            configured=setting if source == COMMAND_LINE else in_files.get(name, boot_val),
            vartype=vartype,
            unit=unit,
            context=context,
            # a file's value for a command-line setting is never used: it waits for nothing
            pending_restart=bool(pending) and source != COMMAND_LINE,
            source=source,
        )
    return found


@dataclasses.dataclass(frozen=True)
class SettingsOptions:
    """wal_archive_config's options for the server's settings, typed; ``archive`` writes archive_command.

    ``archive``, ``archive_command`` and ``archive_library`` are mutually exclusive (the module declares it).
    """

    wal_level: Optional[str]
    archive_mode: Optional[str]
    archive_timeout: Optional[str]
    max_wal_senders: Optional[int]
    max_replication_slots: Optional[int]
    wal_keep_size: Optional[str]
    archive: Optional[ArchiveOptions]
    archive_command: Optional[str]
    archive_library: Optional[str]


_PLAIN_SETTINGS = ("wal_level", "archive_mode", "archive_timeout", "max_wal_senders", "max_replication_slots", "wal_keep_size")


def desired_settings(options, archive_name):
    """{setting: value} the SettingsOptions ``options`` ask for (None options are not managed)."""
    wanted = {}
    for name in _PLAIN_SETTINGS:
        value = getattr(options, name)
        if value is not None:
            wanted[name] = str(value)
    if options.archive:
        wanted["archive_command"] = archive_command(options.archive, archive_name)
        wanted["archive_library"] = ""
    elif options.archive_command not in (None, ""):
        wanted["archive_command"] = options.archive_command
        wanted["archive_library"] = ""
    elif options.archive_library not in (None, ""):
        wanted["archive_library"] = options.archive_library
        wanted["archive_command"] = ""
    return wanted


def plan_changes(current, wanted):
    """[(name, before, after)] for the settings whose configured value differs from the wanted one.

    A setting from the server's command line is applied when its value is the wanted one; another wanted value
    fails (ALTER SYSTEM would write it, but no reload or restart would ever use it).
    """
    changes = []
    for name, value in wanted.items():
        meta = current.get(name)
        if meta is None:
            if value == "":
                continue  # resetting a setting this version does not have (archive_library before 15)
            raise PgdrError("this PostgreSQL version has no setting %s; leave that option out" % name)
        if normalize(meta["configured"], meta["vartype"], meta["unit"]) != normalize(value, meta["vartype"], meta["unit"]):
            if meta.get("source") == COMMAND_LINE:
                raise PgdrError(
                    "%s is %r on the server's command line (-c %s=..., reused by every pg_ctl restart), which overrides ALTER SYSTEM, "
                    "so %r can never take effect; remove -c %s from the server's start command (service unit, pg_ctl -o) and restart it, "
                    "or ask for %r" % (name, meta["configured"], name, value, name, meta["configured"])
                )
            changes.append((name, meta["configured"], value))
    return changes


def restart_pending(current):
    """Names of settings that take effect only at a restart and whose configured value is not the running one.

    Never a setting from the server's command line: a restart starts the server with the same one.
    """
    pending = []
    for name, meta in current.items():
        if meta.get("source") == COMMAND_LINE:
            continue
        if meta["pending_restart"]:
            pending.append(name)
        elif meta["context"] == "postmaster":
            if normalize(meta["configured"], meta["vartype"], meta["unit"]) != normalize(meta["running"], meta["vartype"], meta["unit"]):
                pending.append(name)
    return sorted(set(pending))


def apply_changes(conn, changes):
    """ALTER SYSTEM each change, then reload; returns the statements run (values shown, they hold no secrets)."""
    executed = []
    with conn.cursor() as cur:
        for name, _before, after in changes:
            statement = sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(after))
            try:
                cur.execute(statement)
            except Exception as exc:
                raise PgdrError("ALTER SYSTEM SET %s failed: %s" % (name, first_line(exc))) from None
            executed.append(statement.as_string(conn))
        if changes:
            cur.execute("SELECT pg_reload_conf()")
            executed.append("SELECT pg_reload_conf()")
    return executed


# --- health ---------------------------------------------------------------------------------------


def _iso(value):
    return value.isoformat() if value is not None else None


def archiver_stats(conn):
    with conn.cursor() as cur:
        cur.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time, stats_reset FROM pg_stat_archiver"
        )
        row = cur.fetchone()
    return dict(
        archived_count=row[0],
        last_archived_wal=row[1],
        last_archived_time=_iso(row[2]),
        failed_count=row[3],
        last_failed_wal=row[4],
        last_failed_time=_iso(row[5]),
        stats_reset=_iso(row[6]),
    )


def replication_slots(conn):
    """Every replication slot with how far its restart_lsn is behind the server's WAL position, in bytes."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT slot_name, slot_type, active, active_pid, restart_lsn::text, wal_status,"
            " pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,"
            " restart_lsn)::bigint FROM pg_replication_slots ORDER BY slot_name"
        )
        rows = cur.fetchall()
    return [dict(slot_name=r[0], slot_type=r[1], active=r[2], active_pid=r[3], restart_lsn=r[4], wal_status=r[5], lag_bytes=r[6]) for r in rows]


def version_facts(conn):
    """The major version and whether in recovery: what any login role may read (no data_directory, log or file settings)."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int / 10000, pg_is_in_recovery()")
        major, in_recovery = cur.fetchone()
    return dict(major=major, in_recovery=in_recovery)


def server_facts(conn):
    """data_directory, port, first socket folder, major version, whether in recovery."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT current_setting('data_directory'), current_setting('port')::int, current_setting('unix_socket_directories'),"
            " current_setting('server_version_num')::int / 10000, pg_is_in_recovery(), current_setting('logging_collector'),"
            " pg_current_logfile()"
        )
        data_dir, port, sockets, major, in_recovery, collector, logfile = cur.fetchone()
    socket_dir = (sockets or "").split(",")[0].strip() or None
    if logfile and not os.path.isabs(logfile):
        logfile = os.path.join(data_dir, logfile)
    return dict(data_directory=data_dir, port=port, socket_dir=socket_dir, major=major, in_recovery=in_recovery, logfile=logfile)


def last_archive_error(log_path, max_bytes=262144):
    """The most telling recent archiver complaint in the server log (pgdr-wal's own line first), or None."""
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in ("pgdr-wal:", "archive command failed", "archive_command", "archiving write-ahead log"):
        for index in range(len(lines) - 1, -1, -1):
            if marker in lines[index]:
                line = lines[index]
                if marker == "archive command failed" and index + 1 < len(lines) and "DETAIL" in lines[index + 1]:
                    line += " " + lines[index + 1]
                return line[:500]
    return None


# --- verify ---------------------------------------------------------------------------------------


def switch_wal(conn):
    """Force a WAL segment switch (writing a record first, so there is something to switch); the finished segment's name."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        if cur.fetchone()[0]:
            raise PgdrError("verify needs a primary: pg_switch_wal() cannot run on a server in recovery")
        # a switch right after another one (or on an idle server) does nothing: make the current segment non-empty
        cur.execute("SELECT pg_logical_emit_message(false, 'pgdr.backup', 'wal archive verify')")
        cur.execute("SELECT pg_walfile_name(pg_switch_wal())")
        return cur.fetchone()[0]


def server_archived(stats, walfile):
    """Whether pg_stat_archiver says ``walfile`` (or a later segment) is archived.

    Segment names only are compared: a later .backup file counts, a .history file does not.
    """
    last = (stats["last_archived_wal"] or "")[:24]
    return SEGMENT_RE.match(last) is not None and last >= walfile


def wait_archived(conn, walfile, timeout, archive=None, log_path=None, poll=0.5):
    """Wait until PostgreSQL's archiver reports ``walfile`` done and, for a local/sftp/s3 ``archive`` (ArchiveOptions),
    the store holds it.

    Both, because the segment reaches the store before archive_command returns and the archiver counts it:
    a result read in between would show a verified archive that the server has not finished with.
    """
    started = time.monotonic()
    reader = None
    if archive and archive.type in STORE_TYPES:
        reader = open_archive(archive)
    try:
        while True:
            stats = archiver_stats(conn)
            archived = server_archived(stats, walfile) and (reader is None or reader.exists(walfile))
            if archived:
                return dict(walfile=walfile, seconds=round(time.monotonic() - started, 3), archiver=stats)
            if time.monotonic() - started > timeout:
                break
            time.sleep(poll)
    finally:
        if reader is not None:
            reader.close()
    reason = last_archive_error(log_path)
    where = " in %s" % _describe(archive) if archive else ""
    msg = "WAL segment %s was not archived%s within %d seconds: archiver failed_count %s, last failed %s at %s" % (
        walfile,
        where,
        timeout,
        stats["failed_count"],
        stats["last_failed_wal"] or "none",
        stats["last_failed_time"] or "never",
    )
    msg += "; last error: %s" % reason if reason else "; see the server log for the archive_command's errors"
    raise PgdrError(msg, archiver=stats, walfile=walfile)


def _describe(archive):
    kind = archive.type
    if kind == "local":
        return "local:%s" % archive.path
    if kind == "sftp":
        return "sftp://%s@%s%s" % (archive.user, archive.host, archive.path)
    if kind == "s3":
        return "s3://%s/%s" % (archive.bucket, archive.prefix or "")
    return kind
