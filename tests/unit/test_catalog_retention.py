"""Retention over a simulated month of backup ids: exactly which sets a prune keeps, and why."""

import datetime

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import retention as rt
from ansible_collections.pgdr.backup.plugins.module_utils.sets.backup_set import new_backup_id

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)


def at(days_ago, hour):
    """A time ``days_ago`` days before NOW's date, at ``hour`` UTC."""
    return datetime.datetime(2026, 12, 7, hour, 0, tzinfo=UTC) - days_ago * DAY


def bid(days_ago, hour):
    return new_backup_id(at(days_ago, hour))


def complete(days_ago, hour, kind, **extra):
    return rt.SetFacts(bid(days_ago, hour), kind, rt.COMPLETE, at(days_ago, hour) + datetime.timedelta(minutes=5), **extra)


def month():
    """A logical-db dump every night for 30 nights, a weekly full base backup (and one incremental), one logical-cluster
    dump three weeks ago, two incomplete sets (one stale, one maybe still running), one with a broken manifest, pins."""
    sets = [complete(d, 1, "logical-db", pinned=(d == 25)) for d in range(1, 31)]
    full28 = bid(28, 2)
    sets += [complete(d, 2, "base", chain=(bid(d, 2),)) for d in (7, 14, 21, 28)]
    sets.append(complete(27, 2, "base", chain=(full28, bid(27, 2)), pinned=True, pin_expires=NOW + 30 * DAY))
    sets.append(complete(20, 4, "logical-cluster"))
    sets.append(rt.SetFacts(bid(3, 5), None, rt.INCOMPLETE, at(3, 5)))
    sets.append(rt.SetFacts(bid(0, 1), None, rt.INCOMPLETE, NOW - datetime.timedelta(hours=2)))
    sets.append(rt.SetFacts("before-upgrade", None, rt.INCOMPLETE, None))
    sets.append(rt.SetFacts(bid(10, 6), None, rt.UNREADABLE, None))
    return sets


RULES = rt.Rules(keep_last=3, keep_within=7 * DAY, incomplete_grace=DAY)


def kept_ids(decisions):
    return {d.backup_id for d in decisions if d.keep}


def test_a_month_with_keep_last_3_and_keep_within_7d():
    sets = month()
    decisions = rt.decide(sets, RULES, NOW)
    assert [d.backup_id for d in decisions] == [s.backup_id for s in sets]
    expected = (
        # dumps: the window reaches back to 30 Nov 03:00, so nights 1..6 (night 7 finished at 01:05 on the 30th);
        # keep_last 3 (nights 1..3) adds nothing; night 25 is pinned
        {bid(d, 1) for d in range(1, 7)} | {bid(25, 1)}
        # base: keep_last 3 keeps the fulls of days 7, 14, 21 (all outside the window); the pinned incremental of day 27
        # keeps itself and its full of day 28
        | {bid(7, 2), bid(14, 2), bid(21, 2), bid(27, 2), bid(28, 2)}
        # the only logical-cluster set (keep_last counts per kind)
        | {bid(20, 4)}
        # the incomplete set of two hours ago, the one whose age is unknown, the unreadable one
        | {bid(0, 1), "before-upgrade", bid(10, 6)}
    )
    assert kept_ids(decisions) == expected
    deleted = {d.backup_id for d in decisions if not d.keep}
    assert deleted == {bid(d, 1) for d in range(7, 31) if d != 25} | {bid(3, 5)}
    assert len(deleted) == 24


def test_every_decision_says_why():
    why = {d.backup_id: d.reasons for d in rt.decide(month(), RULES, NOW)}
    assert why[bid(1, 1)] == ["newest complete logical-db set", "keep_last 3 (number 1)", "keep_within 7d"]
    assert why[bid(5, 1)] == ["keep_within 7d"]
    assert why[bid(25, 1)] == ["pinned"]
    assert why[bid(27, 2)] == ["pinned until 2027-01-06T03:00:00Z"]
    assert why[bid(28, 2)] == ["in the incremental chain of %s" % bid(27, 2)]
    assert why[bid(21, 2)] == ["keep_last 3 (number 3)"]
    assert why[bid(20, 4)] == ["newest complete logical-cluster set", "keep_last 3 (number 1)"]
    assert why[bid(8, 1)] == ["no rule keeps it (logical-db set finished 2026-11-29T01:05:00Z)"]
    assert why[bid(3, 5)] == ["incomplete (no manifest), last written 2026-12-04T05:00:00Z, older than incomplete_grace 1d"]
    assert why[bid(0, 1)] == ["incomplete but younger than incomplete_grace 1d: may be a backup in progress"]
    assert why["before-upgrade"] == ["incomplete, age unknown: left alone"]
    assert why[bid(10, 6)] == ["manifest unreadable: left for a person to look at"]
    assert all(len(reasons) >= 1 for reasons in why.values())


