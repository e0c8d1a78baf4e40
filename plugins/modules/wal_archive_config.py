#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: wal_archive_config
short_description: WAL archiving of a PostgreSQL server - settings, archive destination, streaming archive, health
version_added: 0.1.0
description:
  - Manages the settings of continuous archiving through C(ALTER SYSTEM) and C(pg_reload_conf()) - O(wal_level),
    O(archive_mode), O(archive_command) or O(archive_library), O(archive_timeout), O(max_wal_senders),
    O(max_replication_slots), O(wal_keep_size). Only settings whose configured value differs are changed
    (values are compared with their units, so V(0) equals V(0MB) and V(1min) equals V(60s)).
  - O(archive) writes the archive_command for a destination so nobody hand-writes one; for V(local), V(sftp) and V(s3)
    it installs the C(pgdr-wal) helper and its config on this host.
  - Settings such as O(archive_mode) take effect only at a restart; RV(restart_required) says so, and O(restart=true)
    restarts the server (only then) and waits until it accepts connections.
  - O(receiver) manages a streaming archive on the host the task runs on (usually a backup host) - C(pg_receivewal) with a
    physical replication slot on the server, kept running by systemd where it runs, otherwise by a small supervisor
    process with a pidfile.
  - Every run returns the archiver's health (C(pg_stat_archiver)) and the replication slots with their lag;
    O(verify=true) forces a WAL switch and waits until that segment is in the archive.
  - To manage settings, O(archive), or O(restart), run the task on the PostgreSQL host (as root when O(archive) installs the
    helper or O(restart) is set); to manage O(receiver), run it on the backup host and point the connection options at the server.
  - Privileges - a task that manages only O(receiver) (no settings, no O(archive), no O(restart)) reads only the server
    version and the replication slots, so a role with just C(LOGIN REPLICATION) is enough (O(verify=true) also needs
    C(EXECUTE) on C(pg_switch_wal()), which the C(physical) profile of M(pgdr.backup.role_grants) grants). Any other task reads
    C(data_directory), C(pg_current_logfile()) and C(pg_file_settings) and changes settings with C(ALTER SYSTEM), so it
    needs a superuser (or C(pg_read_all_settings) and C(pg_monitor) membership plus C(ALTER SYSTEM) grants on the settings).
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.connection
  - pgdr.backup.service
  - pgdr.backup.wal_archive
attributes:
  check_mode:
    support: full
    description: Reports the settings, helper files and receiver changes that would be made; changes nothing and does not verify.
  diff_mode:
    support: full
    description: Before and after values of the settings that change.
