"""pgdr-wal as PostgreSQL runs it (the built zipapp, as a process) against a local folder, plus the archive option,
the commands it gives PostgreSQL, and the installer."""

import ast
import collections
import dataclasses
import datetime
import fcntl
import io
import json
import os
import pwd
import stat
import subprocess
import sys
import time
import zipfile

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.doc_fragments.wal_archive import ModuleDocFragment
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.wal import archive as wal_archive
from ansible_collections.pgdr.backup.plugins.module_utils.wal import installer, pgdr_wal

SEGMENT = "000000010000000000000005"
ME = pwd.getpwuid(os.geteuid()).pw_name
MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "plugins", "module_utils")


def archive_options(**given):
    """The ``archive`` option as a module receives it: validated (defaults applied), then typed."""
    result = ArgumentSpecValidator(wal_archive.archive_argument_spec()).validate(dict(archive=given))
    assert result.error_messages == []
    return typed(wal_archive.ArchiveOptions, result.validated_parameters["archive"])


@pytest.fixture
def helper(tmp_path):
    """The zipapp built from this checkout, installed with a config for a local archive in tmp_path."""
    archive = tmp_path / "archive"
    spec = archive_options(type="local", path=str(archive))
    installed = installer.install(spec, "unit", os_user=ME, helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))

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


