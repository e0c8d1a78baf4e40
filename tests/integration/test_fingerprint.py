"""Table fingerprints against the lab's real PostgreSQL 15 and 18 (superuser over TCP, a scratch database per test)."""

import json
import uuid

import psycopg
import pytest
from psycopg import sql

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint as fp

pytestmark = pytest.mark.lab

# Every type whose text output depends on a setting or has changed across versions, plus the
# awkward cases: NULL next to '', a column named t (the alias), unicode, a composite and an enum.
TYPES_DDL = """
CREATE TYPE {schema}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE {schema}.pair AS (a int, b text);
CREATE TABLE {schema}.{table} (
    id int PRIMARY KEY,
    t text,
    at timestamptz,
    day date,
    ts timestamp,
    span interval,
    f8 float8,
    f4 real,
    num numeric,
    raw bytea,
    doc jsonb,
    nums int[],
    words text[],
    cash money,
    spot point,
    ok boolean,
    uid uuid,
    addr inet,
    feeling {schema}.mood,
    pr {schema}.pair,
    rel regclass
);
"""

TYPES_ROWS = """
INSERT INTO {schema}.{table} VALUES
 (1, NULL, '2026-03-29 01:30:00+01', '2026-02-28', '2026-02-28 23:59:59.123456', '1 year 2 mons 3 days 04:05:06.5',
  0.1, 0.1, 1.10, '\\x00ff10', '{{"b": [1, 2.50, null], "a": "ä"}}', '{{1,NULL,3}}', '{{"a b","",NULL}}', 12.34,
  '(1.5,-2.25)', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1/8', 'happy', ROW(1, ''), {rel}),
 (2, '', '1999-12-31 23:59:59.999999-08', '0044-03-15 BC', 'infinity', '-3 days', 'NaN', '-Infinity', 'NaN', '', '[]', '{{}}',
  '{{}}', -0.01, '(0,0)', false, NULL, '::1', 'sad', ROW(NULL, NULL), NULL),
 (3, 'Zürich ☃ 日本 "quoted" back\\slash, comma', NULL, NULL, NULL, NULL, 1e300, 3.4e38, 123456789012345678901234567890.000000001,
  '\\xdeadbeef', '{{"nested": {{"x": true}}}}', NULL, '{{"(x,y)","{{}}"}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 't', NULL, NULL, NULL, NULL, 5e-324, 1.17549435e-38, -0, NULL, 'null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'ok', NULL, NULL);
"""

# Session settings a user or a database might have that would change text output without SESSION_SETTINGS.
HOSTILE = {
    "TimeZone": "Asia/Kathmandu", "DateStyle": "SQL, DMY", "IntervalStyle": "sql_standard", "extra_float_digits": "0",
    "bytea_output": "escape", "search_path": '"Odd Schema", pg_catalog',
}


class Scratch:
    """Scratch databases on one host, dropped afterwards."""

    def __init__(self, lab, host):
        self.lab = lab
        self.host = host
        self.databases = []
        self.roles = []

    def dsn(self, dbname="postgres"):
        return self.lab.pg_dsn(self.host, dbname=dbname)

    def admin(self, statement):
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(statement)

    def database(self, prefix="pgdr_fp"):
        name = "%s_%s" % (prefix, uuid.uuid4().hex[:8])
        self.admin(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'").format(sql.Identifier(name)))
        self.databases.append(name)
        return name

    def role(self):
        name = "pgdr_fp_%s" % uuid.uuid4().hex[:8]
        self.admin(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
        self.roles.append(name)
        return name

    def connect(self, dbname, autocommit=True):
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit)

    def run(self, dbname, statement, params=None):
        with self.connect(dbname) as conn:
            conn.execute(statement, params)

    def cleanup(self):
        for name in self.databases:
            self.admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for name in self.roles:
            self.admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def scratch(lab, host):
    box = Scratch(lab, host)
    yield box
    box.cleanup()


def fingerprints(box, dbname, tables=None, settings=None, database=None):
    """Fingerprints of a database as the backup takes them: one REPEATABLE READ snapshot."""
    with box.connect(dbname, autocommit=False) as conn:
        for name, value in (settings or {}).items():
            conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
        conn.commit()
        fp.begin_snapshot(conn)
        found = fp.table_fingerprints(conn, database or dbname, tables if tables is not None else fp.list_tables(conn))
        conn.rollback()
    return found


def one(box, dbname, schema, table, **kwargs):
    [result] = fingerprints(box, dbname, tables=[(schema, table)], **kwargs)
    return result["rows"], result["fingerprint"]


def build_types(box, dbname, schema="Odd Schema", table="All Types"):
    idents = dict(schema=sql.Identifier(schema), table=sql.Identifier(table))
    box.run(dbname, sql.SQL("CREATE SCHEMA {schema}").format(**idents))
    box.run(dbname, sql.SQL(TYPES_DDL).format(**idents))
    with box.connect(dbname) as conn:  # a regclass value naming the table itself
        rel = sql.Literal(sql.SQL("{schema}.{table}").format(**idents).as_string(conn))
    box.run(dbname, sql.SQL(TYPES_ROWS).format(rel=rel, **idents))
    return schema, table


def row_texts(box, dbname, schema, table, settings, by_name=False):
    """The composite text of each row under ``settings`` (read separately from the fingerprint).

    ``by_name``: a record of the columns sorted by the bytes of their names (hash64-sum-v2), sorted here, not by the module.
    """
    with box.connect(dbname, autocommit=False) as conn:
        for name, value in settings:
            conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
        row = sql.SQL("(t.*)")
        if by_name:
            names = [r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                                                [sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(conn)])]
            row = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(n)) for n in sorted(names, key=str.encode)))
        query = sql.SQL("SELECT {}::text FROM ONLY {}.{} AS t").format(row, sql.Identifier(schema), sql.Identifier(table))
        texts = [row[0] for row in conn.execute(query)]
        conn.rollback()
    return texts


