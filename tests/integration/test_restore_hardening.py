"""restore_cluster hardening (issue 11): the replace swap, sessions on a replaced database, globals with tablespaces,
sets made with schema/table filters, database-level settings, check-mode results, session_role. Through ansible-playbook
on the lab hosts; every object is named h1_<random> and dropped afterwards."""

import uuid

import psycopg
import pytest

from tests.integration.test_logical_failures import one_line
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
