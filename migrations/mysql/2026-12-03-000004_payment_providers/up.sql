-- Payment providers (SPEC "Payment providers"): the payments started with Alipay, WeChat Pay
-- or Stripe; payment events of every provider, trade numbers unique per provider; the provider
-- effects (provider_close, provider_refund) and their events. A column's CHECK is replaced
-- with the column (MODIFY): MariaDB keeps a column's CHECK with its definition. (MySQL 8 makes
-- column CHECKs table constraints named <table>_chk_<n>, which MODIFY does not drop: there,
-- drop them first.) Event kinds are VARCHAR(32) now: provider_refunded is 17 characters.

-- One payment per order and provider: what POST /api/orders/{order_no}/payments started.
CREATE TABLE IF NOT EXISTS payments (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_no     VARCHAR(64) NOT NULL,
    provider     VARCHAR(16) NOT NULL CHECK (provider IN ('alipay', 'wechatpay', 'stripe')),
    status       VARCHAR(16) NOT NULL CHECK (status IN ('started', 'paid', 'closed')),
    pay_url      TEXT,
    code_url     TEXT,
    provider_ref VARCHAR(255),
    expires_at   DATETIME(3) NOT NULL,
    created_at   DATETIME(3) NOT NULL,
    updated_at   DATETIME(3) NOT NULL,
    UNIQUE (order_no, provider),
    INDEX payments_started (status, created_at),
    FOREIGN KEY (order_no) REFERENCES orders (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Who a payment event came through, unique trade numbers per provider (up to 255 characters),
-- and when the provider refunded a late or double payment. One statement: all or nothing.
ALTER TABLE payment_events
    ADD COLUMN provider VARCHAR(16) NOT NULL DEFAULT 'generic'
        CHECK (provider IN ('generic', 'alipay', 'wechatpay', 'stripe')),
    ADD COLUMN refunded_at DATETIME(3),
    MODIFY trade_no VARCHAR(255) NOT NULL,
    DROP INDEX trade_no,
    ADD UNIQUE INDEX payment_events_provider_trade_no (provider, trade_no);
ALTER TABLE orders MODIFY trade_no VARCHAR(255);

ALTER TABLE effects MODIFY kind VARCHAR(16) NOT NULL
    CHECK (kind IN ('grant', 'refund', 'provider_close', 'provider_refund'));
ALTER TABLE order_events MODIFY kind VARCHAR(32) NOT NULL
    CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered', 'provider_closed', 'provider_refunded'));
ALTER TABLE webhook_deliveries MODIFY kind VARCHAR(32) NOT NULL
    CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered', 'provider_closed', 'provider_refunded'));
