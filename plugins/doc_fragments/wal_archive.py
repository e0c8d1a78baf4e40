# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL archive option shared by wal_archive_config (archive_command) and restore_cluster (restore_command)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  archive:
    description:
      - Where WAL files are archived, and read back during recovery.
      - WAL files are stored flat under the archive root, C(<path>/<walfile>) or C(<bucket>/<prefix>/<walfile>)
        (segments, C(.history), C(.backup) and C(.partial) files), the layout C(pg_receivewal) writes, so a
        streaming archive on a backup host can be read as O(archive.type=sftp) with the same path.
      - For V(local), V(sftp) and V(s3) the collection installs its helper C(pgdr-wal) on the PostgreSQL host as
        C(/usr/local/lib/pgdr/pgdr-wal) (root, 0755) with its settings in C(/etc/pgdr/wal/<name>.json) (mode 0600,
        owned by the server's OS user, because it may hold S3 keys); installing needs root (become).
        C(pgdr-wal push) never replaces an archived file with different content (an identical copy counts as
        success) and, for V(local), fsyncs the file and its folder before it reports success.
        C(pgdr-wal fetch) reads C(pg_receivewal)'s compressed C(<segment>.gz) too, and falls back to C(<segment>.partial)
        (or C(.gz.partial)) when a segment is missing; it exits 1 only for a file the archive does not have, retries a
        store that does not answer for 60 seconds, then exits 126 so that recovery stops with an error instead of
        ending early. The restore_command a restore writes reads 16 segments ahead in the background, 4 at a time,
        into C(/var/spool/pgdr/restore-<cluster>/) (0700, emptied by every restore), and takes a spooled segment with
        a shell C(mv) before it runs C(pgdr-wal), so a long replay pays neither a connection nor a Python start per
        segment.
      - C(pgdr-wal) runs as the server's OS user (usually C(postgres)), so files it needs on this host, such as
        O(archive.key_file) and O(archive.known_hosts), must be readable by that user.
    type: dict
    suboptions:
      type:
        description:
          - V(local) is a folder on the PostgreSQL host or a share mounted there (the folder is created 0700 if missing;
            the helper never creates it, so an unmounted share fails instead of filling the root file system).
          - V(sftp) is a folder on an SSH server, V(s3) a bucket on S3 or an S3-compatible store (see the repository
            options of the same names).
          - V(probackup) runs C(pg_probackup archive-push) / C(archive-get) on the catalog O(archive.backup_path).
          - V(command) uses O(archive.archive_command) and O(archive.restore_command) verbatim.
        type: str
        required: true
        choices: [local, sftp, s3, probackup, command]
      path:
        description:
          - Absolute folder path, on the PostgreSQL host for V(local), on O(archive.host) for V(sftp).
        type: str
      host:
        description: SSH server name or address for V(sftp).
        type: str
      port:
        description: SSH port for V(sftp).
        type: int
        default: 22
      user:
        description: SSH login user for V(sftp).
        type: str
        default: root
      key_file:
        description:
          - Private key (without passphrase) for V(sftp); must be readable by the server's OS user.
        type: path
      known_hosts:
        description:
          - known_hosts file holding the host key of O(archive.host); must be readable by the server's OS user.
            Unknown hosts are always rejected.
        type: path
      endpoint_url:
        description: URL of the S3 API for V(s3), for example V(http://minio.example.com:9000).
        type: str
      region:
        description: Region of the bucket for V(s3).
        type: str
      bucket:
        description: Bucket name for V(s3). The bucket must exist.
        type: str
      prefix:
        description: Key prefix inside the bucket that serves as the archive root, for V(s3).
        type: str
        default: ''
      access_key:
        description: S3 access key ID.
        type: str
      secret_key:
        description:
          - S3 secret access key. Stored only in the helper's 0600 config; never logged or returned.
        type: str
      addressing_style:
        description: How the bucket appears in S3 request URLs (see the repository option of the same name).
        type: str
        choices: [path, virtual, auto]
        default: path
      sse:
        description:
          - S3 server-side encryption of every WAL file pgdr-wal uploads, for V(s3) only (see the repository option of the
            same name). With V(sse-c) every fetch (restore_command) needs the same key.
          - The key (or O(archive.sse.customer_key_file), which must be readable by the server's OS user) is kept in the helper's 0600 config.
        type: dict
        suboptions:
          mode:
            description: V(sse-s3) (C(AES256)), V(sse-kms) (C(aws:kms)) or V(sse-c) (a customer key).
            type: str
            required: true
            choices: [sse-s3, sse-kms, sse-c]
          kms_key_id:
            description: The KMS key id or ARN for V(sse-kms); without it the store's default key.
            type: str
          customer_key:
            description: The 256-bit SSE-C key in base64. Never logged or returned.
            type: str
          customer_key_file:
            description: A file holding the SSE-C key (32 raw bytes, or base64 on one line).
            type: path
      backup_path:
        description: The pg_probackup catalog (C(-B)) for V(probackup).
        type: path
      instance:
        description: The pg_probackup instance name for V(probackup).
        type: str
      binary:
        description: The pg_probackup (or gs_probackup) program for V(probackup).
        type: path
        default: pg_probackup
      archive_command:
        description: The archive_command to use verbatim with V(command) (use C(%p) and C(%f)).
        type: str
      restore_command:
        description: The restore_command to use verbatim with V(command) (use C(%f) and C(%p)).
        type: str
      encryption:
        description:
          - Encryption at rest of the WAL files pgdr-wal archives (V(local), V(sftp), V(s3)), as OpenPGP symmetric AES-256 (C(gpg)).
            C(pgdr-wal push) encrypts each file into a private temporary file (ciphertext only) and stores it under its own name;
            it decrypts without this collection with C(gpg --batch --pinentry-mode loopback --passphrase-file FILE --decrypt).
          - The passphrase is kept only in the helper's config C(/etc/pgdr/wal/<name>.json) (0600, owned by the server's OS user),
            never in C(archive_command), C(restore_command) or C(postgresql.auto.conf); gpg reads it from a 0600 file in a private folder.
          - C(pgdr-wal fetch) (C(restore_command), and its read-ahead) tells an encrypted file from a plain one by its first bytes, so
            an archive encrypted from some segment on, or holding C(pg_receivewal)'s plain files, reads back whole. A file that does
            not decrypt ends recovery with an error (exit code 126) instead of being taken for the end of the archive; a restore
            checks the passphrase on the newest archived file before anything changes.
          - For a restore, give the same O(archive.encryption.passphrase) (O(archive.encryption.method) does not matter there).
        type: dict
        suboptions:
          method:
            description: V(gpg) encrypts what is archived from now on, V(none) does not.
            type: str
            choices: [none, gpg]
            default: none
          passphrase:
            description: The passphrase. Required with V(gpg). Never logged or returned.
            type: str
requirements:
  - paramiko on the PostgreSQL host for O(archive.type=sftp), boto3 for O(archive.type=s3)
"""
