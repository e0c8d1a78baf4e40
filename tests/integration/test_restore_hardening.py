"""restore_cluster hardening (issue 11): the replace swap, sessions on a replaced database, globals with tablespaces,
sets made with schema/table filters, database-level settings, check-mode results, session_role. Through ansible-playbook
on the lab hosts; every object is named h1_<random> and dropped afterwards."""

import uuid

import psycopg
import pytest

from tests.integration.test_logical_failures import one_line
from tests.phases import ON_PG18
from tests.sql_text import ident, literal

DUMP = "pgdr.backup.pg_logical_dump"
RESTORE = "pgdr.backup.restore_cluster"


class Db:
    """A small database on a lab host with a local repository; dropped (with what the test names) afterwards."""

    def __init__(self, lab, host, name=None):
        self.lab, self.host = lab, host
        self.suffix = uuid.uuid4().hex[:6]
        self.name = name or "h1_%s" % self.suffix
        self.cluster = "h1-%s-%s" % (host.name, self.suffix)
        self.repository = {"type": "local", "path": "/var/backups/h1-%s" % self.suffix}
        self.drop = {self.name}
        self.roles = set()
        host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.repository["path"]])
        host.psql("CREATE DATABASE %s" % ident(self.name))
        self.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, md5(g::text) FROM generate_series(1, 100) g")

    def sql(self, statement, db=None):
        return self.host.psql(statement, db=db or self.name).strip()

    def exists(self, name):
        return self.host.psql("SELECT count(*) FROM pg_database WHERE datname = %s" % literal(name)).strip() == "1"

    def like(self, pattern):
        return self.host.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE %s"
                              % literal(pattern)).strip()

    def cleanup(self):
        for name in self.drop:
            self.host.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(name))
        for role in self.roles:
            self.host.psql("DROP ROLE IF EXISTS %s" % ident(role))
        self.host.run(["rm", "-rf", self.repository["path"]])


@pytest.fixture
def db(lab, host):
    made = Db(lab, host)
    yield made
    made.cleanup()


def ok(result):
    assert result["_status"] == "ok", result.get("msg")
    return result


def dump(ansible, db, **args):
    return ok(ansible.module(db.host.name, DUMP, dict(database=db.name, cluster=db.cluster, repository=db.repository, **args)))


def restore(ansible, db, check=False, **args):
    return ansible.module(db.host.name, RESTORE, dict(cluster=db.cluster, repository=db.repository, **args), check=check)


# --- item 4: the replace swap ---------------------------------------------------------------


def test_a_taken_previous_name_fails_the_replace_before_anything_changes(ansible, lab, host, db):
    backup_id = dump(ansible, db)["backup_id"]
    previous, new = "%s_previous_%s" % (db.name, backup_id), "%s_pgdr_new_%s" % (db.name, backup_id)
    db.drop |= {previous, new}
    db.host.psql("CREATE DATABASE %s" % ident(previous))
    db.sql("CREATE TABLE marker (x int)", db=previous)
    db.sql("DELETE FROM public.t WHERE id > 50")
    msg = one_line(restore(ansible, db, if_exists="replace"))
    assert msg.startswith('database "%s" (the replaced database) exists already' % previous) and "nothing was changed" in msg, msg
    # before the fix the new copy was loaded and verified, the first rename failed, and the copy stayed orphaned
    assert not db.exists(new)
    assert db.sql("SELECT count(*) FROM public.t") == "50"
    assert db.sql("SELECT count(*) FROM marker", db=previous) == "0"


def test_a_replace_whose_swap_names_are_too_long_is_refused_up_front(ansible, lab, host):
    made = Db(lab, host, name="h1_%s_%s" % (uuid.uuid4().hex[:6], "l" * 30))  # 40 bytes: 66 with _previous_<id>
    try:
        backup_id = dump(ansible, made)["backup_id"]
        made.drop |= {("%s_pgdr_new_%s" % (made.name, backup_id))[:63], ("%s_previous_%s" % (made.name, backup_id))[:63]}
        msg = one_line(restore(ansible, made, if_exists="replace"))
        assert "is 66 bytes, longer than the 63 PostgreSQL allows" in msg and "nothing was changed" in msg, msg
        assert made.like(made.name + "\\_%") == ""  # before the fix: created under a name cut to 63 bytes
        assert made.sql("SELECT count(*) FROM public.t") == "100"
    finally:
        made.cleanup()


