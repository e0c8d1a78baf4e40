"""The lab's shape as data, and the pure rules that turn it into names and addresses.

Nothing here touches the system, so tests/unit/test_lab_topology.py can check it all.
"""

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass

# Linux interface names hold at most 15 characters (IFNAMSIZ - 1).
IFNAME_MAX = 15
LAB_ID_ENV = "PGDR_LAB_ID"
LAB_ID_RE = re.compile(r"^[0-9a-z]{1,8}$")
FLEET_PAIRS_ENV = "PGDR_LAB_FLEET_PAIRS"
# Three pairs by default: the fleet tests need at least three (one of them made to fail).
DEFAULT_FLEET_PAIRS = 3
# The bench goes to 8; 32 pairs (64 small clusters) is far beyond any test and still fits the /24.
MAX_FLEET_PAIRS = 32

PG_PORT = 5432
SSH_PORT = 22
S3_PORT = 8333
S3_BUCKET = "pgdr-lab"
S3_REGION = "us-east-1"
PG_SOCKET_DIR = "/run/postgresql"
# The backup host has no cluster; it runs client tools from the newest major.
CLIENT_MAJOR = 18
# Ansible runs modules on the hosts with Debian's own python3 (and python3-psycopg from apt),
# as on a real Debian server; never the project venv.
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class HostSpec:
    name: str
    major: int | None  # None: no PostgreSQL cluster on this host
    groups: tuple[str, ...]
    upstream: str | None = None  # replicas: the primary they pair with
    drill_host: str | None = None  # fleet primaries: the host their restore drills run on
    index: int | None = None  # fixed veth/address index; None: the position in the topology


@dataclass(frozen=True)
class Topology:
    hosts: tuple[HostSpec, ...]

    def host(self, name):
        for spec in self.hosts:
            if spec.name == name:
                return spec
        raise KeyError(name)


DEFAULT_TOPOLOGY = Topology(
    hosts=(
        HostSpec("primary15", 15, ("primary", "pg15")),
        HostSpec("replica15", 15, ("replica", "pg15"), upstream="primary15"),
        HostSpec("primary18", 18, ("primary", "pg18")),
        HostSpec("replica18", 18, ("replica", "pg18"), upstream="primary18"),
        # Not named like its group: Ansible warns about a host and a group of the same name.
        HostSpec("backup1", None, ("backup",)),
    )
)

# Fixed last octets: the bridge (controller) is .1, the object store .2, hosts .11 and up,
# fleet pairs .101 and up (pair n: primary .99+2n, replica .100+2n), so adding or removing
# pairs never moves another host.
BRIDGE_OCTET = 1
OBJSTORE_OCTET = 2
FIRST_HOST_OCTET = 11
FLEET_FIRST_OCTET = 101

# The fleet: N small primary/replica pairs for fleet-wide restore drills. Their groups are their own
# (never primary, replica, pgNN or postgres), so nothing that targets the four core hosts reaches them.
FLEET_GROUP = "fleet"
FLEET_PRIMARY_GROUP = "fleet_primary"
FLEET_REPLICA_GROUP = "fleet_replica"
# PostgreSQL 18 (the wheel): initdb and start cost the same as Debian's 15, and it uses less memory (docs/lab.md).
FLEET_MAJOR = 18
# Small clusters: 2N of them share the machine with the core hosts (docs/lab.md has the figures).
FLEET_SETTINGS = {"shared_buffers": "16MB", "max_connections": "20"}


def fleet_pairs(environ=None, given=None):
    """The asked number of fleet pairs: `given` (the --fleet-pairs option) or PGDR_LAB_FLEET_PAIRS, else 3.

    Raises ValueError with one line naming the setting and what it accepts.
    """
    environ = os.environ if environ is None else environ
    if given is not None:
        source, text = "--fleet-pairs", str(given)
    else:
        source, text = FLEET_PAIRS_ENV, environ.get(FLEET_PAIRS_ENV, "")
        if not text.strip():
            return DEFAULT_FLEET_PAIRS
    value = text.strip()
    if not value.isdigit() or not value.isascii() or int(value) > MAX_FLEET_PAIRS:
        raise ValueError("%s must be a whole number of pairs from 0 to %d, got %r" % (source, MAX_FLEET_PAIRS, text))
    return int(value)


def fleet_names(pair):
    """Pair n (from 1): its primary `fleet<n>` and its replica `fleet<n>r`."""
    return "fleet%d" % pair, "fleet%dr" % pair


def fleet_specs(pairs):
    specs = []
    for pair in range(1, pairs + 1):
        primary, replica = fleet_names(pair)
        first = FLEET_FIRST_OCTET - FIRST_HOST_OCTET + 1 + 2 * (pair - 1)
        specs.append(HostSpec(primary, FLEET_MAJOR, (FLEET_GROUP, FLEET_PRIMARY_GROUP), drill_host=replica, index=first))
        specs.append(HostSpec(replica, FLEET_MAJOR, (FLEET_GROUP, FLEET_REPLICA_GROUP), upstream=primary, index=first + 1))
    return tuple(specs)


