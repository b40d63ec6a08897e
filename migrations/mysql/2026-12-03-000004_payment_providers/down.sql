DELETE FROM webhook_deliveries WHERE kind IN ('provider_closed', 'provider_refunded');
ALTER TABLE webhook_deliveries MODIFY kind VARCHAR(16) NOT NULL CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered'));
DELETE FROM order_events WHERE kind IN ('provider_closed', 'provider_refunded');
ALTER TABLE order_events MODIFY kind VARCHAR(16) NOT NULL CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered'));
DELETE FROM effects WHERE kind IN ('provider_close', 'provider_refund');
ALTER TABLE effects MODIFY kind VARCHAR(16) NOT NULL CHECK (kind IN ('grant', 'refund'));

DELETE FROM payment_events WHERE provider <> 'generic';
UPDATE orders SET trade_no = LEFT(trade_no, 64) WHERE CHAR_LENGTH(trade_no) > 64;
ALTER TABLE orders MODIFY trade_no VARCHAR(64);
ALTER TABLE payment_events
    DROP INDEX payment_events_provider_trade_no,
    ADD UNIQUE INDEX trade_no (trade_no),
    MODIFY trade_no VARCHAR(64) NOT NULL,
    DROP COLUMN refunded_at,
    DROP COLUMN provider;

DROP TABLE IF EXISTS payments;
