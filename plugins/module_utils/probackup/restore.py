# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore from a pg_probackup / gs_probackup catalog with the safety rules of physical restores.

``pg_probackup restore`` fills ``<pg_data>.pgdr-new`` (it writes restore_command = archive-get, the target
and recovery.signal itself); pgdr.backup adds ``archive_mode = off`` and ``server_settings`` after its own
lines, then swaps, starts, waits and rolls back exactly as for a base backup set (physical.restore.PhysicalRestore).
An incremental restore (``-I checksum|lsn``) needs a stopped cluster to compare with: the server is stopped,
its data directory copied into the new folder, and the tool rewrites only what differs in the copy, so the
original is still kept until the restored cluster is verified.

Names: ``catalog`` is a probackup.catalog.Probackup (one catalog worked on by one program); ``catalog.program``
is its probackup.catalog.Program (the binary, pg_probackup or gs_probackup, and what it lacks).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.pg_service import Cluster
from ansible_collections.pgdr.backup.plugins.module_utils.physical.restore import (
    AUTO_CONF_MARK,
    PhysicalRestore,
    PhysicalRestoreOptions,
    Setting,
    WalSource,
    auto_conf_text,
    describe_owner,
    segment_end,
    server_bin_dir,
)
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import catalog as pb
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set


def catalog_argument_spec():
    """The ``probackup`` option of restore_cluster: where the catalog is and how to restore from it."""
    return dict(
        probackup=dict(
            type="dict",
            options=dict(
                binary=dict(type="str", default="pg_probackup"),
                backup_path=dict(type="path", required=True),
                instance=dict(type="str", required=True),
                threads=dict(type="int"),
                incremental_mode=dict(type="str", choices=["none", "checksum", "lsn"], default="none"),
                db_include=dict(type="list", elements="str"),
                db_exclude=dict(type="list", elements="str"),
            ),
        )
    )


@dataclasses.dataclass(frozen=True)
class CatalogOptions:
    """The ``probackup`` option of restore_cluster (catalog_argument_spec), typed."""

    binary: str
    backup_path: str
    instance: str
    threads: Optional[int]
    incremental_mode: str
    db_include: Optional[List[str]]
    db_exclude: Optional[List[str]]


@dataclasses.dataclass(frozen=True)
class ProbackupRestoreOptions(PhysicalRestoreOptions):
    """A restore from a pg_probackup / gs_probackup catalog on this host."""

    probackup: CatalogOptions


def _iso(moment):
    return backup_set.iso_utc(moment) if moment else None


def pseudo_manifest(backup, system_identifier, instance):
    """The facts physical restores check, from the tool's JSON for one backup."""
    stop_time = pb.parse_tool_time(backup.get("recovery-time") or backup.get("end-time"))
    return {
        "backup_id": backup["id"],
        "kind": "probackup",
        "stop_lsn": backup["stop-lsn"],
        "finished_at": _iso(stop_time),
        "source": {"major": int(str(backup.get("server-version") or "0").split(".", maxsplit=1)[0]), "system_identifier": system_identifier},
        "physical": {"stop_time": _iso(stop_time), "chain": [backup["id"]], "format": "probackup"},
        "instance": instance,
    }


def newest_archived(backup_path, instance):
    """(segment, mtime) of the newest WAL segment in the catalog's archive, ("", None) if there is none."""
    folder = os.path.join(backup_path, "wal", instance)
    best = None
    for name in pb.wal_segments(backup_path, instance):
        segment = name.split(".")[0]
        if segment_end(segment) is None:
            continue
        key = (segment[8:], segment[:8])
        if best is None or key > best[0]:
            best = (key, segment, os.path.getmtime(os.path.join(folder, name)))
    if best is None:
        return ("", None)
    return (best[1], datetime.datetime.fromtimestamp(best[2], datetime.timezone.utc))


def choose_backup(backups, backup_id, catalog_options):
    """The backup to restore: ``latest`` is the newest whose status and whole parent chain are OK or DONE."""
    where = "instance %s in %s" % (catalog_options.instance, catalog_options.backup_path)
    if backup_id == "latest":
        backup = pb.latest_valid_backup(backups)
        if backup is None:
            raise PgdrError("%s has no valid backup (status OK or DONE with a valid chain); run a backup first" % where)
        return backup
    backup = next((b for b in backups if b["id"] == backup_id), None)
    if backup is None:
        raise PgdrError(
            "backup %s is not in instance %s of %s; see probackup_instance action show" % (backup_id, catalog_options.instance, catalog_options.backup_path)
        )
    if backup.get("status") not in pb.VALID_STATUSES:
        raise PgdrError("backup %s has status %s; choose a valid backup (action show lists them)" % (backup["id"], backup.get("status")))
    return backup


EARLIER_RESTORE_NOTE = "# (settings below were written by an earlier pgdr.backup restore)"


def restored_auto_conf(existing, settings):
    """postgresql.auto.conf as the tool left it, with our settings last.

    The tool appends its recovery lines (restore_command, the target) after the backed-up cluster's file, which
    holds AUTO_CONF_MARK when that cluster was itself restored by restore_cluster; auto_conf_text keeps only what
    precedes the mark, so the mark becomes a plain comment first and the tool's lines stay.
    """
    return auto_conf_text(existing.replace(AUTO_CONF_MARK, EARLIER_RESTORE_NOTE), settings)


