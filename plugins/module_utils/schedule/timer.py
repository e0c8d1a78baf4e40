# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""When a scheduled backup runs and how that is installed: a systemd service + timer, or an /etc/cron.d file.

Pure text rendering (plus two small reads of the host: its time zone and whether systemd is PID 1). The
host-side runner imports this layer too, so nothing here may import ``ansible``.

Both renderings run the same argv: cron through ``/bin/sh`` with ``command_line(argv)`` (shlex quoting), systemd
through ``ExecStart=`` in systemd's own quoting (systemd.syntax(7), systemd.service(5) "Command lines"); a unit
test parses both back to the argv.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import NamedTuple

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TIMER_KINDS = ("auto", "systemd", "cron")
JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# a zone name as tzdata spells them (Europe/Paris, America/Argentina/Buenos_Aires, Etc/GMT+5, UTC)
ZONE_RE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
# a login name as useradd(8) accepts by default
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")

UNIT_PREFIX = "pgdr-backup-"
SYSTEMD_DIR = "/etc/systemd/system"
CRON_DIR = "/etc/cron.d"
ZONEINFO_DIR = "/usr/share/zoneinfo"
SD_BOOTED = "/run/systemd/system"  # sd_booted(3): this folder exists only when systemd is PID 1
CRON_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# cron's day-of-week numbers (0 and 7 are Sunday; 0 is the one every cron takes)
_CRON_DAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 0}


class Schedule(NamedTuple):
    weekdays: tuple  # a subset of WEEKDAYS, in WEEKDAYS order
    time: str  # "HH:MM", 24 h
    timezone: str  # a tzdata name; '' is the host's zone
    randomized_delay: int  # seconds, 0 for none
    persistent: bool  # systemd Persistent=: a run missed while the host was down runs at boot
    every_minutes: int = 0  # an interval schedule instead (weekdays and time unused): every N minutes, from the hour


# the intervals an hour divides into evenly, so "every N minutes" is the same in systemd and cron (both restart at :00)
INTERVALS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)


# --- names --------------------------------------------------------------------------------------------------


def validate_job_name(name):
    """``name`` if it is a usable job name (it names the unit, the cron file, the job, status and textfile)."""
    if not isinstance(name, str) or not JOB_NAME_RE.match(name):
        raise PgdrError(
            "backup job name %r is not usable: use 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit" % (name,)
        )
    return name


def unit_names(name):
    """(service, timer) unit names of the job ``name``."""
    base = UNIT_PREFIX + validate_job_name(name)
    return base + ".service", base + ".timer"


def cron_path(name, cron_dir=CRON_DIR):
    # cron ignores /etc/cron.d files whose names hold anything but [A-Za-z0-9_-] (no dot): the job name fits
    return os.path.join(cron_dir, UNIT_PREFIX + validate_job_name(name))


# --- the schedule -------------------------------------------------------------------------------------------


def _zone_known(zone, zoneinfo_dir):
    """True if ``zone`` names a compiled zone file under ``zoneinfo_dir`` (a TZif file, never outside the folder)."""
    if not ZONE_RE.match(zone) or len(zone) > 255:  # no '.', so no '..' component and no zone.tab / tzdata.zi
        return False
    path = os.path.join(zoneinfo_dir, *zone.split("/"))
    root = os.path.realpath(zoneinfo_dir)
    real = os.path.realpath(path)
    # tzdata links zones to each other inside the folder; a link out of it is not a zone
    if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
        return False
    try:
        with open(real, "rb") as handle:
            return handle.read(4) == b"TZif"
    except OSError:
        return False


def parse_schedule(weekdays, time, timezone="", randomized_delay=0, persistent=True, zoneinfo_dir=ZONEINFO_DIR):
    """The Schedule for the ``schedule`` option's values; PgdrError naming the value and the fix otherwise."""
    if isinstance(weekdays, str) or not isinstance(weekdays, (list, tuple)) or not weekdays:
        raise PgdrError("schedule.weekdays must be a non-empty list of %s (e.g. [mon, wed, fri]); got %r" % (", ".join(WEEKDAYS), weekdays))
    days = []
    for day in weekdays:
        key = day.strip().lower() if isinstance(day, str) else day
        if key not in WEEKDAYS:
            raise PgdrError("schedule.weekdays: %r is not a weekday; use %s" % (day, ", ".join(WEEKDAYS)))
        if key in days:
            raise PgdrError("schedule.weekdays: %r is given twice; list each weekday once" % (day,))
        days.append(key)
    if not isinstance(time, str) or not TIME_RE.match(time):
        raise PgdrError("schedule.time must be \"HH:MM\" on a 24-hour clock, 00:00 to 23:59 (e.g. \"02:30\"); got %r" % (time,))
    if timezone is None:
        timezone = ""
    if not isinstance(timezone, str):
        raise PgdrError("schedule.timezone must be a time zone name such as Europe/Paris, or '' for the host's zone; got %r" % (timezone,))
    if timezone and not _zone_known(timezone, zoneinfo_dir):
        raise PgdrError(
            "schedule.timezone %r is not a time zone of this host (%s): use a tzdata name such as Europe/Paris or UTC, "
            "or '' for the host's zone (install tzdata if it is missing)" % (timezone, zoneinfo_dir)
        )
    if isinstance(randomized_delay, bool) or not isinstance(randomized_delay, int) or randomized_delay < 0:
        raise PgdrError("schedule.randomized_delay must be a whole number of seconds, 0 or more; got %r" % (randomized_delay,))
    if not isinstance(persistent, bool):
        raise PgdrError("schedule.persistent must be true or false; got %r" % (persistent,))
    ordered = tuple(day for day in WEEKDAYS if day in days)  # one order, so reordering the list changes nothing
    return Schedule(ordered, time, timezone, randomized_delay, persistent)


