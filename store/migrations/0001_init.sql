-- keygate schema, version 1. Mirrors the bbolt layout (store/bolt.go):
--   keys     one row per key, seq gives creation order for newest-first paging
--   secrets  SHA-256(secret) → key; valid_until NULL for the current secret,
--            else the end of a rolled-out secret's window
--   events   the audit trail, seq gives newest-first paging
-- Times are whole seconds. No secret is ever stored, only its hash.

CREATE TABLE keys (
    id            text        PRIMARY KEY,
    seq           bigserial   NOT NULL UNIQUE,
    workspace_id  text        NOT NULL,
    name          text        NOT NULL,
    mode          smallint    NOT NULL,
    scopes        text[]      NOT NULL,
    ip_whitelist  text[]      NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    secret_hint   text        NOT NULL
);
CREATE INDEX keys_workspace_seq ON keys (workspace_id, seq DESC);

CREATE TABLE secrets (
    hash         bytea       PRIMARY KEY CHECK (octet_length(hash) = 32),
    key_id       text        NOT NULL REFERENCES keys (id),
    valid_until  timestamptz
);
CREATE INDEX secrets_key ON secrets (key_id);

CREATE TABLE events (
    seq           bigserial   PRIMARY KEY,
    event_id      text        NOT NULL,
    workspace_id  text        NOT NULL,
    api_key_id    text        NOT NULL DEFAULT '',
    action        text        NOT NULL,
    code          text        NOT NULL DEFAULT '',
    actor_sub     text        NOT NULL DEFAULT '',
    actor_portal  text        NOT NULL DEFAULT '',
    actor_admin   boolean     NOT NULL DEFAULT false,
    request_id    text        NOT NULL DEFAULT '',
    at            timestamptz NOT NULL
);
CREATE INDEX events_workspace_seq ON events (workspace_id, seq DESC);
CREATE INDEX events_key_seq ON events (api_key_id, seq DESC) WHERE api_key_id <> '';
