#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: role_grants
short_description: Give a backup or export role exactly the access it needs, and check it
version_added: 0.1.0
description:
  - Grants (or revokes) what a role needs to take logical dumps, physical base backups or pg_probackup
    backups - role memberships such as C(pg_read_all_data), the REPLICATION attribute, EXECUTE on the backup
    functions of the server's version, and USAGE/SELECT on schemas, tables and sequences with default
    privileges for future tables.
  - A preflight (O(check_access) or O(state=check)) lists every schema, table, view and sequence the role
    cannot read, every table whose row-level security would stop C(pg_dump), and the large objects it cannot
    read, each with the statement that fixes it. This is the check that prevents C(permission denied for
    relation) or C(permission denied for large object) half way through a dump.
  - Idempotent - compares explicit grants to the role (ACL entries, memberships, attributes) and reports
    RV(ignore:changed) only when it ran a statement. All statements of one database run in one transaction.
  - After granting, the module reads the catalog again and fails if anything asked for is still missing
    (for example because PostgreSQL turned a GRANT by a non-owner into a warning).
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.connection
attributes:
  check_mode:
    support: full
    description: Reads the catalog and reports the statements it would run, changing nothing.
  diff_mode:
    support: full
    description: Before and after pictures of the role's memberships, attributes and privileges.
options:
  name:
    description:
      - The role that receives (or loses) the access, typically the export or backup user. It must exist.
    type: str
    required: true
    aliases: [user]
  state:
    description:
      - V(present) grants what is asked for, V(absent) revokes it.
      - V(check) grants nothing and only runs the preflight, as if O(check_access=true).
    type: str
    choices: [present, absent, check]
    default: present
  profile:
    description:
      - Sensible sets of access, combined with the explicit options below.
      - V(logical) - membership in C(pg_read_all_data), or with O(use_predefined_roles=false) the object
        privileges of O(object_privileges=true).
      - V(physical) - the REPLICATION attribute, EXECUTE on the backup start/stop functions of the server's
        version (C(pg_backup_start)/C(pg_backup_stop) on 15+, C(pg_start_backup)/C(pg_stop_backup) on 14),
        C(pg_switch_wal), C(pg_create_restore_point), C(pg_control_checkpoint), and C(pg_checkpoint)
        membership on 15+.
      - V(probackup) - what pg_probackup documents for its backup role - REPLICATION, the backup functions,
        C(pg_switch_wal), C(pg_create_restore_point), C(pg_control_checkpoint), C(current_setting),
        C(set_config), C(pg_is_in_recovery), C(pg_last_wal_replay_lsn), C(txid_current),
        C(txid_current_snapshot) and C(txid_snapshot_xmax).
    type: list
    elements: str
    choices: [logical, physical, probackup]
    default: []
  roles:
    description:
      - Roles to grant membership in (C(GRANT role TO name)), for example C(pg_read_all_data), C(pg_monitor)
        or an application role that owns the data.
    type: list
    elements: str
    default: []
  admin_option:
    description:
      - Grant the memberships in O(roles) WITH ADMIN OPTION. V(false) removes an existing admin option.
    type: bool
    default: false
  replication:
    description:
      - Whether the role has the REPLICATION attribute (needed by C(pg_basebackup) and C(pg_receivewal)).
      - Unset leaves it alone, unless a profile sets it.
      - With O(state=absent), V(true) removes the attribute.
    type: bool
  bypassrls:
    description:
      - Whether the role has the BYPASSRLS attribute. C(pg_dump) refuses to dump tables with row-level
        security for a role without it, unless the dump runs with C(--enable-row-security).
      - With O(state=absent), V(true) removes the attribute.
    type: bool
  object_privileges:
    description:
      - USAGE on the schemas and SELECT on all tables, views and sequences in them, in every database of
        O(databases), plus default privileges so tables created later are covered too.
      - For servers or policies where C(pg_read_all_data) is not wanted.
    type: bool
    default: false
  use_predefined_roles:
    description:
      - With O(profile=logical), use C(pg_read_all_data) (V(true)) or object privileges (V(false)).
    type: bool
    default: true
  default_privileges:
    description:
      - With O(object_privileges), also run C(ALTER DEFAULT PRIVILEGES ... GRANT SELECT ON TABLES/SEQUENCES)
        so objects created later by the owners are readable too.
    type: bool
    default: true
  default_privileges_for:
    description:
      - Roles whose future objects the default privileges cover.
      - Default - each schema's owner and the owners of the objects already in it.
    type: list
    elements: str
  functions:
    description:
      - Extra functions to grant EXECUTE on, as signatures such as C(pg_catalog.pg_ls_waldir()).
    type: list
    elements: str
    default: []
  databases:
    description:
      - Databases where object privileges and function grants apply and which the preflight checks.
      - Default - every database that allows connections and is not a template.
    type: list
    elements: str
  schemas:
    description:
      - Schemas where object privileges apply. Default - every schema except the system ones.
    type: list
    elements: str
  check_access:
    description:
      - After granting, list what O(name) still cannot read (see RV(missing)).
      - In check mode the preflight describes the current state, before any grant.
    type: bool
    default: false
  check_password:
    description:
      - Password of O(name). When given, the preflight logs in as O(name) itself (same host, port and TLS
        settings), which also proves the login and C(pg_hba.conf) work; otherwise the login role asks on its
        behalf with C(has_table_privilege) and friends.
    type: str
  fail_on_missing:
    description:
      - Fail when the preflight finds anything O(name) cannot read; the failure lists the fixes.
    type: bool
    default: false
