"""Planning grants is pure: catalog state in, statements out."""

from ansible_collections.pgdr.backup.plugins.module_utils.access import grants
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed


def params(**overrides):
    base = dict(name="exporter", state="present", profile=[], roles=[], admin_option=False, replication=None,
                bypassrls=None, object_privileges=False, use_predefined_roles=True, default_privileges=True,
                default_privileges_for=None, functions=[], schemas=None)
    base.update(overrides)
    return typed(grants.GrantOptions, base)


def cluster(roles=None, replication=False, bypassrls=False):
    return {"roles": roles or {}, "replication": replication, "bypassrls": bypassrls, "superuser": False}


def schema_state(usage=False, tables=(0, 2), sequences=(0, 1), adp=(), owner="app", object_owners=("app",)):
    return {
        "owner": owner, "database_owner": "dbowner", "usage": usage,
        "tables": {"granted": tables[0], "total": tables[1]},
        "sequences": {"granted": sequences[0], "total": sequences[1]},
        "default_privileges": set(adp), "object_owners": list(object_owners),
    }


def texts(actions):
    return [a.text() for a in actions]


def test_logical_profile_uses_pg_read_all_data():
    request = grants.build_request(params(profile=["logical"]), 15)
    assert texts(grants.plan_cluster(request, cluster())) == ['GRANT "pg_read_all_data" TO "exporter"']


def test_logical_without_predefined_roles_means_object_privileges():
    request = grants.build_request(params(profile=["logical"], use_predefined_roles=False), 15)
    assert request.roles == {} and request.object_privileges


def test_membership_already_there_plans_nothing():
    request = grants.build_request(params(roles=["pg_monitor"]), 16)
    assert grants.plan_cluster(request, cluster({"pg_monitor": {"admin_option": False}})) == []


def test_admin_option_is_added_and_removed():
    want_admin = grants.build_request(params(roles=["r"], admin_option=True), 16)
    assert texts(grants.plan_cluster(want_admin, cluster({"r": {"admin_option": False}}))) == [
        'GRANT "r" TO "exporter" WITH ADMIN OPTION']
    no_admin = grants.build_request(params(roles=["r"]), 16)
    assert texts(grants.plan_cluster(no_admin, cluster({"r": {"admin_option": True}}))) == [
        'REVOKE ADMIN OPTION FOR "r" FROM "exporter"']


def test_absent_revokes_only_what_is_there():
    request = grants.build_request(params(state="absent", roles=["a", "b"]), 15)
    assert texts(grants.plan_cluster(request, cluster({"b": {"admin_option": False}}))) == ['REVOKE "b" FROM "exporter"']


def test_physical_profile_by_version():
    on15 = grants.build_request(params(profile=["physical"]), 15)
    on14 = grants.build_request(params(profile=["physical"]), 14)
    assert "pg_catalog.pg_backup_start(text, boolean)" in on15.functions
    assert "pg_catalog.pg_start_backup(text, boolean, boolean)" in on14.functions
    assert "pg_checkpoint" in on15.roles and "pg_checkpoint" not in on14.roles
    assert on15.attributes == {"replication": True}
    assert texts(grants.plan_cluster(on15, cluster())) == [
        'GRANT "pg_checkpoint" TO "exporter"', 'ALTER ROLE "exporter" WITH REPLICATION']


def test_probackup_profile_has_the_documented_functions():
    request = grants.build_request(params(profile=["probackup"]), 18)
    for signature in ("pg_catalog.txid_snapshot_xmax(txid_snapshot)", "pg_catalog.pg_last_wal_replay_lsn()",
                      "pg_catalog.set_config(text, text, boolean)", "pg_catalog.pg_backup_stop(boolean)"):
        assert signature in request.functions


def test_explicit_replication_false_beats_the_profile():
    request = grants.build_request(params(profile=["physical"], replication=False), 15)
    assert texts(grants.plan_cluster(request, cluster(replication=True))) == [
        'GRANT "pg_checkpoint" TO "exporter"', 'ALTER ROLE "exporter" WITH NOREPLICATION']


def test_absent_with_attribute_removes_it():
    request = grants.build_request(params(state="absent", replication=True), 15)
    assert texts(grants.plan_cluster(request, cluster(replication=True))) == ['ALTER ROLE "exporter" WITH NOREPLICATION']
    assert grants.plan_cluster(request, cluster(replication=False)) == []


def test_object_privileges_for_a_fresh_schema():
    request = grants.build_request(params(object_privileges=True), 15)
    state = {"schemas": {"Sales Q1": schema_state()}, "functions": {}}
    assert texts(grants.plan_database(request, "db", state)) == [
        'GRANT USAGE ON SCHEMA "Sales Q1" TO "exporter"',
        'GRANT SELECT ON ALL TABLES IN SCHEMA "Sales Q1" TO "exporter"',
        'GRANT SELECT ON ALL SEQUENCES IN SCHEMA "Sales Q1" TO "exporter"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "app" IN SCHEMA "Sales Q1" GRANT SELECT ON SEQUENCES TO "exporter"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "app" IN SCHEMA "Sales Q1" GRANT SELECT ON TABLES TO "exporter"',
    ]


def test_object_privileges_complete_plans_nothing():
    request = grants.build_request(params(object_privileges=True), 15)
    done = schema_state(usage=True, tables=(2, 2), sequences=(1, 1), adp={("app", "tables"), ("app", "sequences")})
    assert grants.plan_database(request, "db", {"schemas": {"s": done}, "functions": {}}) == []


