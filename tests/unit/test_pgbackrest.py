"""module_utils.pgbackrest: the stanza's section of pgbackrest.conf, argv, failures, and info as catalog entries.

The outputs in tests/unit/fixtures/pgbackrest/ were captured from pgBackRest 2.45 in the lab (see its README.md).
"""

import datetime
import os

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import catalog
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.pgbackrest import commands as cmd
from ansible_collections.pgdr.backup.plugins.module_utils.pgbackrest import config as conf
from ansible_collections.pgdr.backup.plugins.module_utils.pgbackrest import info, stanza
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pgbackrest")


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def params(**given):
    spec = stanza.argument_spec()
    out = {name: option.get("default") for name, option in spec.items()}
    out.update(given)
    if isinstance(out.get("repository"), dict):
        out["repository"] = dict({name: option.get("default") for name, option in spec["repository"]["options"].items()}, **out["repository"])
    return out


def settings(**given):
    return stanza.options_from(params(stanza="main", **given)).settings


# ---------------------------------------------------------------- options and settings


def test_options_are_typed_once():
    options = stanza.options_from(params(stanza="main", pg_data="/pg", repository=dict(path="/r"), retention=dict(full=2)))
    assert options.stanza == stanza.StanzaOptions(binary="pgbackrest", stanza="main", config_file="/etc/pgbackrest/pgbackrest.conf")
    assert options.settings.repository.type == "posix" and options.settings.retention.full == 2 and options.action == "none"


def test_posix_settings():
    desired = conf.desired_settings(settings(pg_data="/pg", pg_port=5433, repository=dict(path="/var/backups/pgbackrest"),
                                             retention=dict(full=2, diff=3), compress_type="zst", archive_async=True,
                                             spool_path="/var/spool/pgbackrest", process_max=2))  # fmt: skip
    assert desired == {"pg1-path": "/pg", "pg1-port": "5433", "compress-type": "zst", "process-max": "2", "archive-async": "y",
                       "spool-path": "/var/spool/pgbackrest", "repo1-retention-full": "2", "repo1-retention-diff": "3",
                       "repo1-type": "posix", "repo1-path": "/var/backups/pgbackrest"}  # fmt: skip


def test_s3_settings_endpoint_port_and_secrets():
    desired = conf.desired_settings(settings(repository=dict(type="s3", path="/pgbr", bucket="b", endpoint="https://s3.example.net:9000",
                                                             region="r", key="AK", secret="SK", verify_tls=False, uri_style="path",
                                                             cipher_pass="CP")))  # fmt: skip
    assert desired["repo1-s3-endpoint"] == "s3.example.net" and desired["repo1-storage-port"] == "9000"
    assert desired["repo1-storage-verify-tls"] == "n" and desired["repo1-cipher-type"] == "aes-256-cbc"
    assert "repo1-s3-key-secret=SK\n" in conf.render("", "main", desired, True)  # in the 0600 file, where archive-push reads it
    shown = conf.masked(desired)
    assert not {"AK", "SK", "CP"} & set(shown.values()) and shown["repo1-s3-key-secret"] == conf.MASK


@pytest.mark.parametrize("given, message", [
    (dict(repository=dict(path="backups")), "repository.path backups is not absolute: pgBackRest needs a path that starts with /"),
    (dict(repository=dict(type="s3", path="/p", bucket="b", endpoint="http://10.0.0.1:8333", region="r", key="k", secret="s")),
     "repository.endpoint http://10.0.0.1:8333 is http: pgBackRest reaches S3 over HTTPS only"),
    (dict(repository=dict(type="s3", path="/p", bucket="b")),
     "an s3 repository needs repository.endpoint, repository.region, repository.key, repository.secret"),
    (dict(repository=dict(path="/p", bucket="b", region="r")), "repository.bucket, repository.region go with type s3; a posix repository has a path only"),
    (dict(archive_async=True), "archive_async needs spool_path"),
    (dict(pg_data="pg"), "pg_data pg is not absolute"),
])  # fmt: skip
def test_bad_settings_fail_in_one_line(given, message):
    with pytest.raises(PgdrError) as raised:
        conf.desired_settings(settings(**given))
    assert raised.value.msg.startswith(message) and "\n" not in raised.value.msg


