"""Repositories against the lab: SFTP to backup1 and the SeaweedFS S3 store, one contract for both.

What a backend stored is checked from the outside (a shell on backup1, a separate
boto3 client), not through the repository under test.
"""

import base64
import hashlib
import os
import re
import subprocess
import time
import uuid

import paramiko
import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import TEMP_MARK
from ansible_collections.pgdr.backup.plugins.module_utils.storage.s3 import S3Repository
from ansible_collections.pgdr.backup.plugins.module_utils.storage.sftp import SftpRepository
from ansible_collections.pgdr.backup.plugins.module_utils.wal import pgdr_wal

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
SFTP_BASE = "/var/backups"


def sftp_repository(lab, path, **options):
    options = {"key_file": str(lab.ssh_key), "known_hosts": str(lab.known_hosts), **options}
    return SftpRepository(lab.host("backup1").address, path, **options)


def s3_repository(lab, prefix, **options):
    s3 = lab.s3
    defaults = {"endpoint_url": s3["endpoint"], "region": s3["region"], "access_key": s3["access_key"], "secret_key": s3["secret_key"], "part_size_mb": 5}
    options = {**defaults, **options}
    return S3Repository(options.pop("bucket", s3["bucket"]), prefix=prefix, **options)


class SftpBackend:
    kind = "sftp"

    def __init__(self, lab, tag, client="auto"):
        self.host = lab.host("backup1")
        self.root = "%s/%s" % (SFTP_BASE, tag)
        self.repo = sftp_repository(lab, self.root, client=client)

    def leftovers(self):
        """Unfinished writes still on the server."""
        return self.host.run(["find", self.root, "-name", "*%s*" % TEMP_MARK], check=False).stdout.split()

    def stored_sha256(self, key):
        return self.host.run(["sha256sum", "%s/%s" % (self.root, key)]).stdout.split()[0]

    def cleanup(self):
        self.repo.close()
        self.host.run(["rm", "-rf", self.root])


class S3Backend:
    kind = "s3"

    def __init__(self, lab, tag):
        self.lab = lab
        self.client = lab.s3_client()
        self.bucket = lab.s3["bucket"]
        self.prefix = tag
        self.repo = s3_repository(lab, tag)

    def leftovers(self):
        """Multipart uploads in progress below the prefix."""
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + "/").get("Uploads", [])
        return [(upload["Key"], upload["UploadId"]) for upload in uploads]

    def stored_sha256(self, key):
        body = self.client.get_object(Bucket=self.bucket, Key="%s/%s" % (self.prefix, key))["Body"]
        digest = hashlib.sha256()
        for piece in iter(lambda: body.read(MIB), b""):
            digest.update(piece)
        return digest.hexdigest()

    def cleanup(self):
        self.repo.close()
        for key, upload_id in self.leftovers():
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        with s3_repository(self.lab, "") as root:
            root.delete_tree(self.prefix)
        assert self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + "/").get("KeyCount") == 0
        top = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/").get("CommonPrefixes", [])
        assert top == [], "delete_tree left an empty folder behind: %s" % top


@pytest.fixture(params=["sftp", "sftp-paramiko", "s3"])
def backend(request, lab):
    """sftp: the default transport, which is OpenSSH's client here (asserted after each test); sftp-paramiko: paramiko's own."""
    tag = "pgdr-test-%s" % uuid.uuid4().hex[:10]
    if request.param == "s3":
        made = S3Backend(lab, tag)
    else:
        made = SftpBackend(lab, tag, client="paramiko" if request.param == "sftp-paramiko" else "auto")
    yield made
    if request.param.startswith("sftp"):
        assert made.repo.client == ("paramiko" if request.param == "sftp-paramiko" else "openssh")
    made.cleanup()


