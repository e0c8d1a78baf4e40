"""Side by side with pgBackRest (Debian's 2.45): full backup, restore, WAL push and WAL replay, same cluster, same host, one run.

BENCH_HOST (primary15) is the source, backup1 the repository host, the replica host of BENCH_HOST the restore target (its own
data directory moved aside for the bench and put back after). Compression: lz4 level 1 on both sides, on the PostgreSQL host
(the pg_basebackup module with ``location: server``; pgBackRest compresses on the PostgreSQL host when it backs up from a
repository host). pgdr-wal does not compress WAL; pgBackRest's WAL is lz4 like its backups.

- backup: the ``pg_basebackup`` module on backup1 into a local repository there (tar, WAL streamed, fast checkpoint, module
  defaults otherwise, so ``verify: true``), against ``pgbackrest backup --type=full`` on backup1 (repository host) reading
  BENCH_HOST through its TLS server, ``process-max`` 2 (the ratio) and 1 (a note);
- restore: ``restore_cluster`` from the set over SFTP on backup1 (module defaults: ``verify: true``) against ``pgbackrest
  restore --type=immediate --target-action=promote`` + ``pg_ctl start`` + waiting until recovery ended, ``process-max`` 2 and 1;
- WAL push (once): archiving copies every segment into a staging folder as well; the same staged segments are then pushed one
  process per segment, as PostgreSQL's archiver calls archive_command, with pgdr-wal's archive_command (SFTP archive on backup1)
  and with ``pgbackrest archive-push`` into a second, empty stanza;
- WAL replay (once): ``restore_cluster`` of the pgdr set replaying that SFTP archive with pgdr-wal's restore_command, against
  ``pgbackrest restore`` (to the end of the archive) with ``archive-async=y`` (spool on the replica host, ``process-max`` 2);
  seconds of recovery over the segments restored from the archive (PostgreSQL's "restored log file" lines).

The transport is pgBackRest's TLS server (``tls_transport``), the alternative to SSH its user guide documents since 2.37: it
needs no SSH keys between the postgres users and leaves the lab's sshd alone. Every pgBackRest file (configuration,
certificates, repository, spool, logs, locks) lives in one folder per host under /var/backups, private to each lab host,
passed with ``--config-path``; everything is removed at the end, failed or not.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from bench import dataset
from bench.playbook import PROJECT_DIR
from tests.lab.hosts import nsenter

PGBACKREST = "/usr/bin/pgbackrest"
BASE = "pgdr.backup.pg_basebackup"
RESTORE = "pgdr.backup.restore_cluster"
WAL = "pgdr.backup.wal_archive_config"
BACKUP_HOST = "backup1"
TLS_PORT = 8432
STANZA = "bench"  # backups, and the archive archive_command fills
PUSH_STANZA = "benchpush"  # empty before the timed archive-push, so no segment is already there
COMPRESSION = {"method": "lz4", "level": 1, "location": "server"}
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
RESTORED_RE = re.compile(r'restored log file "[0-9A-F]{24}" from archive')


def config_text(sections):
    """pgbackrest.conf from {section: [(option, value), ...]} (a list: an option such as tls-server-auth may repeat)."""
    out = []
    for section, options in sections.items():
        out.append("[%s]" % section)
        out += ["%s=%s" % (option, value) for option, value in options]
        out.append("")
    return "\n".join(out)


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)


def make_certificates(hosts):
    """A throwaway CA and one certificate per host (CN = host name, SAN = its name and address); {file name: PEM text}."""
    pem = {}
    with tempfile.TemporaryDirectory(prefix="pgdr-bench-tls-") as tmp:
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                 "-subj", "/CN=pgdr-bench-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=tmp)
        for host in hosts:
            with open(os.path.join(tmp, host.name + ".ext"), "w") as handle:
                handle.write("subjectAltName=DNS:%s,IP:%s\nextendedKeyUsage=serverAuth,clientAuth\n" % (host.name, host.address))
            _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=%s" % host.name,
                     "-keyout", host.name + ".key", "-out", host.name + ".csr", cwd=tmp)
            _openssl("x509", "-req", "-in", host.name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                     "-extfile", host.name + ".ext", "-out", host.name + ".crt", cwd=tmp)
        for name in ["ca.crt"] + [host.name + ext for host in hosts for ext in (".crt", ".key")]:
            with open(os.path.join(tmp, name)) as handle:
                pem[name] = handle.read()
    return pem


class Transport:
    """pgBackRest between lab hosts over its TLS server: one private folder per host, servers started and stopped by pid."""

    def __init__(self, hosts, root):
        self.hosts = {host.name: host for host in hosts}
        self.root = root  # the same path on every host, private to each (/var/backups is bind-mounted per host)
        self.servers = {}

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def tls_options(self, host_name, prefix):
        """The client options for reaching a TLS server: ``prefix`` is ``repo1-host`` or ``pg1-host``."""
        return [("%s-type" % prefix, "tls"), ("%s-ca-file" % prefix, self.path("tls", "ca.crt")),
                ("%s-cert-file" % prefix, self.path("tls", host_name + ".crt")), ("%s-key-file" % prefix, self.path("tls", host_name + ".key"))]

    def server_options(self, host_name, clients):
        """[global] options of a host that runs a TLS server; ``clients``: {client host: [stanzas]}."""
        options = [("tls-server-address", self.hosts[host_name].address), ("tls-server-port", TLS_PORT),
                   ("tls-server-ca-file", self.path("tls", "ca.crt")), ("tls-server-cert-file", self.path("tls", host_name + ".crt")),
                   ("tls-server-key-file", self.path("tls", host_name + ".key"))]
        return options + [("tls-server-auth", "%s=%s" % (client, ",".join(stanzas))) for client, stanzas in sorted(clients.items())]

    def common_options(self):
        return [("log-path", self.path("log")), ("lock-path", self.path("lock")), ("spool-path", self.path("spool")),
                ("log-level-console", "warn"), ("log-level-file", "info")]

    def write(self, host, name, text):
        host.run(["sh", "-c", "umask 077 && cat > %s" % shlex.quote(self.path(name))], user="postgres", input=text)

    def command(self, *args):
        """A pgbackrest command line for a host's shell, archive_command or restore_command."""
        return " ".join(shlex.quote(part) for part in [PGBACKREST, "--config-path=%s" % self.path("conf"), *args])

    def run(self, host_name, *args, timeout=7200, check=True):
        return self.hosts[host_name].run([PGBACKREST, "--config-path=%s" % self.path("conf"), *args], user="postgres", timeout=timeout,
                                         check=check)

    def start_server(self, host_name):
        host = self.hosts[host_name]
        argv = nsenter(host.holder_pid, ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                                         PGBACKREST, "--config-path=%s" % self.path("conf"), "server"])
        # the commands the server runs for its clients read lock and log paths from the environment, not from its configuration:
        # without these, archive-push's lock lands in /tmp/pgbackrest, which the lab hosts share
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/var/lib/postgresql", "LANG": "C.UTF-8",
               "PGBACKREST_LOCK_PATH": self.path("lock"), "PGBACKREST_LOG_PATH": self.path("log")}
        with open(os.devnull, "wb") as devnull:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=devnull, stderr=devnull, start_new_session=True, env=env)
        self.servers[host_name] = proc
        deadline = time.monotonic() + 15
        probe = "exec 3<>/dev/tcp/%s/%d" % (host.address, TLS_PORT)
        while host.run(["bash", "-c", probe], check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pgbackrest server on %s did not listen on %s:%d (see %s)" % (host_name, host.address, TLS_PORT, self.path("log")))
            time.sleep(0.1)

    def stop(self):
        """Stop the servers this transport started (their own process groups), remove every folder; returns problems."""
        problems = []
        for proc in self.servers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        self.servers = {}
        for name, host in self.hosts.items():
            try:
                host.run(["rm", "-rf", self.root])
            except Exception as exc:  # noqa: BLE001 - every host is cleaned; problems are reported
                problems.append("remove %s on %s: %s" % (self.root, name, exc))
        return problems


def tls_transport(hosts, configs, servers, root):
    """Set up pgBackRest between lab ``hosts`` over TLS: certificates, one configuration per host, servers started.

    ``configs(transport)`` returns {host name: {section: [(option, value), ...]}}, built with the transport's ``tls_options``,
    ``server_options``, ``common_options`` and ``path``; ``servers``: host names that run ``pgbackrest server``. Everything lives
    under ``root`` on each host (private to it in the lab). Returns the Transport; its ``stop()`` undoes it all.
    """
    transport = Transport(hosts, root)
    try:
        pem = make_certificates(hosts)
        for host in hosts:
            host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", root])
            host.run(["sh", "-c", "cd %s && install -d -m 0700 tls conf log lock spool" % shlex.quote(root)], user="postgres")
            for name in ("ca.crt", host.name + ".crt", host.name + ".key"):
                transport.write(host, os.path.join("tls", name), pem[name])
        for host_name, sections in configs(transport).items():
            transport.write(transport.hosts[host_name], "conf/pgbackrest.conf", config_text(sections))
        for name in servers:
            transport.start_server(name)
    except BaseException:
        transport.stop()
        raise
    return transport


def _wal_archive():
    """The collection's own WAL archive code, so the bench's commands are the modules' (as bench/physical_restore.py does)."""
    collections = os.path.join(PROJECT_DIR, ".collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
    from ansible_collections.pgdr.backup.plugins.module_utils.wal import archive

    return archive, typed


def archive_command_string(archive, name):
    """pgdr-wal's archive_command, as wal_archive_config writes it."""
    wal_archive, typed = _wal_archive()
    return wal_archive.archive_command(typed(wal_archive.ArchiveOptions, archive), name)


def restore_command_string(archive, name):
    """pgdr-wal's restore_command as restore_cluster writes it (the module's default read-ahead)."""
    wal_archive, typed = _wal_archive()
    return wal_archive.restore_command_string(typed(wal_archive.ArchiveOptions, archive), name)


class PgBackRestBench:
    def __init__(self, lab, host, playbooks, log, samples, wal_seconds=20):
        self.lab, self.host, self.playbooks, self.log, self.samples = lab, host, playbooks, log, samples
        self.wal_seconds = wal_seconds
        self.backup1 = lab.host(BACKUP_HOST)
        self.replica = next(h for h in lab.hosts.values() if h.upstream == host.name)
        self.suffix = uuid.uuid4().hex[:6]
        self.root = "/var/backups/pgdr-bench-pgbackrest-%s" % self.suffix  # pgBackRest's files, on each of the three hosts
        self.repo_path = "/var/backups/pgdr-bench-pgbr-pgdr-%s" % self.suffix  # the pgdr repository and WAL archive, on backup1
        self.staging = "/var/backups/pgdr-bench-pgbr-staging-%s" % self.suffix  # on BENCH_HOST: the segments archived, for the push
        self.cluster = "bench-pgbr-%s" % host.name
        self.archive_name = "bench-pgbr-%s" % self.suffix
        self.archive = lab.sftp_repository(self.backup1, self.repo_path + "/wal")
        self.saved = self.replica.pg_data + ".bench-saved"
        self.replica_log = "/var/lib/postgresql/%d/pgdr-bench-pgbr.log" % self.replica.major
        self.transport = None
        self.archiving = self.moved = False
        self.pgdr_sets = []
        self.wal_done = False
        self.info = {}

    # ---- set-up -------------------------------------------------------------------------------------------------

    def _configs(self, transport):
        source, replica, repo = self.host.name, self.replica.name, BACKUP_HOST
        # over TLS the repository's path travels with each request: the PostgreSQL hosts name it too
        common = transport.common_options() + [("compress-type", "lz4"), ("compress-level", 1), ("process-max", 2)]
        pg_options = [("pg1-socket-path", self.host.pg_socket_dir), ("pg1-port", self.host.pg_port)]
        return {
            repo: {
                "global": common + transport.server_options(repo, {source: [STANZA, PUSH_STANZA], replica: [STANZA]})
                + [("repo1-path", transport.path("repo")), ("repo1-retention-full", 99), ("start-fast", "y")],
                STANZA: [("pg1-host", source), ("pg1-path", self.host.pg_data)] + transport.tls_options(repo, "pg1-host") + pg_options,
                PUSH_STANZA: [("pg1-host", source), ("pg1-path", self.host.pg_data)] + transport.tls_options(repo, "pg1-host") + pg_options,
            },
            source: {
                "global": common + transport.server_options(source, {repo: [STANZA, PUSH_STANZA]})
                + [("repo1-host", repo), ("repo1-path", transport.path("repo"))] + transport.tls_options(source, "repo1-host"),
                STANZA: [("pg1-path", self.host.pg_data)] + pg_options,
                PUSH_STANZA: [("pg1-path", self.host.pg_data)] + pg_options,
            },
            replica: {
                "global": common + [("repo1-host", repo), ("repo1-path", transport.path("repo")), ("archive-async", "y")]
                + transport.tls_options(replica, "repo1-host"),
                STANZA: [("pg1-path", self.replica.pg_data), ("pg1-socket-path", self.replica.pg_socket_dir), ("pg1-port", self.replica.pg_port)],
            },
        }

    def _pg_ctl(self, host, *args, log_file=None):
        log_file = log_file or "/var/lib/postgresql/%d/postgresql.log" % host.major
        return host.run([host.pg_bin_dir + "/pg_ctl", "-D", host.pg_data, "-l", log_file, "-w", *args], user="postgres", check=False,
                        timeout=600)

    def _connection(self, host):
        return dict(login_host=host.address, login_user="postgres", login_password=self.lab.pg_password)

    def setup(self):
        started = time.monotonic()
        for folder in (self.repo_path, self.repo_path + "/wal"):
            self.backup1.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", folder])
        self.host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.staging])
        self.transport = tls_transport([self.backup1, self.host, self.replica], self._configs, [BACKUP_HOST, self.host.name], self.root)
        # archiving as users set it up: pgdr-wal installed by wal_archive_config (SFTP archive on backup1), then archive_command
        # becomes pgBackRest's (its backups wait for their WAL in its archive), keeping a copy of each segment for the timed pushes
        self.archiving = True
        settings = dict(archive_mode="on", archive=self.archive, archive_name=self.archive_name, pg_data=self.host.pg_data,
                        **self._connection(self.host))
        self.playbooks.run(self.host.name, [{"name": "wal", WAL: settings}], become_postgres=False)
        command = "%s && cp %%p %s/%%f" % (self.transport.command("--stanza=%s" % STANZA, "archive-push", "%p"), self.staging)
        self.host.psql("ALTER SYSTEM SET archive_command = '%s'" % command.replace("'", "''"))
        self._pg_ctl(self.host, "restart", "-m", "fast")
        for stanza in (STANZA, PUSH_STANZA):
            self.transport.run(BACKUP_HOST, "--stanza=%s" % stanza, "stanza-create")
        self.transport.run(BACKUP_HOST, "--stanza=%s" % STANZA, "check")
        # the replica's own cluster is kept aside for the whole bench and put back by cleanup(); prestore or walreplay,
        # which run before this part in a round, may have moved it aside already (and put it back themselves)
        if self.replica.run(["test", "-e", self.replica.pg_data], check=False).returncode == 0:
            self._pg_ctl(self.replica, "stop", "-m", "fast")
            self.replica.run(["mv", self.replica.pg_data, self.saved])
            self.moved = True
        self.info["pgbr_version"] = self.transport.run(BACKUP_HOST, "version").stdout.split()[-1]
        self.info["pgbr_settings"] = "transport tls, compress-type lz4, compress-level 1, process-max 2 (and 1), archive-async y on the restore host"
        self.log("  pgBackRest %s: TLS servers on %s and %s, stanzas created, archiving on (%.1f s)"
                 % (self.info["pgbr_version"], BACKUP_HOST, self.host.name, time.monotonic() - started))

    # ---- steps ----------------------------------------------------------------------------------------------------

    def pgdr_backup(self, round_no):
        backup_id = "r%d" % round_no
        task = dict(cluster=self.cluster, backup_id=backup_id, format="tar", wal_method="stream", checkpoint="fast", compression=COMPRESSION,
                    repository={"type": "local", "path": self.repo_path}, **self._connection(self.host))
        wall, results = self.playbooks.run(BACKUP_HOST, [{"name": "base", BASE: task}])
        self.samples.add("pgbr_pgdr_backup", wall)
        self.samples.add("pgbr_pgdr_backup_duration", results["base"]["duration"])
        folder = "%s/%s/%s" % (self.repo_path, self.cluster, backup_id)
        self.samples.add("pgbr_pgdr_backup_bytes", int(self.backup1.run(["du", "-sb", folder]).stdout.split()[0]))
        self.pgdr_sets.append(backup_id)

    def pgbackrest_backup(self, process_max):
        started = time.monotonic()
        self.transport.run(BACKUP_HOST, "--stanza=%s" % STANZA, "--type=full", "--process-max=%d" % process_max, "backup")
        self.samples.add("pgbr_backup_pm%d" % process_max, time.monotonic() - started)
        newest = "ls -1d %s/backup/%s/*F | tail -1 | xargs du -sb" % (self.transport.path("repo"), STANZA)
        self.samples.add("pgbr_backup_pm%d_bytes" % process_max, int(self.backup1.run(["sh", "-c", newest]).stdout.split()[0]))

    def _clear_target(self):
        self._pg_ctl(self.replica, "stop", "-m", "immediate")
        self.replica.run(["rm", "-rf", self.replica.pg_data])

    def _wait_recovered(self):
        until = "until [ \"$(%s/psql -h %s -XAtc 'SELECT pg_is_in_recovery()')\" = f ]; do sleep 0.1; done" % (
            self.replica.pg_bin_dir, self.replica.pg_socket_dir)
        self.replica.run(["timeout", "3600", "sh", "-c", until], user="postgres", timeout=3700)

    def pgbackrest_restore(self, process_max, replay=False):
        """pgbackrest restore of the newest backup + start + end of recovery; returns (restore s, start and recovery s, segments)."""
        self.replica.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.replica.pg_data])
        target = [] if replay else ["--type=immediate", "--target-action=promote"]
        started = time.monotonic()
        self.transport.run(self.replica.name, "--stanza=%s" % STANZA, "--process-max=%d" % process_max, "--archive-mode=off", *target, "restore")
        restored = time.monotonic()
        if "pgbr_restore_command" not in self.info:  # what pgBackRest wrote, to show it reaches its own configuration
            auto_conf = self.replica.run(["cat", self.replica.pg_data + "/postgresql.auto.conf"]).stdout
            self.info["pgbr_restore_command"] = next((line for line in auto_conf.splitlines() if line.startswith("restore_command")), None)
        self.replica.run(["rm", "-f", self.replica_log])
        self._pg_ctl(self.replica, "start", log_file=self.replica_log)
        self._wait_recovered()
        ended = time.monotonic()
        segments = len(RESTORED_RE.findall(self.replica.run(["cat", self.replica_log]).stdout))
        self._clear_target()
        return restored - started, ended - restored, segments

    def pgdr_restore(self, backup_id, **args):
        task = dict(cluster=self.cluster, backup_id=backup_id, pg_data=self.replica.pg_data, force=True,
                    repository=self.lab.sftp_repository(self.backup1, self.repo_path), **self._connection(self.replica), **args)
        wall, results = self.playbooks.run(self.replica.name, [{"name": "restore", RESTORE: task}], become_postgres=False)
        self._clear_target()
        return wall, results["restore"]

    def restores(self, round_no):
        wall, result = self.pgdr_restore(self.pgdr_sets[-1])
        self.samples.add("pgbr_pgdr_restore", wall)
        self.samples.add("pgbr_pgdr_restore_total", result["timings"]["total_seconds"])
        for process_max in (2, 1):
            files, recovery, _segments = self.pgbackrest_restore(process_max)
            self.samples.add("pgbr_restore_pm%d" % process_max, files + recovery)
            self.samples.add("pgbr_restore_pm%d_files" % process_max, files)
            self.samples.add("pgbr_restore_pm%d_recovery" % process_max, recovery)

    def wal(self):
        """Once per bench: pgbench writes WAL, the staged segments are pushed both ways, then replayed both ways."""
        dataset.open_(self.host)
        try:
            self.host.run([self.host.pg_bin_dir + "/pgbench", "-h", self.host.pg_socket_dir, "-n", "-c", "4", "-j", "2", "-T", str(self.wal_seconds),
                           dataset.DATABASE], user="postgres", timeout=600)
        finally:
            dataset.park(self.host)
        last = self.host.psql("SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
        self.host.psql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 300
        while self.host.psql("SELECT last_archived_wal >= '%s' FROM pg_stat_archiver" % last).strip() != "t":
            if time.monotonic() > deadline:
                raise RuntimeError("segment %s was not archived within 300 s" % last)
            time.sleep(0.2)
        names = sorted(n for n in self.host.run(["ls", self.staging]).stdout.split() if SEGMENT_RE.match(n))
        self.info["pgbr_wal_segments_pushed"] = len(names)
        pgdr_push = archive_command_string(self.archive, self.archive_name)
        pgbr_push = self.transport.command("--stanza=%s" % PUSH_STANZA, "archive-push", "%p")
        for key, command in (("pgbr_pgdr_wal_push", pgdr_push), ("pgbr_wal_push", pgbr_push)):
            script = "cd %s && for f in %s; do %s || exit 1; done" % (
                self.staging, " ".join(names), command.replace("%p", "%s/$f" % self.staging).replace("%f", "$f"))
            started = time.monotonic()
            self.host.run(["sh", "-c", script], user="postgres", timeout=7200)
            self.samples.add(key + "_per_segment", (time.monotonic() - started) / max(1, len(names)))
        # replay: the pgdr set of round 1 through the SFTP archive the pushes filled, and pgBackRest's newest backup to the archive's end
        wall, result = self.pgdr_restore(self.pgdr_sets[0], archive=self.archive)
        self.samples.add("pgbr_pgdr_replay_segments", result["wal_files_restored"])
        self.samples.add("pgbr_pgdr_replay_seconds", result["timings"]["recovery_seconds"])
        _files, recovery, segments = self.pgbackrest_restore(2, replay=True)
        self.samples.add("pgbr_replay_segments", segments)
        self.samples.add("pgbr_replay_seconds", recovery)
        self.info["pgbr_pgdr_restore_command"] = restore_command_string(self.archive, "restore-%s" % self.cluster)

    def run_round(self, round_no):
        if self.transport is None:
            self.setup()
        steps = [
            ("pg_basebackup module lz4 (server)", lambda: self.pgdr_backup(round_no)),
            ("pgbackrest backup --type=full process-max 2", lambda: self.pgbackrest_backup(2)),
            ("pgbackrest backup --type=full process-max 1", lambda: self.pgbackrest_backup(1)),
            ("restore_cluster SFTP; pgbackrest restore process-max 2 and 1", lambda: self.restores(round_no)),
        ]
        if not self.wal_done:
            steps.append(("WAL push and replay", self.wal))
            self.wal_done = True
        for label, step in steps:
            started = time.monotonic()
            step()
            self.log("  round %d: pgbackrest: %s (%.1f s)" % (round_no, label, time.monotonic() - started))

    def cleanup(self):
        problems = []
        steps = []
        if self.archiving:
            steps += [
                ("reset archiving on %s" % self.host.name, lambda: self.host.psql("ALTER SYSTEM RESET archive_mode; ALTER SYSTEM RESET archive_command;")),
                ("restart %s" % self.host.name, lambda: self._pg_ctl(self.host, "restart", "-m", "fast")),
                ("remove pgdr-wal's configuration", lambda: self.host.run(["rm", "-f", "/etc/pgdr/wal/%s.json" % self.archive_name])),
                ("remove the restore's pgdr-wal configuration",
                 lambda: self.replica.run(["rm", "-f", "/etc/pgdr/wal/restore-%s.json" % self.cluster])),
            ]
        if self.moved:
            steps.append(("put %s's cluster back" % self.replica.name, self._put_back))
        if self.transport:
            steps.append(("stop pgBackRest", lambda: problems.extend(self.transport.stop())))
        steps += [
            ("remove the pgdr repository on %s" % BACKUP_HOST, lambda: self.backup1.run(["rm", "-rf", self.repo_path])),
            ("remove the staging folder", lambda: self.host.run(["rm", "-rf", self.staging])),
            ("remove the replica's log", lambda: self.replica.run(["rm", "-f", self.replica_log])),
        ]
        for label, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - every cleanup step runs; problems are reported
                problems.append("%s: %s" % (label, exc))
        return problems

    def _put_back(self):
        self._clear_target()
        self.replica.run(["mv", self.saved, self.replica.pg_data])
        self._pg_ctl(self.replica, "start")