def test_stanza_names():
    conf.check_stanza_name("main-15.a")
    for bad in ("global", "a:b", "", "a b", "../x"):
        with pytest.raises(PgdrError):
            conf.check_stanza_name(bad)


# ---------------------------------------------------------------- the file

EXISTING = """# managed by hand
[global]
repo1-path=/elsewhere
log-level-file=detail

[main]
# the cluster
pg1-path=/old
repo1-s3-bucket=stale
start-fast=y

[main:archive-push]
process-max=4

[other]
pg1-path=/other
"""


def test_render_changes_only_managed_keys_and_keeps_the_rest():
    desired = {"pg1-path": "/pg", "repo1-type": "posix", "repo1-path": "/r", "repo1-retention-full": "2"}
    text = conf.render(EXISTING, "main", desired, owns_repository=True)
    assert conf.section_settings(text, "main") == {"pg1-path": "/pg", "start-fast": "y", "repo1-type": "posix", "repo1-path": "/r",
                                                   "repo1-retention-full": "2"}  # fmt: skip
    for kept in ("# managed by hand\n[global]\nrepo1-path=/elsewhere\nlog-level-file=detail\n", "# the cluster\n",
                 "[main:archive-push]\nprocess-max=4\n", "[other]\npg1-path=/other\n"):
        assert kept in text
    assert conf.render(text, "main", desired, owns_repository=True) == text  # converged: the same text again
    assert conf.changed_keys(conf.section_settings(EXISTING, "main"), conf.section_settings(text, "main")) == [
        "pg1-path", "repo1-path", "repo1-retention-full", "repo1-s3-bucket", "repo1-type"]


def test_render_into_an_empty_file_and_without_the_repository():
    text = conf.render("", "main", {"pg1-path": "/pg"}, owns_repository=False)
    assert text == "[main]\npg1-path=/pg\n"
    kept = conf.render(EXISTING, "main", {"pg1-path": "/pg"}, owns_repository=False)
    assert conf.section_settings(kept, "main")["repo1-s3-bucket"] == "stale"  # a task without repository leaves repo1-* alone


def test_remove_section_takes_its_command_sections_too():
    text = conf.remove_section(EXISTING, "main")
    assert "[main]" not in text and "[main:archive-push]" not in text and "[other]\npg1-path=/other\n" in text and "[global]" in text
    assert conf.section_settings(text, "main") is None


def test_a_changed_secret_shows_changed_never_its_value():
    before, after = {"repo1-s3-key-secret": "old"}, {"repo1-s3-key-secret": "new"}
    changed = conf.changed_keys(before, after)
    assert changed == ["repo1-s3-key-secret"]
    assert conf.masked(after, changed) == {"repo1-s3-key-secret": "******** (changed)"}


# ---------------------------------------------------------------- argv and failures


def test_argv_has_no_shell_and_no_secret():
    assert cmd.backup_argv("pgbackrest", "/c.conf", "main", "incr") == ["pgbackrest", "--config=/c.conf", "--stanza=main", "--type=incr", "backup"]
    assert cmd.info_argv("pgbackrest", "/c.conf", "main")[-2:] == ["--output=json", "info"]
    assert cmd.expire_argv("pgbackrest", "/c.conf", "main", dry_run=True)[-3:] == ["--dry-run", "--log-level-console=detail", "expire"]
    with pytest.raises(PgdrError, match="backup_type 'weekly' is not one of full, diff, incr"):
        cmd.backup_argv("pgbackrest", "/c.conf", "main", "weekly")


def test_archive_command_names_the_config_only_when_it_is_not_the_default():
    assert cmd.archive_command("pgbackrest", stanza.DEFAULT_CONFIG, "main", stanza.DEFAULT_CONFIG) == "pgbackrest --stanza=main archive-push %p"
    assert cmd.archive_command("pgbackrest", "/x.conf", "main", stanza.DEFAULT_CONFIG) == "pgbackrest --config=/x.conf --stanza=main archive-push %p"