def documented_fingerprint(box, dbname, texts, method=fp.METHOD):
    """(rows, fingerprint) of row texts by the documented formula, computed apart from the module's query."""
    per_row = {"hash64-sum-v2": "hashtextextended(x COLLATE \"C\", 0)", "hash64-sum-v1": "hashtextextended(x COLLATE \"C\", 0)",
               "md5-sum64-v1": "('x' || substr(md5(x), 1, 16))::bit(64)::bigint"}[method]
    with box.connect(dbname, autocommit=True) as conn:
        rows, total = conn.execute("SELECT count(*), coalesce(sum(%s::numeric), 0)::text FROM unnest(%%s::text[]) AS x" % per_row,
                                   [texts]).fetchone()
    return rows, total


def test_same_data_gives_the_same_fingerprint_on_15_and_18(lab):
    results, texts, documented, md5, v1, by_name = {}, {}, {}, {}, {}, {}
    boxes = [Scratch(lab, lab.host(name)) for name in ("primary15", "primary18")]
    try:
        for box in boxes:
            dbname = box.database()
            schema, table = build_types(box, dbname)
            results[box.host.major] = fingerprints(box, dbname, database="shop")
            texts[box.host.major] = row_texts(box, dbname, schema, table, fp.SESSION_SETTINGS)
            by_name[box.host.major] = row_texts(box, dbname, schema, table, fp.SESSION_SETTINGS, by_name=True)
            documented[box.host.major] = documented_fingerprint(box, dbname, by_name[box.host.major], "hash64-sum-v2")
            documented[box.host.major, "v1"] = documented_fingerprint(box, dbname, texts[box.host.major], "hash64-sum-v1")
            with box.connect(dbname, autocommit=True) as conn:
                fp.begin_snapshot(conn)
                md5[box.host.major] = fp.table_fingerprints(conn, "shop", [(schema, table)], method="md5-sum64-v1")
                v1[box.host.major] = fp.table_fingerprints(conn, "shop", [(schema, table)], method="hash64-sum-v1")
    finally:
        for box in boxes:
            box.cleanup()
    assert results[15] == results[18]
    assert fp.compare(results[15], results[18]) == []
    [entry] = results[15]
    assert entry["rows"] == 4 and entry["fingerprint_method"] == fp.METHOD
    assert (entry["schema"], entry["table"], entry["database"]) == ("Odd Schema", "All Types", "shop")
    # the server computes exactly the documented method over the rows' text, the same on 15 and 18
    assert texts[15] == texts[18] and by_name[15] == by_name[18]
    assert by_name[15][0].startswith('(10.0.0.1/8,"2026-03-29 00:30:00+00",$12.34,2026-02-28,')  # addr, at, cash, day, ...
    assert {"hash64-sum-v2": documented[15], "hash64-sum-v1": documented[15, "v1"]}[fp.METHOD] == (entry["rows"], entry["fingerprint"])
    assert documented[15] == documented[18] and documented[15, "v1"] == documented[18, "v1"]
    # v1, still used to verify sets that recorded it: the same formula over (t.*), columns in position order
    assert v1[15] == v1[18] and (4, v1[15][0]["fingerprint"]) == documented[15, "v1"] != documented[15]
    # the older md5 method, still used to verify sets that recorded it, matches its Python twin
    assert md5[15] == md5[18]
    assert md5[15][0]["fingerprint_method"] == "md5-sum64-v1" and md5[15][0]["fingerprint"] != entry["fingerprint"]
    assert fp.fingerprint_of_row_texts(texts[15]) == (4, md5[15][0]["fingerprint"])
    # the whole row, not the column named t; NULL and '' differ; reg* types are schema-qualified
    assert texts[15][0].startswith('(1,,"2026-03-29 00:30:00+00",2026-02-28,')
    assert texts[15][1].startswith('(2,"",')
    assert texts[15][0].endswith(',happy,"(1,"""")","""Odd Schema"".""All Types""")')


