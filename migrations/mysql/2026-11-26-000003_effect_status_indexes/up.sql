-- Effects by status, newest first (GET /admin/effects?status=, and the backlog counts of
-- GET /admin/actors). PostgreSQL has a partial index per status; here one index serves both.
CREATE INDEX effects_status_id ON effects (status, id);