def test_failures_keep_pgbackrests_code_and_message():
    message = cmd.failure_message("stanza-create", 32, fixture("repo_path_relative.stderr"))
    assert message == ("pgbackrest stanza-create failed: [032]: 'relative' must begin with / for 'repo1-path' option; fix the "
                       "option's value in the task or in the configuration file")  # fmt: skip
    assert cmd.failure_message("backup", 3, "no pgBackRest line\nlast words\n") == "pgbackrest backup failed (exit code 3): last words"


def test_an_unsupported_postgresql_version_is_named():
    message = cmd.failure_message("stanza-create", 56, fixture("stanza_create_pg18.stderr"), "2.45", "18")
    assert message.startswith("pgBackRest 2.45 does not support PostgreSQL 18 (unexpected control version = 1800 and catalog version = 202506291)")
    assert "\n" not in message


def test_dry_run_expire():
    labels, wal = cmd.expired_by_dry_run(fixture("expire_dry_run.txt"))
    assert labels == ["20261207-153031F", "20261207-153041F", "20261207-153041F_20261207-153045I"]
    assert wal == [dict(id="15-1", start="000000010000000000000009", stop="00000001000000000000000D")]
    assert cmd.expired_by_dry_run("") == ([], [])


def test_version_line():
    assert cmd.parse_version("pgBackRest 2.45\n") == "2.45"
    with pytest.raises(PgdrError):
        cmd.parse_version("something else")


# ---------------------------------------------------------------- info


def catalog_keys(tmp_path):
    """The keys of an entry backup_catalog lists for the collection's own sets."""
    return set(catalog.describe_set(LocalRepository(str(tmp_path)), "c", "20261121T140051Z", False, datetime.datetime.now(datetime.timezone.utc)))


def test_info_entries_have_the_catalogs_shape(tmp_path):
    item = info.parse(fixture("info_full_incr.json"), "demo")
    full, incr = info.entries(item, "/var/backups/pgbr-exp/")
    assert catalog_keys(tmp_path) <= set(full)
    assert full["backup_id"] == "20261207-151430F" and full["kind"] == "pgbackrest" and full["type"] == "full"
    assert full["status"] == "complete" and full["complete"] is True and full["chain"] is None and full["prior"] is None
    assert full["started_at"] == "2026-12-07T15:14:30Z" and full["finished_at"] == "2026-12-07T15:14:33Z" and full["duration_seconds"] == 3
    assert (full["start_lsn"], full["stop_lsn"], full["timeline"]) == ("0/2000028", "0/3000050", 1)
    assert full["wal"] == dict(first="000000010000000000000002", last="000000010000000000000003", timeline=1, history=None,
                               segment_size=16 * 1024 * 1024)  # fmt: skip
    assert (full["size"], full["repository_size"], full["database_size"]) == (3056854, 3056854, 22992574)
    assert full["location"] == "/var/backups/pgbr-exp/backup/demo/20261207-151430F" and full["tool"] == "pgBackRest 2.45"
    assert full["system_id"] == "7716580766601063531" and full["pg_version"] == "15"
    assert incr["type"] == "incr" and incr["prior"] == full["backup_id"] and incr["chain"] == [full["backup_id"]] and incr["size"] == 431


def test_info_summary_and_missing_stanza():
    item = info.parse(fixture("info_full_incr.json"), "demo")
    assert info.missing(item) is False and info.current_db(item) == dict(version="15", system_id="7716580766601063531")
    summary = info.summary(item, "/r")
    assert summary["status"] == "ok" and summary["archive"] == [dict(id="15-1", min="000000010000000000000002", max="000000010000000000000005")]
    missing = info.parse(fixture("info_missing_stanza.json"), "demo")
    assert info.missing(missing) is True and info.entries(missing, "/r") == [] and info.current_db(missing) is None


def test_info_failures_in_one_line():
    with pytest.raises(PgdrError) as raised:
        info.parse(fixture("info_s3_unreachable.json"), "demo")
    assert raised.value.msg.startswith("pgbackrest info cannot read stanza demo (status 99: other): [ServiceError] TLS error")
    with pytest.raises(PgdrError, match="does not list stanza other"):
        info.parse(fixture("info_full_incr.json"), "other")
    with pytest.raises(PgdrError, match="printed no JSON"):
        info.parse("ERROR: nope", "demo")


