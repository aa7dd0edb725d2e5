"""The SQLite schema, as migrations: entry i takes a database from version i to i + 1 (`PRAGMA user_version`).

PostgreSQL's list (app.storage.postgres) has the same versions: version N means the same tables and
columns on both engines.
"""

from __future__ import annotations

from app.storage.oauth_records import OAUTH_SCHEMA

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

# Each entry migrates the schema from version i to i + 1 (`PRAGMA user_version`).
MIGRATIONS: list[str] = [
    # 1: the seed tool's table, plus what a service needs to explain a failure.
    """
    CREATE TABLE IF NOT EXISTS generations (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        prompt TEXT NOT NULL,
        parameters_json TEXT NOT NULL,
        image_url TEXT,
        status TEXT NOT NULL,
        error TEXT,
        http_status INTEGER,
        duration_ms INTEGER,
        finished_at TEXT
    );
    CREATE INDEX IF NOT EXISTS generations_status_id ON generations (status, id);
    """,
    # 2: the local copy of each image, and full-text search over prompts.
    """
    ALTER TABLE generations ADD COLUMN image_path TEXT;
    ALTER TABLE generations ADD COLUMN image_bytes INTEGER;
    ALTER TABLE generations ADD COLUMN image_sha256 TEXT;
    ALTER TABLE generations ADD COLUMN image_mime TEXT;
    CREATE VIRTUAL TABLE generations_fts USING fts5(prompt, content='generations', content_rowid='id');
    CREATE TRIGGER generations_fts_ai AFTER INSERT ON generations BEGIN
        INSERT INTO generations_fts (rowid, prompt) VALUES (new.id, new.prompt);
    END;
    CREATE TRIGGER generations_fts_ad AFTER DELETE ON generations BEGIN
        INSERT INTO generations_fts (generations_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
    END;
    CREATE TRIGGER generations_fts_au AFTER UPDATE OF prompt ON generations BEGIN
        INSERT INTO generations_fts (generations_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
        INSERT INTO generations_fts (rowid, prompt) VALUES (new.id, new.prompt);
    END;
    INSERT INTO generations_fts (generations_fts) VALUES ('rebuild');
    """,
    # 3: how many attempts a call took (retries), and how long it queued for a slot.
    """
    ALTER TABLE generations ADD COLUMN attempts INTEGER;
    ALTER TABLE generations ADD COLUMN queue_ms INTEGER;
    """,
    # 4: who asked (the caller's token name; NULL when anonymous).
    """
    ALTER TABLE generations ADD COLUMN caller TEXT;
    CREATE INDEX generations_caller_id ON generations (caller, id);
    """,
    # 5: Pixazo's own words about a failure, for operators only; `error` becomes the server's message
    # (what every caller may read). Older rows kept the upstream text in `error`: move it.
    """
    ALTER TABLE generations ADD COLUMN upstream_error TEXT;
    UPDATE generations SET upstream_error = error, error = 'Pixazo answered HTTP ' || http_status || '.'
        WHERE http_status IS NOT NULL AND error IS NOT NULL;
    """,
    # 6: the OAuth authorization server's clients, pending sign-ins, codes and tokens (hashed).
    OAUTH_SCHEMA,
    # 7: which instance owns a call in flight, and the instances' leases (several processes may share
    # the database: a row becomes INTERRUPTED only once its owner's lease lapsed). Limits count a
    # caller's recent rows: an index that leads with the caller and the time.
    """
    ALTER TABLE generations ADD COLUMN owner TEXT;
    CREATE INDEX generations_caller_timestamp ON generations (caller, timestamp);
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # 8: gallery sessions, so that logout ends one everywhere (and replicas can share them). Only a
    # hash of the session id is kept: a copy of the database opens no session.
    """
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        caller TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX sessions_expires_at ON sessions (expires_at);
    """,
    # 9: which model and operation made a row (every older row was SDXL text-to-image: constant
    # defaults, so adding them rewrites nothing), the generation it was made from, what it cost
    # (NULL: not recorded), and Pixazo's queue job id while a submitted job runs, so that another
    # instance can resume polling it after a restart.
    """
    ALTER TABLE generations ADD COLUMN model TEXT NOT NULL DEFAULT 'sdxl';
    ALTER TABLE generations ADD COLUMN operation TEXT NOT NULL DEFAULT 'generate';
    ALTER TABLE generations ADD COLUMN parent_id INTEGER;
    ALTER TABLE generations ADD COLUMN cost_usd REAL;
    ALTER TABLE generations ADD COLUMN request_id TEXT;
    CREATE INDEX generations_parent_id ON generations (parent_id, id) WHERE parent_id IS NOT NULL;
    CREATE INDEX generations_pending_jobs ON generations (id)
        WHERE status = 'PENDING' AND request_id IS NOT NULL;
    """,
    # 10: hostile callers, round two. A pending sign-in counts its wrong tokens and keeps the address
    # that asked for it (pending requests are bounded per client and per address); a client remembers
    # when someone first signed in through it (clients nobody signed in with expire); server_keys holds
    # random keys shared by every replica (the signed-link key), never derived from typed text.
    # Clients that already issued a code or a token count as signed in.
    """
    ALTER TABLE oauth_requests ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE oauth_requests ADD COLUMN address TEXT;
    CREATE INDEX oauth_requests_address ON oauth_requests (address);
    CREATE INDEX oauth_requests_client ON oauth_requests (client_id);
    ALTER TABLE oauth_clients ADD COLUMN signed_in_at REAL;
    UPDATE oauth_clients SET signed_in_at = COALESCE(last_seen_at, created_at)
        WHERE client_id IN (SELECT client_id FROM oauth_codes UNION SELECT client_id FROM oauth_tokens);
    CREATE TABLE server_keys (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 11: a caller's unfinished generations, counted at every admission (PIXAZO_MAX_BACKGROUND_PER_CALLER).
    """
    CREATE INDEX generations_pending_caller ON generations (caller) WHERE status = 'PENDING';
    """,
    # 12: one-time upload links (issue 22): only a hash of the token; single use (used_at); the
    # generation the upload becomes (PENDING, operation upload) and the caller it is bound to.
    """
    CREATE TABLE upload_links (
        token_sha256 TEXT PRIMARY KEY,
        generation_id INTEGER NOT NULL,
        caller TEXT,
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE INDEX upload_links_generation ON upload_links (generation_id);
    """,
    # 13: the team style a generation was made in (PIXAZO_STYLES_FILE; NULL: none). `prompt` then holds
    # the expanded prompt, as sent to Pixazo, so search, the gallery and pix_regenerate see what was asked.
    """
    ALTER TABLE generations ADD COLUMN style TEXT;
    """,
    # 14: what a kept image carries about where it came from (issue 26): its XMP packet, its C2PA
    # manifest, or why signing it failed (app.storage.provenance). NULL: as it came (uploads, older rows).
    """
    ALTER TABLE generations ADD COLUMN provenance TEXT;
    """,
    # 15: variations (issue 26): the images of one call with `n` > 1 share a batch id.
    """
    ALTER TABLE generations ADD COLUMN batch_id TEXT;
    CREATE INDEX generations_batch_id ON generations (batch_id) WHERE batch_id IS NOT NULL;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
