"""role_grants through ansible-playbook against the lab's PostgreSQL 15 and 18 primaries."""

import os
import uuid

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.access import grants
from tests.sql_text import ident, literal

# the preflight connects to every database of a cluster; others' databases come and go
pytestmark = pytest.mark.exclusive

MODULE = "pgdr.backup.role_grants"


class Scratch:
    """A database and roles of one test, dropped afterwards."""

    def __init__(self, host, suffix=None):
        self.host = host
        self.suffix = suffix or uuid.uuid4().hex[:6]
        self.databases, self.roles = [], []
        self.password = "Exp-" + uuid.uuid4().hex

    def sql(self, statement, db="postgres"):
        return self.host.psql(statement, db=db).strip()

    def role(self, name, login=False):
        self.sql("CREATE ROLE %s %s" % (ident(name), ("LOGIN PASSWORD %s" % literal(self.password)) if login else "NOLOGIN"))
        self.roles.append(name)
        return name

    def database(self, name):
        self.sql("CREATE DATABASE %s" % ident(name))
        self.databases.append(name)
        return name

    def cleanup(self):
        for db in self.databases:
            self.sql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(db))
        for role in reversed(self.roles):
            self.sql("DROP OWNED BY %s" % ident(role))
            self.sql("DROP ROLE IF EXISTS %s" % ident(role))


@pytest.fixture
def scratch(host):
    box = Scratch(host)
    yield box
    box.cleanup()


def build_shop(box, exporter_name=None, schema_names=("sales", "Mixed Case", "hr")):
    """A database with several schemas owned by different roles, and an export user."""
    s = box.suffix
    app, hr = box.role("app_owner_" + s), box.role("hr_owner_" + s)
    exporter = box.role(exporter_name or ("exporter_" + s), login=True)
    db = box.database("shop_" + s)
    sales, mixed, hrs = schema_names
    box.sql(
        "CREATE SCHEMA {sales} AUTHORIZATION {app}; CREATE SCHEMA {mixed} AUTHORIZATION {app}; "
        "CREATE SCHEMA {hrs} AUTHORIZATION {hr}; "
        "SET ROLE {app}; "
        "CREATE TABLE {sales}.orders (id serial PRIMARY KEY, note text); "
        "INSERT INTO {sales}.orders (note) VALUES ('a'), (NULL), (''); "
        "CREATE TABLE {sales}.events (at date NOT NULL, v int) PARTITION BY RANGE (at); "
        "CREATE TABLE {sales}.events_2026 PARTITION OF {sales}.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); "
        "CREATE VIEW {mixed}.{view} AS SELECT count(*) FROM {sales}.orders; "
        "CREATE SEQUENCE {mixed}.counter; "
        "RESET ROLE; SET ROLE {hr}; "
        "CREATE TABLE {hrs}.salaries (who text, amount numeric); "
        "RESET ROLE;".format(
            sales=ident(sales), mixed=ident(mixed), hrs=ident(hrs), app=ident(app), hr=ident(hr),
            view=ident("Order Count")),
        db=db,
    )
    return db, exporter, app, hr


def can(box, db, exporter, check):
    return box.sql("SELECT %s" % check.format(user=literal(exporter)), db=db) == "t"


def pg_dump_as(lab, host, db, user, password, *options):
    """A real pg_dump from the backup host over the network, logged in as ``user``."""
    backup = lab.host("backup1")
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    return backup.run(
        [os.path.join(host.pg_bin_dir, "pg_dump"), "-h", host.address, "-U", user, "-d", db, "-f", "/dev/null", *options],
        env=env, check=False,
    )


