# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options that locate the server's data directory and say how the server is started and stopped."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  pg_data:
    description:
      - Absolute path of the cluster's data directory on the managed host, for example V(/var/lib/postgresql/16/main).
    type: path
  service_manager:
    description:
      - How the server is started, stopped and restarted.
      - V(systemd) runs C(systemctl) on O(service_name); V(pg_ctlcluster) uses Debian's wrapper for a cluster whose
        O(pg_data) is C(/var/lib/postgresql/<major>/<name>) with its configuration in C(/etc/postgresql/<major>/<name>);
        V(pg_ctl) runs C(pg_ctl) from the server's binaries as O(os_user).
      - V(auto) picks V(systemd) when systemd runs and O(service_name) is set, else V(pg_ctlcluster) for a Debian cluster, else V(pg_ctl).
    type: str
    choices: [auto, systemd, pg_ctlcluster, pg_ctl]
    default: auto
  service_name:
    description:
      - The systemd unit of the server, for example V(postgresql@16-main) or V(postgresql-16).
    type: str
  server_log:
    description:
      - File that receives the server's output when it is started with V(pg_ctl).
      - Defaults to C(postgresql.log) in the folder that holds O(pg_data).
    type: path
  os_user:
    description:
      - Operating-system user that owns the data directory and runs the server. The module runs C(pg_ctl) as this user
        (through C(runuser) when the module runs as root).
    type: str
    default: postgres
"""
