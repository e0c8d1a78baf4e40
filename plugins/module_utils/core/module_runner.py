# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The main() every pgdr.backup module shares: parse arguments, run, turn PgdrError into fail_json."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import HAS_PSYCOPG, PSYCOPG_IMPORT_ERROR
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError


def run_module(argument_spec, run, **relations):
    """``run(module)`` returns the result dict; a PgdrError becomes one clear failure, never a traceback.

    ``relations``: AnsibleModule's mutually_exclusive, required_if, required_one_of, required_together,
    required_by, declared so that ansible-doc shows them and Ansible checks them before ``run``.
    """
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **relations)
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=str(PSYCOPG_IMPORT_ERROR))
    try:
        result = run(module)
    except PgdrError as exc:
        module.fail_json(**exc.fail_json_kwargs())
    module.exit_json(**result)