def test_object_privileges_across_schemas_then_idempotent(ansible, host, scratch):
    db, exporter, app, hr = build_shop(scratch)
    args = dict(name=exporter, object_privileges=True, databases=[db], check_access=True)

    first = ansible.module(host.name, MODULE, args)
    assert first["_status"] == "ok", first.get("msg")
    assert first["changed"] is True
    assert first["missing"] == []
    assert first["checked_as"] == "on_behalf"
    run_queries = [q["query"] for q in first["queries"]]
    assert 'GRANT USAGE ON SCHEMA "Mixed Case" TO "%s"' % exporter in run_queries
    assert 'ALTER DEFAULT PRIVILEGES FOR ROLE "%s" IN SCHEMA "hr" GRANT SELECT ON TABLES TO "%s"' % (hr, exporter) in run_queries
    for check in ("has_schema_privilege({user}, 'hr', 'USAGE')",
                  "has_table_privilege({user}, 'sales.events_2026', 'SELECT')",
                  "has_table_privilege({user}, '\"Mixed Case\".\"Order Count\"', 'SELECT')",
                  "has_sequence_privilege({user}, '\"Mixed Case\".counter', 'SELECT')"):
        assert can(scratch, db, exporter, check), check
    sales = first["access"]["databases"][db]["schemas"]["sales"]
    assert (sales["tables"], sales["sequences"]) == ("3/3", "1/1")  # orders, events, events_2026; orders_id_seq

    second = ansible.module(host.name, MODULE, args)
    assert second["_status"] == "ok" and second["changed"] is False and second["queries"] == []

    # a table created later by a known owner is covered by the default privileges
    scratch.sql("SET ROLE %s; CREATE TABLE hr.bonus (x int)" % ident(hr), db=db)
    assert can(scratch, db, exporter, "has_table_privilege({user}, 'hr.bonus', 'SELECT')")
    assert pg_dump_as(ansible.lab, host, db, exporter, scratch.password).returncode == 0