def test_a_replace_swaps_in_one_transaction(ansible, lab, host, db):
    backup_id = dump(ansible, db)["backup_id"]
    db.sql("DELETE FROM public.t WHERE id > 10")
    replaced = ok(restore(ansible, db, if_exists="replace", keep_previous=True))
    previous = "%s_previous_%s" % (db.name, backup_id)
    db.drop.add(previous)
    assert replaced["databases"][0]["action"] == "replace"
    assert db.sql("SELECT count(*) FROM public.t") == "100"
    assert db.sql("SELECT count(*) FROM public.t", db=previous) == "10"
    assert db.like(db.name + "\\_pgdr\\_new%") == ""


# --- item 5: sessions on the database being replaced ------------------------------------------


def test_open_sessions_fail_a_replace_unless_terminate_sessions(ansible, lab, host, db):
    dump(ansible, db)
    db.sql("DELETE FROM public.t WHERE id > 20")
    with psycopg.connect(lab.pg_dsn(host, dbname=db.name), autocommit=True) as held:
        msg = one_line(restore(ansible, db, if_exists="replace"))
        # before the fix the session was ended without a word and the database replaced
        assert msg.startswith('database "%s" has 1 open session(s)' % db.name) and "terminate_sessions: true" in msg, msg
        assert held.execute("SELECT count(*) FROM public.t").fetchone()[0] == 20  # still connected, nothing replaced
        assert db.like(db.name + "\\_%") == ""
        replaced = ok(restore(ansible, db, if_exists="replace", terminate_sessions=True))
        assert replaced["databases"][0]["verification"]["verified"] is True
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    assert db.sql("SELECT count(*) FROM public.t") == "100"


# --- a cluster set from a scratch cluster: globals with a tablespace, database-level settings --------------------------

SCRATCH_PORT = 5447  # h1's own port on primary15, beside the live cluster


class ScratchCluster:
    """A throwaway PostgreSQL 15 cluster on primary15 (own folder, own port): a cluster dump of it holds only what the test made."""

    def __init__(self, lab):
        self.host = lab.host("primary15")
        self.suffix = uuid.uuid4().hex[:6]
        self.folder = "/var/lib/postgresql/h1-scratch-%s" % self.suffix
        self.data = self.folder + "/data"
        self.ts_folder = self.folder + "/ts"
        bin_dir = self.host.pg_bin_dir
        self.host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.folder, self.ts_folder])
        self.host.run([bin_dir + "/initdb", "-D", self.data, "-A", "peer", "-U", "postgres", "--no-sync"], user="postgres")
        self.host.run([bin_dir + "/pg_ctl", "-D", self.data, "-w", "-l", self.folder + "/log", "-o",
                       "-p %d -k /run/postgresql -c listen_addresses=''" % SCRATCH_PORT, "start"], user="postgres")

    def sql(self, statement, db="postgres"):
        argv = [self.host.pg_bin_dir + "/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-p", str(SCRATCH_PORT),
                "-d", db, "-f", "-"]
        return self.host.run(argv, user="postgres", input=statement).stdout.strip()

    def stop(self):
        self.host.run([self.host.pg_bin_dir + "/pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop"], user="postgres", check=False)
        self.host.run(["rm", "-rf", self.folder])


def s3_repository(lab, suffix):
    return {"type": "s3", "endpoint_url": lab.s3["endpoint"], "region": lab.s3["region"], "bucket": lab.s3["bucket"],
            "prefix": "h1-%s" % suffix, "access_key": lab.s3["access_key"], "secret_key": lab.s3["secret_key"]}


def remove_s3_prefix(lab, suffix):
    s3 = lab.s3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=lab.s3["bucket"], Prefix="h1-%s/" % suffix):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=lab.s3["bucket"], Key=item["Key"])


# The cluster set's restores create a tablespace on primary18 and keep it until the module's fixture ends: every base
# backup of primary18 taken meanwhile carries it (test_basebackup compares a set's files), so its tests are exclusive.


