"""pg_basebackup's argv, backup_label parsing and the base manifest, without a server."""

import hashlib
import json
import os
import threading
import time

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.physical import basebackup
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository
from tests.manifest_schema import assert_valid_manifest

LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000080
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-22 10:21:02 UTC
LABEL: pgdr.backup db1/full
START TIMELINE: 1
"""


def opts(**over):
    """BaseBackupOptions as the module builds them (argument spec defaults filled in), with ``over``."""
    base = dict(
        action="backup",
        cluster=None,
        backup_id=None,
        compression=dict(method="none", level=None, location="client"),
        work_dir="/var/tmp",
        if_running="fail",
        pg_bin_dir=None,
        format="tar",
        wal_method="stream",
        checkpoint="fast",
        label="L",
        max_rate=None,
        slot=None,
        temporary_slot=True,
        tablespace_mapping=[],
        manifest_checksums="CRC32C",
        incremental_from=None,
        verify=True,
    )
    base.update(over)
    return typed(basebackup.BaseBackupOptions, base)


def compression(comp=None):
    """The compression option as the module receives it: suboptions left out take the argument spec's defaults."""
    return typed(basebackup.CompressionOptions, dict(dict(method="none", level=None, location="client"), **(comp or {})))


def argv(tool_major=18, comp=None, **over):
    o = opts(**over)
    spec = basebackup.normalize_compression(compression(comp), o.format, tool_major)
    return basebackup.build_argv("/bin/pg_basebackup", tool_major, o, "/t", spec)[1:]


def test_argv_defaults_on_18():
    assert argv() == [
        "--pgdata=/t",
        "--format=tar",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--label=L",
        "--no-password",
        "--progress",
        "--verbose",
        "--manifest-checksums=CRC32C",
    ]


@pytest.mark.parametrize(
    "major,comp,expected",
    [
        (18, {"method": "gzip", "level": 5}, ["--compress=client-gzip:5"]),
        (15, {"method": "zstd", "level": 3, "location": "server"}, ["--compress=server-zstd:3"]),
        (15, {"method": "lz4"}, ["--compress=client-lz4"]),
        (14, {"method": "gzip", "level": 4}, ["--compress=4"]),
        (14, {"method": "gzip"}, ["--gzip"]),
        (18, {"method": "none"}, []),
    ],
)
def test_compression_forms(major, comp, expected):
    got = [a for a in argv(major, comp) if a.startswith("--compress") or a == "--gzip"]
    assert got == expected


@pytest.mark.parametrize(
    "major,comp,fmt,text",
    [
        (14, {"method": "zstd"}, "tar", "compresses only with gzip"),
        (14, {"method": "gzip", "location": "server"}, "tar", "cannot compress on the server"),
        (18, {"method": "gzip"}, "plain", "format plain writes an uncompressed data directory"),
        (18, {"method": "gzip", "level": 12}, "tar", "out of range"),
    ],
)
def test_compression_refusals(major, comp, fmt, text):
    with pytest.raises(PgdrError, match=text):
        basebackup.normalize_compression(compression(comp), fmt, major)


def test_server_compression_is_allowed_with_plain_on_15():
    spec = basebackup.normalize_compression(compression({"method": "gzip", "location": "server"}), "plain", 15)
    assert basebackup.compress_args(spec, 15) == ["--compress=server-gzip"]


def test_slots_rate_and_checkpoint():
    o = opts(slot="bb", checkpoint="spread", max_rate="50M")
    got = basebackup.build_argv("pg_basebackup", 18, o, "/t", {"method": "none", "level": None, "location": "client"}, create_slot=True)
    assert "--slot=bb" in got and "--create-slot" in got and "--checkpoint=spread" in got and "--max-rate=50M" in got
    got = basebackup.build_argv("pg_basebackup", 18, o, "/t", {"method": "none", "level": None, "location": "client"})
    assert "--slot=bb" in got and "--create-slot" not in got
    assert "--no-slot" in argv(temporary_slot=False) and "--no-slot" not in argv(temporary_slot=False, wal_method="fetch")


