#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pgbackrest_stanza
short_description: A pgBackRest stanza - its settings in pgbackrest.conf, stanza-create, check, backup, expire, verify, info
version_added: 0.1.0
description:
  - Drives L(pgBackRest,https://pgbackrest.org) for one stanza on the host of its cluster, as the user pgBackRest runs as
    (C(become_user) postgres).
  - Without O(action) (V(none)), the module is declarative. O(state=present) writes the settings it is given into the
    stanza's section C([<stanza>]) of O(config_file) (mode 0600; C([global]) and every other section are left as they are,
    and so are keys of the section the task does not manage), then runs C(stanza-create) when the stanza is missing
    from the repository, or C(stanza-upgrade) when the cluster's PostgreSQL version differs from the stanza's (after
    C(pg_upgrade)). A stanza whose cluster has another system identifier at the same version is refused.
    O(state=absent) removes the stanza's section (and its command sections such as C([<stanza>:archive-push]));
    it never deletes the repository or its backups.
  - With O(action), the module acts on a configured stanza - V(check), V(backup) of O(backup_type), V(expire),
    V(verify) or V(info). Backups come back as the same entries M(pgdr.backup.backup_catalog) returns for the
    collection's own sets (RV(backups)).
  - Secrets (O(repository.key), O(repository.secret), O(repository.cipher_pass)) go into the 0600 file only, never on
    a command line or in the task's output; a diff shows them masked.
  - A failed command fails the task with one line - the command, pgBackRest's own error line (its code and message), and what
    to do. A cluster whose PostgreSQL version the installed pgBackRest does not support is refused in one line
    (pgBackRest 2.45, Debian 12's package, stops at PostgreSQL 15).
author:
  - pgdr.backup developers (@pgdr)
attributes:
  check_mode:
    support: full
    description:
      - Writes nothing and runs nothing that changes the repository or the cluster. The stanza is looked at through the
        configuration the task would write (a private copy, removed at once); RV(would_run) lists the commands that
        would run. V(expire) runs pgBackRest's own C(--dry-run) and reports RV(would_delete); V(verify) and V(info) run.
  diff_mode:
    support: full
    description: The stanza's section before and after, secrets masked.
options:
  binary:
    description: The pgBackRest program (looked up on C(PATH)) or its path.
    type: str
    default: pgbackrest
  stanza:
    description: The stanza's name - a section of O(config_file) and a folder of the repository.
    type: str
    required: true
  config_file:
    description:
      - pgBackRest's configuration file (C(--config) of every command the module runs). PostgreSQL's archive_command
        needs the same file; RV(archive_command) names it when it is not the default.
    type: path
    default: /etc/pgbackrest/pgbackrest.conf
  state:
    description:
      - V(present) - the stanza's section holds the given settings and the stanza exists in the repository.
      - V(absent) - the stanza's section is gone from O(config_file). The repository is never touched.
    type: str
    choices: [present, absent]
    default: present
  pg_data:
    description: The cluster's data directory (C(pg1-path)). Needed to add the stanza.
    type: path
  pg_port:
    description: The cluster's port (C(pg1-port)).
    type: int
  pg_socket:
    description: The folder of the cluster's Unix socket (C(pg1-socket-path)).
    type: path
  repository:
    description: The repository (C(repo1-*)). A task that gives it owns every C(repo1-*) key of the section but retention.
    type: dict
    suboptions:
      type:
        description: V(posix) - a folder on this host; V(s3) - an S3 bucket.
        type: str
        choices: [posix, s3]
        default: posix
      path:
        description: The repository folder (C(repo1-path)); for S3 the folder inside the bucket. Absolute.
        type: str
        required: true
      bucket:
        description: S3 bucket (C(repo1-s3-bucket)).
        type: str
      endpoint:
        description:
          - S3 endpoint - a host, C(host:port) or an C(https://) URL (C(repo1-s3-endpoint), C(repo1-storage-port)).
            pgBackRest reaches S3 over HTTPS only; an C(http://) endpoint is refused.
        type: str
      region:
        description: S3 region (C(repo1-s3-region)).
        type: str
      key:
        description: S3 access key (C(repo1-s3-key)). Written to the 0600 file only.
        type: str
      secret:
        description: S3 secret key (C(repo1-s3-key-secret)). Written to the 0600 file only.
        type: str
      verify_tls:
        description: Whether pgBackRest checks the endpoint's certificate (C(repo1-storage-verify-tls)).
        type: bool
      uri_style:
        description: V(host) or V(path) style requests (C(repo1-s3-uri-style)).
        type: str
        choices: [host, path]
      cipher_pass:
        description:
          - Encrypt the repository with C(aes-256-cbc) and this passphrase (C(repo1-cipher-type), C(repo1-cipher-pass)).
            Set it before the stanza is created; pgBackRest cannot encrypt an existing stanza.
        type: str
  retention:
    description: Backups the repository keeps (pgBackRest expires the rest after each backup, and with O(action=expire)).
    type: dict
    suboptions:
      full:
        description: Full backups to keep (C(repo1-retention-full)).
        type: int
      diff:
        description: Differential backups to keep (C(repo1-retention-diff)).
        type: int
  compress_type:
    description: Compression of backups and archived WAL (C(compress-type)).
    type: str
    choices: [none, gz, bz2, lz4, zst]
  compress_level:
    description: Compression level (C(compress-level)).
    type: int
  process_max:
    description: Parallel processes for compression and transfer (C(process-max)).
    type: int
  archive_async:
    description: Push and get WAL asynchronously (C(archive-async)); needs O(spool_path).
    type: bool
  spool_path:
    description: The folder of the asynchronous WAL queue (C(spool-path)).
    type: path
  log_path:
    description: The folder of pgBackRest's log files (C(log-path)).
    type: path
  action:
    description:
      - V(none) - converge the configuration and the stanza (O(state)).
      - V(check) - C(pgbackrest check) - the configuration, the repository, and that WAL reaches the repository.
      - V(backup) - a backup of O(backup_type); pgBackRest expires what the retention drops afterwards (RV(deleted)).
      - V(expire) - remove the backups (and WAL) the retention drops.
      - V(verify) - C(pgbackrest verify) - the checksums of the repository's backups and WAL.
      - V(info) - the stanza and its backups.
      - An action uses the stanza's section as it is; the settings options go in a task without action.
    type: str
    choices: [none, check, backup, expire, verify, info]
    default: none
  backup_type:
    description: V(full), V(diff) (changes since the last full) or V(incr) (changes since the last backup), for O(action=backup).
    type: str
    choices: [full, diff, incr]
    default: full
notes:
  - Run the task on the cluster's host as the user pgBackRest runs as (C(become_user) postgres), who must be able to
    write O(config_file) (or its folder) and the repository folder.
  - PostgreSQL's C(archive_command) must push WAL into the stanza (RV(archive_command)) before V(check) and V(backup)
    can pass; see C(docs/pgbackrest.md).
seealso:
  - module: pgdr.backup.backup_catalog
  - module: pgdr.backup.probackup_instance
"""

EXAMPLES = r"""
- name: Stanza main - a posix repository, two full backups kept
  pgdr.backup.pgbackrest_stanza:
    stanza: main
    pg_data: /var/lib/postgresql/15/main
    pg_socket: /run/postgresql
    repository:
      path: /var/backups/pgbackrest
    retention:
      full: 2
    compress_type: zst
  become: true
  become_user: postgres
  register: stanza

- name: PostgreSQL pushes WAL into the stanza
  community.postgresql.postgresql_set:
    name: archive_command
    value: "{{ stanza.archive_command }}"
  become: true
  become_user: postgres

- name: Full backup, then incrementals
  pgdr.backup.pgbackrest_stanza:
    stanza: main
    action: backup
    backup_type: incr
  become: true
  become_user: postgres

- name: An S3 repository (the keys are written to the 0600 file only)
  pgdr.backup.pgbackrest_stanza:
    stanza: main
    pg_data: /var/lib/postgresql/15/main
    repository:
      type: s3
      path: /pgbackrest
      bucket: backups
      endpoint: https://s3.example.net
      region: eu-west-1
      key: "{{ vault_s3_key }}"
      secret: "{{ vault_s3_secret }}"
  become: true
  become_user: postgres
"""

RETURN = r"""
tool_version:
  description: pgBackRest's version.
  returned: always
  type: str
  sample: "2.45"
commands:
  description: The pgBackRest commands that ran (argv lists; no secret is ever on them).
  returned: always
  type: list
  elements: list
would_run:
  description: In check mode, the commands that would change the repository or the cluster.
  returned: in check mode
  type: list
  elements: list
config_file:
  description: The configuration file.
  returned: always
  type: str
archive_command:
  description: What PostgreSQL's archive_command should be for this stanza.
  returned: always
  type: str
  sample: pgbackrest --stanza=main archive-push %p
settings:
  description: The stanza's section after the task, secrets masked.
  returned: without action, state present
  type: dict
config_changes:
  description: The keys of the section the task changed (or would change).
  returned: without action, state present
  type: list
  elements: str
stanza_created:
  description: Whether stanza-create ran (or would run).
  returned: without action, state present
  type: bool
stanza_upgraded:
  description: Whether stanza-upgrade ran (or would run).
  returned: without action, state present
  type: bool
stanza:
  description: The stanza as info reports it - name, status_code, status, cipher, pg_version, system_id, archive (per
    database its id, min and max archived WAL segment), location.
  returned: without action, state present, and with check, backup, expire, verify, info
  type: dict
backups:
  description:
    - The stanza's backups, oldest first, as catalog entries (the shape M(pgdr.backup.backup_catalog) returns) -
      backup_id (pgBackRest's label), kind (V(pgbackrest)), type (full, diff, incr), status, complete, started_at,
      finished_at, duration_seconds, start_lsn, stop_lsn, timeline, size (bytes this backup added to the repository),
      repository_size (bytes a restore reads), database_size, chain (the backups it references), prior, tool, wal
      (first, last, timeline, history, segment_size - the WAL a restore needs), location, stanza, pg_version,
      system_id, problem (page checksum errors).
  returned: with backups to list
  type: list
  elements: dict
backup:
  description: The backup taken, as an entry of RV(backups).
  returned: with action backup, outside check mode
  type: dict
deleted:
  description: Labels of the backups the task expired.
  returned: with action backup and expire, outside check mode
  type: list
  elements: str
would_remove_wal:
  description: The archived WAL pgBackRest's dry run would remove, per database - id, start, stop.
  returned: with action expire in check mode
  type: list
  elements: dict
would_delete:
  description: Labels of the backups pgBackRest's dry run would expire.
  returned: with action expire in check mode
  type: list
  elements: str
verify:
  description: verify's report lines (its text output).
  returned: with action verify
  type: list
  elements: str
"""

from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.pgbackrest import stanza

# the run logic lives in module_utils so that pgdr-backup and the drills can run the same code; the spec is also
# read here (ansible-test, tests/unit/test_module_docs.py)
argument_spec = stanza.argument_spec


def main():
    run_module(argument_spec(), lambda module: stanza.run(stanza.options_from(module.params), module.check_mode, diff=module._diff),
               needs_psycopg=False,  # pgBackRest connects to the cluster itself
               **stanza.ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
