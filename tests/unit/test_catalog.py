"""The catalog against a real local repository: list through the manifests, pins, prune, verify; and the module's option checks.

``make_set`` here is also what the integration test writes its sets with (on SFTP and S3).
"""

import datetime
import json
import os

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import actions as module
from ansible_collections.pgdr.backup.plugins.module_utils.catalog import catalog, retention
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set as bs
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
CLUSTER = "pg1"


def make_set(repo, cluster, finished, kind="logical-db", backup_id=None, files=None, chain=None, plain=False, lsns=("0/3000028", "0/3000100"), timeline=1):
    """A complete set of ``kind`` that finished at ``finished`` (an aware datetime), id from its start unless given."""
    started = finished - datetime.timedelta(minutes=5)
    backup_id = backup_id or bs.new_backup_id(started)
    files = {"db.dump": b"PGDMP" + os.urandom(200)} if files is None else files
    source = {"host": "db1", "port": 5432, "database": "sales", "system_identifier": "7301234567890123456",
              "server_version": "15.8", "server_version_num": 150008, "major": 15}
    fields = {
        "kind": kind, "source": source, "started_at": bs.iso_utc(started), "finished_at": bs.iso_utc(finished),
        "tool": {"name": "pg_dump", "version": "15.8", "argv": ["pg_dump", "-Fc"]},
        "consistency": {"snapshot": None, "isolation": "repeatable read"}, "options": {"format": "custom", "fingerprint": False},
    }
    if kind in bs.LOGICAL_KINDS:
        fields["tables"] = []
    else:
        fields.update(source=dict(source, database=None), start_lsn=lsns[0], stop_lsn=lsns[1], timeline=timeline,
                      tool={"name": "pg_basebackup", "version": "15.8", "argv": ["pg_basebackup"]}, options={},
                      physical={"format": "plain" if plain else "tar", "chain": chain or [backup_id], "data_dir": "data" if plain else None})
    with bs.SetWriter(repo, cluster, backup_id) as writer:
        for path, data in files.items():
            with writer.open_file(path, "database", "custom") as out:
                out.write(data)
        writer.finish(fields)
    return backup_id


def make_incomplete(repo, cluster, backup_id, data=b"half a dump"):
    with repo.open_writer(bs.set_key(cluster, backup_id, "db.dump")) as out:
        out.write(data)
    return backup_id


def age(repo, cluster, backup_id, moment):
    """Set the mtime of every file of a local set (the last activity of an incomplete set)."""
    top = repo.location(bs.set_key(cluster, backup_id))
    for folder, _dirs, names in os.walk(top):
        for name in names:
            os.utime(os.path.join(folder, name), (moment.timestamp(), moment.timestamp()))


@pytest.fixture
def repo(tmp_path):
    return LocalRepository(str(tmp_path / "repo"))


def by_id(entries):
    return {entry["backup_id"]: entry for entry in entries}


# --- list ---------------------------------------------------------------------------------


def test_list_reads_every_set_through_its_manifest(repo):
    dump = make_set(repo, CLUSTER, NOW - 2 * DAY, files={"a.dump": b"x" * 100, "b.sql": b"y" * 23})
    base = make_set(repo, CLUSTER, NOW - DAY, kind="base")
    half = make_incomplete(repo, CLUSTER, "20261206T230000Z")
    age(repo, CLUSTER, half, NOW - datetime.timedelta(hours=3))
    repo.put_bytes_atomic(bs.set_key(CLUSTER, "20261201T000000Z", bs.MANIFEST_NAME), b"{not json")
    make_set(repo, "other", NOW, backup_id="x1")  # another cluster is not listed
    entries = by_id(catalog.list_catalog(repo, CLUSTER, NOW))
    assert sorted(entries) == sorted(["20261201T000000Z", half, dump, base])
    first = entries[dump]
    assert (first["kind"], first["status"], first["complete"]) == ("logical-db", "complete", True)
    assert (first["size"], first["files"], first["tool"]) == (123, 2, "pg_dump 15.8")
    assert first["finished_at"] == "2026-12-05T03:00:00Z" and first["started_at"] == "2026-12-05T02:55:00Z"
    assert first["location"] == os.path.join(repo.root, CLUSTER, dump) and first["database"] == "sales"
    second = entries[base]
    assert (second["start_lsn"], second["stop_lsn"], second["timeline"], second["chain"], second["format"]) == ("0/3000028", "0/3000100", 1, [base], "tar")
    assert entries[half]["status"] == "incomplete" and entries[half]["size"] == len(b"half a dump")
    assert entries[half]["last_activity"] == "2026-12-07T00:00:00Z"  # the newest write, later than the id's time
    broken = entries["20261201T000000Z"]
    assert broken["status"] == "unreadable" and "not valid JSON" in broken["problem"] and broken["complete"]


