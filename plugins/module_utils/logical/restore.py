# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore logical backup sets: globals, then databases, then prove them against the manifest.

The order is what makes it safe:

1. Every file of the set is read back and its size and sha256 compared with the manifest before the
   target server is touched (``plan()``, which changes nothing; check mode stops after it).
2. A database is created from template0 and loaded with pg_restore (custom, directory, tar) or psql with
   ON_ERROR_STOP in one transaction (plain). Cluster sets apply the globals first, leaving the roles and
   tablespaces that already exist exactly as they are.
3. A database being replaced is loaded under a new name, verified, and only then swapped in: the old
   one is never dropped before its replacement has passed verification. A database this run created
   and could not load is dropped again, so a half-loaded database never passes for a restore.

``LogicalRestore`` restores whole databases; ``table_restore.TableRestore`` restores chosen tables. Both
read the set through ``SetLoader`` and take ``LogicalRestoreOptions`` (restore_cluster's options, typed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import time
from typing import List, NamedTuple, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core import compression, encryption
from ansible_collections.pgdr.backup.plugins.module_utils.core.binaries import find_binary
from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run, run_pipeline
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.identifiers import split_table
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import server_version
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump as logical_dump
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set, fingerprint
from ansible_collections.pgdr.backup.plugins.module_utils.sets.backup_set import set_key
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import HashingReader, NotFound

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by the module
    psycopg = sql = None

LOGICAL_KINDS = ("logical-db", "logical-cluster", "logical-table")


# --- options and plans ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RestoreEncryptionOptions:
    """restore_cluster's ``encryption`` option: how to decrypt an encrypted set."""

    passphrase: Optional[str]


@dataclasses.dataclass(frozen=True)
class LogicalRestoreOptions:
    """restore_cluster's options for logical and table restores (defaults are the argument spec's)."""

    cluster: Optional[str]  # the name the sets are filed under in the repository
    backup_id: Optional[str]
    database: Optional[str]
    databases: Optional[List[str]]
    globals: Optional[bool]
    if_exists: Optional[str]
    keep_previous: Optional[bool]
    verify: Optional[bool]
    analyze: Optional[bool]
    no_owner: Optional[bool]
    no_privileges: Optional[bool]
    encryption: Optional[RestoreEncryptionOptions]
    pg_bin_dir: Optional[str]
    tables: Optional[List[str]]
    schemas: Optional[List[str]]
    conflict: Optional[str]
    jobs: Optional[int]
    terminate_sessions: Optional[bool]
    tablespace_mapping: Optional[dict]
    globals_tablespaces: Optional[str]
    session_role: Optional[str]


class DatabasePlan(NamedTuple):
    """One database of a set and where it goes."""

    source: str  # the database's name in the set
    target: str  # the database it is restored into
    action: str  # create, use or replace


# --- pure helpers ---------------------------------------------------------------------


def database_files(manifest):
    """{database: [file entries]} for the dumps in a logical set, and the globals file if any."""
    by_db, globals_file = {}, None
    for entry in manifest["files"]:
        if entry.get("role") == "globals":
            globals_file = entry
        elif entry.get("role") == "database":
            by_db.setdefault(entry["database"], []).append(entry)
    return by_db, globals_file


MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL cuts longer names short (with a NOTICE only)


def check_name_length(name, why):
    """Refuse a database name PostgreSQL would cut short, naming the fix; ``why`` says where the name comes from."""
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise PgdrError('the database name "%s" (%s) is %d bytes, longer than the %d PostgreSQL allows, and would be cut short; '
                        "nothing was changed; restore into a shorter name with database (and rename it afterwards)"
                        % (name, why, size, MAX_NAME_BYTES))


def swap_names(target, backup_id):
    """(new, previous): where a replace loads the new copy, and where the database it replaces is renamed to."""
    return "%s_pgdr_new_%s" % (target, backup_id), "%s_previous_%s" % (target, backup_id)


def plan_databases(manifest, options, exists):
    """[DatabasePlan] for a logical-db or logical-cluster set; ``exists(name)`` says whether the target has that database.

    Refuses, before anything is changed, a database the set does not hold, (with if_exists fail) a target that exists,
    and every name the restore would make that is too long for PostgreSQL or already taken.
    """
    by_db, _globals = database_files(manifest)
    backup_id = manifest["backup_id"]
    if manifest["kind"] == "logical-db":
        sources = list(by_db)
    else:
        sources = options.databases or list(by_db)
        unknown = [d for d in sources if d not in by_db]
        if unknown:
            raise PgdrError("set %s has no dump of database(s) %s; it holds %s" % (backup_id, ", ".join(unknown), ", ".join(sorted(by_db))))
    if options.database and len(sources) != 1:
        # one name cannot hold several databases: say so rather than restore them under their own names
        raise PgdrError("database names the one database a restore goes into, but set %s restores %d databases (%s); choose one with "
                        "databases: [name] to restore it as %s, or leave database out to restore each under its own name"
                        % (backup_id, len(sources), ", ".join(sources), options.database))
    plans = []
    for source in sources:
        target = options.database or source
        check_name_length(target, "the target")
        if not exists(target):
            plans.append(DatabasePlan(source, target, "create"))
        elif options.if_exists == "fail":
            hint = "database (another name)" if len(sources) == 1 else "restore it alone under another name (databases: [%s], database)" % source
            raise PgdrError('database "%s" exists on the target; set if_exists (rename, replace, use) or %s; nothing was changed' % (target, hint))
        elif options.if_exists == "rename":
            copy = "%s_restored_%s" % (target, backup_id)
            check_name_length(copy, "if_exists: rename")
            if exists(copy):
                raise PgdrError('database "%s" exists too (an earlier restore of this set); nothing was changed; drop or rename it, '
                                "or use if_exists: replace" % copy)
            plans.append(DatabasePlan(source, copy, "create"))
        else:
            if options.if_exists == "replace":
                new, previous = swap_names(target, backup_id)
                for name, why in ((new, "the new copy of a replace"), (previous, "the replaced database")):
                    check_name_length(name, why)
                    if exists(name):
                        raise PgdrError('database "%s" (%s) exists already, left by an earlier restore of this set; nothing was '
                                        "changed; drop or rename it, then run again" % (name, why))
            plans.append(DatabasePlan(source, target, options.if_exists))
    return plans


def creates_public_schema(manifest):
    """Whether the set's database dumps hold CREATE SCHEMA public: pg_dump writes it when public is named with -n (schemas)."""
    options = manifest.get("options") or {}
    return "public" in (options.get("schemas") or []) and not options.get("data_only")


def schemas_for_tables(manifest):
    """Schemas a fresh database needs before a dump made with tables: [...] loads: pg_dump -t dumps the tables, not their schemas."""
    options = manifest.get("options") or {}
    if not options.get("tables") or options.get("data_only"):
        return []
    dumped_schemas = set(options.get("schemas") or [])
    return sorted({split_table(t)[0] for t in options["tables"]} - dumped_schemas - {"public"})


def input_stages(entry, gpg):
    """Stages that turn a stored file back into what the tool wrote: decrypt, then decompress."""
    stages = []
    if entry["encryption"]["method"] != "none":
        if gpg is None:
            raise PgdrError("file %s is encrypted; give encryption.passphrase to restore it" % entry["path"])
        stages.append(gpg.decrypt_argv())
    # custom and directory dumps are compressed inside the archive, pg_restore reads them as they are;
    # plain, tar, and COPY files (csv, text, binary) are compressed as whole streams
    if entry["format"] not in ("custom", "directory"):
        method = entry["compression"]["method"]
        if method != "none":
            stages.append(compression.decompress_argv(method))
    return stages


def conninfo_dbname(database):
    """``dbname='...'`` for -d: a bare name with '=' in it would be read as a connection string."""
    return "dbname='%s'" % database.replace("\\", "\\\\").replace("'", "\\'")


def load_argv(entry, tools, database, options, jobs=1, path=None):
    """The program that loads one database dump into ``database`` (which exists): psql for plain SQL, pg_restore otherwise."""
    fmt = entry["format"]
    if fmt == "plain":
        return [tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
                "--dbname=" + conninfo_dbname(database), "-f", "-"]
    argv = [tools["pg_restore"], "--no-password", "--exit-on-error", "--dbname=" + conninfo_dbname(database)]
    if options.no_owner:
        argv.append("--no-owner")
    if options.no_privileges:
        argv.append("--no-privileges")
    if options.globals_tablespaces == "skip":
        argv.append("--no-tablespaces")  # objects go to the default tablespace
    if jobs > 1:
        argv.append("--jobs=%d" % jobs)
    elif fmt == "custom":
        argv.append("--single-transaction")
    return argv + ([path] if path else [])


# pg_dumpall --globals-only writes one statement per line for these
_IDENT = r'(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)'
_ROLE_LINE = re.compile(r"^(CREATE|ALTER) ROLE (%s)[ ;]" % _IDENT)
_CREATE_TABLESPACE = re.compile(r"^CREATE TABLESPACE (%s) OWNER (%s) LOCATION '((?:[^']|'')*)';\s*$" % (_IDENT, _IDENT))
_TABLESPACE_LINE = re.compile(r"^(?:CREATE TABLESPACE|ALTER TABLESPACE|COMMENT ON TABLESPACE|SECURITY LABEL FOR \S+ ON TABLESPACE|"
                              r"(?:GRANT|REVOKE) .* ON TABLESPACE) (%s) " % _IDENT)


def _unquote(ident):
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


class GlobalsPlan(NamedTuple):
    """What applying a cluster set's globals does: tablespaces first (CREATE TABLESPACE cannot run in a transaction),
    then ``sql`` (roles, tablespace owners, grants, comments) in one transaction."""

    sql: str
    roles_created: List[str]
    roles_existing: List[str]
    tablespaces_created: List[dict]  # {name, location, source_location}
    tablespaces_skipped: List[str]
    tablespaces_existing: List[str]

    def report(self):
        return {k: v for k, v in self._asdict().items() if k != "sql"}


def _append_once(names, name):
    """A role or tablespace has several statements in the globals; the report names it once."""
    if name not in names:
        names.append(name)


def plan_globals(text, existing_roles, existing_tablespaces, mapping=None, tablespaces="create"):
    """A GlobalsPlan for pg_dumpall --globals-only ``text``.

    Roles and tablespaces that already exist are left exactly as they are (attributes, password, settings, grants,
    comments); memberships are granted again, which PostgreSQL accepts. ``mapping`` gives new locations keyed by
    tablespace name or original location; ``tablespaces`` is create or skip (no tablespace statement is applied).
    """
    mapping = mapping or {}
    kept, roles_created, roles_existing = [], [], []
    created, skipped, existing = [], [], []
    for line in text.splitlines(keepends=True):
        role = _ROLE_LINE.match(line)
        if role:
            name = _unquote(role.group(2))
            if name in existing_roles:
                _append_once(roles_existing, name)
                continue
            if role.group(1) == "CREATE":
                roles_created.append(name)
        tablespace = _TABLESPACE_LINE.match(line)
        if tablespace:
            name = _unquote(tablespace.group(1))
            if name in existing_tablespaces:
                _append_once(existing, name)
                continue
            if tablespaces == "skip":
                _append_once(skipped, name)
                continue
            create = _CREATE_TABLESPACE.match(line)
            if create:
                source_location = create.group(3).replace("''", "'")
                location = mapping.get(name) or mapping.get(source_location) or source_location
                if not location.startswith("/"):
                    raise PgdrError('tablespace_mapping gives tablespace "%s" the location "%s", which is not an absolute path; '
                                    "nothing was applied" % (name, location))
                created.append(dict(name=name, location=location, source_location=source_location))
                # created before the transaction, by the login user; the owner (maybe a role created below) is set inside it
                line = "ALTER TABLESPACE %s OWNER TO %s;\n" % (tablespace.group(1), create.group(2))
        kept.append(line)
    in_set = [(_unquote(m.group(1)), m.group(3).replace("''", "'")) for m in map(_CREATE_TABLESPACE.match, text.splitlines()) if m]
    unused = [key for key in mapping if key not in {name for name, _l in in_set} | {location for _n, location in in_set}]
    if unused:
        raise PgdrError("tablespace_mapping names %s, which the set's globals do not hold (they hold %s); nothing was applied"
                        % (", ".join(sorted(unused)), ", ".join("%s at %s" % pair for pair in in_set) or "no tablespace"))
    return GlobalsPlan("".join(kept), roles_created, roles_existing, created, skipped, existing)


def tablespace_problem(conn, location):
    """Why the server could not make a tablespace in ``location`` (missing, not a folder, not empty), or None.

    Asked of the server, which sees its own host's files; without the rights to look (pg_stat_file needs a superuser or
    pg_read_server_files) it says None and CREATE TABLESPACE itself will tell.
    """
    try:
        with conn.transaction():
            with conn.cursor() as cur:
                cur.execute("SELECT (pg_catalog.pg_stat_file(%s, true)).isdir", [location])
                isdir = cur.fetchone()[0]
                if isdir is None:
                    return "the folder does not exist on the target host"
                if not isdir:
                    return "it is not a folder"
                cur.execute("SELECT count(*) FROM pg_catalog.pg_ls_dir(%s)", [location])
                if cur.fetchone()[0]:
                    return "the folder is not empty"
    except psycopg.Error:
        return None
    return None


def tablespace_message(name, location, problem):
    return ('tablespace "%s" cannot be created at %s: %s; nothing was applied; create it (empty, owned by the server\'s OS user), '
            "map it with tablespace_mapping: {%s: /an/empty/folder}, or set globals_tablespaces: skip" % (name, location, problem, name))


# settings whose list items pg_dump quotes one by one (pg_dump's variable_is_guc_list_quote)
LIST_QUOTE_SETTINGS = ("local_preload_libraries", "search_path", "session_preload_libraries", "shared_preload_libraries",
                       "temp_tablespaces", "unix_socket_directories")
_ACL_PRIVILEGES = {"C": "CREATE", "T": "TEMPORARY", "c": "CONNECT"}


def split_setting_list(value):
    """The items of a list setting as pg_db_role_setting holds it (``"$user", public``): commas outside double quotes
    separate, double quotes are removed, a doubled one is a quote."""
    items, item, quoted, i = [], [], False, 0
    while i < len(value):
        char = value[i]
        if quoted:
            if char == '"' and value[i + 1:i + 2] == '"':
                item.append('"')
                i += 1
            elif char == '"':
                quoted = False
            else:
                item.append(char)
        elif char == '"':
            quoted = True
        elif char == ",":
            items.append("".join(item).strip())
            item = []
        else:
            item.append(char)
        i += 1
    items.append("".join(item).strip())
    return items


def setting_value(name, value):
    """The value of ``SET name = ...`` that stores ``value`` back as it was read."""
    if name in LIST_QUOTE_SETTINGS:
        return sql.SQL(", ").join(sql.Literal(item) for item in split_setting_list(value))
    return sql.Literal(value)


def parse_aclitem(text):
    """``grantee=privileges/grantor`` (aclitem as text; an empty grantee is PUBLIC) as (grantee or None, {privilege: grantable})."""
    if text.startswith('"'):
        end = 1
        while True:
            end = text.index('"', end)
            if text[end + 1:end + 2] == '"':
                end += 2
                continue
            break
        grantee, rest = text[1:end].replace('""', '"'), text[end + 1:]
    else:
        grantee, _eq, rest = text.partition("=")
        rest = "=" + rest
    privileges = rest[1:].split("/", 1)[0]
    granted = {}
    for i, letter in enumerate(privileges):
        if letter in _ACL_PRIVILEGES:
            granted[_ACL_PRIVILEGES[letter]] = privileges[i + 1:i + 2] == "*"
    return (grantee or None), granted


def acl_without_grantors(acl):
    """An ACL compared as grants, not by who granted them (a restore grants as the database's owner)."""
    return sorted(item.rsplit("/", 1)[0] for item in acl or [])


def settings_mismatches(expected, actual):
    """['name: what differs'] between the database-level properties expected (from the manifest) and read back."""
    problems = []
    for key in ("owner", "connection_limit", "comment"):
        if key in expected and expected[key] != actual.get(key):
            problems.append("%s is %r, the backup has %r" % (key.replace("_", " "), actual.get(key), expected[key]))
    if "acl" in expected and acl_without_grantors(expected["acl"]) != acl_without_grantors(actual.get("acl")):
        problems.append("privileges are %s, the backup has %s" % (acl_without_grantors(actual.get("acl")), acl_without_grantors(expected["acl"])))
    want = {(s["role"], s["name"]): s["value"] for s in expected.get("settings", [])}
    have = {(s["role"], s["name"]): s["value"] for s in actual.get("settings", [])}
    for key in sorted(set(want) | set(have), key=lambda k: (k[0] or "", k[1])):
        if want.get(key) != have.get(key):
            where = "setting %s%s" % (key[1], " for role %s" % key[0] if key[0] else "")
            problems.append("%s is %r, the backup has %r" % (where, have.get(key), want.get(key)))
    return problems


def first_problem(verification):
    """The first thing a failed verification found: a table's, or a database-level property's."""
    if verification["mismatches"]:
        return fingerprint.describe_mismatches(verification["mismatches"])
    return verification["settings_mismatches"][0]


def verification_message(databases):
    """The failure message for restored databases whose tables differ from the manifest, or None when all match."""
    failed = [d for d in databases if d.get("verification") and not d["verification"]["verified"]]
    if not failed:
        return None
    verification = failed[0]["verification"]
    if verification["mismatches"]:
        return "verification failed for %d database(s): in %s, %s; the restored data differs from the backup" % (
            len(failed), failed[0]["target"], fingerprint.describe_mismatches(verification["mismatches"]))
    return "verification failed for %d database(s): in %s, %s; the restored database differs from the backup" % (
        len(failed), failed[0]["target"], verification["settings_mismatches"][0])


# --- the target server ----------------------------------------------------------------


class _CheckedReader(HashingReader):
    """A repository reader hashed on the way through, checked against the file's manifest entry once read to its end."""

    def __init__(self, inner, entry, key):
        super().__init__(inner)
        self.entry, self.key = entry, key

    def check(self):
        """Read what the consumer left and raise if the file differs from the manifest."""
        self.drain()
        if not self.matches(self.entry["size"], self.entry["sha256"]):
            raise PgdrError(
                "file %s does not match its manifest (sha256 or size differs); the set is corrupt, the target was not touched; "
                "restore another backup" % self.key, bad_files=[self.entry["path"]]
            )


def feed(repo, key, argvs, env, sink=None, stdout_path=None, expect=None):
    """Stream one stored file into the first process of a pipeline.

    With ``expect`` (the file's manifest entry) the bytes are hashed as they stream and checked against its size and
    sha256 at the end, so the file is read once; damage that makes a tool fail first is still named as damage.
    """
    with repo.open_reader(key) as reader:
        checked = _CheckedReader(reader, expect, key) if expect else None
        try:
            result = run_pipeline(argvs, env=env, stdin_reader=checked or reader, sink=sink, stdout_path=stdout_path)
        except Exception as exc:
            if checked is not None:
                try:
                    checked.check()
                except PgdrError as damaged:
                    raise damaged from None
                except Exception:  # noqa: BLE001 - the store failed too; the first failure is the one to report
                    pass
            if isinstance(exc, PgdrError):
                cmd = exc.details.get("cmd") or []
                if cmd[:1] == ["gpg"] and "--decrypt" in cmd:  # a wrong passphrase is by far the likeliest cause
                    exc.msg += "; check encryption.passphrase: it must be the one the set was encrypted with"
                    exc.args = (exc.msg,)
            raise
        if checked is not None:
            checked.check()
        return result


def find_tools(admin, pg_bin_dir, manifest):
    """pg_restore, psql and pg_dump for the server ``admin`` is connected to.

    pg_restore must also read the set's archive format: a set pg_dump 18 wrote of a 15 server needs pg_restore
    18 or newer (pg_restore 15 stops with "unsupported version in file header"), so the set's pg_dump major is a
    minimum.
    """
    major = server_version(admin)["major"]
    tools = {name: find_binary(name, major, pg_bin_dir)[0] for name in ("psql", "pg_dump")}
    tools["pg_restore"] = find_binary("pg_restore", major, pg_bin_dir, min_major=dumped_with_major(manifest))[0]
    return tools


def check_loadable(manifest, target_major):
    """Refuse a set written by a pg_dump newer than the target server: PostgreSQL does not promise that a newer pg_dump's
    output loads into an older server, and pg_dump/pg_restore 17 and later do set transaction_timeout, which 16 and
    older reject, so such a load fails after the target database was created."""
    dumped_with = dumped_with_major(manifest)
    if dumped_with and dumped_with > target_major:
        raise PgdrError(
            "backup set %s was written by pg_dump %d, whose output PostgreSQL %d cannot load (a newer pg_dump's output is "
            "only promised to load into the same or a newer server); restore it into PostgreSQL %d or newer, or back up "
            "with pg_dump %d (pg_bin_dir)" % (manifest["backup_id"], dumped_with, target_major, dumped_with, target_major))


def dumped_with_major(manifest):
    """The major of the pg_dump that wrote a logical set (None when the manifest does not say)."""
    tool = manifest.get("tool") or {}
    version = str(tool.get("version") or "")
    head = version.split(".", 1)[0]
    return int(head) if tool.get("name") in ("pg_dump", "pg_dumpall") and head.isdigit() else None


def decryption(options):
    """A gpg session for ``options.passphrase`` (a RestoreEncryptionOptions), or a context yielding None without one."""
    passphrase = options.passphrase if options else None
    return encryption.gpg_session(passphrase) if passphrase else contextlib.nullcontext()


def create_database(conn, name, info=None, keep_owner=True):
    """CREATE DATABASE from template0 with the source's encoding and, if that role exists here, its owner."""
    info = info or {}
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if info.get("encoding"):
        statement = sql.SQL("{} ENCODING {}").format(statement, sql.Literal(info["encoding"]))
    owner = info.get("owner") if keep_owner else None
    with conn.cursor() as cur:
        if owner:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner])
            if cur.fetchone():
                statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
        try:
            cur.execute(statement)
        except psycopg.Error as exc:
            raise PgdrError('creating database "%s" failed: %s; the user (or session_role) needs CREATEDB%s' % (
                name, first_line(exc), " and membership in its owner %s, or set no_owner: true" % owner if owner else "")) from None


