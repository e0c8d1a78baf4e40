# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encryption at rest as a pipeline stage: OpenPGP symmetric AES-256 with gpg.

The result decrypts without this collection:
``gpg --batch --pinentry-mode loopback --passphrase-file FILE --decrypt x.dump.gpg > x.dump``.
The passphrase reaches gpg through a 0600 file in a private GNUPGHOME that is
removed afterwards; never through argv or the environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

METHODS = ("none", "gpg")
SUFFIX = {"none": "", "gpg": ".gpg"}
MANIFEST_NAME = {"none": "none", "gpg": "gpg-symmetric-aes256"}


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
        shutil.rmtree(home, ignore_errors=True)


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