def test_session_settings_of_the_caller_do_not_matter(scratch):
    dbname = scratch.database()
    schema, table = build_types(scratch, dbname)
    plain = one(scratch, dbname, schema, table)
    # the hostile settings really change the text of these rows...
    assert row_texts(scratch, dbname, schema, table, HOSTILE.items()) != row_texts(scratch, dbname, schema, table, fp.SESSION_SETTINGS)
    # ...but not the fingerprint, whether set in the session or as the database's defaults
    assert one(scratch, dbname, schema, table, settings=HOSTILE) == plain
    for name, value in HOSTILE.items():
        scratch.run(dbname, sql.SQL("ALTER DATABASE {} SET {} = {}").format(sql.Identifier(dbname), sql.Identifier(name), sql.Literal(value)))
    assert one(scratch, dbname, schema, table) == plain


def test_a_changed_row_changes_the_fingerprint(scratch):
    dbname = scratch.database()
    schema, table = build_types(scratch, dbname)
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    seen = {one(scratch, dbname, schema, table)}
    for change in ("UPDATE {} SET t = '' WHERE id = 1",  # NULL -> ''
                   "UPDATE {} SET t = NULL WHERE id = 1",  # back: the original again
                   "UPDATE {} SET f8 = 0.1000000000000001 WHERE id = 1",
                   "UPDATE {} SET at = at + interval '1 microsecond' WHERE id = 1",
                   "UPDATE {} SET doc = '{{\"b\": [1, 2.5, null], \"a\": \"ä\"}}' WHERE id = 1",  # 2.50 -> 2.5
                   "UPDATE {} SET raw = '\\x00ff11' WHERE id = 1"):
        scratch.run(dbname, sql.SQL(change).format(target))
        seen.add(one(scratch, dbname, schema, table))
    assert len(seen) == 6  # five distinct changes from the original, one return to it
    assert {rows for rows, _fingerprint in seen} == {4}


def test_row_order_does_not_matter_and_duplicates_count(scratch):
    dbname = scratch.database()
    scratch.run(dbname, "CREATE TABLE forward (id int, v text); CREATE TABLE backward (id int, v text); "
                        "CREATE TABLE twice (id int, v text); CREATE TABLE pairs (id int, v text); CREATE TABLE empty (id int, v text)")
    scratch.run(dbname, "INSERT INTO forward SELECT g, 'row ' || g FROM generate_series(1, 2000) AS g")
    scratch.run(dbname, "INSERT INTO backward SELECT g, 'row ' || g FROM generate_series(2000, 1, -1) AS g")
    scratch.run(dbname, "UPDATE backward SET v = v WHERE id % 7 = 0")  # moves those rows to the end of the heap
    scratch.run(dbname, "INSERT INTO twice VALUES (1, 'x'), (1, 'x')")
    scratch.run(dbname, "INSERT INTO pairs VALUES (1, 'x'), (1, 'x'), (2, 'y'), (2, 'y')")
    result = {e["table"]: (e["rows"], e["fingerprint"]) for e in fingerprints(scratch, dbname)}
    assert result["forward"] == result["backward"] and result["forward"][0] == 2000
    assert result["empty"] == (0, "0")
    single = documented_fingerprint(scratch, dbname, ["(1,x)"])
    assert result["twice"] == (2, str(2 * int(single[1])))  # not 0, as xor would give
    assert result["pairs"][1] != "0"