def database_exists(conn, name):
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cur.fetchone() is not None


def drop_database(conn, name):
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def open_sessions(conn, database):
    """How many client sessions other than ours are connected to ``database``."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid() "
                    "AND backend_type = 'client backend'", [database])
        return cur.fetchone()[0]


def sessions_message(database, count):
    return ('database "%s" has %d open session(s), which block the rename that replaces it; nothing was changed; close them, '
            "or set terminate_sessions: true to end them" % (database, count))


def swap_database(conn, target, new, previous, terminate=False):
    """``target`` -> ``previous`` and ``new`` -> ``target`` in one transaction (PostgreSQL allows ALTER DATABASE RENAME in
    one, unlike CREATE and DROP DATABASE): both renames happen or neither, so the target name is never missing.

    Sessions on ``target`` make the rename fail; with ``terminate`` they are ended first, otherwise the swap is refused."""
    rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
    if not terminate:
        count = open_sessions(conn, target)  # again: a session may have connected since plan()
        if count:
            raise PgdrError(sessions_message(target, count).replace("nothing was changed", "the restored copy was dropped, the database unchanged"))
    try:
        with conn.transaction():
            with conn.cursor() as cur:
                if terminate:
                    cur.execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = %s "
                                "AND pid <> pg_catalog.pg_backend_pid()", [target])
                cur.execute(rename.format(sql.Identifier(target), sql.Identifier(previous)))
                cur.execute(rename.format(sql.Identifier(new), sql.Identifier(target)))
    except psycopg.Error as exc:
        hint = "" if terminate else "; set terminate_sessions: true to end sessions that block it"
        raise PgdrError('swapping the restored copy in for database "%s" failed and was rolled back, "%s" is unchanged: %s%s'
                        % (target, target, first_line(exc), hint)) from None


def verify_database(conn_params, restored_name, source_name, manifest):
    """Recompute fingerprints in the restored database and compare with the manifest."""
    expected = [t for t in manifest.get("tables", []) if t["database"] == source_name]
    conn = conn_params.connect(restored_name, autocommit=True)
    try:
        fingerprint.begin_snapshot(conn)
        names = [(t["schema"], t["table"]) for t in expected]
        present = set(map(tuple, fingerprint.list_tables(conn)))
        actual = fingerprint.table_fingerprints(conn, source_name, [n for n in names if n in present],
                                                method=fingerprint.recorded_method(expected))
    finally:
        conn.close()
    mismatches = fingerprint.compare(expected, actual)
    return dict(database=restored_name, source_database=source_name, tables=len(expected),
                verified=not mismatches, mismatches=mismatches)


def analyze(conn_params, database):
    conn = conn_params.connect(database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    finally:
        conn.close()


def existing_roles(conn, names):
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", [list(names)])
        return {row[0] for row in cur.fetchall()}


def expected_properties(info, roles, keep_owner, keep_privileges):
    """(expected, skipped): the database-level properties of a manifest ``databases[]`` entry that a restore can apply
    where ``roles`` exist, and what it cannot (a role absent on the target). Keys an older set lacks are left out."""
    expected, skipped = {}, []
    if keep_owner and info.get("owner"):
        if info["owner"] in roles:
            expected["owner"] = info["owner"]
        else:
            skipped.append("owner %s (no such role)" % info["owner"])
    if "settings" in info:
        expected["settings"] = []
        for item in info["settings"] or []:
            if item["role"] is None or item["role"] in roles:
                expected["settings"].append(item)
            else:
                skipped.append("%s for role %s (no such role)" % (item["name"], item["role"]))
    if keep_privileges and info.get("acl") is not None:
        acl = []
        for item in info["acl"]:
            grantee, _granted = parse_aclitem(item)
            if grantee is None or grantee in roles:
                acl.append(item)
            else:
                skipped.append("privileges of role %s (no such role)" % grantee)
        expected["acl"] = acl
    if info.get("connection_limit") is not None:
        expected["connection_limit"] = info["connection_limit"]
    if "comment" in info:
        expected["comment"] = info["comment"]
    return expected, skipped


def apply_properties(conn, database, expected):
    """ALTER DATABASE / ALTER ROLE IN DATABASE SET, the ACL, connection limit and comment of ``expected`` on ``database``.

    A setting the target refuses (one a newer PostgreSQL removed, say) is left out of ``expected`` and returned as
    ['name: why']; anything else that fails raises."""
    db = sql.Identifier(database)
    refused = []
    with conn.cursor() as cur:
        for item in list(expected.get("settings", [])):
            value = setting_value(item["name"], item["value"])
            if item["role"] is None:
                statement = sql.SQL("ALTER DATABASE {} SET {} = {}").format(db, sql.Identifier(item["name"]), value)
            else:
                statement = sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(item["role"]), db, sql.Identifier(item["name"]), value)
            try:
                cur.execute(statement)
            except psycopg.Error as exc:
                expected["settings"].remove(item)
                refused.append("%s%s (%s)" % (item["name"], " for role %s" % item["role"] if item["role"] else "", first_line(exc)))
        if "acl" in expected:
            # from nothing: no grant to PUBLIC or the owner is left but the backup's own
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
            cur.execute("SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database WHERE datname = %s", [database])
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, sql.Identifier(cur.fetchone()[0])))
            for item in expected["acl"]:
                grantee, granted = parse_aclitem(item)
                to = sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)
                for grantable in (False, True):
                    privileges = [p for p, g in granted.items() if g is grantable]
                    if privileges:
                        cur.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                            sql.SQL(", ").join(sql.SQL(p) for p in privileges), db, to,
                            sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))
        if expected.get("connection_limit") is not None:
            cur.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(db, sql.Literal(int(expected["connection_limit"]))))
        if expected.get("comment") is not None:
            cur.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(expected["comment"])))
    return refused


def read_properties(conn, database):
    """The database-level properties of ``database`` as the dump's database_info records them."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.pg_get_userbyid(d.datdba), d.datacl::pg_catalog.text[], d.datconnlimit, "
                    "pg_catalog.shobj_description(d.oid, 'pg_database') FROM pg_catalog.pg_database AS d WHERE d.datname = %s", [database])
        owner, acl, limit, comment = cur.fetchone()
        cur.execute("SELECT r.rolname, s.setconfig FROM pg_catalog.pg_db_role_setting AS s "
                    "JOIN pg_catalog.pg_database AS d ON d.oid = s.setdatabase LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = s.setrole "
                    "WHERE d.datname = %s ORDER BY r.rolname NULLS FIRST", [database])
        settings = []
        for role, config in cur.fetchall():
            for entry in config or []:
                name, _sep, value = entry.partition("=")
                settings.append({"role": role, "name": name, "value": value})
    return dict(owner=owner, acl=list(acl) if acl is not None else None, connection_limit=limit, comment=comment, settings=settings)


