# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The access a backup or export role needs: read it, plan it, grant it, check it.

Reading and applying need a connection; planning is pure (state in, actions
out) so it is unit-tested without a server. Idempotency compares *explicit*
grants to the role (ACL entries, pg_auth_members, role attributes), so a
privilege PUBLIC happens to have today is still granted to the role itself.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line

try:
    from psycopg import errors as pg_errors
    from psycopg import sql
except ImportError:  # reported by the module through HAS_PSYCOPG
    pg_errors = sql = None

PROFILES = ("logical", "physical", "probackup")
ATTRIBUTES = ("replication", "bypassrls")

# What PostgreSQL considers system schemas: never granted, never checked.
SYSTEM_SCHEMA_FILTER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'"
)


def backup_functions(major, profile):
    """EXECUTE grants a physical or pg_probackup backup role needs, by server major."""
    if major >= 15:
        start_stop = ["pg_catalog.pg_backup_start(text, boolean)", "pg_catalog.pg_backup_stop(boolean)"]
    else:
        start_stop = ["pg_catalog.pg_start_backup(text, boolean, boolean)", "pg_catalog.pg_stop_backup(boolean, boolean)"]
    functions = start_stop + [
        "pg_catalog.pg_switch_wal()",
        "pg_catalog.pg_create_restore_point(text)",
        "pg_catalog.pg_control_checkpoint()",
    ]
    if profile == "probackup":  # the list pg_probackup documents for a backup role
        functions += [
            "pg_catalog.current_setting(text)",
            "pg_catalog.set_config(text, text, boolean)",
            "pg_catalog.pg_is_in_recovery()",
            "pg_catalog.pg_last_wal_replay_lsn()",
            "pg_catalog.txid_current()",
            "pg_catalog.txid_current_snapshot()",
            "pg_catalog.txid_snapshot_xmax(txid_snapshot)",
        ]
    return functions


class Request:
    """What the task asks for, after profiles are expanded."""

    def __init__(self, user, state, roles=None, admin_option=False, attributes=None, object_privileges=False,
                 default_privileges=True, default_privileges_for=None, functions=None, schemas=None):
        self.user = user
        self.state = state
        self.roles = {role: admin_option for role in (roles or [])}
        self.attributes = {k: v for k, v in (attributes or {}).items() if v is not None}
        self.object_privileges = object_privileges
        self.default_privileges = default_privileges
        self.default_privileges_for = default_privileges_for
        self.functions = list(dict.fromkeys(functions or []))
        self.schemas = schemas

    @property
    def needs_databases(self):
        return bool(self.object_privileges or self.functions)


@dataclasses.dataclass(frozen=True)
class GrantOptions:
    """What role_grants was asked for (its options, typed)."""

    name: str
    state: str
    profile: List[str]
    roles: List[str]
    admin_option: bool
    replication: Optional[bool]
    bypassrls: Optional[bool]
    object_privileges: bool
    use_predefined_roles: bool
    default_privileges: bool
    default_privileges_for: Optional[List[str]]
    functions: List[str]
    schemas: Optional[List[str]]


def build_request(options, major):
    """Turn GrantOptions (and their profiles) into a Request for a server of ``major``."""
    roles = list(options.roles or [])
    functions = list(options.functions or [])
    attributes = {name: getattr(options, name) for name in ATTRIBUTES}
    object_privileges = bool(options.object_privileges)
    for profile in options.profile or []:
        if profile == "logical":
            if options.use_predefined_roles:
                roles.append("pg_read_all_data")
            else:
                object_privileges = True
        elif profile in ("physical", "probackup"):
            if attributes["replication"] is None:
                attributes["replication"] = True
            functions += backup_functions(major, profile)
            if profile == "physical" and major >= 15:
                roles.append("pg_checkpoint")  # CHECKPOINT before a base backup without superuser
    return Request(
        user=options.name,
        state=options.state,
        roles=list(dict.fromkeys(roles)),
        admin_option=bool(options.admin_option),
        attributes=attributes,
        object_privileges=object_privileges,
        default_privileges=options.default_privileges,
        default_privileges_for=options.default_privileges_for,
        functions=functions,
        schemas=options.schemas,
    )