def test_fingerprints_see_the_exported_snapshot_only(scratch):
    dbname = scratch.database()
    scratch.run(dbname, "CREATE TABLE events (id int, note text); INSERT INTO events SELECT g, 'before' FROM generate_series(1, 100) AS g")
    before = one(scratch, dbname, "public", "events")
    with scratch.connect(dbname, autocommit=False) as exporter:
        fp.begin_snapshot(exporter)
        snapshot = fp.export_snapshot(exporter)
        scratch.run(dbname, "INSERT INTO events VALUES (101, 'after'); UPDATE events SET note = 'changed' WHERE id = 1; DELETE FROM events WHERE id = 2")
        assert fp.table_fingerprints(exporter, dbname, [("public", "events")])[0]["fingerprint"] == before[1]
        with scratch.connect(dbname, autocommit=True) as importer:  # as pg_dump --snapshot does
            fp.begin_snapshot(importer, snapshot=snapshot)
            [imported] = fp.table_fingerprints(importer, dbname, [("public", "events")])
            importer.execute("COMMIT")
        exporter.rollback()
    assert (imported["rows"], imported["fingerprint"]) == before
    after = one(scratch, dbname, "public", "events")
    assert after[0] == 100 and after != before


def test_fingerprints_need_a_snapshot_transaction(scratch):
    dbname = scratch.database()
    scratch.run(dbname, "CREATE TABLE t (id int)")
    with scratch.connect(dbname, autocommit=True) as conn:
        with pytest.raises(PgdrError, match="inside one REPEATABLE READ transaction .* read committed autocommit"):
            fp.table_fingerprints(conn, dbname, [("public", "t")])
    with scratch.connect(dbname, autocommit=False) as conn:
        with pytest.raises(PgdrError, match="but the connection is in read committed;"):
            fp.table_fingerprints(conn, dbname, [("public", "t")])
        conn.rollback()
        with pytest.raises(PgdrError, match="not a snapshot id"):
            fp.begin_snapshot(conn, snapshot="'; DROP TABLE t; --")
        with pytest.raises(PgdrError, match="cannot import snapshot 00000003-0000001B-1"):
            fp.begin_snapshot(conn, snapshot="00000003-0000001B-1")


def test_row_security_fails_loudly_instead_of_hiding_rows(scratch):
    dbname = scratch.database()
    reader = scratch.role()
    scratch.run(dbname, sql.SQL(
        "CREATE TABLE secrets (owner text, v int); INSERT INTO secrets VALUES ('a', 1), ('b', 2); "
        "ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; CREATE POLICY only_a ON secrets FOR SELECT USING (owner = 'a'); "
        "GRANT SELECT ON secrets TO {reader}; GRANT USAGE ON SCHEMA public TO {reader}; CREATE TABLE not_granted (id int)"
    ).format(reader=sql.Identifier(reader)))
    with scratch.connect(dbname, autocommit=False) as conn:
        fp.begin_snapshot(conn)
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(reader)))
        with pytest.raises(PgdrError, match="cannot fingerprint table public.secrets in database .*row-level security.*BYPASSRLS"):
            fp.table_fingerprints(conn, dbname, [("public", "secrets")])
        conn.rollback()
    with scratch.connect(dbname, autocommit=False) as conn:
        fp.begin_snapshot(conn)
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(reader)))
        with pytest.raises(PgdrError, match="permission denied.*grant the backup role read access"):
            fp.table_fingerprints(conn, dbname, [("public", "not_granted")])
        conn.rollback()


LAYOUT = """
CREATE SCHEMA app;
CREATE TABLE app.plain (id int PRIMARY KEY, t text);
CREATE UNLOGGED TABLE app.scratchpad (id int);
CREATE TABLE app.events (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE app.parent (id int, v text);
CREATE TABLE app.child (extra int) INHERITS (app.parent);
CREATE VIEW app.plain_view AS SELECT * FROM app.plain;
CREATE MATERIALIZED VIEW app.plain_mv AS SELECT * FROM app.plain;
CREATE TABLE app.ext_member (id int);
ALTER EXTENSION plpgsql ADD TABLE app.ext_member;
CREATE SCHEMA "Other";
CREATE TABLE "Other"."Mixed Case" ("t" int, "Weird ""col"" name" text);
INSERT INTO app.plain SELECT g, CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN '' ELSE 'v' || g END FROM generate_series(1, 500) AS g;
INSERT INTO app.scratchpad SELECT generate_series(1, 10);
INSERT INTO app.events SELECT DATE '2025-06-01' + g, g FROM generate_series(0, 399) AS g;
INSERT INTO app.parent VALUES (1, 'parent');
INSERT INTO app.child VALUES (2, 'child', 7), (3, 'child', NULL);
INSERT INTO app.ext_member VALUES (1);
INSERT INTO "Other"."Mixed Case" VALUES (1, 'a'), (NULL, ''), (3, NULL);
"""


