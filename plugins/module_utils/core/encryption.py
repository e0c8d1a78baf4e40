# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encryption at rest as a pipeline stage: OpenPGP symmetric AES-256 with gpg.

The result decrypts without this collection:
``gpg --batch --pinentry-mode loopback --passphrase-file FILE --decrypt x.dump.gpg > x.dump``.
The passphrase reaches gpg through a 0600 file in a private GNUPGHOME that is
removed afterwards (with the gpg-agent that symmetric encryption starts there);
never through argv or the environment.

Standard library only: pgdr-wal (which runs outside Ansible, once per WAL segment) imports this file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile

METHODS = ("none", "gpg")
SUFFIX = {"none": "", "gpg": ".gpg"}
MANIFEST_NAME = {"none": "none", "gpg": "gpg-symmetric-aes256"}
# how gpg --symmetric output starts: a symmetric-key session key packet (tag 3) with an old-format header
# (0x8C-0x8E, what gpg 2.2 writes) or a new-format one (0xC3). No WAL file starts so (a segment starts with its
# page magic 0xD1xx little-endian, history and .backup files with text).
OPENPGP_FIRST_BYTES = (0x8C, 0x8D, 0x8E, 0xC3)


def encryption_argument_spec():
    """The ``encryption`` option of the modules that write sets (pg_logical_dump, pg_basebackup)."""
    return dict(
        type="dict",
        options=dict(
            method=dict(type="str", default="none", choices=list(METHODS)),
            passphrase=dict(type="str", no_log=True),
        ),
        required_if=[("method", "gpg", ("passphrase",))],
    )


def looks_encrypted(head):
    """Whether bytes read from the start of a file are gpg --symmetric output."""
    return bool(head) and head[0] in OPENPGP_FIRST_BYTES


def method_of(entry_or_manifest):
    """"gpg" or "none" from a manifest's (or a file entry's) ``encryption`` object."""
    recorded = ((entry_or_manifest or {}).get("encryption") or {}).get("method") or "none"
    return "none" if recorded == "none" else "gpg"


def wrong_passphrase(exc, option):
    """Append what a failed ``gpg --decrypt`` most likely means (a PgdrError from core.commands) and name ``option``."""
    cmd = exc.details.get("cmd") or []
    if cmd[:1] == ["gpg"] and "--decrypt" in cmd:
        exc.msg = "cannot decrypt the backup: gpg says %s; check %s: it must be the one the backup was encrypted with" % (
            _gpg_reason(exc.details.get("stderr") or exc.msg),
            option,
        )
        exc.args = (exc.msg,)
    return exc


def _gpg_reason(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    telling = [line for line in lines if "fail" in line.lower() or "bad" in line.lower()]
    line = (telling or lines or ["decryption failed"])[-1]
    return line[len("gpg: "):] if line.startswith("gpg: ") else line


@contextlib.contextmanager
def gpg_session(passphrase):
    """Yields an object with encrypt_argv / decrypt_argv usable for this session only."""
    home = tempfile.mkdtemp(prefix="pgdr-gpg-")
    try:
        os.chmod(home, 0o700)
        passfile = os.path.join(home, "passphrase")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(passphrase)
        yield GpgSession(home, passfile)
    finally:
        _stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def _stop_agent(home):
    """End the gpg-agent that gpg --symmetric started for ``home``: it would otherwise outlive the folder for a minute."""
    if not os.path.exists(os.path.join(home, "S.gpg-agent")):
        return
    try:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        pass  # the agent ends by itself once it sees its socket gone


class GpgSession:
    def __init__(self, home, passfile):
        self.home = home
        self.passfile = passfile

    def _base(self):
        return ["gpg", "--homedir", self.home, "--batch", "--yes", "--quiet", "--no-tty",
                "--pinentry-mode", "loopback", "--passphrase-file", self.passfile]

    def encrypt_argv(self):
        # compression off: the data is compressed (or not) by choice, before this stage
        return self._base() + ["--symmetric", "--cipher-algo", "AES256", "--compress-algo", "none", "--output", "-"]

    def decrypt_argv(self):
        return self._base() + ["--decrypt", "--output", "-"]


def run_gpg(argv, reader, out, chunk=1024 * 1024):
    """Run a gpg ``argv`` (encrypt_argv or decrypt_argv), feeding it ``reader`` (or nothing: an input file is in argv)
    and writing its output to the binary file ``out``; raises GpgFailed with gpg's reason.

    For pgdr-wal, which carries no pipeline runner: gpg writes straight into ``out``'s file descriptor, so feeding
    its input from this thread cannot deadlock.
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if reader is not None else subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            if reader is not None:
                try:
                    for data in iter(lambda: reader.read(chunk), b""):
                        proc.stdin.write(data)
                except BrokenPipeError:
                    pass  # gpg gave up (a wrong passphrase): its exit code says why
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            err.seek(0)
            raise GpgFailed(_gpg_reason(err.read().decode("utf-8", "replace")))


class GpgFailed(Exception):
    """gpg exited non-zero; the message is its reason (for decryption, usually a wrong passphrase)."""
