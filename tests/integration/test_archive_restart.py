"""wal_archive_config with restart: true against a server started with -c settings (issue 11 item 16).

A scratch cluster of its own on a spare port of each primary (never the lab's cluster), removed afterwards.
"""

import uuid

import pytest

pytestmark = pytest.mark.lab

MODULE = "pgdr.backup.wal_archive_config"
PORT = 5473  # h3's spare port: no other test uses it


@pytest.fixture
def cmdline_server(host):
    """A cluster started with -c archive_mode=on -c archive_command=...; yields (folder, archive_command)."""
    base = "/var/lib/postgresql/h3-cmdline-%s" % uuid.uuid4().hex[:6]
    pg_data, archive = base + "/data", base + "/archive"
    command = "test ! -f %s/%%f && cp %%p %s/%%f" % (archive, archive)
    host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", base, archive])
    host.run([host.pg_bin_dir + "/initdb", "-D", pg_data, "-U", "postgres", "--auth=trust"], user="postgres")
    options = "-c port=%d -c listen_addresses='' -c unix_socket_directories=%s -c archive_mode=on -c archive_command='%s'" % (
        PORT, base, command)
    host.run([host.pg_bin_dir + "/pg_ctl", "-D", pg_data, "-l", base + "/postgresql.log", "-o", options, "-w", "-t", "60", "start"], user="postgres")
    try:
        yield base, pg_data, command
    finally:
        host.run([host.pg_bin_dir + "/pg_ctl", "-D", pg_data, "-m", "immediate", "-w", "stop"], user="postgres", check=False)
        host.run(["rm", "-rf", base])


def started_at(host, socket_dir):
    return host.run([host.pg_bin_dir + "/psql", "-X", "-At", "-h", socket_dir, "-p", str(PORT), "-U", "postgres", "-d", "postgres",
                     "-c", "SELECT pg_postmaster_start_time()"], user="postgres").stdout.strip()


def test_restart_true_does_not_restart_for_command_line_settings(ansible, host, cmdline_server):
    base, pg_data, command = cmdline_server
    task = dict(archive_command=command, archive_timeout="60", restart=True, pg_data=pg_data, service_manager="pg_ctl",
                server_log=base + "/postgresql.log", login_host=base, login_port=PORT, login_user="postgres")
    before = started_at(host, base)

    first = ansible.module(host.name, MODULE, task)
    assert first["_status"] == "ok", first.get("msg")
    # before the fix: restarted, for archive_mode (on from -c, off in every file), and again on every later run
    assert not first.get("restarted") and first["restart_required"] is False and first["pending_restart"] == []
    assert started_at(host, base) == before
    # archive_timeout was written with ALTER SYSTEM; archive_mode and archive_command are the command line's, as wanted
    assert first["changed"] is True and first["diff"]["after"] == {"archive_timeout": "60"}
    assert first["settings"]["archive_mode"] == "on" and first["settings"]["archive_command"] == command

    second = ansible.module(host.name, MODULE, task)
    assert second["_status"] == "ok", second.get("msg")
    assert second["changed"] is False and not second.get("restarted") and second["restart_required"] is False
    assert started_at(host, base) == before  # never restarted (before the fix: on every run, for archive_mode)

    # a value the command line overrides: one line naming the fix, nothing changed, no restart
    refused = ansible.module(host.name, MODULE, dict(task, archive_mode="always"))
    assert refused["_status"] == "failed"
    assert refused["msg"].startswith("archive_mode is 'on' on the server's command line (-c archive_mode=..., reused by every pg_ctl restart)")
    assert "remove -c archive_mode from the server's start command" in refused["msg"] and "\n" not in refused["msg"]
    assert started_at(host, base) == before
    auto_conf = host.run(["cat", pg_data + "/postgresql.auto.conf"]).stdout
    assert "archive_timeout = '60'" in auto_conf and "archive_mode" not in auto_conf