notes:
  - The login role needs to be a superuser, or to hold ADMIN OPTION on the roles it grants, own the schemas
    and objects (or hold their privileges WITH GRANT OPTION), and be a member of the roles in
    O(default_privileges_for). A refusal names the privilege that is missing.
  - C(pg_read_all_data) does not cover large objects, and this module does not grant them; the preflight finds the
    ones the role cannot read (unless C(lo_compat_privileges) is on) and gives the C(GRANT SELECT ON LARGE OBJECT)
    that their owner or a superuser can run, or dump without them (C(pg_dump --no-large-objects), C(-B)).
  - Non-superuser C(pg_dumpall --globals-only) needs C(--no-role-passwords).
seealso:
  - name: Predefined roles
    description: What pg_read_all_data, pg_checkpoint and pg_monitor allow.
    link: https://www.postgresql.org/docs/current/predefined-roles.html
"""

EXAMPLES = r"""
- name: Export user reads everything (pg_read_all_data) and the grant is verified
  pgdr.backup.role_grants:
    name: exporter
    profile: logical
    check_access: true
    fail_on_missing: true
  become: true
  become_user: postgres

- name: Object privileges instead of predefined roles, for two schemas of one database
  pgdr.backup.role_grants:
    name: exporter
    object_privileges: true
    databases: [sales]
    schemas: [public, "Reporting"]
    login_host: db1.example.com
    login_user: admin
    login_password: "{{ vault_admin_password }}"

- name: A pg_probackup backup role with everything it needs
  pgdr.backup.role_grants:
    name: backup
    profile: probackup
    databases: [postgres]

- name: Preflight only - what can the export user not read, and how to fix it
  pgdr.backup.role_grants:
    name: exporter
    state: check
    check_password: "{{ vault_exporter_password }}"
    login_host: db1.example.com
  register: preflight

- name: Take it all away again
  pgdr.backup.role_grants:
    name: exporter
    state: absent
    profile: [logical, physical]
"""

RETURN = r"""
queries:
  description: Statements run (in check mode - that would run), with the database each ran in (null for roles).
  returned: always
  type: list
  elements: dict
  sample: [{"database": null, "query": "GRANT \"pg_read_all_data\" TO \"exporter\""}]
access:
  description: The role's memberships, attributes and, per database, schema usage, granted/total tables and
    sequences, default privileges and function grants, as they are at the end (in check mode - as they would be).
  returned: always
  type: dict
  sample: {"roles": {"pg_read_all_data": {"admin_option": false}}, "replication": false, "bypassrls": false, "databases": {}}
