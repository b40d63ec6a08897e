-- Webhooks (SPEC "Schedules and webhooks"). An order event waits in the journal until the
-- fan-out (src/webhooks/fanout.rs) has written one delivery row per matching endpoint; only
-- then may the Redis publisher delete it. Rows written before this migration, and every row
-- while no endpoint is configured, need no fan-out.
ALTER TABLE order_events ADD COLUMN fanned_out BOOLEAN NOT NULL DEFAULT true;
CREATE INDEX order_events_unfanned ON order_events (id) WHERE fanned_out = false;

-- One event at one endpoint (its url): the body as first built (signed afresh at each
-- attempt), retried with backoff, dead-lettered after webhooks.max_attempts. event_id is the
-- journal row's id, the webhook-id header.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        BIGINT NOT NULL,
    url             TEXT NOT NULL,
    order_no        VARCHAR(64) NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered')),
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'done', 'dead_lettered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP,
    created_at      TIMESTAMP NOT NULL,
    UNIQUE (event_id, url)
);
-- An endpoint's pending deliveries, each order's oldest first (the claim and its "no earlier
-- pending event of this order" check).
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (url, order_no, event_id) WHERE status = 'pending';
-- GET /admin/deliveries?status=, newest first.
CREATE INDEX webhook_deliveries_status_id ON webhook_deliveries (status, id);