def test_list_tables_keeps_what_a_dump_holds(scratch):
    dbname = scratch.database()
    scratch.run(dbname, LAYOUT)
    with scratch.connect(dbname, autocommit=True) as other:  # another session's temp table is not listed either
        other.execute("CREATE TEMP TABLE tmp_rows (id int)")
        with scratch.connect(dbname, autocommit=False) as conn:
            listed = fp.list_tables(conn)
            assert fp.list_tables(conn, include_unlogged=False) == [name for name in listed if name != ("app", "scratchpad")]
            assert fp.list_tables(conn, schemas=["Other"]) == [("Other", "Mixed Case")]
            assert fp.list_tables(conn, tables=[("app", "plain"), ("app", "nope")]) == [("app", "plain")]
            conn.rollback()
    assert listed == [("Other", "Mixed Case"), ("app", "child"), ("app", "events_2025"), ("app", "events_2026"),
                      ("app", "parent"), ("app", "plain"), ("app", "scratchpad")]
    rows = {(e["schema"], e["table"]): e["rows"] for e in fingerprints(scratch, dbname)}
    assert rows[("app", "parent")] == 1  # ONLY: the children's rows are counted once, in the child
    assert rows[("app", "events_2025")] + rows[("app", "events_2026")] == 400


def test_pg_dump_and_pg_restore_keep_the_fingerprints(lab, scratch, host, tmp_path):
    source = scratch.database()
    scratch.run(source, LAYOUT)
    build_types(scratch, source)
    target = scratch.database(prefix="pgdr_fp_restored")
    before = fingerprints(scratch, source)
    dump = tmp_path / "source.dump"
    connection = ["-h", host.address, "-p", "5432", "-U", lab.pg_superuser]
    env = {"PGPASSWORD": lab.pg_password}
    host.run([host.pg_bin_dir + "/pg_dump", *connection, "-Fc", "-f", str(dump), "-d", source], env=env)
    host.run([host.pg_bin_dir + "/pg_restore", *connection, "--exit-on-error", "-d", target, str(dump)], env=env)
    after = fingerprints(scratch, target)
    assert len(before) == 8
    assert fp.compare(before, after, database_map={source: target}) == []
    assert fp.summary(before, after, [])["ok"]
    # and a difference after the restore is found and named
    scratch.run(target, "DELETE FROM app.plain WHERE id = 500; UPDATE app.child SET extra = 8 WHERE id = 2")
    mismatches = fp.compare(before, fingerprints(scratch, target), database_map={source: target})
    assert [(m["database"], m["table"], m["problem"]) for m in mismatches] == [(source, "child", "content differs"), (source, "plain", "rows differ")]


# pg_dump recreates an inheritance child with its inherited columns first, so these come back in another column order
# (child: class, aa, bb, a -> class, aa, a, bb; adopted: zz, a, aa, class -> class, aa, a, zz). The typed table, the
# table with a dropped and two added columns (one generated) keep theirs, but their positions are not in name order,
# so a verification with the wrong method would fail on them too.
REORDERED = """
CREATE TABLE parent (class text, aa int);
CREATE TABLE child (bb text) INHERITS (parent);
ALTER TABLE parent ADD COLUMN a int;
CREATE TABLE adopted (zz text, a int, aa int, class text);
ALTER TABLE adopted INHERIT parent;
CREATE TYPE pair AS (z int, m text);
CREATE TABLE typed OF pair (PRIMARY KEY (z));
ALTER TYPE pair ADD ATTRIBUTE b date CASCADE;
CREATE TABLE evolved (id int, gone text, name text);
INSERT INTO parent VALUES ('p', 1, 2);
INSERT INTO child (class, aa, bb, a) VALUES ('c', 1, 'x', 2), ('c', NULL, '', NULL), ('d', 3, NULL, 4);
INSERT INTO adopted (zz, a, aa, class) VALUES ('z', 1, 2, 'q'), (NULL, NULL, 5, '');
INSERT INTO typed VALUES (1, 'one', '2026-01-01'), (2, NULL, NULL);
INSERT INTO evolved VALUES (2, 'dropped', 'two'), (1, 'dropped', NULL);
ALTER TABLE evolved DROP COLUMN gone;
ALTER TABLE evolved ADD COLUMN added int DEFAULT 5;
ALTER TABLE evolved ADD COLUMN doubled int GENERATED ALWAYS AS (id * 2) STORED;
INSERT INTO evolved (id, name, added) VALUES (3, 'three', NULL);
"""

