DROP INDEX effects_status_id ON effects;