def test_filters_and_newest_before(repo):
    ids = [make_set(repo, CLUSTER, NOW - d * DAY) for d in (5, 3, 1)]
    base = make_set(repo, CLUSTER, NOW - 2 * DAY, kind="base")
    entries = catalog.list_catalog(repo, CLUSTER, NOW)
    assert [e["backup_id"] for e in catalog.select(entries, kinds=["base"])] == [base]
    assert [e["backup_id"] for e in catalog.select(entries, since=NOW - 3 * DAY)] == [ids[1], base, ids[2]]  # inclusive
    assert [e["backup_id"] for e in catalog.select(entries, since=NOW - 4 * DAY, until=NOW - 2 * DAY)] == [ids[1], base]
    assert catalog.newest_before(entries, NOW - 2 * DAY)["backup_id"] == ids[1]  # strictly before: not the base set
    assert catalog.newest_before(entries, NOW, kinds=["logical-db"])["backup_id"] == ids[2]
    assert catalog.newest_before(entries, NOW - 6 * DAY) is None


def test_a_plain_base_set_counts_its_data_directory(repo):
    backup_id = make_set(repo, CLUSTER, NOW - DAY, kind="base", files={"data/backup_manifest": b"{}" * 10}, plain=True)
    with repo.open_writer(bs.set_key(CLUSTER, backup_id, "data/base/1/1259")) as out:
        out.write(b"p" * 8192)
    entry = catalog.list_catalog(repo, CLUSTER, NOW)[0]
    assert entry["size"] == 20 + 8192 and entry["files"] == 1


# --- pins ---------------------------------------------------------------------------------


def test_pin_is_beside_the_manifest_idempotent_and_check_mode_writes_nothing(repo):
    backup_id = make_set(repo, CLUSTER, NOW - DAY)
    manifest_before = repo.get_bytes(bs.set_key(CLUSTER, backup_id, bs.MANIFEST_NAME))
    key = bs.set_key(CLUSTER, backup_id, catalog.PIN_NAME)
    assert catalog.pin(repo, CLUSTER, backup_id, "30d", NOW, check_mode=True)["changed"] is True
    assert not repo.exists(key)
    done = catalog.pin(repo, CLUSTER, backup_id, "30d", NOW, check_mode=False)
    assert done["changed"] and done["pin"] == {"pinned_at": "2026-12-07T03:00:00Z", "expires": "2027-01-06T03:00:00Z", "requested": "30d"}
    assert json.loads(repo.get_bytes(key)) == dict(done["pin"], format_version=1)
    again = catalog.pin(repo, CLUSTER, backup_id, "30d", NOW + DAY, check_mode=False)  # a day later: the same pin
    assert again["changed"] is False and again["pin"]["expires"] == "2027-01-06T03:00:00Z"
    assert catalog.pin(repo, CLUSTER, backup_id, None, NOW, check_mode=False)["pin"]["expires"] is None  # now for ever
    assert repo.get_bytes(bs.set_key(CLUSTER, backup_id, bs.MANIFEST_NAME)) == manifest_before
    entry = catalog.list_catalog(repo, CLUSTER, NOW)[0]
    assert entry["pinned"] is True and entry["pin_expires"] is None
    assert catalog.unpin(repo, CLUSTER, backup_id, check_mode=True)["changed"] is True and repo.exists(key)
    assert catalog.unpin(repo, CLUSTER, backup_id, check_mode=False)["changed"] is True and not repo.exists(key)
    assert catalog.unpin(repo, CLUSTER, backup_id, check_mode=False)["changed"] is False
    assert bs.set_status(repo, CLUSTER, backup_id) == "complete"


def test_an_expired_pin_does_not_count_and_pinning_again_renews_it(repo):
    backup_id = make_set(repo, CLUSTER, NOW - DAY)
    catalog.pin(repo, CLUSTER, backup_id, "1h", NOW, check_mode=False)
    later = NOW + 2 * datetime.timedelta(hours=1)
    assert catalog.list_catalog(repo, CLUSTER, later)[0]["pinned"] is False
    assert catalog.pin(repo, CLUSTER, backup_id, "1h", later, check_mode=False)["changed"] is True


def test_an_unreadable_pin_file_keeps_the_set(repo):
    backup_id = make_set(repo, CLUSTER, NOW - DAY)
    repo.put_bytes_atomic(bs.set_key(CLUSTER, backup_id, catalog.PIN_NAME), b"garbage")
    assert catalog.list_catalog(repo, CLUSTER, NOW)[0]["pinned"] is True