server_version:
  description: Server version, as numbers and text.
  returned: always
  type: dict
  sample: {"num": 150018, "major": 15, "text": "15.18"}
databases:
  description: Databases that were granted in or checked.
  returned: always
  type: list
  elements: str
missing:
  description:
    - What the role cannot read, one item per schema, relation or row-security table, each with the fix.
    - Large objects are one item per database (kind C(large objects)) with C(count), their C(owners), the first
      100 C(oids), a C(fix) that grants SELECT on them (the oids listed, or a C(DO) loop over every large object
      when there are more than 100) and an C(alternative) (leave them out of the dump).
    - Only when the preflight ran; empty when the role can read everything.
  returned: when check_access or state=check
  type: list
  elements: dict
  sample: [{"database": "sales", "kind": "table", "schema": "public", "name": "orders", "missing": "SELECT",
            "fix": "GRANT SELECT ON TABLE \"public\".\"orders\" TO \"exporter\""}]
checked_as:
  description: How the preflight ran - C(login) as the role itself, or C(on_behalf) of it by the login role.
  returned: when check_access or state=check
  type: str
"""

import dataclasses
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.access import grants
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import ConnectionOptions, ConnectionParams, connection_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import server_version


def argument_spec():
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True, aliases=["user"]),
        state=dict(type="str", default="present", choices=["present", "absent", "check"]),
        profile=dict(type="list", elements="str", default=[], choices=list(grants.PROFILES)),
        roles=dict(type="list", elements="str", default=[]),
        admin_option=dict(type="bool", default=False),
        replication=dict(type="bool"),
        bypassrls=dict(type="bool"),
        object_privileges=dict(type="bool", default=False),
        use_predefined_roles=dict(type="bool", default=True),
        default_privileges=dict(type="bool", default=True),
        default_privileges_for=dict(type="list", elements="str"),
        functions=dict(type="list", elements="str", default=[]),
        databases=dict(type="list", elements="str"),
        schemas=dict(type="list", elements="str"),
        check_access=dict(type="bool", default=False),
        check_password=dict(type="str", no_log=True),
        fail_on_missing=dict(type="bool", default=False),
    )
    return spec


class Connections:
    """One connection per database, opened on first use, all closed at the end.

    Autocommit, so reads hold no transaction open and ``conn.transaction()``
    in apply_actions is a real BEGIN/COMMIT rather than a savepoint.
    """

    def __init__(self, conn_params):
        self.conn_params = conn_params
        self.open = {}

    def get(self, database):
        if database not in self.open:
            self.open[database] = self.conn_params.connect(database, autocommit=True)
        return self.open[database]

    def close(self):
        for conn in self.open.values():
            conn.close()


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """The read-access preflight's options."""

    databases: Optional[List[str]]
    check_access: bool
    check_password: Optional[str]
    fail_on_missing: bool


def run(module):
    conn_params = ConnectionParams(typed(ConnectionOptions, module.params))
    connections = Connections(conn_params)
    try:
        return grant_and_check(module, typed(grants.GrantOptions, module.params), typed(CheckOptions, module.params), conn_params, connections)
    finally:
        connections.close()