class ClusterSet:
    """The scratch cluster's objects, its cluster set (in S3), and cleanup of what restores made on primary18."""

    def __init__(self, lab, scratch, dumped):
        self.lab, self.scratch, self.suffix = lab, scratch, scratch.suffix
        self.target = lab.host("primary18")
        self.role, self.tablespace, self.db = "h1_r_" + self.suffix, "h1_ts_" + self.suffix, "h1_db_" + self.suffix
        self.grantee = "h1_g_" + self.suffix
        self.cluster = "h1-cluster-" + self.suffix
        self.repository = s3_repository(lab, self.suffix)
        self.mapped = "/var/lib/postgresql/h1-mapped-%s" % self.suffix  # on primary18
        self.dumped = dumped

    def restore(self, ansible, check=False, **args):
        return ansible.module(self.target.name, RESTORE, dict(cluster=self.cluster, repository=self.repository, **args), check=check)

    def role_exists(self):
        return self.target.psql("SELECT count(*) FROM pg_roles WHERE rolname = %s" % literal(self.role)).strip() == "1"

    def tablespace_location(self):
        return self.target.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = %s" % literal(self.tablespace)).strip()


@pytest.fixture(scope="module")
def cluster_set(lab, tmp_path_factory):
    """A cluster set of a scratch PostgreSQL 15 cluster whose database has a table in a tablespace and database-level settings."""
    from tests.integration.conftest import Ansible

    scratch = ScratchCluster(lab)
    made = ClusterSet(lab, scratch, None)
    try:
        scratch.sql("CREATE ROLE %s" % ident(made.grantee))
        scratch.sql("CREATE ROLE %s LOGIN; CREATE TABLESPACE %s OWNER %s LOCATION %s; CREATE DATABASE %s OWNER %s"
                    % (ident(made.role), ident(made.tablespace), ident(made.role), literal(scratch.ts_folder), ident(made.db), ident(made.role)))
        scratch.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text) TABLESPACE %s; "
                    "INSERT INTO public.t SELECT g, md5(g::text) FROM generate_series(1, 50) g" % ident(made.tablespace), db=made.db)
        scratch.sql("ALTER DATABASE {db} SET timezone_abbreviations = 'India'; ALTER DATABASE {db} SET bytea_output = 'escape'; "
                    "ALTER DATABASE {db} SET search_path = '$user', public, \"Odd, one\"; "
                    "ALTER ROLE {role} IN DATABASE {db} SET work_mem = '3MB'; "
                    "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO {grantee} WITH GRANT OPTION; "
                    "ALTER DATABASE {db} CONNECTION LIMIT 7; COMMENT ON DATABASE {db} IS 'h1''s database'"
                    .format(db=ident(made.db), role=ident(made.role), grantee=ident(made.grantee)))
        ansible = Ansible(lab, tmp_path_factory.mktemp("h1-cluster"))
        made.dumped = ok(ansible.module(scratch.host.name, DUMP, dict(mode="cluster", cluster=made.cluster, repository=made.repository,
                                                                      login_port=SCRATCH_PORT)))
        yield made
    finally:
        scratch.stop()
        remove_s3_prefix(lab, made.suffix)
        target = made.target
        for name in target.psql("SELECT datname FROM pg_database WHERE datname LIKE %s" % literal(made.db + "%")).split():
            target.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(name))
        target.psql("DROP TABLESPACE IF EXISTS %s" % ident(made.tablespace))
        target.psql("DROP ROLE IF EXISTS %s; DROP ROLE IF EXISTS %s" % (ident(made.role), ident(made.grantee)))
        target.run(["rm", "-rf", made.mapped])


@pytest.mark.exclusive
@ON_PG18
def test_globals_with_a_tablespace_path_missing_on_the_target_apply_nothing_and_a_mapping_works(ansible, cluster_set):
    cs = cluster_set
    assert not cs.role_exists()  # else the assertion below could not fail
    # the source's tablespace folder does not exist on primary18 (its own /var/lib/postgresql)
    msg = one_line(cs.restore(ansible, databases=[cs.db]))
    assert msg.startswith('tablespace "%s" cannot be created at %s: the folder does not exist on the target host; nothing was applied'
                          % (cs.tablespace, cs.scratch.ts_folder)) and "tablespace_mapping" in msg, msg
    # before the fix the roles were created by then: the globals ran statement by statement and stopped at CREATE TABLESPACE
    assert not cs.role_exists() and cs.tablespace_location() == ""
    msg = one_line(cs.restore(ansible, check=True, databases=[cs.db], tablespace_mapping={cs.tablespace: cs.mapped}))
    assert msg.startswith('tablespace "%s" cannot be created at %s: the folder does not exist' % (cs.tablespace, cs.mapped)), msg
    cs.target.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", cs.mapped])
    checked = ok(cs.restore(ansible, check=True, databases=[cs.db], tablespace_mapping={cs.tablespace: cs.mapped}))
    assert checked["globals"]["roles_created"] == sorted([cs.role, cs.grantee]) and not cs.role_exists()
    restored = ok(cs.restore(ansible, databases=[cs.db], tablespace_mapping={cs.tablespace: cs.mapped}))
    assert restored["globals_restored"] is True
    assert restored["globals"]["tablespaces_created"] == [dict(name=cs.tablespace, location=cs.mapped, source_location=cs.scratch.ts_folder)]
    assert cs.role in restored["globals"]["roles_created"]
    assert restored["databases"][0]["verification"]["verified"] is True
    assert cs.tablespace_location() == cs.mapped
    assert cs.target.psql("SELECT pg_get_userbyid(spcowner) FROM pg_tablespace WHERE spcname = %s" % literal(cs.tablespace)).strip() == cs.role
    assert cs.target.psql("SELECT t.spcname FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE c.relname = 't'",
                          db=cs.db).strip() == cs.tablespace


