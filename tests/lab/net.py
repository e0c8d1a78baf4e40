"""Bridge, network namespaces and veth pairs (iproute2), and safe reachability checks."""

import ipaddress
import json
import socket

from .system import LabError, run


def ip(*args, check=True):
    return run(["ip", *args], check=check, timeout=30)


def link_names():
    out = ip("-j", "link", "show").stdout
    return [link["ifname"] for link in json.loads(out or "[]")]


def netns_names():
    out = ip("-j", "netns", "list").stdout.strip()
    return [ns["name"] for ns in json.loads(out or "[]")]


def check_subnet_free(subnet, bridge):
    """Refuse a subnet some other interface already routes: lab traffic must stay on our bridge."""
    out = ip("-j", "-4", "route", "show").stdout
    for route in json.loads(out or "[]"):
        dst = route.get("dst")
        if not dst or dst == "default" or route.get("dev") == bridge:
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(subnet):
            raise LabError("lab subnet %s overlaps route %s on %s; set PGDR_LAB_ID to pick another" % (subnet, dst, route.get("dev")))


def create_bridge(bridge, address, prefixlen):
    ip("link", "add", bridge, "type", "bridge")
    ip("addr", "add", "%s/%d" % (address, prefixlen), "dev", bridge)
    ip("link", "set", bridge, "up")


def create_netns(netns):
    ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")


def plug(netns, veth, bridge, address, prefixlen):
    """A veth pair: `veth` on the bridge in the root namespace, its peer `eth0` inside `netns`."""
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", mac_for(address), "netns", netns)
    ip("link", "set", veth, "master", bridge)
    ip("link", "set", veth, "up")
    ip("-n", netns, "addr", "add", "%s/%d" % (address, prefixlen), "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")


def mac_for(address):
    """A locally administered MAC made of the IPv4 address (02:00:a:b:c:d).

    A host removed and added again (a fleet pair, when the lab is reshaped) keeps its MAC, so the
    neighbour caches of the controller and of the other hosts, which still map its address to the
    old MAC for a while, stay right: with a random MAC its sshd was unreachable for seconds.
    """
    return "02:00:" + ":".join("%02x" % byte for byte in ipaddress.ip_address(address).packed)


def delete_netns(netns):
    ip("netns", "del", netns, check=False)


def delete_link(name):
    if name in link_names():
        ip("link", "del", name, check=False)


def routed_via(address, bridge):
    """True only if the kernel would send packets for `address` out of our bridge.

    Checked before every connection from the root namespace: if the bridge were gone,
    10.x traffic would otherwise leave through the default route.
    """
    done = ip("-j", "route", "get", address, check=False)
    if done.returncode != 0:
        return False
    routes = json.loads(done.stdout or "[]")
    return bool(routes) and routes[0].get("dev") == bridge


def tcp_banner(address, port, bridge, timeout=2.0, read=False):
    """Connect (only through our bridge); return the first bytes if `read`, else b'' on success, None on failure."""
    if not routed_via(address, bridge):
        return None
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            return sock.recv(64) if read else b""
    except OSError:
        return None
