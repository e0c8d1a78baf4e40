"""up, down and status: build the lab, check it, and remove exactly what was built."""

import contextlib
import os
import secrets
import shutil
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import hosts, net, objstore, postgres
from . import inventory as inv
from . import state as st
from .system import LabError, boot_id, ident_alive, is_mountpoint, kill_all, log, mounts_under, netns_inode, pids_in_netns, run, start_time, warn
from .topology import (
    FLEET_PRIMARY_GROUP,
    OBJSTORE_INDEX,
    OBJSTORE_NAME,
    S3_BUCKET,
    S3_PORT,
    S3_REGION,
    SYSTEM_PYTHON,
    HostPlan,
    lab_id,
    names_for,
    plan_hosts,
    topology_for,
)

STATE_VERSION = 1
RUN_SSHD = "/run/sshd"
RUN_NETNS = "/run/netns"
TOOLS = ["ip", "nsenter", "unshare", "runuser", "ssh-keygen", "/usr/sbin/sshd", "mount"]


# ---------------------------------------------------------------- up


def up(paths, pairs):
    """Bring the lab up with `pairs` fleet pairs: left alone if healthy and of that shape, else reshaped or rebuilt."""
    with st.locked(paths):
        state = st.load(paths)
        if state and state.get("status") == "up":
            wanted = lab_id(paths.project)
            problems = health_problems(paths, state) if state.get("lab_id") == wanted else ["lab id is %s, want %s" % (state.get("lab_id"), wanted)]
            if not problems:
                planned = {plan.name: _shape(plan) for plan in plan_hosts(names_for(wanted), topology_for(pairs))}
                recorded = {name: _shape(_plan(name, host)) for name, host in state["hosts"].items()}
                if recorded == planned:
                    log("already up and healthy (%s, %d hosts, %d fleet pairs); nothing to do" % (state["subnet"], len(state["hosts"]), recorded_pairs(state)))
                    return state
                if all(planned[name] == shape for name, shape in recorded.items() if name in planned):
                    # Only the fleet changes: the core hosts, secrets and object store keep running for whoever uses them.
                    return _reshape(paths, state, pairs)
                problems = ["its hosts differ from this checkout's topology"]
            log("recorded lab is unhealthy (%s); rebuilding" % "; ".join(problems))
        if state or _leftovers(paths, state):
            log("removing the previous lab first")
            _teardown(paths, state)
        return _build(paths, pairs)


def _shape(plan):
    """What must match between a running host and its plan for the host to be kept as it is."""
    return (plan.index, plan.address, plan.major, plan.groups, plan.upstream, plan.drill_host)


def recorded_pairs(state):
    """Fleet pairs a state records (a state from before the fleet has none)."""
    return sum(1 for host in state.get("hosts", {}).values() if FLEET_PRIMARY_GROUP in host.get("groups", ()))


def _check_prerequisites(paths):
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces)")
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        raise LabError("missing tools: %s (run `make apt`)" % ", ".join(missing))
    for path in (hosts.PG15_DIR + "/bin/postgres", paths.weed()):
        if not os.path.exists(path):
            raise LabError("%s is missing (run `make deps`)" % path)
    # The hosts' module interpreter: Debian's python3 with python3-psycopg, as `make apt` installs them.
    if run([SYSTEM_PYTHON, "-c", "import psycopg"], check=False).returncode != 0:
        raise LabError("%s cannot import psycopg (run `make apt` for python3-psycopg)" % SYSTEM_PYTHON)


class Recorder:
    """state.json updated as each piece comes to life, so a crash mid-up can still be torn down."""

    def __init__(self, paths, state):
        self.paths = paths
        self.state = state
        self.lock = threading.Lock()
        st.save(paths, state)

    def update(self, fn):
        with self.lock:
            fn(self.state)
            st.save(self.paths, self.state)