# --- item 7: every filter the dump accepts gives a set that restores ---------------------------------------------------

FORMATS = ("plain", "custom", "directory", "tar")
FILTERS = {"public": dict(schemas=["public"]), "other": dict(schemas=["h1 other"]), "tables": dict(tables=["public.t", "h1 other.u"]), "none": {}}


def test_every_format_and_filter_dumps_a_set_that_restores_verified(ansible, lab, host, db):
    db.sql('CREATE SCHEMA "h1 other"; CREATE TABLE "h1 other".u (id int); INSERT INTO "h1 other".u SELECT generate_series(1, 7); '
           "CREATE TABLE public.w (id int); INSERT INTO public.w VALUES (1)")
    tasks, cases = [], []
    for fmt in FORMATS:
        for name, filt in FILTERS.items():
            backup_id = "20260101T0000%02dZ" % len(cases)
            target = "%s_%s_%s" % (db.name, fmt[:3], name)
            db.drop.add(target)
            cases.append((fmt, name, target))
            tasks.append({"name": "dump %s %s" % (fmt, name), "ignore_errors": True, DUMP: dict(
                database=db.name, cluster=db.cluster, repository=db.repository, format=fmt, backup_id=backup_id, **filt)})
            tasks.append({"name": "restore %s %s" % (fmt, name), "ignore_errors": True, RESTORE: dict(
                cluster=db.cluster, repository=db.repository, backup_id=backup_id, database=target)})
    run = ansible.play(host.name, tasks)
    failures = []
    for fmt, name, _target in cases:
        for step in ("dump", "restore"):
            result = run.result("%s %s %s" % (step, fmt, name), host.name)
            if result["_status"] != "ok":
                failures.append("%s %s %s: %s" % (step, fmt, name, result.get("msg")))
                break
        else:
            verification = result["databases"][0]["verification"]
            if not verification["verified"] or verification["tables"] != {"public": 2, "other": 1, "tables": 2, "none": 3}[name]:
                failures.append("restore %s %s: %s" % (fmt, name, verification))
    # before the fix every "public" case failed: schema "public" already exists
    assert failures == []
    assert db.sql("SELECT count(*) FROM public.w", db="%s_dir_public" % db.name) == "1"
    assert db.sql('SELECT count(*) FROM "h1 other".u', db="%s_tar_tables" % db.name) == "7"


# --- item 20: database-level settings of a cluster set come back -------------------------------------------------------


@pytest.mark.exclusive
@ON_PG18
def test_database_settings_acl_limit_and_comment_come_back_with_a_cluster_set(ansible, cluster_set):
    cs = cluster_set
    cs.target.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", cs.mapped])
    (info,) = [d for d in cs.dumped["manifest"]["databases"] if d["name"] == cs.db]
    assert info["connection_limit"] == 7 and len(info["settings"]) == 4  # what the dump captured (pg_logical_dump's side)
    restored = ok(cs.restore(ansible, databases=[cs.db], if_exists="replace", tablespace_mapping={cs.tablespace: cs.mapped}))
    (outcome,) = restored["databases"]
    assert outcome["verification"]["verified"] is True and outcome["verification"]["settings_mismatches"] == []
    assert outcome["database_properties"]["skipped"] == [] and outcome["database_properties"]["settings"] == 4

    def on_target(query, db="postgres"):
        return cs.target.psql(query, db=db).strip()

    settings = on_target("SELECT coalesce(r.rolname, '-') || ':' || array_to_string(s.setconfig, '|') FROM pg_db_role_setting s "
                         "JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole "
                         "WHERE d.datname = %s ORDER BY 1" % literal(cs.db)).splitlines()
    assert settings == ['-:timezone_abbreviations=India|bytea_output=escape|search_path="$user", public, "Odd, one"',
                        "%s:work_mem=3MB" % cs.role]
    acl = on_target("SELECT array_to_string(datacl, ',') FROM pg_database WHERE datname = %s" % literal(cs.db))
    source_acl = cs.scratch.sql("SELECT array_to_string(datacl, ',') FROM pg_database WHERE datname = %s" % literal(cs.db))
    assert sorted(acl.split(",")) == sorted(source_acl.split(",")) and "%s=c*/%s" % (cs.grantee, cs.role) in acl.split(",")
    assert not [item for item in acl.split(",") if item.startswith("=")]  # PUBLIC's CONNECT and TEMPORARY stay revoked
    assert on_target("SELECT datconnlimit, shobj_description(oid, 'pg_database'), pg_get_userbyid(datdba) FROM pg_database "
                     "WHERE datname = %s" % literal(cs.db)) == "7|h1's database|%s" % cs.role
    assert on_target("SHOW bytea_output", db=cs.db) == "escape"


