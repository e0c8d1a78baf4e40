"""pgbackrest_stanza through ansible-playbook against the real pgBackRest (Debian's 2.45) on the lab hosts.

Each test makes its own throwaway cluster (initdb on a port of its own) and its own repository folder under
/var/backups (private to the lab host), and removes both: the lab's shared clusters keep their archive settings.
"""

import urllib.parse
import uuid

import pytest

MODULE = "pgdr.backup.pgbackrest_stanza"
PORT = 55441  # the throwaway cluster of the lifecycle test


def cli(host, argv, check=True, input=None):
    return host.run(argv, user="postgres", check=check, input=input, env={"LC_ALL": "C.UTF-8"})


class Scratch:
    """A throwaway cluster with its own pgbackrest.conf, log folder and repository folder."""

    def __init__(self, host):
        self.host = host
        self.name = "pgbr%s" % uuid.uuid4().hex[:8]
        self.root = "/var/lib/postgresql/pgdr-%s" % self.name
        self.pgdata = self.root + "/data"
        self.config = self.root + "/pgbackrest.conf"
        self.logs = self.root + "/log"
        self.repo = "/var/backups/%s" % self.name
        self.pg_ctl = [host.pg_bin_dir + "/pg_ctl", "-D", self.pgdata, "-l", self.root + "/server.log", "-w", "-t", "60"]
        host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.root, self.logs, self.repo])
        cli(host, [host.pg_bin_dir + "/initdb", "-D", self.pgdata, "--data-checksums", "-U", "postgres", "--auth-local=peer",
                   "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])  # fmt: skip
        self.started = False

    def start(self, port, archive_command):
        settings = dict(port=str(port), listen_addresses="''", unix_socket_directories="'/run/postgresql'", wal_level="replica",
                        archive_mode="on", archive_command="'%s'" % archive_command.replace("'", "''"))  # fmt: skip
        cli(self.host, ["tee", "-a", self.pgdata + "/postgresql.conf"], input="".join("%s = %s\n" % item for item in settings.items()))
        cli(self.host, self.pg_ctl + ["start"])
        self.started = True

    def sql(self, port, statement):
        return cli(self.host, [self.host.pg_bin_dir + "/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
                               "-p", str(port), "-d", "postgres", "-c", statement]).stdout.strip()  # fmt: skip

    def remove(self):
        if self.started:
            cli(self.host, self.pg_ctl + ["-m", "immediate", "stop"], check=False)
        self.host.run(["rm", "-rf", self.root, self.repo])


@pytest.fixture
def scratch15(lab):
    made = Scratch(lab.host("primary15"))
    yield made
    made.remove()


@pytest.fixture
def scratch18(lab):
    made = Scratch(lab.host("primary18"))
    yield made
    made.remove()


def play(ansible, host, tasks, **kwargs):
    """Run [(name, module args)] as one play on ``host``; returns {name: result}."""
    built = [{"name": name, "ignore_errors": True, MODULE: args} for name, args in tasks]
    run = ansible.play(host, built, **kwargs)
    results = {task[0]: run.result(task[0], host) for task in tasks}
    results["_output"] = run.output
    return results


def ok(result):
    assert result["_status"] in ("ok", "changed"), result.get("msg")
    return result


def failed(result):
    assert result["_status"] == "failed", result
    assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    return result["msg"]


CATALOG_KEYS = {"backup_id", "kind", "status", "complete", "started_at", "finished_at", "duration_seconds", "start_lsn", "stop_lsn",
                "timeline", "size", "files", "tool", "database", "format", "chain", "pinned", "pin_expires", "last_activity",
                "problem", "wal", "location"}  # fmt: skip


def test_stanza_lifecycle_create_check_full_incr_info_expire_verify(ansible, scratch15):
    s, host = scratch15, "primary15"
    config = dict(stanza=s.name, config_file=s.config, pg_data=s.pgdata, pg_port=PORT, pg_socket="/run/postgresql",
                  repository=dict(path=s.repo), retention=dict(full=2), compress_type="lz4", log_path=s.logs)
    base = dict(stanza=s.name, config_file=s.config)

    planned = play(ansible, host, [("plan", config)], check=True, diff=True)["plan"]
    ok(planned)
    assert planned["changed"] is True and planned["stanza_created"] is True
    assert planned["would_run"] == [["pgbackrest", "--stanza=" + s.name, "stanza-create"]]
    assert planned["diff"]["before"] == {} and planned["diff"]["after"]["repo1-path"] == s.repo
    assert cli(s.host, ["ls", "-A", s.repo]).stdout == "" and cli(s.host, ["test", "-e", s.config], check=False).returncode == 1

    archive_command = "pgbackrest --config=%s --stanza=%s archive-push %%p" % (s.config, s.name)
    s.start(PORT, archive_command)
    s.sql(PORT, "CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
    done = play(ansible, host, [
        ("create", config),
        ("again", config),
        ("check", dict(base, action="check")),
        ("full", dict(base, action="backup", backup_type="full")),
        ("incr", dict(base, action="backup", backup_type="incr")),
        ("info", dict(base, action="info")),
    ])
    created = ok(done["create"])
    assert created["changed"] is True and created["stanza_created"] is True and created["archive_command"] == archive_command
    assert created["stanza"]["status"] == "no valid backups" and created["stanza"]["pg_version"] == "15" and created["backups"] == []
    assert cli(s.host, ["stat", "-c", "%a", s.config]).stdout.strip() == "600"
    again = ok(done["again"])
    assert again["changed"] is False and again["stanza_created"] is False and again["config_changes"] == []
    assert ok(done["check"])["changed"] is False

    # another cluster of the same version under the same stanza is refused, and the file stays as it was
    other = s.root + "/other"
    cli(s.host, [s.host.pg_bin_dir + "/initdb", "-D", other, "-U", "postgres", "--auth-local=peer", "--no-sync"])
    written = cli(s.host, ["cat", s.config]).stdout
    controldata = cli(s.host, [s.host.pg_bin_dir + "/pg_controldata", "-D", other]).stdout
    other_id = [line.split(":")[1].strip() for line in controldata.splitlines() if line.startswith("Database system identifier")][0]
    assert other_id != created["stanza"]["system_id"]
    refused = failed(play(ansible, host, [("other cluster", dict(config, pg_data=other))])["other cluster"])
    assert refused == ("stanza %s backs up the cluster with system identifier %s, but %s holds cluster %s (same PostgreSQL 15): a "
                       "different cluster must not share a stanza; name another stanza" % (s.name, created["stanza"]["system_id"], other, other_id))
    assert cli(s.host, ["cat", s.config]).stdout == written
    full, incr = ok(done["full"])["backup"], ok(done["incr"])["backup"]
    assert full["type"] == "full" and incr["type"] == "incr" and incr["prior"] == full["backup_id"] and incr["chain"] == [full["backup_id"]]
    listed = ok(done["info"])["backups"]
    assert [b["backup_id"] for b in listed] == [full["backup_id"], incr["backup_id"]]
    for entry in listed:
        assert CATALOG_KEYS <= set(entry), CATALOG_KEYS - set(entry)
        assert entry["kind"] == "pgbackrest" and entry["complete"] is True and entry["status"] == "complete"
        assert entry["start_lsn"] and entry["stop_lsn"] and entry["timeline"] == 1 and entry["size"] > 0
        assert entry["wal"]["first"] <= entry["wal"]["last"] and entry["location"] == "%s/backup/%s/%s" % (s.repo, s.name, entry["backup_id"])
        assert entry["finished_at"] >= entry["started_at"] and entry["system_id"] == done["info"]["stanza"]["system_id"]
    assert incr["size"] < full["size"]  # an incremental stores only what changed

    # check mode: a backup is only planned
    planned = play(ansible, host, [("diff backup", dict(base, action="backup", backup_type="diff"))], check=True)["diff backup"]
    assert ok(planned)["would_run"] == [["pgbackrest", "--stanza=" + s.name, "--type=diff", "backup"]]
    assert len(ok(play(ansible, host, [("info", dict(base, action="info"))])["info"])["backups"]) == 2

    # a second full, then retention down to 1 full: expire drops the first full and its incremental
    second = ok(play(ansible, host, [("full", dict(base, action="backup", backup_type="full"))])["full"])["backup"]
    before = cli(s.host, ["cat", s.config]).stdout
    tighter = dict(config, retention=dict(full=1))
    steps = play(ansible, host, [("tighter", tighter), ("expire", dict(base, action="expire"))], check=True, diff=True)
    assert ok(steps["tighter"])["config_changes"] == ["repo1-retention-full"]
    assert steps["tighter"]["diff"]["before"]["repo1-retention-full"] == "2" and steps["tighter"]["diff"]["after"]["repo1-retention-full"] == "1"
    assert cli(s.host, ["cat", s.config]).stdout == before  # check mode wrote nothing
    assert ok(play(ansible, host, [("tighter", tighter)])["tighter"])["changed"] is True
    dry = play(ansible, host, [("dry", dict(base, action="expire"))], check=True)["dry"]
    assert ok(dry)["would_delete"] == [full["backup_id"], incr["backup_id"]] and dry["changed"] is True
    expired = play(ansible, host, [("expire", dict(base, action="expire")), ("verify", dict(base, action="verify")),
                                   ("expire again", dict(base, action="expire"))])
    assert ok(expired["expire"])["deleted"] == sorted([full["backup_id"], incr["backup_id"]]) and expired["expire"]["changed"] is True
    assert [b["backup_id"] for b in expired["expire"]["backups"]] == [second["backup_id"]]
    verified = ok(expired["verify"])
    assert verified["changed"] is False and verified["backups"][0]["backup_id"] == second["backup_id"]
    assert ok(expired["expire again"])["changed"] is False and expired["expire again"]["deleted"] == []

    # state absent takes the section out of the file; the repository and its backups stay
    gone = play(ansible, host, [("absent", dict(base, state="absent")), ("absent again", dict(base, state="absent"))])
    assert ok(gone["absent"])["changed"] is True and ok(gone["absent again"])["changed"] is False
    assert "[%s]" % s.name not in cli(s.host, ["cat", s.config]).stdout
    assert second["backup_id"] in cli(s.host, ["ls", "%s/backup/%s" % (s.repo, s.name)]).stdout


def test_bad_options_fail_in_one_line_and_the_s3_secret_never_shows(ansible, lab, scratch15):
    s, host = scratch15, "primary15"
    base = dict(stanza=s.name, config_file=s.config, pg_data=s.pgdata, log_path=s.logs)
    endpoint = urllib.parse.urlsplit(lab.s3["endpoint"])
    s3 = dict(type="s3", path="/pgbackrest-" + s.name, bucket=lab.s3["bucket"], region=lab.s3["region"], key=lab.s3["access_key"],
              secret=lab.s3["secret_key"], uri_style="path", verify_tls=False)  # fmt: skip
    done = play(ansible, host, [
        ("relative path", dict(base, repository=dict(path="backups/here"))),
        ("unknown type", dict(base, action="backup", backup_type="weekly")),
        ("settings with an action", dict(base, action="check")),
        ("s3 over http", dict(base, repository=dict(s3, endpoint=lab.s3["endpoint"]))),
        ("posix with s3 keys", dict(base, repository=dict(path=s.repo, bucket="b"))),
        ("action before configuring", dict(stanza=s.name, config_file=s.config, action="backup")),
        ("s3 over https", dict(base, repository=dict(s3, endpoint="https://%s" % endpoint.netloc))),
    ], verbosity=3, diff=True)
    assert failed(done["relative path"]).startswith("repository.path backups/here is not absolute")
    assert "backup_type" in failed(done["unknown type"]) and "weekly" in done["unknown type"]["msg"]
    assert failed(done["settings with an action"]).startswith("log-path, pg1-path configure the stanza; set them in a task without action")
    assert "pgBackRest reaches S3 over HTTPS only" in failed(done["s3 over http"])
    assert failed(done["posix with s3 keys"]) == "repository.bucket go with type s3; a posix repository has a path only"
    assert failed(done["action before configuring"]).startswith("stanza %s is not in %s" % (s.name, s.config))
    # the lab's object store speaks plain HTTP: pgBackRest's TLS handshake fails, in one line with its own error code
    message = failed(done["s3 over https"])
    assert message.startswith("pgbackrest info cannot read stanza %s (status 99: other): [" % s.name), message
    # the stanza is looked at through a private copy first: a refused configuration never reaches the file
    assert cli(s.host, ["test", "-e", s.config], check=False).returncode == 1
    assert lab.s3["secret_key"] not in done["_output"] and lab.s3["access_key"] not in done["_output"]
    assert lab.s3["secret_key"] not in str(done["s3 over https"])


def test_postgresql_18_is_refused_in_one_line_by_pgbackrest_2_45(ansible, scratch18):
    s = scratch18
    args = dict(stanza=s.name, config_file=s.config, pg_data=s.pgdata, log_path=s.logs, repository=dict(path=s.repo))
    result = play(ansible, "primary18", [("create", args)])["create"]
    assert failed(result).startswith("pgBackRest 2.45 does not support PostgreSQL 18 (unexpected control version = 1800"), result["msg"]
    assert cli(s.host, ["ls", "-A", s.repo]).stdout == ""  # nothing written to the repository
