#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pg_logical_dump
short_description: Logical backups (pg_dump, pg_dumpall) into a verified backup set
version_added: 0.1.0
description:
  - Dumps one database (O(mode=database)) or every database plus the roles and tablespaces
    (O(mode=cluster)) into a backup set C(<repository>/<cluster>/<backup_id>/) with a C(manifest.json)
    written last, listing every file with its size and sha256.
  - Each dump runs on a snapshot exported by a REPEATABLE READ transaction that stays open for the whole
    dump; the same transaction counts the rows of every table and computes a content fingerprint, so a
    restore can prove it holds exactly the data that was dumped.
  - Output streams through optional compression (gzip, lz4, zstd) and encryption (OpenPGP AES-256 with
    gpg) into a local folder, an SFTP server or S3-compatible object storage, without a local copy of the
    whole dump (directory format excepted, which pg_dump writes to a local staging folder itself).
  - If anything fails, the partial set is deleted; a set without a manifest is never offered for restore.
  - Runs for the same source and repository never overlap on one host (O(if_running)).
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.connection
  - pgdr.backup.storage
attributes:
  check_mode:
    support: full
    description: Reports the databases and tables that would be dumped and their size on the server; writes nothing.
  diff_mode:
    support: none
    description: Backups and restores are actions, not states; there is nothing to diff.
