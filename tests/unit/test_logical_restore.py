"""logical.restore's pure logic: the names a restore makes, checked before anything changes."""

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.logical import restore as logical_restore
from ansible_collections.pgdr.backup.plugins.module_utils.logical.restore import DatabasePlan, LogicalRestore, plan_databases
from tests.unit.test_restore_cluster_module import engine, logical_options, logical_set

BACKUP_ID = "20260101T000000Z"


def test_a_replace_refuses_a_previous_or_new_name_that_is_taken_before_anything_changes():
    manifest = logical_set()
    taken = {"sales", "sales_previous_" + BACKUP_ID}
    with pytest.raises(PgdrError, match='database "sales_previous_%s" \\(the replaced database\\) exists already.*nothing was changed; '
                                        "drop or rename it" % BACKUP_ID):
        plan_databases(manifest, logical_options(if_exists="replace"), taken.__contains__)
    taken = {"sales", "sales_pgdr_new_" + BACKUP_ID}
    with pytest.raises(PgdrError, match='"sales_pgdr_new_%s" \\(the new copy of a replace\\) exists already' % BACKUP_ID):
        plan_databases(manifest, logical_options(if_exists="replace"), taken.__contains__)
    assert plan_databases(manifest, logical_options(if_exists="replace"), {"sales"}.__contains__) == [DatabasePlan("sales", "sales", "replace")]


def test_a_rename_refuses_a_copy_name_that_is_taken():
    taken = {"sales", "sales_restored_" + BACKUP_ID}
    with pytest.raises(PgdrError, match='database "sales_restored_%s" exists too.*nothing was changed' % BACKUP_ID):
        plan_databases(logical_set(), logical_options(if_exists="rename"), taken.__contains__)


@pytest.mark.parametrize("if_exists,suffix", [("replace", "_previous_"), ("rename", "_restored_")])
def test_names_longer_than_63_bytes_are_refused_counting_utf8_bytes(if_exists, suffix):
    # 63 - len("_previous_20260101T000000Z") = 37 bytes is the longest name a replace can swap
    fits = "s" * (63 - len(suffix) - len(BACKUP_ID))
    assert plan_databases(logical_set(), logical_options(database=fits, if_exists=if_exists), {fits}.__contains__)
    long_name = "ü" * ((len(fits) + 2) // 2)  # as many characters fit, but not as many bytes
    with pytest.raises(PgdrError, match="is %d bytes, longer than the 63 PostgreSQL allows.*nothing was changed; restore into a "
                                        "shorter name with database" % (len(long_name.encode()) + len(suffix) + len(BACKUP_ID))):
        plan_databases(logical_set(), logical_options(database=long_name, if_exists=if_exists), {long_name}.__contains__)


def test_a_target_name_longer_than_63_bytes_is_refused():
    with pytest.raises(PgdrError, match="\\(the target\\) is 64 bytes"):
        plan_databases(logical_set(), logical_options(database="x" * 64), set().__contains__)


def test_the_swap_names():
    assert logical_restore.swap_names("sales", BACKUP_ID) == ("sales_pgdr_new_" + BACKUP_ID, "sales_previous_" + BACKUP_ID)


class Cursor:
    def __init__(self, count):
        self.count, self.executed = count, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, statement, params=None):
        self.executed.append(statement)

    def fetchone(self):
        return (self.count,)


class Admin:
    def __init__(self, count):
        self.cur = Cursor(count)

    def cursor(self):
        return self.cur

    def transaction(self):
        raise AssertionError("no transaction may start when sessions block the swap")


def test_sessions_on_the_replaced_database_refuse_the_swap_without_terminate_sessions():
    with pytest.raises(PgdrError, match='database "sales" has 2 open session\\(s\\), which block the rename that replaces it; the restored '
                                        "copy was dropped, the database unchanged; close them, or set terminate_sessions: true"):
        logical_restore.swap_database(Admin(2), "sales", "sales_pgdr_new_x", "sales_previous_x")


