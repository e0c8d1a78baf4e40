"""Verifier: the throwaway cluster archives through pgdr-wal into its folder, encrypted, and a segment switched
now reaches the archive (the role's own check switched one too; this one proves archiving still works)."""

import json
import time

testinfra_hosts = ["replica15"]

BASE = "/var/lib/postgresql/h8-molecule-wal"  # as in vars/h8.yml
PORT = 5481
NAME = "h8-molecule-wal"
PASSPHRASE = "h8-Molecule-Passphrase-7f3e"
ARCHIVE = BASE + "/archive"
OPENPGP_FIRST_BYTES = ("8c", "c3")  # old- and new-format symmetric-key session key packet; a WAL segment starts with its page magic


def psql(host, query):
    psql_bin = "%s/psql" % host.ansible.get_variables()["pg_bin_dir"]
    cmd = host.run("runuser -u postgres -- %s -X -At -h %s -p %s -U postgres -c %s", psql_bin, BASE, str(PORT), query)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def test_archiving_is_on_and_runs_pgdr_wal(host):
    assert psql(host, "SHOW archive_mode") == "on"  # the handler restarted the cluster
    command = psql(host, "SHOW archive_command")
    assert command == "/usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/%s.json push %%p %%f" % NAME
    assert psql(host, "SHOW archive_timeout") == "1min"


def test_the_passphrase_is_only_in_the_0600_config(host):
    config = host.file("/etc/pgdr/wal/%s.json" % NAME)
    assert config.mode == 0o600 and config.user == "postgres"
    assert PASSPHRASE in config.content_string
    assert PASSPHRASE not in host.file(BASE + "/data/postgresql.auto.conf").content_string
    assert PASSPHRASE not in psql(host, "SHOW archive_command")


def test_a_switched_segment_reaches_the_archive_encrypted(host):
    psql(host, "CREATE TABLE IF NOT EXISTS h8_probe (n int); INSERT INTO h8_probe VALUES (1)")
    switched = psql(host, "SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 60
    while psql(host, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < switched and time.monotonic() < deadline:
        time.sleep(0.5)
    assert psql(host, "SELECT last_archived_wal FROM pg_stat_archiver") >= switched
    assert psql(host, "SELECT failed_count FROM pg_stat_archiver") == "0"
    stored = host.file("%s/%s" % (ARCHIVE, switched))
    assert stored.exists and stored.user == "postgres"
    first = host.run("head -c1 %s | od -An -tx1", stored.path).stdout.strip()
    assert first in OPENPGP_FIRST_BYTES, first
    # pgdr-wal fetch (what restore_command runs) decrypts it with the passphrase in its config to a whole 16 MiB segment
    fetched = BASE + "/h8-fetched"
    fetch = host.run("runuser -u postgres -- /usr/local/lib/pgdr/pgdr-wal --config /etc/pgdr/wal/%s.json fetch %s %s", NAME, switched, fetched)
    try:
        assert fetch.rc == 0, fetch.stderr
        assert host.file(fetched).size == 16 * 1024 * 1024
    finally:
        host.run("rm -f %s", fetched)


def test_the_wal_watcher_runs_from_its_cron_line_and_writes_the_archive_metrics(host):
    cron = host.file("/etc/cron.d/pgdr-backup-wal-%s" % NAME)
    assert cron.exists and cron.user == "root"
    line = [entry for entry in cron.content_string.splitlines() if entry and not entry.startswith("#") and "=" not in entry.split()[0]]
    assert len(line) == 1
    fields = line[0].split(None, 6)
    assert fields[:6] == ["*/5", "*", "*", "*", "*", "postgres"]
    ran = host.run("runuser -u %s -- sh -c %s", fields[5], fields[6])  # as cron runs it
    assert ran.rc == 0 and "success (archived " in ran.stdout, ran.stdout + ran.stderr
    status = json.loads(host.file("%s/watch/wal-%s.json" % (BASE, NAME)).content_string)
    assert status["kind"] == "wal" and status["last_result"] == "success" and status["wal"]["archived_count"] >= 1
    assert status["runs_total"]["success"] >= 2  # the role's first run, and this one
    metrics = host.file("%s/watch/metrics/pgdr_backup_wal-%s.prom" % (BASE, NAME)).content_string
    assert 'pgdr_wal_archive_archived_total{backup_job="wal-%s",cluster="%s"}' % (NAME, NAME) in metrics
    assert "pgdr_backup_" not in metrics  # a watcher takes no backup
