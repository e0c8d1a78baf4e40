# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery targets: one option shape for every module that restores or validates to a point in time.

The options are PostgreSQL's own setting names (``recovery_target_time``, ``recovery_target_name``, ...), so
what a user writes in a playbook is what ends up in ``postgresql.auto.conf`` or on pg_probackup's command line.
At most one target is given; none means the end of the archive (``latest``).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

TARGET_KINDS = ("time", "xid", "lsn", "name")
ACTIONS = ("promote", "pause", "shutdown")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d+)?)\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)$")


def recovery_target_argument_spec():
    """The recovery target options (documented in each module that takes them)."""
    return dict(
        recovery_target=dict(type="str", choices=["immediate", "latest"]),
        recovery_target_time=dict(type="str"),
        recovery_target_xid=dict(type="str"),
        recovery_target_lsn=dict(type="str"),
        recovery_target_name=dict(type="str"),
        recovery_target_inclusive=dict(type="bool"),
        recovery_target_timeline=dict(type="str"),
        recovery_target_action=dict(type="str", choices=list(ACTIONS), default="promote"),
    )


@dataclasses.dataclass(frozen=True)
class RecoveryTargetOptions:
    recovery_target: Optional[str]
    recovery_target_time: Optional[str]
    recovery_target_xid: Optional[str]
    recovery_target_lsn: Optional[str]
    recovery_target_name: Optional[str]
    recovery_target_inclusive: Optional[bool]
    recovery_target_timeline: Optional[str]
    recovery_target_action: Optional[str]


def requested_target(options):
    """(kind, value) of the requested target: kind is one of time, xid, lsn, name, immediate, latest."""
    given = [(kind, getattr(options, "recovery_target_" + kind)) for kind in TARGET_KINDS if getattr(options, "recovery_target_" + kind) not in (None, "")]
    if options.recovery_target == "immediate":
        given.append(("immediate", None))
    if len(given) > 1:
        raise PgdrError("give one recovery target, not %s" % " and ".join("recovery_target_%s" % k if v else "recovery_target=immediate" for k, v in given))
    if given:
        if given[0][0] == "lsn":
            lsn_to_int(given[0][1])
        return given[0]
    return ("latest", None)


def lsn_to_int(text):
    match = _LSN_RE.match(text or "")
    if not match:
        raise PgdrError("%r is not an LSN such as 0/3000028" % (text,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def parse_target_time(text):
    """A recovery_target_time as an aware datetime (PostgreSQL accepts more forms; these are the ones checked before starting)."""
    match = _TIME_RE.match(text.strip())
    if not match:
        raise PgdrError("recovery_target_time %r needs a date, a time and a time zone, for example '2026-11-22 10:15:00+00'" % text)
    date, clock, zone = match.groups()
    moment = datetime.datetime.strptime("%s %s" % (date, clock.split(".")[0]), "%Y-%m-%d %H:%M:%S")
    if "." in clock:
        moment = moment.replace(microsecond=int((clock.split(".")[1] + "000000")[:6]))
    offset = datetime.timedelta(0)
    if zone not in ("Z", "UTC"):
        hours, minutes = int(zone[1:3]), int(zone[-2:]) if len(zone) > 3 else 0
        offset = datetime.timedelta(hours=hours, minutes=minutes) * (1 if zone[0] == "+" else -1)
    return moment.replace(tzinfo=datetime.timezone(offset))
