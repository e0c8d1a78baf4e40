"""The pure rules of physical restores: targets, their bounds, recovery settings, postgresql.auto.conf."""

import datetime
import os

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.core.recovery_target import RecoveryTargetOptions, requested_target
from ansible_collections.pgdr.backup.plugins.module_utils.physical import restore as pr
from tests.unit.test_physical_review import restore_options

UTC = datetime.timezone.utc


class Server:
    pg_data = "/var/lib/postgresql/15/main"


def manifest(stop_lsn="0/5000100", stop_time="2026-11-22T10:00:00Z"):
    return {"backup_id": "b1", "stop_lsn": stop_lsn, "finished_at": stop_time, "physical": {"stop_time": stop_time}}


def test_lsn_and_segment_arithmetic():
    assert pr.lsn_to_int("0/5000100") == 0x5000100
    assert pr.lsn_to_int("1/0") == 1 << 32
    assert pr.segment_end("000000010000000000000005") == 6 * 16 * 1024 * 1024
    assert pr.segment_end("000000010000000100000000") == (1 << 32) + 16 * 1024 * 1024
    assert pr.segment_end("000000010000000000000005.partial") == 6 * 16 * 1024 * 1024
    assert pr.segment_end("00000002.history") is None
    with pytest.raises(PgdrError, match="not an LSN"):
        pr.lsn_to_int("5000100")


def test_target_time_needs_a_zone():
    assert pr.parse_target_time("2026-11-22 10:15:00+00") == datetime.datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
    assert pr.parse_target_time("2026-11-22T10:15:00.25Z").microsecond == 250000
    with pytest.raises(PgdrError, match="needs a date, a time and a time zone"):
        pr.parse_target_time("2026-11-22 10:15:00")


def recovery_target(params):
    return requested_target(typed(RecoveryTargetOptions, params))


def test_one_target_at_most():
    assert recovery_target({}) == ("latest", None)
    assert recovery_target({"recovery_target_name": "before_upgrade"}) == ("name", "before_upgrade")
    assert recovery_target({"recovery_target": "immediate"}) == ("immediate", None)
    with pytest.raises(PgdrError, match="give one recovery target"):
        recovery_target({"recovery_target_name": "x", "recovery_target_xid": "42"})
    # what a restore plans with is this same target, read from its own options
    assert pr.BaseSetRestore(restore_options(recovery_target_xid="42"), Server(), {}, None, None, {}).target == ("xid", "42")


def test_targets_before_the_backup_end_are_refused():
    with pytest.raises(PgdrError, match="lies before the end of backup b1"):
        pr.check_target_bounds(manifest(), ("lsn", "0/5000000"), ("000000010000000000000009", None), True)
    with pytest.raises(PgdrError, match="lies before the end of backup b1"):
        pr.check_target_bounds(manifest(), ("time", "2026-11-22 09:59:59+00"), None, True)


def test_targets_after_the_newest_archived_wal_are_refused():
    newest = ("000000010000000000000006", datetime.datetime(2026, 11, 22, 10, 5, tzinfo=UTC))
    pr.check_target_bounds(manifest(), ("lsn", "0/6FFFFFF"), newest, True)
    with pytest.raises(PgdrError, match="after the newest archived WAL"):
        pr.check_target_bounds(manifest(), ("lsn", "0/7000000"), newest, True)
    pr.check_target_bounds(manifest(), ("time", "2026-11-22 10:04:00+00"), newest, True)
    with pytest.raises(PgdrError, match="after the newest archived WAL"):
        pr.check_target_bounds(manifest(), ("time", "2026-11-22 10:06:00+00"), newest, True)
    with pytest.raises(PgdrError, match="holds no segment"):
        pr.check_target_bounds(manifest(), ("lsn", "0/6000000"), ("", None), True)


def test_targets_past_the_backup_need_an_archive():
    with pytest.raises(PgdrError, match="give archive"):
        pr.check_target_bounds(manifest(), ("name", "p1"), None, False)
    pr.check_target_bounds(manifest(), ("immediate", None), None, False)
    pr.check_target_bounds(manifest(), ("name", "p1"), None, True)  # unlistable archive: PostgreSQL decides


