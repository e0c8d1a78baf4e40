# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore from a pg_probackup / gs_probackup catalog with the safety rules of physical restores.

``pg_probackup restore`` fills ``<pg_data>.pgdr-new`` (it writes restore_command = archive-get, the target
and recovery.signal itself); pgdr.backup adds ``archive_mode = off`` and ``server_settings`` after its own
lines, then swaps, starts, waits and rolls back exactly as for a base backup set (physical_restore.Restore).
An incremental restore (``-I checksum|lsn``) needs a stopped cluster to compare with: the server is stopped,
its data directory copied into the new folder, and the tool rewrites only what differs in the copy, so the
original is still kept until the restored cluster is verified.
"""

from __future__ import annotations

import datetime
import os
import time

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.physical.restore import AUTO_CONF_MARK, Restore, auto_conf_text, segment_end
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


def _iso(moment):
    return backup_set.iso_utc(moment) if moment else None


def pseudo_manifest(backup, system_identifier, instance):
    """The facts physical_restore checks, from the tool's JSON for one backup."""
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


EARLIER_RESTORE_NOTE = "# (settings below were written by an earlier pgdr.backup restore)"


def restored_auto_conf(existing, settings):
    """postgresql.auto.conf as the tool left it, with our settings last.

    The tool appends its recovery lines (restore_command, the target) after the backed-up cluster's file, which
    holds AUTO_CONF_MARK when that cluster was itself restored by restore_cluster; auto_conf_text keeps only what
    precedes the mark, so the mark becomes a plain comment first and the tool's lines stay.
    """
    return auto_conf_text(existing.replace(AUTO_CONF_MARK, EARLIER_RESTORE_NOTE), settings)


class ProbackupRestore(Restore):
    kind = "probackup"

    def __init__(self, p, tool, backup, system_identifier, cluster, connect):
        spec = p["probackup"]
        manifest = pseudo_manifest(backup, system_identifier, spec["instance"])
        newest = newest_archived(spec["backup_path"], spec["instance"])
        super().__init__(dict(p, cluster=spec["instance"]), None, manifest, cluster, {}, connect, archive_newest=newest, has_archive=True)
        self.tool = tool
        self.spec = spec
        self.commands = []  # as run, for the result

    def plan(self):
        if self.target[0] != "latest":
            # openGauss pauses at a target and cannot be told to promote; the wait below expects a promotion and would
            # time out and roll back, and no openGauss server is at hand to test another wait against
            self.tool.refuse("restore_to_target")
        chain, planned = super().plan()
        planned.update(catalog=self.spec["backup_path"], instance=self.spec["instance"])
        if self.p.get("standby") or self.p.get("tablespace_mapping"):
            raise PgdrError("standby and tablespace_mapping are for base backup sets; restore from a probackup catalog without them")
        return chain, planned

    def _as_owner(self, argv):
        return self.cluster.as_owner(argv)

    def prepare(self, chain, planned, timings):
        started = time.monotonic()
        spec, kind = self.spec, self.target[0]
        incremental = spec.get("incremental_mode") not in (None, "none")
        if incremental:
            # the tool compares pages with a cleanly stopped cluster: copy that, and keep the original
            self.cluster.stop(mode="fast")
            run(self._as_owner(["cp", "-a", "--reflink=auto", self.pg_data, self.new_dir]))
        # gs_probackup has no --recovery-target=latest: without a target it replays what the archive holds anyway
        target = None if kind == "latest" and self.tool.lacks("target_immediate") else {"kind": kind, "value": self.target[1]}
        argv = pb.restore_argv(
            self.tool,
            spec["backup_path"],
            spec["instance"],
            self.new_dir,
            backup_id=self.manifest["backup_id"],
            threads=spec.get("threads"),
            incremental_mode=spec.get("incremental_mode"),
            target=target,
            target_action=None if self.tool.lacks("recovery_target_action") else (self.p.get("recovery_target_action") or "promote"),
            inclusive=self.p.get("recovery_target_inclusive"),
            timeline=self.p.get("recovery_target_timeline"),
            db_include=spec.get("db_include"),
            db_exclude=spec.get("db_exclude"),
        )
        tool = pb.Probackup(self.tool, spec["backup_path"], run=lambda argv, **kw: run(self._as_owner(argv), **kw))
        tool.run(argv)
        timings["deploy_seconds"] = round(time.monotonic() - started, 3)
        self.commands = tool.commands
        path = os.path.join(self.new_dir, "postgresql.auto.conf")
        with open(path) as f:
            existing = f.read()
        settings = [("archive_mode", self.p.get("archive_mode") or "off")] + sorted((self.p.get("server_settings") or {}).items())
        with open(path, "w") as f:
            f.write(restored_auto_conf(existing, settings))
