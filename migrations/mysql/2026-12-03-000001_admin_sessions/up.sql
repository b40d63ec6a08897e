-- Admin dashboard sessions (src/http/ui/session.rs): the SHA-256 of the random session token
-- the cookie carries (never the token itself), the session's CSRF token, and when it expires.
-- A row is deleted at sign-out and when it is found expired.
CREATE TABLE IF NOT EXISTS admin_sessions (
    token_hash VARCHAR(64) NOT NULL PRIMARY KEY,
    csrf_token VARCHAR(64) NOT NULL,
    created_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    -- Purging expired sessions at sign-in.
    INDEX admin_sessions_expires_at (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