def test_recovery_settings_are_explicit_and_turn_archiving_off():
    settings = dict(pr.recovery_settings(restore_options(), ("name", "p1"), "cp /a/%f %p"))
    assert settings == {
        "restore_command": "cp /a/%f %p",
        "recovery_target_name": "p1",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",  # never PostgreSQL's default pause
        "archive_mode": "off",
    }
    standby = dict(pr.recovery_settings(restore_options(standby={"primary_conninfo": "host=p1", "slot": "s1"}, archive_mode="on"), ("latest", None), None))
    assert standby == {"primary_conninfo": "host=p1", "primary_slot_name": "s1", "archive_mode": "on"}


def test_auto_conf_replaces_an_earlier_restore_and_quotes():
    first = pr.auto_conf_text("work_mem = '8MB'\nrestore_command = 'old'\n", [("restore_command", "cp '%f' %p"), ("archive_mode", "off")])
    assert first.splitlines() == ["work_mem = '8MB'", pr.AUTO_CONF_MARK, "restore_command = 'cp ''%f'' %p'", "archive_mode = 'off'"]
    again = pr.auto_conf_text(first, [("recovery_target_inclusive", False)])
    assert again.splitlines() == ["work_mem = '8MB'", pr.AUTO_CONF_MARK, "recovery_target_inclusive = off"]


def test_telling_log_line_prefers_fatal():
    text = "LOG:  starting\nFATAL:  recovery ended before configured recovery target was reached\nLOG:  shut down\n"
    assert pr.telling_log_line(text) == "FATAL:  recovery ended before configured recovery target was reached"


def test_restored_wal_files_counts_distinct_segments():
    text = ('LOG:  restored log file "000000010000000000000086" from archive\n'
            'LOG:  restored log file "00000002.history" from archive\n'
            'LOG:  restored log file "000000010000000000000087" from archive\n'
            'LOG:  restored log file "000000010000000000000087" from archive\n')
    assert pr.restored_wal_files(text) == 2


def test_probackup_backup_becomes_the_facts_restores_check(tmp_path):
    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import restore as pbr

    backup = {"id": "TOUSRY", "stop-lsn": "0/4000100", "recovery-time": "2026-11-22 10:00:05+00", "end-time": "2026-11-22 10:00:06+00",
              "server-version": "15"}
    facts = pbr.pseudo_manifest(backup, "7440", "main")
    assert facts["source"] == {"major": 15, "system_identifier": "7440"}
    assert facts["physical"]["stop_time"] == "2026-11-22T10:00:05Z" and facts["physical"]["chain"] == ["TOUSRY"]
    with pytest.raises(PgdrError, match="lies before the end of backup TOUSRY"):
        pr.check_target_bounds(facts, ("time", "2026-11-22 10:00:04+00"), None, True)

    wal = tmp_path / "wal" / "main"
    wal.mkdir(parents=True)
    assert pbr.newest_archived(str(tmp_path), "main") == ("", None)
    for name in ("000000010000000000000003.gz", "000000010000000000000004", "00000002.history", "000000010000000000000002.00000028.backup"):
        (wal / name).write_bytes(b"x")
    segment, mtime = pbr.newest_archived(str(tmp_path), "main")
    assert segment == "000000010000000000000004" and mtime.tzinfo is not None


def test_a_replay_of_the_whole_archive_must_reach_its_newest_segment():
    newest = ("000000010000000000000006", None)
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/6000100"}, newest) is None
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/6000000"}, newest) is None
    short = pr.archive_shortfall(("latest", None), {"reached_lsn": "0/5FFFF00"}, newest)
    assert short.startswith("recovery ended at 0/5FFFF00, before the newest archived segment 000000010000000000000006")
    assert pr.archive_shortfall(("name", "p1"), {"reached_lsn": "0/5000000"}, newest) is None  # a target stops earlier on purpose
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/5000000"}, ("", None)) is None  # an empty archive
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/5000000"}, None) is None  # an archive that cannot be listed


# --- the probackup restore as restore_cluster starts it ---------------------------------------------------------

BACKUPS = [
    {"id": "TOUSRY", "status": "OK", "backup-mode": "FULL", "stop-lsn": "0/4000100", "start-time": "2026-11-22 10:00:00+00",
     "recovery-time": "2026-11-22 10:00:05+00", "end-time": "2026-11-22 10:00:06+00", "server-version": "15"},
    {"id": "TOUSZZ", "status": "ERROR", "backup-mode": "FULL", "stop-lsn": "0/6000100", "start-time": "2026-11-22 11:00:00+00",
     "recovery-time": "2026-11-22 11:00:05+00", "end-time": "2026-11-22 11:00:06+00", "server-version": "15"},
]


