"""pgdr-wal as PostgreSQL runs it (the built zipapp, as a process) against a local folder, plus the wal_helper API."""

import datetime
import json
import os
import pwd
import stat
import subprocess
import sys
import time

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.doc_fragments.wal_archive import ModuleDocFragment
from ansible_collections.pgdr.backup.plugins.module_utils import wal_helper
from ansible_collections.pgdr.backup.plugins.module_utils.errors import PgdrError

SEGMENT = "000000010000000000000005"
ME = pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def helper(tmp_path):
    """The zipapp built from this checkout, installed with a config for a local archive in tmp_path."""
    archive = tmp_path / "archive"
    spec = dict(type="local", path=str(archive))
    installed = wal_helper.install(spec, "unit", os_user=ME, helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))

    def run(*args):
        return subprocess.run([installed["helper"], "--config", installed["config"], *args], capture_output=True, text=True, cwd=tmp_path, check=False)

    run.archive = archive
    run.installed = installed
    run.spec = spec
    return run


def write(path, data):
    path.write_bytes(data)
    return str(path)


def test_push_stores_the_file_with_0600_and_accepts_an_identical_retry(helper, tmp_path):
    source = write(tmp_path / "seg", os.urandom(4096))
    first = helper("push", source, SEGMENT)
    assert first.returncode == 0, first.stderr
    stored = helper.archive / SEGMENT
    assert stored.read_bytes() == (tmp_path / "seg").read_bytes()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    again = helper("push", source, SEGMENT)  # the archiver retries when our reply was lost
    assert again.returncode == 0 and again.stderr == ""
    assert sorted(os.listdir(helper.archive)) == [SEGMENT]  # no temporary file left behind


def test_push_refuses_different_content_for_an_existing_name(helper, tmp_path):
    original = os.urandom(4096)
    assert helper("push", write(tmp_path / "a", original), SEGMENT).returncode == 0
    other = helper("push", write(tmp_path / "b", os.urandom(4096)), SEGMENT)
    assert other.returncode == 1
    assert "already exists" in other.stderr and "different content" in other.stderr and "Traceback" not in other.stderr
    shorter = helper("push", write(tmp_path / "c", original[:100]), SEGMENT)
    assert shorter.returncode == 1
    assert (helper.archive / SEGMENT).read_bytes() == original


def test_push_into_a_missing_folder_fails_instead_of_creating_it(helper, tmp_path):
    os.rmdir(helper.archive)  # as when a share is not mounted
    failed = helper("push", write(tmp_path / "seg", b"x"), SEGMENT)
    assert failed.returncode == 1 and "does not exist" in failed.stderr
    assert not helper.archive.exists()


def test_fetch_copies_the_segment_and_falls_back_to_partial(helper, tmp_path):
    whole, partial = os.urandom(2048), os.urandom(2048)
    (helper.archive / SEGMENT).write_bytes(whole)
    (helper.archive / "000000010000000000000006.partial").write_bytes(partial)
    assert helper("fetch", SEGMENT, str(tmp_path / "RECOVERYXLOG")).returncode == 0
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == whole
    assert helper("fetch", "000000010000000000000006", str(tmp_path / "RECOVERYXLOG")).returncode == 0
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == partial


def test_fetch_of_a_missing_file_exits_1_quietly_and_writes_nothing(helper, tmp_path):
    missing = helper("fetch", "000000010000000000000009", str(tmp_path / "out"))
    assert missing.returncode == 1 and missing.stderr == ""
    assert not (tmp_path / "out").exists()


def test_history_files_have_no_partial_fallback(helper, tmp_path):
    (helper.archive / "00000002.history.partial").write_bytes(b"not a thing")
    assert helper("fetch", "00000002.history", str(tmp_path / "out")).returncode == 1
    (helper.archive / "00000002.history").write_bytes(b"1\t0/3000000\tbefore\n")
    assert helper("fetch", "00000002.history", str(tmp_path / "out")).returncode == 0


def test_bad_names_and_config_fail_with_one_line(helper, tmp_path):
    bad = helper("push", write(tmp_path / "seg", b"x"), "../../etc/passwd")
    assert bad.returncode == 1 and "not a WAL file name" in bad.stderr
    broken = subprocess.run(
        [helper.installed["helper"], "--config", str(tmp_path / "nope.json"), "fetch", SEGMENT, "x"], capture_output=True, text=True, check=False
    )
    assert broken.returncode == 1 and "cannot read config" in broken.stderr and len(broken.stderr.splitlines()) == 1


def test_list_json(helper, tmp_path):
    (helper.archive / SEGMENT).write_bytes(b"a" * 10)
    (helper.archive / "unrelated.txt").write_bytes(b"b")
    listed = helper("list", "--json")
    assert listed.returncode == 0
    items = json.loads(listed.stdout)
    assert [(i["name"], i["size"]) for i in items] == [(SEGMENT, 10)]


def test_local_helper_does_not_import_boto3_or_paramiko(helper, tmp_path):
    # the archiver starts pgdr-wal once per segment: for a local archive it must not pay for boto3/paramiko
    code = (
        "import sys; sys.argv=['pgdr-wal','--config',%r,'list']; import runpy\n"
        "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('boto3','paramiko','botocore') if sys.modules.get(m) is not None))"
    ) % (helper.installed["config"], helper.installed["helper"])
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
    started = time.monotonic()
    assert helper("fetch", SEGMENT, str(tmp_path / "x")).returncode == 1
    assert time.monotonic() - started < 2


