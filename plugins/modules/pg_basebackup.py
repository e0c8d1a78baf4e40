#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pg_basebackup
short_description: Physical base backups (pg_basebackup) into a verified backup set
version_added: 0.1.0
description:
  - Runs C(pg_basebackup) on the host that holds the repository (usually a backup host), connecting to the
    server over the replication protocol, and writes a backup set C(<repository>/<cluster>/<backup_id>/) of
    kind C(base) with a C(manifest.json) written last (start/stop LSN, timeline, system identifier, the
    C(backup_label) facts, tablespaces, every file with its sha256).
  - O(format=plain) copies the data directory into C(<set>/data/) (local repositories only);
    O(format=tar) writes one archive per tablespace plus C(pg_wal.tar) and C(backup_manifest) - into the
    set folder for a local repository, or into a folder under O(work_dir) for SFTP or S3, from which the
    archives pg_basebackup writes front to back (C(base.tar), C(<oid>.tar)) are uploaded while they grow
    (hashed on the way); C(pg_wal.tar) and C(backup_manifest) are uploaded when pg_basebackup exits, and the
    folder is removed afterwards. A stream that fails (pg_basebackup or the store) stops both and leaves no set.
  - With O(verify=true) (the default) C(pg_verifybackup) checks the backup against PostgreSQL's own
    C(backup_manifest) before C(manifest.json) is written. A failed check fails the task and leaves the set
    incomplete (no C(manifest.json), never restored) with C(verify-failed.json) saying why.
  - O(action=verify) checks a stored set again (sha256 of its files, then C(pg_verifybackup)); a set that
    fails loses its C(manifest.json) and so becomes incomplete. A repository that cannot be read just now
    fails the task and leaves the set as it was.
  - Incremental backups (PostgreSQL 17+) with O(incremental_from); the chain is recorded in the manifests.
  - Runs for the same source and repository never overlap on one host (O(if_running)). Long runs work with
    Ansible C(async)/C(poll); the last progress figures come back in RV(progress).
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.connection
  - pgdr.backup.storage
attributes:
  check_mode:
    support: full
    description: Reports the pg_basebackup command line that would run (no secrets) and checks the preconditions; writes nothing.
  diff_mode:
    support: none
    description: Backups are actions, not states; there is nothing to diff.