def test_streamed_20mb_round_trip(backend):
    repo, key = backend.repo, "c1/b1/base.tar"
    chunks = [os.urandom(MIB) for count in range(20)]
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()
    with repo.open_writer(key) as writer:
        for number, chunk in enumerate(chunks, 1):
            writer.write(chunk)
            if backend.kind == "s3":
                assert len(writer._buf) < repo.part_size, "more than one part buffered"
            if number == 12:
                assert not repo.exists(key), "visible before the writer finished"
        assert writer.tell() == 20 * MIB
    assert repo.exists(key)
    assert repo.size(key) == 20 * MIB
    assert backend.stored_sha256(key) == expected
    digest = hashlib.sha256()
    with repo.open_reader(key) as reader:
        for piece in iter(lambda: reader.read(MIB), b""):
            assert len(piece) <= MIB
            digest.update(piece)
    assert digest.hexdigest() == expected
    assert backend.leftovers() == []

    if backend.kind == "s3":
        head = backend.client.head_object(Bucket=backend.bucket, Key="%s/%s" % (backend.prefix, key))
        assert re.search(r'-4"?$', head["ETag"]), "not a 4-part multipart upload: ETag %s" % head["ETag"]
    else:
        modes = backend.host.run(["stat", "-c", "%a %n", backend.root, backend.root + "/c1", backend.root + "/c1/b1", backend.root + "/" + key]).stdout
        assert [line.split()[0] for line in modes.splitlines()] == ["700", "700", "700", "600"], modes


def test_interrupted_writer_leaves_nothing(backend):
    repo, key = backend.repo, "c1/b1/db.dump"
    with pytest.raises(RuntimeError, match="pg_dump exited 1"):
        with repo.open_writer(key) as writer:
            for chunk in [os.urandom(MIB)] * 7:
                writer.write(chunk)
            # the temporary data really is out there before the failure
            assert len(backend.leftovers()) == 1
            raise RuntimeError("pg_dump exited 1")
    assert not repo.exists(key)
    assert backend.leftovers() == []
    assert repo.list_files("c1") == []


def test_failed_overwrite_keeps_the_previous_object(backend):
    repo, key = backend.repo, "c1/b1/manifest.json"
    repo.put_bytes_atomic(key, b'{"v": 1}')
    with pytest.raises(KeyboardInterrupt):
        with repo.open_writer(key) as writer:
            writer.write(os.urandom(6 * MIB))
            raise KeyboardInterrupt
    assert repo.get_bytes(key) == b'{"v": 1}'
    repo.put_bytes_atomic(key, b'{"v": 2}')
    assert repo.get_bytes(key) == b'{"v": 2}'
    assert backend.leftovers() == []


def test_small_and_empty_objects_and_missing_keys(backend):
    repo = backend.repo
    with repo.open_writer("c1/b1/empty") as writer:
        writer.write(b"")
    assert repo.exists("c1/b1/empty") and repo.size("c1/b1/empty") == 0
    assert repo.get_bytes("c1/b1/empty") == b""
    repo.put_bytes_atomic("c1/b1/manifest.json", b"{}")
    started = time.monotonic()
    assert repo.get_bytes("c1/b1/manifest.json") == b"{}"
    # reading "all" must stop at the object's end, not wait for the server to close the connection (old urllib3)
    assert time.monotonic() - started < 10
    assert not repo.exists("c1/b1/nothing")
    assert not repo.exists("c1/b1"), "a folder is not an object"
    for call in (repo.get_bytes, repo.size):
        with pytest.raises(PgdrError, match="c1/b1/nothing not found in %s" % re.escape(repo.describe())):
            call("c1/b1/nothing")


