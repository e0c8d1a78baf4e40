"""Repositories: the local backend in full, the option spec and its documentation, argument checks."""

import base64
import datetime
import hashlib
import io
import os
import stat
import subprocess
import sys

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.doc_fragments.storage import ModuleDocFragment
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import TEMP_MARK
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import (
    RepositoryOptions,
    open_repository,
    storage_argument_spec,
)
from ansible_collections.pgdr.backup.plugins.module_utils.storage.s3 import S3Repository
from ansible_collections.pgdr.backup.plugins.module_utils.storage.sftp import SftpRepository, openssh_argv

COLLECTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".collections")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask, under which only explicit modes give 0600/0700
    yield
    os.umask(old)


@pytest.fixture
def repo(tmp_path, umask_022):
    return LocalRepository(str(tmp_path / "repo" / "pgdr"))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(root):
    return [os.path.join(folder, name) for folder, _dirs, files in os.walk(root) for name in files if TEMP_MARK in name]


def test_streamed_round_trip(repo):
    chunks = [os.urandom(65536 + n) for n in range(10)]
    with repo.open_writer("c1/b1/db.dump") as writer:
        for chunk in chunks:
            writer.write(chunk)
        assert writer.tell() == sum(map(len, chunks))
        assert not repo.exists("c1/b1/db.dump"), "visible before the writer finished"
    expected = b"".join(chunks)
    assert repo.exists("c1/b1/db.dump")
    assert repo.size("c1/b1/db.dump") == len(expected)
    got = []
    with repo.open_reader("c1/b1/db.dump") as reader:
        while piece := reader.read(100000):
            got.append(piece)
    assert b"".join(got) == expected
    assert repo.get_bytes("c1/b1/db.dump") == expected
    assert leftovers(repo.root) == []


def test_files_are_0600_and_created_folders_0700(repo, tmp_path):
    os.chmod(tmp_path, 0o755)
    repo.put_bytes_atomic("c1/b1/manifest.json", b"{}")
    assert mode(os.path.join(repo.root, "c1", "b1", "manifest.json")) == 0o600
    # every folder the repository had to create, the root and its missing parent included
    for folder in (tmp_path / "repo", tmp_path / "repo" / "pgdr", tmp_path / "repo" / "pgdr" / "c1", tmp_path / "repo" / "pgdr" / "c1" / "b1"):
        assert mode(folder) == 0o700, folder
    assert mode(tmp_path) == 0o755  # an existing folder keeps its mode


def test_exception_inside_the_writer_leaves_nothing(repo):
    with pytest.raises(RuntimeError, match="pg_dump died"):
        with repo.open_writer("c1/b1/db.dump") as writer:
            writer.write(b"x" * 100000)
            raise RuntimeError("pg_dump died")
    assert not repo.exists("c1/b1/db.dump")
    assert os.listdir(os.path.join(repo.root, "c1", "b1")) == []
    assert leftovers(repo.root) == []


def test_a_failed_rewrite_keeps_the_previous_object(repo):
    repo.put_bytes_atomic("c1/b1/manifest.json", b"v1")
    with pytest.raises(KeyboardInterrupt):
        with repo.open_writer("c1/b1/manifest.json") as writer:
            writer.write(b"v2, half")
            raise KeyboardInterrupt
    assert repo.get_bytes("c1/b1/manifest.json") == b"v1"
    repo.put_bytes_atomic("c1/b1/manifest.json", b"v2")
    assert repo.get_bytes("c1/b1/manifest.json") == b"v2"
    assert leftovers(repo.root) == []