def test_check_mode_changes_nothing_and_shows_the_diff(ansible, host, scratch):
    db, exporter, _app, _hr = build_shop(scratch)
    args = dict(name=exporter, profile=["logical", "physical"], object_privileges=True, databases=[db])

    checked = ansible.module(host.name, MODULE, args, check=True, diff=True)
    assert checked["_status"] == "ok", checked.get("msg")
    assert checked["changed"] is True and checked["queries"]
    assert checked["diff"]["before"]["roles"] == {}
    assert "pg_read_all_data" in checked["diff"]["after"]["roles"]
    assert checked["diff"]["after"]["replication"] is True
    assert scratch.sql("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                       "WHERE r.rolname = %s" % literal(exporter)) == "0"
    assert scratch.sql("SELECT rolreplication FROM pg_roles WHERE rolname = %s" % literal(exporter)) == "f"
    assert not can(scratch, db, exporter, "has_schema_privilege({user}, 'hr', 'USAGE')")

    applied = ansible.module(host.name, MODULE, args, diff=True)
    assert applied["changed"] is True
    assert [q["query"] for q in applied["queries"]] == [q["query"] for q in checked["queries"]]
    assert applied["diff"]["after"] == checked["diff"]["after"]


def test_revoke_takes_away_what_was_granted(ansible, host, scratch):
    db, exporter, _app, _hr = build_shop(scratch)
    args = dict(name=exporter, profile=["logical", "probackup"], object_privileges=True, databases=[db])
    assert ansible.module(host.name, MODULE, args)["changed"] is True
    assert can(scratch, db, exporter, "has_function_privilege({user}, 'pg_catalog.pg_switch_wal()', 'EXECUTE')")

    revoked = ansible.module(host.name, MODULE, dict(args, state="absent"))
    assert revoked["_status"] == "ok", revoked.get("msg")
    assert revoked["changed"] is True
    assert not can(scratch, db, exporter, "has_schema_privilege({user}, 'sales', 'USAGE')")
    assert not can(scratch, db, exporter, "has_table_privilege({user}, 'sales.orders', 'SELECT')")
    assert not can(scratch, db, exporter, "has_function_privilege({user}, 'pg_catalog.pg_switch_wal()', 'EXECUTE')")
    assert scratch.sql("SELECT rolreplication FROM pg_roles WHERE rolname = %s" % literal(exporter)) == "f"
    assert scratch.sql("SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a JOIN pg_roles r "
                       "ON r.oid = a.grantee WHERE r.rolname = %s" % literal(exporter), db=db) == "0"
    again = ansible.module(host.name, MODULE, dict(args, state="absent"))
    assert again["changed"] is False


def test_preflight_finds_a_table_of_another_role_and_its_fix_works(ansible, lab, host, scratch):
    db, exporter, app, _hr = build_shop(scratch)
    granted = ansible.module(host.name, MODULE, dict(name=exporter, object_privileges=True, databases=[db],
                                                     default_privileges_for=[app]))
    assert granted["changed"] is True
    assert pg_dump_as(lab, host, db, exporter, scratch.password).returncode == 0

    intruder = scratch.role("intruder_" + scratch.suffix)
    scratch.sql("GRANT CREATE ON SCHEMA sales TO %s; SET ROLE %s; CREATE TABLE sales.secret (x int)"
                % (ident(intruder), ident(intruder)), db=db)
    before_fix = pg_dump_as(lab, host, db, exporter, scratch.password)
    assert before_fix.returncode != 0
    assert "permission denied" in before_fix.stderr

    check = ansible.module(host.name, MODULE, dict(name=exporter, state="check", databases=[db],
                                                   check_password=scratch.password, login_host="127.0.0.1",
                                                   login_user="postgres",
                                                   login_password=lab.pg_password))
    assert check["_status"] == "ok", check.get("msg")
    assert check["changed"] is False and check["checked_as"] == "login"
    assert [(m["schema"], m["name"], m["missing"]) for m in check["missing"]] == [("sales", "secret", "SELECT")]
    fix = check["missing"][0]["fix"]
    assert fix == 'GRANT SELECT ON TABLE "sales"."secret" TO "%s"' % exporter

    failing = ansible.module(host.name, MODULE, dict(name=exporter, state="check", databases=[db],
                                                     fail_on_missing=True))
    assert failing["_status"] == "failed"
    assert failing["msg"].startswith('role "%s" cannot read 1 object(s) in 1 database(s), first table "sales"."secret"'
                                     % exporter)

    scratch.sql(fix, db=db)
    assert pg_dump_as(lab, host, db, exporter, scratch.password).returncode == 0
    clean = ansible.module(host.name, MODULE, dict(name=exporter, state="check", databases=[db], fail_on_missing=True))
    assert clean["_status"] == "ok" and clean["missing"] == []


def test_preflight_flags_row_security_and_missing_connect(ansible, lab, host, scratch):
    db, exporter, app, _hr = build_shop(scratch)
    scratch.sql("ALTER TABLE sales.orders ENABLE ROW LEVEL SECURITY; REVOKE CONNECT ON DATABASE %s FROM PUBLIC"
                % ident(db), db=db)
    ansible.module(host.name, MODULE, dict(name=exporter, profile=["logical"]))
    check = ansible.module(host.name, MODULE, dict(name=exporter, state="check", databases=[db]))
    assert [(m["kind"], m["fix"]) for m in check["missing"]] == [
        ("database", "GRANT CONNECT ON DATABASE %s TO %s" % (ident(db), ident(exporter)))]
    scratch.sql("GRANT CONNECT ON DATABASE %s TO %s" % (ident(db), ident(exporter)))
    check = ansible.module(host.name, MODULE, dict(name=exporter, state="check", databases=[db]))
    assert [(m["kind"], m["name"], m["fix"]) for m in check["missing"]] == [
        ("row security", "orders", "ALTER ROLE %s BYPASSRLS" % ident(exporter))]
    dump = pg_dump_as(lab, host, db, exporter, scratch.password)
    assert dump.returncode != 0 and "row-level security" in dump.stderr
    ansible.module(host.name, MODULE, dict(name=exporter, bypassrls=True))
    assert pg_dump_as(lab, host, db, exporter, scratch.password).returncode == 0


def test_preflight_finds_large_objects_the_role_cannot_read_and_their_fix_lets_the_dump_run(ansible, lab, host, scratch):
    """Issue 11 item 12: pg_read_all_data does not cover large objects; the preflight passed and pg_dump then failed."""
    s = scratch.suffix
    db = scratch.database("h3lo_" + s)
    owner, exporter = scratch.role("h3_lo_owner_" + s), scratch.role("h3_lo_exporter_" + s, login=True)
    scratch.sql("GRANT CREATE ON SCHEMA public TO %s" % ident(owner), db=db)
    made = scratch.sql("SET ROLE %s; CREATE TABLE public.docs (id int, body oid); "
                       "INSERT INTO public.docs SELECT g, lo_from_bytea(0, convert_to('payload ' || g, 'UTF8')) FROM generate_series(1, 3) AS g; "
                       "SELECT lo_from_bytea(0, 'everyone may read this')" % ident(owner), db=db).split()
    shared = int(made[-1])
    scratch.sql("GRANT SELECT ON LARGE OBJECT %d TO PUBLIC" % shared, db=db)  # readable: not a finding
    oids = sorted(int(o) for o in scratch.sql("SELECT body FROM public.docs", db=db).split())
    args = dict(name=exporter, profile=["logical"], databases=[db], check_access=True, fail_on_missing=True)

    granted = ansible.module(host.name, MODULE, args)
    assert granted["_status"] == "failed"
    listed = "GRANT SELECT ON LARGE OBJECT %s TO %s" % (", ".join(map(str, oids)), ident(exporter))
    assert granted["missing"] == [dict(database=db, kind="large objects", schema=None, name=None, missing="SELECT", count=3,
                                       owners=[owner], oids=oids, fix=listed,
                                       alternative="or dump without large objects: pg_dump -B (--no-large-objects; --no-blobs before 16)")]
    assert granted["msg"] == (
        'role "%s" cannot read 3 object(s) in 1 database(s), first 3 large object(s) in database "%s"; run the statements in '
        '"missing" (fix); the large objects (owned by %s) need %s, run by their owner or a superuser, or dump without large '
        "objects: pg_dump -B (--no-large-objects; --no-blobs before 16)" % (exporter, db, owner, listed))
    dump = pg_dump_as(lab, host, db, exporter, scratch.password)  # what the preflight foresaw
    assert dump.returncode != 0 and "permission denied for large object" in dump.stderr
    assert pg_dump_as(lab, host, db, exporter, scratch.password, "-B").returncode == 0

    # logged in as the role itself, the same finding
    as_user = ansible.module(host.name, MODULE, dict(name=exporter, state="check", databases=[db], check_password=scratch.password))
    assert as_user["checked_as"] == "login" and [(m["kind"], m["fix"]) for m in as_user["missing"]] == [("large objects", listed)]

    # lo_compat_privileges on: every large object is readable, nothing to report
    scratch.sql("ALTER DATABASE %s SET lo_compat_privileges = on" % ident(db))
    assert ansible.module(host.name, MODULE, dict(args, state="check"))["missing"] == []
    scratch.sql("ALTER DATABASE %s RESET lo_compat_privileges" % ident(db))

    # the fix as given, run by a superuser, and the dump works
    scratch.sql(listed, db=db)
    clean = ansible.module(host.name, MODULE, args)
    assert clean["_status"] == "ok" and clean["missing"] == []
    assert pg_dump_as(lab, host, db, exporter, scratch.password).returncode == 0

    # the loop form, for databases with more large objects than a statement should list
    later = int(scratch.sql("SET ROLE %s; SELECT lo_from_bytea(0, 'later')" % ident(owner), db=db).split()[-1])
    assert [m["oids"] for m in ansible.module(host.name, MODULE, dict(args, state="check"))["missing"]] == [[later]]
    scratch.sql(grants.large_object_fix(None, exporter), db=db)
    assert ansible.module(host.name, MODULE, dict(args, state="check"))["missing"] == []
    assert pg_dump_as(lab, host, db, exporter, scratch.password).returncode == 0


def test_hostile_names_are_names(ansible, lab, host, scratch):
    s = scratch.suffix
    exporter = 'Exp "q"; DROP ROLE postgres; -- ü %s' % s
    schemas = ('Sales; DROP TABLE x', 'Mixed "Case" ü', "hr'quote")
    db, exporter, _app, _hr = build_shop(scratch, exporter_name=exporter, schema_names=schemas)
    db_hostile = scratch.database('db "weird"; name ü ' + s)
    args = dict(name=exporter, object_privileges=True, databases=[db, db_hostile], check_access=True)
    result = ansible.module(host.name, MODULE, args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["changed"] is True and result["missing"] == []
    assert can(scratch, db, exporter, "has_table_privilege({user}, %s, 'SELECT')"
               % literal(ident(schemas[2], "salaries")))
    assert scratch.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'") == "1"
    assert ansible.module(host.name, MODULE, args)["changed"] is False
    assert pg_dump_as(lab, host, db, exporter, scratch.password).returncode == 0


def test_physical_profile_lets_the_role_run_a_backup(ansible, lab, host, scratch):
    backup_role = scratch.role("basebackup_" + scratch.suffix, login=True)
    result = ansible.module(host.name, MODULE, dict(name=backup_role, profile=["physical"], databases=["postgres"]))
    assert result["_status"] == "ok", result.get("msg")
    start, stop = ("pg_backup_start", "pg_backup_stop") if host.major >= 15 else ("pg_start_backup", "pg_stop_backup")
    assert "GRANT EXECUTE ON FUNCTION %s(text,boolean) TO %s" % (start, ident(backup_role)) in [
        q["query"] for q in result["queries"]]
    backup = lab.host("backup1")
    env = dict(os.environ, PGPASSWORD=scratch.password)
    psql = os.path.join(host.pg_bin_dir, "psql")
    session = backup.run(
        [psql, "-X", "-v", "ON_ERROR_STOP=1", "-h", host.address, "-U", backup_role, "-d", "postgres", "-At",
         "-c", "SELECT 1 FROM %s('pgdr test', true)" % start, "-c", "SELECT lsn IS NOT NULL FROM %s()" % stop,
         "-c", "CHECKPOINT"],
        env=env, check=False)
    assert session.returncode == 0, session.stderr
    assert session.stdout.split() == ["1", "t", "CHECKPOINT"]
    replication = backup.run([psql, "-X", "-At", "-d", "host=%s user=%s dbname=postgres replication=database"
                              % (host.address, backup_role), "-c", "IDENTIFY_SYSTEM"], env=env, check=False)
    assert replication.returncode == 0, replication.stderr


@pytest.mark.parametrize("args,message", [
    (dict(name="no_such_role_pgdr"), 'role "no_such_role_pgdr" does not exist; create it first'),
    (dict(name="postgres", roles=["no_such_group_pgdr"]), 'role does not exist: "no_such_group_pgdr"'),
    (dict(name="postgres", object_privileges=True, databases=["no_such_db_pgdr"]),
     'database does not exist: "no_such_db_pgdr"'),
    (dict(name="postgres", object_privileges=True, databases=["postgres"], schemas=["nope"]),
     'schema does not exist in database "postgres": "nope"'),
    (dict(name="postgres", functions=["pg_catalog.no_such_fn()"], databases=["postgres"]),
     "function pg_catalog.no_such_fn() does not exist"),
])
def test_bad_input_fails_with_one_clear_line(ansible, host, args, message):
    result = ansible.module(host.name, MODULE, args)
    assert result["_status"] == "failed"
    assert message in result["msg"]
    assert "\n" not in result["msg"] and "Traceback" not in str(result)


def test_login_without_the_right_to_grant_names_the_missing_privilege(ansible, host, scratch):
    db, exporter, _app, _hr = build_shop(scratch)
    weak = scratch.role("weak_admin_" + scratch.suffix, login=True)
    login = dict(login_host="127.0.0.1", login_user=weak, login_password=scratch.password)

    membership = ansible.module(host.name, MODULE, dict(name=exporter, profile=["logical"], **login),
                                become_postgres=False)
    assert membership["_status"] == "failed"
    assert 'login role "%s" needs ADMIN OPTION on role "pg_read_all_data"' % weak in membership["msg"]

    attribute = ansible.module(host.name, MODULE, dict(name=exporter, replication=True, **login), become_postgres=False)
    assert 'needs superuser (only a superuser may change REPLICATION)' in attribute["msg"]

    objects = ansible.module(host.name, MODULE, dict(name=exporter, object_privileges=True, databases=[db],
                                                     default_privileges=False, **login), become_postgres=False)
    assert objects["_status"] == "failed"
    assert "grant(s) are still missing" in objects["msg"] or "was refused" in objects["msg"]
    assert "to own schema" in objects["msg"]
    assert not can(scratch, db, exporter, "has_schema_privilege({user}, 'sales', 'USAGE')")


def test_wrong_password_never_shows_the_password(ansible, lab, host):
    secret = "Wr0ng-" + uuid.uuid4().hex
    task = "connect with a wrong password"
    run = ansible.play(host.name, [{
        "name": task, MODULE: dict(name="postgres", login_host="127.0.0.1", login_user="postgres",
                                   login_password=secret, check_access=True, check_password=secret),
        "ignore_errors": True}], become_postgres=False, verbosity=3)
    result = run.result(task, host.name)
    assert result["_status"] == "failed"
    assert result["msg"].startswith("cannot connect to postgres@127.0.0.1:5432/postgres")
    assert "password" in result["msg"]
    assert secret not in run.output
    assert secret not in str(run.results)
