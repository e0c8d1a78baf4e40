"""restore_cluster: the physical flow changes nothing on the host before the restore's own refusals have run; logical and
table restores are engines the module picks, which plan before they change anything and fail with their whole result."""

import contextlib

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.logical import restore as logical_restore
from ansible_collections.pgdr.backup.plugins.module_utils.logical import table_restore
from ansible_collections.pgdr.backup.plugins.module_utils.logical.restore import DatabasePlan, LogicalRestore, LogicalRestoreOptions, plan_databases
from ansible_collections.pgdr.backup.plugins.module_utils.logical.table_restore import TableRestore
from ansible_collections.pgdr.backup.plugins.module_utils.physical import restore as physical_restore
from ansible_collections.pgdr.backup.plugins.modules import restore_cluster as module_code
from tests.unit.test_physical_review import FakeCluster

MANIFEST = {"backup_id": "b1", "kind": "base", "stop_lsn": "0/5000100", "finished_at": "2026-11-22T10:00:00Z",
            "source": {"major": 15, "system_identifier": "7"}, "physical": {"stop_time": "2026-11-22T10:00:00Z", "format": "tar"}}


class FakeModule:
    def __init__(self, check_mode=False, params=None):
        self.check_mode = check_mode
        self.params = params


class FakeArchive:
    def newest_segment(self):
        return ("000000010000000000000009", None)

    def check_decryption(self, passphrase, name):  # a clear archive: nothing to check
        return None


def physical_run(tmp_path, monkeypatch, check_mode=False, **over):
    installed = []
    monkeypatch.setattr(module_code, "select_set", lambda repo, cluster, backup_id, kind=None: MANIFEST)
    monkeypatch.setattr(physical_restore, "server_bin_dir", lambda manifest, pg_bin_dir, pg_data: "/usr/lib/postgresql/15/bin")
    monkeypatch.setattr(physical_restore.Cluster, "from_options", classmethod(lambda cls, service, bin_dir, **kw: FakeCluster(service.pg_data)))
    monkeypatch.setattr(physical_restore.wal_installer, "install", lambda options, name, check_mode=False, **kw: installed.append(("install", check_mode)))
    monkeypatch.setattr(physical_restore.wal_installer, "prepare_spool", lambda name, **kw: installed.append(("spool", False)))
    monkeypatch.setattr(physical_restore.wal_archive, "open_archive", lambda options: contextlib.nullcontext(FakeArchive()))
    monkeypatch.setattr(physical_restore, "load_chain", lambda repo, cluster_name, manifest: [manifest])
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "PG_VERSION").write_text("15\n")  # the cluster FakeCluster runs
    p = dict(cluster="db1", backup_id="b1", pg_data=str(tmp_path / "main"), os_user="postgres", login_port=5432, login_host=None,
             archive={"type": "local", "path": "/var/backups/wal"}, force=False)
    for option in module_code.LOGICAL_ONLY:
        p[option] = None
    p.update(over)
    return installed, lambda: module_code.run_physical(FakeModule(check_mode, p), None, None)


def test_a_refused_restore_installs_nothing_and_keeps_the_spool(tmp_path, monkeypatch):
    installed, run = physical_run(tmp_path, monkeypatch)  # the server runs and force is false
    with pytest.raises(PgdrError, match="is running; set force: true"):
        run()
    assert [what for what, check_mode in installed if not check_mode] == []


def test_check_mode_installs_nothing(tmp_path, monkeypatch):
    installed, run = physical_run(tmp_path, monkeypatch, check_mode=True, force=True)
    assert run()["plan"]["was_running"] is True
    assert [what for what, check_mode in installed if not check_mode] == []


def test_an_accepted_restore_installs_the_helper_before_deploying(tmp_path, monkeypatch):
    installed, run = physical_run(tmp_path, monkeypatch, force=True)
    order = []

    def prepare(self, plan, timings):
        order.append(list(installed))
        raise PgdrError("stop here")

    monkeypatch.setattr(physical_restore.BaseSetRestore, "prepare", prepare)
    with pytest.raises(PgdrError, match="stop here"):
        run()
    assert order == [[("install", True), ("install", False), ("spool", False)]]


# --- logical and table restores: the module picks the engine, the engine plans and reports ------------------------


