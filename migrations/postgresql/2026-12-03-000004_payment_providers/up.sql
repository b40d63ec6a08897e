-- Payment providers (SPEC "Payment providers"): the payments started with Alipay, WeChat Pay
-- or Stripe; payment events of every provider, trade numbers unique per provider; the provider
-- effects (provider_close, provider_refund) and their events.

-- One payment per order and provider: what POST /api/orders/{order_no}/payments started.
CREATE TABLE payments (
    id           BIGSERIAL PRIMARY KEY,
    order_no     VARCHAR(64) NOT NULL REFERENCES orders (order_no),
    provider     TEXT NOT NULL CHECK (provider IN ('alipay', 'wechatpay', 'stripe')),
    status       TEXT NOT NULL CHECK (status IN ('started', 'paid', 'closed')),
    pay_url      TEXT,
    code_url     TEXT,
    provider_ref VARCHAR(255),
    expires_at   TIMESTAMP NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    UNIQUE (order_no, provider)
);
-- reconcile_payments: the started payments, oldest first.
CREATE INDEX payments_started ON payments (created_at) WHERE status = 'started';

-- Who a payment event came through (the generic callback before this migration), unique
-- trade numbers per provider (up to 255 characters, as providers' are), and when the provider
-- refunded a late or double payment.
ALTER TABLE payment_events ADD COLUMN provider TEXT NOT NULL DEFAULT 'generic'
    CHECK (provider IN ('generic', 'alipay', 'wechatpay', 'stripe'));
ALTER TABLE payment_events ADD COLUMN refunded_at TIMESTAMP;
ALTER TABLE payment_events ALTER COLUMN trade_no TYPE VARCHAR(255);
ALTER TABLE payment_events DROP CONSTRAINT payment_events_trade_no_key;
ALTER TABLE payment_events ADD CONSTRAINT payment_events_provider_trade_no_key UNIQUE (provider, trade_no);
ALTER TABLE orders ALTER COLUMN trade_no TYPE VARCHAR(255);

ALTER TABLE effects DROP CONSTRAINT effects_kind_check;
ALTER TABLE effects ADD CONSTRAINT effects_kind_check
    CHECK (kind IN ('grant', 'refund', 'provider_close', 'provider_refund'));
ALTER TABLE order_events DROP CONSTRAINT order_events_kind_check;
ALTER TABLE order_events ADD CONSTRAINT order_events_kind_check
    CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered', 'provider_closed', 'provider_refunded'));
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_kind_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_kind_check
    CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered', 'provider_closed', 'provider_refunded'));
