-- Admin dashboard sessions (src/http/ui/session.rs): the SHA-256 of the random session token
-- the cookie carries (never the token itself), the session's CSRF token, and when it expires.
-- A row is deleted at sign-out and when it is found expired.
CREATE TABLE admin_sessions (
    token_hash VARCHAR(64) NOT NULL PRIMARY KEY,
    csrf_token VARCHAR(64) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);

-- Purging expired sessions at sign-in.
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);