def test_build_is_reproducible_and_install_is_idempotent(tmp_path):
    assert wal_helper.build_zipapp("/usr/bin/python3") == wal_helper.build_zipapp("/usr/bin/python3")
    spec = dict(type="s3", bucket="b", access_key="AK", secret_key="SECRET/KEY")
    dirs = dict(helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))
    check = wal_helper.install(spec, "x", os_user=ME, check_mode=True, **dirs)
    assert check["changed"] is True and not os.path.exists(check["config"])
    first = wal_helper.install(spec, "x", os_user=ME, **dirs)
    assert first["changed"] is True
    assert stat.S_IMODE(os.stat(first["config"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(first["helper"]).st_mode) == 0o755
    assert json.loads(open(first["config"]).read())["store"]["secret_key"] == "SECRET/KEY"
    assert wal_helper.install(spec, "x", os_user=ME, **dirs)["changed"] is False
    assert wal_helper.install(dict(spec, bucket="c"), "x", os_user=ME, **dirs)["changed"] is True
    os.chmod(first["config"], 0o644)  # someone loosened it: put back
    assert wal_helper.install(dict(spec, bucket="c"), "x", os_user=ME, **dirs)["changed"] is True
    assert stat.S_IMODE(os.stat(first["config"]).st_mode) == 0o600


def test_sftp_key_must_be_readable_by_the_server_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to judge another user's access")
    key = tmp_path / "key"
    key.write_text("k")
    os.chmod(key, 0o600)  # root's own file: postgres cannot read it
    spec = dict(type="sftp", host="b", path="/x", key_file=str(key))
    with pytest.raises(PgdrError, match="must be a file the postgres user can read"):
        wal_helper.install(spec, "x", os_user="postgres", helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))


def test_commands_per_type():
    local = dict(type="local", path="/var/lib/wal archive")
    assert wal_helper.archive_command(local, "16-main") == "/usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/16-main.json push %p %f"
    assert wal_helper.restore_command(local, "16-main", install_helper=False) == (
        "/usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/16-main.json fetch %f %p"
    )
    probackup = dict(type="probackup", backup_path="/backup/pg probackup", instance="main")
    assert wal_helper.archive_command(probackup, "n") == (
        "pg_probackup archive-push -B '/backup/pg probackup' --instance main --wal-file-path=%p --wal-file-name=%f"
    )
    assert wal_helper.restore_command(probackup, "n").startswith("pg_probackup archive-get -B '/backup/pg probackup'")
    command = dict(type="command", archive_command="cp %p /a/%f", restore_command="cp /a/%f %p")
    assert wal_helper.archive_command(command, "n") == "cp %p /a/%f"
    assert wal_helper.restore_command(command, "n") == "cp /a/%f %p"
    with pytest.raises(PgdrError, match="archive.restore_command"):
        wal_helper.restore_command(dict(type="command", archive_command="x"), "n")
    with pytest.raises(PgdrError, match="archive.bucket is required"):
        wal_helper.archive_command(dict(type="s3"), "n")
    with pytest.raises(PgdrError, match="not usable as a file name"):
        wal_helper.archive_command(local, "../x")


def test_open_archive_lists_and_finds_the_newest_segment(tmp_path):
    spec = dict(type="local", path=str(tmp_path))
    names = [
        "000000010000000000000003",
        "000000010000000000000004",
        "000000010000000000000004.00000028.backup",
        "00000002.history",
        "000000020000000000000005.partial",
        "junk",
    ]
    for offset, name in enumerate(names):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1_700_000_000 + offset, 1_700_000_000 + offset))
    with wal_helper.open_archive(spec) as archive:
        assert [item["name"] for item in archive.list()] == sorted(names[:-1])
        assert archive.exists("000000010000000000000003") and not archive.exists("000000010000000000000005")
        newest, mtime = archive.newest_segment()
    assert newest == "000000020000000000000005"
    assert mtime == datetime.datetime.fromtimestamp(1_700_000_004, datetime.timezone.utc)
    assert wal_helper.open_archive(dict(type="local", path=str(tmp_path / "empty"))).newest_segment() is None
    with pytest.raises(PgdrError, match="cannot be listed"):
        wal_helper.open_archive(dict(type="command", restore_command="x"))


def test_spec_matches_its_doc_fragment_and_validates():
    spec = wal_helper.archive_argument_spec()
    docs = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]["archive"]["suboptions"]
    assert set(docs) == set(spec["archive"]["options"])
    for name, option in spec["archive"]["options"].items():
        assert docs[name].get("type", "str") == option.get("type", "str"), name
        assert docs[name].get("default") == option.get("default"), name
    result = ArgumentSpecValidator(spec).validate(dict(archive=dict(type="s3", bucket="b", secret_key="s")))
    assert result.error_messages == []
    assert "s" in result._no_log_values


def test_a_folder_made_by_a_concurrent_run_is_not_an_error(tmp_path, monkeypatch):
    # two installs on one host: both see no folder, the other one's mkdir wins
    folder = tmp_path / "pgdr"
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda path: False if path == str(folder) else real_isdir(path))
    folder.mkdir()
    assert wal_helper._ensure_dir(str(folder), 0o755, os.getuid(), os.getgid(), check_mode=False) is False
