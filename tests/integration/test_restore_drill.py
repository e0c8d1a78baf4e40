"""restore_drill through ansible-playbook: each drill on a replica host against its primary, on PostgreSQL 15 and 18.

A drill must prove what it claims (markers before present and after absent, the target inside the .partial segment,
fingerprints equal), leave nothing behind (scratch folder, slot, marker rows), never touch the replica's own cluster,
report a failure with its reason instead of stopping, and clean up what an interrupted drill left. Every test uses a
cluster name, a drill folder and a port of its own, so tests run beside each other.
"""

import uuid

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.drill.report import DrillResult
from tests.phases import one_per_version

pytestmark = pytest.mark.lab

DRILL = "pgdr.backup.restore_drill"
PAIRS = {"15": ("primary15", "replica15"), "18": ("primary18", "replica18")}


class Pair:
    """A primary, the replica host the drills run on, and this test's own cluster name, drill folder and port."""

    def __init__(self, lab, major, port):
        primary, replica = PAIRS[major]
        self.lab, self.primary, self.replica = lab, lab.host(primary), lab.host(replica)
        self.suffix = uuid.uuid4().hex[:6]
        self.cluster = "dr-%s-%s" % (major, self.suffix)
        self.drill_dir = "/var/lib/postgresql/dr-%s" % self.suffix
        self.port = port

    def args(self, drill, **more):
        args = dict(drill=drill, cluster=self.cluster, source_host=self.primary.name, drill_host=self.replica.name, login_host=self.primary.address,
                    login_port=5432, login_user="postgres", login_password=self.lab.pg_password, login_db="postgres", drill_dir=self.drill_dir,
                    port=self.port)
        args.update(more)
        return args

    def run(self, ansible, drill, check=False, **more):
        return ansible.module(self.replica.name, DRILL, self.args(drill, **more), become_postgres=False, check=check)

    def live_postmaster(self):
        """The replica's own server: pid and start time from postmaster.pid (a restart or a replaced cluster changes them)."""
        text = self.replica.run(["cat", "/var/lib/postgresql/%s/main/postmaster.pid" % self.replica.major]).stdout.splitlines()
        return text[0], text[2]

    def leftovers(self):
        listing = self.replica.run(["ls", "-A", self.drill_dir], check=False)
        slots = self.primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgdr_drill_%' AND NOT active").strip()
        markers = "0"
        if self.primary.psql("SELECT to_regclass('pgdr_drill.markers') IS NOT NULL").strip() == "t":
            markers = self.primary.psql("SELECT count(*) FROM pgdr_drill.markers WHERE drill_id LIKE '%%/%s/%%'" % self.cluster).strip()
        return listing.stdout.split(), slots, markers

    def remove(self):
        self.replica.run(["bash", "-c", "for d in %s/*/data; do [ -f $d/postmaster.pid ] && runuser -u postgres -- %s/pg_ctl -D $d -m immediate stop; done; "
                                        "rm -rf %s" % (self.drill_dir, self.replica.pg_bin_dir, self.drill_dir)], check=False)


@pytest.fixture
def pair(request, lab):
    made = Pair(lab, request.param, 5480 + int(request.param) % 10)
    yield made
    made.remove()


def drill_of(result):
    assert "drill" in result, result.get("msg")
    DrillResult.from_dict(result["drill"])  # what the report takes, checked
    return result["drill"]


def checks(drill):
    return {item["check"]: item for item in drill["verified"]}


@pytest.mark.parametrize("pair", one_per_version(["15", "18"]), indirect=True)
def test_standalone_and_pitr_drills_prove_the_target_and_leave_the_replica_and_the_primary_as_they_were(ansible, pair):
    before = pair.live_postmaster()
    standalone = drill_of(pair.run(ansible, "standalone"))
    assert standalone["result"] == "passed", standalone["reason"]
    found = checks(standalone)
    assert found["markers"]["detail"] == "marker rows before present, after absent"
    assert found["system_identifier"]["ok"] and found["amcheck"]["ok"] and found["tables_readable"]["ok"]
    assert [phase["name"] for phase in standalone["phases"]] == ["select", "fetch", "deploy", "recovery", "verify", "cleanup"]
    assert standalone["rto_seconds"] > 0 and standalone["rpo_seconds"] >= 0 and standalone["cleanup"] == "done"
    assert standalone["set"]["kind"] == "base" and standalone["set"]["size_bytes"] > 1000000

    pitr = drill_of(pair.run(ansible, "pitr"))
    assert pitr["result"] == "passed", pitr["reason"]
    found = checks(pitr)
    assert found["partial_segment"]["ok"] and ".partial" in found["partial_segment"]["detail"]
    assert found["markers"]["detail"] == "marker rows before present, after absent"
    assert pair.leftovers() == ([], "0", "0")  # no scratch folder, no inactive drill slot, no marker rows of this cluster
    assert pair.live_postmaster() == before  # the replica's own server never stopped