def pgoptions_role(role, current=None):
    """PGOPTIONS with ``-c role=<role>`` added: libpq splits options at spaces, so spaces and backslashes are escaped."""
    escaped = role.replace("\\", "\\\\").replace(" ", "\\ ")
    return ("%s -c role=%s" % (current or "", escaped)).strip()


class SessionRoleParams:
    """ConnectionParams whose every session runs as ``role`` (session_role): SET ROLE on psycopg connections, and
    ``-c role=...`` in PGOPTIONS for pg_restore, psql and pg_dump, so what the restore creates and loads is done with
    the role's privileges and owned by it."""

    def __init__(self, inner, role):
        self.inner, self.role = inner, role

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def connect(self, dbname=None, autocommit=False):
        conn = self.inner.connect(dbname, autocommit=autocommit)
        set_session_role(conn, self.role)
        return conn

    @contextlib.contextmanager
    def child_env(self, base_env=None):
        with self.inner.child_env(base_env) as env:
            env["PGOPTIONS"] = pgoptions_role(self.role, env.get("PGOPTIONS"))
            yield env


def set_session_role(conn, role):
    """SET ROLE, kept for the whole session (committed: a rolled-back transaction would undo it)."""
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    if not conn.autocommit:
        conn.commit()


def with_session_role(conn_params, admin, role):
    """(conn_params, admin) acting as ``role``; refused in one line, before anything changes, unless the role exists and the
    login user may SET ROLE to it. Without a role, as they are."""
    if not role:
        return conn_params, admin
    logical_dump.check_session_role(admin, role)
    set_session_role(admin, role)
    return SessionRoleParams(conn_params, role), admin