def test_list_and_delete_tree(repo):
    for key in ("c1/b1/manifest.json", "c1/b1/data/t1.copy", "c1/b10/manifest.json", "c1/b2/manifest.json", "c2/b1/manifest.json"):
        repo.put_bytes_atomic(key, key.encode())
    # an unfinished write of someone else is not an object
    with open(os.path.join(repo.root, "c1", "b2", "db.dump" + TEMP_MARK + "0123"), "wb") as stray:
        stray.write(b"half")
    assert repo.list_dirs("") == ["c1", "c2"]
    assert repo.list_dirs("c1") == ["b1", "b10", "b2"]
    assert repo.list_dirs("c1/b1") == ["data"]
    assert repo.list_dirs("c9") == []
    assert repo.list_files("c1/b1") == ["c1/b1/data/t1.copy", "c1/b1/manifest.json"]
    assert repo.list_files("c1/b2") == ["c1/b2/manifest.json"]
    assert repo.list_files("c1/b1/manifest.json") == []  # nothing below an object
    assert len(repo.list_files("")) == 5
    assert repo.list_files("c9") == []

    repo.delete_tree("c1/b1")
    assert repo.list_dirs("c1") == ["b10", "b2"]  # b10 is not inside b1
    assert repo.get_bytes("c1/b10/manifest.json") == b"c1/b10/manifest.json"
    repo.delete_tree("c1/b1")  # already gone: no error
    repo.delete_tree("c2/b1/manifest.json")  # a single object
    assert repo.list_files("c2") == []
    repo.delete_tree("c1")
    assert repo.list_dirs("") == ["c2"]
    with pytest.raises(PgdrError, match="refusing to delete the whole repository"):
        repo.delete_tree("")


def test_missing_objects(repo):
    assert not repo.exists("c1/b1/manifest.json")
    for call in (repo.get_bytes, repo.size):
        with pytest.raises(PgdrError, match="c1/b1/manifest.json not found in local:"):
            call("c1/b1/manifest.json")
    repo.put_bytes_atomic("c1/b1/manifest.json", b"{}")
    assert not repo.exists("c1/b1"), "a folder is not an object"
    with pytest.raises(PgdrError, match="not found"):
        repo.size("c1/b1")


@pytest.mark.parametrize("key", ["../etc/passwd", "c1/../../x", "/etc/passwd", "c1/./b1", "c1/b1/x" + TEMP_MARK + "1", ""])
def test_keys_cannot_leave_the_root(repo, key):
    with pytest.raises(PgdrError, match="key"):
        with repo.open_writer(key) as writer:
            writer.write(b"x")
    assert not os.path.exists(repo.root) or leftovers(repo.root) == []


def test_keys_are_normalised(repo):
    repo.put_bytes_atomic("c1//b1/manifest.json", b"{}")
    assert repo.list_files("c1/") == ["c1/b1/manifest.json"]


def test_describe_never_shows_secrets():
    assert LocalRepository("/var/backups/pgdr/").describe() == "local:/var/backups/pgdr"
    sftp = SftpRepository("10.0.0.5", "/var/backups/pgdr")
    assert sftp.describe() == "sftp://root@10.0.0.5:22/var/backups/pgdr"
    assert SftpRepository("fd00::5", "/srv/b", port=2222, user="backup").describe() == "sftp://backup@[fd00::5]:2222/srv/b"
    s3 = S3Repository("bkt", prefix="/pgdr/prod/", endpoint_url="http://10.0.0.9:8333", access_key="AKID", secret_key="SeCrEt")
    assert s3.describe() == "s3://bkt/pgdr/prod (endpoint http://10.0.0.9:8333)"
    assert S3Repository("bkt", region="eu-central-1").describe() == "s3://bkt (region eu-central-1)"
    assert "SeCrEt" not in s3.describe() and "AKID" not in s3.describe()


def test_location_of_a_set_is_a_url_a_user_can_follow():
    assert LocalRepository("/var/backups/pgdr/").location("db1/20261121T020000Z") == "/var/backups/pgdr/db1/20261121T020000Z"
    sftp = SftpRepository("backup1", "/var/backups/pgdr", user="pgdr")
    assert sftp.location("db1/20261121T020000Z/") == "sftp://pgdr@backup1:22/var/backups/pgdr/db1/20261121T020000Z"
    s3 = S3Repository("bkt", prefix="/pgdr/prod/", endpoint_url="http://10.0.0.9:8333", access_key="AKID", secret_key="SeCrEt")
    assert s3.location("db1/20261121T020000Z") == "s3://bkt/pgdr/prod/db1/20261121T020000Z"
    assert S3Repository("bkt").location("db1/x") == "s3://bkt/db1/x"
    with pytest.raises(PgdrError):
        s3.location("../elsewhere")


