"""Backup sets against an in-memory repository: ids, keys, writing, completeness, verification, the manifest schema."""

import contextlib
import copy
import datetime
import hashlib
import io
import json
import os

import jsonschema
import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set as bs
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import Repository

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "manifest.schema.json")
SHA_A = "a" * 64


class MemoryRepository(Repository):
    """The Repository interface in a dict; ``log`` records what became visible, in order."""

    kind = "memory"

    def __init__(self):
        self.objects = {}
        self.log = []

    def describe(self):
        return "memory://test"

    @contextlib.contextmanager
    def open_writer(self, key):
        buffer = io.BytesIO()
        try:
            yield buffer
        except BaseException:
            self.log.append(("discard", key))
            raise
        self.objects[key] = buffer.getvalue()
        self.log.append(("commit", key))

    def put_bytes_atomic(self, key, data):
        self.objects[key] = bytes(data)
        self.log.append(("put", key))

    @contextlib.contextmanager
    def open_reader(self, key):
        if key not in self.objects:
            raise PgdrError("no object %s" % key)
        yield io.BytesIO(self.objects[key])

    def get_bytes(self, key):
        return self.objects[key]

    def exists(self, key):
        return key in self.objects

    def size(self, key):
        return len(self.objects[key])

    def list_dirs(self, key):
        prefix = key.rstrip("/") + "/"
        return sorted({k[len(prefix):].split("/")[0] for k in self.objects if k.startswith(prefix) and "/" in k[len(prefix):]})

    def list_files(self, key):
        prefix = key.rstrip("/") + "/"
        return sorted(k[len(prefix):] for k in self.objects if k.startswith(prefix))

    def delete_tree(self, key):
        for name in [k for k in self.objects if k == key or k.startswith(key + "/")]:
            del self.objects[name]
        self.log.append(("delete", key))


def source():
    return {"host": "db1.example.net", "port": 5432, "database": "sales", "system_identifier": "7301234567890123456",
            "server_version": "15.8 (Debian 15.8-0+deb12u1)", "server_version_num": 150008, "major": 15}


def logical_fields(tables=None, fingerprint=True, **extra):
    fields = {
        "kind": "logical-db",
        "source": source(),
        "started_at": "2026-11-21T14:00:51Z",
        "finished_at": "2026-11-21T14:02:01Z",
        "tool": {"name": "pg_dump", "version": "15.8", "argv": ["pg_dump", "-Fc", "-d", "sales"]},
        "consistency": {"snapshot": "00000003-0000001B-1", "isolation": "repeatable read"},
        "tables": [{"database": "sales", "schema": "public", "table": "orders", "rows": 3, "fingerprint": "-123",
                    "fingerprint_method": "md5-sum64-v1"}] if tables is None else tables,
        "options": {"format": "custom", "fingerprint": fingerprint},
    }
    fields.update(extra)
    return fields


def physical_fields(**extra):
    fields = {
        "kind": "base",
        "source": dict(source(), database=None),
        "started_at": "2026-11-21T14:00:51Z",
        "finished_at": "2026-11-21T14:10:00Z",
        "duration_seconds": 549.25,
        "tool": {"name": "pg_basebackup", "version": "15.8", "argv": ["pg_basebackup", "-D", "-", "-Ft", "-X", "fetch"]},
        "consistency": {"snapshot": None, "isolation": "wal"},
        "options": {"wal_method": "fetch"},
        "start_lsn": "0/3000028",
        "stop_lsn": "0/3000100",
        "timeline": 1,
    }
    fields.update(extra)
    return fields


@pytest.fixture
def repo():
    return MemoryRepository()