class Action:
    """One statement to run, where, and what it changes in the summary."""

    def __init__(self, database, statement, effect, hint):
        self.database = database  # None: cluster-wide (roles, attributes)
        self.statement = statement
        self.effect = effect  # (path tuple, value); value None deletes the key
        self.hint = hint  # what the login role needs when this is refused

    def text(self, conn=None):
        """The statement as SQL text; psycopg before 3.2 needs a connection to quote."""
        return self.statement.as_string(conn)


# ---------------------------------------------------------------- reading

def read_cluster_state(conn, user):
    """Memberships and attributes of ``user``; PgdrError if it does not exist."""
    with conn.cursor() as cur:
        cur.execute("SELECT oid, rolreplication, rolbypassrls, rolsuper FROM pg_roles WHERE rolname = %s", [user])
        row = cur.fetchone()
        if row is None:
            raise PgdrError(
                'role "%s" does not exist; create it first (for example with community.postgresql.postgresql_user) '
                "or correct name" % user
            )
        _oid, replication, bypassrls, superuser = row
        cur.execute(
            "SELECT r.rolname, bool_or(m.admin_option) FROM pg_auth_members m "
            "JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
            "WHERE u.rolname = %s GROUP BY r.rolname ORDER BY r.rolname",
            [user],
        )
        roles = {name: {"admin_option": admin} for name, admin in cur.fetchall()}
    return {"roles": roles, "replication": replication, "bypassrls": bypassrls, "superuser": superuser}


def check_roles_exist(conn, names, what):
    if not names:
        return
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(names)])
        found = {row[0] for row in cur.fetchall()}
    missing = [name for name in names if name not in found]
    if missing:
        raise PgdrError(
            "%s %s not exist: %s; correct the name or create the role first"
            % (what, "does" if len(missing) == 1 else "do", ", ".join('"%s"' % m for m in missing))
        )


def list_databases(conn, requested=None):
    """Connectable non-template databases, or ``requested`` after checking they exist."""
    with conn.cursor() as cur:
        cur.execute("SELECT datname, datallowconn, datistemplate FROM pg_database ORDER BY datname")
        rows = cur.fetchall()
    if not requested:
        return [name for name, allowconn, template in rows if allowconn and not template]
    known = {name: allowconn for name, allowconn, _template in rows}
    missing = [db for db in requested if db not in known]
    if missing:
        raise PgdrError(
            "database %s not exist: %s; correct databases or leave it out to use every connectable database"
            % ("does" if len(missing) == 1 else "do", ", ".join('"%s"' % m for m in missing))
        )
    closed = [db for db in requested if not known[db]]
    if closed:
        raise PgdrError("database %s does not allow connections (datallowconn is false); remove it from databases"
                        % ", ".join('"%s"' % d for d in closed))
    return list(dict.fromkeys(requested))


