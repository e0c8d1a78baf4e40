"""core.cli_options: pg_dump's arguments read as its getopt_long reads them, and what pg_logical_dump refuses."""

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core import cli_options
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump as logical_dump


def read(*words):
    return [(i.kind, i.written, i.name, i.value) for i in cli_options.parse(cli_options.PG_DUMP, list(words))]


def test_short_options_cluster_and_take_the_rest_of_the_word_or_the_next_word():
    assert read("-Fp") == [("option", "-F", "format", "p")]
    assert read("-vFp") == [("option", "-v", "verbose", None), ("option", "-F", "format", "p")]
    assert read("-j4", "-Z9") == [("option", "-j", "jobs", "4"), ("option", "-Z", "compress", "9")]
    assert read("-fFILE") == [("option", "-f", "file", "FILE")]
    assert read("-f", "out.dump") == [("option", "-f", "file", "out.dump")]
    assert read("-vx") == [("option", "-v", "verbose", None), ("option", "-x", "no-privileges", None)]
    assert read("-T", "-Fp") == [("option", "-T", "exclude-table", "-Fp")]  # "-Fp" is -T's pattern, not an option


def test_long_options_with_equals_or_next_word_and_unambiguous_prefixes():
    assert read("--format=plain") == [("option", "--format", "format", "plain")]
    assert read("--form=plain") == [("option", "--form", "format", "plain")]
    assert read("--form", "plain") == [("option", "--form", "format", "plain")]
    assert read("--exclude-table-data", "--file=x") == [("option", "--exclude-table-data", "exclude-table-data", "--file=x")]
    assert read("--no-comm") == [("option", "--no-comm", "no-comments", None)]
    assert read("--schema=x") == [("option", "--schema", "schema", "x")]  # exact beats schema-only
    assert read("--sna=1") == [("option", "--sna", "snapshot", "1")]


def test_ambiguous_unknown_and_operands():
    (item,) = cli_options.parse(cli_options.PG_DUMP, ["--f=plain"])
    assert item.kind == "ambiguous" and set(item.candidates) == {"file", "filter", "format"}
    assert read("--frobnicate") == [("unknown", "--frobnicate", None, None)]
    assert read("-q") == [("unknown", "-q", None, None)]
    assert read("sales") == [("operand", "sales", None, None)]
    assert read("-", "x") == [("operand", "-", None, None), ("operand", "x", None, None)]
    assert read("--", "-Fp") == [("operand", "-Fp", None, None)]  # after "--" nothing is an option


@pytest.mark.parametrize("args,written,hint", [
    (["-Fp"], "-F", "format"),
    (["-vFp"], "-F", "format"),
    (["--form=plain"], "--form", "format"),
    (["--format", "plain"], "--format", "format"),
    (["-j4"], "-j", "jobs"),
    (["-Z9"], "-Z", "compression"),
    (["--compress=zstd:3"], "--compress", "compression"),
    (["-fFILE"], "-f", "into the repository"),
    (["--file=/tmp/elsewhere.dump"], "--file", "into the repository"),
    (["--snap=0000-1"], "--snap", "snapshot"),
    (["-dpostgresql://u@h/db"], "-d", "database"),
    (["-h", "elsewhere"], "-h", "login_host"),
    (["-p5433"], "-p", "login_port"),
    (["-Ubob"], "-U", "login_user"),
    (["-W"], "-W", "login_password"),
    (["-npublic"], "-n", "schemas"),
    (["--exclude-sch=x"], "--exclude-sch", "exclude_schemas"),
    (["-t", "x"], "-t", "tables"),
    (["-Tx"], "-T", "exclude_tables"),
    (["-a"], "-a", "data_only"),
    (["--schema-o"], "--schema-o", "schema_only"),
    (["-C"], "-C", "create"),
    (["-vc"], "-c", "clean"),
    (["--if-exists"], "--if-exists", "if_exists"),
    (["-O"], "-O", "no_owner"),
    (["--no-acl"], "--no-acl", "no_privileges"),
    (["--role=reader"], "--role", "session_role"),
    (["--help"], "--help", "prints help"),
])
def test_owned_options_are_refused_as_written_with_the_module_option_to_use(args, written, hint):
    with pytest.raises(PgdrError) as failure:
        logical_dump.check_extra_args(["--no-comments"] + args)
    msg = failure.value.msg
    assert msg.startswith("extra_args may not contain %s (extra_args item 2, pg_dump --" % written), msg
    assert hint in msg and "\n" not in msg


def test_a_password_in_an_attached_value_is_never_repeated():
    with pytest.raises(PgdrError) as failure:
        logical_dump.check_extra_args(["-dpostgresql://u:s3cret@h/db"])
    assert "s3cret" not in failure.value.msg


def test_ambiguous_prefix_of_an_owned_option_and_operands_are_refused():
    with pytest.raises(PgdrError, match=r"may not contain --f \(extra_args item 1\): pg_dump could read it as --file, --filter, --format"):
        logical_dump.check_extra_args(["--f=plain"])
    with pytest.raises(PgdrError, match="^extra_args item 2 is not an option: pg_dump would take it as the database name; use the module option database"):
        logical_dump.check_extra_args(["--no-comments", "postgresql://u:s3cret@h/otherdb"])
    with pytest.raises(PgdrError, match="^extra_args item 2 is not an option"):
        logical_dump.check_extra_args(["--", "-Fp"])


@pytest.mark.parametrize("args", [
    [], ["--no-comments"], ["--no-blobs", "-v"], ["--exclude-table-data", "-Fp"], ["--exclude-table-data=public.log"],
    ["--lock-wait-timeout=5s"], ["--no-s"],  # ambiguous among options the module does not own: pg_dump says so itself
    ["--inserts", "--rows-per-insert", "100"], ["-E", "UTF8"], ["--no-sync"],
])
def test_options_the_module_does_not_own_pass(args):
    logical_dump.check_extra_args(args)
