"""The pgbench source database the benchmarks dump: created once per scale, then reused."""

import time

DATABASE = "pgdr_bench"
MARKER = "pgdr bench: pgbench scale %d, complete"


def database_scale(host):
    """The scale of a complete bench database on ``host``, or None (absent or left half-made)."""
    comment = host.psql(
        "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database WHERE datname = '%s'" % DATABASE
    ).strip()
    if not comment.startswith("pgdr bench: pgbench scale ") or not comment.endswith(", complete"):
        return None
    scale = int(comment.split("scale ", 1)[1].split(",", 1)[0])
    branches = host.psql("SELECT count(*) FROM pgbench_branches", db=DATABASE).strip()
    return scale if branches == str(scale) else None


def _exists(host):
    return host.psql("SELECT count(*) FROM pg_catalog.pg_database WHERE datname = '%s'" % DATABASE).strip() == "1"


def open_(host):
    """Let the bench connect again (see park)."""
    if _exists(host):
        host.psql('ALTER DATABASE "%s" ALLOW_CONNECTIONS true' % DATABASE)


def park(host):
    """Between runs the database refuses connections, so cluster-wide dumps and drills on the lab host skip it.

    pg_logical_dump mode=cluster and pg_dumpall leave out databases that do not allow connections; without
    this, every cluster-wide test on the bench host would also dump (and fingerprint) the bench's gigabyte.
    """
    if _exists(host):
        host.psql('ALTER DATABASE "%s" ALLOW_CONNECTIONS false' % DATABASE)


def ensure(host, scale, log):
    """Make sure ``host`` has the pgbench database at ``scale``; returns seconds spent creating it (0 if reused)."""
    open_(host)
    if database_scale(host) == scale:
        log("reusing %s (pgbench scale %d) on %s" % (DATABASE, scale, host.name))
        return 0.0
    log("creating %s (pgbench scale %d) on %s ..." % (DATABASE, scale, host.name))
    started = time.monotonic()
    host.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % DATABASE)
    host.psql('CREATE DATABASE "%s"' % DATABASE)
    host.run([host.pg_bin_dir + "/pgbench", "-i", "-q", "-s", str(scale), "-h", host.pg_socket_dir, DATABASE],
             user="postgres", timeout=7200)
    host.psql("VACUUM ANALYZE", db=DATABASE, timeout=7200)
    host.psql("CHECKPOINT")
    host.psql("COMMENT ON DATABASE \"%s\" IS '%s'" % (DATABASE, MARKER % scale))
    seconds = time.monotonic() - started
    log("created in %.1f s" % seconds)
    return seconds


def size(host):
    """(pretty, bytes) size of the bench database on the server."""
    pretty, raw = host.psql("SELECT pg_size_pretty(pg_database_size('%s')), pg_database_size('%s')" % (DATABASE, DATABASE)).strip().split("|")
    return pretty, int(raw)