def grant_and_check(module, options, check, conn_params, connections):
    """Read, plan, grant (unless state check or check mode), re-read; then the preflight when asked."""
    admin = connections.get(conn_params.dbname)
    version = server_version(admin)
    if version["major"] < 14:
        raise PgdrError("PostgreSQL %s is not supported; pgdr.backup needs 14 or later" % version["text"])
    request = grants.build_request(options, version["major"])
    granting = options.state != "check"
    checking = check.check_access or not granting

    grants.read_cluster_state(admin, request.user)  # fails clearly when the role does not exist
    grants.check_roles_exist(admin, list(request.roles), "role")
    grants.check_roles_exist(admin, request.default_privileges_for or [], "default_privileges_for role")
    databases = []
    if (granting and request.needs_databases) or checking:
        databases = grants.list_databases(admin, check.databases)

    def read_all():
        cluster_state = grants.read_cluster_state(admin, request.user)
        db_states = {}
        if granting and request.needs_databases:
            for db in databases:
                db_states[db] = grants.read_database_state(connections.get(db), db, request.user, request)
        return cluster_state, db_states

    def plan(cluster_state, db_states):
        if not granting:
            return []
        actions = grants.plan_cluster(request, cluster_state)
        for db, state in db_states.items():
            actions += grants.plan_database(request, db, state)
        return actions

    cluster_state, db_states = read_all()
    before = grants.summarize(cluster_state, db_states)
    actions = plan(cluster_state, db_states)
    login = '"%s"' % (conn_params.settings.get("user") or "(OS user)")

    if actions and not module.check_mode:
        for database in [None] + databases:
            batch = [a for a in actions if a.database == database]
            if batch:
                grants.apply_actions(connections.get(database or conn_params.dbname), batch, login)
        cluster_state, db_states = read_all()
        after = grants.summarize(cluster_state, db_states)
        remaining = plan(cluster_state, db_states)
        if remaining:
            raise PgdrError(
                "statements ran but %d grant(s) are still missing (PostgreSQL only warns when a non-owner grants); "
                "login role %s needs %s" % (len(remaining), login, remaining[0].hint),
                still_missing=[a.text(admin) for a in remaining],
            )
    else:
        after = grants.simulate(before, actions)

    result = dict(
        changed=bool(actions),
        queries=[dict(database=a.database, query=a.text(admin)) for a in actions],
        access=after,
        server_version=version,
        databases=databases,
    )
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    if checking:
        result["missing"], result["checked_as"] = preflight(check, conn_params, connections, request.user, databases)
        if check.fail_on_missing and result["missing"]:
            first = result["missing"][0]
            large = [m for m in result["missing"] if m["kind"] == "large objects"]
            result["msg"] = (
                'role "%s" cannot read %d object(s) in %d database(s), first %s; run the statements in "missing" '
                "(fix)%s" % (
                    request.user, sum(m.get("count", 1) for m in result["missing"]), len({m["database"] for m in result["missing"]}),
                    _object_name(first),
                    # pg_read_all_data does not cover large objects: the profile alone would not fix them
                    " or grant profile logical" if len(large) < len(result["missing"]) else "")
            )
            if large:
                fix = large[0]["fix"] if len(large[0]["fix"]) <= 200 else "the fix in missing"
                result["msg"] += "; the large objects (owned by %s) need %s, run by their owner or a superuser, %s" % (
                    ", ".join(large[0]["owners"]), fix, large[0]["alternative"])
            module.fail_json(**result)
    return result


def preflight(check, conn_params, connections, user, databases):
    """Findings across ``databases``, as ``user`` itself when its password is known."""
    findings = []
    as_user = bool(check.check_password)
    user_params = conn_params.with_user(user, check.check_password) if as_user else None
    for db in databases:
        if as_user:
            try:
                conn = user_params.connect(db, autocommit=True)
            except PgdrError as exc:
                findings.append(grants.connect_finding(db, user, exc.msg, connections.get(conn_params.dbname)))
                continue
            try:
                findings += grants.preflight_database(conn, db, user, as_user=True)
            finally:
                conn.close()
        else:
            conn = connections.get(db)
            with conn.cursor() as cur:
                cur.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", [user, db])
                can_connect = cur.fetchone()[0]
            if not can_connect:
                findings.append(grants.connect_finding(db, user, "no CONNECT privilege", conn))
                continue
            findings += grants.preflight_database(conn, db, user, as_user=False)
    return findings, ("login" if as_user else "on_behalf")


def _object_name(finding):
    if finding["kind"] == "database":
        return 'database "%s"' % finding["database"]
    if finding["kind"] == "large objects":
        return '%d large object(s) in database "%s"' % (finding["count"], finding["database"])
    if finding["name"] is None:
        return '%s "%s" in database "%s"' % (finding["kind"], finding["schema"], finding["database"])
    return '%s "%s"."%s" in database "%s"' % (finding["kind"], finding["schema"], finding["name"], finding["database"])


def main():
    run_module(argument_spec(), run)


if __name__ == "__main__":
    main()
