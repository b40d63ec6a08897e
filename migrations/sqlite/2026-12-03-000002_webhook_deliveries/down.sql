DROP INDEX webhook_deliveries_status_id;
DROP INDEX webhook_deliveries_pending;
DROP TABLE webhook_deliveries;
DROP INDEX order_events_unfanned;
ALTER TABLE order_events DROP COLUMN fanned_out;