class FakeCatalog:
    """What the probackup restore asks of probackup.catalog.Probackup."""

    def __init__(self, kind):
        from ansible_collections.pgdr.backup.plugins.module_utils.probackup import catalog as pb

        self.program = pb.Program("/usr/bin/" + kind, kind, "2.5.15")
        self.commands = [[kind, "show-config"], [kind, "show"]]

    def show_config(self, instance):
        return {"system-identifier": 7440} if instance == "main" else None

    def backups(self, instance):
        return BACKUPS


class OwnedServer:
    """The server of pg_service.Cluster as the probackup restore uses it."""

    manager, bin_dir, os_user = "pg_ctl", "/usr/lib/postgresql/15/bin", "postgres"

    def __init__(self, pg_data, running=True):
        self.pg_data, self.running, self.server_log = pg_data, running, pg_data + ".log"
        self.closed = set()  # paths the cluster's OS user may neither write nor enter

    def owner_can_write(self, path):
        return path not in self.closed

    def owner_can_reach(self, folder):
        return folder not in self.closed

    def status(self):
        return "running" if self.running else "stopped"

    def stop(self, mode="fast", timeout=60):
        self.running = False

    def as_owner(self, argv):
        return ["runuser", "-u", "postgres", "--"] + argv


def probackup_restore(tmp_path, monkeypatch, kind="pg_probackup", **given):
    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import restore as pbr

    monkeypatch.setattr(pbr.pb.Probackup, "detect", classmethod(lambda cls, binary, backup_path: FakeCatalog(kind)))
    monkeypatch.setattr(pbr, "server_bin_dir", lambda manifest, pg_bin_dir, pg_data: "/usr/lib/postgresql/15/bin")
    monkeypatch.setattr(pbr.Cluster, "from_options", classmethod(lambda cls, service, bin_dir, **kw: OwnedServer(service.pg_data)))
    options = dict(probackup=dict(binary=kind, backup_path=str(tmp_path / "catalog"), instance="main", incremental_mode="none"),
                   pg_data=str(tmp_path / "main"), force=True)
    options.update(given)
    return pbr.ProbackupRestore.from_options(restore_options(pbr.ProbackupRestoreOptions, **options), None)


def test_probackup_latest_is_the_newest_valid_backup_and_check_mode_reports_the_catalog(tmp_path, monkeypatch):
    restore = probackup_restore(tmp_path, monkeypatch)
    assert restore.manifest["backup_id"] == "TOUSRY" and restore.manifest["source"] == {"major": 15, "system_identifier": "7440"}
    assert restore.wal.newest == ("", None) and restore.wal.restore_command is None  # the tool writes its own archive-get
    result = restore.run(check_mode=True)
    assert result["kind"] == "probackup" and result["backup_id"] == "TOUSRY"
    assert result["plan"]["catalog"] == str(tmp_path / "catalog") and result["plan"]["instance"] == "main"
    assert result["backup"]["id"] == "TOUSRY" and result["commands"] == [["pg_probackup", "show-config"], ["pg_probackup", "show"]]


@pytest.mark.parametrize(
    "given,message",
    [
        (dict(probackup=dict(binary="pg_probackup", backup_path="/bk", instance="other", incremental_mode="none")),
         "instance other does not exist in the catalog /bk; check probackup.instance"),
        (dict(backup_id="ZZZZZZ"), "backup ZZZZZZ is not in instance main of .*; see probackup_instance action show"),
        (dict(backup_id="TOUSZZ"), "backup TOUSZZ has status ERROR; choose a valid backup"),
    ],
)
def test_probackup_refusals_before_anything_changes(tmp_path, monkeypatch, given, message):
    with pytest.raises(PgdrError, match=message):
        probackup_restore(tmp_path, monkeypatch, **given)


def test_probackup_without_a_valid_backup_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(FakeCatalog, "backups", lambda self, instance: [BACKUPS[1]])
    with pytest.raises(PgdrError, match="instance main in .* has no valid backup .status OK or DONE with a valid chain.; run a backup first"):
        probackup_restore(tmp_path, monkeypatch)


