# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest's command lines and its failures.

argv only, never a shell, and never a secret on it: every command reads the stanza's settings (repository keys, cipher
pass) from the 0600 configuration file given with ``--config``, or from PGBACKREST_* variables of its environment.
A failure becomes one line: what failed, pgBackRest's own ``[code]: message`` line, and what to do.
"""

from __future__ import annotations

import re

from ansible_collections.pgdr.backup.plugins.module_utils.core import commands
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

BACKUP_TYPES = ("full", "diff", "incr")
_ERROR = re.compile(r"^\s*ERROR: \[(\d{3})\]: (.*)$")
_UNSUPPORTED = re.compile(r"\[VersionNotSupportedError\] (.*)$", re.M)
_VERSION = re.compile(r"pgBackRest (\d+\.\d+(?:\.\d+)?)")

# what to do, by pgBackRest's error code (its src/build/error/error.yaml)
FIXES = {
    "031": "an option is not valid for this command; see the message",
    "032": "fix the option's value in the task or in the configuration file",
    "037": "a required option is missing: give it in the task (pg_data, repository)",
    "044": "the repository's stanza was made for another cluster or PostgreSQL version: name another stanza, or after pg_upgrade "
           "let the module run stanza-upgrade (state: present)",
    "046": "this pgBackRest release does not support the cluster's PostgreSQL version",
    "047": "a path cannot be created: make the repository (or spool, log) folder's parent writable by the user the task runs as",
    "049": "pgBackRest cannot reach the repository host: check the endpoint and the network",
    "050": "another pgBackRest command holds the stanza's lock: wait for it to finish, or look for a stuck one",
    "051": "the repository's backup.info and archive.info disagree: see pgBackRest's message, the stanza may need stanza-upgrade",
    "055": "the stanza's info files are missing: create the stanza first (the module's state: present without action)",
    "056": "pgBackRest cannot connect to the cluster: check pg_data, pg_port and pg_socket and that the cluster runs",
    "058": "the cluster is not the one the stanza was made for (system identifier or version): check pg_data, or name another stanza",
    "073": "a path is missing: is the repository path right, and is the stanza created (state: present)?",
    "082": "WAL is not reaching the repository: set archive_command to the module's archive_command result and archive_mode = on, "
           "then reload PostgreSQL",
    "087": "archive_mode is off: set archive_mode = on and archive_command (the module's archive_command result), then restart PostgreSQL",
    "103": "no valid repository: check the repository settings, and that the stanza was created",
    "104": "the command found errors: see the message (and verify's output)",
    "105": "the repository refused the credentials: check the S3 key, secret and region",
}


def base_argv(binary, config_file, stanza):
    return [binary, "--config=" + config_file, "--stanza=" + stanza]


def info_argv(binary, config_file, stanza):
    return base_argv(binary, config_file, stanza) + ["--output=json", "info"]


def stanza_create_argv(binary, config_file, stanza):
    return base_argv(binary, config_file, stanza) + ["stanza-create"]


def stanza_upgrade_argv(binary, config_file, stanza):
    return base_argv(binary, config_file, stanza) + ["stanza-upgrade"]


def check_argv(binary, config_file, stanza):
    return base_argv(binary, config_file, stanza) + ["check"]


def backup_argv(binary, config_file, stanza, backup_type):
    if backup_type not in BACKUP_TYPES:
        raise PgdrError("backup_type %r is not one of %s" % (backup_type, ", ".join(BACKUP_TYPES)))
    return base_argv(binary, config_file, stanza) + ["--type=" + backup_type, "backup"]


def expire_argv(binary, config_file, stanza, dry_run=False):
    """A dry run logs at detail level: its "[DRY-RUN] ... expire ... backup set" lines say what would go."""
    return base_argv(binary, config_file, stanza) + (["--dry-run", "--log-level-console=detail"] if dry_run else []) + ["expire"]


def verify_argv(binary, config_file, stanza):
    return base_argv(binary, config_file, stanza) + ["--output=text", "verify"]


def archive_command(binary, config_file, stanza, default_config):
    """What PostgreSQL's archive_command should be for the stanza (--config only when it is not pgBackRest's default)."""
    config = [] if config_file == default_config else ["--config=" + config_file]
    return " ".join([binary] + config + ["--stanza=" + stanza, "archive-push", "%p"])


_DRY_BACKUP = re.compile(r"\[DRY-RUN\] repo\d+: remove expired backup (\S+)")
_DRY_WAL = re.compile(r"\[DRY-RUN\] repo\d+: (\S+) remove archive, start = (\w+), stop = (\w+)")


def expired_by_dry_run(output):
    """(labels, wal) a dry-run expire would remove: its "remove expired backup <label>" lines, oldest first, and its
    "<db> remove archive, start = ..., stop = ..." lines as [{id, start, stop}]."""
    labels = sorted(match.group(1) for match in _DRY_BACKUP.finditer(output or ""))
    wal = [dict(id=m.group(1), start=m.group(2), stop=m.group(3)) for m in _DRY_WAL.finditer(output or "")]
    return labels, wal


def parse_version(text):
    """"2.45" from ``pgbackrest version`` ("pgBackRest 2.45")."""
    match = _VERSION.search(text or "")
    if not match:
        raise PgdrError("pgbackrest version printed %r, not pgBackRest's version line; is the binary pgBackRest?" % (text or "").strip()[:80])
    return match.group(1)


def error_line(stderr):
    """(code, message) of pgBackRest's first ERROR line, or (None, None)."""
    for line in (stderr or "").splitlines():
        match = _ERROR.match(line)
        if match:
            return match.group(1), match.group(2).strip()
    return None, None


