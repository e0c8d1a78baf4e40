"""pg_logical_dump's pure logic without a server: database facts for the manifest."""

from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump as logical_dump


def test_setting_items_split_at_the_first_equals_sign_and_keep_roles_and_order():
    rows = [(None, ["bytea_output=escape", "search_path=\"$user\", public", "app.x=a=b", "app.empty="]),
            ("alice", ["work_mem=64MB"])]
    assert logical_dump.setting_items(rows) == [
        {"role": None, "name": "bytea_output", "value": "escape"},
        {"role": None, "name": "search_path", "value": "\"$user\", public"},
        {"role": None, "name": "app.x", "value": "a=b"},
        {"role": None, "name": "app.empty", "value": ""},
        {"role": "alice", "name": "work_mem", "value": "64MB"},
    ]


def test_setting_items_of_no_rows_or_a_null_setconfig_are_empty():
    assert logical_dump.setting_items([]) == []
    assert logical_dump.setting_items([("bob", None)]) == []