def test_plan_refuses_a_replace_of_a_database_with_sessions(monkeypatch):
    monkeypatch.setattr(logical_restore, "open_sessions", lambda conn, name: 1 if name == "sales" else 0)
    _checked, restore = engine(monkeypatch, LogicalRestore, logical_set(), existing={"sales"}, if_exists="replace")
    with pytest.raises(PgdrError, match='database "sales" has 1 open session\\(s\\).*nothing was changed.*terminate_sessions: true'):
        restore.run(check_mode=True)
    _checked, restore = engine(monkeypatch, LogicalRestore, logical_set(), existing={"sales"}, if_exists="replace", terminate_sessions=True)
    assert restore.run(check_mode=True)["databases"][0]["action"] == "would_replace"


GLOBALS = """\\restrict abc
SET default_transaction_read_only = off;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT LOGIN;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE TABLESPACE fast OWNER app LOCATION '/mnt/ssd/fast';
ALTER TABLESPACE fast SET (seq_page_cost=2);
GRANT ALL ON TABLESPACE fast TO PUBLIC;
COMMENT ON TABLESPACE fast IS 'x';
CREATE TABLESPACE "Old ts" OWNER postgres LOCATION '/mnt/o''ld';
COMMENT ON TABLESPACE "Old ts" IS 'kept';
\\unrestrict abc
"""


def test_globals_create_tablespaces_outside_the_transaction_and_set_their_owner_inside_it():
    plan = logical_restore.plan_globals(GLOBALS, {"postgres"}, {"Old ts"}, {"fast": "/srv/fast"})
    assert plan.roles_created == ["app"] and plan.roles_existing == ["postgres"]
    assert plan.tablespaces_created == [dict(name="fast", location="/srv/fast", source_location="/mnt/ssd/fast")]
    assert plan.tablespaces_existing == ["Old ts"] and plan.tablespaces_skipped == []
    assert "CREATE TABLESPACE" not in plan.sql and "ALTER TABLESPACE fast OWNER TO app;\n" in plan.sql
    assert "GRANT ALL ON TABLESPACE fast TO PUBLIC;" in plan.sql
    assert "Old ts" not in plan.sql  # an existing tablespace is left exactly as it is, comment included
    assert "postgres" not in plan.sql and "CREATE ROLE app;" in plan.sql
    by_location = logical_restore.plan_globals(GLOBALS, set(), set(), {"/mnt/o'ld": "/srv/old"})
    assert [t["location"] for t in by_location.tablespaces_created] == ["/mnt/ssd/fast", "/srv/old"]


def test_skipped_tablespaces_leave_no_statement_behind():
    plan = logical_restore.plan_globals(GLOBALS, set(), set(), tablespaces="skip")
    assert plan.tablespaces_skipped == ["fast", "Old ts"] and plan.tablespaces_created == []
    assert "TABLESPACE" not in plan.sql and "CREATE ROLE app;" in plan.sql


def test_a_mapping_must_name_a_tablespace_of_the_set_and_an_absolute_path():
    with pytest.raises(PgdrError, match="tablespace_mapping names fats, which the set's globals do not hold \\(they hold fast at "
                                        "/mnt/ssd/fast, Old ts at /mnt/o'ld\\); nothing was applied"):
        logical_restore.plan_globals(GLOBALS, set(), set(), {"fats": "/srv/fast"})
    with pytest.raises(PgdrError, match='gives tablespace "fast" the location "srv/fast", which is not an absolute path'):
        logical_restore.plan_globals(GLOBALS, set(), set(), {"fast": "srv/fast"})


def test_skipped_tablespaces_load_without_tablespaces():
    tools = dict(pg_restore="pg_restore", psql="psql")
    assert "--no-tablespaces" in logical_restore.load_argv({"format": "custom"}, tools, "d", logical_options(globals_tablespaces="skip"))
    assert "--no-tablespaces" not in logical_restore.load_argv({"format": "custom"}, tools, "d", logical_options())


def test_only_a_dump_of_schema_public_creates_it():
    assert logical_restore.creates_public_schema({"options": {"schemas": ["public", "x"]}})
    assert not logical_restore.creates_public_schema({"options": {"schemas": ["public"], "data_only": True}})
    assert not logical_restore.creates_public_schema({"options": {"schemas": ["x"], "tables": ["public.t"]}})
    assert not logical_restore.creates_public_schema({})  # an older set without recorded options


