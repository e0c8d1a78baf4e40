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
    assert restore.run(check_mode=True)["databases"][0]["action"] == "replace"