def test_probackup_plan_refuses_what_belongs_to_base_sets_and_gs_probackup_targets(tmp_path, monkeypatch):
    with pytest.raises(PgdrError, match="standby and tablespace_mapping are for base backup sets"):
        probackup_restore(tmp_path, monkeypatch, tablespace_mapping={"/srv/ts": "/srv/ts2"}).run(check_mode=True)
    with pytest.raises(PgdrError, match="gs_probackup"):
        probackup_restore(tmp_path, monkeypatch, kind="gs_probackup", recovery_target_name="p1").run(check_mode=True)


def test_probackup_prepare_runs_the_tool_as_the_owner_and_adds_our_settings(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import restore as pbr

    restore = probackup_restore(tmp_path, monkeypatch, recovery_target_name="p1", recovery_target_inclusive=False,
                                server_settings={"max_connections": 50}, probackup=dict(
                                    binary="pg_probackup", backup_path=str(tmp_path / "catalog"), instance="main", threads=4,
                                    incremental_mode="none", db_exclude=["big"]))
    ran = []

    def tool(argv, **kw):
        ran.append(argv)
        os.makedirs(restore.new_dir)
        with open(os.path.join(restore.new_dir, "postgresql.auto.conf"), "w") as f:
            f.write("restore_command = 'pg_probackup archive-get'\nrecovery_target_name = 'p1'\n")
        return SimpleNamespace(returncodes=[0], stdout="", stderr="")

    monkeypatch.setattr(pbr, "run", tool)
    timings = {}
    restore.prepare(restore.plan(), timings)
    assert ran[0][:4] == ["runuser", "-u", "postgres", "--"]
    assert ran[0][4:] == ["/usr/bin/pg_probackup", "restore", "-B", str(tmp_path / "catalog"), "--instance=main", "-D", restore.new_dir,
                          "-i", "TOUSRY", "-j", "4", "--recovery-target-name=p1", "--recovery-target-inclusive=false",
                          "--recovery-target-action=promote", "--db-exclude=big"]
    assert restore.restore_commands == [["pg_probackup"] + ran[0][5:]]  # as run, without runuser, for the result
    text = (tmp_path / "main.pgdr-new" / "postgresql.auto.conf").read_text()
    assert text.splitlines()[-3:] == [pr.AUTO_CONF_MARK, "archive_mode = 'off'", "max_connections = 50"]
    assert "deploy_seconds" in timings


def test_probackup_restores_follow_the_rules_for_what_pg_data_holds(tmp_path, monkeypatch):
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "important.txt").write_text("keep me")
    with pytest.raises(PgdrError, match="^pg_data %s is not empty and holds no PostgreSQL cluster .important.txt.; " % (tmp_path / "main")):
        probackup_restore(tmp_path, monkeypatch, force=False).run(check_mode=True)
    incremental = dict(binary="pg_probackup", backup_path=str(tmp_path / "catalog"), instance="main", incremental_mode="checksum")
    with pytest.raises(PgdrError, match="^incremental_mode checksum rewrites what differs from the cluster in pg_data, but .* holds none .other.; "
                                        "use incremental_mode: none"):
        probackup_restore(tmp_path, monkeypatch, probackup=incremental).run(check_mode=True)
    (tmp_path / "main" / "PG_VERSION").write_text("15\n")
    stopped = probackup_restore(tmp_path, monkeypatch, force=False, probackup=incremental)
    stopped.server.running = False
    with pytest.raises(PgdrError, match="^pg_data .* holds a stopped PostgreSQL 15 cluster; set force: true"):
        stopped.run(check_mode=True)
    assert probackup_restore(tmp_path, monkeypatch, probackup=incremental).run(check_mode=True)["plan"]["existing"] == "running cluster"


def test_probackup_needs_a_parent_the_cluster_user_can_write(tmp_path, monkeypatch):
    restore = probackup_restore(tmp_path, monkeypatch)
    restore.server.closed = {str(tmp_path)}
    restore.server.owner_can_reach = lambda folder: True
    restore.server.server_log = str(tmp_path / "logs" / "server.log")  # made for it: not what blocks
    with pytest.raises(PgdrError, match="^pg_probackup runs as postgres, which cannot create %s.pgdr-new in %s .owned by " % (restore.pg_data, tmp_path)):
        restore.run(check_mode=True)


# --- encrypted base sets (gpg) -------------------------------------------------------------------