@pytest.fixture
def fsyncs(monkeypatch):
    """Record the path of every os.fsync; ``fail_dirs`` makes the folder fsync fail like a full journal would."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        path = os.readlink("/proc/self/fd/%d" % fd)
        if os.path.isdir(path) and synced.fail_dirs:
            raise OSError(5, "Input/output error")
        synced.append(path)
        real_fsync(fd)

    synced = type("Synced", (list,), {"fail_dirs": False})()
    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def local_config(archive):
    """What pgdr-wal reads from its config for a local archive in ``archive``."""
    return pgdr_wal.HelperConfig(name="unit", archive=archive_options(type="local", path=str(archive)), spool_dir=pgdr_wal.SPOOL_DIR)


def test_identical_retry_after_a_failed_fsync_makes_the_copy_durable_before_success(tmp_path, fsyncs):
    archive = tmp_path / "archive"
    archive.mkdir()
    config = local_config(archive)
    source = write(tmp_path / "seg", os.urandom(4096))
    fsyncs.fail_dirs = True
    with pytest.raises(PgdrError, match="Input/output error"):
        pgdr_wal.push(config, source, SEGMENT)  # linked into place, but the folder fsync failed
    assert (archive / SEGMENT).exists()
    fsyncs.fail_dirs = False
    del fsyncs[:]
    assert pgdr_wal.push(config, source, SEGMENT) is False  # already archived (identical)
    assert fsyncs == [str(archive / SEGMENT), str(archive)]


def test_identical_copy_written_meanwhile_is_made_durable(tmp_path, fsyncs, monkeypatch):
    archive = tmp_path / "archive"
    archive.mkdir()
    config = local_config(archive)
    source = write(tmp_path / "seg", os.urandom(4096))
    real_link = os.link

    def link(temp, final):  # another archiver stores the same segment between our check and our link
        real_link(temp, final)
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(os, "link", link)
    assert pgdr_wal.push(config, source, SEGMENT) is False  # already archived (identical)
    assert fsyncs[-2:] == [str(archive / SEGMENT), str(archive)]
    assert sorted(os.listdir(archive)) == [SEGMENT]


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
    # fetch: a helper that cannot work is not the end of the archive (PostgreSQL would end recovery there)
    assert broken.returncode == pgdr_wal.ABORT_RECOVERY and "cannot read config" in broken.stderr and len(broken.stderr.splitlines()) == 1


def test_list_json(helper, tmp_path):
    (helper.archive / SEGMENT).write_bytes(b"a" * 10)
    (helper.archive / "unrelated.txt").write_bytes(b"b")
    listed = helper("list", "--json")
    assert listed.returncode == 0
    items = json.loads(listed.stdout)
    assert [(i["name"], i["size"]) for i in items] == [(SEGMENT, 10)]


def test_local_helper_does_not_import_boto3_or_paramiko(helper, tmp_path):
    # the archiver starts pgdr-wal once per segment: for a local archive it must not pay for boto3/paramiko,
    # and the program needs neither Ansible nor its own installer
    source = write(tmp_path / "seg", os.urandom(4096))
    unwanted = ("boto3", "paramiko", "botocore", "ansible", "ansible_collections.pgdr.backup.plugins.module_utils.wal.installer")
    for action in (["push", source, SEGMENT], ["fetch", SEGMENT, str(tmp_path / "fetched")], ["list"]):
        code = (
            "import sys; sys.argv=['pgdr-wal','--config',%r] + %r; import runpy\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(sorted(m for m in %r if sys.modules.get(m) is not None))"
        ) % (helper.installed["config"], action, helper.installed["helper"], unwanted)
        out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
        assert out.stdout.strip().splitlines()[-1:] == ["[]"], (action, out.stdout, out.stderr)
    assert (tmp_path / "fetched").read_bytes() == (tmp_path / "seg").read_bytes()  # the runs above did their work
    started = time.monotonic()
    assert helper("fetch", "000000010000000000000009", str(tmp_path / "x")).returncode == 1
    assert time.monotonic() - started < 2


def module_utils_imports(dotted):
    """The module_utils a module_utils file imports (dotted below module_utils), at any depth of the file."""
    with open(os.path.join(MODULE_UTILS, *dotted.split(".")) + ".py", encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    prefix = "ansible_collections.pgdr.backup.plugins.module_utils."
    found = set()
    for node in ast.walk(tree):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + ["%s.%s" % (node.module, alias.name) for alias in node.names]
        for name in names:
            if name.startswith(prefix) and os.path.exists(os.path.join(MODULE_UTILS, *name[len(prefix):].split(".")) + ".py"):
                found.add(name[len(prefix):])
    return found


def test_the_zipapp_packs_every_module_the_program_imports_and_not_the_installer():
    needed, todo = set(), ["wal.pgdr_wal"]
    while todo:
        dotted = todo.pop()
        if dotted not in needed:
            needed.add(dotted)
            # the dict entry points kept for restore_cluster import the installer inside themselves, never at run time
            todo.extend(name for name in module_utils_imports(dotted) if name != "wal.installer")
    assert set(installer._SOURCES) == needed
    assert "wal.installer" not in module_utils_imports("wal.archive") | module_utils_imports("storage.repository")
    built = installer.build_zipapp("/usr/bin/python3")
    with zipfile.ZipFile(io.BytesIO(built)) as packed:
        modules = [name for name in packed.namelist() if not name.endswith("__init__.py") and name != "__main__.py"]
    assert len(modules) == len(installer._SOURCES) and not any("installer" in name for name in modules)


def test_build_is_reproducible_and_install_is_idempotent(tmp_path):
    assert installer.build_zipapp("/usr/bin/python3") == installer.build_zipapp("/usr/bin/python3")
    spec = archive_options(type="s3", bucket="b", access_key="AK", secret_key="SECRET/KEY")
    dirs = dict(helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))
    check = installer.install(spec, "x", os_user=ME, check_mode=True, **dirs)
    assert check["changed"] is True and not os.path.exists(check["config"])
    first = installer.install(spec, "x", os_user=ME, **dirs)
    assert first["changed"] is True
    assert stat.S_IMODE(os.stat(first["config"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(first["helper"]).st_mode) == 0o755
    assert json.loads(open(first["config"]).read())["store"]["secret_key"] == "SECRET/KEY"
    assert installer.install(spec, "x", os_user=ME, **dirs)["changed"] is False
    assert installer.install(dataclasses.replace(spec, bucket="c"), "x", os_user=ME, **dirs)["changed"] is True
    os.chmod(first["config"], 0o644)  # someone loosened it: put back
    assert installer.install(dataclasses.replace(spec, bucket="c"), "x", os_user=ME, **dirs)["changed"] is True
    assert stat.S_IMODE(os.stat(first["config"]).st_mode) == 0o600


def test_sftp_key_must_be_readable_by_the_server_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to judge another user's access")
    key = tmp_path / "key"
    key.write_text("k")
    os.chmod(key, 0o600)  # root's own file: postgres cannot read it
    spec = archive_options(type="sftp", host="b", path="/x", key_file=str(key))
    with pytest.raises(PgdrError, match="must be a file the postgres user can read"):
        installer.install(spec, "x", os_user="postgres", helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))


def test_commands_per_type():
    local = archive_options(type="local", path="/var/lib/wal archive")
    assert wal_archive.archive_command(local, "16-main") == "/usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/16-main.json push %p %f"
    assert wal_archive.restore_command_string(local, "16-main") == (  # what installer.restore_command returns once it has installed
        "test -f /var/spool/pgdr/16-main/%f && mv -f /var/spool/pgdr/16-main/%f %p || "
        "/usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/16-main.json fetch --retry-window 60 --prefetch 16 --parallel 4 %f %p"
    )
    assert wal_archive.restore_command_string(local, "16-main", prefetch=0) == (
        "/usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/16-main.json fetch --retry-window 60 %f %p"
    )
    assert wal_archive.restore_command_string(local, "16-main", prefetch=2, parallel=1, retry_window=5).endswith(
        " fetch --retry-window 5 --prefetch 2 --parallel 1 %f %p"
    )
    for wrong, message in ((dict(prefetch=-1), "prefetch must be"), (dict(parallel=0), "parallel must be"), (dict(retry_window=1.5), "retry_window must be")):
        with pytest.raises(PgdrError, match=message):
            wal_archive.restore_command_string(local, "16-main", **wrong)
    with pytest.raises(PgdrError, match="must not contain '%'"):
        wal_archive.restore_command_string(local, "16-main", spool_dir="/var/spool/100%")
    probackup = archive_options(type="probackup", backup_path="/backup/pg probackup", instance="main")
    assert wal_archive.archive_command(probackup, "n") == (
        "pg_probackup archive-push -B '/backup/pg probackup' --instance main --wal-file-path=%p --wal-file-name=%f"
    )
    assert installer.restore_command(probackup, "n", ME).startswith("pg_probackup archive-get -B '/backup/pg probackup'")
    command = archive_options(type="command", archive_command="cp %p /a/%f", restore_command="cp /a/%f %p")
    assert wal_archive.archive_command(command, "n") == "cp %p /a/%f"
    assert installer.restore_command(command, "n", ME) == "cp /a/%f %p"
    with pytest.raises(PgdrError, match="archive.restore_command"):
        installer.restore_command(archive_options(type="command", archive_command="x"), "n", ME)
    with pytest.raises(PgdrError, match="archive.bucket is required"):
        wal_archive.archive_command(archive_options(type="s3"), "n")
    with pytest.raises(PgdrError, match="not usable as a file name"):
        wal_archive.archive_command(local, "../x")


def test_open_archive_lists_and_finds_the_newest_segment(tmp_path):
    spec = archive_options(type="local", path=str(tmp_path))
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
    with wal_archive.open_archive(spec) as archive:
        assert [item["name"] for item in archive.list()] == sorted(names[:-1])
        assert archive.exists("000000010000000000000003") and not archive.exists("000000010000000000000005")
        newest, mtime = archive.newest_segment()
    assert newest == "000000020000000000000005"
    assert mtime == datetime.datetime.fromtimestamp(1_700_000_004, datetime.timezone.utc)
    assert wal_archive.open_archive(archive_options(type="local", path=str(tmp_path / "empty"))).newest_segment() is None
    with pytest.raises(PgdrError, match="cannot be listed"):
        wal_archive.open_archive(archive_options(type="command", restore_command="x"))


def test_spec_matches_its_doc_fragment_and_validates():
    spec = wal_archive.archive_argument_spec()
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
    assert installer.zipapp.ensure_dir(str(folder), 0o755, os.getuid(), os.getgid(), check_mode=False) is False


# --- read-ahead: fetch --prefetch N -----------------------------------------------------------------

MIB = 1 << 20


def seg(number, timeline=1):
    return "%08X%08X%08X" % (timeline, 0, number)


def content(name, size=MIB):
    """A fake segment of ``size`` bytes that differs per name."""
    return (name.encode() * (size // len(name) + 1))[:size]


def wait_for(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


IDLE = 2  # seconds: prefetchers started by these tests end soon after the test stops fetching


@pytest.fixture
def restore(tmp_path, monkeypatch):
    """pgdr-wal installed as restore_cluster does it (restore_command()), all into tmp_path, run as PostgreSQL runs it."""
    monkeypatch.setenv(pgdr_wal.IDLE_ENV, str(IDLE))  # fetch passes it on to the prefetcher it starts
    archive = tmp_path / "archive"
    archive.mkdir()
    dirs = dict(helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))
    spec = archive_options(type="local", path=str(archive))
    line = installer.restore_command(spec, "restore-unit", ME, prefetch=3, spool_dir=str(tmp_path / "spool"), **dirs)

    def run(walfile, dest, prefetch=None, wait=True):
        command = line if prefetch is None else wal_archive.restore_command_string(spec, "restore-unit", prefetch=prefetch, **dirs)
        argv = ["sh", "-c", command.replace("%f", walfile).replace("%p", str(dest))]
        if not wait:
            return subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=20, check=False)

    def store(*names, size=MIB):
        for name in names:
            (archive / name).write_bytes(content(name.split(".")[0], size))

    def spooled():
        return sorted(name for name in os.listdir(run.spool) if wal_archive.SEGMENT_RE.match(name))

    def log():
        path = run.spool / pgdr_wal.LOG_NAME
        return path.read_text() if path.exists() else ""

    run.archive, run.spool, run.line, run.spec, run.dirs = archive, tmp_path / "spool" / "restore-unit", line, spec, dirs
    run.store, run.spooled, run.log = store, spooled, log
    run.installed_helper = lambda: wal_archive.helper_path(dirs["helper_dir"])
    run.config = lambda: wal_archive.config_path("restore-unit", dirs["config_dir"])
    return run


def test_next_segments_follow_the_segment_size():
    mib16, gib = 16 * MIB, 1 << 30
    assert pgdr_wal.next_segments("0000000100000000000000FE", mib16, 3) == [
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert pgdr_wal.next_segments("000000010000000000000002", gib, 1) == ["000000010000000000000003"]
    assert pgdr_wal.next_segments("000000010000000000000003", gib, 2) == ["000000010000000100000000", "000000010000000100000001"]
    assert pgdr_wal.next_segments("0000000A0000000000000FFF", MIB, 1) == ["0000000A0000000100000000"]  # timeline kept
    assert pgdr_wal.next_segments("00000001FFFFFFFF000000FF", mib16, 2) == []  # the end of the WAL address space
    assert pgdr_wal.next_segments("000000010000000000000005", mib16, 0) == []
    for walfile, size in (("000000010000000000000004", gib), (SEGMENT, 3 * MIB), (SEGMENT, MIB // 2), (SEGMENT, 2 * gib), ("00000002.history", mib16)):
        with pytest.raises(PgdrError, match="segment"):
            pgdr_wal.next_segments(walfile, size, 1)


def test_first_fetch_fills_the_spool_with_the_next_n_whole_segments(restore, tmp_path):
    restore.store(*(seg(n) for n in range(5, 13)))
    assert restore.line.startswith("test -f ") and "fetch --retry-window 60 --prefetch 3 --parallel 4 %f %p" in restore.line
    done = restore(seg(5), tmp_path / "RECOVERYXLOG")
    assert done.returncode == 0 and done.stderr == ""
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == content(seg(5))
    assert wait_for(lambda: restore.log().count("fetched") == 3), restore.log()
    assert restore.spooled() == [seg(6), seg(7), seg(8)]
    for name in restore.spooled():
        assert (restore.spool / name).read_bytes() == content(name)
    assert sorted(os.listdir(restore.spool)) == [".lock", ".prefetch.log", ".served", seg(6), seg(7), seg(8)]  # no temporary files
    assert (restore.spool / ".served").read_text() == seg(5)
    assert stat.S_IMODE(restore.spool.stat().st_mode) == 0o700


def test_the_next_fetch_is_served_from_the_spool(restore, tmp_path):
    restore.store(*(seg(n) for n in range(5, 13)))
    assert restore(seg(5), tmp_path / "out").returncode == 0
    assert wait_for(lambda: restore.spooled() == [seg(6), seg(7), seg(8)])
    os.unlink(restore.archive / seg(6))  # only the spool has it now
    served = restore(seg(6), tmp_path / "RECOVERYXLOG")
    assert served.returncode == 0 and served.stderr == ""
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == content(seg(6))
    assert seg(6) not in restore.spooled()  # moved, not copied
    # the same prefetcher moves its window after .served
    assert wait_for(lambda: restore.spooled() == [seg(7), seg(8), seg(9)]), restore.spooled()


def test_fetch_drops_older_spooled_segments_and_a_held_lock_stops_a_second_prefetcher(restore, tmp_path):
    restore.store(seg(5), seg(6), seg(7), seg(8))
    for name in (seg(3), seg(4), seg(10)):
        (restore.spool / name).write_bytes(content(name))
    lock = os.open(restore.spool / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as if a prefetcher ran
        assert restore(seg(5), tmp_path / "out").returncode == 0
        assert restore.spooled() == [seg(10)]  # 3 and 4 are behind recovery; later ones are the prefetcher's business
        internal = subprocess.run(
            [restore.installed_helper(), "--config", restore.config(), "prefetch", "--count", "3", "--size", str(MIB), seg(5)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert internal.returncode == 0, internal.stderr
        time.sleep(1)
        # fetch waited for the (pretended) prefetcher in vain, then read the store itself; nothing else ran
        assert restore.spooled() == [seg(10)]
        assert restore.log().split("] ", 1)[1] == "%s came from the store directly: recovery was ahead of the read-ahead\n" % seg(5)
    finally:
        os.close(lock)
    assert restore(seg(5), tmp_path / "out").returncode == 0
    assert wait_for(lambda: restore.spooled() == [seg(6), seg(7), seg(8)]), restore.spooled()  # 10 is outside the window


def test_the_prefetcher_stops_at_the_end_of_the_archive_and_never_takes_a_partial(restore, tmp_path):
    restore.store(seg(5), seg(6), seg(7), seg(8) + ".partial", seg(9))
    assert restore(seg(5), tmp_path / "out", prefetch=8).returncode == 0
    assert wait_for(lambda: "%s is not in the archive (yet)" % seg(8) in restore.log()), restore.log()
    time.sleep(0.3)
    assert restore.spooled() == [seg(6), seg(7)]  # not 9 (it may have been fetched alongside 8): a gap ends the window
    assert "fetched %s.partial" % seg(8) not in restore.log()


def test_history_files_and_partial_segments_start_no_read_ahead(restore, tmp_path):
    (restore.archive / "00000002.history").write_bytes(b"1\t0/5000000\tno recovery target specified\n")
    restore.store(seg(5) + ".partial", seg(6), seg(7))
    assert restore("00000002.history", tmp_path / "h").returncode == 0
    served = restore(seg(5), tmp_path / "out")
    assert served.returncode == 0 and (tmp_path / "out").read_bytes() == content(seg(5))  # the .partial
    time.sleep(1.5)
    assert restore.spooled() == [] and restore.log() == ""
    assert restore(seg(6), tmp_path / "out").returncode == 0  # a whole segment does start it
    assert wait_for(lambda: restore.spooled() == [seg(7)])


def test_prefetch_0_reads_nothing_ahead_and_ignores_the_spool(restore, tmp_path):
    restore.store(*(seg(n) for n in range(5, 10)))
    (restore.spool / seg(6)).write_bytes(content("not the archive's copy"))
    assert "--prefetch" not in wal_archive.restore_command_string(restore.spec, "restore-unit", prefetch=0, **restore.dirs)
    assert restore(seg(5), tmp_path / "out", prefetch=0).returncode == 0
    assert restore(seg(6), tmp_path / "out", prefetch=0).returncode == 0
    assert (tmp_path / "out").read_bytes() == content(seg(6))
    time.sleep(1.5)
    assert restore.spooled() == [seg(6)] and restore.log() == ""
    assert restore(seg(5), tmp_path / "out").returncode == 0  # the same with read-ahead on
    assert wait_for(lambda: restore.spooled() == [seg(6), seg(7), seg(8)] and restore.log().count("fetched") == 2)  # 6 was there


def test_a_leftover_temporary_file_is_never_served(restore, tmp_path):
    restore.store(seg(5))
    leftover = restore.spool / (".%s.tmp-12345" % seg(6))
    leftover.write_bytes(content(seg(6)))  # as a killed prefetcher leaves it: maybe complete, maybe not
    missing = restore(seg(6), tmp_path / "out")
    assert missing.returncode == 1 and missing.stderr == "" and not (tmp_path / "out").exists()
    restore.store(seg(6), seg(7))
    assert restore(seg(6), tmp_path / "out").returncode == 0
    assert wait_for(lambda: restore.spooled() == [seg(7)] and not leftover.exists())  # the next prefetcher cleans it up


def test_a_spool_others_can_write_is_not_used(restore, tmp_path):
    # pgdr-wal itself (the shell's mv before it trusts the folder the installer made private to the server's user)
    helper_only = restore.line.split(" || ", 1)[1]
    restore.store(seg(5), seg(6))
    (restore.spool / seg(6)).write_bytes(content("planted"))
    os.chmod(restore.spool, 0o770)
    argv = ["sh", "-c", helper_only.replace("%f", seg(6)).replace("%p", str(tmp_path / "out"))]
    assert subprocess.run(argv, cwd=tmp_path, check=False).returncode == 0
    assert (tmp_path / "out").read_bytes() == content(seg(6))
    os.chmod(restore.spool, 0o700)
    assert subprocess.run(argv, cwd=tmp_path, check=False).returncode == 0
    assert (tmp_path / "out").read_bytes() == content("planted")  # the control: a private spool is trusted


def test_an_incomplete_download_is_never_spooled_and_fetch_does_not_wait_for_it(restore, tmp_path):
    restore.store(seg(5), seg(7))
    os.mkfifo(restore.archive / seg(6))  # the prefetcher blocks reading it until the test writes
    writer = None

    def opened():
        nonlocal writer
        try:
            writer = os.open(restore.archive / seg(6), os.O_WRONLY | os.O_NONBLOCK)  # only once a reader has it open
        except OSError:
            return False
        return True

    try:
        started = time.monotonic()
        done = restore(seg(5), tmp_path / "out")
        assert done.returncode == 0 and time.monotonic() - started < 5  # returned although the prefetcher still runs
        assert wait_for(opened), "no prefetcher is reading the next segment"
        os.set_blocking(writer, True)
        os.write(writer, content(seg(6))[: MIB // 2])
        assert wait_for(lambda: any(".tmp-" in name for name in os.listdir(restore.spool)))
        assert seg(6) not in restore.spooled()  # the half-written copy has a temporary name
        os.close(writer)
        writer = None  # the download ends half-way: short of a segment
        assert wait_for(lambda: "not the segment size" in restore.log()), restore.log()
        # 7 goes too (after a gap); .end tells fetch not to wait for 6
        assert wait_for(lambda: sorted(os.listdir(restore.spool)) == [".end", ".lock", ".prefetch.log", ".served"])
    finally:
        if writer is not None or opened():  # a prefetcher still reading sees the end of the file and stops
            os.close(writer)
    os.unlink(restore.archive / seg(6))
    restore.store(seg(6))
    assert restore(seg(6), tmp_path / "out").returncode == 0
    assert (tmp_path / "out").read_bytes() == content(seg(6))


def test_two_fetches_at_once_start_one_prefetcher(restore, tmp_path):
    restore.store(*(seg(n) for n in range(5, 14)), size=8 * MIB)  # big enough for the two to overlap without the lock
    both = [restore(seg(5), tmp_path / name, prefetch=8, wait=False) for name in ("a", "b")]
    assert [proc.wait(timeout=20) for proc in both] == [0, 0]
    window = [seg(n) for n in range(6, 14)]
    assert wait_for(lambda: restore.spooled() == window, timeout=30)
    time.sleep(0.5)
    fetched = [line.split() for line in restore.log().splitlines() if " fetched " in line]
    assert sorted(collections.Counter(words[-1] for words in fetched).items()) == [(name, 1) for name in window]
    assert len({words[1] for words in fetched}) == 1  # one process did the work


def test_restore_command_installs_an_empty_private_spool(restore, tmp_path):
    config = json.loads((tmp_path / "etc" / "restore-unit.json").read_text())
    assert config["spool_dir"] == str(tmp_path / "spool")
    assert "spool_dir" not in json.loads(installer.helper_config(restore.spec, "x"))  # the default is not written
    assert stat.S_IMODE(restore.spool.stat().st_mode) == 0o700 and restore.spool.stat().st_uid == os.geteuid()
    for name in (seg(6), ".%s.tmp-1" % seg(7), ".lock"):
        (restore.spool / name).write_bytes(b"from an earlier restore")
    (restore.spool / "stray").mkdir()
    again = dict(os_user=ME, prefetch=3, spool_dir=str(tmp_path / "spool"), **restore.dirs)
    installer.restore_command(restore.spec, "restore-unit", check_mode=True, **again)
    assert restore.spooled() == [seg(6)]  # check mode changes nothing
    installer.restore_command(restore.spec, "restore-unit", **again)
    assert os.listdir(restore.spool) == []
    assert stat.S_IMODE(restore.spool.stat().st_mode) == 0o700
    assert os.listdir(tmp_path / "spool") == ["restore-unit"]  # the old folder is gone too


def test_a_spooled_segment_is_copied_across_file_systems(tmp_path):
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system")
    (tmp_path / seg(6)).write_bytes(content(seg(6)))
    dest = "/dev/shm/pgdr-unit-%d" % os.getpid()
    try:
        assert pgdr_wal._take_spooled(str(tmp_path), seg(6), dest) is True
        assert open(dest, "rb").read() == content(seg(6))
        assert not (tmp_path / seg(6)).exists()
        assert pgdr_wal._take_spooled(str(tmp_path), seg(6), dest) is False
        assert not [name for name in os.listdir("/dev/shm") if name.startswith("pgdr-unit-%d." % os.getpid())]
    finally:
        if os.path.exists(dest):
            os.unlink(dest)


def prefetcher_pids(log):
    return {int(line.split()[1].strip("[]")) for line in log.splitlines() if " fetched " in line}


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def lock_free(spool):
    fd = os.open(spool / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_one_prefetcher_serves_the_whole_sequence_over_one_session(restore, tmp_path):
    restore.store(*(seg(n) for n in range(5, 16)))
    assert restore(seg(5), tmp_path / "out").returncode == 0
    for name in [seg(n) for n in range(6, 13)]:
        assert wait_for(lambda name=name: name in restore.spooled()), (name, restore.spooled(), restore.log())
        os.unlink(restore.archive / name)  # only the spool has it now
        served = restore(name, tmp_path / "out")
        assert served.returncode == 0 and served.stderr == ""
        assert (tmp_path / "out").read_bytes() == content(name)
    assert wait_for(lambda: restore.spooled() == [seg(13), seg(14), seg(15)]), restore.spooled()
    assert len(prefetcher_pids(restore.log())) == 1, restore.log()  # one process, one store session


def test_the_prefetcher_ends_when_nothing_is_served_for_idle_seconds(restore, tmp_path):
    restore.store(*(seg(n) for n in range(5, 12)))
    assert restore(seg(5), tmp_path / "out").returncode == 0
    assert wait_for(lambda: restore.spooled() == [seg(6), seg(7), seg(8)])
    assert not lock_free(restore.spool)  # the window is full, but it still waits for the next fetch
    assert wait_for(lambda: lock_free(restore.spool), timeout=IDLE + 5)
    assert restore.spooled() == []  # recovery ended or stopped asking: nothing is left behind
    assert "idle for %g s: spool emptied" % IDLE in restore.log()


def test_the_prefetcher_stops_when_a_new_restore_replaces_the_spool(restore, tmp_path):
    restore.store(*(seg(n) for n in range(5, 12)))
    assert restore(seg(5), tmp_path / "out").returncode == 0
    assert wait_for(lambda: restore.spooled() == [seg(6), seg(7), seg(8)] and prefetcher_pids(restore.log()))
    (pid,) = prefetcher_pids(restore.log())
    assert alive(pid)
    # as prepare_spool does it, but the old folder is kept: a prefetcher there would not fail, only linger
    os.rename(restore.spool, tmp_path / "old-spool")
    installer.prepare_spool("restore-unit", os_user=ME, spool_dir=str(restore.spool.parent))
    (restore.spool / ".served").write_text(seg(8))  # it would move its window if it still looked at this folder
    assert wait_for(lambda: not alive(pid), timeout=1.5)  # well before IDLE
    time.sleep(0.5)
    assert sorted(os.listdir(restore.spool)) == [".served"]


def test_after_the_end_of_the_archive_the_next_fetch_picks_up_new_segments(restore, tmp_path):
    restore.store(seg(5), seg(6))
    assert restore(seg(5), tmp_path / "out").returncode == 0
    assert wait_for(lambda: "%s is not in the archive (yet)" % seg(7) in restore.log()), restore.log()
    assert wait_for(lambda: restore.spooled() == [seg(6)])
    restore.store(seg(7), seg(8))
    # the shell's mv serves 6 (no pgdr-wal runs): the prefetcher sees it taken, moves on and asks for 7 again
    assert restore(seg(6), tmp_path / "out").returncode == 0 and (tmp_path / "out").read_bytes() == content(seg(6))
    assert wait_for(lambda: restore.spooled() == [seg(7), seg(8)]), restore.log()
    assert len(prefetcher_pids(restore.log())) == 1


# --- encryption at rest (gpg) ----------------------------------------------------------------------

PASSPHRASE = "unit wal passphrase"


def encrypted_helper(tmp_path, name, passphrase=PASSPHRASE, method="gpg", spool=False):
    """pgdr-wal installed for a local archive in tmp_path/archive with archive.encryption, run as PostgreSQL runs it."""
    archive = tmp_path / "archive"
    archive.mkdir(exist_ok=True)
    encryption = {"method": method} if passphrase is None else {"method": method, "passphrase": passphrase}
    spec = archive_options(type="local", path=str(archive), encryption=encryption)
    dirs = dict(helper_dir=str(tmp_path / "bin"), config_dir=str(tmp_path / "etc"))
    if spool:
        installer.restore_command(spec, name, ME, prefetch=3, spool_dir=str(tmp_path / "spool"), **dirs)
    else:
        installer.install(spec, name, os_user=ME, **dirs)

    def run(*args):
        argv = [wal_archive.helper_path(dirs["helper_dir"]), "--config", wal_archive.config_path(name, dirs["config_dir"]), *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)

    run.archive, run.spec = archive, spec
    run.config = wal_archive.config_path(name, dirs["config_dir"])
    return run


def test_an_encrypted_push_stores_gpg_output_and_fetch_gives_the_segment_back(tmp_path):
    push = encrypted_helper(tmp_path, "enc")
    segment = content(SEGMENT, MIB)
    source = write(tmp_path / "seg", segment)
    done = push("push", source, SEGMENT)
    assert done.returncode == 0, done.stderr
    stored = (push.archive / SEGMENT).read_bytes()
    assert stored[0] in (0x8C, 0x8D, 0x8E, 0xC3) and SEGMENT.encode() not in stored  # ciphertext, not the segment
    assert stat.S_IMODE((push.archive / SEGMENT).stat().st_mode) == 0o600
    # the passphrase is in the 0600 config only, never in the command line PostgreSQL runs
    assert PASSPHRASE in open(push.config).read() and stat.S_IMODE(os.stat(push.config).st_mode) == 0o600
    assert PASSPHRASE not in wal_archive.archive_command(push.spec, "enc") and PASSPHRASE not in wal_archive.restore_command_string(push.spec, "enc")
    # a retry after a lost reply: gpg output differs every time, so the copy is compared decrypted
    again = push("push", source, SEGMENT)
    assert again.returncode == 0 and again.stderr == "" and (push.archive / SEGMENT).read_bytes() == stored
    other = push("push", write(tmp_path / "other", content("other", MIB)), SEGMENT)
    assert other.returncode == 1 and "already exists" in other.stderr and "different content" in other.stderr
    fetched = push("fetch", SEGMENT, str(tmp_path / "RECOVERYXLOG"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment
    # no gpg-agent outlives its private GNUPGHOME (symmetric encryption starts one there; it would linger for a minute)
    agents = subprocess.run(["pgrep", "-af", "gpg-agent --homedir /tmp/pgdr-gpg-"], capture_output=True, text=True, check=False).stdout
    homes = [line.split("--homedir ")[1].split()[0] for line in agents.splitlines() if "--homedir " in line]
    assert [home for home in homes if not os.path.isdir(home)] == [], agents


def test_fetch_reads_plain_and_encrypted_files_of_one_archive(tmp_path):
    helper = encrypted_helper(tmp_path, "mixed")
    (helper.archive / seg(1)).write_bytes(content(seg(1)))  # archived before encryption was turned on
    assert helper("push", write(tmp_path / "s2", content(seg(2))), seg(2)).returncode == 0
    for name in (seg(1), seg(2)):
        done = helper("fetch", name, str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        assert (tmp_path / name).read_bytes() == content(name)


def test_a_wrong_or_missing_passphrase_ends_recovery_in_one_line_without_the_passphrase(tmp_path):
    helper = encrypted_helper(tmp_path, "right")
    assert helper("push", write(tmp_path / "s", content(SEGMENT)), SEGMENT).returncode == 0
    wrong = encrypted_helper(tmp_path, "wrong", passphrase="not it", method="none")
    done = wrong("fetch", SEGMENT, str(tmp_path / "RECOVERYXLOG"))
    # above 125: PostgreSQL ends recovery with an error instead of taking the file for the end of the archive
    assert done.returncode == pgdr_wal.ABORT_RECOVERY == 126
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "check archive.encryption.passphrase" in done.stderr and "not it" not in done.stderr
    assert not (tmp_path / "RECOVERYXLOG").exists() and [n for n in os.listdir(tmp_path) if "pgdr-tmp" in n] == []
    none = encrypted_helper(tmp_path, "none", passphrase=None, method="none")
    missing = none("fetch", SEGMENT, str(tmp_path / "RECOVERYXLOG"))
    assert missing.returncode == 126 and "is encrypted (gpg): give archive.encryption.passphrase" in missing.stderr


def test_the_read_ahead_spools_decrypted_segments(tmp_path, monkeypatch):
    monkeypatch.setenv(pgdr_wal.IDLE_ENV, str(IDLE))
    helper = encrypted_helper(tmp_path, "restore-enc", spool=True)
    for number in range(5, 9):
        assert helper("push", write(tmp_path / "s", content(seg(number))), seg(number)).returncode == 0
    done = helper("fetch", "--prefetch", "2", seg(5), str(tmp_path / "RECOVERYXLOG"))
    assert done.returncode == 0, done.stderr
    spool = tmp_path / "spool" / "restore-enc"
    assert wait_for(lambda: sorted(n for n in os.listdir(spool) if wal_archive.SEGMENT_RE.match(n)) == [seg(6), seg(7)])
    assert (spool / seg(6)).read_bytes() == content(seg(6)) and (spool / seg(7)).read_bytes() == content(seg(7))


def test_archive_check_decryption_names_the_problem_before_a_restore(tmp_path):
    helper = encrypted_helper(tmp_path, "probe")
    assert helper("push", write(tmp_path / "s", content(SEGMENT)), SEGMENT).returncode == 0
    (helper.archive / seg(1)).write_bytes(content(seg(1)))
    with wal_archive.open_archive(helper.spec) as view:
        assert view.check_decryption(PASSPHRASE, SEGMENT) is True
        assert view.check_decryption(None, seg(1)) is False
        with pytest.raises(PgdrError, match="is encrypted \\(gpg\\): give archive.encryption.passphrase"):
            view.check_decryption(None, SEGMENT)
        with pytest.raises(PgdrError, match="check archive.encryption.passphrase") as caught:
            view.check_decryption("wrong one", SEGMENT)
        assert "wrong one" not in caught.value.msg


@pytest.mark.parametrize(
    "given, message",
    [
        (dict(type="local", path="/a", encryption={"method": "gpg"}), "archive.encryption.method gpg needs archive.encryption.passphrase"),
        (dict(type="command", archive_command="true", encryption={"method": "gpg", "passphrase": "p"}), "archive.encryption is done by pgdr-wal"),
        (dict(type="local", path="/a", sse={"mode": "sse-s3"}), "archive.sse is server-side encryption of an S3 store, not of type local"),
    ],
)
def test_encryption_options_are_checked_up_front(given, message):
    with pytest.raises(PgdrError, match=message.replace("(", "\\(").replace(")", "\\)")):
        wal_archive.validate(archive_options(**given))


def test_an_unencrypted_config_is_unchanged_by_the_encryption_option(tmp_path):
    # configs written before encryption existed stay byte-identical, so reinstalling is a no-op
    plain = installer.helper_config(archive_options(type="local", path="/a"), "n")
    assert b"encryption" not in plain and b"sse" not in plain
    sealed = json.loads(installer.helper_config(archive_options(type="local", path="/a", encryption={"method": "gpg", "passphrase": "p"}), "n"))
    assert sealed["store"]["encryption"] == {"method": "gpg", "passphrase": "p"}
