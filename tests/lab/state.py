"""Where the lab keeps its files, and state.json: the record of everything `up` created."""

import contextlib
import fcntl
import json
import os
from pathlib import Path


def default_project_dir():
    # tests/lab/state.py -> the checkout root
    return Path(__file__).resolve().parents[2]


class Paths:
    def __init__(self, project_dir=None):
        self.project = Path(project_dir or default_project_dir()).resolve()
        self.root = self.project / ".lab"
        self.state = self.root / "state.json"
        self.lock = self.root / ".lock"
        self.inventory = self.root / "inventory.yml"
        self.hosts = self.root / "hosts"
        self.ssh = self.root / "ssh"
        self.ssh_key = self.ssh / "id_ed25519"
        self.authorized_keys = self.ssh / "authorized_keys"
        self.known_hosts = self.ssh / "known_hosts"
        self.objstore = self.root / "objstore"

    def host(self, name):
        return self.hosts / name

    def weed(self):
        return str(self.project / ".venv" / "bin" / "weed")

    # Everything `up` makes inside .lab; `down` removes exactly these.
    def owned(self):
        return [self.hosts, self.ssh, self.objstore, self.inventory, self.state]


def load(paths):
    try:
        with open(paths.state) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(paths, state):
    """Atomic write, 0600: the state holds the generated passwords and keys' paths."""
    paths.root.mkdir(exist_ok=True)
    tmp = paths.state.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    os.replace(tmp, paths.state)


def write_secret(path, text):
    """0600, through a temporary file and a rename: a reshape rewrites the inventory and known_hosts
    while tests may be reading them, and a reader must see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(paths):
    """One up/down at a time per checkout (test workers may call `up` together)."""
    paths.root.mkdir(exist_ok=True)
    with open(paths.lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
