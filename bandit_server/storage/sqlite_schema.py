"""The embedded decision log's tables. Append-only except experiments and the close watermark."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from urllib.parse import quote

# 2: the unlearnable table; a version-1 server would learn the events it lists.
# 3: marks under ANY_ARGS; a version-2 server would learn those events under other vw_args.
SCHEMA_VERSION = 3
# The vw_args of a mark that holds whatever the settings: an event skipped on request.
ANY_ARGS = "*"
SKIPPED_ON_REQUEST = "skipped on request (RebuildModel)"

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    epoch TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts REAL NOT NULL,
    deadline REAL NOT NULL,
    user_id TEXT NOT NULL,
    deferred INTEGER NOT NULL,
    c_json TEXT NOT NULL,
    action_ids TEXT NOT NULL,
    excluded TEXT NOT NULL,
    ranking TEXT NOT NULL,
    probabilities TEXT NOT NULL,
    model_version TEXT NOT NULL,
    UNIQUE (experiment, event_id)
);
CREATE INDEX IF NOT EXISTS decisions_deadline ON decisions (experiment, deadline);
CREATE TABLE IF NOT EXISTS rewards (
    seq INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    late INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rewards_event ON rewards (experiment, event_id);
CREATE TABLE IF NOT EXISTS activations (
    seq INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts REAL NOT NULL,
    late INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS activations_event ON activations (experiment, event_id);
-- The learner's order: replaying these rows in seq order rebuilds the model exactly.
CREATE TABLE IF NOT EXISTS learned (
    seq INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    event_id TEXT NOT NULL,
    cost REAL NOT NULL,
    ts REAL NOT NULL,
    UNIQUE (experiment, event_id)
);
-- Learned rows the model could not learn from under those vw_args (engine/model.py says why):
-- it skips them, so replaying `learned` without them, in seq order, rebuilds it exactly.
-- Keyed by vw_args too: under other settings the same event may be learnable.
CREATE TABLE IF NOT EXISTS unlearnable (
    seq INTEGER NOT NULL,
    vw_args TEXT NOT NULL,
    experiment TEXT NOT NULL,
    event_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    damaged INTEGER NOT NULL, -- 1: VW learned it and the model broke; 0: refused before VW
    ts REAL NOT NULL,
    PRIMARY KEY (seq, vw_args)
);
CREATE INDEX IF NOT EXISTS unlearnable_experiment ON unlearnable (experiment, vw_args);
-- Every decision whose deadline is at or before closed_until has had its window closed.
CREATE TABLE IF NOT EXISTS watermarks (experiment TEXT PRIMARY KEY, closed_until REAL NOT NULL);
"""


# What a WAL file left longer by a burst (or a long reader) is cut back to when it starts over.
WAL_SIZE_LIMIT_BYTES = 32 << 20
# How long a connection waits for another one's write lock before failing with "locked".
BUSY_TIMEOUT_SECONDS = 30.0


@contextlib.contextmanager
def waiting_at_most(con: sqlite3.Connection, milliseconds: int) -> Iterator[None]:
    """Within the block, `con` waits at most this long for another connection's lock (0: not
    at all), then the usual BUSY_TIMEOUT_SECONDS again."""
    con.execute(f"PRAGMA busy_timeout = {milliseconds}")
    try:
        yield
    finally:
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode; `synchronous` is FULL (fsync per commit) or NORMAL."""
    con = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
    )
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("PRAGMA foreign_keys=OFF")
    # Commits may run on the event loop: copying the WAL into the file (with its fsyncs) is
    # left to SQLiteDecisionLog.checkpoint_wal, on the learner thread, for every connection.
    con.execute("PRAGMA wal_autocheckpoint=0")
    # Whichever connection's write starts the WAL over cuts a file left longer back to this.
    con.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
    return con


def connect_read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot write. Reading a WAL-mode file needs its -shm file, which
    SQLite creates beside it; a reader that may not write there (a backup user, a read-only
    mount) reads a cleanly closed log (no -wal file) as immutable instead."""
    absolute = "/" + os.path.abspath(path).lstrip("/")  # "//x" would read as a URI authority
    uri = f"file://{quote(absolute)}?mode=ro"
    con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        con.close()
        if os.path.exists(path + "-wal"):
            raise
        con = sqlite3.connect(
            uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False
        )
    return con


def has_unlearnable_table(con: sqlite3.Connection) -> bool:
    """Version-1 logs have no unlearnable table (read inside the caller's transaction)."""
    return (
        con.execute("SELECT 1 FROM sqlite_master WHERE name = 'unlearnable'").fetchone() is not None
    )


def check_readable(con: sqlite3.Connection) -> None:
    """Raise unless this server can read the log on `con` (versions 1 to 3)."""
    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None or row[0] not in ("1", "2", str(SCHEMA_VERSION)):
        raise RuntimeError(
            f"decision log schema version {None if row is None else row[0]} is not one this "
            f"server can read (1 to {SCHEMA_VERSION})"
        )


def create(con: sqlite3.Connection) -> None:
    con.executescript(DDL)
    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        con.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    elif row[0] in ("1", "2"):  # the DDL above added what version 2 has; 3 adds no table
        with con:
            con.execute("BEGIN IMMEDIATE")
            # Skips on request written by a version-2 server hold for its vw_args only.
            con.execute(
                "UPDATE OR IGNORE unlearnable SET vw_args = ? WHERE reason = ?",
                (ANY_ARGS, SKIPPED_ON_REQUEST),
            )
            con.execute(
                "DELETE FROM unlearnable WHERE reason = ? AND vw_args <> ?",
                (SKIPPED_ON_REQUEST, ANY_ARGS),
            )
            con.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
    elif row[0] != str(SCHEMA_VERSION):
        raise RuntimeError(
            f"decision log schema version {row[0]} is not {SCHEMA_VERSION}; "
            "this server cannot read it"
        )
