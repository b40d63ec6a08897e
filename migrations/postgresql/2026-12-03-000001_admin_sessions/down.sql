DROP INDEX admin_sessions_expires_at;
DROP TABLE admin_sessions;
