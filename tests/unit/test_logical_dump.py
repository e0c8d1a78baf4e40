"""pg_logical_dump's pure logic without a server: database facts for the manifest."""

from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump as logical_dump
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set


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


def test_tool_facts_record_the_argv_as_run_and_every_command():
    runs = [{"database": None, "snapshot": None, "argv": ["pg_dumpall", "--globals-only"]},
            {"database": "a", "snapshot": "00000003-0000001B-1", "argv": ["pg_dump", "--snapshot=00000003-0000001B-1"]},
            {"database": "b", "snapshot": "00000004-0000001C-1", "argv": ["pg_dump", "--snapshot=00000004-0000001C-1"]}]
    tool = dump_set.tool_facts("cluster", "18.1", runs)
    assert tool == {"name": "pg_dump", "version": "18.1", "argv": ["pg_dump", "--snapshot=00000003-0000001B-1"],
                    "commands": [{"database": None, "argv": ["pg_dumpall", "--globals-only"]},
                                 {"database": "a", "argv": ["pg_dump", "--snapshot=00000003-0000001B-1"]},
                                 {"database": "b", "argv": ["pg_dump", "--snapshot=00000004-0000001C-1"]}]}
    assert dump_set.consistency_facts(runs) == {
        "snapshot": None, "snapshots": {"a": "00000003-0000001B-1", "b": "00000004-0000001C-1"}, "isolation": "repeatable read"}


def test_one_database_names_its_snapshot_and_a_table_set_without_schema_file_has_no_argv():
    runs = [{"database": "a", "snapshot": "00000003-0000001B-1", "argv": []}]
    assert dump_set.tool_facts("table", "15.8", runs)["argv"] == []
    assert dump_set.tool_facts("table", "15.8", runs)["name"] == "copy"
    assert dump_set.consistency_facts(runs)["snapshot"] == "00000003-0000001B-1"