def validated(repository):
    result = ArgumentSpecValidator(storage_argument_spec()).validate({"repository": repository})
    assert not result.error_messages, result.error_messages
    return result


def test_argument_spec_defaults_and_no_log():
    result = validated({"type": "s3", "bucket": "b", "access_key": "AKID", "secret_key": "SeCrEt"})
    repo = result.validated_parameters["repository"]
    assert (repo["port"], repo["user"], repo["prefix"], repo["addressing_style"], repo["part_size_mb"]) == (22, "root", "", "path", 64)
    assert {"AKID", "SeCrEt"} <= result._no_log_values  # what AnsibleModule masks in every output
    rejected = ArgumentSpecValidator(storage_argument_spec()).validate({"repository": {"type": "ftp", "path": "/x"}})
    assert "ftp" in " ".join(rejected.error_messages)


def test_doc_fragment_matches_the_spec():
    doc = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]["repository"]
    spec = storage_argument_spec()["repository"]
    assert (doc["type"], doc["required"]) == (spec["type"], spec["required"])
    assert list(doc["suboptions"]) == list(spec["options"])
    for name, option in spec["options"].items():
        documented = doc["suboptions"][name]
        for field in ("type", "default", "choices"):
            assert documented.get(field) == option.get(field), (name, field)
        assert documented.get("required", False) == option.get("required", False), name
        assert documented["description"], name


@pytest.mark.parametrize(
    "repository, message",
    [
        ({"type": "local"}, "repository.path is required for type local"),
        ({"type": "local", "path": "backups"}, "repository.path must be an absolute path for type local"),
        ({"type": "sftp", "path": "/srv/b"}, "repository.host is required for type sftp"),
        ({"type": "sftp", "host": "h"}, "repository.path is required for type sftp"),
        ({"type": "sftp", "host": "h", "path": "b"}, "repository.path must be an absolute path for type sftp"),
        ({"type": "sftp", "host": "h", "path": "/b", "port": 70000}, "repository.port must be between 1 and 65535"),
        ({"type": "sftp", "host": "h", "path": "/b", "key_file": "/nonexistent/id_ed25519"}, "repository.key_file /nonexistent/id_ed25519 does not exist"),
        ({"type": "sftp", "host": "h", "path": "/b", "known_hosts": "/nonexistent/kh"}, "repository.known_hosts /nonexistent/kh does not exist"),
        ({"type": "s3", "prefix": "p"}, "repository.bucket is required for type s3"),
        ({"type": "s3", "bucket": "b", "part_size_mb": 4}, r"repository.part_size_mb must be between 5 and 5120"),
        ({"type": "s3", "bucket": "b", "addressing_style": "dns"}, "repository.addressing_style must be one of path, virtual, auto"),
        ({"type": "nfs"}, "repository.type must be one of local, sftp, s3"),
    ],
)
def test_argument_errors(repository, message):
    # what Ansible hands over: the spec's defaults applied (its choices are not checked here, so a bad one reaches the backend)
    defaults = {name: option.get("default") for name, option in storage_argument_spec()["repository"]["options"].items()}
    with pytest.raises(PgdrError) as caught:
        open_repository(typed(RepositoryOptions, dict(defaults, **repository)))
    assert message in caught.value.msg


def options(repository):
    return typed(RepositoryOptions, validated(repository).validated_parameters["repository"])


def test_open_repository_builds_each_backend(tmp_path):
    local = open_repository(options({"type": "local", "path": str(tmp_path)}))
    assert isinstance(local, LocalRepository) and local.root == str(tmp_path)
    sftp = open_repository(options({"type": "sftp", "host": "h", "path": "/srv/b", "port": 2222, "user": "bk"}))
    assert isinstance(sftp, SftpRepository) and sftp.describe() == "sftp://bk@h:2222/srv/b"
    s3 = open_repository(options({"type": "s3", "bucket": "b", "prefix": "p/", "part_size_mb": 8, "addressing_style": "virtual"}))
    assert isinstance(s3, S3Repository)
    assert (s3.bucket, s3.prefix, s3.part_size, s3.addressing_style) == ("b", "p", 8 * 1024 * 1024, "virtual")