def parse_interval(every_minutes):
    """The Schedule of a job that runs every ``every_minutes`` minutes (a watcher such as the WAL archive's status)."""
    if isinstance(every_minutes, bool) or every_minutes not in INTERVALS:
        raise PgdrError("schedule.every_minutes must divide an hour evenly (%s); got %r" % (", ".join(map(str, INTERVALS)), every_minutes))
    # not persistent: a check missed while the host was down means nothing at boot, the next one comes minutes later
    return Schedule(WEEKDAYS, "", "", 0, False, every_minutes)


def on_calendar(schedule):
    """The systemd calendar event (systemd.time(7)): ``Mon,Wed,Fri *-*-* 02:30:00 Europe/Paris``, or ``*-*-* *:00/5:00``."""
    if schedule.every_minutes:
        return "*-*-* *:00:00" if schedule.every_minutes == 60 else "*-*-* *:00/%d:00" % schedule.every_minutes
    days = "" if len(schedule.weekdays) == len(WEEKDAYS) else ",".join(day.capitalize() for day in schedule.weekdays) + " "
    text = "%s*-*-* %s:00" % (days, schedule.time)
    return text + " " + schedule.timezone if schedule.timezone else text


# --- the host -----------------------------------------------------------------------------------------------


def timer_kind(requested, booted_path=SD_BOOTED):
    """What ``timer`` (auto | systemd | cron) means on this host: "systemd" or "cron"."""
    if requested not in TIMER_KINDS:
        raise PgdrError("timer must be one of %s; got %r" % (", ".join(TIMER_KINDS), requested))
    if requested == "auto":
        return "systemd" if os.path.isdir(booted_path) else "cron"
    return requested


def host_timezone(etc_timezone="/etc/timezone", localtime="/etc/localtime"):
    """The host's zone name: Debian's /etc/timezone, else the zone /etc/localtime links to, else "UTC"."""
    try:
        with open(etc_timezone, encoding="utf-8") as handle:
            zone = handle.readline().strip()
        if zone:
            return zone
    except (OSError, UnicodeDecodeError):
        pass
    try:
        target = os.readlink(localtime)
    except OSError:
        return "UTC"  # no link: glibc reads a copied file or nothing, and nothing means UTC
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else "UTC"


