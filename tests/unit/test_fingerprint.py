"""Fingerprints without a server: the statement, the arithmetic, the settings, comparing."""

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint as fp


def entry(table, rows=1, fingerprint="7", database="sales", schema="public", method=fp.METHOD):
    return {"database": database, "schema": schema, "table": table, "rows": rows, "fingerprint": fingerprint, "fingerprint_method": method}


def test_v2_hashes_a_record_of_the_columns_given_in_name_order():
    text = fp.fingerprint_query("Odd \"Schema\"", "t", "hash64-sum-v2", ["a", "t", 'we"ird']).as_string(None)
    assert text == (
        "SELECT pg_catalog.count(*), "
        "COALESCE(pg_catalog.sum(pg_catalog.hashtextextended(ROW(t.\"a\", t.\"t\", t.\"we\"\"ird\")::text COLLATE \"C\", 0)), 0)::text "
        'FROM ONLY "Odd ""Schema"""."t" AS t'
    )
    assert "ROW()::text" in fp.fingerprint_query("s", "t", "hash64-sum-v2", []).as_string(None)  # a table without columns
    with pytest.raises(PgdrError, match="needs the table's column names"):
        fp.fingerprint_query("s", "t", "hash64-sum-v2")


def test_new_sets_record_a_method_their_manifest_check_accepts():
    assert fp.METHOD in backup_set.FINGERPRINT_METHODS
    assert set(backup_set.FINGERPRINT_METHODS) <= set(fp.METHODS)  # every method a manifest may name can be verified
    assert fp.BY_NAME <= set(fp.METHODS) and "hash64-sum-v1" not in fp.BY_NAME


def test_v1_query_reads_only_the_table_itself_as_whole_rows():
    text = fp.fingerprint_query("Odd \"Schema\"", "t", "hash64-sum-v1").as_string(None)
    assert text == (
        "SELECT pg_catalog.count(*), "
        "COALESCE(pg_catalog.sum(pg_catalog.hashtextextended((t.*)::text COLLATE \"C\", 0)), 0)::text "
        'FROM ONLY "Odd ""Schema"""."t" AS t'
    )


def test_the_md5_method_is_still_computed_for_manifests_that_recorded_it():
    text = fp.fingerprint_query("s", "t", "md5-sum64-v1").as_string(None)
    assert "pg_catalog.sum(('x' || pg_catalog.substr(pg_catalog.md5((t.*)::text), 1, 16))::bit(64)::bigint)" in text
    with pytest.raises(PgdrError, match="fingerprint method 'sha1-v9' is not known"):
        fp.fingerprint_query("s", "t", "sha1-v9")


def test_arithmetic_matches_the_server():
    # SELECT ('x' || substr(md5('abc'), 1, 16))::bit(64)::bigint  -> -8070080442485551184 on PostgreSQL 15 and 18
    assert fp.fingerprint_of_row_texts(["abc"]) == (1, "-8070080442485551184")
    assert fp.fingerprint_of_row_texts([]) == (0, "0")


def test_order_duplicates_and_null_versus_empty():
    rows = ["(1,a)", "(2,)", '(3,"")']
    assert fp.fingerprint_of_row_texts(rows) == fp.fingerprint_of_row_texts(list(reversed(rows)))
    one = fp.fingerprint_of_row_texts(["(1,a)"])
    two = fp.fingerprint_of_row_texts(["(1,a)", "(1,a)"])
    assert two[0] == 2 and int(two[1]) == 2 * int(one[1]) and two[1] != "0"  # xor would give 0
    assert fp.fingerprint_of_row_texts(["(1,)"]) != fp.fingerprint_of_row_texts(['(1,"")'])


def test_session_settings_cover_every_output_dependent_setting():
    names = dict(fp.SESSION_SETTINGS)
    assert names == {
        "TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "1",
        "bytea_output": "hex", "lc_monetary": "C", "search_path": "", "row_security": "off", "statement_timeout": "0",
    }


class RecordingConnection:
    def __init__(self):
        self.calls = []

    def execute(self, query, params=None):
        self.calls.append((query, params))


def test_settings_are_sent_as_parameters_and_local_to_the_transaction():
    conn = RecordingConnection()
    fp.apply_session_settings(conn)
    [(query, params)] = conn.calls
    assert query == "SELECT " + ", ".join(["pg_catalog.set_config(%s, %s, true)"] * len(fp.SESSION_SETTINGS))
    assert params == [item for pair in fp.SESSION_SETTINGS for item in pair]


