"""restore_command against a store that fails for a while, and against a streaming archive written compressed.

Both restore onto the replica host of a pair and prove the exact target. The outage is the test's own: a second
sshd on its own port in the primary's namespaces, which the restore reads the archive through and which the test
stops and starts again during recovery; the lab's sshd and object store are never touched.
"""

import os
import random
import signal
import threading
import time
import uuid

import pytest

from tests.integration.test_physical_restore import PAIRS, WAL, Pair, base_backup, ok, restore
from tests.phases import ON_PG15, one_per_version
from tests.sql_text import ident, literal

pytestmark = pytest.mark.exclusive  # replaces the replicas' clusters, restarts the primaries (archive_mode)


@pytest.fixture(params=one_per_version(sorted(PAIRS)))
def wal_pair(request, lab):
    made = Pair(lab, *PAIRS[request.param])
    yield made
    made.cleanup()


@pytest.fixture
def wal_pair15(lab):
    made = Pair(lab, *PAIRS["15"])
    yield made
    made.cleanup()


class ExtraSshd:
    """An sshd of the test's own on ``host`` (its address, another port, the host's key): a store it may stop."""

    def __init__(self, host, replica):
        self.host, self.replica = host, replica
        self.port = random.randint(2200, 2999)
        self.folder = host.dir / ("outage-sshd-%s" % uuid.uuid4().hex[:6])
        self.folder.mkdir(mode=0o700)
        lab_config = (host.dir / "sshd_config").read_text()
        config = [line for line in lab_config.splitlines() if not line.startswith(("ListenAddress", "PidFile"))]
        config += ["ListenAddress %s:%d" % (host.address, self.port), "PidFile %s" % (self.folder / "sshd.pid")]
        (self.folder / "sshd_config").write_text("\n".join(config) + "\n")
        # known_hosts for this port (paramiko looks up "[address]:port"), readable by postgres on the restoring host
        key = (host.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        self.known_hosts = "/var/lib/postgresql/.pgdr-outage-known-hosts-%d" % self.port
        replica.run(["sh", "-c", "umask 022 && cat > %s" % self.known_hosts], input="[%s]:%d %s %s\n" % (host.address, self.port, key[0], key[1]))
        self.pid = None

    def start(self):
        (self.folder / "sshd.pid").unlink(missing_ok=True)
        self.host.run(["/usr/sbin/sshd", "-f", str(self.folder / "sshd_config"), "-E", str(self.folder / "sshd.log")])
        deadline = time.monotonic() + 10
        while not (self.folder / "sshd.pid").exists():
            assert time.monotonic() < deadline, "the test's sshd did not start"
            time.sleep(0.05)
        self.pid = int((self.folder / "sshd.pid").read_text())

    def stop(self):
        """The listener and every session it started: connections are refused and open ones are cut."""
        if self.pid is None:
            return
        for pid in [self.pid] + descendants(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid = None

    def repository(self, path, lab):
        return dict(lab.sftp_repository(self.host, path), port=self.port, known_hosts=self.known_hosts)

    def remove(self):
        self.stop()
        self.replica.run(["rm", "-f", self.known_hosts])
        self.host.run(["rm", "-rf", str(self.folder)])


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def archive_locally(ansible, pair):
    archive = {"type": "local", "path": pair.wal_path}
    pair.primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", pair.wal_path])
    # an archive name of its own: /etc/pgdr/wal is one folder for every lab on the machine, and the default name
    # (15-main) is every primary15's
    settings = dict(archive_mode="on", archive=archive, archive_name="wal-fetch-%s" % pair.suffix, pg_data=pair.primary.pg_data,
                    **pair.connection(pair.primary))
    ok(ansible.module(pair.primary.name, WAL, dict(settings, restart=True, verify=True), become_postgres=False))
    return settings


def reset_archiving(pair):
    pair.primary.psql("ALTER SYSTEM RESET archive_mode; ALTER SYSTEM RESET archive_command;")
    pair.primary.run([pair.primary.pg_bin_dir + "/pg_ctl", "-D", pair.primary.pg_data, "-l", "/var/lib/postgresql/%d/postgresql.log"
                      % pair.primary.major, "-w", "restart", "-m", "fast"], user="postgres")


SEGMENTS = 40  # more than the read-ahead's window (16): recovery must come back to the store during the outage
OUTAGE = 6.0  # seconds the store is down: well within the retry window (60 s), far longer than a segment's replay


@ON_PG15
def test_a_store_down_for_seconds_during_recovery_does_not_end_it_early(ansible, lab, wal_pair15):
    pair = wal_pair15
    sshd = ExtraSshd(pair.primary, pair.replica)
    settings = archive_locally(ansible, pair)
    try:
        sshd.start()
        made = ok(base_backup(ansible, pair, pair.backup1, {"type": "local", "path": pair.repo_path}, format="tar", wal_method="none"))
        pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
        pair.primary.psql("CREATE TABLE t (n int)", db=pair.db)
        for n in range(1, SEGMENTS + 1):
            pair.primary.psql("INSERT INTO t VALUES (%d); SELECT pg_switch_wal();" % n, db=pair.db)
        pair.primary.psql("SELECT pg_create_restore_point('after_all')")
        pair.primary.psql("INSERT INTO t VALUES (%d); SELECT pg_switch_wal();" % (SEGMENTS + 1), db=pair.db)
        ok(ansible.module(pair.primary.name, WAL, dict(settings, verify=True), become_postgres=False))  # all archived

        spool = "/var/spool/pgdr/restore-%s" % pair.cluster
        outage = {}

        def cut_the_store():
            # as soon as recovery has fetched its first segment through pgdr-wal (.served), for OUTAGE seconds
            deadline = time.monotonic() + 300
            while pair.replica.run(["test", "-e", spool + "/.served"], check=False).returncode != 0:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            sshd.stop()
            outage["down"] = time.monotonic()
            time.sleep(OUTAGE)
            sshd.start()
            outage["up"] = time.monotonic()

        cutter = threading.Thread(target=cut_the_store, daemon=True)
        cutter.start()
        done = restore(ansible, pair, pair.sftp(pair.backup1, pair.repo_path), archive=sshd.repository(pair.wal_path, lab),
                       recovery_target_name="after_all")
        finished = time.monotonic()
        cutter.join(OUTAGE + 30)
        ok(done)
        assert "down" in outage and "up" in outage, "the store was never cut during the restore"
        assert finished > outage["up"], "the restore ended before the store came back: the outage did not overlap recovery"
        assert done["backup_id"] == made["backup_id"] and done["state"] == "promoted"
        # the exact target: every row inserted before the restore point, none after
        assert pair.rows(pair.replica) == ",".join(str(n) for n in range(1, SEGMENTS + 1))
        assert done["wal_files_restored"] >= SEGMENTS
        # the read-ahead saw the store fail and carried on
        spool_log = pair.replica.run(["cat", spool + "/.prefetch.log"], check=False).stdout
        assert "paused:" in spool_log, spool_log
    finally:
        sshd.remove()
        reset_archiving(pair)
        pair.primary.run(["rm", "-f", "/etc/pgdr/wal/wal-fetch-%s.json" % pair.suffix])


def test_a_compressed_streaming_archive_restores_to_an_exact_target(ansible, wal_pair):
    pair = wal_pair
    slot = "pgdr_" + pair.suffix
    receiver = dict(state="present", directory=pair.wal_path, slot=slot, compress=5)
    connection = dict(pg_bin_dir=pair.primary.pg_bin_dir, **pair.connection(pair.primary))
    ok(ansible.module(pair.backup1.name, WAL, dict(receiver=receiver, **connection), become_postgres=False))
    try:
        made = ok(base_backup(ansible, pair, pair.backup1, {"type": "local", "path": pair.repo_path}, format="tar", wal_method="none"))
        pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
        pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2), (3);", db=pair.db)
        pair.primary.psql("SELECT pg_switch_wal()")
        pair.primary.psql("INSERT INTO t VALUES (4)", db=pair.db)
        pair.primary.psql("SELECT pg_create_restore_point('before_five')")
        pair.primary.psql("INSERT INTO t VALUES (5)", db=pair.db)
        target_segment = pair.primary.psql("SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
        pair.primary.psql("SELECT pg_switch_wal()")
        pair.primary.psql("INSERT INTO t VALUES (6)", db=pair.db)  # after the target: must not be restored
        deadline = time.monotonic() + 60
        while target_segment + ".gz" not in pair.backup1.run(["ls", pair.wal_path]).stdout.split():
            assert time.monotonic() < deadline, "pg_receivewal did not finish %s.gz" % target_segment
            time.sleep(0.3)
        listing = pair.backup1.run(["ls", pair.wal_path]).stdout.split()
        # only compressed segments: every one recovery reads must be decompressed by pgdr-wal
        assert not [name for name in listing if len(name) == 24], listing

        done = ok(restore(ansible, pair, pair.sftp(pair.backup1, pair.repo_path), archive=pair.sftp(pair.backup1, pair.wal_path),
                          recovery_target_name="before_five"))
        assert done["backup_id"] == made["backup_id"] and done["state"] == "promoted"
        assert pair.rows(pair.replica) == "1,2,3,4"
        assert done["wal_files_restored"] >= 2
    finally:
        ok(ansible.module(pair.backup1.name, WAL, dict(receiver=dict(receiver, state="absent"), **connection), become_postgres=False))
    assert pair.primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s" % literal(slot)).strip() == "0"
