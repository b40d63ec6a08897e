DROP INDEX effects_dead_lettered_id;
DROP INDEX effects_pending_id;
