# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What module pg_basebackup runs (action backup and verify), callable without Ansible (pgdr-backup runs it too).

``argument_spec()`` and ``ARGUMENT_RELATIONS`` are the module's options; ``options_from(params)`` types them once;
``run(options, connection, repository, check_mode)`` takes or re-verifies a base backup set and returns the
module's result dict. Nothing here imports ``ansible.*`` at import time.
"""

from __future__ import annotations

import contextlib
import time

from ansible_collections.pgdr.backup.plugins.module_utils.core import compression, encryption, locks
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import (
    ConnectionOptions,
    ConnectionParams,
    connection_argument_spec,
    default_cluster_name,
)
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import server_version
from ansible_collections.pgdr.backup.plugins.module_utils.physical import basebackup
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions, open_repository, storage_argument_spec

# Declared so that Ansible checks them before run() and ansible-doc shows them.
ARGUMENT_RELATIONS = dict(
    required_if=[("action", "verify", ("cluster", "backup_id"))],
)


def argument_spec():
    spec = connection_argument_spec()
    spec.update(storage_argument_spec())
    spec.update(
        action=dict(type="str", default="backup", choices=["backup", "verify"]),
        cluster=dict(type="str"),
        backup_id=dict(type="str"),
        format=dict(type="str", default="tar", choices=list(basebackup.FORMATS)),
        wal_method=dict(type="str", default="stream", choices=list(basebackup.WAL_METHODS)),
        compression=dict(
            type="dict",
            default={"method": "none"},
            options=dict(
                method=dict(type="str", default="none", choices=list(compression.METHODS)),
                level=dict(type="int"),
                location=dict(type="str", default="client", choices=list(basebackup.LOCATIONS)),
            ),
        ),
        checkpoint=dict(type="str", default="spread", choices=list(basebackup.CHECKPOINTS)),
        max_rate=dict(type="str"),
        slot=dict(type="str"),
        temporary_slot=dict(type="bool", default=True),
        label=dict(type="str"),
        tablespace_mapping=dict(
            type="list",
            elements="dict",
            options=dict(
                old_dir=dict(type="path", required=True),
                new_dir=dict(type="path", required=True),
            ),
        ),
        manifest_checksums=dict(type="str", default="CRC32C", choices=list(basebackup.MANIFEST_CHECKSUMS)),
        incremental_from=dict(type="str"),
        verify=dict(type="bool", default=True),
        work_dir=dict(type="path", default="/var/tmp"),
        if_running=dict(type="str", default="fail", choices=["fail", "skip"]),
        pg_bin_dir=dict(type="path"),
        encryption=encryption.encryption_argument_spec(),
    )
    return spec


def options_from(params):
    """The typed options of one run, from the module's params (defaults already applied, as AnsibleModule does)."""
    return (typed(basebackup.BaseBackupOptions, params), typed(ConnectionOptions, params), typed(RepositoryOptions, params["repository"]))


def run(options, connection, repository, check_mode):
    """The module's result dict: a new base backup set (action backup) or a stored set checked again (action verify)."""
    conn_params = ConnectionParams(connection)
    repo = open_repository(repository)
    try:
        if options.action == "verify":
            return verify_set(options, repo, check_mode)
        return backup(options, conn_params, repo, check_mode)
    finally:
        repo.close()


def verify_set(options, repo, check_mode):
    location = repo.location(backup_set.set_key(options.cluster, options.backup_id))
    result = dict(changed=False, backup_id=options.backup_id, location=location)
    if check_mode:
        manifest = backup_set.load_manifest(repo, options.cluster, options.backup_id)
        return dict(result, manifest=manifest, summary=basebackup.summary(manifest))
    checked = basebackup.reverify(repo, options.cluster, options.backup_id, options.pg_bin_dir, options.work_dir, passphrase=options.passphrase)
    return dict(
        result,
        manifest=checked["manifest"],
        summary=basebackup.summary(checked["manifest"]),
        verified=True,
        verify_seconds=checked["verify_seconds"],
        verified_with=checked["verified_with"],
    )


def existing_set(repo, cluster, backup_id, result):
    """The result for a set that is already complete (changed false), or None."""
    if backup_set.set_status(repo, cluster, backup_id) != "complete":
        return None
    manifest = backup_set.load_manifest(repo, cluster, backup_id)
    return dict(result, manifest=manifest, summary=basebackup.summary(manifest), verified=bool(manifest.get("physical", {}).get("verified")))


def backup(options, conn_params, repo, check_mode):
    cluster = options.cluster or default_cluster_name(conn_params)
    backup_set.validate_cluster_name(cluster)
    backup_id = options.backup_id or backup_set.new_backup_id()
    backup_set.validate_backup_id(backup_id)
    location = repo.location(backup_set.set_key(cluster, backup_id))
    result = dict(changed=False, backup_id=backup_id, location=location)
    done = existing_set(repo, cluster, backup_id, result)
    if done:
        return done
    conn = conn_params.connect(autocommit=True)
    try:
        version = server_version(conn)
        plan = basebackup.Plan(options, conn_params, conn, version, repo, cluster, backup_id)
    finally:
        conn.close()
    if check_mode:
        return dict(result, changed=True, cmd=plan.check_mode_argv(), create_slot=plan.create_slot, chain=plan.chain, tablespaces=plan.facts["tablespaces"])
    system_identifier, _timeline = basebackup.identify_system(conn_params)
    host = conn_params.settings.get("host") or "local"
    source = "basebackup|%s:%s|%s" % (host, conn_params.settings.get("port") or 5432, cluster)
    with locks.exclusive(source, repo.describe()) as (taken, holder):
        if not taken:
            reason = "another base backup of %s into %s is running (%s)" % (cluster, repo.describe(), holder or "pid unknown")
            if options.if_running == "skip":
                return dict(result, skipped_reason=reason)
            raise PgdrError(reason + "; wait for it, or set if_running: skip")
        # another run with this backup_id may have completed the set since the check above: never delete it
        done = existing_set(repo, cluster, backup_id, result)
        if done:
            return done
        started = time.monotonic()
        # leftovers of an interrupted or failed run with this id are never a backup
        backup_set.delete_set(repo, cluster, backup_id)
        writer = backup_set.SetWriter(repo, cluster, backup_id, compression="none")
        try:
            manifest, details = basebackup.run_backup(plan, writer, system_identifier)
        except BaseException:
            if not writer.aborted and not writer.finished:
                # a failed verify marked the set itself (data kept, no manifest); anything else removes it
                with contextlib.suppress(Exception):  # the failure that stopped the backup is the one to report
                    writer.abort()
            raise
    physical = manifest["physical"]
    return dict(
        result,
        changed=True,
        manifest=manifest,
        summary=basebackup.summary(manifest),
        duration=round(time.monotonic() - started, 3),
        verified=physical["verified"],
        **details,
    )
