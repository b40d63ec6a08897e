DROP TABLE IF EXISTS webhook_deliveries;
ALTER TABLE order_events DROP INDEX order_events_unfanned, DROP COLUMN fanned_out;