@pytest.mark.parametrize("what, expires, message", [
    ("absent", None, r"^backup set pg1/nope does not exist in .*; check cluster and backup_id"),
    ("incomplete", None, r"^backup set pg1/half is incomplete \(no manifest.json\): it cannot be pinned"),
    ("complete", "2020-01-01", r"^pin_expires '2020-01-01' is in the past \(2020-01-01T00:00:00Z\)"),
    ("complete", "soon", r"^pin_expires 'soon' is not a time"),
])
def test_pin_refusals(repo, what, expires, message):
    make_incomplete(repo, CLUSTER, "half")
    good = make_set(repo, CLUSTER, NOW - DAY)
    backup_id = {"absent": "nope", "incomplete": "half", "complete": good}[what]
    with pytest.raises(PgdrError, match=message):
        catalog.pin(repo, CLUSTER, backup_id, expires, NOW, check_mode=False)


# --- prune --------------------------------------------------------------------------------


def month_repo(repo):
    """Dumps every night for 20 nights, three weekly base sets, a pin, a stale and a fresh incomplete set."""
    dumps = {d: make_set(repo, CLUSTER, NOW - d * DAY) for d in range(1, 21)}
    bases = {d: make_set(repo, CLUSTER, NOW - d * DAY + datetime.timedelta(hours=1), kind="base") for d in (3, 10, 17)}
    catalog.pin(repo, CLUSTER, dumps[15], None, NOW, check_mode=False)
    stale = make_incomplete(repo, CLUSTER, "20261203T010000Z")
    age(repo, CLUSTER, stale, NOW - 4 * DAY)
    fresh = make_incomplete(repo, CLUSTER, "20261207T020000Z")
    age(repo, CLUSTER, fresh, NOW - datetime.timedelta(minutes=10))
    return dumps, bases, stale, fresh


def test_prune_deletes_exactly_what_the_rules_leave_manifest_first(repo, monkeypatch):
    dumps, bases, stale, fresh = month_repo(repo)
    rules = retention.Rules(keep_last=2, keep_within=5 * DAY, incomplete_grace=DAY)
    entries = catalog.list_catalog(repo, CLUSTER, NOW)
    _decisions, doomed = catalog.plan_prune(entries, rules, NOW)
    expected = {dumps[d] for d in range(6, 21) if d != 15} | {bases[17], stale}  # window 5d keeps nights 1..5 (night 5 at 03:00 exactly)
    assert {entry["backup_id"] for entry in doomed} == expected
    assert [entry["backup_id"] for entry in doomed][:2] == [dumps[20], dumps[19]]  # oldest first
    order = []
    real = repo.delete_tree
    monkeypatch.setattr(repo, "delete_tree", lambda key: (order.append(key), real(key)))
    deleted, skipped = catalog.delete_sets(repo, CLUSTER, doomed, NOW)
    assert set(deleted) == expected and skipped == []
    assert order[:2] == [bs.set_key(CLUSTER, dumps[20], bs.MANIFEST_NAME), bs.set_key(CLUSTER, dumps[20])]
    left = {item["backup_id"] for item in bs.list_sets(repo, CLUSTER)}
    assert left == {dumps[d] for d in (1, 2, 3, 4, 5, 15)} | {bases[3], bases[10], fresh}
    # a second run finds nothing to do
    assert catalog.plan_prune(catalog.list_catalog(repo, CLUSTER, NOW), rules, NOW)[1] == []


def test_prune_by_kind_leaves_other_kinds_and_incomplete_sets(repo):
    dumps, bases, stale, _fresh = month_repo(repo)
    rules = retention.Rules(keep_last=1, keep_within=None, incomplete_grace=DAY)
    _decisions, doomed = catalog.plan_prune(catalog.list_catalog(repo, CLUSTER, NOW), rules, NOW, kinds=["base"])
    assert {entry["backup_id"] for entry in doomed} == {bases[10], bases[17]}


def test_delete_sets_looks_again_before_each_delete(repo):
    dumps, _bases, stale, _fresh = month_repo(repo)
    entries = by_id(catalog.list_catalog(repo, CLUSTER, NOW))
    doomed = [entries[dumps[20]], entries[dumps[19]], entries[stale]]
    catalog.pin(repo, CLUSTER, dumps[20], None, NOW, check_mode=False)  # pinned after the listing
    bs.delete_set(repo, CLUSTER, dumps[19])  # removed by someone else
    with repo.open_writer(bs.set_key(CLUSTER, stale, bs.MANIFEST_NAME)) as out:  # the "stale" one finished after all
        out.write(b"{}")
    deleted, skipped = catalog.delete_sets(repo, CLUSTER, doomed, NOW)
    assert deleted == []
    assert skipped == [{"backup_id": dumps[20], "reason": "pinned since it was listed"}, {"backup_id": dumps[19], "reason": "already gone"},
                       {"backup_id": stale, "reason": "became complete since it was listed"}]


