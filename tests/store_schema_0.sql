CREATE TABLE list_source_checkpoints (
    source TEXT PRIMARY KEY,
    checkpoint TEXT NOT NULL,
    saved_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE TABLE list_source_entries (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    signal TEXT NOT NULL,
    hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE TABLE list_source_copies (
    source TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    meta TEXT NOT NULL,
    saved_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    stream_id TEXT,
    at REAL NOT NULL,
    severity TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_by_stream ON events(stream_id, seq);
CREATE INDEX events_by_type ON events(type, seq);
CREATE INDEX events_by_time ON events(at);
CREATE TABLE outbox (
    endpoint TEXT NOT NULL,
    event_seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    finished_at REAL,
    PRIMARY KEY (endpoint, event_seq)
);
CREATE INDEX outbox_due ON outbox(state, next_attempt);
CREATE INDEX outbox_by_event ON outbox(event_seq);
CREATE INDEX outbox_errors ON outbox(endpoint, event_seq) WHERE last_error IS NOT NULL;
CREATE TABLE outbox_counts (
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, state)
) WITHOUT ROWID;
CREATE TRIGGER outbox_counted_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_counts VALUES (new.endpoint, new.state, 1)
    ON CONFLICT (endpoint, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER outbox_counted_update AFTER UPDATE OF state ON outbox WHEN old.state != new.state BEGIN
    UPDATE outbox_counts SET count = count - 1 WHERE endpoint = old.endpoint AND state = old.state;
    INSERT INTO outbox_counts VALUES (new.endpoint, new.state, 1)
    ON CONFLICT (endpoint, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER outbox_counted_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counts SET count = count - 1 WHERE endpoint = old.endpoint AND state = old.state;
END;
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    stream_id TEXT,
    reason TEXT NOT NULL,
    viewed_content INTEGER NOT NULL,
    event_id TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_by_stream ON audit(stream_id, seq);
CREATE TABLE allowlist (
    signal TEXT NOT NULL,
    hash TEXT NOT NULL,
    stream_id TEXT NOT NULL,  -- '' for every stream
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (signal, hash, stream_id)
);
CREATE TABLE revoked_keys (
    stream_id TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (stream_id, key_sha256)
);
CREATE TABLE state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE banks (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    changed_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE bank_contents (
    bank TEXT NOT NULL,
    content_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    frames INTEGER NOT NULL,
    views INTEGER NOT NULL,
    added_by TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (bank, content_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX bank_contents_by_sha256 ON bank_contents(bank, sha256);
CREATE TABLE bank_hashes (
    bank TEXT NOT NULL,
    content_id TEXT NOT NULL,
    signal TEXT NOT NULL,
    hash TEXT NOT NULL,
    view TEXT NOT NULL,
    frame_time REAL,
    quality INTEGER NOT NULL
);
CREATE INDEX bank_hashes_by_content ON bank_hashes(bank, content_id);