def test_rules_apply_per_kind():
    # 30 dumps do not push the 4 base backups out: keep_last counts within each kind
    decisions = rt.decide(month(), rt.Rules(keep_last=4, keep_within=None, incomplete_grace=DAY), NOW)
    base = {d.backup_id for d in decisions if d.kind == "base" and d.keep}
    assert base == {bid(7, 2), bid(14, 2), bid(21, 2), bid(27, 2), bid(28, 2)}
    assert {d.backup_id for d in decisions if d.kind == "logical-db" and d.keep} == {bid(d, 1) for d in (1, 2, 3, 4, 25)}


def test_dumps_of_two_databases_in_one_cluster_are_counted_apart():
    # two scheduled jobs file their dumps under one cluster: app's daily dumps must not push out billing's weekly one
    app = [complete(days, 1, "logical-db", database="app") for days in range(1, 8)]
    sets = app + [complete(6, 3, "logical-db", database="billing"), complete(13, 3, "logical-db", database="billing")]
    decisions = rt.decide(sets, rt.Rules(keep_last=2, keep_within=None, incomplete_grace=DAY), NOW)
    assert kept_ids(decisions) == {bid(1, 1), bid(2, 1), bid(6, 3), bid(13, 3)}
    assert rt.series(sets[0]) == "logical-db app" and rt.series(complete(1, 2, "base")) == "base"


@pytest.mark.parametrize("rules", [
    rt.Rules(keep_last=None, keep_within=DAY / 24, incomplete_grace=DAY),  # a window nothing falls in
    rt.Rules(keep_last=1, keep_within=None, incomplete_grace=DAY),
])
def test_the_newest_complete_set_of_each_kind_always_stays(rules):
    old = [complete(40, 1, "logical-db"), complete(50, 1, "logical-db"), complete(45, 2, "base")]
    decisions = rt.decide(old, rules, NOW)
    assert kept_ids(decisions) == {bid(40, 1), bid(45, 2)}


def test_an_expired_pin_keeps_nothing_and_without_the_pin_the_chain_goes_too():
    sets = [s._replace(pinned=False, pin_expires=None) for s in month()]
    decisions = rt.decide(sets, RULES, NOW)
    gone = {d.backup_id for d in decisions if not d.keep}
    assert {bid(25, 1), bid(27, 2), bid(28, 2)} <= gone
    assert bid(21, 2) not in gone


def test_a_kept_incremental_in_the_window_keeps_its_whole_chain():
    full, inc1, inc2 = bid(20, 2), bid(2, 2), bid(1, 2)
    sets = [
        rt.SetFacts(full, "base", rt.COMPLETE, at(20, 2), chain=(full,)),
        rt.SetFacts(inc1, "base", rt.COMPLETE, at(2, 2), chain=(full, inc1)),
        rt.SetFacts(inc2, "base", rt.COMPLETE, at(1, 2), chain=(full, inc1, inc2)),
        rt.SetFacts(bid(30, 2), "base", rt.COMPLETE, at(30, 2), chain=(bid(30, 2),)),
    ]
    decisions = rt.decide(sets, rt.Rules(keep_last=1, keep_within=None, incomplete_grace=DAY), NOW)
    assert kept_ids(decisions) == {full, inc1, inc2}


def test_ties_in_time_are_broken_by_backup_id():
    same = at(5, 1)
    sets = [rt.SetFacts("a", "logical-db", rt.COMPLETE, same), rt.SetFacts("b", "logical-db", rt.COMPLETE, same)]
    assert kept_ids(rt.decide(sets, rt.Rules(keep_last=1, keep_within=None, incomplete_grace=DAY), NOW)) == {"b"}
