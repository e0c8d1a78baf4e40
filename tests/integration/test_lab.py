"""The lab itself, checked from outside the way Ansible and the collection will use it.

Needs the lab up (`make lab-up`); the fixture brings it up if it is not.
"""

import json
import os
import stat
import subprocess
import sys
import uuid

import paramiko
import psycopg
import pytest
import yaml

from tests.lab import Lab, LabNotUp
from tests.lab.topology import DEFAULT_TOPOLOGY, FLEET_MAJOR

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.lab

HOST_NAMES = [spec.name for spec in DEFAULT_TOPOLOGY.hosts]
PG_HOSTS = [spec.name for spec in DEFAULT_TOPOLOGY.hosts if spec.major is not None]


@pytest.fixture(scope="session")
def running_lab():
    try:
        return Lab.load(PROJECT_DIR)
    except LabNotUp:
        subprocess.run([sys.executable, "-m", "tests.lab", "up"], cwd=PROJECT_DIR, check=True, stdin=subprocess.DEVNULL, timeout=300)
        return Lab.load(PROJECT_DIR)


def ssh(lab, host, *command, known_hosts=None):
    argv = lab.ssh_argv(host, *command)
    if known_hosts is not None:
        argv = [a.replace(str(lab.known_hosts), str(known_hosts)) for a in argv]
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)