def read_database_state(conn, database, user, request):
    """Explicit grants of ``user`` in one database, per schema, plus function grants."""
    state = {"schemas": {}, "functions": {}}
    with conn.cursor() as cur:
        if request.object_privileges:
            cur.execute(
                "SELECT n.nspname, pg_get_userbyid(n.nspowner), "
                " (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()), "
                " EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a WHERE a.grantee = r.oid AND a.privilege_type = 'USAGE') "
                "FROM pg_namespace n, pg_roles r WHERE r.rolname = %s AND " + SYSTEM_SCHEMA_FILTER + " ORDER BY 1",
                [user],
            )
            schemas = {
                name: {"owner": owner, "database_owner": db_owner, "usage": usage}
                for name, owner, db_owner, usage in cur.fetchall()
            }
            if request.schemas:
                missing = [s for s in request.schemas if s not in schemas]
                if missing:
                    raise PgdrError(
                        'schema %s not exist in database "%s": %s; correct schemas or leave it out to use every schema'
                        % ("does" if len(missing) == 1 else "do", database, ", ".join('"%s"' % m for m in missing))
                    )
                schemas = {s: schemas[s] for s in request.schemas}
            cur.execute(
                "SELECT n.nspname, c.relkind = 'S', count(*) AS total, "
                " count(*) FILTER (WHERE EXISTS (SELECT 1 FROM aclexplode(c.relacl) a "
                "   WHERE a.grantee = r.oid AND a.privilege_type = 'SELECT')) AS granted, "
                " array_agg(DISTINCT pg_get_userbyid(c.relowner)) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles r "
                "WHERE r.rolname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relpersistence <> 't' "
                "GROUP BY 1, 2",
                [user],
            )
            for schema, is_sequence, total, granted, owners in cur.fetchall():
                if schema in schemas:
                    key = "sequences" if is_sequence else "tables"
                    schemas[schema][key] = {"total": total, "granted": granted}
                    schemas[schema].setdefault("object_owners", set()).update(owners)
            cur.execute(
                "SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype "
                "FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, pg_roles r, "
                " LATERAL aclexplode(d.defaclacl) a "
                "WHERE r.rolname = %s AND a.grantee = r.oid AND a.privilege_type = 'SELECT' "
                "AND d.defaclobjtype IN ('r', 'S')",
                [user],
            )
            for owner, schema, objtype in cur.fetchall():
                if schema in schemas:
                    kind = "tables" if objtype == "r" else "sequences"
                    schemas[schema].setdefault("default_privileges", set()).add((owner, kind))
            for info in schemas.values():
                info.setdefault("tables", {"total": 0, "granted": 0})
                info.setdefault("sequences", {"total": 0, "granted": 0})
                info.setdefault("default_privileges", set())
                info["object_owners"] = sorted(info.get("object_owners", set()))
            state["schemas"] = schemas
        for signature in request.functions:
            cur.execute(
                "SELECT p.oid::regprocedure::text, EXISTS (SELECT 1 FROM aclexplode(p.proacl) a, pg_roles r "
                " WHERE r.rolname = %s AND a.grantee = r.oid AND a.privilege_type = 'EXECUTE') "
                "FROM pg_proc p WHERE p.oid = to_regprocedure(%s)",
                [user, signature],
            )
            row = cur.fetchone()
            if row is None:
                raise PgdrError(
                    'function %s does not exist in database "%s"; correct functions (a signature such as '
                    "pg_catalog.pg_switch_wal())" % (signature, database)
                )
            state["functions"][signature] = {"canonical": row[0], "granted": row[1]}
    return state


# ---------------------------------------------------------------- planning

def plan_cluster(request, current):
    """Membership and attribute statements to reach the request."""
    user = sql.Identifier(request.user)
    actions = []
    for role, admin in request.roles.items():
        have = current["roles"].get(role)
        target = sql.Identifier(role)
        hint = 'ADMIN OPTION on role "%s" (or superuser)' % role
        if request.state == "present":
            if have is None or (admin and not have["admin_option"]):
                statement = sql.SQL("GRANT {} TO {}" + (" WITH ADMIN OPTION" if admin else "")).format(target, user)
                actions.append(Action(None, statement, (("roles", role), {"admin_option": admin}), hint))
            elif not admin and have["admin_option"]:
                statement = sql.SQL("REVOKE ADMIN OPTION FOR {} FROM {}").format(target, user)
                actions.append(Action(None, statement, (("roles", role), {"admin_option": False}), hint))
        elif have is not None:
            statement = sql.SQL("REVOKE {} FROM {}").format(target, user)
            actions.append(Action(None, statement, (("roles", role), None), hint))
    for attribute, wanted in request.attributes.items():
        if request.state == "absent":
            if not wanted:
                continue  # absent takes away what is listed; listing it as false asks for nothing
            wanted = False
        if current[attribute] != wanted:
            keyword = ("" if wanted else "NO") + attribute.upper()
            statement = sql.SQL("ALTER ROLE {} WITH " + keyword).format(user)
            hint = "superuser (only a superuser may change %s)" % attribute.upper()
            actions.append(Action(None, statement, ((attribute,), wanted), hint))
    return actions


