"""The catalog with a WAL archive: the range a base set needs in list, gaps in verify, WAL pruning below the oldest kept base set."""

import os

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import actions as module
from ansible_collections.pgdr.backup.plugins.module_utils.catalog import catalog, walrange
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set as bs
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository
from tests.unit.test_catalog import CLUSTER, DAY, NOW, make_set, options


def seg(number, timeline=1):
    return walrange.segment_name(timeline, number)


@pytest.fixture
def repo(tmp_path):
    return LocalRepository(str(tmp_path / "repo"))


@pytest.fixture
def wal(tmp_path):
    folder = tmp_path / "wal"
    folder.mkdir()
    names = [seg(n) for n in range(1, 13)] + [seg(2) + ".00000028.backup", seg(6) + ".00000028.backup", "00000002.history"]
    for name in names:
        (folder / name).write_bytes(b"w")
    return str(folder)


def archived(folder):
    return sorted(os.listdir(folder))


def two_base_sets(repo):
    old = make_set(repo, CLUSTER, NOW - 3 * DAY, kind="base", lsns=("0/2000028", "0/2000100"))
    new = make_set(repo, CLUSTER, NOW - DAY, kind="base", lsns=("0/6000028", "0/7000100"))
    return old, new


def test_list_shows_the_wal_a_base_set_needs_and_none_for_a_dump(repo):
    old, new = two_base_sets(repo)
    dump = make_set(repo, CLUSTER, NOW - 2 * DAY)
    sets = {entry["backup_id"]: entry for entry in module.list_sets(options(), repo, NOW)["sets"]}
    assert sets[new]["wal"] == dict(first=seg(6), last=seg(7), timeline=1, history=None, segment_size=16 * 1024 * 1024)
    assert sets[old]["wal"]["first"] == seg(2) and sets[dump]["wal"] is None


def test_verify_with_an_archive_names_the_gap(repo, wal):
    old, new = two_base_sets(repo)
    archive = {"type": "local", "path": wal}
    good = module.verify(options(action="verify", archive=archive), repo, NOW)
    assert [item["wal"]["ok"] for item in good["verified"]] == [True, True]
    assert good["verified"][1]["wal"]["newest"] == seg(12) and good["verified"][1]["wal"]["checked"] == 7
    os.unlink(os.path.join(wal, seg(8)))
    os.unlink(os.path.join(wal, seg(9)))
    expected = r"^backup set pg1/%s failed verification: WAL archive misses 2 segments in 1 gaps \(first gap: %s to %s, 2 segments\); 2 of 2"
    with pytest.raises(PgdrError, match=expected % (old, seg(8), seg(9))) as caught:
        module.verify(options(action="verify", archive=archive), repo, NOW)
    assert caught.value.details["verified"][1]["wal"]["gaps"] == [dict(first=seg(8), last=seg(9), count=2)]


def test_prune_with_an_archive_removes_exactly_the_wal_below_the_oldest_kept_base_set(repo, wal):
    old, new = two_base_sets(repo)
    given = options(action="prune", keep_last=1, archive={"type": "local", "path": wal})
    before = archived(wal)
    checked = module.prune(given, repo, NOW, check_mode=True)
    assert archived(wal) == before
    assert checked["deleted"] == [old]
    assert checked["wal_pruned"] == dict(boundary=seg(6), count=6, first=seg(1), last=seg(5), reason=None)
    assert "WAL: 6 files removed, %s .. %s (everything below %s)\n" % (seg(1), seg(5), seg(6)) in checked["diff"]["after"]
    done = module.prune(given, repo, NOW, check_mode=False)
    assert done["wal_pruned"] == checked["wal_pruned"] and done["changed"]
    assert archived(wal) == sorted(["00000002.history"] + [seg(n) for n in range(6, 13)] + [seg(6) + ".00000028.backup"])
    assert [item["backup_id"] for item in bs.list_sets(repo, CLUSTER)] == [new]
    again = module.prune(given, repo, NOW, check_mode=False)
    assert again["changed"] is False and again["wal_pruned"]["count"] == 0


def test_no_kept_base_set_prunes_no_wal(repo, wal):
    make_set(repo, CLUSTER, NOW - 3 * DAY)
    make_set(repo, CLUSTER, NOW - DAY)
    done = module.prune(options(action="prune", keep_last=1, archive={"type": "local", "path": wal}), repo, NOW, check_mode=False)
    assert done["wal_pruned"]["count"] == 0 and done["wal_pruned"]["reason"].startswith("no base set is kept: no WAL is pruned")
    assert len(archived(wal)) == 15


def test_a_pinned_older_base_set_keeps_its_wal(repo, wal):
    old, new = two_base_sets(repo)
    catalog.pin(repo, CLUSTER, old, None, NOW, False)
    done = module.prune(options(action="prune", keep_last=1, archive={"type": "local", "path": wal}), repo, NOW, check_mode=False)
    assert done["deleted"] == [] and done["wal_pruned"]["boundary"] == seg(2)
    assert done["wal_pruned"]["first"] == seg(1) and done["wal_pruned"]["count"] == 1
    assert seg(2) in archived(wal) and seg(1) not in archived(wal)


def test_archive_only_with_prune_and_verify_and_only_readable_types():
    with pytest.raises(PgdrError, match="^option archive has no meaning with action list"):
        module.check_options(options(archive={"type": "local", "path": "/x"}))
    with pytest.raises(PgdrError, match="archive type command cannot be listed"):
        module.archive_names(options(action="verify", archive={"type": "command", "restore_command": "cp %f %p"}))