# --- item 13: results and messages say what really happens ---------------------------------------------------------------


def test_check_mode_reports_what_would_happen_not_what_was_done(ansible, lab, host, db):
    backup_id = dump(ansible, db)["backup_id"]
    db.sql("DELETE FROM public.t WHERE id > 5")
    planned = ok(restore(ansible, db, check=True, tables=["public.t"], conflict="replace"))
    # before the fix: action "replaced", as if it had been done
    assert [(t["table"], t["action"]) for t in planned["tables"]] == [("t", "would_replace")] and planned["changed"] is True
    planned = ok(restore(ansible, db, check=True, if_exists="replace"))
    assert [(d["target"], d["action"]) for d in planned["databases"]] == [(db.name, "would_replace")]
    assert db.sql("SELECT count(*) FROM public.t") == "5" and db.like("%" + backup_id) == ""


@pytest.mark.exclusive
@ON_PG18
def test_a_cluster_set_restores_its_one_chosen_database_under_the_name_given(ansible, cluster_set):
    cs = cluster_set
    cs.target.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", cs.mapped])
    renamed = cs.db + "_as"
    msg = one_line(cs.restore(ansible, check=True, database=renamed, tablespace_mapping={cs.tablespace: cs.mapped}))
    assert msg.startswith("database names the one database a restore goes into, but set %s restores" % cs.dumped["backup_id"]), msg
    restored = ok(cs.restore(ansible, databases=[cs.db], database=renamed, tablespace_mapping={cs.tablespace: cs.mapped}))
    # before the fix database was ignored: the set's database came back under its own name
    assert [(d["source"], d["target"], d["action"]) for d in restored["databases"]] == [(cs.db, renamed, "created")]
    assert cs.target.psql("SELECT count(*) FROM public.t", db=renamed).strip() == "50"


# --- item 18: session_role ------------------------------------------------------------------------------------------------


def test_session_role_creates_and_loads_as_that_role(ansible, lab, host, db):
    role = "h1_sr_" + db.suffix
    db.roles.add(role)
    host.psql("CREATE ROLE %s NOLOGIN CREATEDB" % ident(role))
    custom = dump(ansible, db)["backup_id"]
    plain = dump(ansible, db, format="plain", no_owner=True)["backup_id"]
    missing = one_line(restore(ansible, db, backup_id=custom, database=db.name + "_x", session_role="h1_no_such_role"))
    assert msg_has(missing, "session_role h1_no_such_role does not exist") and not db.exists(db.name + "_x")
    keeping_owner = one_line(restore(ansible, db, backup_id=custom, database=db.name + "_x", session_role=role))
    assert msg_has(keeping_owner, "and membership in its owner postgres, or set no_owner: true") and not db.exists(db.name + "_x")
    for backup_id, target in ((custom, db.name + "_c"), (plain, db.name + "_p")):
        db.drop.add(target)
        restored = ok(restore(ansible, db, backup_id=backup_id, database=target, session_role=role, no_owner=True))
        assert restored["databases"][0]["verification"]["verified"] is True
        # created by the role (CREATE DATABASE in the admin session) and loaded by it (pg_restore / psql sessions)
        assert db.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s" % literal(target), db="postgres") == role
        assert db.sql("SELECT tableowner FROM pg_tables WHERE tablename = 't'", db=target) == role


def msg_has(msg, text):
    assert text in msg, msg
    return True