COLUMN_ORDER = "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'public.{}'::regclass AND attnum > 0 AND NOT attisdropped"


def method_fingerprints(box, dbname, method):
    with box.connect(dbname, autocommit=True) as conn:
        fp.begin_snapshot(conn)
        found = fp.table_fingerprints(conn, dbname, fp.list_tables(conn), method=method)
        conn.execute("COMMIT")
    return {entry["table"]: entry for entry in found}


def test_a_restore_verifies_tables_whose_columns_pg_dump_reorders(ansible, lab, host, scratch):
    """Issue 11 item 19: with hash64-sum-v1 (column positions) the restore of this database failed verification."""
    suffix = uuid.uuid4().hex[:6]
    source = scratch.database(prefix="h3_fp")
    scratch.run(source, REORDERED)
    repository = {"type": "local", "path": "/var/backups/h3-fp-%s" % suffix}
    cluster = "h3-fp-%s" % suffix
    host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", repository["path"]])
    try:
        dumped = ansible.module(host.name, "pgdr.backup.pg_logical_dump", dict(database=source, cluster=cluster, repository=repository))
        assert dumped["_status"] == "ok", dumped.get("msg")
        assert sorted(t["table"] for t in dumped["tables"]) == ["adopted", "child", "evolved", "parent", "typed"]

        target = source + "_r"
        scratch.databases.append(target)
        restored = ansible.module(host.name, "pgdr.backup.restore_cluster", dict(cluster=cluster, repository=repository, database=target))
        assert restored["_status"] == "ok", restored.get("msg")
        (outcome,) = restored["databases"]
        assert outcome["verification"]["verified"] is True and outcome["verification"]["tables"] == 5
        assert {t["fingerprint_method"] for t in dumped["tables"]} == {"hash64-sum-v2"}
        # the case really happened: the restored children have their columns in another order
        for table, before, after in (("child", "class,aa,bb,a", "class,aa,a,bb"), ("adopted", "zz,a,aa,class", "class,aa,a,zz")):
            assert host.psql(COLUMN_ORDER.format(table), db=source).strip() == before
            assert host.psql(COLUMN_ORDER.format(table), db=target).strip() == after

        # A set recorded with v1 is verified with v1: the tables pg_dump keeps in place verify (their v1 and v2
        # fingerprints differ, so v2 would fail them), and a reordered child fails, as every v1 set did before.
        v1 = method_fingerprints(scratch, source, "hash64-sum-v1")
        v2 = {t["table"]: t for t in dumped["tables"]}
        assert all(v1[name]["fingerprint"] != v2[name]["fingerprint"] for name in ("typed", "evolved"))
        manifest_path = "%s/%s/%s/manifest.json" % (repository["path"], cluster, dumped["backup_id"])
        manifest = json.loads(host.run(["cat", manifest_path]).stdout)
        for kept, v1_target, verifies in ((("parent", "typed", "evolved"), source + "_v1", True), (("child", "typed"), source + "_v1c", False)):
            manifest["tables"] = [dict(v1[name], database=source) for name in kept]
            host.run(["tee", manifest_path], input=json.dumps(manifest, indent=2))
            scratch.databases.append(v1_target)
            again = ansible.module(host.name, "pgdr.backup.restore_cluster", dict(cluster=cluster, repository=repository, database=v1_target))
            if verifies:
                assert again["_status"] == "ok", again.get("msg")
                assert again["databases"][0]["verification"] == dict(again["databases"][0]["verification"], verified=True, tables=3)
            else:
                assert again["_status"] == "failed"
                assert "public.child" in again["msg"] and "content differs" in again["msg"], again["msg"]
    finally:
        host.run(["rm", "-rf", repository["path"]])