def plan_database(request, database, current):
    """Schema, table, sequence, default-privilege and function statements for one database."""
    user = sql.Identifier(request.user)
    actions = []
    present = request.state == "present"
    if request.object_privileges:
        for schema, info in current["schemas"].items():
            actions += _plan_schema(database, schema, info, user, present, request)
    for signature, info in current["functions"].items():
        if info["granted"] == present:
            continue
        # regprocedure output is the server's own quoted form of a function that exists
        verb = "GRANT EXECUTE ON FUNCTION {} TO {}" if present else "REVOKE EXECUTE ON FUNCTION {} FROM {}"
        statement = sql.SQL(verb).format(sql.SQL(info["canonical"]), user)
        hint = "to own %s or hold EXECUTE on it WITH GRANT OPTION (usually: superuser)" % info["canonical"]
        actions.append(Action(database, statement, (("databases", database, "functions", signature), present), hint))
    return actions


def default_privilege_owners(info, user):
    """Roles that create objects in a schema: its owner and the owners of what is there.

    pg_database_owner (the owner of ``public`` since 15) never creates objects
    itself; the database owner does, so it stands in.
    """
    owners = {info["owner"], *info["object_owners"]} - {user}
    if "pg_database_owner" in owners:
        owners.discard("pg_database_owner")
        owners.add(info["database_owner"])
    return sorted(owners - {user})


def _plan_schema(database, schema, info, user, present, request):
    ident = sql.Identifier(schema)
    base = ("databases", database, "schemas", schema)
    owner_hint = 'to own schema "%s" and its objects or hold the privileges WITH GRANT OPTION' % schema
    actions = []
    if info["usage"] != present:
        verb = "GRANT USAGE ON SCHEMA {} TO {}" if present else "REVOKE USAGE ON SCHEMA {} FROM {}"
        actions.append(Action(database, sql.SQL(verb).format(ident, user), (base + ("usage",), present), owner_hint))
    for kind, keyword in (("tables", "TABLES"), ("sequences", "SEQUENCES")):
        counts = info[kind]
        if present and counts["granted"] < counts["total"]:
            statement = sql.SQL("GRANT SELECT ON ALL " + keyword + " IN SCHEMA {} TO {}").format(ident, user)
            effect = (base + (kind,), "%d/%d" % (counts["total"], counts["total"]))
            actions.append(Action(database, statement, effect, owner_hint))
        elif not present and counts["granted"] > 0:
            statement = sql.SQL("REVOKE SELECT ON ALL " + keyword + " IN SCHEMA {} FROM {}").format(ident, user)
            actions.append(Action(database, statement, (base + (kind,), "0/%d" % counts["total"]), owner_hint))
    if present and request.default_privileges:
        owners = request.default_privileges_for or default_privilege_owners(info, request.user)
        wanted = {(owner, kind) for owner in owners for kind in ("tables", "sequences")}
        change, verb = sorted(wanted - info["default_privileges"]), "GRANT SELECT ON {} TO {}"
    elif not present:
        change, verb = sorted(info["default_privileges"]), "REVOKE SELECT ON {} FROM {}"
    else:
        change = []
    for owner, kind in change:
        statement = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} " + verb).format(
            sql.Identifier(owner), ident, sql.SQL(kind.upper()), user
        )
        hint = 'membership in role "%s" (or superuser) to set its default privileges' % owner
        effect = (base + ("default_privileges", "%s %s" % (owner, kind)), True if present else None)
        actions.append(Action(database, statement, effect, hint))
    return actions


# ---------------------------------------------------------------- summaries (diff, before/after)