@pytest.fixture(scope="module")
def validator():
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        schema = json.load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def write_set(repo, backup_id="20261121T140051Z", fields=None, files=None, cluster="pg1", **writer_kwargs):
    """A finished set; ``files`` maps path -> bytes (written in chunks)."""
    files = {"db_sales.dump": b"PGDMP" + os.urandom(3000), "globals.sql": b"CREATE ROLE x;\n"} if files is None else files
    with bs.SetWriter(repo, cluster, backup_id, **writer_kwargs) as writer:
        for path, data in files.items():
            with writer.open_file(path, "database", "custom", database="sales") as out:
                for start in range(0, len(data), 1000):
                    out.write(data[start:start + 1000])
        return writer.finish(fields or logical_fields())


# --- ids, names and keys ---------------------------------------------------------------


def test_new_backup_id_is_utc_and_sortable():
    tz = datetime.timezone(datetime.timedelta(hours=2))
    assert bs.new_backup_id(datetime.datetime(2026, 11, 21, 16, 0, 51, tzinfo=tz)) == "20261121T140051Z"
    assert bs.new_backup_id(datetime.datetime(2026, 11, 21, 14, 0, 51)) == "20261121T140051Z"
    moments = [datetime.datetime(2025, 12, 31, 23, 59, 59), datetime.datetime(2026, 1, 1, 0, 0, 0), datetime.datetime(2026, 10, 2, 9, 0, 0)]
    ids = [bs.new_backup_id(m) for m in moments]
    assert sorted(ids) == ids
    now = bs.new_backup_id()
    assert len(now) == 16 and now.endswith("Z") and now[8] == "T"
    bs.validate_backup_id(now)


