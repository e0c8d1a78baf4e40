# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which backup sets a prune keeps: a pure function of the sets, the rules and the time (unit-tested over a month of sets).

The rules, per series: the sets of one kind, and for logical-db and logical-table sets of one database (a logical-db
set never pushes a base set out, nor a dump of database A the only dump of database B filed in the same cluster):

- ``keep_last`` N: the N newest complete sets of each series.
- ``keep_within`` W: every complete set that finished within W before now.
- A set is kept if any rule keeps it; a pinned set (pin not expired) is always kept.
- The newest complete set of each series is always kept, even if no rule would keep it: a prune must never
  leave a database or a kind with nothing to restore.
- A kept incremental base set keeps every set of its chain (``physical.chain``): it cannot be restored without them.
- An incomplete set (no manifest) is removed once its last activity is older than ``incomplete_grace``; a younger
  one may be a backup still running and is never touched, nor one whose age cannot be told.
- A set whose manifest cannot be read is never removed by a prune: a person has to look at it.
"""

from __future__ import annotations

import datetime
from typing import List, NamedTuple, Optional, Tuple

from ansible_collections.pgdr.backup.plugins.module_utils.catalog.timespec import iso, show_duration

COMPLETE = "complete"
INCOMPLETE = "incomplete"
UNREADABLE = "unreadable"


class SetFacts(NamedTuple):
    """What retention needs to know of one set."""

    backup_id: str
    kind: Optional[str]  # None for incomplete and unreadable sets
    status: str  # complete, incomplete, unreadable
    time: Optional[datetime.datetime]  # finished_at of a complete set; last activity of an incomplete one; None: unknown
    pinned: bool = False  # pinned and not expired
    pin_expires: Optional[datetime.datetime] = None
    chain: Tuple[str, ...] = ()  # the incremental chain of a base set, oldest first, ending with itself
    database: Optional[str] = None  # logical-db and logical-table sets: the database dumped (part of the series)


class Rules(NamedTuple):
    keep_last: Optional[int]
    keep_within: Optional[datetime.timedelta]
    incomplete_grace: datetime.timedelta


class Decision(NamedTuple):
    backup_id: str
    kind: Optional[str]
    status: str
    keep: bool
    reasons: List[str]  # why it is kept, or why it goes


def _rank(item):
    return (item.time, item.backup_id)


def series(item):
    """What a set competes with for keep_last: its kind, and for a one-database logical set also its database."""
    if item.kind in ("logical-db", "logical-table") and item.database:
        return "%s %s" % (item.kind, item.database)
    return item.kind


def decide(sets, rules, now):
    """A Decision for every set, in the order given; ``now`` is an aware datetime."""
    reasons = {item.backup_id: [] for item in sets}
    delete = {}
    by_kind = {}
    for item in sets:
        if item.status == COMPLETE:
            by_kind.setdefault(series(item), []).append(item)
        elif item.status == INCOMPLETE:
            if item.time is None:
                reasons[item.backup_id].append("incomplete, age unknown: left alone")
            elif now - item.time > rules.incomplete_grace:
                delete[item.backup_id] = "incomplete (no manifest), last written %s, older than incomplete_grace %s" % (
                    iso(item.time), show_duration(rules.incomplete_grace))
            else:
                reasons[item.backup_id].append("incomplete but younger than incomplete_grace %s: may be a backup in progress"
                                               % show_duration(rules.incomplete_grace))
        else:
            reasons[item.backup_id].append("manifest unreadable: left for a person to look at")
    kept = set()
    for kind, items in by_kind.items():
        items.sort(key=_rank, reverse=True)
        for index, item in enumerate(items):
            why = reasons[item.backup_id]
            if index == 0:
                why.append("newest complete %s set" % kind)
            if rules.keep_last is not None and index < rules.keep_last:
                why.append("keep_last %d (number %d)" % (rules.keep_last, index + 1))
            if rules.keep_within is not None and item.time >= now - rules.keep_within:
                why.append("keep_within %s" % show_duration(rules.keep_within))
            if item.pinned:
                why.append("pinned" + (" until %s" % iso(item.pin_expires) if item.pin_expires else ""))
            if why:
                kept.add(item.backup_id)
    complete = {item.backup_id: item for items in by_kind.values() for item in items}
    for backup_id in sorted(kept):
        for parent in complete[backup_id].chain[:-1]:
            if parent in complete and parent != backup_id:
                reasons[parent].append("in the incremental chain of %s" % backup_id)
    for backup_id, item in complete.items():
        if not reasons[backup_id]:
            delete[backup_id] = "no rule keeps it (%s set finished %s)" % (item.kind, iso(item.time))
    return [
        Decision(item.backup_id, item.kind, item.status, item.backup_id not in delete,
                 [delete[item.backup_id]] if item.backup_id in delete else reasons[item.backup_id])
        for item in sets
    ]
