"""SFTP read throughput of one file, run on a lab host by bench/physical_restore.py: ssh cat vs the SFTP repository's readers.

Usage: python3 bench/sftp_read.py HOST KEY_FILE KNOWN_HOSTS FOLDER NAME. Reads FOLDER/NAME on HOST to the end, in turn with
`ssh cat` (OpenSSH, needs a shell), SftpRepository as modules open it (client auto: OpenSSH's transport where ssh is
installed) and SftpRepository on paramiko's own transport, three times each, interleaved; prints one JSON object: bytes
and, per reader, the fastest of its reads in seconds (connection included), and the transport auto picked. Runs outside Ansible (no ansible import).
"""

import json
import os
import subprocess
import sys
import time

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(CHECKOUT, ".collections"))

from ansible_collections.pgdr.backup.plugins.module_utils.storage.sftp import SftpRepository  # noqa: E402

MIB = 1024 * 1024


def ssh_cat(host, key, known_hosts, folder, name):
    argv = ["ssh", "-F", "none", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + known_hosts,
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "root@" + host, "cat", "%s/%s" % (folder, name)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    count = sum(len(piece) for piece in iter(lambda: proc.stdout.read(MIB), b""))
    if proc.wait() != 0:
        raise SystemExit("ssh cat failed with exit code %d" % proc.returncode)
    return count, "openssh"


def repository(client):
    def read(host, key, known_hosts, folder, name):
        repo = SftpRepository(host, folder, key_file=key, known_hosts=known_hosts, client=client)
        try:
            with repo.open_reader(name) as reader:
                count = sum(len(piece) for piece in iter(lambda: reader.read(MIB), b""))
            return count, repo.client
        finally:
            repo.close()

    return read


def main(host, key, known_hosts, folder, name):
    readers = {"ssh_cat": ssh_cat, "auto": repository("auto"), "paramiko": repository("paramiko")}
    best, sizes, transport = {}, set(), None
    for _round in range(3):
        for label, read in readers.items():
            started = time.monotonic()
            count, used = read(host, key, known_hosts, folder, name)
            seconds = time.monotonic() - started
            best[label] = min(seconds, best.get(label, seconds))
            sizes.add(count)
            transport = used if label == "auto" else transport
    if len(sizes) != 1:
        raise SystemExit("the readers read different sizes: %s" % sorted(sizes))
    print(json.dumps(dict(bytes=sizes.pop(), seconds=best, auto_transport=transport)))


if __name__ == "__main__":
    main(*sys.argv[1:6])