def test_a_dump_of_tables_needs_their_schemas_made_first():
    assert logical_restore.schemas_for_tables({"options": {"tables": ["public.t", "b.x", "a.y", "b.z"]}}) == ["a", "b"]
    assert logical_restore.schemas_for_tables({"options": {"tables": ["a.y"], "schemas": ["a"]}}) == []
    assert logical_restore.schemas_for_tables({"options": {"schemas": ["a"]}}) == []


def test_list_settings_split_as_postgresql_quotes_them():
    assert logical_restore.split_setting_list('"$user", public, "Odd, one", "a""b"') == ["$user", "public", "Odd, one", 'a"b']
    assert logical_restore.split_setting_list('""') == [""]


def test_aclitems_parse_into_grantee_and_privileges():
    assert logical_restore.parse_aclitem("=Tc/postgres") == (None, {"TEMPORARY": False, "CONNECT": False})
    assert logical_restore.parse_aclitem("app=C*c/postgres") == ("app", {"CREATE": True, "CONNECT": False})
    assert logical_restore.parse_aclitem('"we""ird=x"=c*/postgres') == ('we"ird=x', {"CONNECT": True})


def test_properties_of_absent_roles_are_skipped_and_older_sets_expect_only_the_owner():
    info = {"name": "d", "owner": "app", "encoding": "UTF8", "connection_limit": 7, "comment": None,
            "settings": [{"role": None, "name": "bytea_output", "value": "escape"}, {"role": "gone", "name": "work_mem", "value": "3MB"}],
            "acl": ["=T/app", "app=CTc/app", "gone=c/app"]}
    expected, skipped = logical_restore.expected_properties(info, {"app"}, keep_owner=True, keep_privileges=True)
    assert expected == {"owner": "app", "settings": [{"role": None, "name": "bytea_output", "value": "escape"}],
                        "acl": ["=T/app", "app=CTc/app"], "connection_limit": 7, "comment": None}
    assert skipped == ["work_mem for role gone (no such role)", "privileges of role gone (no such role)"]
    expected, skipped = logical_restore.expected_properties(info, set(), keep_owner=False, keep_privileges=False)
    assert "owner" not in expected and "acl" not in expected
    assert logical_restore.expected_properties({"name": "d", "owner": "app", "encoding": "UTF8"}, {"app"}, True, True) == ({"owner": "app"}, [])


def test_a_property_that_differs_is_named():
    expected = {"owner": "app", "settings": [{"role": None, "name": "bytea_output", "value": "escape"}], "acl": ["app=c/app"],
                "connection_limit": 7, "comment": "x"}
    actual = dict(expected, acl=["app=c/postgres"])
    assert logical_restore.settings_mismatches(expected, actual) == []  # who granted does not matter
    actual = dict(expected, settings=[], connection_limit=-1)
    assert logical_restore.settings_mismatches(expected, actual) == [
        "connection limit is -1, the backup has 7", "setting bytea_output is None, the backup has 'escape'"]


def test_a_database_whose_settings_differ_fails_naming_the_setting():
    databases = [dict(target="d", verification=dict(verified=False, mismatches=[], settings_mismatches=["connection limit is -1, the backup has 7"]))]
    assert logical_restore.verification_message(databases) == (
        "verification failed for 1 database(s): in d, connection limit is -1, the backup has 7; the restored database differs from the backup")


def test_session_role_reaches_child_processes_through_pgoptions():
    assert logical_restore.pgoptions_role("app") == "-c role=app"
    assert logical_restore.pgoptions_role("my role\\x", "-c work_mem=1MB") == "-c work_mem=1MB -c role=my\\ role\\\\x"


class FakeParams:
    import contextlib as _contextlib

    def __init__(self):
        self.settings = {"host": "/run/postgresql"}

    @_contextlib.contextmanager
    def child_env(self, base_env=None):
        yield {"PGOPTIONS": "-c statement_timeout=0"}


def test_session_role_params_keep_the_rest_of_the_connection():
    params = logical_restore.SessionRoleParams(FakeParams(), "app")
    assert params.settings == {"host": "/run/postgresql"}
    with params.child_env() as env:
        assert env["PGOPTIONS"] == "-c statement_timeout=0 -c role=app"
