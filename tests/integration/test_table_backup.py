"""pg_logical_dump mode table and table restores with restore_cluster, through ansible-playbook on the 15 and 18 hosts."""

import psycopg
import pytest

from tests.integration.test_logical_backup import DUMP, RESTORE, Source, assert_ok, dump, repositories, restore
from tests.sql_text import ident, literal


@pytest.fixture
def source(lab, host):
    made = Source(lab, host)
    yield made
    made.cleanup()


WEIRD_SCHEMA, WEIRD_TABLE = "Mixed Case ü", 'we"ird table'
WEIRD = "%s.%s" % (WEIRD_SCHEMA, WEIRD_TABLE)
WEIRD_SQL = ident(WEIRD_SCHEMA, WEIRD_TABLE)
EXTRA_SQL = """
CREATE VIEW public.v_events AS SELECT * FROM public.events;
CREATE TABLE {schema}.plain_too (k int PRIMARY KEY, v text);
INSERT INTO {schema}.plain_too SELECT g, 'v' || g FROM generate_series(1, 50) g;
"""


def table_dump(ansible, host, source, repository, **args):
    return ansible.module(host.name, DUMP, dict(mode="table", database=source.name, cluster=source.cluster,
                                                repository=repository, **args))


def scratch_dbs(source):
    return source.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'pgdr\\_scratch\\_%'", db="postgres")


def null_and_empty(source, db=None, table=WEIRD_SQL):
    return source.sql("SELECT count(*) FILTER (WHERE note IS NULL), count(*) FILTER (WHERE note = ''), count(*) FROM %s" % table, db=db)


def test_csv_gzip_table_set_round_trip_into_a_fresh_database(ansible, lab, host, source):
    source.sql(EXTRA_SQL.format(schema=ident(WEIRD_SCHEMA)))
    repository = repositories(lab, "local", source.suffix)
    args = dict(tables=[WEIRD, "public.events", "public.v_events"], copy_format="csv", compression={"method": "gzip"}, parallel=2)

    planned = assert_ok(ansible.module(host.name, DUMP, dict(mode="table", database=source.name, cluster=source.cluster,
                                                             repository=repository, **args), check=True))
    assert {(t["schema"], t["table"]) for t in planned["tables"]} == {
        (WEIRD_SCHEMA, WEIRD_TABLE), ("public", "events_2025"), ("public", "events_2026")}
    assert planned["estimated_bytes"] > 0
    assert host.run(["ls", source.local_path], user="postgres").stdout.strip() == ""  # check mode wrote nothing

    dumped = assert_ok(table_dump(ansible, host, source, repository, **args))
    manifest = dumped["manifest"]
    assert manifest["kind"] == "logical-table"
    assert dumped["skipped_relations"] == [{"name": "public.v_events", "reason": "view"}]
    data = {(f["schema"], f["table"]): f for f in manifest["files"] if f["role"] == "table"}
    assert set(data) == {(WEIRD_SCHEMA, WEIRD_TABLE), ("public", "events_2025"), ("public", "events_2026")}
    assert all(f["database"] == source.name and f["format"] == "csv" and f["path"].endswith(".csv.gz") for f in data.values())
    assert [f["path"] for f in manifest["files"] if f["role"] == "schema"] == ["schema.sql.gz"]
    again = assert_ok(table_dump(ansible, host, source, repository, backup_id=dumped["backup_id"], **args))
    assert again["changed"] is False and again["manifest"] == manifest and again["skipped_relations"] == dumped["skipped_relations"]
    counts = {(t["schema"], t["table"]): t["rows"] for t in dumped["tables"]}
    assert counts[(WEIRD_SCHEMA, WEIRD_TABLE)] == 3 and counts[("public", "events_2025")] + counts[("public", "events_2026")] == 366
    # the CSV keeps NULL (nothing) apart from the empty string ("")
    path = "%s/%s/%s/%s" % (source.local_path, source.cluster, dumped["backup_id"], data[(WEIRD_SCHEMA, WEIRD_TABLE)]["path"])
    text = host.run(["sh", "-c", 'gzip -dc "$1"', "sh", path], user="postgres").stdout
    assert "\n2,\"\",b," in "\n" + text and "\n1,,A," in "\n" + text

    target = "tables_" + source.suffix
    source.forget(host, target)
    restored = assert_ok(restore(ansible, host, source, repository, database=target))
    assert restored["database"] == target and restored["database_created"] is True
    assert {(t["table"], t["action"], t["verified"]) for t in restored["tables"]} == {
        (WEIRD_TABLE, "created", True), ("events_2025", "created", True), ("events_2026", "created", True)}
    assert null_and_empty(source, db=target) == "1|1|3"
    assert source.sql("SELECT count(*) FROM public.events", db=target) == "366"  # the parent came with its partitions
    assert source.sql("SELECT count(*) FROM pg_class WHERE relname = 'v_events'", db=target) == "0"
    assert scratch_dbs(source) == "0"