def test_a_failed_delete_names_the_set_and_what_was_deleted(repo, monkeypatch):
    dumps, _bases, _stale, _fresh = month_repo(repo)
    entries = by_id(catalog.list_catalog(repo, CLUSTER, NOW))
    real = repo.delete_tree

    def failing(key):
        if dumps[19] in key:
            raise PgdrError("deleting %s in local failed: permission denied" % key)
        real(key)

    monkeypatch.setattr(repo, "delete_tree", failing)
    stopped = r"^prune stopped at set pg1/%s after deleting 1 sets: deleting .* permission denied; run it again" % dumps[19]
    with pytest.raises(PgdrError, match=stopped) as caught:
        catalog.delete_sets(repo, CLUSTER, [entries[dumps[20]], entries[dumps[19]]], NOW)
    assert caught.value.details["deleted"] == [dumps[20]]
    assert bs.set_status(repo, CLUSTER, dumps[19]) == "complete"  # the manifest went first, and it did not go


# --- verify -------------------------------------------------------------------------------


def test_verify_finds_missing_damaged_and_extra_files(repo):
    good = make_set(repo, CLUSTER, NOW - DAY, files={"a.dump": b"a" * 50})
    bad = make_set(repo, CLUSTER, NOW - 2 * DAY, files={"a.dump": b"a" * 50, "b.dump": b"b" * 50, "c.dump": b"c" * 50})
    catalog.pin(repo, CLUSTER, good, None, NOW, check_mode=False)  # pin.json is not an extra file
    with open(os.path.join(repo.root, CLUSTER, bad, "a.dump"), "r+b") as handle:
        handle.write(b"X")
    os.unlink(os.path.join(repo.root, CLUSTER, bad, "b.dump"))
    with repo.open_writer(bs.set_key(CLUSTER, bad, "stray.bin")) as out:
        out.write(b"?")
    make_incomplete(repo, CLUSTER, "half")
    results, newest, message = catalog.verify(repo, CLUSTER, catalog.list_catalog(repo, CLUSTER, NOW), NOW)
    found = by_id(results)
    assert sorted(found) == sorted([good, bad])  # the incomplete set is not verified
    assert found[good]["ok"] and found[good]["files_checked"] == 1 and found[good]["bytes_checked"] == 50 and found[good]["extra"] == []
    assert found[bad]["missing"] == ["b.dump"] and found[bad]["damaged"] == [{"path": "a.dump", "problem": "sha256 differs"}]
    assert found[bad]["extra"] == ["stray.bin"] and not found[bad]["ok"]
    assert newest["backup_id"] == good
    assert message == ("backup set pg1/%s failed verification: 2 of 3 files missing or damaged (first: b.dump); 1 of 2 sets checked are bad, "
                       "take a new backup and look at them" % bad)


def test_an_extra_file_alone_fails_a_set_but_a_plain_data_directory_does_not(repo):
    extra = make_set(repo, CLUSTER, NOW - DAY)
    with repo.open_writer(bs.set_key(CLUSTER, extra, "data/x")) as out:
        out.write(b"?")
    plain = make_set(repo, CLUSTER, NOW - 2 * DAY, kind="base", files={"data/backup_manifest": b"{}"}, plain=True)
    with repo.open_writer(bs.set_key(CLUSTER, plain, "data/base/1/1259")) as out:
        out.write(b"p")
    results = by_id(catalog.verify(repo, CLUSTER, catalog.list_catalog(repo, CLUSTER, NOW), NOW)[0])
    assert results[extra]["problem"] == "1 files not in the manifest (first: data/x)"
    assert results[plain]["ok"] is True


def test_max_age_is_a_stale_backup_alarm(repo):
    make_set(repo, CLUSTER, NOW - 30 * datetime.timedelta(hours=1))
    entries = catalog.list_catalog(repo, CLUSTER, NOW)
    _results, newest, message = catalog.verify(repo, CLUSTER, entries, NOW, max_age=datetime.timedelta(hours=26))
    assert message == ("the newest verified backup set pg1/%s finished 2026-12-05T21:00:00Z, 1d6h ago, older than max_age 1d2h: "
                       "backups are not running, look at the schedule" % newest["backup_id"])
    assert catalog.verify(repo, CLUSTER, entries, NOW, max_age=datetime.timedelta(hours=31))[2] is None
    assert catalog.verify(repo, CLUSTER, [], NOW, max_age=DAY)[2].startswith("no verified backup set of cluster pg1 in ")


