-- Effects by status, newest first (GET /admin/effects?status=, and the backlog counts of
-- GET /admin/actors): partial, so a done effect costs no index entry.
CREATE INDEX effects_pending_id ON effects (id) WHERE status = 'pending';
CREATE INDEX effects_dead_lettered_id ON effects (id) WHERE status = 'dead_lettered';