def summarize(cluster, databases):
    """A plain, JSON-friendly picture of the role's access, used for diff and results."""
    summary = {
        "roles": copy.deepcopy(cluster["roles"]),
        "replication": cluster["replication"],
        "bypassrls": cluster["bypassrls"],
        "databases": {},
    }
    for name, state in databases.items():
        entry = {"schemas": {}, "functions": {}}
        for schema, info in state["schemas"].items():
            entry["schemas"][schema] = {
                "usage": info["usage"],
                "tables": "%d/%d" % (info["tables"]["granted"], info["tables"]["total"]),
                "sequences": "%d/%d" % (info["sequences"]["granted"], info["sequences"]["total"]),
                "default_privileges": {"%s %s" % pair: True for pair in sorted(info["default_privileges"])},
            }
        for signature, info in state["functions"].items():
            entry["functions"][signature] = info["granted"]
        summary["databases"][name] = entry
    return summary


def simulate(summary, actions):
    """The summary as it would be after ``actions`` (check mode's "after")."""
    after = copy.deepcopy(summary)
    for action in actions:
        path, value = action.effect
        node = after
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return after


# ---------------------------------------------------------------- applying

def apply_actions(conn, actions, login):
    """Run ``actions`` in one transaction; a refusal names what the login role lacks."""
    action = None
    try:
        with conn.transaction():
            with conn.cursor() as cur:
                for action in actions:
                    cur.execute(action.statement)
    except pg_errors.InsufficientPrivilege as exc:
        raise PgdrError(
            "%s was refused (%s); login role %s needs %s" % (action.text(conn), first_line(exc), login, action.hint),
            statement=action.text(conn),
        ) from None
    except pg_errors.Error as exc:
        raise PgdrError("%s failed: %s" % (action.text(conn), first_line(exc)), statement=action.text(conn)) from None


# ---------------------------------------------------------------- preflight

PREFLIGHT_SQL = (
    "SELECT 'schema', n.nspname, NULL::text, 'USAGE' FROM pg_namespace n "
    "WHERE " + SYSTEM_SCHEMA_FILTER + " AND NOT has_schema_privilege({user}, n.oid, 'USAGE') "
    "UNION ALL "
    "SELECT CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' "
    "  WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' ELSE 'table' END, "
    "  n.nspname, c.relname, 'SELECT' "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relpersistence <> 't' AND " + SYSTEM_SCHEMA_FILTER + " "
    "AND NOT (CASE WHEN c.relkind = 'S' THEN has_sequence_privilege({user}, c.oid, 'SELECT') "
    "          ELSE has_table_privilege({user}, c.oid, 'SELECT') END) "
    "UNION ALL "
    "SELECT 'row security', n.nspname, c.relname, 'BYPASSRLS' "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles me "
    "WHERE me.rolname = {user} AND c.relrowsecurity AND NOT me.rolbypassrls AND NOT me.rolsuper "
    "AND NOT pg_has_role(me.oid, c.relowner, 'USAGE') AND " + SYSTEM_SCHEMA_FILTER + " "
    "ORDER BY 1, 2, 3"
)


# Large objects the role cannot read. pg_read_all_data does not cover them, and pg_dump reads each one
# (lo_open), so without SELECT on it (or lo_compat_privileges on) the dump fails half way. Without
# has_largeobject_privilege (17+), the same rule: owner's privileges (superuser included), or a SELECT
# grant to the role, to a role whose privileges it has, or to PUBLIC (grantee 0).
PREFLIGHT_LARGE_OBJECTS_WHERE = (
    "NOT pg_catalog.current_setting('lo_compat_privileges')::boolean "
    "AND NOT pg_catalog.pg_has_role({user}, l.lomowner, 'USAGE') "
    "AND NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(l.lomacl) AS a WHERE a.privilege_type = 'SELECT' "
    "  AND (a.grantee = 0 OR pg_catalog.pg_has_role({user}, a.grantee, 'USAGE')))"
)
LARGE_OBJECTS_LISTED = 100  # oids a fix names one by one; beyond that it is a loop over them


