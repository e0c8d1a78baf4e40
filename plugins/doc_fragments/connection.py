# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by every pgdr.backup module."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or address of the server, or a Unix socket folder such as V(/run/postgresql).
      - Without it libpq uses the default socket, which, with O(ignore:become_user=postgres), means peer authentication.
      - Falls back to E(PGHOST).
    type: str
  login_port:
    description:
      - Server port. Falls back to E(PGPORT); libpq's default is 5432.
    type: int
  login_user:
    description:
      - Role to log in as. Falls back to E(PGUSER); libpq's default is the operating-system user.
    type: str
  login_password:
    description:
      - Password of O(login_user). Falls back to E(PGPASSWORD).
      - Never logged or returned. Child processes such as C(pg_dump) receive it through a temporary 0600
        passfile that is removed afterwards, never on their command line or in their environment.
    type: str
  login_db:
    description:
      - Database to connect to first. Falls back to E(PGDATABASE); the default is V(postgres).
    type: str
  ssl_mode:
    description:
      - libpq C(sslmode). Falls back to E(PGSSLMODE).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ssl_rootcert:
    description:
      - File of certificate authorities that sign the server certificate. Falls back to E(PGSSLROOTCERT).
    type: path
  ssl_cert:
    description:
      - Client certificate file. Falls back to E(PGSSLCERT).
    type: path
  ssl_key:
    description:
      - Client private key file. Falls back to E(PGSSLKEY).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for a connection. Falls back to E(PGCONNECT_TIMEOUT).
    type: int
    default: 10
requirements:
  - psycopg >= 3.1 (C(psycopg[binary]) or a system libpq) on the managed host
notes:
  - The same settings reach every child process (C(pg_dump), C(pg_basebackup), ...) as a libpq environment,
    together with any other C(PG*) variable set with the O(ignore:environment) keyword.
"""