# --- reading a set back into databases ------------------------------------------------


class SetLoader:
    """What the database and table restores share: the set, the target server, and loading a dump into one of its databases.

    ``admin`` is an autocommit connection to the target server (CREATE / DROP / ALTER DATABASE). ``session()``
    finds the target's client binaries and holds the decryption session while files are read.
    """

    def __init__(self, options, conn_params, repo, manifest, admin):
        self.options = options
        self.conn_params = conn_params
        self.repo = repo
        self.manifest = manifest
        self.cluster_name = options.cluster
        self.admin = admin
        self.files_by_database, self.globals_file = database_files(manifest)
        self.tools = None  # pg_restore, psql, pg_dump of the target's major version, within session()
        self.gpg = None  # the decryption of an encrypted set, within session()

    # True where the set is loaded into a scratch database first (table restores): each file is then checked as it is read,
    # once, instead of every file of the set being read back before anything starts
    checks_while_reading = False

    def check_files(self):
        """Read every file of the set back against the manifest (size, sha256); raises naming the first bad one.

        First, whether this server can load the set at all (a cheap question, so a refusal costs no reading).
        """
        check_loadable(self.manifest, server_version(self.admin)["major"])
        backup_set.check_files(self.repo, self.manifest, self.cluster_name)

    def check_present(self, entries):
        """Each of ``entries`` is stored with its manifest size (one stat each, nothing read); raises naming the first that is not."""
        where = "%s/%s" % (self.cluster_name, self.manifest["backup_id"])
        for entry in entries:
            try:
                size = self.repo.size(self.file_key(entry))
            except NotFound:
                raise PgdrError("file %s in set %s is missing; the set is damaged, restore another backup" % (entry["path"], where),
                                bad_files=[entry["path"]]) from None
            if size != entry["size"]:
                raise PgdrError("file %s in set %s is %d bytes but the manifest says %d; the set is corrupt, restore another backup"
                                % (entry["path"], where, size, entry["size"]), bad_files=[entry["path"]])

    def feed_file(self, entry, argvs, env, **kwargs):
        """feed() of one file of the set, checked against the manifest on the way when this loader reads before checking."""
        return feed(self.repo, self.file_key(entry), argvs, env, expect=entry if self.checks_while_reading else None, **kwargs)

    def result(self, **facts):
        """The result of a restore of this set: what every logical and table restore reports, then ``facts``."""
        return dict(
            changed=False,
            backup_id=self.manifest["backup_id"],
            kind=self.manifest["kind"],
            checked_files=len(self.manifest["files"]),
            globals_restored=False,
            **facts,
        )

    def file_key(self, entry):
        return set_key(self.cluster_name, self.manifest["backup_id"], entry["path"])

    @contextlib.contextmanager
    def session(self):
        self.tools = find_tools(self.admin, self.options.pg_bin_dir, self.manifest)
        with decryption(self.options.encryption) as gpg:
            self.gpg = gpg
            try:
                yield
            finally:
                self.gpg = None

    def load_database(self, entries, database, fresh=False):
        """Load one database's dump (custom, directory, tar, plain) into the existing ``database``.

        ``fresh``: this run has just created ``database`` from template0. A dump that creates schema public (made with
        schemas: [public]) would fail there on "schema public already exists", so the empty public schema is dropped
        first and the dump's own one (with its owner, ACL and comment) takes its place; a dump made with tables: [...]
        holds no CREATE SCHEMA, so the tables' schemas are created first (owned by the login user).

        ``jobs`` > 1 runs pg_restore in parallel: directory dumps are staged anyway,
        a custom dump is fetched (and decrypted) into a 0700 staging folder first
        (pg_restore -j cannot read a pipe).
        """
        if fresh and (creates_public_schema(self.manifest) or schemas_for_tables(self.manifest)):
            conn = self.conn_params.connect(database, autocommit=True)
            try:
                if creates_public_schema(self.manifest):
                    conn.execute("DROP SCHEMA public")  # no CASCADE: it is the empty one template0 gave
                for schema in schemas_for_tables(self.manifest):
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            finally:
                conn.close()
        with self.conn_params.child_env() as env:
            env["PGDATABASE"] = database
            entry = entries[0]
            if entry["format"] == "directory":
                self._load_directory(entries, database, env)
                return
            jobs = self.options.jobs
            if entry["format"] == "custom" and (jobs or 1) > 1:
                staging = tempfile.mkdtemp(prefix="pgdr-restore-")
                try:
                    os.chmod(staging, 0o700)
                    path = os.path.join(staging, "dump.custom")
                    self.feed_file(entry, input_stages(entry, self.gpg) or [["cat"]], None, stdout_path=path)
                    run_pipeline([load_argv(entry, self.tools, database, self.options, jobs=jobs, path=path)], env=env)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                return
            argv = load_argv(entry, self.tools, database, self.options)
            self.feed_file(entry, input_stages(entry, self.gpg) + [argv], env)

    def _load_directory(self, entries, database, env):
        """Directory dumps are folders: fetch (and decrypt) them into a 0700 staging folder, then pg_restore -j."""
        staging = tempfile.mkdtemp(prefix="pgdr-restore-")
        try:
            os.chmod(staging, 0o700)
            folder = os.path.join(staging, "dump")
            os.mkdir(folder, 0o700)
            for entry in entries:
                name = entry["path"].split("/", 1)[1]
                if entry["encryption"]["method"] != "none":
                    name = name[: -len(".gpg")] if name.endswith(".gpg") else name
                stages = input_stages(entry, self.gpg) or [["cat"]]
                self.feed_file(entry, stages, None, stdout_path=os.path.join(folder, name))
            jobs = max(1, int(self.options.jobs or self.manifest.get("options", {}).get("jobs") or 1))
            argv = load_argv(entries[0], self.tools, database, self.options, jobs=jobs, path=folder)
            run_pipeline([argv], env=env)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# --- the whole restore ----------------------------------------------------------------