def topology_for(pairs):
    """The core hosts plus `pairs` fleet pairs."""
    if not 0 <= pairs <= MAX_FLEET_PAIRS:
        raise ValueError("fleet pairs must be from 0 to %d, got %r" % (MAX_FLEET_PAIRS, pairs))
    return Topology(hosts=DEFAULT_TOPOLOGY.hosts + fleet_specs(pairs))


def in_postgres_group(groups, major):
    """`postgres` is every host with a cluster outside the fleet (what the collection's tests iterate over)."""
    return major is not None and FLEET_GROUP not in groups


OBJSTORE_NAME = "objstore"
OBJSTORE_INDEX = 0  # veth index; hosts count from 1


def default_lab_id(project_dir):
    """Four hex digits from the checkout's real path, so two checkouts never collide."""
    real = os.path.realpath(project_dir)
    return hashlib.sha256(real.encode()).hexdigest()[:4]


def lab_id(project_dir, environ=None):
    environ = os.environ if environ is None else environ
    override = environ.get(LAB_ID_ENV, "").strip()
    if override:
        if not LAB_ID_RE.match(override):
            raise ValueError("%s must be 1-8 characters of [0-9a-z], got %r" % (LAB_ID_ENV, override))
        return override
    return default_lab_id(project_dir)


def subnet_for(lab_id_):
    """A /24 in 10/8 picked from the id's hash; the second octet is never 0 (10.0.x is often taken)."""
    digest = hashlib.sha256(("pgdr-lab:" + lab_id_).encode()).digest()
    second = 1 + digest[0] % 254  # 1..254
    third = digest[1]
    return ipaddress.ip_network("10.%d.%d.0/24" % (second, third))


@dataclass(frozen=True)
class Names:
    """Every kernel object name and address the lab uses for one id."""

    lab_id: str
    subnet: ipaddress.IPv4Network

    @property
    def prefix(self):
        return "pl" + self.lab_id

    @property
    def bridge(self):
        return self.prefix

    def veth(self, index):
        return "%sh%d" % (self.prefix, index)

    def netns(self, name):
        return "%s-%s" % (self.prefix, name)

    def address(self, octet):
        return str(self.subnet.network_address + octet)

    @property
    def bridge_address(self):
        return self.address(BRIDGE_OCTET)

    def host_address(self, index):
        return self.address(FIRST_HOST_OCTET + index - 1)

    @property
    def objstore_address(self):
        return self.address(OBJSTORE_OCTET)

    def owns_netns(self, name):
        return re.fullmatch(re.escape(self.prefix) + r"-[0-9a-z]+", name) is not None

    def owns_link(self, name):
        return name == self.bridge or re.fullmatch(re.escape(self.prefix) + r"h\d+", name) is not None


def names_for(lab_id_):
    return Names(lab_id_, subnet_for(lab_id_))


@dataclass(frozen=True)
class HostPlan:
    """One lab host with everything derived: the single source for state and inventory."""

    name: str
    index: int
    address: str
    netns: str
    veth: str
    major: int | None
    groups: tuple[str, ...]
    upstream: str | None
    drill_host: str | None = None

    @property
    def small(self):
        """Fleet hosts run small clusters (FLEET_SETTINGS)."""
        return FLEET_GROUP in self.groups

    @property
    def pg_data(self):
        return None if self.major is None else "/var/lib/postgresql/%d/main" % self.major

    @property
    def pg_log(self):
        return None if self.major is None else "/var/lib/postgresql/%d/postgresql.log" % self.major

    @property
    def pg_bin_dir(self):
        return "/usr/lib/postgresql/%d/bin" % (self.major or CLIENT_MAJOR)


def plan_hosts(names, topology=DEFAULT_TOPOLOGY):
    plans = []
    for position, spec in enumerate(topology.hosts, start=1):
        index = spec.index or position
        plans.append(
            HostPlan(
                name=spec.name,
                index=index,
                address=names.host_address(index),
                netns=names.netns(spec.name),
                veth=names.veth(index),
                major=spec.major,
                groups=spec.groups,
                upstream=spec.upstream,
                drill_host=spec.drill_host,
            )
        )
    return plans


def group_members(plans):
    """Inventory groups: the topology's own, plus `postgres` for every host with a cluster outside the fleet."""
    groups = {}
    for plan in plans:
        for group in plan.groups:
            groups.setdefault(group, []).append(plan.name)
        if in_postgres_group(plan.groups, plan.major):
            groups.setdefault("postgres", []).append(plan.name)
    return groups