def test_list_dirs_list_files_delete_tree(backend):
    repo = backend.repo
    keys = ["c1/b1/manifest.json", "c1/b1/data/t1.copy", "c1/b1/data/t2.copy", "c1/b10/manifest.json", "c1/b2/manifest.json", "c2/b1/manifest.json"]
    for key in keys:
        repo.put_bytes_atomic(key, key.encode())
    assert repo.list_dirs("") == ["c1", "c2"]
    assert repo.list_dirs("c1") == ["b1", "b10", "b2"]
    assert repo.list_dirs("c1/b1/") == ["data"]
    assert repo.list_dirs("c9") == []
    assert repo.list_files("c1/b1") == ["c1/b1/data/t1.copy", "c1/b1/data/t2.copy", "c1/b1/manifest.json"]
    assert repo.list_files("") == sorted(keys)
    assert repo.list_files("c9") == []

    repo.delete_tree("c1/b1")
    assert repo.list_dirs("c1") == ["b10", "b2"], "b10 must survive deleting b1"
    assert repo.list_files("c1") == ["c1/b10/manifest.json", "c1/b2/manifest.json"]
    repo.delete_tree("c1/b1")  # gone already: no error
    repo.delete_tree("c2/b1/manifest.json")  # one object
    assert repo.list_files("c2") == []
    repo.delete_tree("c1")
    assert repo.list_files("") == []
    with pytest.raises(PgdrError, match="refusing to delete the whole repository"):
        repo.delete_tree("")


# SFTP: a full disk fails the write, host keys are checked strictly, the key file is the only identity