def logical_options(**over):
    """restore_cluster's options as the module types them, with the argument spec's defaults."""
    params = {name: spec.get("default") for name, spec in module_code.argument_spec().items()}
    params.update(cluster="db1", **over)
    return typed(LogicalRestoreOptions, params)


def logical_set(kind="logical-db", databases=("sales",)):
    files = [{"path": "db_%s.dump" % name, "role": "database", "database": name, "format": "custom"} for name in databases]
    if kind == "logical-cluster":
        files.append({"path": "globals.sql", "role": "globals", "database": None, "format": "plain"})
    return {"backup_id": "20260101T000000Z", "kind": kind, "files": files, "source": {"database": databases[0]},
            "tables": [{"database": databases[0], "schema": "public", "table": "t", "rows": 1, "fingerprint": "1"}]}


def test_the_module_picks_the_engine_by_the_set_and_the_options():
    assert module_code.logical_engine(logical_set(), logical_options()) is LogicalRestore
    assert module_code.logical_engine(logical_set(), logical_options(tables=["public.t"])) is TableRestore
    assert module_code.logical_engine(logical_set(), logical_options(schemas=["public"])) is TableRestore
    assert module_code.logical_engine(logical_set("logical-table"), logical_options()) is TableRestore
    with pytest.raises(PgdrError, match="is a base backup, which restores a whole cluster: give pg_data"):
        module_code.logical_engine(dict(logical_set(), kind="base"), logical_options())
    with pytest.raises(PgdrError, match="is a probackup backup, which restore_cluster cannot restore"):
        module_code.logical_engine(dict(logical_set(), kind="probackup"), logical_options())


def test_ansible_refuses_a_restore_without_a_source_before_the_module_runs():
    validator = ArgumentSpecValidator(module_code.argument_spec(), **module_code.ARGUMENT_RELATIONS)

    def errors(**params):
        return [str(error) for error in validator.validate(params).errors]

    assert errors() == ["one of the following is required: repository, probackup"]
    assert errors(repository={"type": "local", "path": "/b"}) == ["missing parameter(s) required by 'repository': cluster"]
    assert errors(repository={"type": "local", "path": "/b"}, cluster="db1") == []
    assert errors(probackup={"backup_path": "/pb", "instance": "main"}) == []


def test_database_plans_name_source_target_and_action():
    exists = {"sales", "hr"}.__contains__
    manifest = logical_set()
    assert plan_databases(manifest, logical_options(database="sales_check"), exists) == [DatabasePlan("sales", "sales_check", "create")]
    assert plan_databases(manifest, logical_options(if_exists="rename"), exists) == [
        DatabasePlan("sales", "sales_restored_20260101T000000Z", "create")]
    assert plan_databases(manifest, logical_options(if_exists="replace"), exists)[0].action == "replace"
    with pytest.raises(PgdrError, match='database "sales" exists on the target; set if_exists'):
        plan_databases(manifest, logical_options(), exists)
    cluster = logical_set("logical-cluster", databases=("sales", "hr", "new"))
    assert [p.target for p in plan_databases(cluster, logical_options(databases=["new"], database="renamed"), exists)] == ["renamed"]
    with pytest.raises(PgdrError, match="database names the one database a restore goes into, but set 20260101T000000Z restores 2 "
                                        "databases \\(sales, hr\\); choose one with databases: \\[name\\] to restore it as x"):
        plan_databases(cluster, logical_options(databases=["sales", "hr"], database="x"), exists)
    with pytest.raises(PgdrError, match='database "hr" exists on the target; set if_exists \\(rename, replace, use\\) '
                                        "or restore it alone under another name \\(databases: \\[hr\\], database\\); nothing was changed"):
        plan_databases(cluster, logical_options(databases=["new", "hr"]), exists)
    with pytest.raises(PgdrError, match="has no dump of database\\(s\\) nope; it holds hr, new, sales"):
        plan_databases(cluster, logical_options(databases=["nope"]), exists)


class FakeAdmin:
    """No server: database_exists is answered by the test."""