@pytest.mark.parametrize("pair", one_per_version(["15"]), indirect=True)
def test_logical_drill_and_latest_logical_compare_every_table_with_the_manifest(ansible, pair):
    db = "dr_" + pair.suffix
    pair.primary.psql("CREATE DATABASE %s" % db)
    try:
        pair.primary.psql("CREATE TABLE a (n int PRIMARY KEY, t text); INSERT INTO a SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 3000) g; "
                          "CREATE SCHEMA s; CREATE TABLE s.b (x jsonb); INSERT INTO s.b SELECT jsonb_build_object('k', g) FROM generate_series(1, 50) g", db=db)
        logical = drill_of(pair.run(ansible, "logical", database=db))
        assert logical["result"] == "passed", logical["reason"]
        assert checks(logical)["fingerprints"]["tables"] == 2
        assert "3050 rows" in checks(logical)["tables_readable"]["detail"]

        # latest: the newest dump already in a repository, taken by pg_logical_dump as a backup job would
        repository = {"type": "local", "path": pair.drill_dir + "-repo"}
        dump = ansible.module(pair.replica.name, "pgdr.backup.pg_logical_dump",
                              dict(login_host=pair.primary.address, login_user="postgres", login_password=pair.lab.pg_password,
                                   database=db, cluster=pair.cluster, repository=repository), become_postgres=False)
        assert not dump.get("failed"), dump.get("msg")
        latest = drill_of(pair.run(ansible, "latest", latest_kind="logical", repository=repository))
        assert latest["result"] == "passed", latest["reason"]
        assert latest["set"]["backup_id"] == dump["backup_id"] and latest["set"]["kind"] == "logical-db"
        assert latest["rpo_seconds"] >= latest["set"]["age_seconds"] - 1  # nothing newer than the dump's snapshot was restored
    finally:
        pair.primary.psql("DROP DATABASE IF EXISTS %s" % db)
        pair.replica.run(["rm", "-rf", pair.drill_dir + "-repo"])


@pytest.mark.parametrize("pair", one_per_version(["18"]), indirect=True)
def test_latest_base_restores_the_newest_set_through_the_archive_without_taking_one(ansible, pair):
    repository = {"type": "local", "path": pair.drill_dir + "-repo"}
    archive = {"type": "local", "path": pair.drill_dir + "-wal"}
    try:
        pair.replica.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", archive["path"]])
        taken = ansible.module(pair.replica.name, "pgdr.backup.pg_basebackup",
                               dict(login_host=pair.primary.address, login_user="postgres", login_password=pair.lab.pg_password,
                                    cluster=pair.cluster, repository=repository), become_postgres=False)
        assert not taken.get("failed"), taken.get("msg")
        latest = drill_of(pair.run(ansible, "latest", repository=repository, archive=archive))
        assert latest["result"] == "passed", latest["reason"]
        assert latest["set"]["backup_id"] == taken["backup_id"] and latest["set"]["repository"] == "local:" + repository["path"]
        assert checks(latest)["system_identifier"]["ok"] and checks(latest)["amcheck"]["ok"]
        assert pair.replica.run(["ls", "-A", repository["path"] + "/" + pair.cluster]).stdout.split() == [taken["backup_id"]]  # no new set
    finally:
        pair.replica.run(["rm", "-rf", repository["path"], archive["path"]])


@pytest.mark.parametrize("pair", one_per_version(["15"]), indirect=True)
def test_a_failed_drill_says_why_in_one_line_reports_itself_and_cleans_up(ansible, pair):
    failed = pair.run(ansible, "standalone", pg_bin_dir="/usr/lib/postgresql/18/bin")  # a PostgreSQL 15 source needs 15's binaries
    assert failed["_status"] == "failed" and "\n" not in failed["msg"]
    assert failed["msg"].startswith("drill standalone of %s on replica15 failed: pg_basebackup in pg_bin_dir /usr/lib/postgresql/18/bin" % pair.cluster)
    drill = drill_of(failed)
    assert drill["result"] == "failed" and drill["reason"] in failed["msg"] and drill["rto_seconds"] is None and drill["set"] is None
    assert [(phase["name"], phase["result"]) for phase in drill["phases"]] == [("select", "failed"), ("cleanup", "ok")]
    assert drill["cleanup"] == "done"
    assert pair.leftovers() == ([], "0", "0")