def _build(paths, pairs):
    started = time.monotonic()
    _check_prerequisites(paths)
    pginstall = hosts.pginstall_dir(paths.project)
    names = names_for(lab_id(paths.project))
    plans = plan_hosts(names, topology_for(pairs))
    net.check_subnet_free(names.subnet, names.bridge)
    prefix = names.subnet.prefixlen
    objstore_address = names.objstore_address
    endpoint = "http://%s:%d" % (objstore_address, S3_PORT)
    alphabet = string.ascii_uppercase + string.digits
    s3 = {
        "endpoint": endpoint,
        "bucket": S3_BUCKET,
        "region": S3_REGION,
        "access_key": "PGDRLAB" + "".join(secrets.choice(alphabet) for _unused in range(13)),
        "secret_key": secrets.token_urlsafe(30),
    }
    rec = Recorder(
        paths,
        {
            "version": STATE_VERSION,
            "status": "building",
            "boot_id": boot_id(),
            "lab_id": names.lab_id,
            "project_dir": str(paths.project),
            "subnet": str(names.subnet),
            "bridge": names.bridge,
            "bridge_address": names.bridge_address,
            "created": {"bridge": None, "netns": [], "veths": [], "root_dirs": [], "root_mounts": []},
            "netns_inodes": {},
            "hosts": {},
            "fleet_pairs": pairs,
            "objstore": {"netns": names.netns(OBJSTORE_NAME), "veth": names.veth(OBJSTORE_INDEX), "address": objstore_address, "weed": None},
            "s3": s3,
            "pg_password": secrets.token_urlsafe(24),
            "ssh_key": str(paths.ssh_key),
            "known_hosts": str(paths.known_hosts),
            "inventory": str(paths.inventory),
            "pginstall": str(pginstall),
        },
    )
    log("building lab %s on %s (bridge %s, %d fleet pairs)" % (names.lab_id, names.subnet, names.bridge, pairs))

    paths.ssh.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.ssh, 0o700)
    client_key = hosts.keygen(paths.ssh_key, "pgdr-lab-client")
    st.write_secret(paths.authorized_keys, " ".join(client_key) + " pgdr-lab-client\n")
    if not os.path.isdir(RUN_SSHD):
        # sshd's privilege-separation directory; normally made by the service unit.
        os.makedirs(RUN_SSHD, mode=0o755)
        rec.update(lambda s: s["created"]["root_dirs"].append(RUN_SSHD))
        log("created %s (will be removed by down)" % RUN_SSHD)

    # Network: bridge, then one namespace + veth per node. `ip netns add` makes /run/netns
    # a mount point the first time; note it so down can leave the machine as it found it.
    netns_dir_existed, netns_dir_mounted = os.path.isdir(RUN_NETNS), is_mountpoint(RUN_NETNS)
    net.create_bridge(names.bridge, names.bridge_address, prefix)
    rec.update(lambda s: s["created"].update(bridge=names.bridge))
    nodes = [(names.netns(OBJSTORE_NAME), names.veth(OBJSTORE_INDEX), objstore_address)]
    nodes += [(plan.netns, plan.veth, plan.address) for plan in plans]
    _plug_nodes(rec, names, nodes)
    if not netns_dir_existed:
        rec.update(lambda s: s["created"]["root_dirs"].append(RUN_NETNS))
    if not netns_dir_mounted and is_mountpoint(RUN_NETNS):
        rec.update(lambda s: s["created"].setdefault("root_mounts", []).append(RUN_NETNS))
    log("network ready: %d namespaces on %s" % (len(nodes), names.bridge))

    # The object store starts first: it is the slowest to become ready.
    weed_ident, weed_proc = objstore.start(
        paths.weed(), names.netns(OBJSTORE_NAME), objstore_address, paths.objstore, s3["access_key"], s3["secret_key"], names.lab_id
    )
    rec.update(lambda s: s["objstore"].update(weed=weed_ident))

    _build_hosts(paths, rec, names, plans, plans, pginstall)

    objstore.wait_and_create_bucket(weed_proc, objstore_address, names.bridge, endpoint, s3["access_key"], s3["secret_key"], paths.objstore / "weed.log")
    log("object store up at %s, bucket %s" % (endpoint, S3_BUCKET))

    _write_access(paths, rec, plans)
    return _mark_up(paths, rec, started)