def test_the_cluster_on_this_host(tmp_path):
    (tmp_path / "global").mkdir()
    (tmp_path / "PG_VERSION").write_text("15\n")
    (tmp_path / "global" / "pg_control").write_bytes((7716580766601063531).to_bytes(8, "little") + b"\0" * 100)
    assert stanza.cluster_version(str(tmp_path)) == "15" and stanza.cluster_system_id(str(tmp_path)) == "7716580766601063531"
    assert stanza.cluster_version(str(tmp_path / "none")) is None and stanza.cluster_version(None) is None


def test_the_file_is_written_0600(tmp_path):
    path = str(tmp_path / "sub" / "pgbackrest.conf")
    stanza.write_text(path, "[main]\npg1-path=/pg\n")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600" and stanza.read_text(path) == "[main]\npg1-path=/pg\n"
    assert stanza.read_text(str(tmp_path / "missing.conf")) == ""


# ---------------------------------------------------------------- create, upgrade or refuse


class FakeRun:
    """commands.run's stand-in: `version` and `info` answer from the fixtures; records every argv."""

    def __init__(self, info_text):
        self.info_text = info_text
        self.argvs = []

    def __call__(self, argv, env=None, check=True, timeout=None):
        self.argvs.append(argv)
        out = "pgBackRest 2.45\n" if argv[-1] == "version" else self.info_text if argv[-1] == "info" else ""
        return cmd.commands.Result([argv], [0], out, [""], 0.0)


def cluster(tmp_path, version, system_id):
    (tmp_path / "global").mkdir(exist_ok=True)
    (tmp_path / "PG_VERSION").write_text(version + "\n")
    (tmp_path / "global" / "pg_control").write_bytes(int(system_id).to_bytes(8, "little") + b"\0" * 100)
    return stanza.options_from(params(stanza="demo", pg_data=str(tmp_path))).settings


@pytest.mark.parametrize("info_file, version, system_id, step", [
    ("info_missing_stanza.json", "15", "7716580766601063531", "create"),
    ("info_full_incr.json", "15", "7716580766601063531", None),
    ("info_full_incr.json", "16", "7716580766601063532", "upgrade"),  # pg_upgrade gives a new system identifier too
])  # fmt: skip
def test_plan_stanza(tmp_path, info_file, version, system_id, step):
    tool = cmd.Pgbackrest("pgbackrest", run=FakeRun(fixture(info_file)))
    options = stanza.StanzaOptions(binary="pgbackrest", stanza="demo", config_file="/c.conf")
    assert stanza.plan_stanza(tool, options, cluster(tmp_path, version, system_id))[0] == step


def test_another_cluster_of_the_same_version_is_refused(tmp_path):
    tool = cmd.Pgbackrest("pgbackrest", run=FakeRun(fixture("info_full_incr.json")))
    options = stanza.StanzaOptions(binary="pgbackrest", stanza="demo", config_file="/c.conf")
    with pytest.raises(PgdrError) as raised:
        stanza.plan_stanza(tool, options, cluster(tmp_path, "15", "42"))
    assert raised.value.msg == ("stanza demo backs up the cluster with system identifier 7716580766601063531, but %s holds cluster 42 "
                                "(same PostgreSQL 15): a different cluster must not share a stanza; name another stanza" % tmp_path)


def test_check_mode_plans_stanza_create_through_a_private_copy_and_writes_nothing(tmp_path):
    run = FakeRun(fixture("info_missing_stanza.json"))
    config_file = str(tmp_path / "pgbackrest.conf")
    options = stanza.options_from(params(stanza="demo", config_file=config_file, pg_data="/pg", repository=dict(path="/r")))
    result = stanza.run(options, check_mode=True, diff=True, tool=cmd.Pgbackrest("pgbackrest", run=run))
    assert result["changed"] is True and result["stanza_created"] is True and result["would_run"] == [["pgbackrest", "--stanza=demo", "stanza-create"]]
    assert not os.path.exists(config_file) and [argv[-1] for argv in run.argvs] == ["version", "info"]
    assert run.argvs[1][1] != "--config=" + config_file and not os.path.exists(run.argvs[1][1].split("=", 1)[1])  # the copy is gone
