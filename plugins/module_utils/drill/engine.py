# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One restore drill on the drill host (what module restore_drill runs): select a set, restore it into a scratch
cluster beside what runs there, prove it, measure it, remove it.

Invariants:

- Nothing that runs on the drill host is stopped, replaced or written: the scratch cluster has its own folder and
  port (drill.scratch.Place) and takes local connections only.
- On the source (the primary) a drill writes only marker rows in ``pgdr_drill.markers`` and, for the pitr drill,
  one physical slot of its own; both are removed at cleanup, and by the next run if a drill was interrupted.
  WAL a drill receives goes into its own folder, never into the production archive (the restored copy runs with
  archive_mode off).
- A drill that fails still returns a whole drill result (the report's DrillResult) with the reason in one line:
  a fleet run reports every host. Only bad input raises (PgdrError) before anything is made.
- RTO is measured from the set selected to the restored cluster verified; RPO is the reference time minus the
  commit time of the newest transaction the restore recovered (docs/restore-drills.md says which reference each
  drill uses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import subprocess
import time
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import catalog
from ansible_collections.pgdr.backup.plugins.module_utils.core.binaries import find_binary
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import ConnectionOptions, ConnectionParams, connection_argument_spec, passfile_escape
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed, with_defaults
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import server_version
from ansible_collections.pgdr.backup.plugins.module_utils.drill import proof
from ansible_collections.pgdr.backup.plugins.module_utils.drill.report import DRILLS, DrillResult, utc_text
from ansible_collections.pgdr.backup.plugins.module_utils.drill.scratch import Place, complete_config, stop_receiver
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set
from ansible_collections.pgdr.backup.plugins.module_utils.logical.restore import LogicalRestore, LogicalRestoreOptions
from ansible_collections.pgdr.backup.plugins.module_utils.physical import base_set
from ansible_collections.pgdr.backup.plugins.module_utils.physical.restore import BaseSetRestore, BaseSetRestoreOptions
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions, open_repository, storage_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import ArchiveOptions, archive_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.wal.receiver import libpq_env, receivewal_argv

LATEST_KINDS = ("base", "logical")
LOGICAL_SET_KINDS = ("logical-db", "logical-cluster")
RECEIVER_WAIT = 60  # seconds for pg_receivewal to stream, and to flush what the drill wrote


@dataclasses.dataclass(frozen=True)
class DrillOptions:
    """restore_drill's options besides the source connection (the login_* options), typed."""

    drill: str
    cluster: Optional[str]  # the name the sets are filed under; also the report's cluster
    source_host: Optional[str]
    drill_host: Optional[str]
    database: Optional[str]  # the logical drill's database
    repository: Optional[RepositoryOptions]  # latest: where the newest set is
    archive: Optional[ArchiveOptions]  # latest base: the WAL archive it recovers through
    latest_kind: str
    passphrase: Optional[str]
    drill_dir: str
    port: int
    pg_bin_dir: Optional[str]
    os_user: str
    heapallindexed: bool
    keep: bool
    recovery_timeout: int


def argument_spec():
    spec = connection_argument_spec()
    spec.update(storage_argument_spec())
    spec["repository"] = dict(spec["repository"], required=False)
    spec.update(archive_argument_spec())
    spec.update(
        drill=dict(type="str", required=True, choices=list(DRILLS)),
        cluster=dict(type="str"),
        source_host=dict(type="str"),
        drill_host=dict(type="str"),
        database=dict(type="str"),
        latest_kind=dict(type="str", default="base", choices=list(LATEST_KINDS)),
        passphrase=dict(type="str", no_log=True),
        drill_dir=dict(type="path", default="/var/lib/postgresql/pgdr-drill"),
        port=dict(type="int", default=5499),
        pg_bin_dir=dict(type="path"),
        os_user=dict(type="str", default="postgres"),
        heapallindexed=dict(type="bool", default=False),
        keep=dict(type="bool", default=False),
        recovery_timeout=dict(type="int", default=600),
    )
    return spec


ARGUMENT_RELATIONS = dict(required_if=[("drill", "latest", ("repository", "cluster"))])


def options_from(params):
    return typed(DrillOptions, params), typed(ConnectionOptions, params)


def check_options(options, connection):
    """Bad input in one line, before anything is made."""
    if options.drill != "latest" and not connection.login_host:
        raise PgdrError("drill %s takes a new backup of the source: give login_host (and login_user, login_password) of the primary"
                        % options.drill)
    if options.drill == "latest" and options.latest_kind == "base" and options.archive is None:
        raise PgdrError("drill latest of a base set recovers through the WAL archive to its end: give archive (as the cluster archives)")
    if not 1024 <= options.port <= 65535:
        raise PgdrError("port %d is not a port a scratch server can use: choose one from 1024 to 65535 that nothing on the drill host uses"
                        % options.port)
    if options.recovery_timeout < 1:
        raise PgdrError("recovery_timeout must be at least 1 second")


class ScratchBaseSetRestore(BaseSetRestore):
    """A base set restored for a drill: the same deploy, checks and recovery as restore_cluster's, plus the configuration
    files a Debian-layout source kept outside its data directory (without postgresql.conf no server starts)."""

    config_written = ()

    def prepare(self, plan, timings):
        super().prepare(plan, timings)
        self.config_written = complete_config(self.new_dir, self.options.os_user)


# --- measuring ---------------------------------------------------------------------------------------------


class DrillFailed(Exception):
    """A drill that ran and did not prove the restore: the reason is reported, not raised to Ansible."""


class Phases:
    """The phases of a drill with their times; a phase left by an exception is recorded as failed."""

    def __init__(self):
        self.items = []

    @contextlib.contextmanager
    def phase(self, name):
        started = time.monotonic()
        entry = dict(name=name, seconds=0.0, result="ok")
        self.items.append(entry)
        try:
            yield entry
        except BaseException:
            entry["result"] = "failed"
            raise
        finally:
            entry["seconds"] = round(time.monotonic() - started, 3)

    def skip(self, name):
        self.items.append(dict(name=name, seconds=0.0, result="skipped"))


def slot_name(drill_host, cluster):
    """The pitr drill's slot on the source: one per drill host and cluster, so a rerun finds an interrupted one's."""
    return "pgdr_drill_%s" % hashlib.sha256(("%s|%s" % (drill_host, cluster)).encode()).hexdigest()[:16]


def marker_prefix(drill_host, cluster, drill):
    return "%s/%s/%s/" % (drill_host, cluster, drill)


def rpo(reference, recovered):
    """Seconds of commits lost: ``reference`` minus the newest commit recovered (never below 0: clocks of two hosts)."""
    if recovered is None:
        return None
    return round(max(0.0, reference - recovered), 3)


def set_facts(manifest, repository, now):
    """The report's ``set`` of a manifest."""
    size = sum(int(entry.get("size") or 0) for entry in manifest.get("files", []))
    finished = moment(manifest, "finished_at")
    return dict(backup_id=manifest["backup_id"], kind=manifest["kind"], size_bytes=size,
                age_seconds=round(max(0.0, now - finished), 3) if finished else None, repository=repository)


def moment(manifest, key):
    """A manifest's time (started_at: a dump's snapshot; finished_at: a base backup's end) as epoch seconds, or None."""
    return backup_set.parse_iso_utc(manifest[key]).timestamp() if manifest.get(key) else None


def repository_text(options):
    if options is None:
        return ""
    if options.type == "s3":
        return "s3://%s/%s" % (options.bucket, options.prefix or "")
    if options.type == "sftp":
        return "sftp://%s%s" % (options.host, options.path)
    return "local:%s" % options.path


# --- the drill ------------------------------------------------------------------------------------------------


class Drill:
    """One drill of ``options.drill``; ``run()`` returns the module's result with the drill result in ``drill``."""

    def __init__(self, options, connection):
        check_options(options, connection)
        self.options = options
        self.connection = connection  # the source's login options, passed on as they came to dump_set and base_set
        self.source = ConnectionParams(connection) if connection.login_host else None
        self.cluster = options.cluster or (connection.login_host if connection.login_host else None)
        backup_set.validate_cluster_name(self.cluster)
        self.drill_host = options.drill_host or socket.gethostname()
        self.source_host = options.source_host or connection.login_host or self.cluster
        self.place = Place(options.drill_dir, "%s-%s" % (self.cluster, options.drill), options.port, options.os_user)
        self.phases = Phases()
        self.verified = []
        self.set = None
        self.rto = None
        self.rpo = None
        self.token = "%d-%d" % (int(time.time()), os.getpid())
        self.prefix = marker_prefix(self.drill_host, self.cluster, options.drill)
        self.drill_id = self.prefix + self.token
        self.slot = slot_name(self.drill_host, self.cluster)
        self.scratch = None  # the Cluster of the scratch server, once it runs
        self.source_conn = None
        self.started = None  # epoch seconds when run() began: the "now" of a drill of existing sets

    # --- the parts each drill shares ------------------------------------------------------------------------

    def _source(self):
        if self.source_conn is None:
            self.source_conn = self.source.connect(autocommit=True)
        return self.source_conn

    def _check(self, item):
        self.verified.append(item)
        if not item["ok"]:
            raise DrillFailed(item["detail"])

    def _scratch_params(self, dbname="postgres"):
        return ConnectionParams(typed(ConnectionOptions, dict(login_host=self.place.socket_dir, login_port=self.options.port,
                                                              login_user=self.options.os_user, login_db=dbname)))

    def _connect_scratch(self, dbname="postgres"):
        return self._scratch_params(dbname).connect(autocommit=True)

    def _local_repository(self):
        return dict(type="local", path=self.place.sets_dir)

    def _local_repository_options(self):
        return typed(RepositoryOptions, with_defaults(storage_argument_spec()["repository"]["options"], self._local_repository()))

    def _set_cluster(self):
        # the drill's own sets are filed apart from the production ones, as is the restore_command config they use
        return "%s-drill" % self.cluster

    # --- select ---------------------------------------------------------------------------------------------

    def _take_base(self, connection, wal_method):
        given = dict(connection, repository=self._local_repository(), cluster=self._set_cluster(), format="tar", wal_method=wal_method,
                     checkpoint="fast", verify=False, pg_bin_dir=self.options.pg_bin_dir)
        params = with_defaults(base_set.argument_spec(), given)
        options, conn, repository = base_set.options_from(params)
        return base_set.run(options, conn, repository, check_mode=False)["manifest"]

    def _take_dump(self, connection):
        given = dict(connection, repository=self._local_repository(), cluster=self._set_cluster(), mode="database",
                     database=self.options.database, format="custom", pg_bin_dir=self.options.pg_bin_dir)
        params = with_defaults(dump_set.argument_spec(), given)
        options, conn, repository = dump_set.options_from(params)
        return dump_set.run(options, conn, repository, check_mode=False)["manifest"]

    def _newest_set(self, kinds):
        with contextlib.closing(open_repository(self.options.repository)) as repo:
            entries = [entry for entry in catalog.list_catalog(repo, self.cluster, time.time()) if entry.get("complete")]
            chosen = catalog.select(entries, kinds=list(kinds))
            if not chosen:
                raise DrillFailed("no complete %s set of cluster %s in %s: take one first (pgdr.backup.backup role)"
                                  % (" or ".join(kinds), self.cluster, repository_text(self.options.repository)))
            newest = max(chosen, key=catalog.entry_time)
            return backup_set.load_manifest(repo, self.cluster, newest["backup_id"])

    # --- restore --------------------------------------------------------------------------------------------

    def _restore_base(self, repository, set_cluster, manifest, archive, target):
        values = dict(
            recovery_target=None, recovery_target_time=None, recovery_target_xid=None, recovery_target_lsn=None, recovery_target_name=None,
            recovery_target_inclusive=None, recovery_target_timeline=None, recovery_target_action="promote",
            pg_data=self.place.pg_data, service_manager="pg_ctl", service_name=None, server_log=self.place.server_log, os_user=self.options.os_user,
            backup_id=manifest["backup_id"], pg_bin_dir=self.options.pg_bin_dir, login_host=self.place.socket_dir, login_port=self.options.port,
            force=False, keep_previous=False, standby=None, archive_mode="off", server_settings=self.place.server_settings(),
            tablespace_mapping=None, recovery_timeout=self.options.recovery_timeout, start_timeout=120,
            cluster=set_cluster, verify=True, archive=archive, encryption=dict(passphrase=self.options.passphrase) if self.options.passphrase else None,
        )
        values.update(target)
        options = typed(BaseSetRestoreOptions, values)
        with contextlib.closing(open_repository(repository)) as repo:
            engine = ScratchBaseSetRestore.from_options(options, self._scratch_params(), repo, manifest)
            self.scratch = engine.server
            try:
                return engine.run(check_mode=False)
            finally:
                if engine.config_written:  # said whether the restore passed or not: it explains a server that would not start
                    self.verified.append(proof.check("configuration", True, "%s not in the set (kept outside the data directory): written "
                                                     "empty for the scratch server" % ", ".join(engine.config_written)))

    def _restore_logical(self, repository, set_cluster, manifest):
        major = manifest["source"]["major"]
        bin_dir = os.path.dirname(find_binary("pg_ctl", major, self.options.pg_bin_dir, min_major=major)[0]) if self.options.pg_bin_dir is None \
            else self.options.pg_bin_dir
        self.scratch = self.place.initdb(bin_dir)
        options = typed(LogicalRestoreOptions, dict(
            cluster=set_cluster, backup_id=manifest["backup_id"], database=None, databases=None, globals=True, if_exists="rename",
            keep_previous=False, verify=True, analyze=False, no_owner=True, no_privileges=True,
            encryption=dict(passphrase=self.options.passphrase) if self.options.passphrase else None, pg_bin_dir=bin_dir, tables=None,
            schemas=None, conflict="error", jobs=None, terminate_sessions=False, tablespace_mapping=None, globals_tablespaces="skip",
            session_role=None))
        params = self._scratch_params()
        with contextlib.closing(open_repository(repository)) as repo, contextlib.closing(params.connect(autocommit=True)) as admin:
            return LogicalRestore(options, params, repo, manifest, admin).run(check_mode=False)

    # --- proof ----------------------------------------------------------------------------------------------

    def _prove_cluster(self, expected_identifier, what):
        """What every physical drill proves of the restored cluster."""
        with contextlib.closing(self._connect_scratch()) as conn:
            names = proof.databases(conn)
            self._check(proof.identity_check(proof.system_identifier(conn), expected_identifier, what))
        self._check(proof.tables_readable(self._connect_scratch, names))
        self._check(proof.amcheck(self.scratch.bin_dir, self.place.connection(), self.options.heapallindexed, self.scratch.as_owner))

    def _newest_replayed(self):
        with contextlib.closing(self._connect_scratch()) as conn:
            value = conn.execute("SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8").fetchone()[0]
        return float(value) if value is not None else None

    def _markers(self, dbname, expected, absent):
        with contextlib.closing(self._connect_scratch(dbname)) as conn:
            present = proof.markers_present(conn, self.drill_id)
        self._check(proof.marker_check(present, expected, absent))
        return present

    def _source_identifier(self):
        return proof.system_identifier(self._source())

    # --- the four drills ------------------------------------------------------------------------------------

    def _logical(self):
        if self.options.drill == "logical":
            with self.phases.phase("select"):
                manifest = self._take_dump(self._connection_params())
                repository, set_cluster = self._local_repository_options(), self._set_cluster()
            reference = time.time()
        else:
            with self.phases.phase("select"):
                manifest = self._newest_set(LOGICAL_SET_KINDS)
                repository, set_cluster = self.options.repository, self.cluster
            reference = self.started
        self.set = set_facts(manifest, repository_text(repository), self.started)
        selected = time.monotonic()
        self.phases.skip("fetch")  # read back and checked against the manifest as the restore loads it
        with self.phases.phase("deploy"):
            restored = self._restore_logical(repository, set_cluster, manifest)
        self.phases.skip("recovery")
        with self.phases.phase("verify"):
            verifications = [db.get("verification") or {} for db in restored["databases"]]
            if not verifications or not all(item.get("verified") for item in verifications):
                raise DrillFailed("the restore did not verify every database against the manifest: %s" % restored["databases"])
            tables = sum(int(item.get("tables") or 0) for item in verifications)
            self._check(proof.check("fingerprints", True, "%s in %s: row counts and fingerprints equal the manifest's"
                                    % (proof.plural(tables, "table"), proof.plural(len(restored["databases"]), "database")), tables=tables))
            with contextlib.closing(self._connect_scratch()) as conn:
                names = proof.databases(conn)
            self._check(proof.tables_readable(self._connect_scratch, names))
        self.rto = round(time.monotonic() - selected, 3)
        self.rpo = rpo(reference, moment(manifest, "started_at"))

    def _standalone(self):
        dbname = self._marker_db()
        with self.phases.phase("select"):
            proof.ensure_markers(self._source())
            proof.write_marker(self._source(), self.drill_id, "before")
            manifest = self._take_base(self._connection_params(), "stream")
            after, _lsn = proof.write_marker(self._source(), self.drill_id, "after")
        repository = self._local_repository_options()
        self.set = set_facts(manifest, repository_text(repository), time.time())
        selected = time.monotonic()
        self.phases.skip("fetch")  # streamed from the repository into the data directory while it is deployed
        self._physical(repository, self._set_cluster(), manifest, None, dict(recovery_target="immediate"))
        with self.phases.phase("verify"):
            present = self._markers(dbname, ["before"], ["after"])
            self._prove_cluster(self._source_identifier(), "the source's")
        self.rto = round(time.monotonic() - selected, 3)
        self.rpo = rpo(after, max(filter(None, [self._newest_replayed(), present.get("before")])))

    def _pitr(self):
        dbname = self._marker_db()
        target_name = "pgdr_drill_%s" % self.token.replace("-", "_")
        with self.phases.phase("select"):
            source = self._source()
            proof.ensure_markers(source)
            self._start_receiver()
            manifest = self._take_base(self._connection_params(), "none")
            proof.write_marker(source, self.drill_id, "before")
            target_lsn = source.execute("SELECT pg_create_restore_point(%s)::text", (target_name,)).fetchone()[0]
            target_time = time.time()
            proof.write_marker(source, self.drill_id, "after")
            self._wait_flushed(source.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
            stop_receiver(self.place.receiver_pid_file)
            segment = source.execute("SELECT pg_walfile_name(%s::pg_lsn)", (target_lsn,)).fetchone()[0]
        repository = self._local_repository_options()
        self.set = set_facts(manifest, repository_text(repository), time.time())
        partial = os.path.exists(os.path.join(self.place.wal_dir, segment + ".partial"))
        self._check(proof.check("partial_segment", partial, "the target %s (%s) lies in %s.partial, the segment pg_receivewal was still writing%s"
                                % (target_name, target_lsn, segment, "" if partial else ": not found in the received WAL")))
        archive = typed(ArchiveOptions, with_defaults(archive_argument_spec()["archive"]["options"], dict(type="local", path=self.place.wal_dir)))
        selected = time.monotonic()
        self.phases.skip("fetch")
        self._physical(repository, self._set_cluster(), manifest, archive, dict(recovery_target_name=target_name))
        with self.phases.phase("verify"):
            self._markers(dbname, ["before"], ["after"])
            self._prove_cluster(self._source_identifier(), "the source's")
        self.rto = round(time.monotonic() - selected, 3)
        self.rpo = rpo(target_time, self._newest_replayed())

    def _latest_base(self):
        with self.phases.phase("select"):
            manifest = self._newest_set(("base",))
        self.set = set_facts(manifest, repository_text(self.options.repository), self.started)
        selected = time.monotonic()
        self.phases.skip("fetch")
        self._physical(self.options.repository, self.cluster, manifest, self.options.archive, {})
        with self.phases.phase("verify"):
            expected = (manifest.get("source") or {}).get("system_identifier")
            if self.source is not None:  # the set is of this source, not of a cluster that took its name
                same = str(expected) == self._source_identifier()
                words = "equals" if same else "differs from"
                self._check(proof.check("set_of_source", same, "the set's system identifier %s %s the source's" % (expected, words)))
            self._prove_cluster(expected, "the one of the set's source")
        self.rto = round(time.monotonic() - selected, 3)
        self.rpo = rpo(self.started, self._newest_replayed() or moment(manifest, "finished_at"))

    def _physical(self, repository, set_cluster, manifest, archive, target):
        """deploy and recovery: the restore engine does both in one call; its own timings split them."""
        with self.phases.phase("deploy") as deploy:
            try:
                restored = self._restore_base(repository, set_cluster, manifest, archive, target)
            except PgdrError as exc:
                raise DrillFailed("the restore failed: %s" % exc.msg) from None
        timings = restored.get("timings") or {}
        recovery = float(timings.get("recovery_seconds") or 0.0)
        deploy["seconds"] = round(max(0.0, deploy["seconds"] - recovery), 3)
        self.phases.items.append(dict(name="recovery", seconds=round(recovery, 3), result="ok"))
        return restored

    # --- helpers of the source ------------------------------------------------------------------------------

    def _connection_params(self):
        """The source's login options, as dump_set and base_set take them."""
        return dataclasses.asdict(self.connection)

    def _marker_db(self):
        return self.source.settings.get("dbname") or self.source.settings.get("user") or "postgres"

    def _start_receiver(self):
        source = self._source()
        major = server_version(source)["major"]
        binary = find_binary("pg_receivewal", major, self.options.pg_bin_dir)[0]
        if source.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone() is None:
            source.execute("SELECT pg_create_physical_replication_slot(%s, true)", (self.slot,))
        import pwd  # pylint: disable=import-outside-toplevel

        owner = pwd.getpwnam(self.options.os_user)
        os.makedirs(self.place.wal_dir, 0o700, exist_ok=True)
        os.chown(self.place.wal_dir, owner.pw_uid, owner.pw_gid)
        argv = receivewal_argv(binary, self.place.wal_dir, self.slot, synchronous=True)
        # started as the OS user directly (not through runuser), so the pid kept is pg_receivewal's own and SIGINT reaches it
        as_user = dict(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[]) if os.geteuid() == 0 else {}
        env = dict(libpq_env(self.source), PATH=os.environ.get("PATH", "/usr/bin:/bin"))
        if self.source.password:  # the receiver outlives this run's passfile: it gets one of its own in the drill's 0700 folder
            env["PGPASSFILE"] = os.path.join(self.place.root, "receiver.pgpass")
            with open(os.open(env["PGPASSFILE"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
                handle.write("*:*:*:*:%s\n" % passfile_escape(self.source.password))
            os.chown(env["PGPASSFILE"], owner.pw_uid, owner.pw_gid)
        with open(os.path.join(self.place.root, "receiver.log"), "ab") as log:
            child = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                                     start_new_session=True, cwd=self.place.root, **as_user)
        with open(self.place.receiver_pid_file, "w", encoding="utf-8") as handle:
            handle.write("%d\n" % child.pid)
        deadline = time.monotonic() + RECEIVER_WAIT
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise DrillFailed("pg_receivewal stopped at once: %s" % _tail(os.path.join(self.place.root, "receiver.log")))
            active = source.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone()
            if active and active[0]:
                return
            time.sleep(0.2)
        raise DrillFailed("pg_receivewal did not start streaming from slot %s within %d s" % (self.slot, RECEIVER_WAIT))

    def _wait_flushed(self, lsn):
        source = self._source()
        deadline = time.monotonic() + RECEIVER_WAIT
        while time.monotonic() < deadline:
            done = source.execute("SELECT restart_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (lsn, self.slot)).fetchone()
            if done and done[0]:
                return
            time.sleep(0.1)
        raise DrillFailed("pg_receivewal did not receive the WAL up to %s within %d s: see %s/receiver.log" % (lsn, RECEIVER_WAIT, self.place.root))

    # --- run and clean up -----------------------------------------------------------------------------------

    def _clean_source(self):
        """Drop the drill's slot and marker rows on the source (this run's and an interrupted one's)."""
        if self.source is None:
            return
        source = self._source()
        proof.remove_markers(source, self.prefix)
        # the walsender of a receiver that just stopped may hold the slot a moment longer: wait for it, never drop an active one
        deadline = time.monotonic() + RECEIVER_WAIT
        while True:
            row = source.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone()
            if row is None:
                return
            if not row[0]:
                source.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                return
            if time.monotonic() > deadline:
                raise PgdrError("the drill's slot %s on the source is still in use after %d s: another drill of %s from %s is running?"
                                % (self.slot, RECEIVER_WAIT, self.cluster, self.drill_host))
            time.sleep(0.2)

    def _cleanup(self):
        """'done', 'kept' or 'failed' (with the reason)."""
        try:
            stop_receiver(self.place.receiver_pid_file)
            self._clean_source()
            if self.options.keep:
                return "kept", None
            self.place.clear()
            return "done", None
        except Exception as exc:  # pylint: disable=broad-exception-caught  # a cleanup failure is reported, never hides the drill's
            return "failed", getattr(exc, "msg", None) or first_line(exc)

    def _drills(self):
        return {("logical", None): self._logical, ("standalone", None): self._standalone, ("pitr", None): self._pitr,
                ("latest", "base"): self._latest_base, ("latest", "logical"): self._logical}

    def run(self):
        started = self.started = time.time()
        reason = None
        try:
            self.place.clear()  # an interrupted earlier drill of this name
            if self.source is not None:
                self._clean_source()
            self.place.make()
            self._drills()[(self.options.drill, self.options.latest_kind if self.options.drill == "latest" else None)]()
        except DrillFailed as exc:
            reason = str(exc)
        except PgdrError as exc:
            reason = exc.msg
        except Exception as exc:  # pylint: disable=broad-exception-caught  # a lost connection, a driver error: still a drill result
            reason = "%s: %s" % (type(exc).__name__, first_line(exc))
        finally:
            with self.phases.phase("cleanup") as entry:
                cleanup, why = self._cleanup()
                if cleanup == "failed":
                    entry["result"] = "failed"
            if self.source_conn is not None:
                with contextlib.suppress(Exception):
                    self.source_conn.close()
        if cleanup == "failed" and reason is None:
            reason = "cleanup failed: %s" % why
        if cleanup == "kept" and reason is None:
            self.verified.append(proof.check("kept", True, "the scratch cluster is kept running in %s on port %d (restore_drill_keep)"
                                             % (self.place.root, self.options.port)))
        return self.result(started, time.time(), reason, cleanup)

    def result(self, started, finished, reason, cleanup):
        failed = reason is not None
        data = dict(cluster=self.cluster, source_host=self.source_host, drill_host=self.drill_host, drill=self.options.drill,
                    result="failed" if failed else "passed", reason=" ".join(reason.split()) if failed else "",
                    started_at=utc_text(started), finished_at=utc_text(finished), rto_seconds=None if failed else self.rto,
                    rpo_seconds=None if failed else self.rpo, phases=self.phases.items, set=self.set, verified=self.verified, cleanup=cleanup)
        drill = DrillResult.from_dict(data).to_dict()  # what the report will accept, checked here where the drill ran
        result = dict(changed=True, drill=drill, scratch=dict(pg_data=self.place.pg_data, port=self.options.port, kept=cleanup == "kept"))
        if failed:  # a failed task that still carries the whole drill result: the role reports it, then fails the play
            raise PgdrError("%s failed: %s" % (DrillResult.from_dict(data).describe(), drill["reason"]), **result)
        return result


def _tail(path, limit=400):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()[-limit:]
    except OSError:
        return "no log"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run(options, connection, check_mode=False):
    """The module's result: a drill run (check mode: what it would do, nothing made)."""
    drill = Drill(options, connection)
    if check_mode:
        return dict(changed=False, would=dict(drill=options.drill, cluster=drill.cluster, scratch=drill.place.root, port=options.port))
    return drill.run()