def _reshape(paths, state, pairs):
    """Add or remove fleet pairs of a healthy lab; the other hosts keep running untouched.

    The state says "reshaping" meanwhile: should this fail half-way, the next `up` finds a lab that is not
    "up" and rebuilds it whole.
    """
    started = time.monotonic()
    _check_prerequisites(paths)
    pginstall = hosts.pginstall_dir(paths.project)
    names = names_for(state["lab_id"])
    plans = plan_hosts(names, topology_for(pairs))
    wanted = {plan.name for plan in plans}
    removing = [name for name in state["hosts"] if name not in wanted]
    adding = [plan for plan in plans if plan.name not in state["hosts"]]
    log("reshaping lab %s from %d to %d fleet pairs (adding %d hosts, removing %d)" % (names.lab_id, recorded_pairs(state), pairs, len(adding), len(removing)))
    state.update(status="reshaping", fleet_pairs=pairs)
    rec = Recorder(paths, state)
    if removing:
        with ThreadPoolExecutor(max_workers=len(removing)) as pool:
            for future in [pool.submit(_remove_host, paths, rec, name) for name in removing]:
                future.result()
    if adding:
        _plug_nodes(rec, names, [(plan.netns, plan.veth, plan.address) for plan in adding])
        _build_hosts(paths, rec, names, adding, plans, pginstall)
    # Every host's /etc/hosts names every host: the ones that stay are rewritten in place (a bind-mounted file).
    for plan in plans:
        if plan not in adding:
            hosts.write_etc_hosts(paths.host(plan.name), plans, names.objstore_address)
    _write_access(paths, rec, plans)
    return _mark_up(paths, rec, started)


def _plug_nodes(rec, names, nodes):
    """A network namespace and a veth on the bridge per (netns, veth, address), each recorded as it appears."""
    for netns, veth, address in nodes:
        net.create_netns(netns)
        inode = netns_inode("/run/netns/" + netns)
        rec.update(lambda s, n=netns, i=inode: (s["created"]["netns"].append(n), s["netns_inodes"].update({n: i})))
        net.plug(netns, veth, names.bridge, address, names.subnet.prefixlen)
        rec.update(lambda s, v=veth: s["created"]["veths"].append(v))


def _build_hosts(paths, rec, names, building, plans, pginstall):
    """Folders, holder, sshd and cluster of each host in `building` (in parallel); `plans` is the whole lab."""

    def build_host(plan):
        host_dir = paths.host(plan.name)
        hosts.prepare_folders(host_dir, pginstall)
        hosts.write_etc_hosts(host_dir, plans, names.objstore_address)
        hosts.keygen(host_dir / "ssh_host_ed25519_key", "pgdr-lab-" + plan.name)
        entry = {
            "index": plan.index,
            "address": plan.address,
            "netns": plan.netns,
            "veth": plan.veth,
            "major": plan.major,
            "groups": list(plan.groups),
            "upstream": plan.upstream,
            "drill_host": plan.drill_host,
            "pg_data": plan.pg_data,
            "pg_bin_dir": plan.pg_bin_dir,
            "dir": str(host_dir),
            "holder": None,
            "sshd": None,
            "postgres": None,
        }
        rec.update(lambda s: s["hosts"].update({plan.name: entry}))
        holder = hosts.start_holder(plan.netns, plan.name, host_dir, pginstall)
        rec.update(lambda s: s["hosts"][plan.name].update(holder=holder))
        sshd = hosts.start_sshd(holder["pid"], plan.address, host_dir, paths.authorized_keys)
        rec.update(lambda s: s["hosts"][plan.name].update(sshd=sshd))
        if plan.major is not None:
            postgres.create_cluster(holder["pid"], host_dir, plan, names.subnet, rec.state["pg_password"])
            pg = postgres.start(holder["pid"], host_dir, plan)
            rec.update(lambda s: s["hosts"][plan.name].update(postgres=pg))
        log("host %-10s %s up (%s)" % (plan.name, plan.address, "PostgreSQL %d" % plan.major if plan.major else "no cluster"))

    with ThreadPoolExecutor(max_workers=len(building)) as pool:
        for future in [pool.submit(build_host, plan) for plan in building]:
            future.result()


def _write_access(paths, rec, plans):
    """known_hosts pinning every host key, postgres's copy of key and pins on every host, and the inventory."""
    host_keys = {plan.address: hosts.keygen(paths.host(plan.name) / "ssh_host_ed25519_key", "pgdr-lab-" + plan.name) for plan in plans}
    st.write_secret(paths.known_hosts, inv.known_hosts_lines(host_keys))
    for plan in plans:
        hosts.install_postgres_ssh(paths.host(plan.name), paths.ssh_key, paths.known_hosts)
    data = inv.inventory(plans, paths.ssh_key, paths.known_hosts, SYSTEM_PYTHON, rec.state["s3"], rec.state["pg_password"])
    st.write_secret(paths.inventory, inv.render(data))