class ProbackupRestore(PhysicalRestore):
    """One backup of a probackup catalog onto this host. ``options`` is a ProbackupRestoreOptions."""

    kind = "probackup"

    def __init__(self, options, server, catalog, backup, manifest, connect):
        catalog_options = options.probackup
        super().__init__(options, server, manifest, connect, wal=WalSource(None, newest_archived(catalog_options.backup_path, catalog_options.instance)))
        self.catalog = catalog
        self.catalog_options = catalog_options
        self.backup = backup  # as the tool's show printed it
        self.restore_commands = []  # the restore as the cluster's owner ran it, for the result

    @classmethod
    def from_options(cls, options, conn_params):
        """The restore ``options`` ask for: the catalog and its backup looked up, nothing changed yet."""
        catalog_options = options.probackup
        catalog = pb.Probackup.detect(catalog_options.binary, catalog_options.backup_path)
        config = catalog.show_config(catalog_options.instance)
        if config is None:
            raise PgdrError("instance %s does not exist in the catalog %s; check probackup.instance" % (catalog_options.instance, catalog_options.backup_path))
        backup = choose_backup(catalog.backups(catalog_options.instance), options.backup_id, catalog_options)
        manifest = pseudo_manifest(backup, str(config.get("system-identifier") or ""), catalog_options.instance)
        bin_dir = server_bin_dir(manifest, options.pg_bin_dir, options.pg_data)
        server = Cluster.from_options(options, bin_dir, port=options.login_port, socket_dir=options.login_host)
        return cls(options, server, catalog, backup, manifest, lambda: conn_params.connect(autocommit=True))

    def plan(self):
        if self.target[0] != "latest":
            # openGauss pauses at a target and cannot be told to promote; the wait below expects a promotion and would
            # time out and roll back, and no openGauss server is at hand to test another wait against
            self.catalog.program.refuse("restore_to_target")
        if self.target[0] == "time":  # a time the tool would refuse is refused here, so check mode says so too
            pb.tool_target_time(self.catalog.program, self.target[1])
        plan = super().plan()
        plan.description.update(catalog=self.catalog_options.backup_path, instance=self.catalog_options.instance)
        if self.options.standby or self.options.tablespace_mapping:
            raise PgdrError("standby and tablespace_mapping are for base backup sets; restore from a probackup catalog without them")
        if self.catalog_options.incremental_mode not in (None, "none") and not plan.description["existing"].endswith("cluster"):
            raise PgdrError(
                "incremental_mode %s rewrites what differs from the cluster in pg_data, but %s holds none (%s); use incremental_mode: none"
                % (self.catalog_options.incremental_mode, self.pg_data, plan.description["existing"])
            )
        parent = os.path.dirname(self.pg_data)
        # the tool runs as the cluster's owner and makes <pg_data>.pgdr-new itself (folders this run makes are the owner's)
        if os.path.isdir(parent) and not self.server.owner_can_write(parent):
            raise PgdrError(
                "%s runs as %s, which cannot create %s.pgdr-new in %s (%s); give pg_data in a folder %s can write"
                % (os.path.basename(self.catalog.program.path), self.server.os_user, self.pg_data, parent, describe_owner(parent), self.server.os_user)
            )
        return plan

    def run(self, check_mode=False):
        result = super().run(check_mode)
        result.update(backup=pb.backup_summary(self.backup), commands=self.catalog.commands + self.restore_commands)
        return result

    def prepare(self, plan, timings):
        started = time.monotonic()
        catalog_options, kind = self.catalog_options, self.target[0]
        if catalog_options.incremental_mode not in (None, "none"):  # as restore_argv reads it
            # the tool compares pages with a cleanly stopped cluster: copy that, and keep the original
            self.server.stop(mode="fast")
            run(self.server.as_owner(["cp", "-a", "--reflink=auto", self.pg_data, self.new_dir]))
        # gs_probackup has no --recovery-target=latest: without a target it replays what the archive holds anyway
        target = None if kind == "latest" and self.catalog.program.lacks("target_immediate") else {"kind": kind, "value": self.target[1]}
        argv = pb.restore_argv(
            self.catalog.program,
            catalog_options.backup_path,
            catalog_options.instance,
            self.new_dir,
            backup_id=self.manifest["backup_id"],
            threads=catalog_options.threads,
            incremental_mode=catalog_options.incremental_mode,
            target=target,
            target_action=None if self.catalog.program.lacks("recovery_target_action") else self.options.recovery_target_action,
            inclusive=self.options.recovery_target_inclusive,
            timeline=self.options.recovery_target_timeline,
            db_include=catalog_options.db_include,
            db_exclude=catalog_options.db_exclude,
        )
        # as the cluster's owner, so that the restored files are its own
        catalog_as_owner = pb.Probackup(self.catalog.program, catalog_options.backup_path, run=lambda argv, **kw: run(self.server.as_owner(argv), **kw))
        catalog_as_owner.run(argv)
        self.restore_commands = catalog_as_owner.commands
        timings["deploy_seconds"] = round(time.monotonic() - started, 3)
        path = os.path.join(self.new_dir, "postgresql.auto.conf")
        with open(path) as f:
            existing = f.read()
        settings = [Setting("archive_mode", self.options.archive_mode)] + [
            Setting(name, value) for name, value in sorted((self.options.server_settings or {}).items())
        ]
        with open(path, "w") as f:
            f.write(restored_auto_conf(existing, settings))