@pytest.mark.parametrize(
    "over,major,text",
    [
        (dict(slot="s", wal_method="fetch"), 18, "replication slot is used only while WAL is streamed"),
        (dict(max_rate="fast"), 18, "max_rate 'fast' must be kilobytes per second"),
        (dict(incremental_from="b0"), 15, "incremental backups need PostgreSQL 17 or later .* this is 15"),
        (dict(tablespace_mapping=[{"old_dir": "/a", "new_dir": "/b"}]), 18, "tablespace_mapping applies to format plain"),
    ],
)
def test_option_refusals(over, major, text):
    with pytest.raises(PgdrError, match=text):
        basebackup.check_options(opts(**over), major)


def test_tablespace_mapping_and_incremental_argv():
    got = basebackup.build_argv(
        "pg_basebackup",
        17,
        opts(format="plain"),
        "/t",
        {"method": "none", "level": None, "location": "client"},
        incremental_manifest="/tmp/parent",
        tablespace_map={"/srv/ts=1": "/b/ts", "/srv/a": "/b/a"},
    )
    assert got[-4:] == [
        "--tablespace-mapping=/srv/a=/b/a",
        "--tablespace-mapping=/srv/ts\\=1=/b/ts",
        "--manifest-checksums=CRC32C",
        "--incremental=/tmp/parent",
    ]


def test_backup_label_parsing():
    facts = basebackup.parse_backup_label(LABEL + "INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\n")
    assert facts["start_wal_location"] == "0/2000028" and facts["start_wal_file"] == "000000010000000000000002"
    assert facts["checkpoint_location"] == "0/2000080" and facts["backup_method"] == "streamed" and facts["backup_from"] == "primary"
    assert facts["start_timeline"] == 1 and facts["label"] == "pgdr.backup db1/full"
    assert facts["incremental_from_lsn"] == "0/1000028" and facts["incremental_from_tli"] == 1
    assert basebackup.label_time_utc(facts["start_time"]) == "2026-11-22T10:21:02Z"
    assert basebackup.label_time_utc("2026-11-22 11:21:02 CET") is None
    with pytest.raises(PgdrError, match="no START WAL LOCATION"):
        basebackup.parse_backup_label("LABEL: x\n")


def test_progress_parsing():
    stderr = "waiting\r100/22949 kB (0%), 0/1 tablespace\r22949/22949 kB (100%), 1/1 tablespace   \nend"
    assert basebackup.parse_progress(stderr) == dict(done_bytes=22949 * 1024, total_bytes=22949 * 1024, percent=100, tablespaces_done=1, tablespaces=1)
    assert basebackup.parse_progress("error only") is None


def test_file_roles_and_compression():
    assert basebackup.file_role("base.tar.zst") == "base" and basebackup.file_role("pg_wal.tar") == "wal"
    assert basebackup.file_role("16384.tar.gz") == "tablespace" and basebackup.file_role("backup_manifest") == "backup-manifest"
    assert basebackup.file_compression("base.tar.lz4") == ("tar", {"method": "lz4", "level": None})
    assert basebackup.file_compression("backup_manifest")[0] == "json"
    with pytest.raises(PgdrError, match="unexpected file"):
        basebackup.file_compression("base.tar.bz2")