@pytest.mark.parametrize("writes", [[MIB] * 5, [MIB * 5 // 2]], ids=["fails-while-writing", "fails-in-the-last-replies"])
def test_sftp_full_disk_fails_the_writer_and_leaves_nothing(lab, writes):
    host, root = lab.host("backup1"), "%s/pgdr-test-%s" % (SFTP_BASE, uuid.uuid4().hex[:10])
    host.run(["mkdir", "-m", "700", root])
    host.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", root])  # the host's own mount namespace
    try:
        with sftp_repository(lab, root) as repo:
            with pytest.raises(PgdrError, match=r"(writing|finishing) c1/b1/db.dump in sftp://.* failed: .*free space"):
                with repo.open_writer("c1/b1/db.dump") as writer:
                    for size in writes:
                        writer.write(os.urandom(size))
            assert not repo.exists("c1/b1/db.dump")
            repo.put_bytes_atomic("c1/b1/manifest.json", b"{}")  # the session is still usable
            assert repo.list_files("") == ["c1/b1/manifest.json"]
        assert host.run(["find", root, "-name", "*%s*" % TEMP_MARK]).stdout == ""
    finally:
        host.run(["umount", root])
        host.run(["rm", "-rf", root])


def known_hosts_line(lab, name):
    address = lab.host(name).address
    for line in lab.known_hosts.read_text().splitlines():
        if line.split()[:1] == [address]:
            return line
    raise AssertionError("%s is not in %s" % (address, lab.known_hosts))


def test_sftp_unknown_host_key_is_rejected(lab, tmp_path):
    others = tmp_path / "known_hosts"
    others.write_text("".join(known_hosts_line(lab, name) + "\n" for name in ("primary15", "replica15")))
    before = others.read_bytes()
    with pytest.raises(PgdrError, match=r"host key of 10\.\S+ is not in %s" % re.escape(str(others))) as caught:
        sftp_repository(lab, "/var/backups", known_hosts=str(others)).list_dirs("")
    # the fingerprint to verify is that of backup1's real key, and nothing was added to the file
    blob = base64.b64decode(known_hosts_line(lab, "backup1").split()[2])
    assert caught.value.details["host_key_fingerprint"] == "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert others.read_bytes() == before


def test_sftp_without_known_hosts_rejects_hosts_the_user_does_not_know(lab, tmp_path, monkeypatch):
    if os.path.exists("/etc/ssh/ssh_known_hosts") and lab.host("backup1").address in open("/etc/ssh/ssh_known_hosts").read():
        pytest.skip("the system known_hosts knows backup1")
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.ssh
    with pytest.raises(PgdrError, match="is not in ~/.ssh/known_hosts or /etc/ssh/ssh_known_hosts"):
        sftp_repository(lab, "/var/backups", known_hosts=None).list_dirs("")
    assert not (tmp_path / ".ssh" / "known_hosts").exists()


def test_sftp_changed_host_key_is_rejected(lab, tmp_path):
    wrong = tmp_path / "known_hosts"
    key_of_another_host = known_hosts_line(lab, "primary15").split()[1:]
    wrong.write_text(" ".join([lab.host("backup1").address, *key_of_another_host]) + "\n")
    with pytest.raises(PgdrError, match="does not match the one in"):
        sftp_repository(lab, "/var/backups", known_hosts=str(wrong)).list_dirs("")


def test_sftp_key_not_authorized_is_rejected(lab, tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(PgdrError, match="SSH authentication as root to .* failed"):
        sftp_repository(lab, "/var/backups", key_file=str(key)).list_dirs("")


# S3: failures name the bucket and endpoint, never the secret


def test_s3_wrong_secret_is_a_clear_error_without_the_secret(lab):
    secret = "wrong-%s" % uuid.uuid4().hex
    repo = s3_repository(lab, "pgdr-test-never", secret_key=secret)
    for action in (lambda: repo.put_bytes_atomic("x/manifest.json", b"{}"), lambda: repo.list_files(""), lambda: repo.exists("x")):
        with pytest.raises(PgdrError) as caught:
            action()
        error = caught.value
        assert "check repository.access_key and repository.secret_key" in error.msg or "403" in error.msg, error.msg
        assert lab.s3["bucket"] in error.msg and lab.s3["endpoint"] in error.msg
        assert secret not in error.msg and secret not in repr(error.details)


def test_s3_missing_bucket_and_unreachable_endpoint(lab):
    bucket = "pgdr-missing-%s" % uuid.uuid4().hex[:8]
    repo = s3_repository(lab, "p", bucket=bucket)
    # reads only: SeaweedFS creates a missing bucket on the first upload
    for action in (lambda: repo.list_dirs(""), lambda: repo.exists("c1/b1/manifest.json"), lambda: repo.get_bytes("c1/b1/manifest.json")):
        with pytest.raises(PgdrError, match="create the bucket or fix repository.bucket") as caught:
            action()
        assert bucket in caught.value.msg
    assert bucket not in [entry["Name"] for entry in lab.s3_client().list_buckets()["Buckets"]]
    with pytest.raises(PgdrError, match=r"cannot reach s3://.* \(endpoint http://127\.0\.0\.1:9\)"):
        s3_repository(lab, "p", endpoint_url="http://127.0.0.1:9").list_dirs("")


# SFTP durability: every write is fsynced on the server (fsync@openssh.com) before it is renamed into place


class FsyncSpy:
    """Wraps _request of every SFTP session the repository opens; records each extended request and its status code."""

    def __init__(self, monkeypatch, refuse=False):
        from paramiko.sftp import CMD_EXTENDED, CMD_STATUS, SFTP_OP_UNSUPPORTED

        self.calls = []  # (extended request name, status code)
        real_open_session = SftpRepository._open_session

        def open_session(repo):
            session = real_open_session(repo)
            real_request = session._request

            def request(t, *args):
                name = args[0] if t == CMD_EXTENDED else None
                if refuse and name == "fsync@openssh.com":
                    # what paramiko does with the status of a server without the extension
                    reply = paramiko.Message()
                    reply.add_int(SFTP_OP_UNSUPPORTED)
                    reply.add_string("Operation unsupported")
                    reply.add_string("")
                    self.calls.append((name, SFTP_OP_UNSUPPORTED))
                    session._convert_status(paramiko.Message(reply.asbytes()))
                kind, reply = real_request(t, *args)
                if name is not None and kind == CMD_STATUS:
                    reply.rewind()
                    reply.get_int()  # the request id
                    self.calls.append((name, reply.get_int()))
                return kind, reply

            session._request = request
            return session

        monkeypatch.setattr(SftpRepository, "_open_session", open_session)

    def fsyncs(self):
        return [code for name, code in self.calls if name == "fsync@openssh.com"]


@pytest.mark.parametrize("client", ["openssh", "paramiko"])
def test_sftp_write_is_fsynced_on_the_server(lab, monkeypatch, client):
    from paramiko.sftp import SFTP_OK

    spy = FsyncSpy(monkeypatch)
    backend = SftpBackend(lab, "pgdr-test-%s" % uuid.uuid4().hex[:10], client=client)
    try:
        data = os.urandom(3 * MIB)
        with backend.repo.open_writer("c1/wal/000000010000000000000001") as writer:
            writer.write(data)
            assert spy.fsyncs() == [], "fsync before the last write"
        assert spy.fsyncs() == [SFTP_OK], spy.calls  # sent once and answered OK by the real sftp-server
        assert backend.stored_sha256("c1/wal/000000010000000000000001") == hashlib.sha256(data).hexdigest()
        backend.repo.put_bytes_atomic("c1/manifest.json", b"{}")  # small writes take the same path
        assert spy.fsyncs() == [SFTP_OK, SFTP_OK], spy.calls
    finally:
        backend.cleanup()


@pytest.mark.parametrize("client", ["openssh", "paramiko"])
def test_sftp_server_without_fsync_fails_the_write(lab, monkeypatch, client):
    from paramiko.sftp import SFTP_OP_UNSUPPORTED

    spy = FsyncSpy(monkeypatch, refuse=True)
    backend = SftpBackend(lab, "pgdr-test-%s" % uuid.uuid4().hex[:10], client=client)
    try:
        pattern = r"^writing c1/wal/000000010000000000000001 in sftp://.* failed: the SFTP server did not confirm fsync@openssh.com \(Operation unsupported\)"
        with pytest.raises(PgdrError, match=pattern) as failed:
            with backend.repo.open_writer("c1/wal/000000010000000000000001") as writer:
                writer.write(os.urandom(MIB))
        assert "\n" not in failed.value.msg
        assert spy.fsyncs() == [SFTP_OP_UNSUPPORTED]
        assert not backend.repo.exists("c1/wal/000000010000000000000001")
        assert backend.leftovers() == []
    finally:
        backend.cleanup()


def test_s3_sse_c_on_every_object_and_no_read_without_the_key(lab):
    """Issue 11 item 17: SSE-C reaches single puts and multipart uploads, and every read needs the key (checked from
    the outside with a separate client); SeaweedFS is the store that proves it here."""
    key = os.urandom(32)
    sse = {"write": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}, "read": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}}
    prefix = "h5-sse-%s" % uuid.uuid4().hex[:6]
    repo = s3_repository(lab, prefix, sse=sse)
    client, bucket = lab.s3_client(), lab.s3["bucket"]
    data = os.urandom(6 * MIB)  # two parts of 5 MiB
    try:
        with repo.open_writer("c/s/base.tar") as out:
            out.write(data)
        repo.put_bytes_atomic("c/s/manifest.json", b"{}")
        assert repo.get_bytes("c/s/base.tar") == data and repo.size("c/s/base.tar") == len(data) and repo.exists("c/s/manifest.json")
        for name in ("c/s/base.tar", "c/s/manifest.json"):
            head = client.head_object(Bucket=bucket, Key="%s/%s" % (prefix, name), SSECustomerAlgorithm="AES256", SSECustomerKey=key)
            assert head["SSECustomerAlgorithm"] == "AES256"
            with pytest.raises(Exception, match="customer"):
                client.get_object(Bucket=bucket, Key="%s/%s" % (prefix, name))
        plain = s3_repository(lab, prefix)
        with pytest.raises(PgdrError) as caught:
            plain.get_bytes("c/s/manifest.json")
        assert "give repository.sse with mode sse-c and that key" in caught.value.msg and "\n" not in caught.value.msg
        other = os.urandom(32)
        wrong = s3_repository(lab, prefix, sse={"write": {}, "read": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": other}})
        with pytest.raises(PgdrError) as caught:
            wrong.get_bytes("c/s/manifest.json")
        assert "repository.sse" in caught.value.msg and base64.b64encode(key).decode() not in caught.value.msg
        # SSE-S3: the lab's SeaweedFS (no KMS configured) refuses it; a store that takes it must report it on the object
        sse_s3 = s3_repository(lab, prefix, sse={"write": {"ServerSideEncryption": "AES256"}, "read": {}})
        try:
            sse_s3.put_bytes_atomic("c/s/sse-s3", b"x")
        except PgdrError as exc:
            assert "repository.sse.mode" in exc.msg and "\n" not in exc.msg
        else:
            assert client.head_object(Bucket=bucket, Key="%s/c/s/sse-s3" % prefix).get("ServerSideEncryption") == "AES256"
    finally:
        repo.delete_tree("c")


# SFTP over OpenSSH's client: as strict as paramiko's transport, and paramiko's where ssh cannot be used


def test_sftp_openssh_transport_refuses_unknown_and_changed_host_keys(lab, tmp_path):
    others = tmp_path / "known_hosts"
    others.write_text("".join(known_hosts_line(lab, name) + "\n" for name in ("primary15", "replica15")))
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(" ".join([lab.host("backup1").address, *known_hosts_line(lab, "primary15").split()[1:]]) + "\n")
    for path in (others, wrong):
        before = path.read_bytes()
        with pytest.raises(PgdrError, match="cannot open an SFTP session to .* with OpenSSH's client: ssh: Host key verification failed") as caught:
            sftp_repository(lab, "/var/backups", known_hosts=str(path), client="openssh").list_dirs("")
        assert "\n" not in caught.value.msg
        assert path.read_bytes() == before, "ssh wrote to known_hosts"


def test_sftp_without_ssh_uses_paramiko(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh client
    backend = SftpBackend(lab, "pgdr-test-%s" % uuid.uuid4().hex[:10])
    try:
        backend.repo.put_bytes_atomic("c1/b1/manifest.json", b"{}")
        assert backend.repo.get_bytes("c1/b1/manifest.json") == b"{}"
        assert backend.repo.client == "paramiko"
    finally:
        backend.cleanup()


def test_sftp_key_refused_by_ssh_falls_back_to_paramiko(lab, tmp_path):
    """A key file ssh will not use (readable by others) is one paramiko still reads: the same repository works, as before."""
    key = tmp_path / "id_lab"
    key.write_bytes(lab.ssh_key.read_bytes())
    key.chmod(0o644)
    backend = SftpBackend(lab, "pgdr-test-%s" % uuid.uuid4().hex[:10])
    backend.repo = sftp_repository(lab, backend.root, key_file=str(key))
    try:
        backend.repo.put_bytes_atomic("c1/b1/manifest.json", b"{}")
        assert backend.repo.client == "paramiko"
        with pytest.raises(PgdrError, match="UNPROTECTED PRIVATE KEY|Permission denied|bad permissions"):
            sftp_repository(lab, backend.root, key_file=str(key), client="openssh").list_dirs("")
    finally:
        backend.cleanup()


def test_sftp_server_not_listening_fails_once_naming_host_and_port(lab):
    started = time.monotonic()
    refused = r"^cannot open an SFTP session to 10\.\S+:2: ssh: .*Connection refused; check repository.host, repository.port"
    with pytest.raises(PgdrError, match=refused) as raised:
        sftp_repository(lab, "/var/backups", port=2).list_dirs("")
    assert time.monotonic() - started < 10
    # a server that did not answer: pgdr-wal fetch retries it instead of ending recovery (exit 126 only after its window)
    assert pgdr_wal.is_transient(raised.value)