options:
  mode:
    description:
      - V(database) dumps O(database) with C(pg_dump).
      - V(cluster) dumps the globals with C(pg_dumpall --globals-only) and then every database that allows
        connections and is not a template, O(parallel) at a time, into one set with one file per database.
      - V(table) exports O(tables), every table of O(schemas) and/or one O(query) of O(database) with
        C(COPY ... TO STDOUT) in O(copy_format), one file per table, O(parallel) tables at once, into a set of
        kind C(logical-table). Every COPY worker has its own connection that imports the one exported snapshot
        (C(SET TRANSACTION SNAPSHOT)), so all files are consistent with each other and with the fingerprints.
        A partitioned table is exported as its leaf partitions; views, materialized views, foreign and
        temporary tables are skipped and listed in RV(skipped_relations). The set also holds C(schema.sql)
        (C(pg_dump --schema-only) of those tables and their partition parents, on the same snapshot), so a
        restore into a fresh database can create them.
    type: str
    choices: [database, cluster, table]
    default: database
  database:
    description:
      - Database to dump with O(mode=database). Default - O(login_db), else V(postgres).
    type: str
  cluster:
    description:
      - Name of the source cluster in the repository layout C(<cluster>/<backup_id>/).
      - Default - O(login_host) when it is a host name or address, otherwise this host's name. Set it to
        something stable such as C({{ inventory_hostname }}) so restores and drills find the sets.
    type: str
  backup_id:
    description:
      - Identifier of the set. Default - the current UTC time as C(YYYYMMDDTHHMMSSZ).
      - If a complete set with this id exists, nothing is done and RV(ignore:changed) is false.
    type: str
  format:
    description:
      - pg_dump output format. V(custom) and V(directory) are compressed by pg_dump itself,
        V(plain) and V(tar) by a separate compressor on the whole stream.
    type: str
    choices: [custom, plain, directory, tar]
    default: custom
  jobs:
    description:
      - Parallel pg_dump workers; only with O(format=directory).
    type: int
    default: 1
  parallel:
    description:
      - With O(mode=cluster), how many databases are dumped at once.
      - With O(mode=table), how many tables are copied at once (one connection each).
    type: int
    default: 1
  compression:
    description:
      - Compression of the dump.
      - pg_dump 14 and 15 compress custom and directory dumps only with gzip.
    type: dict
    default: {method: gzip}
    suboptions:
      method:
        description: Compression method.
        type: str
        choices: [none, gzip, lz4, zstd]
        default: gzip
      level:
        description: Level, within the method's range (gzip 1-9, lz4 1-12, zstd 1-19); default is the tool's.
        type: int
  encryption:
    description:
      - Encryption at rest, as OpenPGP symmetric AES-256 (C(gpg)). A file decrypts without this collection with
        C(gpg --batch --pinentry-mode loopback --passphrase-file FILE --decrypt db_x.dump.gpg > db_x.dump).
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
  schemas:
    description:
      - Dump only these schemas (exact names, not patterns).
      - With O(mode=table), export every table of these schemas (partitions of a partitioned table in the
        same schema come with it; views and the like are listed in RV(skipped_relations)).
    type: list
    elements: str
  exclude_schemas:
    description: Leave these schemas out (exact names).
    type: list
    elements: str
  tables:
    description:
      - Dump only these tables, as C(schema.table) (exact names; a bare name is in C(public); the first dot
        separates schema from table).
      - With O(mode=table), the tables to export; a partitioned table is exported as its leaf partitions,
        a name that does not exist fails the task.
    type: list
    elements: str
  exclude_tables:
    description: Leave these tables out, as C(schema.table).
    type: list
    elements: str
  data_only:
    description: Only the data (C(--data-only)).
    type: bool
    default: false
  schema_only:
    description: Only the definitions (C(--schema-only)); no fingerprints are taken.
    type: bool
    default: false
  create:
    description: Include C(CREATE DATABASE) in the dump (C(--create)).
    type: bool
    default: false
  clean:
    description: Include C(DROP) statements (C(--clean)).
    type: bool
    default: false
  if_exists:
    description: Use C(IF EXISTS) with the drops (C(--if-exists)).
    type: bool
    default: false
  no_owner:
    description: Do not dump ownership (C(--no-owner)).
    type: bool
    default: false
  no_privileges:
    description: Do not dump privileges (C(--no-privileges)).
    type: bool
    default: false
  extra_args:
    description:
      - More pg_dump arguments, as a list (never a shell string), for what the module has no option for
        (e.g. C(--no-comments), C(--exclude-table-data=PATTERN)).
      - They are read as pg_dump reads them (short clusters such as C(-vFp), attached values such as C(-j4),
        C(--name value), unambiguous abbreviations such as C(--form=plain)). Options the module owns are refused
        before anything is written, naming the module option to use instead (output file, format, snapshot,
        compression, jobs, connection and role, schema/table filters, data_only, schema_only, create, clean,
        if_exists, no_owner, no_privileges). So is a word that is not an option (pg_dump would take it as the
        database name).
    type: list
    elements: str
    default: []
  fingerprint:
    description:
      - Count the rows of every dumped table and compute an order-independent content hash in the dump's
        snapshot, recorded in the manifest for restore verification.
      - Costs one extra read of every table (a 64-bit hash of each row's text) on the server while pg_dump runs,
        about as much server CPU as the dump's own COPY (see C(docs/performance.md)).
    type: bool
    default: true
  query:
    description:
      - With O(mode=table), a query whose result is exported too, with C(COPY (query) TO STDOUT), on the same
        snapshot, into C(queries/<name>.<ext>). It is run as given (it is the playbook author's SQL); it
        gets no fingerprint and is not restored by M(pgdr.backup.restore_cluster).
    type: str
  name:
    description:
      - The file name (without extension) of the O(query) export. Required with O(query).
    type: str
  copy_format:
    description:
      - With O(mode=table), the C(COPY) format of the data files. V(csv) and V(text) are written in UTF8
        (C(ENCODING 'UTF8')) and keep NULL apart from the empty string; V(binary) is the fastest and
        restores only into columns of the same types.
      - Compression and encryption apply to each file as a whole stream.
    type: str
    choices: [csv, text, binary]
    default: csv
  if_running:
    description:
      - What to do when another run for the same source and repository holds the lock on this host.
    type: str
    choices: [fail, skip]
    default: fail
  session_role:
    description:
      - Role to switch to after connecting (SET ROLE); the login user must be a member. Objects are read with
        this role's privileges.
      - C(pg_dump --role) and C(pg_dumpall --role), and C(SET ROLE) in the sessions that take the snapshot, the
        fingerprints and the COPYs. A role that does not exist, or that the login user may not switch to, fails
        in one line before anything is written.
    type: str
  pg_bin_dir:
    description:
      - Folder with C(pg_dump) and C(pg_dumpall). Vendor builds (EDB Postgres Advanced Server, PPAS) must use
        their own binaries. Default - C(/usr/lib/postgresql/<major>/bin), then C(PATH), of the server's major
        version; if there is none, the nearest newer C(/usr/lib/postgresql/<newer>/bin) (a newer pg_dump reads
        an older server, as PostgreSQL recommends).
      - A pg_dump older than the server is refused, here too, in one line before anything is written. A restore
        of the set then needs a C(pg_restore) at least as new as the pg_dump recorded in the manifest.
    type: path
notes:
  - A role granted the C(logical) profile of M(pgdr.backup.role_grants) can run this module.
seealso:
  - module: pgdr.backup.role_grants
  - module: pgdr.backup.restore_cluster
"""

EXAMPLES = r"""
- name: Nightly dump of one database to S3, compressed and encrypted
  pgdr.backup.pg_logical_dump:
    database: sales
    cluster: "{{ inventory_hostname }}"
    compression: {method: gzip, level: 6}
    encryption: {method: gpg, passphrase: "{{ vault_backup_passphrase }}"}
    repository:
      type: s3
      endpoint_url: https://oss-cn-hangzhou.aliyuncs.com
      bucket: pg-backups
      prefix: prod
      access_key: "{{ vault_s3_access_key }}"
      secret_key: "{{ vault_s3_secret_key }}"
  become: true
  become_user: postgres

- name: Export two tables and a report query as CSV, three COPYs at a time, on one snapshot
  pgdr.backup.pg_logical_dump:
    mode: table
    database: sales
    tables: [public.orders, "Billing.Invoices"]
    query: "SELECT id, total FROM public.orders WHERE total > 1000"
    name: big_orders
    copy_format: csv
    parallel: 3
    cluster: "{{ inventory_hostname }}"
    repository: {type: local, path: /var/backups/pgdr}

- name: Every database and the globals, two at a time, to the backup host over SFTP
  pgdr.backup.pg_logical_dump:
    mode: cluster
    parallel: 2
    format: custom
    cluster: "{{ inventory_hostname }}"
    repository: {type: sftp, host: backup1.example.com, path: /var/backups/pgdr, key_file: /root/.ssh/id_ed25519}
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
  sample: s3://pg-backups/prod/db1/20261121T020000Z/
manifest:
  description: The manifest written last into the set (files with size and sha256, tables with rows and fingerprints).
  returned: when a set was written or already existed
  type: dict
bytes:
  description: Total size of the files in the set.
  returned: when a set was written or already existed
  type: int
duration:
  description: Seconds the dump took.
  returned: when a set was written
  type: float
tables:
  description:
    - Per-table row counts and fingerprints taken in the dump's snapshot.
    - In check mode, the tables that would be dumped (O(mode=database)) or exported (O(mode=table)).
  returned: when a set was written or already existed, and in check mode with O(mode=database) or O(mode=table)
  type: list
  elements: dict
databases:
  description: Databases dumped (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
estimated_bytes:
  description:
    - In check mode, the size of the databases on the server (the dump is usually smaller).
    - With O(mode=table), the size of the tables that would be exported.
  returned: in check mode
  type: int
skipped_relations:
  description:
    - With O(mode=table), the named relations that were not exported and why (view, materialized view,
      foreign table, temporary table, partitioned table whose partitions are exported, extension member).
    - In check mode too.
  returned: with O(mode=table)
  type: list
  elements: dict
  sample: [{"name": "public.v_orders", "reason": "view"}]
copied:
  description: With O(mode=table), per table or query - the file written and the rows COPY wrote.
  returned: with O(mode=table), when a set was written or already existed
  type: list
  elements: dict
  sample: [{"schema": "public", "table": "orders", "rows": 1200, "path": "tables/public/orders.csv.gz"},
           {"query": "big_orders", "rows": 12, "path": "queries/big_orders.csv.gz"}]
skipped_reason:
  description: Why nothing was done (another run holds the lock, with O(if_running=skip)).
  returned: when skipped
  type: str
"""

from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set

# the run logic lives in module_utils so that pgdr-backup runs the same code outside Ansible; the spec is also
# read here (ansible-test, tests/unit/test_module_docs.py)
argument_spec = dump_set.argument_spec


def main():
    run_module(argument_spec(), lambda module: dump_set.run(*dump_set.options_from(module.params), check_mode=module.check_mode),
               **dump_set.ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
