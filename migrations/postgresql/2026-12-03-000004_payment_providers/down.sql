DELETE FROM webhook_deliveries WHERE kind IN ('provider_closed', 'provider_refunded');
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_kind_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_kind_check CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered'));
DELETE FROM order_events WHERE kind IN ('provider_closed', 'provider_refunded');
ALTER TABLE order_events DROP CONSTRAINT order_events_kind_check;
ALTER TABLE order_events ADD CONSTRAINT order_events_kind_check CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered'));
DELETE FROM effects WHERE kind IN ('provider_close', 'provider_refund');
ALTER TABLE effects DROP CONSTRAINT effects_kind_check;
ALTER TABLE effects ADD CONSTRAINT effects_kind_check CHECK (kind IN ('grant', 'refund'));

DELETE FROM payment_events WHERE provider <> 'generic';
ALTER TABLE payment_events DROP CONSTRAINT payment_events_provider_trade_no_key;
ALTER TABLE payment_events ADD CONSTRAINT payment_events_trade_no_key UNIQUE (trade_no);
ALTER TABLE payment_events ALTER COLUMN trade_no TYPE VARCHAR(64) USING left(trade_no, 64);
ALTER TABLE orders ALTER COLUMN trade_no TYPE VARCHAR(64) USING left(trade_no, 64);
ALTER TABLE payment_events DROP COLUMN refunded_at;
ALTER TABLE payment_events DROP COLUMN provider;

DROP INDEX payments_started;
DROP TABLE payments;
