# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup repository option shared by every module that reads or writes backups."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  repository:
    description:
      - Where backup sets are stored. Each set is a folder (or object-store prefix) C(<cluster>/<backup_id>/) below the repository root.
      - Files are written under a temporary name and renamed when complete (V(local), V(sftp)), or uploaded as an S3 multipart upload
        that is aborted on failure (V(s3)), so an interrupted backup never leaves a file that looks complete.
      - The backends run on the managed host, so paths, keys and credentials are those of the managed host.
    type: dict
    required: true
    suboptions:
      type:
        description:
          - V(local) is a folder on the managed host, V(sftp) a folder on an SSH server, V(s3) a bucket on AWS S3 or an S3-compatible store
            such as MinIO, SeaweedFS, Ceph RGW, Alibaba Cloud OSS or Tencent Cloud COS.
        type: str
        required: true
        choices: [local, sftp, s3]
      path:
        description:
          - Absolute path of the repository folder, on the managed host for V(local), on O(repository.host) for V(sftp).
          - Required for V(local) and V(sftp); not used for V(s3).
          - Missing folders are created with mode C(0700); files are created with mode C(0600).
        type: str
      host:
        description:
          - SSH server name or address. Required for V(sftp).
        type: str
      port:
        description:
          - SSH port of O(repository.host).
        type: int
        default: 22
      user:
        description:
          - SSH login user on O(repository.host).
        type: str
        default: root
      key_file:
        description:
          - Private key file (RSA, ECDSA or Ed25519, without passphrase) on the managed host used to log in to O(repository.host);
            when set, only this key is tried.
          - Without it the SSH agent and the default keys in C(~/.ssh) of the user the module runs as are tried.
        type: path
      known_hosts:
        description:
          - known_hosts file on the managed host that holds the host key of O(repository.host); the host key is checked strictly against
            this file only.
          - Without it C(~/.ssh/known_hosts) of the user the module runs as and C(/etc/ssh/ssh_known_hosts) are used.
          - A host whose key is not known is always rejected, never added automatically; the error shows the key fingerprint to verify.
        type: path
      endpoint_url:
        description:
          - URL of the S3 API, for example V(http://minio.example.com:9000) or V(https://oss-eu-central-1.aliyuncs.com).
          - Without it the AWS S3 endpoint of O(repository.region) is used.
        type: str
      region:
        description:
          - Region of the bucket, for example V(eu-central-1). Many S3-compatible stores accept any value.
          - Without it the AWS default configuration (E(AWS_DEFAULT_REGION), C(~/.aws/config)) applies.
        type: str
      bucket:
        description:
          - Bucket name. Required for V(s3). The bucket must exist.
        type: str
      prefix:
        description:
          - Key prefix inside O(repository.bucket) that serves as the repository root, for example V(pgdr/prod).
        type: str
        default: ''
      access_key:
        description:
          - S3 access key ID.
          - Without O(repository.access_key) and O(repository.secret_key) the AWS default credential chain applies
            (E(AWS_ACCESS_KEY_ID) and E(AWS_SECRET_ACCESS_KEY), C(~/.aws/credentials), an instance role).
        type: str
      secret_key:
        description:
          - S3 secret access key. Never logged or returned, and never part of an error message.
        type: str
      addressing_style:
        description:
          - How the bucket appears in request URLs.
          - V(path) (C(https://endpoint/bucket/key)) works with MinIO, SeaweedFS and Ceph RGW.
          - V(virtual) (C(https://bucket.endpoint/key)) is what Alibaba Cloud OSS and Tencent Cloud COS require, and what AWS prefers.
          - V(auto) lets boto3 choose.
        type: str
        choices: [path, virtual, auto]
        default: path
      sse:
        description:
          - S3 server-side encryption of every object written (data files, manifests, markers), for V(s3) only; refused with
            V(local) and V(sftp) (encrypt those with gpg).
          - Applied to objects as they are written; objects already stored keep the encryption they were written with.
          - The store must support the mode; one that does not fails the first upload, naming O(repository.sse.mode).
        type: dict
        suboptions:
          mode:
            description:
              - V(sse-s3) is SSE-S3 (C(AES256), keys managed by the store).
              - V(sse-kms) is SSE-KMS (C(aws:kms)) with O(repository.sse.kms_key_id), or without it the store's default KMS key
                (on AWS the account's C(aws/s3) key).
              - V(sse-c) is SSE-C, AES-256 with a key you keep (O(repository.sse.customer_key) or O(repository.sse.customer_key_file)).
                The store keeps only its hash, and every read and restore needs the same key; an object is lost with its key.
            type: str
            required: true
            choices: [sse-s3, sse-kms, sse-c]
          kms_key_id:
            description: The KMS key id or ARN for V(sse-kms).
            type: str
          customer_key:
            description:
              - The 256-bit SSE-C key in base64 (for example from C(openssl rand -base64 32)). Never logged or returned.
              - Give this or O(repository.sse.customer_key_file), not both.
            type: str
          customer_key_file:
            description:
              - A file on the managed host holding the SSE-C key, as 32 raw bytes or in base64 on one line.
            type: path
      part_size_mb:
        description:
          - Size in MiB of each part of an S3 multipart upload, between 5 and 5120. Smaller files are sent with one request.
          - At most one part is held in memory per file being written; an object can have at most 10000 parts,
            so the default allows files up to 625 GiB.
        type: int
        default: 64
requirements:
  - paramiko on the managed host for O(repository.type=sftp) (Debian package C(python3-paramiko)); the OpenSSH client C(ssh) there too
    makes SFTP reads and writes about twice as fast (Debian package C(openssh-client))
  - boto3 on the managed host for O(repository.type=s3) (Debian package C(python3-boto3))
notes:
  - For O(repository.type=sftp), paramiko speaks SFTP over OpenSSH's client (C(ssh -s sftp), the server's sftp subsystem, no shell needed)
    when C(ssh) is installed on the managed host, with the same strict host-key check against the same known_hosts files, only
    O(repository.key_file) when given, no prompt and no C(ssh_config); where C(ssh) is missing or cannot log in (for example a
    key file with open permissions, which ssh refuses), paramiko's own SSH transport is used, and its error says why a login fails.
  - For O(repository.type=s3), add a bucket lifecycle rule that removes incomplete multipart uploads after a few days, in case an upload
    could not even be aborted (for example when the managed host lost its network).
"""