options:
  wal_level:
    description: The C(wal_level) setting (restart needed). Archiving needs V(replica) or V(logical).
    type: str
    choices: [minimal, replica, logical]
  archive_mode:
    description:
      - The C(archive_mode) setting (restart needed). V(always) archives on a standby too.
    type: str
    choices: ['on', 'off', always]
  archive_command:
    description:
      - A hand-written C(archive_command). Mutually exclusive with O(archive) and O(archive_library);
        setting it clears C(archive_library).
    type: str
  archive_library:
    description:
      - An archive module such as V(basic_archive) (PostgreSQL 15 and later). Mutually exclusive with O(archive) and
        O(archive_command); setting it clears C(archive_command).
    type: str
  archive_timeout:
    description: The C(archive_timeout) setting, for example V(60s) or V(5min); V(0) disables it.
    type: str
  max_wal_senders:
    description: The C(max_wal_senders) setting (restart needed). Each C(pg_receivewal) uses one.
    type: int
  max_replication_slots:
    description: The C(max_replication_slots) setting (restart needed).
    type: int
  wal_keep_size:
    description: The C(wal_keep_size) setting, for example V(1GB); V(0) keeps no extra WAL.
    type: str
  archive_name:
    description:
      - Name of the helper's config C(/etc/pgdr/wal/<archive_name>.json) for O(archive).
      - Default - C(<major>-<basename of the data directory>), for example V(16-main).
    type: str
  restart:
    description:
      - Restart the server when a setting waits for a restart (RV(restart_required)), and only then; waits until it accepts
        connections. Uses O(service_manager); O(pg_data) defaults to the server's data directory.
    type: bool
    default: false
  restart_timeout:
    description: Seconds to wait for the restart.
    type: int
    default: 120
  verify:
    description:
      - Write a WAL record, force a segment switch with C(pg_switch_wal()), and wait up to O(verify_timeout) seconds until
        the server's archiver reports that segment done (C(pg_stat_archiver.last_archived_wal)), it is in the folder,
        server or bucket for V(local), V(sftp), V(s3), and it is in O(receiver.directory) when a receiver is present.
        A task that manages only O(receiver) checks only the receiver's directory.
      - On timeout the task fails with the archiver's counters and its last error from the server log.
    type: bool
    default: false
  verify_timeout:
    description: Seconds O(verify) waits.
    type: int
    default: 60
  pg_bin_dir:
    description:
      - Folder of the PostgreSQL programs (C(pg_ctl), C(pg_receivewal)). Default - the Debian folder of the server's major
        version, then PATH.
    type: path
  receiver:
    description:
      - A streaming archive - C(pg_receivewal) on this host writing into O(receiver.directory) from a physical
        replication slot on the server the connection options point to (a replication connection).
      - With systemd (and root) it is the unit C(pgdr-receivewal-<slot>.service); otherwise a supervisor process started
        from the task that detaches from it (it outlives the Ansible session), restarts C(pg_receivewal) with a growing
        delay when it exits, and is found by its pidfile only. Either way it runs as the user the task runs as.
      - Running again with the same settings changes nothing; different settings restart it.
    type: dict
    suboptions:
      state:
        description:
          - V(present) creates the slot (C(pg_receivewal --create-slot)) and runs the receiver; V(absent) stops it and
            drops the slot (C(pg_receivewal --drop-slot)). The archived files are kept.
        type: str
        choices: [present, absent]
        default: present
      directory:
        description: Absolute folder the WAL files are written to (created 0700). Required with O(receiver.state=present).
        type: path
      slot:
        description: Name of the physical replication slot (lower-case letters, digits, C(_)).
        type: str
        required: true
      synchronous:
        description: Flush WAL to disk as soon as it is received (C(--synchronous)).
        type: bool
        default: false
      compress:
        description: gzip level (1-9) of the written files; V(0) writes them uncompressed, which restores read directly.
        type: int
        default: 0
      state_dir:
        description:
          - Folder of the receiver's own files (pidfile, log, settings, passfile).
          - Default - C(/var/lib/pgdr/receivewal/<slot>) as root, else C(~/.pgdr/receivewal/<slot>).
        type: path
      service_manager:
        description: V(auto) uses systemd when it runs and the task runs as root, else V(supervisor).
        type: str
        choices: [auto, systemd, supervisor]
        default: auto
notes:
  - Exit codes of C(pgdr-wal) follow what PostgreSQL expects - 0 archived or fetched, 1 failed or not found (never above
    125, which would stop the archiver or the recovery).
"""

EXAMPLES = r"""
- name: Archive to the backup host over SFTP and check that it works
  pgdr.backup.wal_archive_config:
    login_host: 127.0.0.1
    login_user: postgres
    login_password: "{{ vault_pg_password }}"
    wal_level: replica
    archive_mode: "on"
    archive_timeout: 60s
    archive:
      type: sftp
      host: backup1.example.com
      user: walarchive
      path: /var/backups/wal/db1
      key_file: /var/lib/postgresql/.ssh/wal_archive_key
      known_hosts: /var/lib/postgresql/.ssh/known_hosts
    restart: true
    verify: true
  become: true

- name: Streaming archive on the backup host
  pgdr.backup.wal_archive_config:
    login_host: db1.example.com
    login_user: replicator
    login_password: "{{ vault_replicator_password }}"
    receiver:
      directory: /var/backups/wal/db1
      slot: wal_archive
  become: true
  become_user: postgres
  delegate_to: backup1.example.com

- name: Stop the streaming archive and drop its slot
  pgdr.backup.wal_archive_config:
    login_host: db1.example.com
    login_user: replicator
    login_password: "{{ vault_replicator_password }}"
    receiver:
      slot: wal_archive
      state: absent
"""

RETURN = r"""
restart_required:
  description: Whether settings wait for a restart (after O(restart=true), whether they still do).
  returned: always
  type: bool
pending_restart:
  description: Names of the settings that wait for a restart.
  returned: always
  type: list
  elements: str
restarted:
  description: Whether the server was restarted.
  returned: always
  type: bool
settings:
  description:
    - The managed settings as configured after the run (as the server reports them).
    - Empty when the task manages only O(receiver) - the settings are not read then, and RV(restart_required) is V(false).
  returned: always
  type: dict
executed_queries:
  description: The ALTER SYSTEM statements run (the values hold no secrets).
  returned: always
  type: list
  elements: str
archive_command:
  description: The archive_command written for O(archive).
  returned: when O(archive) is set
  type: str
  sample: /usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/16-main.json push %p %f