class LogicalRestore(SetLoader):
    """The databases of a logical-db or logical-cluster set (and a cluster set's globals), each verified against the manifest."""

    def plan(self):
        """Every check that changes nothing: the set's files against the manifest, then [DatabasePlan]."""
        self.check_files()  # before anything touches the target
        plans = plan_databases(self.manifest, self.options, lambda name: database_exists(self.admin, name))
        if not self.options.terminate_sessions:
            for plan in plans:
                count = open_sessions(self.admin, plan.target) if plan.action == "replace" else 0
                if count:
                    raise PgdrError(sessions_message(plan.target, count))
        return plans

    def run(self, check_mode=False):
        """The result dict; a database whose tables differ from the manifest fails the whole restore with that result."""
        plans = self.plan()
        result = self.result(databases=[plan._asdict() for plan in plans])
        with self.session():
            globals_plan = None
            if self.manifest["kind"] == "logical-cluster" and self.options.globals and self.globals_file:
                globals_plan = self._plan_globals(self.globals_file)  # every tablespace location checked before anything changes
                result["globals"] = globals_plan.report()
            if check_mode:  # what would happen, not claimed as done
                result["databases"] = [dict(plan._asdict(), action="would_" + plan.action) for plan in plans]
                result["changed"] = bool(plans) or bool(globals_plan and (globals_plan.roles_created or globals_plan.tablespaces_created))
                return result
            if globals_plan:
                self._apply_globals(globals_plan)
                result["globals_restored"] = True
            result["databases"] = []
            for plan in plans:
                result["changed"] = True
                result["databases"].append(self._restore_database(plan))
        failure = verification_message(result["databases"])
        if failure:
            raise PgdrError(failure, **result)
        return result

    def _plan_globals(self, entry):
        chunks = []
        feed(self.repo, self.file_key(entry), input_stages(entry, self.gpg) or [["cat"]], None, sink=chunks.append)
        with self.admin.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_catalog.pg_roles")
            roles = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT spcname FROM pg_catalog.pg_tablespace")
            tablespaces = {row[0] for row in cur.fetchall()}
        plan = plan_globals(b"".join(chunks).decode("utf-8"), roles, tablespaces, self.options.tablespace_mapping,
                            self.options.globals_tablespaces or "create")
        for tablespace in plan.tablespaces_created:
            problem = tablespace_problem(self.admin, tablespace["location"])
            if problem:
                raise PgdrError(tablespace_message(tablespace["name"], tablespace["location"], problem))
        return plan

    def _apply_globals(self, plan):
        """Tablespaces, then everything else in one transaction; on failure the tablespaces made here are dropped again."""
        created = []
        try:
            for tablespace in plan.tablespaces_created:
                try:
                    with self.admin.cursor() as cur:
                        cur.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                            sql.Identifier(tablespace["name"]), sql.Literal(tablespace["location"])))
                except psycopg.Error as exc:
                    raise PgdrError(tablespace_message(tablespace["name"], tablespace["location"], first_line(exc))) from None
                created.append(tablespace["name"])
            with self.conn_params.child_env() as env:
                env["PGDATABASE"] = "postgres"
                try:
                    run([self.tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password", "-f", "-"],
                        env=env, input_text=plan.sql)
                except PgdrError as exc:
                    exc.msg = "applying the globals (roles, grants, tablespace owners) failed and was rolled back, nothing was applied: " + exc.msg
                    exc.args = (exc.msg,)
                    raise
        except BaseException:
            for name in reversed(created):  # empty: made a moment ago
                with self.admin.cursor() as cur:
                    cur.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(name)))
            raise

    def _apply_properties(self, info, database, verification):
        """The source database's settings, ACL, connection limit and comment (manifest ``databases[]``) on ``database``,
        read back and compared when verifying: a difference fails the verification, naming it."""
        named = ({info.get("owner")} | {s["role"] for s in info.get("settings") or []} | {parse_aclitem(a)[0] for a in info.get("acl") or []})
        roles = existing_roles(self.admin, named - {None})
        expected, skipped = expected_properties(info, roles, not self.options.no_owner, not self.options.no_privileges)
        try:
            skipped += apply_properties(self.admin, database, expected)
        except psycopg.Error as exc:
            raise PgdrError('applying the settings of database "%s" from the backup failed: %s' % (info.get("name"), first_line(exc))) from None
        if verification is not None:
            problems = settings_mismatches(expected, read_properties(self.admin, database))
            verification["settings_mismatches"] = problems
            if problems:
                verification["verified"] = False
        return dict(settings=len(expected.get("settings", [])), acl=expected.get("acl"), connection_limit=expected.get("connection_limit"),
                    comment=expected.get("comment"), skipped=skipped)

    def _restore_database(self, plan):
        """Restore one database; for replace, into a new name that is swapped in once verified."""
        started = time.monotonic()
        backup_id = self.manifest["backup_id"]
        source, target, action = plan
        load_into, previous = swap_names(target, backup_id) if action == "replace" else (target, None)
        infos = {info["name"]: info for info in self.manifest.get("databases", [])}
        if action != "use":
            create_database(self.admin, load_into, infos.get(source), keep_owner=not self.options.no_owner)
        properties = None
        try:
            self.load_database(self.files_by_database[source], load_into, fresh=action != "use")
            verification = verify_database(self.conn_params, load_into, source, self.manifest) if self.options.verify else None
            if self.options.analyze:
                analyze(self.conn_params, load_into)
            if action != "use":  # on the new copy, so the swap's rename carries them
                properties = self._apply_properties(infos.get(source) or {}, load_into, verification)
            if verification and not verification["verified"] and action == "replace":
                raise PgdrError(
                    "restored copy of %s does not match the backup (%s); the existing database was not touched"
                    % (target, first_problem(verification)),
                    verification=verification,
                )
            if action == "replace":
                swap_database(self.admin, target, load_into, previous, terminate=self.options.terminate_sessions)
        except BaseException:
            if action in ("create", "replace"):  # made by this run: a half-loaded database must not pass for a restore
                drop_database(self.admin, load_into)  # (with replace, the existing database is untouched)
            raise
        if action == "replace" and not self.options.keep_previous:
            drop_database(self.admin, previous)
        if verification:
            verification["database"] = target
        if properties is not None:
            return dict(source=source, target=target, action=action if action != "create" else "created",
                        seconds=round(time.monotonic() - started, 3), verification=verification, database_properties=properties)
        return dict(
            source=source,
            target=target,
            action=action if action != "create" else "created",
            seconds=round(time.monotonic() - started, 3),
            verification=verification,
        )