def test_a_local_repository_loads_neither_paramiko_nor_boto3():
    # pgdr-wal opens one per WAL segment: the backend's library is imported only for its own type
    code = (
        "import sys\n"
        "from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed\n"
        "from ansible_collections.pgdr.backup.plugins.module_utils.storage import repository\n"
        "repository.open_repository(typed(repository.RepositoryOptions, dict(type='local', path='/nonexistent'))).exists('x')\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'paramiko') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=COLLECTIONS), check=False)
    assert out.stdout.strip() == "[]", out.stderr


def test_list_entries_names_sizes_and_times_of_one_folder(repo):
    repo.put_bytes_atomic("wal/000000010000000000000002", b"bb")
    repo.put_bytes_atomic("wal/000000010000000000000001", b"a")
    repo.put_bytes_atomic("wal/sub/000000010000000000000003", b"c")  # in a sub-folder: not listed
    with open(os.path.join(repo.root, "wal", "x" + TEMP_MARK + "0123"), "wb") as stray:
        stray.write(b"half")
    os.symlink("/etc/passwd", os.path.join(repo.root, "wal", "link"))  # not an object of the repository
    os.utime(os.path.join(repo.root, "wal", "000000010000000000000001"), (1_700_000_000, 1_700_000_000))
    entries = repo.list_entries("wal")
    assert [(entry.name, entry.size) for entry in entries] == [("000000010000000000000001", 1), ("000000010000000000000002", 2)]
    assert entries[0].mtime == datetime.datetime.fromtimestamp(1_700_000_000, datetime.timezone.utc)
    assert repo.list_entries("nothing") == []
    assert [entry.name for entry in repo.list_entries("")] == []  # the root holds only a folder


def test_put_if_absent_stores_once_accepts_an_identical_copy_and_refuses_a_different_one(repo, tmp_path):
    source = tmp_path / "seg"
    source.write_bytes(os.urandom(5000))
    assert repo.put_if_absent("wal/000000010000000000000001", str(source)) is True
    assert mode(os.path.join(repo.root, "wal", "000000010000000000000001")) == 0o600
    assert repo.put_if_absent("wal/000000010000000000000001", str(source)) is False
    other = tmp_path / "other"
    other.write_bytes(os.urandom(5000))
    with pytest.raises(PgdrError, match="000000010000000000000001 already exists in local:.* with different content; refusing to overwrite it"):
        repo.put_if_absent("wal/000000010000000000000001", str(other))
    assert repo.get_bytes("wal/000000010000000000000001") == source.read_bytes()
    assert leftovers(repo.root) == []


def test_a_broken_known_hosts_file_is_a_clear_error_before_connecting(tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("192.0.2.1 ssh-ed25519 AAAAnot-base64\n")
    repo = SftpRepository("192.0.2.1", "/srv/backups", known_hosts=str(known_hosts))  # TEST-NET: never reached
    with pytest.raises(PgdrError, match="known_hosts file .* has an invalid line"):
        repo.list_dirs("")


class _RefusingSftp:
    """An SFTP client whose server lacks fsync@openssh.com: paramiko's own status handling turns the answer into IOError."""

    def __init__(self):
        self.requests = []

    def _request(self, t, *args):
        import paramiko
        from paramiko.sftp import SFTP_OP_UNSUPPORTED

        self.requests.append((t,) + args)
        reply = paramiko.Message()
        reply.add_int(SFTP_OP_UNSUPPORTED)
        reply.add_string("Operation unsupported")
        reply.add_string("")
        paramiko.SFTPClient._convert_status(self, paramiko.Message(reply.asbytes()))


class _OpenFile:
    def __init__(self, sftp):
        self.sftp, self.handle = sftp, b"handle-1"


def test_sftp_fsync_refused_by_the_server_is_a_one_line_failure():
    from paramiko.sftp import CMD_EXTENDED

    from ansible_collections.pgdr.backup.plugins.module_utils.storage.sftp import _sftp_fsync

    sftp = _RefusingSftp()
    with pytest.raises(PgdrError) as failed:
        _sftp_fsync(_OpenFile(sftp), "wal/000000010000000000000001 in sftp://root@b:22/r", "wal/000000010000000000000001")
    assert sftp.requests == [(CMD_EXTENDED, "fsync@openssh.com", b"handle-1")]
    assert failed.value.msg == (
        "writing wal/000000010000000000000001 in sftp://root@b:22/r failed: the SFTP server did not confirm fsync@openssh.com "
        "(Operation unsupported), so the copy may not survive a power loss on the server; use a server that supports it "
        "(OpenSSH sftp-server 6.5 or later)"
    )
    assert failed.value.details == {"key": "wal/000000010000000000000001"}


# --- S3 server-side encryption -------------------------------------------------------------------

SSE_KEY = bytes(range(32))
SSE_KEY_B64 = base64.b64encode(SSE_KEY).decode()


def s3_options(sse):
    return options({"type": "s3", "bucket": "b", "endpoint_url": "http://127.0.0.1:1", "access_key": "AKID", "secret_key": "SeCrEt", "sse": sse})


class _Reply:
    status_code = 200
    headers = {}


def recorded_requests(repo):
    """Every S3 request the repository makes, as (operation, headers), answered here: nothing reaches a network."""
    seen = []

    def answer(model, params, **kwargs):
        seen.append((model.name, {k.lower(): v for k, v in params["headers"].items()}))
        parsed = {"UploadId": "u1", "ETag": '"e"', "ContentLength": 3, "Body": io.BytesIO(b"abc")}
        return _Reply(), parsed

    repo.client.meta.events.register("before-call.s3", answer)
    return seen


@pytest.mark.parametrize(
    "sse, written, read",
    [
        ({"mode": "sse-s3"}, {"x-amz-server-side-encryption": "AES256"}, {}),
        ({"mode": "sse-kms"}, {"x-amz-server-side-encryption": "aws:kms"}, {}),
        (
            {"mode": "sse-kms", "kms_key_id": "arn:aws:kms:eu-central-1:1:key/k1"},
            {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:eu-central-1:1:key/k1"},
            {},
        ),
        (
            {"mode": "sse-c", "customer_key": SSE_KEY_B64},
            {"x-amz-server-side-encryption-customer-algorithm": "AES256", "x-amz-server-side-encryption-customer-key": SSE_KEY_B64},
            {"x-amz-server-side-encryption-customer-algorithm": "AES256", "x-amz-server-side-encryption-customer-key": SSE_KEY_B64},
        ),
    ],
)
def test_sse_headers_reach_every_write_and_sse_c_every_read(sse, written, read):
    repo = open_repository(s3_options(sse))
    seen = recorded_requests(repo)
    repo.put_bytes_atomic("c/s/manifest.json", b"{}")  # one request
    with repo.open_writer("c/s/base.tar") as out:  # multipart: create, two parts, complete
        out.write(b"x" * (repo.part_size + 1))
    repo.exists("c/s/base.tar")
    repo.get_bytes("c/s/manifest.json")
    names = [name for name, _headers in seen]
    assert names == ["PutObject", "CreateMultipartUpload", "UploadPart", "UploadPart", "CompleteMultipartUpload", "HeadObject", "GetObject"]
    for name, headers in seen:
        expected = written if name in ("PutObject", "CreateMultipartUpload") else read if name != "CompleteMultipartUpload" else {}
        sse_headers = {k: v for k, v in headers.items() if k.startswith("x-amz-server-side-encryption")}
        sse_headers.pop("x-amz-server-side-encryption-customer-key-md5", None)
        assert sse_headers == expected, name
        if "x-amz-server-side-encryption-customer-key" in headers:  # botocore adds the key's MD5, which the store checks
            assert headers["x-amz-server-side-encryption-customer-key-md5"] == base64.b64encode(hashlib.md5(SSE_KEY).digest()).decode()


def test_without_sse_no_encryption_header_is_sent():
    repo = open_repository(s3_options(None))
    seen = recorded_requests(repo)
    repo.put_bytes_atomic("c/s/manifest.json", b"{}")
    repo.get_bytes("c/s/manifest.json")
    assert [h for _name, headers in seen for h in headers if h.startswith("x-amz-server-side")] == []


def test_sse_c_key_from_a_file_raw_or_base64(tmp_path):
    raw, text = tmp_path / "raw.key", tmp_path / "b64.key"
    raw.write_bytes(SSE_KEY)
    text.write_text(SSE_KEY_B64 + "\n")
    for path in (raw, text):
        repo = open_repository(s3_options({"mode": "sse-c", "customer_key_file": str(path)}))
        assert repo.sse_read["SSECustomerKey"] == SSE_KEY


@pytest.mark.parametrize(
    "repository, message",
    [
        ({"type": "local", "path": "/b", "sse": {"mode": "sse-s3"}}, "repository.sse is server-side encryption of an S3 store, not of type local"),
        ({"type": "sftp", "host": "h", "path": "/b", "sse": {"mode": "sse-c"}}, "not of type sftp"),
        ({"type": "s3", "bucket": "b", "sse": {"mode": "sse-c"}}, "needs exactly one of repository.sse.customer_key (base64) and"),
        ({"type": "s3", "bucket": "b", "sse": {"mode": "sse-c", "customer_key": "c2hvcnQ="}}, "repository.sse.customer_key is not a 256-bit key in base64"),
        ({"type": "s3", "bucket": "b", "sse": {"mode": "sse-c", "customer_key": "not base64!"}}, "is not a 256-bit key in base64"),
        ({"type": "s3", "bucket": "b", "sse": {"mode": "sse-c", "customer_key_file": "/nonexistent/k"}}, "cannot read repository.sse.customer_key_file"),
        ({"type": "s3", "bucket": "b", "sse": {"mode": "sse-s3", "customer_key": SSE_KEY_B64}}, "are for mode sse-c, not sse-s3"),
        ({"type": "s3", "bucket": "b", "sse": {"mode": "sse-s3", "kms_key_id": "k"}}, "kms_key_id is for mode sse-kms, not sse-s3"),
        ({"type": "s3", "bucket": "b", "sse": {"mode": "aes"}}, "repository.sse.mode must be one of sse-s3, sse-kms, sse-c"),
    ],
)
def test_sse_combinations_are_refused_up_front(repository, message):
    defaults = {name: option.get("default") for name, option in storage_argument_spec()["repository"]["options"].items()}
    with pytest.raises(PgdrError) as caught:
        open_repository(typed(RepositoryOptions, dict(defaults, **repository)))
    assert message in caught.value.msg
    assert SSE_KEY_B64 not in caught.value.msg


def test_sse_customer_key_is_no_log():
    result = validated({"type": "s3", "bucket": "b", "sse": {"mode": "sse-c", "customer_key": SSE_KEY_B64}})
    assert SSE_KEY_B64 in result._no_log_values


def test_a_message_never_shows_the_sse_c_key():
    repo = open_repository(s3_options({"mode": "sse-c", "customer_key": SSE_KEY_B64}))
    error = repo._scrub(PgdrError("store said: bad key %s" % SSE_KEY_B64))
    assert SSE_KEY_B64 not in error.msg and "********" in error.msg


def _client_error(code, message="", operation="HeadObject"):
    import botocore.exceptions

    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


def test_s3_errors_about_sse_name_the_option_to_fix():
    plain = open_repository(s3_options(None))
    said = "Requests specifying Server Side Encryption with Customer provided keys must provide the customer key."  # SeaweedFS's words
    msg = plain._error("reading k", _client_error("InvalidArgument", said)).msg
    assert msg.endswith("the object is encrypted with a customer key (SSE-C): give repository.sse with mode sse-c and that key")
    assert plain._error("checking k", _client_error("400")).msg.endswith("give repository.sse with mode sse-c and that key (or check repository.region)")
    keyed = open_repository(s3_options({"mode": "sse-c", "customer_key": SSE_KEY_B64}))
    msg = keyed._error("reading k", _client_error("AccessDenied", "Access Denied.")).msg
    assert "repository.sse gives the customer key the object was written with" in msg and SSE_KEY_B64 not in msg
    sse_s3 = open_repository(s3_options({"mode": "sse-s3"}))
    msg = sse_s3._error("uploading k", _client_error("InternalError", "We encountered an internal error", "PutObject")).msg
    assert msg.endswith("check that the store supports repository.sse.mode (and the KMS key id); drop repository.sse if it does not")


def test_delete_removes_one_object_and_nothing_else(repo):
    for key in ("wal/000000010000000000000001", "wal/000000010000000000000002", "wal/sub/x"):
        repo.put_bytes_atomic(key, b"w")
    repo.delete("wal/000000010000000000000001")
    repo.delete("wal/000000010000000000000001")  # gone already: no error
    assert repo.list_files("wal") == ["wal/000000010000000000000002", "wal/sub/x"]
    with pytest.raises(PgdrError, match="deleting wal/sub"):
        repo.delete("wal/sub")  # a folder is not an object
    with pytest.raises(PgdrError, match="empty repository key"):
        repo.delete("")
    assert repo.delete_many(["wal/000000010000000000000002", "wal/sub/x", "wal/missing"]) == 3
    assert repo.list_files("") == []


def test_s3_delete_many_sends_batches_of_1000_and_delete_one_object():
    repo = open_repository(s3_options(None))
    batches = []

    def answer(model, params, **kwargs):
        if model.name == "DeleteObjects":
            batches.append(params["body"].count(b"<Key>"))
        else:
            batches.append(model.name)
        return _Reply(), {}

    repo.client.meta.events.register("before-call.s3", answer)
    assert repo.delete_many("wal/%024X" % number for number in range(2500)) == 2500
    assert batches == [1000, 1000, 500]
    repo.delete("wal/000000010000000000000001")
    assert batches[-1] == "DeleteObject"
    assert repo.delete_many([]) == 0 and len(batches) == 4


def test_openssh_argv_is_as_strict_as_paramiko():
    argv = openssh_argv("/usr/bin/ssh", "fd00::5", 2222, "pgdr", "/etc/pgdr/id_ed25519", "/etc/pgdr/known_hosts", "/root")
    options = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]
    # only the given known_hosts, checked strictly, never written; no prompt, no ssh_config, only the given key
    for wanted in ("StrictHostKeyChecking=yes", "UpdateHostKeys=no", "BatchMode=yes", "UserKnownHostsFile=/etc/pgdr/known_hosts",
                   "GlobalKnownHostsFile=/dev/null", "IdentitiesOnly=yes", "IdentityFile=/etc/pgdr/id_ed25519", "ForwardAgent=no"):
        assert wanted in options
    assert argv[1:3] == ["-F", "none"]
    assert argv[-4:] == ["-s", "--", "fd00::5", "sftp"], "the sftp subsystem, no shell; the host cannot be taken for an option"
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "pgdr"


def test_openssh_argv_defaults_and_paths_it_cannot_hold():
    argv = openssh_argv("ssh", "backup1", 22, "root", None, None, "/var/lib/postgresql")
    assert "UserKnownHostsFile=/var/lib/postgresql/.ssh/known_hosts" in argv  # the files paramiko loads without known_hosts
    assert "GlobalKnownHostsFile=/etc/ssh/ssh_known_hosts" in argv
    assert not any(arg.startswith(("IdentityFile=", "IdentitiesOnly=")) for arg in argv)  # agent and default keys, as paramiko
    # ssh_config syntax would split or expand these: paramiko's transport is used instead
    for path in ("/etc/pgdr/my keys/id", "/etc/pgdr/%h", '/etc/pgdr/"x'):
        assert openssh_argv("ssh", "backup1", 22, "root", path, None, "/root") is None


def test_sftp_client_choice_is_checked():
    with pytest.raises(ValueError, match="client must be one of auto, openssh, paramiko"):
        SftpRepository("backup1", "/srv/b", client="scp")
