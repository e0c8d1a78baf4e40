# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durations (``14d``, ``12h``, ``1d12h``) and times (ISO 8601, a backup id, or a duration from now) as the catalog reads them.

One small parser for every time-like option of the catalog, so that ``keep_within: 14d`` and ``pin_expires: 30d``
mean the same unit everywhere; each bad value is one line that names the option and shows a good value.
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^(?:[0-9]+[smhdw])+$")
_PART_RE = re.compile(r"([0-9]+)([smhdw])")
_BACKUP_ID_RE = re.compile(r"^([0-9]{8})T([0-9]{6})Z$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_EXAMPLE_TIME = "2026-11-21T14:00:00Z, 2026-11-21 14:00, 2026-11-21 or 20261121T140000Z"


def is_duration(text):
    return isinstance(text, str) and bool(_DURATION_RE.match(text.strip().lower()))


def parse_duration(text, option):
    """A timedelta from ``14d``, ``12h``, ``90m``, ``2w``, ``1d12h`` (units s, m, h, d, w); PgdrError naming ``option`` otherwise."""
    if not is_duration(text):
        raise PgdrError("%s %r is not a duration: use a number and a unit such as 12h, 14d or 2w (units s, m, h, d, w; 1d12h also works)"
                        % (option, text))
    seconds = sum(int(number) * UNITS[unit] for number, unit in _PART_RE.findall(text.strip().lower()))
    return datetime.timedelta(seconds=seconds)


def parse_positive_duration(text, option):
    value = parse_duration(text, option)
    if value <= datetime.timedelta(0):
        raise PgdrError("%s %r is zero: give a duration longer than that, such as 14d" % (option, text))
    return value


def parse_time(text, option):
    """An aware UTC datetime from an ISO 8601 time (``Z`` or an offset; without one it is UTC), a date, or a backup id.

    Ansible may hand over a datetime already (a YAML timestamp); a naive one is taken as UTC too.
    """
    if isinstance(text, datetime.datetime):
        moment = text
    elif isinstance(text, datetime.date):
        moment = datetime.datetime(text.year, text.month, text.day)
    else:
        moment = _parse_text(text, option)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _parse_text(text, option):
    value = text.strip() if isinstance(text, str) else text
    problem = PgdrError("%s %r is not a time: use ISO 8601 such as %s (UTC unless an offset is given), or a duration such as 2d"
                        % (option, text, _EXAMPLE_TIME))
    if not isinstance(value, str) or not value:
        raise problem
    match = _BACKUP_ID_RE.match(value)
    try:
        if match:
            return datetime.datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S").replace(tzinfo=datetime.timezone.utc)
        if _DATE_RE.match(value):
            return datetime.datetime.strptime(value, "%Y-%m-%d")
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        # fromisoformat of Python < 3.11 needs 0, 3 or 6 fraction digits: pad to 6
        value = re.sub(r"\.([0-9]{1,6})(?=$|[+-])", lambda m: "." + m.group(1).ljust(6, "0"), value)
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        raise problem from None


def parse_moment(text, option, now, future=False):
    """A time, or a duration counted back from ``now`` (``2d`` = two days ago), or forward with ``future`` (an expiry)."""
    if is_duration(text):
        delta = parse_duration(text, option)
        return now + delta if future else now - delta
    return parse_time(text, option)


def backup_id_time(backup_id):
    """The UTC time of a backup id made by new_backup_id (``20261121T140051Z``), or None for any other id."""
    match = _BACKUP_ID_RE.match(backup_id or "")
    if not match:
        return None
    try:
        return datetime.datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def iso(moment):
    """``2026-11-21T14:00:51Z`` (whole seconds) for results; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def show_duration(delta):
    """A timedelta as the shortest text parse_duration reads back (``1d12h``), for messages."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, UNITS[unit])
        if count:
            parts.append("%d%s" % (count, unit))
    return "".join(parts)
