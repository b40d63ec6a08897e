DROP TABLE IF EXISTS admin_sessions;