_UTC_NAMES = {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu", "GMT", "Etc/GMT"}


def cron_timezone_ok(schedule, host_zone):
    """True if cron can honour the schedule's zone: cron (Debian's has no CRON_TZ) runs jobs in the host's zone."""
    zone = schedule.timezone
    if not zone or zone == host_zone:
        return True
    return zone in _UTC_NAMES and host_zone in _UTC_NAMES  # the same zone under another name


# --- command lines ------------------------------------------------------------------------------------------


def _check_argv(argv):
    if isinstance(argv, str) or not argv or not all(isinstance(arg, str) for arg in argv):
        raise PgdrError("the job's command must be a non-empty list of strings; got %r" % (argv,))
    # an absolute path: systemd wants one (or a PATH lookup), and it never starts with ExecStart's prefixes (@-:+!)
    if not argv[0].startswith("/"):
        raise PgdrError("the job's program %r must be an absolute path" % (argv[0],))
    if any("\0" in arg for arg in argv):
        raise PgdrError("the job's command holds a NUL character; remove it")
    return list(argv)


def command_line(argv):
    """The argv as one /bin/sh command line (what cron runs and what the docs show)."""
    return shlex.join(_check_argv(argv))


_SYSTEMD_PLAIN = re.compile(r"^[A-Za-z0-9_./:=,+@-]+$")


def _systemd_word(arg):
    """One ExecStart= word: ``%`` is written ``%%`` (specifiers), ``$`` is ``$$`` (variable expansion); a word with
    anything else than plain characters goes in double quotes with C escapes (systemd unquotes and C-unescapes)."""
    if _SYSTEMD_PLAIN.match(arg):
        return arg
    out = []
    for char in arg:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "%":
            out.append("%%")
        elif char == "$":
            out.append("$$")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append("\\x%02x" % ord(char))
        else:
            out.append(char)
    return '"%s"' % "".join(out)


def exec_start(argv):
    """The ExecStart= value that systemd parses back into ``argv``."""
    return " ".join(_systemd_word(arg) for arg in _check_argv(argv))


def _unit_text(text, what):
    """A one-line free text for a unit setting: specifiers escaped, no line breaks."""
    if not isinstance(text, str) or "\n" in text or "\r" in text or "\0" in text:
        raise PgdrError("the unit's %s must be one line of text; got %r" % (what, text))
    return text.replace("%", "%%")


def _check_user(os_user):
    if not isinstance(os_user, str) or not USER_RE.match(os_user) or len(os_user) > 32:
        raise PgdrError("os_user %r is not a user name: use the login name the backup runs as (e.g. postgres)" % (os_user,))
    return os_user


# --- systemd ------------------------------------------------------------------------------------------------


def systemd_units(name, schedule, argv, os_user, description):
    """dict(service=, timer=): the text of ``pgdr-backup-<name>.service`` and ``.timer``."""
    service_name, timer_name = unit_names(name)
    what = _unit_text(description, "description")
    service = "\n".join([
        "# pgdr.backup: backup job %s (written by pgdr.backup.backup_schedule; edits are overwritten)" % name,
        "[Unit]",
        "Description=%s" % what,
        # a repository may be over the network (SFTP, S3); at boot a Persistent= catch-up run waits for it
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        # oneshot: the unit is "activating" for the whole run, so the timer never starts a second one meanwhile
        # (the runner's lock also guards against a cron line or a hand-run); its default start timeout is none
        "Type=oneshot",
        "User=%s" % _check_user(os_user),
        "ExecStart=%s" % exec_start(argv),
        # a backup competes with the server it reads: lower CPU priority, and the lowest best-effort I/O priority
        # rather than the idle class, which on a busy disk can starve the run for hours (a backup that never ends
        # is worse than a slower one). No Restart=: a failed run is reported in the status and retried next time.
        "Nice=10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
        "SyslogIdentifier=%s" % service_name[:-len(".service")],
        "",
    ])
    timer = "\n".join([
        "# pgdr.backup: schedule of backup job %s (written by pgdr.backup.backup_schedule; edits are overwritten)" % name,
        "[Unit]",
        "Description=%s (schedule)" % what,
        "",
        "[Timer]",
        "OnCalendar=%s" % on_calendar(schedule),
        "Persistent=%s" % ("true" if schedule.persistent else "false"),
        "RandomizedDelaySec=%d" % schedule.randomized_delay,
        "Unit=%s" % service_name,
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])
    return dict(service=service, timer=timer)


# --- cron ---------------------------------------------------------------------------------------------------


def cron_file(name, schedule, argv, os_user):
    """The text of ``/etc/cron.d/pgdr-backup-<name>``. Its command is exactly ``command_line(argv)``.

    cron has no randomized delay (the runner's ``--random-delay`` does it) and no per-job zone (check
    ``cron_timezone_ok`` first): neither shows here.
    """
    validate_job_name(name)
    line = command_line(argv)
    # cron turns '%' into a newline (the rest becomes stdin), and a newline ends the entry: neither can be quoted
    # in a way that leaves the command equal to command_line(argv), so they are refused
    if "%" in line or "\n" in line or "\r" in line:
        raise PgdrError("the job's command %r holds '%%' or a line break, which cron cannot run as written; use paths and names without them" % (line,))
    if schedule.every_minutes:
        when = ("0 * * * *" if schedule.every_minutes == 60 else "*/%d * * * *" % schedule.every_minutes)
        says = "every %d minutes" % schedule.every_minutes
    else:
        hour, minute = schedule.time.split(":")
        days = "*" if len(schedule.weekdays) == len(WEEKDAYS) else ",".join(str(day) for day in sorted(_CRON_DAYS[d] for d in schedule.weekdays))
        when = "%d %d * * %s" % (int(minute), int(hour), days)
        says = "%s at %s, host time" % (",".join(schedule.weekdays), schedule.time)
    return "\n".join([
        "# pgdr.backup: backup job %s (written by pgdr.backup.backup_schedule; edits are overwritten)" % name,
        "# runs %s" % says,
        "SHELL=/bin/sh",
        "PATH=%s" % CRON_PATH_ENV,
        "%s %s %s" % (when, _check_user(os_user), line),
        "",  # cron ignores a last line without a newline
    ])