def test_one_new_table_regrants_the_schema():
    request = grants.build_request(params(object_privileges=True, default_privileges=False), 15)
    state = {"schemas": {"s": schema_state(usage=True, tables=(2, 3), sequences=(1, 1))}, "functions": {}}
    assert texts(grants.plan_database(request, "db", state)) == ['GRANT SELECT ON ALL TABLES IN SCHEMA "s" TO "exporter"']


def test_pg_database_owner_is_replaced_by_the_database_owner():
    info = schema_state(owner="pg_database_owner", object_owners=("exporter", "app"))
    assert grants.default_privilege_owners(info, "exporter") == ["app", "dbowner"]


def test_hostile_names_stay_identifiers():
    request = grants.build_request(params(name='ex"; DROP ROLE postgres; --', object_privileges=True,
                                          default_privileges=False), 15)
    state = {"schemas": {"ü; x": schema_state(sequences=(0, 0))}, "functions": {}}
    assert texts(grants.plan_database(request, "db", state)) == [
        'GRANT USAGE ON SCHEMA "ü; x" TO "ex""; DROP ROLE postgres; --"',
        'GRANT SELECT ON ALL TABLES IN SCHEMA "ü; x" TO "ex""; DROP ROLE postgres; --"',
    ]


def test_absent_revokes_schema_objects_and_default_privileges():
    request = grants.build_request(params(state="absent", object_privileges=True), 15)
    state = {"schemas": {"s": schema_state(usage=True, tables=(1, 2), sequences=(0, 1), adp={("app", "tables")})},
             "functions": {}}
    assert texts(grants.plan_database(request, "db", state)) == [
        'REVOKE USAGE ON SCHEMA "s" FROM "exporter"',
        'REVOKE SELECT ON ALL TABLES IN SCHEMA "s" FROM "exporter"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "app" IN SCHEMA "s" REVOKE SELECT ON TABLES FROM "exporter"',
    ]


def test_functions_granted_and_revoked_by_canonical_name():
    request = grants.build_request(params(functions=["pg_catalog.pg_switch_wal()"]), 15)
    state = {"schemas": {}, "functions": {"pg_catalog.pg_switch_wal()": {"canonical": "pg_switch_wal()", "granted": False}}}
    assert texts(grants.plan_database(request, "db", state)) == ['GRANT EXECUTE ON FUNCTION pg_switch_wal() TO "exporter"']
    state["functions"]["pg_catalog.pg_switch_wal()"]["granted"] = True
    assert grants.plan_database(request, "db", state) == []
    absent = grants.build_request(params(state="absent", functions=["pg_catalog.pg_switch_wal()"]), 15)
    assert texts(grants.plan_database(absent, "db", state)) == ['REVOKE EXECUTE ON FUNCTION pg_switch_wal() FROM "exporter"']


def test_simulate_gives_check_mode_its_after_picture():
    request = grants.build_request(params(profile=["logical"], object_privileges=True, default_privileges=False), 15)
    state = {"schemas": {"s": schema_state(sequences=(0, 0))}, "functions": {}}
    before = grants.summarize(cluster(), {"db": state})
    actions = grants.plan_cluster(request, cluster()) + grants.plan_database(request, "db", state)
    after = grants.simulate(before, actions)
    assert after["roles"] == {"pg_read_all_data": {"admin_option": False}}
    assert after["databases"]["db"]["schemas"]["s"]["usage"] is True
    assert after["databases"]["db"]["schemas"]["s"]["tables"] == "2/2"
    assert before["databases"]["db"]["schemas"]["s"]["tables"] == "0/2"


def test_fix_statements_quote_names():
    assert grants.fix_statement("table", "My Schema", 'we"ird', "u") == 'GRANT SELECT ON TABLE "My Schema"."we""ird" TO "u"'
    assert grants.fix_statement("sequence", "s", "q", "u") == 'GRANT SELECT ON SEQUENCE "s"."q" TO "u"'
    assert grants.fix_statement("schema", "s", None, "u") == 'GRANT USAGE ON SCHEMA "s" TO "u"'
    assert grants.fix_statement("row security", "s", "t", "u") == 'ALTER ROLE "u" BYPASSRLS'


def test_large_object_fix_lists_the_oids_or_loops_over_every_large_object():
    assert grants.large_object_fix([16401, 16402], 'Exp "q" %s') == 'GRANT SELECT ON LARGE OBJECT 16401, 16402 TO "Exp ""q"" %s"'
    loop = grants.large_object_fix(None, "ex'p%")
    # a DO block as one string literal, whose format() string quotes the role (and doubles its % for format)
    assert loop == ("DO 'DECLARE o oid; BEGIN FOR o IN SELECT l.oid FROM pg_catalog.pg_largeobject_metadata AS l LOOP "
                    "EXECUTE pg_catalog.format(''GRANT SELECT ON LARGE OBJECT %s TO \"ex''''p%%\"'', o); END LOOP; END'")


def test_the_large_object_check_holds_no_role_name_and_knows_lo_compat_privileges():
    where = grants.PREFLIGHT_LARGE_OBJECTS_WHERE
    assert "lo_compat_privileges" in where and where.count("{user}") == 2 and "%" not in where
    assert "a.grantee = 0" in where  # a grant to PUBLIC makes it readable