def test_binary_gpg_table_set_on_s3_with_a_query_and_a_whole_schema(ansible, lab, host, source):
    source.sql(EXTRA_SQL.format(schema=ident(WEIRD_SCHEMA)))
    repository = repositories(lab, "s3", source.suffix)
    encryption = {"method": "gpg", "passphrase": "pass-" + source.suffix}
    dumped = assert_ok(table_dump(ansible, host, source, repository, schemas=[WEIRD_SCHEMA], copy_format="binary",
                                  encryption=encryption, query="SELECT id, note FROM %s WHERE note IS NOT NULL" % WEIRD_SQL,
                                  name="notes"))
    files = dumped["manifest"]["files"]
    assert all(f["path"].endswith(".gpg") for f in files)
    assert {f["table"] for f in files if f["role"] == "table"} == {WEIRD_TABLE, "plain_too"}
    (query,) = [f for f in files if f["role"] == "query"]
    assert query["table"] == "notes" and query["format"] == "binary"
    assert {c.get("query"): c["rows"] for c in dumped["copied"] if c.get("query")} == {"notes": 2}

    target = "tables_" + source.suffix
    source.forget(host, target)
    refused = restore(ansible, host, source, repository, database=target)
    assert refused["_status"] == "failed" and "passphrase" in refused["msg"]
    restored = assert_ok(restore(ansible, host, source, repository, database=target, encryption={"passphrase": encryption["passphrase"]},
                                 tables=[WEIRD]))
    assert [(t["table"], t["verified"]) for t in restored["tables"]] == [(WEIRD_TABLE, True)]
    assert null_and_empty(source, db=target) == "1|1|3"
    assert source.sql("SELECT count(*) FROM pg_class WHERE relname = 'plain_too'", db=target) == "0"


def test_single_table_from_a_custom_database_set_error_rename_replace(ansible, lab, host, source):
    repository = repositories(lab, "local", source.suffix)
    dumped = assert_ok(dump(ansible, host, source, repository, format="custom"))
    backup_id = dumped["backup_id"]
    source.sql("DELETE FROM %s WHERE note = ''; UPDATE %s SET note = 'changed' WHERE note IS NULL" % (WEIRD_SQL, WEIRD_SQL))
    live = null_and_empty(source)
    assert live == "0|0|2"

    refused = restore(ansible, host, source, repository, tables=[WEIRD])
    assert refused["_status"] == "failed"
    assert "already exists in the target database; nothing was changed" in refused["msg"]
    assert '"Mixed Case ü"."we""ird table"' in refused["msg"]
    assert null_and_empty(source) == live and scratch_dbs(source) == "0"

    plan_args = dict(cluster=source.cluster, repository=repository, tables=[WEIRD], conflict="rename")
    planned = assert_ok(ansible.module(host.name, RESTORE, plan_args, check=True))
    assert [(t["target_table"], t["action"]) for t in planned["tables"]] == [("%s_restored_%s" % (WEIRD_TABLE, backup_id), "would_rename")]
    assert source.sql(r"SELECT count(*) FROM pg_class WHERE relname LIKE '%\_restored\_%'") == "0"

    renamed = assert_ok(restore(ansible, host, source, repository, tables=[WEIRD, "public.events_2025"], conflict="rename"))
    new_name = "%s_restored_%s" % (WEIRD_TABLE, backup_id)
    outcome, partition = renamed["tables"]
    assert (outcome["target_table"], outcome["action"], outcome["verified"], outcome["rows"]) == (new_name, "renamed", True, 3)
    assert null_and_empty(source, table=ident(WEIRD_SCHEMA, new_name)) == "1|1|3"
    assert null_and_empty(source) == live  # the original is untouched
    # a renamed partition is a standalone copy: the partitioned table still counts its own partitions only
    assert (partition["target_table"], partition["verified"]) == ("events_2025_restored_%s" % backup_id, True)
    assert source.sql("SELECT count(*) FROM public.events") == "366"
    assert source.sql("SELECT relispartition FROM pg_class WHERE relname = %s" % literal(partition["target_table"])) == "f"
    again = restore(ansible, host, source, repository, tables=[WEIRD], conflict="rename")
    assert again["_status"] == "failed" and "already exists too" in again["msg"]

    replaced = assert_ok(restore(ansible, host, source, repository, tables=[WEIRD, "public.events_2025"], conflict="replace", jobs=2))
    assert {(t["table"], t["action"], t["verified"]) for t in replaced["tables"]} == {
        (WEIRD_TABLE, "replaced", True), ("events_2025", "replaced", True)}
    assert null_and_empty(source) == "1|1|3"
    assert scratch_dbs(source) == "0"