def test_iso_utc_round_trip():
    moment = datetime.datetime(2026, 11, 21, 16, 0, 51, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert bs.iso_utc(moment) == "2026-11-21T14:00:51Z"  # a whole-second time (a tool's) stays whole
    assert bs.parse_iso_utc("2026-11-21T14:00:51Z") == moment  # as sets written before sub-second times have it
    precise = moment.replace(microsecond=999999)
    assert bs.iso_utc(precise) == "2026-11-21T14:00:51.999999Z"  # not cut to :51 nor rounded up a second
    assert bs.parse_iso_utc(bs.iso_utc(precise)) == precise
    assert bs.iso_utc(moment.replace(microsecond=5)) == "2026-11-21T14:00:51.000005Z"
    assert bs.parse_iso_utc("2026-11-21T14:00:51.250Z").microsecond == 250000
    with pytest.raises(PgdrError, match="ISO 8601 UTC"):
        bs.parse_iso_utc("2026-11-21 14:00:51+02:00")


BAD_NAMES = ["", "a/b", "..", "a..b", "../x", " a", "a b", "a\tb", "a\nb", ".hidden", "-x", "x" * 101, "a\\b", "a\x00b", "a\x7fb", "a\u00a0b"]
GOOD_NAMES = ["20261121T140051Z", "before-upgrade_1.2", "x" * 100, "db1.example.net", "Zürich"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_backup_ids_and_cluster_names_are_rejected(name):
    with pytest.raises(PgdrError, match="^backup_id .* cannot be used: it "):
        bs.validate_backup_id(name)
    with pytest.raises(PgdrError, match="^cluster name .* cannot be used"):
        bs.validate_cluster_name(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass(name):
    assert bs.validate_backup_id(name) == name
    assert bs.validate_cluster_name(name) == name


def test_name_messages_say_why():
    with pytest.raises(PgdrError, match="contains a slash"):
        bs.validate_backup_id("a/b")
    with pytest.raises(PgdrError, match="longer than 100"):
        bs.validate_backup_id("x" * 101)
    with pytest.raises(PgdrError, match="contains whitespace"):
        bs.validate_backup_id("a b")


def test_set_key():
    assert bs.set_key("pg1", "20261121T140051Z") == "pg1/20261121T140051Z"
    assert bs.set_key("pg1", "20261121T140051Z", "db_sales.dump") == "pg1/20261121T140051Z/db_sales.dump"
    assert bs.set_key("pg1", "id", "sales.dir/toc.dat") == "pg1/id/sales.dir/toc.dat"
    assert bs.set_key("pg1", "id", bs.MANIFEST_NAME) == "pg1/id/manifest.json"
    for bad in ("../x", "/abs", "a//b", "a/", "a/./b", "a\\b"):
        with pytest.raises(PgdrError, match="file path"):
            bs.set_key("pg1", "id", bad)
    with pytest.raises(PgdrError, match="cluster name"):
        bs.set_key("../etc", "id")


# --- writing ---------------------------------------------------------------------------


def test_writer_records_files_and_writes_manifest_last(repo, validator):
    data = {"db_sales.dump": b"PGDMP" + os.urandom(5000), "globals.sql": b"CREATE ROLE app;\n", "empty.csv": b""}
    manifest = write_set(repo, files=data)

    keys = ["pg1/20261121T140051Z/" + name for name in data]
    assert repo.log == [("commit", key) for key in keys] + [("put", "pg1/20261121T140051Z/manifest.json")]
    assert [f["path"] for f in manifest["files"]] == sorted(data)
    for entry in manifest["files"]:
        content = data[entry["path"]]
        assert entry["size"] == len(content)
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["compression"] == {"method": "none", "level": None}
        assert entry["encryption"] == {"method": "none"}
        assert (entry["role"], entry["format"], entry["database"], entry["schema"], entry["table"]) == ("database", "custom", "sales", None, None)
    assert manifest["format_version"] == 1 and manifest["backup_id"] == "20261121T140051Z" and manifest["cluster"] == "pg1"
    assert manifest["duration_seconds"] == 70
    stored = json.loads(repo.objects["pg1/20261121T140051Z/manifest.json"])
    assert stored == manifest
    validator.validate(stored)
    assert bs.validate_manifest_shape(stored) == []
    assert bs.load_manifest(repo, "pg1", "20261121T140051Z") == manifest
    assert bs.set_status(repo, "pg1", "20261121T140051Z") == "complete"


def test_set_level_compression_and_encryption_defaults(repo, validator):
    with bs.SetWriter(repo, "pg1", "id1", compression={"method": "zstd", "level": 3}, encryption="gpg") as writer:
        with writer.open_file("db.dump.zst.gpg", "database", "plain") as out:
            out.write(b"x")
        with writer.open_file("globals.sql", "globals", "plain", compression="none", encryption="none") as out:
            out.write(bytearray(b"y"))
        manifest = writer.finish(logical_fields())
    assert manifest["compression"] == {"method": "zstd", "level": 3}
    assert manifest["encryption"] == {"method": "gpg-symmetric-aes256"}
    files = {f["path"]: f for f in manifest["files"]}
    assert files["db.dump.zst.gpg"]["encryption"] == {"method": "gpg-symmetric-aes256"}
    assert files["globals.sql"]["compression"] == {"method": "none", "level": None}
    validator.validate(manifest)


def test_failure_inside_a_file_records_nothing_and_removes_the_set(repo):
    with pytest.raises(RuntimeError, match="pg_dump died"):
        with bs.SetWriter(repo, "pg1", "id1") as writer:
            with writer.open_file("first.dump", "database", "custom") as out:
                out.write(b"complete")
            with writer.open_file("second.dump", "database", "custom") as out:
                out.write(b"partial")
                raise RuntimeError("pg_dump died")
    assert ("discard", "pg1/id1/second.dump") in repo.log
    assert repo.log[-2:] == [("delete", "pg1/id1/manifest.json"), ("delete", "pg1/id1")]
    assert not any(kind == "put" for kind, _key in repo.log)
    assert repo.objects == {}
    assert bs.set_status(repo, "pg1", "id1") == "absent"


def test_failed_file_is_not_in_the_manifest(repo):
    writer = bs.SetWriter(repo, "pg1", "id1")
    with pytest.raises(ValueError):
        with writer.open_file("bad.dump", "database", "custom") as out:
            out.write(b"half")
            raise ValueError("compressor exited 1")
    assert writer.files == []
    writer.abort()


def test_abort_deletes_everything_manifest_first(repo):
    write_set(repo, backup_id="keep")
    writer = bs.SetWriter(repo, "pg1", "id1")
    with writer.open_file("a.dump", "database", "custom") as out:
        out.write(b"data")
    writer.abort()
    assert not any(key.startswith("pg1/id1") for key in repo.objects)
    assert repo.log[-2:] == [("delete", "pg1/id1/manifest.json"), ("delete", "pg1/id1")]
    assert bs.set_status(repo, "pg1", "keep") == "complete"
    with pytest.raises(PgdrError, match="was aborted"):
        writer.open_file("b.dump", "database", "custom").__enter__()


def test_leaving_the_block_without_finish_removes_the_set(repo):
    with pytest.raises(PgdrError, match="without a manifest and has been removed"):
        with bs.SetWriter(repo, "pg1", "id1") as writer:
            with writer.open_file("a.dump", "database", "custom") as out:
                out.write(b"data")
    assert repo.objects == {}


def test_existing_sets_are_not_overwritten(repo):
    write_set(repo, backup_id="id1")
    with pytest.raises(PgdrError, match="backup set pg1/id1 already exists \\(complete\\)"):
        bs.SetWriter(repo, "pg1", "id1")
    repo.objects["pg1/id2/partial.dump"] = b"x"
    with pytest.raises(PgdrError, match="already exists \\(incomplete\\)"):
        bs.SetWriter(repo, "pg1", "id2")


def test_writer_misuse_is_refused(repo):
    writer = bs.SetWriter(repo, "pg1", "id1")
    with writer.open_file("a.dump", "database", "custom") as out:
        out.write(b"1")
        with pytest.raises(PgdrError, match="still being written"):
            writer.finish(logical_fields())
        with pytest.raises(PgdrError, match="written twice"):
            writer.open_file("a.dump", "database", "custom").__enter__()
    with pytest.raises(PgdrError, match="written twice"):
        writer.open_file("a.dump", "database", "custom").__enter__()
    with pytest.raises(PgdrError, match="manifest's own name"):
        writer.open_file("manifest.json", "database", "custom").__enter__()
    with pytest.raises(PgdrError, match="unknown file fields colour"):
        writer.open_file("b.dump", "database", "custom", colour="red").__enter__()
    with pytest.raises(PgdrError, match="lower-case word"):
        writer.open_file("b.dump", "Database", "custom").__enter__()
    with pytest.raises(PgdrError, match="compression method 'brotli'"):
        writer.open_file("b.dump", "database", "custom", compression="brotli").__enter__()
    with pytest.raises(PgdrError, match="set by SetWriter itself"):
        writer.finish(dict(logical_fields(), files=[]))
    writer.finish(logical_fields())
    with pytest.raises(PgdrError, match="already finished"):
        writer.open_file("c.dump", "database", "custom").__enter__()
    with pytest.raises(PgdrError, match="already finished"):
        writer.finish(logical_fields())


def test_malformed_manifest_is_not_written(repo):
    writer = bs.SetWriter(repo, "pg1", "id1")
    with writer.open_file("a.dump", "database", "custom") as out:
        out.write(b"1")
    fields = logical_fields()
    del fields["source"]["system_identifier"]
    with pytest.raises(PgdrError, match="malformed .*source lacks system_identifier"):
        writer.finish(fields)
    assert "pg1/id1/manifest.json" not in repo.objects


def test_passwords_in_argv_are_refused(repo):
    writer = bs.SetWriter(repo, "pg1", "id1")
    fields = logical_fields(tool={"name": "pg_dump", "version": "15", "argv": ["pg_dump", "-d", "host=x password=hunter2"]})
    with pytest.raises(PgdrError, match="tool.argv must not contain a password"):
        writer.finish(fields)


def test_add_file_entry_hashes_or_checks_files_written_elsewhere(repo, validator):
    writer = bs.SetWriter(repo, "pg1", "id1")
    repo.objects["pg1/id1/base.tar"] = b"tar-bytes" * 100
    repo.objects["pg1/id1/pg_wal.tar"] = b"wal"
    entry = writer.add_file_entry("base.tar", "base", "tar")
    assert entry["size"] == 900 and entry["sha256"] == hashlib.sha256(b"tar-bytes" * 100).hexdigest()
    with pytest.raises(PgdrError, match="is 3 bytes in the repository but 4 bytes were reported"):
        writer.add_file_entry("pg_wal.tar", "wal", "tar", size=4, sha256=SHA_A)
    writer.add_file_entry("pg_wal.tar", "wal", "tar", size=3, sha256=hashlib.sha256(b"wal").hexdigest())
    with pytest.raises(PgdrError, match="was not found in backup set pg1/id1"):
        writer.add_file_entry("missing.tar", "base", "tar")
    manifest = writer.finish(physical_fields())
    validator.validate(manifest)
    assert bs.check_files(repo, manifest, "pg1")[0]["ok"]


# --- reading: complete, incomplete, latest -----------------------------------------------


def test_incomplete_sets_are_listed_but_never_loaded(repo):
    write_set(repo, backup_id="20261120T010000Z")
    writer = bs.SetWriter(repo, "pg1", "20261121T010000Z")  # interrupted: data, no manifest
    with writer.open_file("db_sales.dump", "database", "custom") as out:
        out.write(b"PGDMP")
    repo.objects["pg1/.tmp-upload/x"] = b"not a set"

    assert bs.list_sets(repo, "pg1") == [
        {"backup_id": "20261120T010000Z", "complete": True},
        {"backup_id": "20261121T010000Z", "complete": False},
    ]
    assert bs.set_status(repo, "pg1", "20261121T010000Z") == "incomplete"
    with pytest.raises(PgdrError) as failure:
        bs.load_manifest(repo, "pg1", "20261121T010000Z")
    assert failure.value.msg == (
        "backup set pg1/20261121T010000Z is incomplete (no manifest.json): it was interrupted; "
        "it is never restored, delete it or run the backup again"
    )
    assert bs.latest_complete(repo, "pg1")["backup_id"] == "20261120T010000Z"
    with pytest.raises(PgdrError, match="does not exist in memory://test"):
        bs.load_manifest(repo, "pg1", "nope")
    assert bs.list_sets(repo, "other") == []
    assert bs.latest_complete(repo, "other") is None


def test_latest_complete_by_time_and_kind(repo):
    write_set(repo, backup_id="20261101T000000Z", fields=logical_fields(finished_at="2026-11-01T00:05:00Z", started_at="2026-11-01T00:00:00Z"))
    write_set(repo, backup_id="20261102T000000Z", fields=physical_fields(finished_at="2026-11-02T00:05:00Z", started_at="2026-11-02T00:00:00Z"))
    # a user-chosen id that sorts after the others but was taken before them
    write_set(repo, backup_id="zz-before-upgrade", fields=logical_fields(finished_at="2026-10-01T00:05:00Z", started_at="2026-10-01T00:00:00Z"))
    repo.objects["pg1/20261103T000000Z/db.dump"] = b"interrupted"
    assert bs.latest_complete(repo, "pg1")["backup_id"] == "20261102T000000Z"
    assert bs.latest_complete(repo, "pg1", kind="logical-db")["backup_id"] == "20261101T000000Z"
    assert bs.latest_complete(repo, "pg1", kind="probackup") is None
    repo.objects["pg1/20261102T000000Z/manifest.json"] = b"{not json"
    assert bs.latest_complete(repo, "pg1")["backup_id"] == "20261101T000000Z"


def test_latest_complete_compares_old_whole_second_and_new_sub_second_times_as_times(repo):
    # as text "…:00Z" sorts after "…:00.500000Z" although it is half a second earlier
    write_set(repo, backup_id="a-new", fields=logical_fields(started_at="2026-11-01T00:04:00.000000Z", finished_at="2026-11-01T00:05:00.500000Z"))
    write_set(repo, backup_id="b-old", fields=logical_fields(started_at="2026-11-01T00:04:00Z", finished_at="2026-11-01T00:05:00Z"))
    assert bs.latest_complete(repo, "pg1")["backup_id"] == "a-new"


def test_load_manifest_refuses_corrupt_newer_or_moved_manifests(repo):
    manifest = write_set(repo, backup_id="id1")
    key = "pg1/id1/manifest.json"
    repo.objects[key] = b"{\"format_version\": 1, "
    with pytest.raises(PgdrError, match="not valid JSON .*the set is corrupt, restore another backup"):
        bs.load_manifest(repo, "pg1", "id1")
    repo.objects[key] = bs.manifest_bytes(dict(manifest, format_version=2))
    with pytest.raises(PgdrError, match="format_version 2, newer than .*upgrade the collection"):
        bs.load_manifest(repo, "pg1", "id1")
    repo.objects[key] = bs.manifest_bytes(dict(manifest, files="nope"))
    with pytest.raises(PgdrError, match="malformed \\(files must be a list\\)"):
        bs.load_manifest(repo, "pg1", "id1")
    repo.objects["pg2/id1/manifest.json"] = bs.manifest_bytes(manifest)
    with pytest.raises(PgdrError, match="found at pg2/id1 describes set pg1/id1"):
        bs.load_manifest(repo, "pg2", "id1")


# --- verification ----------------------------------------------------------------------


def test_verify_good_set(repo):
    manifest = write_set(repo)
    results = bs.verify_files(repo, manifest, "pg1")
    assert [r["ok"] for r in results] == [True, True]
    assert all(r["actual"] == r["expected"] and r["problem"] is None for r in results)
    assert bs.check_files(repo, manifest, "pg1") == results


def test_a_flipped_byte_is_caught(repo):
    data = os.urandom(3 * bs.READ_CHUNK + 17)  # several 1 MiB reads
    manifest = write_set(repo, files={"db_x.dump": data, "globals.sql": b"ok"})
    flipped = bytearray(data)
    flipped[2 * bs.READ_CHUNK + 5] ^= 0x01
    repo.objects["pg1/20261121T140051Z/db_x.dump"] = bytes(flipped)
    results = {r["path"]: r for r in bs.verify_files(repo, manifest, "pg1")}
    assert results["db_x.dump"]["problem"] == "sha256 differs" and results["db_x.dump"]["actual"]["size"] == len(data)
    assert results["globals.sql"]["ok"]
    with pytest.raises(PgdrError) as failure:
        bs.check_files(repo, manifest, "pg1")
    assert failure.value.msg == (
        "file db_x.dump in set pg1/20261121T140051Z has sha256 %s but the manifest says %s; the set is corrupt, restore another backup") % (
        hashlib.sha256(bytes(flipped)).hexdigest(), hashlib.sha256(data).hexdigest())
    assert failure.value.details["bad_files"] == ["db_x.dump"]


def test_a_truncated_or_missing_file_is_caught(repo):
    manifest = write_set(repo, files={"db_x.dump": b"0123456789", "globals.sql": b"ok"})
    repo.objects["pg1/20261121T140051Z/db_x.dump"] = b"01234"
    with pytest.raises(PgdrError, match="^file db_x.dump in set pg1/20261121T140051Z is 5 bytes but the manifest says 10; the set is corrupt"):
        bs.check_files(repo, manifest, "pg1")
    del repo.objects["pg1/20261121T140051Z/globals.sql"]
    results = {r["path"]: r for r in bs.verify_files(repo, manifest, "pg1")}
    assert results["globals.sql"] == {"path": "globals.sql", "ok": False, "expected": {"size": 2, "sha256": hashlib.sha256(b"ok").hexdigest()},
                                      "actual": None, "problem": "missing"}
    assert results["db_x.dump"]["problem"] == "size differs"


# --- the schema and the built-in shape check agree ------------------------------------------------


def produced_manifests(repo):
    return [
        write_set(repo, backup_id="logical"),
        write_set(repo, backup_id="nofp", fields=logical_fields(tables=[], fingerprint=False)),
        write_set(repo, backup_id="base", fields=physical_fields(), files={"base.tar.zst": b"t", "pg_wal.tar.zst": b"w"},
                  compression={"method": "zstd", "level": 19}),
        write_set(repo, backup_id="cluster", fields=logical_fields(kind="logical-cluster", source=dict(source(), database=None), later_field={"x": 1})),
        write_set(repo, backup_id="nofiles", fields=physical_fields(kind="probackup", start_lsn=None, stop_lsn=None, timeline=None), files={}),
    ]


def test_produced_manifests_match_the_schema(repo, validator):
    for manifest in produced_manifests(repo):
        validator.validate(manifest)
        assert bs.validate_manifest_shape(manifest) == []


def mutate(manifest, path, value=None, delete=False):
    result = copy.deepcopy(manifest)
    target = result
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


BAD_MUTATIONS = [
    (("format_version",), None, True),
    (("format_version",), "1", False),
    (("kind",), "logical", False),
    (("backup_id",), "a/b", False),
    (("backup_id",), "..", False),
    (("cluster",), "", False),
    (("cluster",), None, True),
    (("source",), None, True),
    (("source", "port"), "5432", False),
    (("source", "system_identifier"), 7301234567890123456, False),
    (("source", "major"), None, True),
    (("source", "database"), 5, False),
    (("started_at",), "2026-11-21 14:00:51", False),
    (("finished_at",), "2026-11-21T14:00:51+02:00", False),
    (("duration_seconds",), -1, False),
    (("duration_seconds",), "70", False),
    (("tool", "argv"), "pg_dump -Fc", False),
    (("tool", "argv"), ["pg_dump", 5], False),
    (("tool", "argv"), ["pg_dump", "-d", "dbname=x Password = s3cret"], False),
    (("tool", "version"), None, True),
    (("tool", "commands"), [{"database": None}], False),
    (("tool", "commands"), [{"database": "x", "argv": ["pg_dump", "--dbname=host=h password=s3cret"]}], False),
    (("consistency", "snapshots"), {"sales": 5}, False),
    (("files", 0, "sha256"), "ABC", False),
    (("files", 0, "size"), -1, False),
    (("files", 0, "size"), True, False),
    (("files", 0, "path"), "/etc/passwd", False),
    (("files", 0, "path"), "../x", False),
    (("files", 0, "path"), "a/../b", False),
    (("files", 0, "path"), "manifest.json", False),
    (("files", 0, "extra"), 1, False),
    (("files", 0, "database"), None, True),
    (("files", 0, "compression", "method"), "brotli", False),
    (("files", 0, "compression", "level"), "3", False),
    (("files", 0, "encryption", "method"), "aes", False),
    (("files", 0, "encryption", "key"), "secret", False),
    (("files", 0, "role"), "Database", False),
    (("compression",), None, True),
    (("encryption",), {"method": "gpg"}, False),
    (("consistency", "snapshot"), 5, False),
    (("consistency",), {"snapshot": None}, False),
    (("options",), [], False),
    (("options", "fingerprint"), None, True),
    (("options", "fingerprint"), "yes", False),
    (("tables",), None, True),
    (("tables", 0, "rows"), -1, False),
    (("tables", 0, "rows"), "3", False),
    (("tables", 0, "fingerprint"), "abc", False),
    (("tables", 0, "fingerprint_method"), "sha1", False),
    (("tables", 0, "schema"), None, True),
    (("options", "fingerprint"), False, False),  # fingerprints off but tables recorded
    (("start_lsn",), "3000028", False),
    (("timeline",), 0, False),
]


@pytest.mark.parametrize("path,value,delete", BAD_MUTATIONS, ids=str)
def test_schema_and_shape_check_reject_the_same_defects(repo, validator, path, value, delete):
    manifest = write_set(repo, files={"db.dump": b"x"})
    bad = mutate(manifest, path, value, delete)
    assert list(validator.iter_errors(bad)), "the schema accepts %r" % (bad,)
    assert bs.validate_manifest_shape(bad), "validate_manifest_shape accepts %r" % (bad,)


GOOD_MUTATIONS = [
    (("later_kind_field",), {"anything": [1, 2]}),
    (("source", "encoding"), "UTF8"),
    (("source", "database"), None),
    (("started_at",), "2026-11-21T14:00:51.123456Z"),
    (("duration_seconds",), 0),
    (("tool", "argv"), []),
    (("tool", "commands"), [{"database": None, "argv": ["pg_dumpall", "--globals-only"]}, {"database": "sales", "argv": ["pg_dump"]}]),
    (("consistency", "snapshots"), {"sales": "00000003-0000001B-1"}),
    (("consistency", "snapshot"), None),
    (("files", 0, "path"), "sales.dir/3456.dat.gz"),
    (("files", 0, "path"), "db my shop.dump"),
    (("files", 0, "compression"), {"method": "gzip"}),
    (("options", "extra_option"), True),
    (("tables", 0, "extra"), 1),
    (("tables",), []),
    (("start_lsn",), "16/B374D848"),
]


@pytest.mark.parametrize("path,value", GOOD_MUTATIONS, ids=str)
def test_schema_and_shape_check_accept_the_same_variants(repo, validator, path, value):
    manifest = write_set(repo, files={"db.dump": b"x"})
    good = mutate(manifest, path, value)
    validator.validate(good)
    assert bs.validate_manifest_shape(good) == []


def test_shape_check_also_refuses_repeated_paths(repo):
    manifest = write_set(repo, files={"db.dump": b"x"})
    twice = dict(manifest, files=manifest["files"] * 2)
    assert bs.validate_manifest_shape(twice) == ["files[1].path repeats 'db.dump'"]


@pytest.mark.parametrize("name", BAD_NAMES + GOOD_NAMES)
def test_schema_name_pattern_matches_validate_backup_id(validator, name):
    schema = validator.schema
    name_validator = jsonschema.Draft202012Validator(dict(schema["$defs"]["name"]))
    assert name_validator.is_valid(name) == (bs._name_problem(name) is None)


@pytest.mark.parametrize("path", ["a", "a/b.dump", "db my.dump", "x.dir/1.dat", "..a", "a..", "", "/a", "a//b", "a/", "./a", "a/.", "a/../b",
                                  "..", "manifest.json", "sub/manifest.json", "a\\b", "a\x01", "x" * 1025])
def test_schema_path_pattern_matches_validate_file_path(validator, path):
    path_validator = jsonschema.Draft202012Validator(dict(validator.schema["$defs"]["file"]["properties"]["path"]))
    assert path_validator.is_valid(path) == (bs._path_problem(path) is None), path


def test_hashing_writer_counts_any_bytes_like():
    sink = io.BytesIO()
    writer = bs.HashingWriter(sink)
    assert writer.write(b"ab") == 2
    assert writer.write(bytearray(b"cd")) == 2
    assert writer.write(memoryview(b"ef")) == 2
    writer.flush()
    assert writer.size == 6 and writer.sha256 == hashlib.sha256(b"abcdef").hexdigest() and sink.getvalue() == b"abcdef"
