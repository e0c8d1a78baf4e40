# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libpq connection settings shared by every module.

One argument spec (documented by the ``pgdr.backup.connection`` doc fragment),
one way to open a psycopg connection, and one way to hand the same settings to
child processes (pg_dump & co.): a libpq environment plus a 0600 passfile that
is removed afterwards, so the password is never in argv, results or logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import tempfile
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line

try:
    import psycopg

    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError as exc:  # the module reports it with missing_required_lib
    psycopg = None
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = exc

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# option name -> (libpq keyword, PG* environment variable)
_LIBPQ = {
    "login_host": ("host", "PGHOST"),
    "login_port": ("port", "PGPORT"),
    "login_user": ("user", "PGUSER"),
    "login_db": ("dbname", "PGDATABASE"),
    "ssl_mode": ("sslmode", "PGSSLMODE"),
    "ssl_rootcert": ("sslrootcert", "PGSSLROOTCERT"),
    "ssl_cert": ("sslcert", "PGSSLCERT"),
    "ssl_key": ("sslkey", "PGSSLKEY"),
    "connect_timeout": ("connect_timeout", "PGCONNECT_TIMEOUT"),
}


def connection_argument_spec():
    """The connection options every module accepts."""
    # imported here, not at the top: pgdr-backup imports this file on hosts without Ansible and never needs the spec
    from ansible.module_utils.basic import env_fallback

    return dict(
        login_host=dict(type="str", fallback=(env_fallback, ["PGHOST"])),
        login_port=dict(type="int", fallback=(env_fallback, ["PGPORT"])),
        login_user=dict(type="str", fallback=(env_fallback, ["PGUSER"])),
        login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
        login_db=dict(type="str", fallback=(env_fallback, ["PGDATABASE"])),
        ssl_mode=dict(type="str", choices=SSL_MODES, fallback=(env_fallback, ["PGSSLMODE"])),
        ssl_rootcert=dict(type="path", fallback=(env_fallback, ["PGSSLROOTCERT"])),
        ssl_cert=dict(type="path", fallback=(env_fallback, ["PGSSLCERT"])),
        ssl_key=dict(type="path", fallback=(env_fallback, ["PGSSLKEY"])),
        connect_timeout=dict(type="int", default=10, fallback=(env_fallback, ["PGCONNECT_TIMEOUT"])),
    )


@dataclasses.dataclass(frozen=True)
class ConnectionOptions:
    """The connection options (connection_argument_spec) as the module received them."""

    login_host: Optional[str]
    login_port: Optional[int]
    login_user: Optional[str]
    login_password: Optional[str]
    login_db: Optional[str]
    ssl_mode: Optional[str]
    ssl_rootcert: Optional[str]
    ssl_cert: Optional[str]
    ssl_key: Optional[str]
    connect_timeout: Optional[int]


class ConnectionParams:
    """The libpq settings of one module run; the password is kept apart."""

    def __init__(self, options=None):
        """``options``: a ConnectionOptions, or None for no settings at all (see with_user)."""
        self.password = (options.login_password if options else None) or None
        self.settings = {}
        for option, (keyword, _env) in _LIBPQ.items():
            value = getattr(options, option) if options else None
            if value not in (None, ""):
                self.settings[keyword] = str(value)
        self.settings.setdefault("dbname", "postgres")
        # Without login_host libpq picks its compiled-in socket folder, which differs between builds
        # (Debian: /var/run/postgresql, upstream: /tmp); child tools go where psycopg went.
        self.reached_host = None

    @property
    def dbname(self):
        return self.settings["dbname"]

    def describe(self, dbname=None):
        """Where we connect, for messages: never includes the password."""
        host = self.settings.get("host", "local socket")
        port = self.settings.get("port", "5432")
        user = self.settings.get("user", "(OS user)")
        return "%s@%s:%s/%s" % (user, host, port, dbname or self.dbname)

    def with_user(self, user, password):
        """The same server and TLS settings, logged in as another role."""
        other = ConnectionParams()
        other.settings = dict(self.settings, user=user)
        other.password = password
        other.reached_host = self.reached_host
        return other

    def connect(self, dbname=None, autocommit=False):
        """A psycopg connection; failures become one clear PgdrError."""
        kwargs = dict(self.settings, application_name="pgdr.backup")
        if dbname:
            kwargs["dbname"] = dbname
        if self.password:
            kwargs["password"] = self.password
        try:
            conn = psycopg.connect(autocommit=autocommit, **kwargs)
        except psycopg.OperationalError as exc:
            raise PgdrError(
                "cannot connect to %s: %s; check login_host/login_port/login_user, the password and pg_hba.conf"
                % (self.describe(dbname), first_line(exc))
            ) from None
        if "host" not in self.settings and self.reached_host is None:
            self.reached_host = conn.info.host
        return conn

    @contextlib.contextmanager
    def child_env(self, base_env=None):
        """Environment for libpq child processes, with a temporary 0600 passfile.

        Inherits the current environment (so PGSSL* and the like set by the
        user still reach the child), overrides it with the module's settings,
        and never puts the password itself in the environment.
        """
        env = dict(os.environ if base_env is None else base_env)
        env.pop("PGPASSWORD", None)
        for keyword, value in self.settings.items():
            env[_env_name(keyword)] = value
        if "host" not in self.settings and self.reached_host:
            env["PGHOST"] = self.reached_host
        if not self.password:
            yield env
            return
        fd, path = tempfile.mkstemp(prefix="pgdr-pass-")
        try:
            with os.fdopen(fd, "w") as handle:
                os.chmod(path, 0o600)
                handle.write("*:*:*:*:%s\n" % passfile_escape(self.password))
            env["PGPASSFILE"] = path
            yield env
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _env_name(keyword):
    for option_keyword, env_name in _LIBPQ.values():
        if option_keyword == keyword:
            return env_name
    raise KeyError(keyword)


def passfile_escape(value):
    """Escape a .pgpass field: backslash and colon are special."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def default_cluster_name(params):
    """The name a backup's sets are filed under when ``cluster`` is not given: the server's host, or this host's."""
    host = params.settings.get("host")
    return host if host and not host.startswith("/") else socket.gethostname()