def test_topology_is_what_the_lab_runs(running_lab):
    fleet = [name for primary, replica in running_lab.fleet_pairs() for name in (primary.name, replica.name)]
    assert list(running_lab.hosts) == HOST_NAMES + fleet
    assert fleet == [name for n in range(1, len(fleet) // 2 + 1) for name in ("fleet%d" % n, "fleet%dr" % n)]
    assert [h.name for h in running_lab.hosts_in("pg15")] == ["primary15", "replica15"]
    assert [h.name for h in running_lab.hosts_in("primary")] == ["primary15", "primary18"]
    assert [h.name for h in running_lab.hosts_in("postgres")] == PG_HOSTS
    assert running_lab.host("backup1").major is None
    assert [h.name for h in running_lab.hosts_in("backup")] == ["backup1"]
    addresses = [h.address for h in running_lab.hosts.values()]
    assert len(set(addresses)) == len(addresses)


@pytest.mark.parametrize("name", HOST_NAMES)
def test_ssh_with_generated_key_and_strict_host_keys(running_lab, name):
    done = ssh(running_lab, name, "hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == name


def test_unknown_host_key_is_refused(running_lab, tmp_path):
    # Proves StrictHostKeyChecking is in force: the same login fails without the recorded keys.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    done = ssh(running_lab, "primary15", "true", known_hosts=empty)
    assert done.returncode != 0
    assert "verification failed" in done.stderr or "No ED25519 host key is known" in done.stderr


def test_hostnames_differ_per_host(running_lab):
    names = {name: host.run(["hostname"]).stdout.strip() for name, host in running_lab.hosts.items()}
    assert names == {name: name for name in running_lab.hosts}
    assert os.uname().nodename not in names.values()


def test_var_backups_is_private_per_host(running_lab):
    marker = "lab-test-%s" % uuid.uuid4().hex
    writer, other = running_lab.host("primary15"), running_lab.host("primary18")
    writer.run(["sh", "-c", "echo private > /var/backups/%s" % marker])
    try:
        assert writer.run(["cat", "/var/backups/" + marker]).stdout == "private\n"
        assert other.run(["test", "-e", "/var/backups/" + marker], check=False).returncode == 1
        assert not os.path.exists("/var/backups/" + marker)  # the controller's own /var/backups
        assert (writer.dir / "var-backups" / marker).exists()  # where it really lives
    finally:
        writer.run(["rm", "-f", "/var/backups/" + marker])


@pytest.mark.parametrize("name", HOST_NAMES)
def test_postgresql_binaries_inside_host(running_lab, name):
    host = running_lab.host(name)
    assert host.run(["/usr/lib/postgresql/18/bin/pg_dump", "--version"]).stdout.startswith("pg_dump (PostgreSQL) 18.")
    assert host.run(["/usr/lib/postgresql/15/bin/pg_dump", "--version"]).stdout.startswith("pg_dump (PostgreSQL) 15.")
    assert host.run(["stat", "-c", "%U:%G %a", "/run/postgresql"]).stdout.split() == ["postgres:postgres", "2775"]


@pytest.mark.parametrize("name", PG_HOSTS)
def test_cluster_version_and_checksums(running_lab, name):
    host = running_lab.host(name)
    version, checksums, data_dir = host.psql("SHOW server_version_num; SHOW data_checksums; SHOW data_directory").split()
    assert int(version) // 10000 == host.major
    assert checksums == "on"
    assert data_dir == host.pg_data == "/var/lib/postgresql/%d/main" % host.major
    # The server runs as the postgres OS user.
    assert host.run(["sh", "-c", "stat -c %U " + host.pg_data]).stdout.strip() == "postgres"


@pytest.mark.parametrize("name", PG_HOSTS)
def test_tcp_from_controller_with_password(running_lab, name):
    host = running_lab.host(name)
    with psycopg.connect(running_lab.pg_dsn(host)) as conn:
        addr, user = conn.execute("SELECT host(inet_server_addr()), current_user").fetchone()
    assert (addr, user) == (host.address, "postgres")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(running_lab.pg_dsn(host, password="wrong")).close()


def test_backup_host_sftp(running_lab):
    backup = running_lab.host("backup1")
    client = paramiko.SSHClient()
    client.load_host_keys(str(running_lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(backup.address, username="root", key_filename=str(running_lab.ssh_key), look_for_keys=False, allow_agent=False, timeout=15)
    name = "/var/backups/lab-sftp-%s" % uuid.uuid4().hex
    try:
        with client.open_sftp() as sftp:
            with sftp.open(name, "w") as f:
                f.write("over sftp\n")
            assert sftp.stat(name).st_size == len("over sftp\n")
        assert backup.run(["cat", name]).stdout == "over sftp\n"
    finally:
        backup.run(["rm", "-f", name])
        client.close()


def test_backup_host_dumps_primary18_over_the_network(running_lab):
    primary, backup = running_lab.host("primary18"), running_lab.host("backup1")
    table = "lab_dump_%s" % uuid.uuid4().hex[:8]
    primary.psql("CREATE TABLE %s (id int)" % table)
    try:
        argv = ["/usr/lib/postgresql/18/bin/pg_dump", "-h", primary.address, "-U", "postgres", "-d", "postgres", "-s", "-t", table]
        done = backup.run(argv, env={"PGPASSWORD": running_lab.pg_password})
        assert "CREATE TABLE public.%s" % table in done.stdout
    finally:
        primary.psql("DROP TABLE %s" % table)


def test_s3_put_get_list(running_lab):
    s3 = running_lab.s3_client()
    bucket = running_lab.s3["bucket"]
    key = "lab-test/%s.bin" % uuid.uuid4().hex
    body = os.urandom(256 * 1024)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    try:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="lab-test/")
        assert key in [obj["Key"] for obj in listed.get("Contents", [])]
    finally:
        s3.delete_object(Bucket=bucket, Key=key)
    assert key not in [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix="lab-test/").get("Contents", [])]


def test_inventory_file_matches_the_lab(running_lab):
    path = running_lab.inventory_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(running_lab.ssh_key.stat().st_mode) == 0o600
    data = yaml.safe_load(path.read_text())["all"]
    assert data["vars"]["lab_pg_superuser_password"] == running_lab.pg_password
    assert data["vars"]["lab_s3_endpoint"] == running_lab.s3["endpoint"]
    assert data["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"
    for name, host in running_lab.hosts.items():
        assert data["hosts"][name]["ansible_host"] == host.address
        assert data["hosts"][name]["pg_major"] == host.major


def ansible_tool(tool, *args):
    """Run an Ansible command-line tool of the venv as a user would from the checkout."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [os.path.join(os.path.dirname(sys.executable), tool), *args]
    return subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)


def test_ansible_reaches_every_host(running_lab):
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [ansible, "-i", str(running_lab.inventory_path), "all", "-m", "ansible.builtin.command", "-a", "hostname"]
    done = subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in running_lab.hosts:
        assert "%s | CHANGED | rc=0 >>\n%s" % (name, name) in done.stdout
    assert "Found both group and host with same name" not in done.stderr
    # As the collection's tests do: become postgres with su, then peer-authenticated psql.
    argv = [ansible, "-i", str(running_lab.inventory_path), "postgres", "-b", "--become-method", "ansible.builtin.su", "--become-user", "postgres"]
    argv += ["-m", "ansible.builtin.command", "-a", "psql -h /run/postgresql -Atc 'SELECT current_user'"]
    done = subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("CHANGED | rc=0 >>\npostgres") == len(PG_HOSTS)


def test_inventory_python_runs_as_postgres_with_psycopg(running_lab):
    # Modules run with `become_user: postgres`: Debian's python3 (and python3-psycopg) must work for that user.
    python = yaml.safe_load(running_lab.inventory_path.read_text())["all"]["vars"]["ansible_python_interpreter"]
    assert python == "/usr/bin/python3"
    for host in running_lab.hosts.values():
        done = host.run([python, "-c", "import psycopg, getpass; print(getpass.getuser(), psycopg.__version__)"], user="postgres")
        assert done.stdout.split()[0] == "postgres", host.name


def test_postgres_user_runs_both_servers_binaries(running_lab):
    # The wheel must be reachable without traversing the checkout's parents (CI may clone into a 0700 folder).
    for host in running_lab.hosts.values():
        for major in (15, 18):
            done = host.run(["/usr/lib/postgresql/%d/bin/postgres" % major, "--version"], user="postgres")
            assert done.stdout.startswith("postgres (PostgreSQL) %d." % major), (host.name, done.stdout)


# ---------------------------------------------------------------- the fleet (PGDR_LAB_FLEET_PAIRS pairs, at least 3 here)


def test_fleet_is_reached_through_ansible_and_paired_in_its_inventory(lab, fleet):
    names = [host.name for pair in fleet for host in pair]
    # One ad-hoc run over the `fleet` group, as fleet_drill.yml reaches it: every host answers, no other host does.
    done = ansible_tool("ansible", "-i", str(lab.inventory_path), "fleet", "-m", "ansible.builtin.ping", "-o")
    assert done.returncode == 0, done.stdout + done.stderr
    answered = sorted(line.split(" | ")[0] for line in done.stdout.splitlines() if " | SUCCESS => " in line and '"ping": "pong"' in line)
    assert answered == sorted(names), done.stdout
    # The inventory as Ansible itself reads it: groups, and each primary's restore_drill_host paired with its replica.
    listed = ansible_tool("ansible-inventory", "-i", str(lab.inventory_path), "--list")
    assert listed.returncode == 0, listed.stderr
    inventory = json.loads(listed.stdout)
    hostvars = inventory["_meta"]["hostvars"]
    assert inventory["fleet_primary"]["hosts"] == [primary.name for primary, _replica in fleet]
    assert inventory["fleet_replica"]["hosts"] == [replica.name for _primary, replica in fleet]
    assert sorted(inventory["fleet"]["hosts"]) == sorted(names)
    for primary, replica in fleet:
        assert hostvars[primary.name]["restore_drill_host"] == replica.name
        assert hostvars[replica.name]["pg_upstream"] == primary.name
        assert "restore_drill_host" not in hostvars[replica.name]
        for host in (primary, replica):
            assert hostvars[host.name]["ansible_host"] == host.address
            assert (hostvars[host.name]["pg_major"], hostvars[host.name]["pg_data"]) == (FLEET_MAJOR, host.pg_data)
    # What playbooks, molecule and the other tests target never includes a fleet host.
    for group in ("primary", "replica", "postgres", "pg15", "pg18", "backup"):
        assert not set(inventory[group]["hosts"]) & set(names), group


def test_fleet_hosts_are_full_lab_hosts_with_small_distinct_clusters(lab, fleet):
    identifiers = set()
    for primary, replica in fleet:
        for host in (primary, replica):
            assert host.run(["hostname"]).stdout.strip() == host.name
            version, checksums, buffers, connections, system_id = host.psql(
                "SHOW server_version_num; SHOW data_checksums; SHOW shared_buffers; SHOW max_connections;"
                " SELECT system_identifier FROM pg_control_system()").split()
            assert (int(version) // 10000, checksums, buffers, connections) == (FLEET_MAJOR, "on", "16MB", "20"), host.name
            identifiers.add(system_id)
            with psycopg.connect(lab.pg_dsn(host)) as conn:  # scram over TCP from the controller, the lab's password
                assert conn.execute("SELECT host(inet_server_addr())").fetchone()[0] == host.address
        # Replication from the lab subnet, by name, from the drill host to its primary, as a base backup connects.
        conninfo = "host=%s user=postgres replication=true dbname=replication connect_timeout=10" % primary.name
        identify = replica.run([replica.pg_bin_dir + "/psql", "-X", "-At", "-d", conninfo, "-c", "IDENTIFY_SYSTEM"],
                               user="postgres", env={"PGPASSWORD": lab.pg_password}).stdout
        assert identify.split("|")[0] == primary.psql("SELECT system_identifier FROM pg_control_system()").strip()
    # Each cluster is its own initdb: a drill that restored the wrong primary's backup would show another identifier.
    assert len(identifiers) == 2 * len(fleet)