def encrypted_set(tmp_path, passphrase="right"):
    """A tar base set whose base.tar and backup_manifest are stored gpg-encrypted, as pg_basebackup writes them."""
    import io
    import json
    import subprocess
    import tarfile

    from ansible_collections.pgdr.backup.plugins.module_utils.core import encryption
    from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
    from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"15\n"
        info = tarfile.TarInfo("PG_VERSION")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    plain = {"base.tar": buf.getvalue(), "backup_manifest": json.dumps({"PostgreSQL-Backup-Manifest-Version": 1}).encode()}
    repo = LocalRepository(str(tmp_path / "repo"))
    writer = backup_set.SetWriter(repo, "db1", "b1", compression="none")
    with encryption.gpg_session(passphrase) as gpg:
        for name, role, fmt in (("base.tar", "base", "tar"), ("backup_manifest", "backup-manifest", "json")):
            sealed = subprocess.run(gpg.encrypt_argv(), input=plain[name], capture_output=True, check=True).stdout
            with writer.open_file(name + ".gpg", role, fmt, compression="none", encryption="gpg") as out:
                out.write(sealed)
    manifest = {"backup_id": "b1", "files": writer.files, "physical": {"format": "tar", "tablespaces": []}}
    return repo, manifest


def test_an_encrypted_set_deploys_only_with_its_passphrase(tmp_path):
    from ansible_collections.pgdr.backup.plugins.module_utils.core import encryption

    repo, manifest = encrypted_set(tmp_path)
    assert pr.is_encrypted([manifest])
    with pytest.raises(PgdrError, match=r"backup set db1/b1 is encrypted \(gpg\): give encryption.passphrase"):
        pr.check_decryption(repo, "db1", [manifest], None)
    with encryption.gpg_session("wrong") as gpg:
        with pytest.raises(PgdrError) as caught:
            pr.check_decryption(repo, "db1", [manifest], gpg)
    msg = caught.value.msg
    assert msg.startswith("cannot decrypt the backup: gpg says ") and "check encryption.passphrase" in msg and "\n" not in msg
    with encryption.gpg_session("wrong") as gpg:  # the same one line from the deploy itself
        with pytest.raises(PgdrError, match="check encryption.passphrase"):
            pr.deploy_one(repo, "db1", manifest, str(tmp_path / "wrong"), {}, gpg)
    with encryption.gpg_session("right") as gpg:
        pr.check_decryption(repo, "db1", [manifest], gpg)
        pr.deploy_one(repo, "db1", manifest, str(tmp_path / "new"), {}, gpg)
    assert (tmp_path / "new" / "PG_VERSION").read_bytes() == b"15\n"
    assert (tmp_path / "new" / "backup_manifest").read_text().startswith('{"PostgreSQL-Backup-Manifest-Version"')


def test_damaged_ciphertext_is_named_as_damage_not_as_a_wrong_passphrase(tmp_path):
    from ansible_collections.pgdr.backup.plugins.module_utils.core import encryption

    repo, manifest = encrypted_set(tmp_path)
    stored = tmp_path / "repo" / "db1" / "b1" / "base.tar.gpg"
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0xFF
    stored.write_bytes(bytes(data))
    entry = next(e for e in manifest["files"] if e["role"] == "base")
    with encryption.gpg_session("right") as gpg:
        with pytest.raises(PgdrError, match="does not match its manifest"):
            pr._extract(repo, "db1", manifest, entry, str(tmp_path / "new"), gpg)


def test_wal_source_checks_the_newest_archived_file_and_installs_under_the_restore_name(monkeypatch):
    import contextlib

    from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import NotFound

    asked, installed = [], []

    class Archive:
        def newest_segment(self):
            return ("000000010000000000000009", None)

        def check_decryption(self, passphrase, walfile):
            asked.append((passphrase, walfile))
            if not walfile.endswith(".partial"):  # only pg_receivewal's .partial is there
                raise NotFound("missing")
            return True

    def restore_command(archive, name, os_user, check_mode=False):
        installed.append((name, check_mode))
        return "pgdr-wal fetch %f %p"

    monkeypatch.setattr(pr.wal_archive, "open_archive", lambda archive: contextlib.nullcontext(Archive()))
    monkeypatch.setattr(pr.wal_installer, "restore_command", restore_command)
    archive = typed(pr.ArchiveOptions, dict(type="local", path="/wal", encryption=dict(method="none", passphrase="p")))
    source = pr.wal_source(archive, "db1", "postgres")
    assert asked == [("p", "000000010000000000000009"), ("p", "000000010000000000000009.partial")]
    source.install()
    assert installed == [("restore-db1", True), ("restore-db1", False)]