def _mark_up(paths, rec, started):
    problems = health_problems(paths, rec.state)
    if problems:
        raise LabError("lab built but unhealthy: %s" % "; ".join(problems))
    elapsed = time.monotonic() - started
    rec.update(lambda s: s.update(status="up", up_seconds=round(elapsed, 1), up_at=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
    log("up in %.1fs (%d hosts, %d fleet pairs); inventory %s" % (elapsed, len(rec.state["hosts"]), rec.state["fleet_pairs"], paths.inventory))
    return rec.state


def _remove_host(paths, rec, name):
    """Stop one host and remove everything of it: processes in its namespace, the namespace, its veth, its folder."""
    host = rec.state["hosts"][name]
    if host.get("major") and ident_alive(host.get("holder")):
        postgres.stop(host["holder"]["pid"], _plan(name, host))
    recorded_inode = rec.state.get("netns_inodes", {}).get(host["netns"]) if rec.state.get("boot_id") == boot_id() else None
    inodes = {recorded_inode, netns_inode("/run/netns/" + host["netns"])}
    recorded = [host.get(k) for k in ("holder", "sshd", "postgres")]
    pids = set(pids_in_netns(inodes)) | {r["pid"] for r in recorded if ident_alive(r)}
    if pids:
        kill_all(sorted(pids))
    net.delete_netns(host["netns"])
    net.delete_link(host["veth"])
    host_dir = paths.host(name)
    # Its mounts lived in its own mount namespace, gone with its last process; one seen here would be a leak.
    if mounts_under(host_dir):
        raise LabError("mounts remain under %s; not deleting it" % host_dir)
    if host_dir.exists():
        shutil.rmtree(host_dir)

    def forget(s):
        del s["hosts"][name]
        s["netns_inodes"].pop(host["netns"], None)
        s["created"]["netns"] = [n for n in s["created"]["netns"] if n != host["netns"]]
        s["created"]["veths"] = [v for v in s["created"]["veths"] if v != host["veth"]]

    rec.update(forget)
    log("host %-10s %s removed" % (name, host["address"]))


# ---------------------------------------------------------------- health


def host_health(state, name):
    """Problems with one host, [] if healthy."""
    host = state["hosts"][name]
    if not ident_alive(host.get("holder")):
        return ["%s: namespace holder gone" % name]
    problems = []
    banner = net.tcp_banner(host["address"], 22, state["bridge"], read=True)
    if not banner or not banner.startswith(b"SSH-"):
        problems.append("%s: sshd not answering on %s:22" % (name, host["address"]))
    if host["major"] is not None:
        plan = _plan(name, host)
        if not postgres.is_ready(host["holder"]["pid"], plan):
            problems.append("%s: PostgreSQL %s not accepting connections" % (name, host["major"]))
    return problems


def objstore_health(state):
    store = state["objstore"]
    if not ident_alive(store.get("weed")):
        return ["objstore: weed not running"]
    if not net.routed_via(store["address"], state["bridge"]):
        return ["objstore: %s not routed via %s" % (store["address"], state["bridge"])]
    s3 = state["s3"]
    try:
        ok = objstore.bucket_exists(objstore.client(s3["endpoint"], s3["access_key"], s3["secret_key"]))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return ["objstore: S3 error %s" % exc]
    return [] if ok else ["objstore: bucket %s missing" % s3["bucket"]]


def health_report(state):
    """name -> problems, checked in parallel (the test suite calls `up` often)."""
    names = list(state.get("hosts", {}))
    if state["bridge"] not in net.link_names():
        return {"network": ["bridge %s is gone" % state["bridge"]]}
    with ThreadPoolExecutor(max_workers=len(names) + 1) as pool:
        futures = {name: pool.submit(host_health, state, name) for name in names}
        futures[OBJSTORE_NAME] = pool.submit(objstore_health, state)
        return {name: future.result() for name, future in futures.items()}


def health_problems(paths, state):
    if not state.get("hosts"):
        return ["no hosts recorded"]
    problems = [p for found in health_report(state).values() for p in found]
    for path in (paths.inventory, paths.known_hosts, paths.ssh_key):
        if not path.exists():
            problems.append("%s missing" % path)
    return problems


def status(paths):
    """Print each host's health; return the exit code (0 only if everything is up)."""
    state = st.load(paths)
    if not state:
        log("down (no %s)" % paths.state)
        return 1
    if state.get("status") != "up":
        log("not up: state says %r (run `make lab-up`)" % state.get("status"))
        return 1
    report = health_report(state)
    header = (state["lab_id"], state["subnet"], state["bridge"], recorded_pairs(state), state.get("up_at", "?"))
    print("lab %s  subnet %s  bridge %s  %d fleet pairs  up since %s" % header)
    for name, host in sorted(state["hosts"].items(), key=lambda item: item[1]["index"]):
        what = "PostgreSQL %s" % host["major"] if host["major"] else "no cluster"
        problems = report.get(name, [])
        print("  %-10s %-15s %-15s %s" % (name, host["address"], what, "ok" if not problems else "DOWN: " + "; ".join(problems)))
    store = report.get(OBJSTORE_NAME, [])
    print("  %-10s %-15s %-15s %s" % (OBJSTORE_NAME, state["objstore"]["address"], "S3", "ok" if not store else "DOWN: " + "; ".join(store)))
    if "network" in report:
        print("  network: DOWN: " + "; ".join(report["network"]))
    bad = any(report.values())
    return 1 if bad else 0


def _plan(name, host):
    return HostPlan(
        name, host["index"], host["address"], host["netns"], host["veth"], host["major"], tuple(host["groups"]), host.get("upstream"), host.get("drill_host")
    )


# ---------------------------------------------------------------- down


def down(paths):
    with st.locked(paths):
        state = st.load(paths)
        if not state and not _leftovers(paths, state):
            log("nothing to tear down")
        else:
            _teardown(paths, state)
        # The lock file is ours too; drop .lab itself when nothing else lives there.
        paths.lock.unlink(missing_ok=True)
        try:
            paths.root.rmdir()
        except OSError:
            pass


def _our_names(paths, state):
    ids = {lab_id(paths.project)}
    if state and state.get("lab_id"):
        ids.add(state["lab_id"])
    return [names_for(i) for i in sorted(ids)]


def _leftovers(paths, state):
    names = _our_names(paths, state)
    netns = [ns for ns in net.netns_names() if any(n.owns_netns(ns) for n in names)]
    links = [link for link in net.link_names() if any(n.owns_link(link) for n in names)]
    files = [p for p in paths.owned() if os.path.lexists(p)]
    return netns + links + [str(p) for p in files]


def _teardown(paths, state):
    started = time.monotonic()
    state = state or {}
    names = _our_names(paths, state)
    created = state.get("created", {})
    netns = set(created.get("netns", [])) | {ns for ns in net.netns_names() if any(n.owns_netns(ns) for n in names)}
    # Namespace inodes find processes even if the /run/netns name is already gone
    # (recorded ones only from this boot: after a reboot the numbers are reused).
    recorded_inodes = state.get("netns_inodes", {}).values() if state.get("boot_id") == boot_id() else []
    inodes = set(recorded_inodes) | {netns_inode("/run/netns/" + ns) for ns in netns}

    # 1. A clean PostgreSQL shutdown where the host is still alive.
    clusters = [(name, h) for name, h in state.get("hosts", {}).items() if h.get("major") and ident_alive(h.get("holder"))]
    if clusters:
        with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
            list(pool.map(lambda item: postgres.stop(item[1]["holder"]["pid"], _plan(*item)), clusters))

    # 2. The object store first and hard: weed takes ~15 s to honour SIGTERM, and its data goes anyway.
    weed = state.get("objstore", {}).get("weed")
    store_inodes = {netns_inode("/run/netns/" + n.netns(OBJSTORE_NAME)) for n in names}
    store_pids = set(pids_in_netns(store_inodes)) | ({weed["pid"]} if ident_alive(weed) else set())
    if store_pids:
        kill_all(sorted(store_pids), grace=0)
    for n in names:  # the gRPC sockets weed left in /tmp, named after this lab's ports
        objstore.remove_grpc_sockets(n.lab_id)

    # 3. Every process in our namespaces (sshd sessions, stray tools), then recorded pids.
    recorded = []
    for host in state.get("hosts", {}).values():
        recorded += [host.get(k) for k in ("holder", "sshd", "postgres")]
    recorded.append(state.get("objstore", {}).get("weed"))
    pids = set(pids_in_netns(inodes)) | {r["pid"] for r in recorded if ident_alive(r)}
    if pids:
        kill_all(sorted(pids))
    left = [p for p in pids_in_netns(inodes) if start_time(p) is not None]
    if left:
        warn("processes still in lab namespaces: %s" % left)

    # 4. Kernel objects: namespaces, veths (usually gone with their namespace), bridge.
    for ns in sorted(netns):
        net.delete_netns(ns)
    links = set(created.get("veths", [])) | ({created["bridge"]} if created.get("bridge") else set())
    links |= {link for link in net.link_names() if any(n.owns_link(link) for n in names)}
    for link in sorted(links, key=lambda name: name in {n.bridge for n in names}):
        net.delete_link(link)  # veths first, the bridge last

    # 5. Files. Mounts only ever exist inside the hosts' private namespaces; if one
    # leaked into ours, rmtree would walk into it (e.g. the real PostgreSQL 15), so refuse.
    for point in mounts_under(paths.root):
        warn("unmounting leaked mount %s" % point)
        run(["umount", "-l", point], check=False)
    if mounts_under(paths.root):
        raise LabError("mounts remain under %s; not deleting files" % paths.root)
    for path in paths.owned():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()

    # 6. Root-namespace mounts and folders we created, unless something else now relies on them.
    for path in created.get("root_mounts", []):
        if is_mountpoint(path) and not os.listdir(path):
            run(["umount", path], check=False)
    for path in created.get("root_dirs", []):
        if path == RUN_SSHD and _other_sshd_running():
            log("leaving %s: another sshd uses it" % path)
            continue
        if os.path.isdir(path) and (os.listdir(path) or is_mountpoint(path)):
            log("leaving %s: still in use" % path)
            continue
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            warn("could not remove %s: %s" % (path, exc))
    killed = len(pids | store_pids)
    log("down: removed %d namespaces, %d links, %d processes in %.1fs" % (len(netns), len(links), killed, time.monotonic() - started))


def _other_sshd_running():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink("/proc/%s/exe" % entry) == "/usr/sbin/sshd":
                    return True
            except OSError:
                continue
    return False


# ---------------------------------------------------------------- object store outage (tests)


@contextlib.contextmanager
def objstore_outage(paths):
    """Kill the object store (a real outage: connections are refused), and always start it again.

    Holds the lab lock for the whole outage, so a concurrent `up` waits instead of finding the store
    down and rebuilding the lab under other users. On exit, weed is started with the same data folder
    and credentials, the bucket is waited for, and state.json records the new process.
    """
    with st.locked(paths):
        state = st.load(paths)
        if not state or state.get("status") != "up":
            raise LabError("the lab is not up; cannot stop its object store")
        store, s3 = state["objstore"], state["s3"]
        weed = store.get("weed")
        if not ident_alive(weed):
            raise LabError("the object store is not running (weed %s)" % weed)
        try:
            kill_all([weed["pid"]], grace=0)
            if ident_alive(weed):
                raise LabError("weed pid %d survived SIGKILL" % weed["pid"])
            yield
        finally:
            objstore.remove_grpc_sockets(state["lab_id"])
            weed_ident, weed_proc = objstore.start(
                paths.weed(), store["netns"], store["address"], paths.objstore, s3["access_key"], s3["secret_key"], state["lab_id"]
            )
            state["objstore"]["weed"] = weed_ident
            st.save(paths, state)
            log_path = paths.objstore / "weed.log"
            objstore.wait_and_create_bucket(weed_proc, store["address"], state["bridge"], s3["endpoint"], s3["access_key"], s3["secret_key"], log_path)
            objstore.wait_writable(s3["endpoint"], s3["access_key"], s3["secret_key"])
            log("object store restarted (pid %d)" % weed_ident["pid"])