def test_replace_that_cannot_verify_is_rolled_back(ansible, lab, host, source):
    repository = repositories(lab, "local", source.suffix)
    assert_ok(dump(ansible, host, source, repository, format="custom"))
    # the live table changed shape: the backup's rows load, but the table's rows can no longer match the manifest
    source.sql("DELETE FROM %s WHERE note IS NULL; ALTER TABLE %s ADD COLUMN extra int DEFAULT 7" % (WEIRD_SQL, WEIRD_SQL))
    before = source.sql("SELECT count(*), sum(extra) FROM %s" % WEIRD_SQL)
    failed = restore(ansible, host, source, repository, tables=[WEIRD], conflict="replace")
    assert failed["_status"] == "failed"
    assert "rolled back" in failed["msg"] and "we\"\"ird table" in failed["msg"]
    assert [m["problem"] for m in failed["mismatches"]] == ["content differs"]  # the data loaded; the check refused it
    assert source.sql("SELECT count(*), sum(extra) FROM %s" % WEIRD_SQL) == before == "2|14"
    assert scratch_dbs(source) == "0"


def test_table_mode_refuses_what_it_cannot_do(ansible, lab, host, source):
    repository = repositories(lab, "local", source.suffix)
    no_name = table_dump(ansible, host, source, repository, query="SELECT 1")
    assert no_name["_status"] == "failed" and "needs name" in no_name["msg"]
    missing = table_dump(ansible, host, source, repository, tables=["public.nope"])
    assert missing["_status"] == "failed" and "public.nope does not exist" in missing["msg"]
    only_view = table_dump(ansible, host, source, repository, tables=["pg_catalog.pg_tables"])
    assert only_view["_status"] == "failed" and "skipped (view)" in only_view["msg"]
    with psycopg.connect(lab.pg_dsn(host, dbname=source.name), autocommit=True) as other_session:
        other_session.execute("CREATE TEMP TABLE scratchpad (x int)")
        temp_schema = other_session.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()").fetchone()[0]
        with_temp = assert_ok(table_dump(ansible, host, source, repository, tables=["%s.scratchpad" % temp_schema, "public.docs"]))
    assert with_temp["skipped_relations"] == [{"name": "%s.scratchpad" % temp_schema, "reason": "temporary table"}]
    assert [t["table"] for t in with_temp["tables"]] == ["docs"]
    dumped = assert_ok(dump(ansible, host, source, repository))
    not_in_set = restore(ansible, host, source, repository, tables=["public.events"], conflict="replace")
    assert not_in_set["_status"] == "failed" and "restored through their partitions" in not_in_set["msg"]
    assert dumped["backup_id"]


@pytest.mark.parametrize("copy_format", ["text"])
def test_text_format_parallel_copies_share_one_snapshot(ansible, lab, host, source, copy_format):
    repository = repositories(lab, "local", source.suffix)
    dumped = assert_ok(table_dump(ansible, host, source, repository, schemas=["public"], copy_format=copy_format, parallel=3,
                                  compression={"method": "none"}))
    names = {t["table"] for t in dumped["tables"]}
    assert {"events_2025", "events_2026", "docs"} <= names and "events" not in names
    target = "tables_" + source.suffix
    source.forget(host, target)
    restored = assert_ok(restore(ansible, host, source, repository, database=target, tables=["public.events_2026", "public.docs"]))
    assert all(t["verified"] for t in restored["tables"])
    assert source.sql("SELECT count(*) FROM public.events", db=target) == source.sql("SELECT count(*) FROM public.events_2026")
    assert literal("x")


def test_one_table_reads_only_its_files_and_refuses_a_damaged_one(ansible, lab, host, source):
    """A table restore reads the files of the tables it restores, each checked as it is read: damage to another table's file does
    not stop it (a check of the whole set first would have), damage to its own is refused and the target is not touched."""
    repository = repositories(lab, "local", source.suffix)
    dumped = assert_ok(table_dump(ansible, host, source, repository, tables=[WEIRD, "public.events"], copy_format="csv"))
    backup_id = dumped["backup_id"]
    data = {(f["schema"], f["table"]): f for f in dumped["manifest"]["files"] if f["role"] == "table"}
    damaged = data[("public", "events_2025")]
    path = "%s/%s/%s/%s" % (source.local_path, source.cluster, backup_id, damaged["path"])
    host.run(["python3", "-c", "import os, sys; f = open(sys.argv[1], 'r+b'); at = os.path.getsize(sys.argv[1]) // 2; "
              "f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 1])); f.close()", path])

    restored = assert_ok(restore(ansible, host, source, repository, tables=[WEIRD], conflict="rename"))
    assert [(t["action"], t["verified"]) for t in restored["tables"]] == [("renamed", True)]
    assert restored["checked_files"] == 2  # schema.sql and the table's own data file, of the set's 4
    assert len(dumped["manifest"]["files"]) > 2

    refused = restore(ansible, host, source, repository, tables=["public.events_2025"], conflict="rename")
    assert refused["_status"] == "failed"
    assert "%s does not match its manifest" % damaged["path"] in refused["msg"] and "the target was not touched" in refused["msg"], refused["msg"]
    assert source.sql("SELECT count(*) FROM pg_class WHERE relname = %s" % literal("events_2025_restored_%s" % backup_id)) == "0"
    assert source.sql("SELECT count(*) FROM public.events") == "366"
    assert scratch_dbs(source) == "0"
