"""Table backups and restores without a server: names, file paths, COPY options, selection, conflict plans, what mode table needs."""

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set
from ansible_collections.pgdr.backup.plugins.module_utils.logical import restore as logical_restore
from ansible_collections.pgdr.backup.plugins.module_utils.logical import table_copy as tc
from ansible_collections.pgdr.backup.plugins.module_utils.logical import table_restore as tr
from ansible_collections.pgdr.backup.plugins.module_utils.logical.dump import LogicalDumpOptions
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set


def entry(table, schema="public", database="sales", rows=3, fingerprint="42"):
    return {"database": database, "schema": schema, "table": table, "rows": rows, "fingerprint": fingerprint,
            "fingerprint_method": "md5-sum64-v1"}


@pytest.mark.parametrize("text,pair", [
    ("orders", ("public", "orders")),
    ("Billing.Invoices", ("Billing", "Invoices")),
    ('Mixed Case ü.we"ird table', ("Mixed Case ü", 'we"ird table')),
    ("s.a.b", ("s", "a.b")),
])
def test_split_table_takes_the_first_dot(text, pair):
    assert tc.split_table(text) == pair


def test_data_file_names_are_valid_set_paths_that_never_collide():
    a = tc.data_file_name("a.b", "c", "csv", "gzip", "gpg")
    b = tc.data_file_name("a", "b.c", "csv", "gzip", "gpg")
    assert a != b
    assert a == "tables/a%2Eb/c.csv.gz.gpg"
    for schema, table in ((".", ".."), ("Mixed Case ü", 'we"ird/table'), ("-x", "y z")):
        path = tc.data_file_name(schema, table, "binary", "none", "none")
        assert backup_set.validate_file_path(path) == path
        assert path.count("/") == 2 and path.endswith(".bin")
    assert tc.query_file_name("big orders", "text", "zstd", "none") == "queries/big%20orders.txt.zst"


def test_copy_options_and_dump_patterns():
    assert tc.copy_options("csv").as_string(None) == "(FORMAT csv, ENCODING 'UTF8')"
    assert tc.copy_options("binary").as_string(None) == "(FORMAT binary)"
    assert tc.pattern('Mixed Case ü', 'we"ird*table') == '"Mixed Case ü"."we""ird*table"'


def test_select_tables_by_name_and_schema_and_refuse_what_is_not_in_the_set():
    tables = [entry("a"), entry("b", schema="s"), entry("c", schema="s"), entry("x", database="other")]
    assert tr.select_tables(tables, "sales") == [("public", "a"), ("s", "b"), ("s", "c")]
    assert tr.select_tables(tables, "sales", tables=["s.c", "a", "s.c"]) == [("s", "c"), ("public", "a")]
    assert tr.select_tables(tables, "sales", tables=["a"], schemas=["s"]) == [("public", "a"), ("s", "b"), ("s", "c")]
    with pytest.raises(PgdrError, match="table public.x is not in the backup set"):
        tr.select_tables(tables, "sales", tables=["x"])
    with pytest.raises(PgdrError, match="schema nope has no tables"):
        tr.select_tables(tables, "sales", schemas=["nope"])


def test_conflict_error_names_every_existing_table_and_plans_nothing():
    selected = [("public", "a"), ("s", "B c")]
    with pytest.raises(PgdrError) as failure:
        tr.plan_conflicts(selected, {("public", "a"), ("s", "B c")}, "error", "20260101T000000Z")
    assert 'public.a, s."B c" already exist in the target database; nothing was changed' in failure.value.msg
    assert tr.plan_conflicts(selected, set(), "error", "X") == [("public", "a", "a", "created"), ("s", "B c", "B c", "created")]


def test_conflict_rename_and_replace_plans():
    selected = [("public", "a"), ("public", "new")]
    existing = {("public", "a")}
    assert tr.plan_conflicts(selected, existing, "rename", "20260101T000000Z") == [
        ("public", "a", "a_restored_20260101T000000Z", "renamed"), ("public", "new", "new", "created")]
    assert tr.plan_conflicts(selected, existing, "replace", "id") == [
        ("public", "a", "a", "replaced"), ("public", "new", "new", "created")]
    with pytest.raises(PgdrError, match="already exists too"):
        tr.plan_conflicts(selected, existing | {("public", "a_restored_id")}, "rename", "id")


def test_renamed_refuses_names_postgres_would_truncate():
    assert tr.renamed("t", "20260101T000000Z") == "t_restored_20260101T000000Z"
    with pytest.raises(PgdrError, match="longer than 63 bytes"):
        tr.renamed("ü" * 20, "20260101T000000Z")


def test_verification_results_report_each_table():
    plans = [("public", "a", "a_restored_x", "renamed"), ("public", "b", "b", "replaced"), ("public", "c", "c", "created")]
    expected = {("public", n): entry(n) for n in "abc"}
    actual = {("public", "a_restored_x"): entry("a_restored_x"), ("public", "b"): entry("b", fingerprint="41")}
    results = tr.verification_results(plans, expected, actual)
    assert [(r["target_table"], r["verified"], r["problem"]) for r in results] == [
        ("a_restored_x", True, None), ("b", False, "content differs"), ("c", False, "missing")]


def test_copy_files_are_decompressed_as_whole_streams():
    for fmt in ("csv", "text", "binary", "plain"):
        stages = logical_restore.input_stages({"path": "f", "format": fmt, "compression": {"method": "gzip"},
                                               "encryption": {"method": "none"}}, None)
        assert stages == [["gzip", "-dc"]]
    assert logical_restore.input_stages({"path": "f", "format": "custom", "compression": {"method": "gzip"},
                                         "encryption": {"method": "none"}}, None) == []


def test_mode_table_needs_something_to_export_before_the_module_runs():
    validator = ArgumentSpecValidator(dump_set.argument_spec(), **dump_set.ARGUMENT_RELATIONS)
    repository = {"type": "local", "path": "/b"}

    def errors(**params):
        return [str(error) for error in validator.validate(dict(params, repository=repository)).errors]

    assert errors(mode="table") == ["mode is table but any of the following are missing: tables, schemas, query"]
    assert errors(mode="table", query="SELECT 1", name="one") == []
    assert errors(encryption={"method": "gpg"}) == ["method is gpg but all of the following are missing: passphrase found in encryption"]
    # an empty list or passphrase counts as given for Ansible: the module's own checks refuse them
    params = validator.validate(dict(mode="table", tables=[], repository=repository)).validated_parameters
    with pytest.raises(PgdrError, match="mode table needs tables"):
        dump_set.validate(typed(LogicalDumpOptions, params))
    params = validator.validate(dict(encryption={"method": "gpg", "passphrase": ""}, repository=repository)).validated_parameters
    with pytest.raises(PgdrError, match="encryption.passphrase is required with encryption.method gpg"):
        dump_set.validate(typed(LogicalDumpOptions, params))