def test_compare_finds_every_kind_of_difference():
    expected = [entry("same"), entry("gone"), entry("fewer", rows=5), entry("edited", fingerprint="1"), entry("oldmethod")]
    actual = [entry("same"), entry("fewer", rows=4), entry("edited", fingerprint="2"), entry("oldmethod", method="md5-sum64-v2"), entry("new")]
    mismatches = fp.compare(expected, actual)
    assert [(m["table"], m["problem"]) for m in mismatches] == [
        ("edited", "content differs"), ("fewer", "rows differ"), ("gone", "missing"), ("new", "extra"), ("oldmethod", "method differs"),
    ]
    gone = mismatches[2]
    assert gone == {"database": "sales", "schema": "public", "table": "gone", "expected_rows": 1, "actual_rows": None,
                    "expected_fingerprint": "7", "actual_fingerprint": None, "problem": "missing"}
    result = fp.summary(expected, actual, mismatches)
    assert result["ok"] is False
    counts = ("matched", "missing", "extra", "rows_differ", "content_differs", "method_differs")
    assert [result[name] for name in counts] == [1, 1, 1, 1, 1, 1]
    assert result["text"] == ("1 of 5 expected tables match; 1 content differs, 1 extra, 1 method differs, 1 missing, 1 rows differ; "
                              "5 tables do not match: public.edited (content differs), public.fewer (rows differ), public.gone (missing) and 2 more")


def test_a_mismatch_message_names_how_many_and_the_first_few():
    eight = fp.compare([entry("t%d" % n) for n in range(8)], [entry("t%d" % n, fingerprint="8") for n in range(8)])
    assert fp.describe_mismatches(eight) == ("8 tables do not match: public.t0 (content differs), public.t1 (content differs), "
                                             "public.t2 (content differs) and 5 more")
    assert fp.describe_mismatches(eight[:3]) == "3 tables do not match: public.t0 (content differs), public.t1 (content differs), public.t2 (content differs)"
    assert fp.describe_mismatches(eight[:1], limit=1) == "1 table does not match: public.t0 (content differs)"
    assert fp.describe_mismatches(eight, limit=1).endswith("public.t0 (content differs) and 7 more")
    assert fp.describe_mismatches([]) == "all tables match"
    # across databases (a cluster set) each table says which database it is in
    spread = fp.compare([entry("a", database="sales"), entry("b", database="crm")], [])
    assert fp.describe_mismatches(spread) == "2 tables do not match: public.b in database crm (missing), public.a in database sales (missing)"


def test_compare_equal_lists_and_restored_database_names():
    expected = [entry("a", rows=2, database="sales"), entry("b", schema="Odd Schema", database="sales")]
    actual = [entry("b", schema="Odd Schema", database="drill_sales"), entry("a", rows=2, database="drill_sales")]
    assert fp.compare(expected, actual, database_map={"sales": "drill_sales"}) == []
    summary = fp.summary(expected, actual, [])
    assert summary["ok"] and summary["matched"] == 2 and summary["text"] == "all 2 tables match (3 rows)"
    # without the map every table is in the "wrong" database
    assert {m["problem"] for m in fp.compare(expected, actual)} == {"missing", "extra"}
    extra = fp.compare([], [entry("x", database="drill_sales")], database_map={"sales": "drill_sales"})
    assert extra[0]["database"] == "sales" and extra[0]["problem"] == "extra"


def test_compare_refuses_duplicate_entries():
    with pytest.raises(PgdrError, match="listed twice in the actual fingerprints"):
        fp.compare([entry("a")], [entry("a"), entry("a")])


def test_snapshot_ids_are_checked_before_use():
    class IdleConnection:
        class info:  # noqa: N801  (mimics psycopg's conn.info)
            transaction_status = fp.psycopg.pq.TransactionStatus.IDLE

        autocommit = True

    with pytest.raises(PgdrError, match="not a snapshot id"):
        fp.begin_snapshot(IdleConnection(), snapshot="x'; DROP TABLE t; --")


def test_verification_uses_the_method_the_manifest_recorded():
    assert fp.recorded_method([entry("a", method="md5-sum64-v1"), entry("b", method="md5-sum64-v1")]) == "md5-sum64-v1"
    assert fp.recorded_method([entry("a", method="hash64-sum-v1")]) == "hash64-sum-v1"  # sets written before v2
    assert fp.recorded_method([]) == fp.METHOD
    with pytest.raises(PgdrError, match="mixes fingerprint methods"):
        fp.recorded_method([entry("a"), entry("b", method="md5-sum64-v1")])