def engine(monkeypatch, cls, manifest, existing=(), **over):
    checked = []
    for loader in (logical_restore.SetLoader, TableRestore):  # a table restore's own check_files asks only whether the set loads
        monkeypatch.setattr(loader, "check_files", lambda self: checked.append(self.manifest["backup_id"]))
    # a table restore's stat of the files it will read, recorded as "present:<path>"
    monkeypatch.setattr(logical_restore.SetLoader, "check_present", lambda self, entries: checked.extend("present:" + e["path"] for e in entries))
    monkeypatch.setattr(logical_restore, "database_exists", lambda conn, name: name in existing)
    monkeypatch.setattr(table_restore, "database_exists", lambda conn, name: name in existing)
    monkeypatch.setattr(logical_restore.SetLoader, "session", lambda self: contextlib.nullcontext())
    return checked, cls(logical_options(**over), None, None, manifest, FakeAdmin())


def test_check_mode_checks_the_files_and_reports_the_plan(monkeypatch):
    checked, restore = engine(monkeypatch, LogicalRestore, logical_set())
    assert restore.run(check_mode=True) == dict(changed=True, backup_id="20260101T000000Z", kind="logical-db", checked_files=1,
                                                globals_restored=False, databases=[dict(source="sales", target="sales", action="would_create")])
    assert checked == ["20260101T000000Z"]


def test_a_database_that_differs_from_the_manifest_fails_with_the_whole_result(monkeypatch):
    _checked, restore = engine(monkeypatch, LogicalRestore, logical_set())
    mismatches = [dict(database="sales", schema="public", table="t%d" % n, problem="rows differ") for n in range(5)]
    monkeypatch.setattr(LogicalRestore, "_restore_database", lambda self, plan: dict(
        source=plan.source, target=plan.target, action="created", seconds=0.1, verification=dict(verified=False, mismatches=mismatches)))
    with pytest.raises(PgdrError) as failed:
        restore.run()
    result = failed.value.fail_json_kwargs()
    assert result["msg"] == ("verification failed for 1 database(s): in sales, 5 tables do not match: public.t0 (rows differ), "
                             "public.t1 (rows differ), public.t2 (rows differ) and 2 more; the restored data differs from the backup")
    assert result["changed"] is True and result["databases"][0]["verification"]["verified"] is False


def test_table_restores_refuse_database_options_after_checking_the_files(monkeypatch):
    checked, restore = engine(monkeypatch, TableRestore, logical_set(), if_exists="replace", tables=["public.t"])
    with pytest.raises(PgdrError, match="table restores use conflict \\(error, rename, replace\\), not if_exists, keep_previous or terminate_sessions"):
        restore.run(check_mode=True)
    assert checked == ["20260101T000000Z"]


def test_a_table_restore_plan_into_a_new_database(monkeypatch):
    manifest = logical_set()
    checked, restore = engine(monkeypatch, TableRestore, manifest, database="scratch", tables=["public.t"])
    result = restore.run(check_mode=True)
    # the set is not read back first: the files the restore will read (the source database's dump) are checked for presence
    assert checked == ["20260101T000000Z"] + ["present:" + f["path"] for f in manifest["files"] if f.get("database") == "sales"]
    assert len(checked) > 1
    assert (result["database"], result["database_created"], result["databases"]) == ("scratch", True, [])
    assert result["tables"] == [dict(schema="public", table="t", target_schema="public", target_table="t", action="would_create")]


def test_tables_of_a_cluster_set_come_from_exactly_one_database():
    cluster = logical_set("logical-cluster", databases=("sales", "hr"))
    assert table_restore.source_database(cluster, ["hr"]) == "hr"
    with pytest.raises(PgdrError, match="needs exactly one source database in databases; the set holds hr, sales"):
        table_restore.source_database(cluster, None)
    with pytest.raises(PgdrError, match="has no dump of database nope"):
        table_restore.source_database(cluster, ["nope"])


def test_the_load_program_follows_the_dump_format():
    tools = dict(pg_restore="pg_restore", psql="psql")
    options = logical_options(no_owner=True)
    assert logical_restore.load_argv({"format": "custom"}, tools, "sales", options) == [
        "pg_restore", "--no-password", "--exit-on-error", "--dbname=dbname='sales'", "--no-owner", "--single-transaction"]
    assert logical_restore.load_argv({"format": "directory"}, tools, "it's", options, jobs=4, path="/s/dump")[-3:] == [
        "--no-owner", "--jobs=4", "/s/dump"]
    assert logical_restore.load_argv({"format": "plain"}, tools, "sales", options)[:5] == ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
