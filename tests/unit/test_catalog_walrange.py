"""WAL a base set needs, archive gaps and the WAL prune boundary (catalog/walrange.py)."""

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import walrange as wr
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

MB = 1024 * 1024


@pytest.mark.parametrize(
    "lsn, timeline, size, name",
    [
        ("0/3000028", 1, 16 * MB, "000000010000000000000003"),  # pg_walfile_name('0/3000028')
        ("0/FFFFFFF", 1, 16 * MB, "00000001000000000000000F"),
        ("1/0", 2, 16 * MB, "000000020000000100000000"),
        ("16/B374D848", 3, 16 * MB, "0000000300000016000000B3"),
        ("0/3000028", 1, 64 * MB, "000000010000000000000000"),
        ("1/8000000", 1, 64 * MB, "000000010000000100000002"),
    ],
)
def test_segment_names_from_lsns_match_pg_walfile_name(lsn, timeline, size, name):
    assert wr.lsn_segment(lsn, timeline, size) == name
    assert wr.parse_segment(name, size) == (timeline, wr.segment_number(lsn, size))


def test_bad_lsns_segment_names_and_sizes_are_refused():
    for bad in ("0-3000028", "", None, "123456789/0"):
        with pytest.raises(PgdrError, match="not an LSN"):
            wr.parse_lsn(bad)
    with pytest.raises(PgdrError, match="not a WAL segment name"):
        wr.parse_segment("00000001000000000000003")
    with pytest.raises(PgdrError, match="not a segment name for a segment size"):
        wr.parse_segment("000000010000000000000100")  # seg part 0x100 is past 255 for 16 MiB
    with pytest.raises(PgdrError, match="power of two"):
        wr.segment_number("0/1", 3 * MB)
    assert wr.set_segment_size({"wal_segment_size": 64 * MB}) == 64 * MB
    assert wr.set_segment_size({"wal_segment_size": 5}) == wr.set_segment_size(None) == 16 * MB


def test_classify_archived_names():
    assert wr.classify("000000010000000000000003") == ("segment", "000000010000000000000003")
    assert wr.classify("000000010000000000000003.gz") == ("segment", "000000010000000000000003")
    assert wr.classify("000000010000000000000003.partial") == ("partial", "000000010000000000000003")
    assert wr.classify("000000010000000000000003.00000028.backup") == ("backup", "000000010000000000000003")
    assert wr.classify("00000002.history") == ("history", "00000002.history")
    assert wr.classify("notes.txt") == (None, "notes.txt")


def test_needed_range_crosses_a_log_boundary_and_names_the_history_file():
    needed = wr.needed_range("0/FF000028", "1/1000100", 2)
    assert (needed["first"], needed["last"], needed["history"]) == ("0000000200000000000000FF", "000000020000000100000001", "00000002.history")
    assert wr.needed_range("0/3000028", "0/3000100", 1)["history"] is None


def seg(number, timeline=1):
    return wr.segment_name(timeline, number)


def test_coverage_complete_names_the_newest_segment():
    needed = wr.needed_range("0/3000028", "0/3000100", 1)
    names = [seg(n) for n in range(1, 9)] + ["00000002.history", seg(20, timeline=2)]
    found = wr.check_coverage(needed, names)
    assert found["ok"] and found["problem"] is None
    assert (found["newest"], found["checked"], found["gaps"]) == (seg(8), 6, [])


def test_coverage_names_each_gap_by_its_first_and_last_missing_segment():
    needed = wr.needed_range("0/3000028", "0/3000100", 1)
    present = [3, 4, 7, 8, 9, 12, 0x100 + 1]  # across a log boundary: 0x100 segments of 16 MiB per log
    names = [seg(n) + (".gz" if n == 9 else "") for n in present] + [seg(10) + ".partial"]
    found = wr.check_coverage(needed, names)
    assert not found["ok"]
    assert found["gaps"][0] == dict(first=seg(5), last=seg(6), count=2)
    assert found["gaps"][1] == dict(first=seg(10), last=seg(11), count=2)  # a .partial does not fill a gap
    assert found["gaps"][2] == dict(first=seg(13), last="000000010000000100000000", count=0x100 - 12)
    assert found["problem"].startswith("WAL archive misses %d segments in 3 gaps (first gap: %s to %s, 2 segments)" % (4 + 0x100 - 12, seg(5), seg(6)))


def test_coverage_needs_up_to_the_stop_lsn_and_the_timeline_history():
    needed = wr.needed_range("0/3000028", "0/5000100", 2)
    found = wr.check_coverage(needed, [seg(3, 2), seg(4, 2), seg(5, 1)])
    assert found["gaps"] == [dict(first=seg(5, 2), last=seg(5, 2), count=1)]
    found = wr.check_coverage(needed, [seg(n, 2) for n in (3, 4, 5)])
    assert found["history_missing"] and "00000002.history" in found["problem"]
    assert wr.check_coverage(needed, [seg(n, 2) for n in (3, 4, 5)] + ["00000002.history"])["ok"]
    empty = wr.check_coverage(needed, [])
    assert empty["newest"] is None and empty["gaps"] == [dict(first=seg(3, 2), last=seg(5, 2), count=3)]


def test_prune_boundary_is_the_lowest_start_of_the_kept_base_sets():
    kept = [dict(backup_id="b", start_lsn="0/9000028", timeline=2), dict(backup_id="a", start_lsn="0/7000060", timeline=1)]
    assert wr.prune_boundary(kept) == (7, seg(7), 16 * MB)
    assert wr.prune_boundary([]) is None
    with pytest.raises(PgdrError, match="kept base set x records no start_lsn/timeline"):
        wr.prune_boundary(kept + [dict(backup_id="x", start_lsn=None, timeline=1)])


def test_prunable_is_exactly_what_lies_below_the_boundary():
    boundary = wr.prune_boundary([dict(backup_id="a", start_lsn="0/7000060", timeline=2)])
    names = [seg(n) for n in range(1, 10)] + [
        seg(3) + ".00000028.backup", seg(7, 2) + ".00000060.backup", seg(6) + ".partial", seg(5) + ".gz", seg(6, 2),
        "00000002.history", "notes.txt",
    ]
    doomed = wr.prunable(names, boundary)
    assert doomed == sorted([seg(n) for n in range(1, 7)] + [seg(3) + ".00000028.backup", seg(6) + ".partial", seg(5) + ".gz", seg(6, 2)])
    assert seg(7) not in doomed and seg(7, 2) + ".00000060.backup" not in doomed and "00000002.history" not in doomed