def test_manifest_is_valid_and_complete(tmp_path):
    repo = LocalRepository(str(tmp_path))
    writer = backup_set.SetWriter(repo, "db1", "b1", compression="none")
    with writer.open_file("backup_manifest", "backup-manifest", "json", compression="none") as out:
        out.write(b"{}")
    o = opts(incremental_from="b0")
    spec = {"method": "gzip", "level": 1, "location": "client"}
    ranges = basebackup.wal_ranges({"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]})
    source = dict(host="db1", port=5432, database=None, system_identifier="7710939028678239692", server_version="18.1", server_version_num=180001, major=18)
    fields = basebackup.manifest_fields(
        o,
        spec,
        source,
        dict(name="pg_basebackup", version="18.1", argv=["pg_basebackup"]),
        basebackup.parse_backup_label(LABEL),
        ranges,
        [dict(oid="16384", name="ts", location="/srv/ts", file="16384.tar.gz")],
        ["b0", "b1"],
        True,
        1.5,
        "2026-11-22T10:21:01Z",
        "2026-11-22T10:22:00Z",
        59.0,
    )
    manifest = assert_valid_manifest(writer.finish(fields))
    assert manifest["kind"] == "base" and manifest["start_lsn"] == "0/2000028" and manifest["stop_lsn"] == "0/2000100"
    assert manifest["timeline"] == 1 and manifest["consistency"] == {"snapshot": None, "isolation": "wal"}
    physical = manifest["physical"]
    assert physical["start_time"] == "2026-11-22T10:21:02Z" and physical["stop_time"] == "2026-11-22T10:22:00Z"
    assert physical["chain"] == ["b0", "b1"] and physical["incremental_from"] == "b0" and physical["wal_included"] is True
    assert physical["compression"] == {"algorithm": "gzip", "level": 1, "location": "client"} and physical["data_dir"] is None
    assert backup_set.validate_manifest_shape(manifest) == []
    assert backup_set.load_manifest(repo, "db1", "b1") == manifest
    # the options as pg_basebackup ran with them; not where the module ran (work_dir, pg_bin_dir) nor what it was asked (action)
    assert manifest["options"] == dict(
        format="tar", wal_method="stream", checkpoint="fast", max_rate=None, slot=None, temporary_slot=True, label="L", tablespace_mapping=[],
        manifest_checksums="CRC32C", incremental_from="b0", verify=True, compression={"method": "gzip", "level": 1, "location": "client"},
    )


def stored_base_set(repo):
    """A complete (manifest written) tar base set of one file, as pg_basebackup's writer leaves it."""
    writer = backup_set.SetWriter(repo, "db1", "b1", compression="none")
    with writer.open_file("base.tar", "base", "tar", compression="none") as out:
        out.write(b"not really a tar")
    source = dict(host="db1", port=5432, database=None, system_identifier="7710939028678239692", server_version="18.1", server_version_num=180001, major=18)
    fields = basebackup.manifest_fields(
        opts(format="tar"), {"method": "none", "level": None, "location": None}, source,
        dict(name="pg_basebackup", version="18.1", argv=["pg_basebackup"]), basebackup.parse_backup_label(LABEL),
        basebackup.wal_ranges({"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]}), [], ["b1"], False, 0.5,
        "2026-11-22T10:21:01Z", "2026-11-22T10:22:00Z", 59.0,
    )
    return writer.finish(fields)


class UnreadableRepository(LocalRepository):
    """The repository's server went away between listing and reading."""

    def open_reader(self, key):
        if key.endswith("/manifest.json"):
            return super().open_reader(key)
        raise PgdrError("SFTP connection to backup1:22 lost")


def test_reverify_without_a_readable_repository_leaves_the_set_alone(tmp_path):
    stored_base_set(LocalRepository(str(tmp_path / "repo")))
    repo = UnreadableRepository(str(tmp_path / "repo"))
    with pytest.raises(PgdrError) as failed:
        basebackup.reverify(repo, "db1", "b1", None, str(tmp_path / "work"))
    assert "connection" in failed.value.msg and not failed.value.details.get("verify_failed")
    assert repo.exists("db1/b1/manifest.json") and not repo.exists("db1/b1/" + basebackup.FAILED_NAME)


def test_reverify_of_a_changed_file_takes_the_manifest_away_and_keeps_why(tmp_path):
    repo = LocalRepository(str(tmp_path / "repo"))
    stored_base_set(repo)
    (tmp_path / "repo/db1/b1/base.tar").write_bytes(b"not really a tar, changed")
    with pytest.raises(PgdrError) as failed:
        basebackup.reverify(repo, "db1", "b1", None, str(tmp_path / "work"))
    assert failed.value.details["verify_failed"] is True and "manifest.json was removed" in failed.value.msg
    assert not repo.exists("db1/b1/manifest.json")
    assert "base.tar" in json.loads((tmp_path / "repo/db1/b1" / basebackup.FAILED_NAME).read_text())["verify_error"]


def test_follower_hashes_a_growing_archive(tmp_path):
    path = tmp_path / "base.tar"
    data = os.urandom(3 * basebackup.CHUNK + 123)
    hasher = basebackup.Follower(str(tmp_path), basebackup._HashSink)

    def write():
        with open(path, "wb", buffering=0) as out:
            for start in range(0, len(data), 700_000):
                out.write(data[start : start + 700_000])
                time.sleep(0.01)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    (tmp_path / "pg_wal.tar").write_bytes(b"not followed")
    found = hasher.finish()
    assert found == {"base.tar": (len(data), hashlib.sha256(data).hexdigest())}


def test_follower_drops_a_file_rewritten_shorter(tmp_path):
    path = tmp_path / "base.tar"
    path.write_bytes(b"x" * 1000)
    hasher = basebackup.Follower(str(tmp_path), basebackup._HashSink)
    time.sleep(0.2)
    path.write_bytes(b"y" * 10)  # truncated and rewritten: the followed sum is no longer that of the file
    assert hasher.finish() == {}


def _grow(path, data, step=700_000):
    with open(path, "wb", buffering=0) as out:
        for start in range(0, len(data), step):
            out.write(data[start : start + step])
            time.sleep(0.01)


def test_follower_streams_a_growing_archive_into_the_set(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    repo = LocalRepository(str(tmp_path / "repo"))  # stands in for the store: the same writer interface
    writer = backup_set.SetWriter(repo, "db1", "b1", compression="none")
    data = os.urandom(2 * basebackup.CHUNK + 77)
    follower = basebackup.Follower(str(staged), lambda name: basebackup._UploadSink(writer, name))
    _grow(staged / "base.tar", data)
    (staged / "pg_wal.tar").write_bytes(b"left to the caller")
    found = follower.finish()
    digest = hashlib.sha256(data).hexdigest()
    assert found == {"base.tar": (len(data), digest)}
    assert (tmp_path / "repo/db1/b1/base.tar").read_bytes() == data
    assert [(f["path"], f["size"], f["sha256"], f["role"]) for f in writer.files] == [("base.tar", len(data), digest, "base")]


def test_follower_aborted_leaves_nothing_in_the_set(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    repo = LocalRepository(str(tmp_path / "repo"))
    writer = backup_set.SetWriter(repo, "db1", "b1", compression="none")
    follower = basebackup.Follower(str(staged), lambda name: basebackup._UploadSink(writer, name))
    _grow(staged / "base.tar", os.urandom(basebackup.CHUNK + 5))
    follower.abort()  # pg_basebackup failed
    assert writer.files == [] and repo.list_files("db1/b1") == []


def test_follower_reports_a_store_that_fails_and_commits_nothing(tmp_path):
    class Refusing:
        def __init__(self, _name):
            self.aborted = False
            sinks.append(self)

        def write(self, chunk):
            raise PgdrError("the store refused the upload")

        def commit(self):
            raise AssertionError("a failed stream must not be committed")

        def abort(self):
            self.aborted = True

    sinks = []
    follower = basebackup.Follower(str(tmp_path), Refusing)
    (tmp_path / "base.tar").write_bytes(b"x" * 1000)
    assert follower.finish() == {}
    assert "refused" in follower.error.msg and [s.aborted for s in sinks] == [True]


class FakeConnParams:
    settings = {"host": "db1", "port": 5432}
    reached_host = None

    def child_env(self):
        import contextlib

        return contextlib.nullcontext(dict(os.environ))


class FakePlan:
    """What run_backup reads of a Plan: a plain backup into a local repository, no parent."""

    def __init__(self, repo, work_dir):
        self.options = opts(format="plain", work_dir=work_dir, verify=True, pg_bin_dir=None)
        self.conn_params = FakeConnParams()
        self.repo = repo
        self.compression = {"method": "none", "level": None, "location": "client"}
        self.parent = None
        self.facts = {"tablespaces": []}
        self.version = {"text": "18.1", "num": 180001}
        self.major = 18
        self.tool_version = "18.1"
        self.chain = ["b1"]
        self.encrypted = False
        self.in_place = True
        self.streamed = False

    def argv(self, target, incremental=None, set_dir=None):
        return ["/usr/lib/postgresql/18/bin/pg_basebackup", "--pgdata=%s" % target]


def test_the_stop_time_is_when_pg_basebackup_exited_not_after_verification(tmp_path, monkeypatch):
    """recovery_target_time is bounded by physical.stop_time: a long pg_verifybackup must not move it later."""
    clock = ["2026-11-22T10:22:00Z"]
    real_iso_utc = backup_set.iso_utc
    monkeypatch.setattr(basebackup.backup_set, "iso_utc", lambda moment=None: clock[0] if moment is None else real_iso_utc(moment))

    class Ran:
        returncodes, stderr = [0], ""

    def fake_basebackup(argvs, **kwargs):
        target = argvs[0][1].split("=", 1)[1]
        os.makedirs(target)
        with open(os.path.join(target, "backup_label"), "w") as f:
            f.write(LABEL)
        with open(os.path.join(target, "backup_manifest"), "w") as f:
            json.dump({"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]}, f)
        clock[0] = "2026-11-22T10:23:00Z"  # pg_basebackup exits
        return Ran()

    def slow_verify(*args):
        clock[0] = "2026-11-22T10:40:00Z"  # pg_verifybackup of a large backup
        return 1020.0, "pg_verifybackup"

    monkeypatch.setattr(basebackup, "run_pipeline", fake_basebackup)
    monkeypatch.setattr(basebackup, "verify_backup", slow_verify)
    repo = LocalRepository(str(tmp_path / "repo"))
    writer = backup_set.SetWriter(repo, "db1", "b1", compression="none")
    manifest, _details = basebackup.run_backup(FakePlan(repo, str(tmp_path / "work")), writer, "7710939028678239692")
    assert manifest["physical"]["stop_time"] == "2026-11-22T10:23:00Z"
    assert manifest["finished_at"] == "2026-11-22T10:40:00Z"
    assert_valid_manifest(manifest)


def test_the_manifest_records_tablespace_mappings_as_given():
    o = opts(format="plain", tablespace_mapping=[{"old_dir": "/srv/ts", "new_dir": "/b/ts"}])
    assert basebackup.recorded_options(o, {"method": "none", "level": None, "location": "client"})["tablespace_mapping"] == [
        {"old_dir": "/srv/ts", "new_dir": "/b/ts"}
    ]


@pytest.mark.parametrize(
    "over, message",
    [
        (dict(format="plain", encryption={"method": "gpg", "passphrase": "p"}), "format plain writes a data directory, which cannot be encrypted"),
        (dict(encryption={"method": "gpg"}), "encryption.method gpg needs encryption.passphrase"),
        (dict(encryption={"method": "aes"}), "encryption.method must be one of none, gpg"),
    ],
)
def test_encryption_combinations_are_refused_before_anything_runs(over, message):
    with pytest.raises(PgdrError, match=message):
        basebackup.check_options(opts(**over), 18)
    basebackup.check_options(opts(encryption={"method": "gpg", "passphrase": "p"}), 18)  # tar with a passphrase is fine
    assert opts(encryption={"method": "gpg", "passphrase": "p"}).encryption_method == "gpg" and opts().encryption_method == "none"


def test_the_manifest_records_the_encryption_of_an_encrypted_set():
    spec = {"method": "none", "level": None, "location": "client"}
    ranges = basebackup.wal_ranges({"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]})
    fields = basebackup.manifest_fields(
        opts(encryption={"method": "gpg", "passphrase": "secret"}), spec, {}, {}, basebackup.parse_backup_label(LABEL), ranges, [], ["b1"], True, 1.0,
        "2026-11-22T10:21:01Z", "2026-11-22T10:22:00Z", 59.0,
    )
    assert fields["encryption"] == {"method": "gpg-symmetric-aes256"} and "secret" not in repr(fields)


def test_copy_out_decrypts_an_encrypted_parent_manifest_and_names_a_wrong_passphrase(tmp_path):
    """incremental_from and action verify read stored files through copy_out: decrypted when the entry says so."""
    import subprocess

    from ansible_collections.pgdr.backup.plugins.module_utils.core import encryption

    repo = LocalRepository(str(tmp_path / "repo"))
    with encryption.gpg_session("right") as gpg:
        sealed = subprocess.run(gpg.encrypt_argv(), input=b'{"Files": []}', capture_output=True, check=True).stdout
    repo.put_bytes_atomic("db1/b0/backup_manifest.gpg", sealed)
    entry = {"path": "backup_manifest.gpg", "role": "backup-manifest", "encryption": {"method": "gpg-symmetric-aes256"}}
    assert basebackup.plain_name(entry) == "backup_manifest"
    out = str(tmp_path / "parent_backup_manifest")
    with pytest.raises(PgdrError, match=r"incremental_from b0 is encrypted \(gpg\): give encryption.passphrase"):
        basebackup.copy_out(repo, "db1/b0/backup_manifest.gpg", entry, out, None, "incremental_from b0")
    with encryption.gpg_session("wrong") as gpg:
        with pytest.raises(PgdrError, match="check encryption.passphrase") as caught:
            basebackup.copy_out(repo, "db1/b0/backup_manifest.gpg", entry, out, gpg, "incremental_from b0")
    assert "\n" not in caught.value.msg
    with encryption.gpg_session("right") as gpg:
        basebackup.copy_out(repo, "db1/b0/backup_manifest.gpg", entry, out, gpg, "incremental_from b0")
    assert open(out, "rb").read() == b'{"Files": []}'