options:
  action:
    description:
      - V(backup) takes a new base backup.
      - V(verify) checks the stored set O(backup_id) again; a remote tar set is downloaded to O(work_dir) first.
    type: str
    choices: [backup, verify]
    default: backup
  cluster:
    description:
      - Name of the source cluster in the repository layout C(<cluster>/<backup_id>/).
      - Default - O(login_host) when it is a host name or address, otherwise this host's name.
      - Required with O(action=verify).
    type: str
  backup_id:
    description:
      - Identifier of the set. Default - the current UTC time as C(YYYYMMDDTHHMMSSZ). Required with O(action=verify).
      - If a complete set with this id exists, nothing is done and RV(ignore:changed) is false; an incomplete one
        (interrupted, or failed verification) is removed and taken again.
    type: str
  format:
    description:
      - V(tar) works with every repository type; V(plain) writes a data directory and needs a V(local) repository.
    type: str
    choices: [plain, tar]
    default: tar
  wal_method:
    description:
      - V(stream) streams the WAL written during the backup into the set (C(pg_wal.tar), or C(data/pg_wal)) - a
        standalone backup. V(fetch) collects it at the end (needs enough C(wal_keep_size)). V(none) takes no WAL;
        the backup then needs a WAL archive to be restored.
    type: str
    choices: [stream, fetch, none]
    default: stream
  compression:
    description:
      - Compression of the tar archives, by the client (C(pg_basebackup)) or by the server (less network traffic,
        PostgreSQL 15+; C(pg_wal.tar) is then not compressed).
      - With O(format=plain) only V(server) applies (the transfer is compressed, the data directory is not).
      - PostgreSQL 14 compresses only with gzip on the client (C(-Z level)).
    type: dict
    default: {method: none}
    suboptions:
      method:
        description: Compression method; the server and client builds must support it.
        type: str
        choices: [none, gzip, lz4, zstd]
        default: none
      level:
        description: Level, within the method's range (gzip 1-9, lz4 1-12, zstd 1-19); default is the tool's.
        type: int
      location:
        description: Where the compression runs.
        type: str
        choices: [client, server]
        default: client
  checkpoint:
    description: V(spread) (pg_basebackup's default, gentle on the server) or V(fast) (start now, with an I/O burst).
    type: str
    choices: [fast, spread]
    default: spread
  max_rate:
    description: Transfer limit in kB/s, with an optional C(k) or C(M) suffix (C(--max-rate)), e.g. C(50M).
    type: str
  slot:
    description:
      - A permanent physical replication slot to use while streaming WAL; created with C(--create-slot) if missing.
      - Without it, a temporary slot is used (see O(temporary_slot)).
    type: str
  temporary_slot:
    description: With O(wal_method=stream) and no O(slot), use a temporary slot (V(true)) or none (C(--no-slot)).
    type: bool
    default: true
  label:
    description: The backup label. Default - C(pgdr.backup <cluster>/<backup_id>).
    type: str
  tablespace_mapping:
    description:
      - With O(format=plain), where tablespaces go (C(--tablespace-mapping)). A tablespace not listed is copied into
        C(<set>/tablespaces/<oid>), so the set holds the whole cluster.
    type: list
    elements: dict
    suboptions:
      old_dir:
        description: The tablespace's location on the server.
        type: path
        required: true
      new_dir:
        description: Where to write it on this host.
        type: path
        required: true
  manifest_checksums:
    description: Checksum algorithm of PostgreSQL's C(backup_manifest) (C(--manifest-checksums)).
    type: str
    choices: [CRC32C, SHA224, SHA256, SHA384, SHA512, NONE]
    default: CRC32C
  incremental_from:
    description:
      - The backup_id of the set this one is incremental to (PostgreSQL 17+, C(pg_basebackup --incremental)), a full or
        incremental base backup of the same cluster in the same repository. The server must have C(summarize_wal = on).
      - Restore combines the chain with C(pg_combinebackup).
    type: str
  verify:
    description: Run C(pg_verifybackup) after the backup; the set is complete only when it passes.
    type: bool
    default: true
  work_dir:
    description:
      - Folder where pg_basebackup writes a tar set for SFTP/S3 (streamed from here while written; the copy is
        what O(verify) checks, so it needs free space the size of the backup during the run), where an encrypted
        set is staged, the parent's C(backup_manifest) and verification scratch. Removed after the run.
    type: path
    default: /var/tmp
  encryption:
    description:
      - Encryption at rest of every file of the set (the archives and C(backup_manifest)), as OpenPGP symmetric AES-256 (C(gpg)),
        after compression. Needs O(format=tar).
      - The archives are staged under O(work_dir) (where C(pg_verifybackup) checks them) and streamed through C(gpg) into the
        repository, local ones too; the staging folder is removed after the run. Each file is stored as C(<name>.gpg) and
        decrypts without this collection with C(gpg --batch --pinentry-mode loopback --passphrase-file FILE --decrypt base.tar.gpg > base.tar).
      - The manifest records the sha256 of the stored (encrypted) bytes and C(encryption.method) C(gpg-symmetric-aes256);
        M(pgdr.backup.restore_cluster) checks them, then decrypts with its O(pgdr.backup.restore_cluster#module:encryption.passphrase).
      - O(action=verify) and O(incremental_from) an encrypted set need the passphrase too.
    type: dict
    suboptions:
      method:
        description: V(gpg) encrypts, V(none) does not.
        type: str
        choices: [none, gpg]
        default: none
      passphrase:
        description: The passphrase. Required with V(gpg). Never logged; gpg reads it from a 0600 file.
        type: str
  if_running:
    description: What to do when another base backup of the same source into the same repository holds the lock on this host.
    type: str
    choices: [fail, skip]
    default: fail
  pg_bin_dir:
    description:
      - Folder with C(pg_basebackup), C(pg_verifybackup) and C(pg_waldump). Default - C(/usr/lib/postgresql/<major>/bin),
        then C(PATH), matching the server's major version.
    type: path
notes:
  - The login role needs the C(REPLICATION) attribute and C(pg_hba.conf) must allow a C(replication) connection from this host.
  - Tar sets are verified with C(pg_verifybackup) 18 or later (the first that reads tar archives) plus C(pg_waldump) of the
    server's version over the backup's WAL range; without such a binary, or when it lacks the archive's compression, the
    archives are unpacked under O(work_dir) and checked as a plain backup.
seealso:
  - module: pgdr.backup.restore_cluster
  - module: pgdr.backup.pg_logical_dump
"""

EXAMPLES = r"""
- name: Standalone tar backup of the primary to S3, compressed by the server
  pgdr.backup.pg_basebackup:
    login_host: "{{ hostvars['db1'].ansible_host }}"
    login_user: backup
    login_password: "{{ vault_backup_password }}"
    cluster: db1
    format: tar
    wal_method: stream
    checkpoint: fast
    compression: {method: zstd, level: 3, location: server}
    repository:
      type: s3
      endpoint_url: https://s3.example.com
      bucket: pg-backups
      access_key: "{{ vault_s3_access_key }}"
      secret_key: "{{ vault_s3_secret_key }}"
  delegate_to: backup1

- name: Full then incremental plain backups into a local folder (PostgreSQL 17+)
  pgdr.backup.pg_basebackup:
    login_host: db1.example.com
    cluster: db1
    backup_id: "{{ item.id }}"
    incremental_from: "{{ item.parent | default(omit) }}"
    format: plain
    repository: {type: local, path: /var/backups/pgdr}
  loop:
    - {id: full-mon}
    - {id: incr-tue, parent: full-mon}

- name: A long backup in the background, polled every 30 s for up to 6 hours
  pgdr.backup.pg_basebackup:
    login_host: db1.example.com
    cluster: db1
    max_rate: 200M
    repository: {type: sftp, host: vault.example.com, path: /srv/pgdr}
  async: 21600
  poll: 30
"""

RETURN = r"""
backup_id:
  description: Identifier of the set.
  returned: always
  type: str
  sample: 20261121T020000Z
location:
  description: Where the set is (no secrets).
  returned: always
  type: str
  sample: /var/backups/pgdr/db1/20261121T020000Z
manifest:
  description: The manifest written last into the set.
  returned: when a set was written, verified or already existed
  type: dict
summary:
  description: Start and stop LSN, timeline, bytes and number of files of the set, format, WAL method, chain, verified.
  returned: when a set was written, verified or already existed
  type: dict
  sample: {start_lsn: 0/2000028, stop_lsn: 0/2000100, timeline: 1, bytes: 23500000, files: 3, format: tar,
           wal_method: stream, chain: [20261121T020000Z], verified: true}
duration:
  description: Seconds the whole run took (backup, verification, upload).
  returned: when a set was written
  type: float
backup_seconds:
  description: Seconds pg_basebackup ran, with (SFTP/S3) the end of the uploads streamed while it wrote.
  returned: when a set was written
  type: float
upload_seconds:
  description: Seconds the uploads to SFTP/S3 took after pg_basebackup exited (what was not streamed while written).
  returned: when a set was written to sftp or s3
  type: float
streamed_files:
  description: Files of the set uploaded to SFTP/S3 while pg_basebackup wrote them (empty for a local or encrypted set).
  returned: when a set was written
  type: list
  elements: str
  sample: [base.tar]
verified:
  description: Whether pg_verifybackup passed (false when O(verify=false)).
  returned: when a set was written or verified
  type: bool
verify_seconds:
  description: Seconds the verification took.
  returned: when a set was written with O(verify=true) or verified
  type: float
verified_with:
  description: How the backup was checked (C(pg_verifybackup), C(pg_verifybackup --format=tar + pg_waldump), ...).
  returned: when verified
  type: str
progress:
  description: The last progress figures pg_basebackup printed.
  returned: when pg_basebackup ran
  type: dict
  sample: {done_bytes: 23499776, total_bytes: 23499776, percent: 100, tablespaces_done: 1, tablespaces: 1}
cmd:
  description: The pg_basebackup command line (run, or in check mode that would run); never holds a password.
  returned: when pg_basebackup ran, and in check mode
  type: list
  elements: str
stderr:
  description: pg_basebackup's or pg_verifybackup's error output.
  returned: on failure
  type: str
skipped_reason:
  description: Why nothing was done (another run holds the lock, with O(if_running=skip)).
  returned: when skipped
  type: str
"""

from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.physical import base_set

# the run logic lives in module_utils so that pgdr-backup runs the same code outside Ansible; the spec is also
# read here (ansible-test, tests/unit/test_module_docs.py)
argument_spec = base_set.argument_spec


def main():
    run_module(argument_spec(), lambda module: base_set.run(*base_set.options_from(module.params), check_mode=module.check_mode),
               **base_set.ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