def preflight_database(conn, database, user, as_user):
    """What ``user`` cannot read in the database behind ``conn``, each with the fix.

    ``as_user``: the connection is logged in as ``user`` itself (privilege
    functions evaluate current_user); otherwise the admin session asks on its
    behalf with the role name as a parameter.
    """
    role_expr = "current_user" if as_user else "%(user)s"
    query = PREFLIGHT_SQL.replace("{user}", role_expr)
    with conn.cursor() as cur:
        cur.execute(query, {"user": user})
        rows = cur.fetchall()
    findings = []
    for kind, schema, name, missing in rows:
        findings.append(dict(database=database, kind=kind, schema=schema, name=name, missing=missing,
                             fix=fix_statement(kind, schema, name, user, conn)))
    large_objects = preflight_large_objects(conn, database, user, role_expr)
    if large_objects:
        findings.append(large_objects)
    return findings


def preflight_large_objects(conn, database, user, role_expr):
    """One finding for the large objects ``user`` cannot read in this database (None: it can read them all).

    One finding, not one per object: a database can hold millions. It counts them, names their owners and
    the first oids, and its fix grants SELECT on exactly those (a DO loop when there are many).
    """
    where = PREFLIGHT_LARGE_OBJECTS_WHERE.replace("{user}", role_expr)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.count(*), pg_catalog.array_agg(DISTINCT pg_catalog.pg_get_userbyid(l.lomowner)) "
                    "FROM pg_catalog.pg_largeobject_metadata AS l WHERE " + where, {"user": user})
        count, owners = cur.fetchone()
        if not count:
            return None
        cur.execute("SELECT l.oid FROM pg_catalog.pg_largeobject_metadata AS l WHERE " + where + " ORDER BY l.oid LIMIT %(limit)s",
                    {"user": user, "limit": LARGE_OBJECTS_LISTED})
        oids = [row[0] for row in cur.fetchall()]
    return dict(database=database, kind="large objects", schema=None, name=None, missing="SELECT",
                count=count, owners=sorted(owners), oids=oids,
                fix=large_object_fix(oids if count <= LARGE_OBJECTS_LISTED else None, user, conn),
                alternative="or dump without large objects: pg_dump -B (--no-large-objects; --no-blobs before 16)")


def large_object_fix(oids, user, conn=None):
    """GRANT SELECT on the large objects ``oids`` to ``user``; with ``oids`` None, on every large object of the database
    (a DO loop, for databases with too many to list). Either runs as their owner or a superuser."""
    role = sql.Identifier(user)
    if oids is not None:
        return sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {}").format(
            sql.SQL(", ").join(sql.SQL(str(int(oid))) for oid in oids), role).as_string(conn)
    grant = "GRANT SELECT ON LARGE OBJECT %s TO " + role.as_string(conn).replace("%", "%%")  # a format() string
    body = ("DECLARE o oid; BEGIN FOR o IN SELECT l.oid FROM pg_catalog.pg_largeobject_metadata AS l LOOP "
            "EXECUTE pg_catalog.format(%s, o); END LOOP; END" % sql.Literal(grant).as_string(conn))
    return sql.SQL("DO {}").format(sql.Literal(body)).as_string(conn)


def connect_finding(database, user, reason, conn):
    fix = sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(user))
    return dict(database=database, kind="database", schema=None, name=database, missing="CONNECT",
                fix=fix.as_string(conn), error=reason)


def fix_statement(kind, schema, name, user, conn=None):
    """The GRANT (or ALTER ROLE) that gives ``user`` what a finding says it lacks."""
    role = sql.Identifier(user)
    if kind == "schema":
        statement = sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role)
    elif kind == "row security":
        statement = sql.SQL("ALTER ROLE {} BYPASSRLS").format(role)
    elif kind == "sequence":
        statement = sql.SQL("GRANT SELECT ON SEQUENCE {} TO {}").format(sql.Identifier(schema, name), role)
    else:
        statement = sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(sql.Identifier(schema, name), role)
    return statement.as_string(conn)