def unsupported_version(stderr):
    """pgBackRest's reason when it does not know the cluster's PostgreSQL version, else None."""
    match = _UNSUPPORTED.search(stderr or "")
    return match.group(1).strip() if match else None


def failure_message(command, rc, stderr, tool_version=None, pg_version=None):
    """One line: the command, pgBackRest's [code]: message, and the fix."""
    unsupported = unsupported_version(stderr)
    if unsupported:
        return ("pgBackRest %s does not support PostgreSQL %s (%s): use a pgBackRest release that supports it, or back this "
                "cluster up with the collection's own pg_basebackup" % (tool_version or "", pg_version or "of this cluster", unsupported))
    code, message = error_line(stderr)
    if code is None:
        lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
        return "pgbackrest %s failed (exit code %s): %s" % (command, rc, lines[-1] if lines else "no error output")
    fix = FIXES.get(code, "see pgBackRest's log in its log-path")
    return "pgbackrest %s failed: [%s]: %s; %s" % (command, code, message, fix)


class PgbackrestError(PgdrError):
    """A pgBackRest command that failed, with its code and stderr's tail in the details."""


class Pgbackrest:
    """Runs pgBackRest commands and keeps the argv lists that ran (no secret is ever on them)."""

    def __init__(self, binary, env=None, run=commands.run, pg_version=None):
        self.binary = binary
        self.env = env
        self.runner = run
        self.commands = []
        self.pg_version = pg_version
        self.version = parse_version(self.run([binary, "version"]).stdout)

    def run(self, argv, check=True, timeout=None):
        self.commands.append(["pgbackrest"] + argv[1:])
        result = self.runner(argv, env=self.env, check=False, timeout=timeout)
        if check and result.returncodes[0] != 0:
            raise self.failure(argv, result)
        return result

    def failure(self, argv, result):
        command = argv[-1]
        return PgbackrestError(
            failure_message(command, result.returncodes[0], result.stderr, getattr(self, "version", None), self.pg_version),
            rc=result.returncodes[0], stderr=result.stderr[-commands.STDERR_TAIL:], cmd=["pgbackrest"] + argv[1:],
        )