helper:
  description: Paths of the installed helper and its config, and whether they changed.
  returned: when O(archive) is V(local), V(sftp) or V(s3)
  type: dict
archiver:
  description:
    - C(pg_stat_archiver) - archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal,
      last_failed_time, stats_reset.
  returned: always
  type: dict
slots:
  description: Replication slots with slot_name, slot_type, active, active_pid, restart_lsn, wal_status and lag_bytes.
  returned: always
  type: list
  elements: dict
receiver:
  description: The receiver - slot, manager, running, pid, supervisor_pid, state_dir, log, directory, slot_info, actions.
  returned: when O(receiver) is set
  type: dict
verified:
  description: The segment switched to and how long it took to reach the archive (and the receiver's folder).
  returned: when O(verify=true) and not in check mode
  type: dict
"""

import dataclasses
import os
import time
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.binaries import find_binary
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import ConnectionOptions, ConnectionParams, connection_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.core.pg_service import Cluster, ServiceOptions, service_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.wal import archive_settings, installer
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import STORE_TYPES, archive_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import validate as validate_archive
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive_settings import SettingsOptions
from ansible_collections.pgdr.backup.plugins.module_utils.wal.receiver import Receiver, ReceiverOptions, receiver_argument_spec


def argument_spec():
    spec = connection_argument_spec()
    spec.update(service_argument_spec())
    spec.update(archive_argument_spec())
    spec.update(receiver_argument_spec())
    spec.update(
        wal_level=dict(type="str", choices=["minimal", "replica", "logical"]),
        archive_mode=dict(type="str", choices=["on", "off", "always"]),
        archive_command=dict(type="str"),
        archive_library=dict(type="str"),
        archive_timeout=dict(type="str"),
        max_wal_senders=dict(type="int"),
        max_replication_slots=dict(type="int"),
        wal_keep_size=dict(type="str"),
        archive_name=dict(type="str"),
        restart=dict(type="bool", default=False),
        restart_timeout=dict(type="int", default=120),
        verify=dict(type="bool", default=False),
        verify_timeout=dict(type="int", default=60),
        pg_bin_dir=dict(type="path"),
    )
    return spec


# declared, so that Ansible checks them before run() and ansible-doc shows them
ARGUMENT_RELATIONS = dict(
    mutually_exclusive=[("archive", "archive_command", "archive_library")],  # one way to archive
)


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """This module's own options, typed: the receiver, the helper's name, restart and verify."""

    receiver: Optional[ReceiverOptions]
    archive_name: Optional[str]
    restart: bool
    restart_timeout: int
    verify: bool
    verify_timeout: int
    pg_bin_dir: Optional[str]


class Session:
    """The module's connection, which a restart replaces."""

    def __init__(self, conn_params):
        self.conn_params = conn_params
        self.conn = conn_params.connect(autocommit=True)

    def reconnect(self):
        self.close()
        self.conn = self.conn_params.connect(autocommit=True)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run(module):
    conn_params = ConnectionParams(typed(ConnectionOptions, module.params))
    task = typed(TaskOptions, module.params)
    settings = typed(SettingsOptions, module.params)
    service = typed(ServiceOptions, module.params)
    session = Session(conn_params)
    try:
        return manage(module.check_mode, task, settings, service, conn_params, session)
    finally:
        session.close()


def manages_only_receiver(task, settings):
    """A task that only manages O(receiver): no settings, no archive, no restart."""
    return task.receiver is not None and not settings.archive and not task.restart and not archive_settings.desired_settings(settings, None)


def manage(check, task, settings, service, conn_params, session):
    result = dict(changed=False, restarted=False, executed_queries=[])
    receiver_only = manages_only_receiver(task, settings)
    if receiver_only:
        # data_directory, pg_current_logfile() and pg_file_settings need superuser, pg_read_all_settings or
        # pg_monitor; the documented receiver setup logs in as a role with only REPLICATION and LOGIN
        facts = archive_settings.version_facts(session.conn)
        current = {}
        result.update(restart_required=False, pending_restart=[], settings={})
    else:
        facts, current = _manage_settings(check, task, settings, service, session, result)

    receiver = None
    if task.receiver is not None:
        binary, _version = find_binary("pg_receivewal", facts["major"], task.pg_bin_dir)
        receiver = Receiver(task.receiver, conn_params, binary)
        if task.receiver.state == "present":
            changed, actions = receiver.present(session.conn, check_mode=check)
        else:
            changed, actions = receiver.absent(session.conn, check_mode=check)
        result["changed"] |= changed
        result["receiver"] = dict(receiver.status(session.conn), state=task.receiver.state, actions=actions)

    if task.verify and not check:
        result["verified"] = verify(task, settings, service, facts, session, current, receiver, receiver_only)
    result["archiver"] = archive_settings.archiver_stats(session.conn)
    result["slots"] = archive_settings.replication_slots(session.conn)
    return result


def _manage_settings(check, task, settings, service, session, result):
    """Helper, settings and restart; reads data_directory, pg_current_logfile() and pg_file_settings."""
    facts = archive_settings.server_facts(session.conn)
    archive = settings.archive
    archive_name = task.archive_name or "%d-%s" % (facts["major"], os.path.basename(facts["data_directory"].rstrip("/")))
    if archive:
        validate_archive(archive)
    wanted = archive_settings.desired_settings(settings, archive_name)

    if archive and archive.type in STORE_TYPES:
        if not os.path.isdir(facts["data_directory"]):
            raise PgdrError(
                "archive type %s installs pgdr-wal on the PostgreSQL host, but the server's data directory %s is not on this host: "
                "run the task on the server's host" % (archive.type, facts["data_directory"])
            )
        helper = installer.install(archive, archive_name, os_user=service.os_user, check_mode=check)
        result["helper"] = helper
        result["changed"] |= helper["changed"]
    if archive:
        result["archive_command"] = wanted["archive_command"]

    current = archive_settings.read_settings(session.conn)
    changes = archive_settings.plan_changes(current, wanted)
    if changes:
        result["changed"] = True
        result["diff"] = dict(before={n: b for n, b, _a in changes}, after={n: a for n, _b, a in changes})
        if not check:
            result["executed_queries"] = archive_settings.apply_changes(session.conn, changes)
            current = archive_settings.read_settings(session.conn)
        else:
            for name, _before, after in changes:
                current[name] = dict(current[name], configured=after)
    pending = archive_settings.restart_pending(current)

    if pending and task.restart:
        result["changed"] = True
        if not check:
            restart(task, service, facts, session)
            result["restarted"] = True
            current = archive_settings.read_settings(session.conn)
            pending = archive_settings.restart_pending(current)
        else:
            pending = []
    result.update(restart_required=bool(pending), pending_restart=pending)
    result["settings"] = {name: meta["configured"] for name, meta in current.items()}
    return facts, current


def restart(task, service, facts, session):
    pg_data = service.pg_data or facts["data_directory"]
    if not os.path.isdir(pg_data):
        raise PgdrError("restart needs the task to run on the server's host: data directory %s is not here" % pg_data)
    bin_dir = task.pg_bin_dir or os.path.dirname(find_binary("pg_ctl", facts["major"])[0])
    cluster = Cluster.from_options(dataclasses.replace(service, pg_data=pg_data), bin_dir, port=facts["port"], socket_dir=facts["socket_dir"])
    session.close()
    cluster.restart(timeout=task.restart_timeout)
    session.reconnect()


def verify(task, settings, service, facts, session, current, receiver, receiver_only=False):
    conn = session.conn
    archiving = current.get("archive_mode", {}).get("running") in ("on", "always")
    streaming = receiver is not None and task.receiver.state == "present"
    if receiver_only and not streaming:
        raise PgdrError("verify: the receiver is absent and the task manages no archive; nothing to verify (leave verify out)")
    if not archiving and not streaming:
        raise PgdrError("verify: archive_mode is off on the running server (a change waits for a restart? set restart: true); nothing archives WAL")
    started = time.monotonic()
    walfile = archive_settings.switch_wal(conn)
    done = dict(walfile=walfile)
    if archiving:
        log_path = facts["logfile"] or service.server_log or os.path.join(os.path.dirname(facts["data_directory"].rstrip("/")), "postgresql.log")
        waited = archive_settings.wait_archived(conn, walfile, task.verify_timeout, archive=settings.archive, log_path=log_path)
        done["archive_seconds"] = waited["seconds"]
    if streaming:
        directory = task.receiver.directory
        deadline = started + task.verify_timeout
        while not any(os.path.exists(os.path.join(directory, walfile + suffix)) for suffix in ("", ".gz")):
            if time.monotonic() > deadline:
                raise PgdrError(
                    "verify: WAL segment %s did not reach the streaming archive %s within %d seconds; see %s"
                    % (walfile, directory, task.verify_timeout, receiver.status(conn)["log"])
                )
            time.sleep(0.3)
        done["receiver_seconds"] = round(time.monotonic() - started, 3)
    return done


def main():
    run_module(argument_spec(), run, **ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