@pytest.mark.parametrize("pair", one_per_version(["15"]), indirect=True)
def test_a_kept_or_interrupted_drill_is_cleaned_by_the_next_run(ansible, pair):
    kept = drill_of(pair.run(ansible, "standalone", keep=True))
    assert kept["result"] == "passed" and kept["cleanup"] == "kept"
    socket_dir = "%s/%s-standalone" % (pair.drill_dir, pair.cluster)
    ready = ["/usr/lib/postgresql/15/bin/pg_isready", "-h", socket_dir, "-p", str(pair.port)]
    assert pair.replica.run(ready, check=False).returncode == 0  # left running for a person to look at
    assert pair.leftovers()[1:] == ("0", "0")  # markers and slot are removed even when the cluster is kept

    again = drill_of(pair.run(ansible, "standalone"))
    assert again["result"] == "passed", again["reason"]
    assert pair.replica.run(ready, check=False).returncode != 0
    assert pair.leftovers() == ([], "0", "0")


@pytest.mark.parametrize("pair", one_per_version(["15"]), indirect=True)
def test_bad_input_fails_in_one_line_and_check_mode_makes_nothing(ansible, pair):
    cases = [
        (dict(drill="latest"), "missing: repository"),
        (dict(drill="latest", repository={"type": "local", "path": "/tmp"}, latest_kind="base"), "give archive"),
        (dict(drill="standalone", port=80), "port 80 is not a port"),
        (dict(drill="standalone", drill_dir="relative/dir"), "drill_dir must be an absolute path"),
    ]
    for given, words in cases:
        result = pair.run(ansible, **given)
        assert result["_status"] == "failed" and words in result["msg"] and "\n" not in result["msg"], result["msg"]
        assert "drill" not in result and pair.lab.pg_password not in str(result)
    planned = pair.run(ansible, "pitr", check=True)
    assert planned["would"]["drill"] == "pitr" and not planned["changed"]
    assert pair.leftovers() == ([], "0", "0")


def test_a_source_whose_configuration_lives_outside_its_data_directory_still_drills(ansible, lab, fleet):
    """Debian's layout (postgresql.conf, pg_hba.conf, pg_ident.conf in /etc/postgresql/...): a base backup holds none of
    them, and a server without postgresql.conf does not start. A throwaway cluster of that layout on a fleet primary,
    drilled from its drill host: the drill writes the missing files empty and says so."""
    source, drill_host = fleet[-1]
    suffix = uuid.uuid4().hex[:6]
    base = "/var/lib/postgresql/dr-deb-%s" % suffix
    port, drill_dir = 5479, "/var/lib/postgresql/dr-deb-drill-%s" % suffix
    setup = f"""set -e
    {source.pg_bin_dir}/initdb -D {base}/data --auth-local=peer --auth-host=scram-sha-256 --pwfile=<(printf '%s\\n' "$PW") >/dev/null
    mkdir {base}/etc && mv {base}/data/postgresql.conf {base}/data/pg_hba.conf {base}/data/pg_ident.conf {base}/etc/
    printf "port = {port}\\nlisten_addresses = '*'\\nunix_socket_directories = '{base}'\\nshared_buffers = 16MB\\n" >> {base}/etc/postgresql.conf
    printf "hba_file = '{base}/etc/pg_hba.conf'\\nident_file = '{base}/etc/pg_ident.conf'\\n" >> {base}/etc/postgresql.conf
    printf 'host all all 0.0.0.0/0 scram-sha-256\\nhost replication all 0.0.0.0/0 scram-sha-256\\n' >> {base}/etc/pg_hba.conf
    {source.pg_bin_dir}/pg_ctl -D {base}/data -o "-c config_file={base}/etc/postgresql.conf" -l {base}/log -w start >/dev/null
    """
    try:
        source.run(["bash", "-c", setup], user="postgres", env={"PW": lab.pg_password})
        result = ansible.module(drill_host.name, DRILL, dict(drill="standalone", cluster="dr-deb-" + suffix, source_host=source.name,
                                                             drill_host=drill_host.name, login_host=source.address, login_port=port,
                                                             login_user="postgres", login_password=lab.pg_password, login_db="postgres",
                                                             drill_dir=drill_dir, port=5478), become_postgres=False)
        drill = drill_of(result)
        assert drill["result"] == "passed", drill["reason"]
        assert checks(drill)["configuration"]["detail"].startswith("postgresql.conf, pg_ident.conf not in the set")
        assert checks(drill)["markers"]["detail"] == "marker rows before present, after absent"
    finally:
        source.run(["bash", "-c", "%s/pg_ctl -D %s/data -m immediate -w stop >/dev/null 2>&1; rm -rf %s" % (source.pg_bin_dir, base, base)],
                   user="postgres", check=False)
        drill_host.run(["rm", "-rf", drill_dir])