# --- the module's option checks -----------------------------------------------------------


def options(**given):
    params = {name: spec.get("default") for name, spec in module.argument_spec().items()}
    params.update(cluster=CLUSTER, **given)
    return typed(module.CatalogOptions, params)


@pytest.mark.parametrize("given, message", [
    (dict(action="prune"), "^action prune needs keep_last, keep_within or both"),
    (dict(action="prune", keep_last=0), "^keep_last 0 keeps nothing: give 1 or more"),
    (dict(action="list", keep_last=3), "^option keep_last has no meaning with action list .only with prune.: drop it"),
    (dict(action="prune", keep_last=3, pin_expires="3d"), "^option pin_expires has no meaning with action prune"),
    (dict(action="prune", keep_last=3, backup_id="x"), "^option backup_id has no meaning with action prune"),
    (dict(action="verify", since="2d"), "^option since has no meaning with action verify"),
    (dict(action="pin"), "^action pin needs backup_id"),
    (dict(action="unpin", backup_id="x", kind=["base"]), "^option kind has no meaning with action unpin .only with list, prune, verify.: drop it"),
    (dict(action="list", backup_id="../x"), "^backup_id '../x' cannot be used"),
])
def test_option_refusals_are_one_line(given, message):
    with pytest.raises(PgdrError, match=message) as caught:
        module.check_options(options(**given))
    assert "\n" not in caught.value.msg


def test_good_options_pass():
    module.check_options(options(action="prune", keep_within="14d"))
    module.check_options(options(action="verify", backup_id="x", max_age="26h"))
    module.check_options(options(action="list", kind=["base"], since="7d", newest_before="2026-12-01"))


def test_module_prune_in_check_mode_lists_exactly_what_a_real_run_deletes(repo, monkeypatch):
    dumps, bases, stale, fresh = month_repo(repo)
    monkeypatch.setattr(catalog, "utc_now", lambda: NOW)
    given = options(action="prune", keep_last=2, keep_within="5d")
    before = bs.list_sets(repo, CLUSTER)
    checked = module.prune(given, repo, NOW, check_mode=True)
    assert bs.list_sets(repo, CLUSTER) == before
    assert checked["changed"] is True and len(checked["deleted"]) == 16
    assert checked["diff"]["before"].count("\n") == len(before) and checked["diff"]["after"].count("\n") == len(before) - 16
    assert "%s logical-db 2026-12-02T03:00:00Z\n" % dumps[5] in checked["diff"]["after"]
    assert "%s logical-db 2026-12-01T03:00:00Z\n" % dumps[6] not in checked["diff"]["after"]
    verdicts = by_id(checked["sets"])
    assert verdicts[dumps[15]]["keep"] and verdicts[dumps[15]]["reasons"] == ["pinned"]
    done = module.prune(given, repo, NOW, check_mode=False)
    assert done["deleted"] == checked["deleted"] and done["kept"] == checked["kept"]
    assert sorted(item["backup_id"] for item in bs.list_sets(repo, CLUSTER)) == sorted(checked["kept"])
    again = module.prune(given, repo, NOW, check_mode=False)
    assert again["changed"] is False and again["deleted"] == []


def test_module_list_newest_before_and_verify(repo):
    old = make_set(repo, CLUSTER, NOW - 3 * DAY)
    new = make_set(repo, CLUSTER, NOW - DAY)
    listed = module.list_sets(options(newest_before="2d"), repo, NOW)
    assert listed["selected"]["backup_id"] == old and [e["backup_id"] for e in listed["sets"]] == [old, new]
    with pytest.raises(PgdrError, match=r"^no complete base set of cluster pg1 in .* finished before 2026-12-06T03:00:00Z: choose a later time"):
        module.list_sets(options(newest_before="1d", kind=["base"]), repo, NOW)
    verified = module.verify(options(action="verify", max_age="26h"), repo, NOW)
    assert verified["newest_good"] == new and verified["newest_good_age_seconds"] == 86400 and len(verified["verified"]) == 2
    with pytest.raises(PgdrError, match="older than max_age 12h") as caught:
        module.verify(options(action="verify", max_age="12h"), repo, NOW)
    assert caught.value.details["newest_good"] == new
    with pytest.raises(PgdrError, match=r"^backup set pg1/nope does not exist"):
        module.verify(options(action="verify", backup_id="nope"), repo, NOW)
