-- Webhooks (SPEC "Schedules and webhooks"). An order event waits in the journal until the
-- fan-out (src/webhooks/fanout.rs) has written one delivery row per matching endpoint; only
-- then may the Redis publisher delete it. Rows written before this migration, and every row
-- while no endpoint is configured, need no fan-out. One statement: all of it or nothing.
ALTER TABLE order_events ADD COLUMN fanned_out BOOLEAN NOT NULL DEFAULT true,
    ADD INDEX order_events_unfanned (fanned_out, id);

-- One event at one endpoint (its url): the body as first built (signed afresh at each
-- attempt), retried with backoff, dead-lettered after webhooks.max_attempts. event_id is the
-- journal row's id, the webhook-id header. The url is at most 700 characters here: InnoDB
-- indexes at most 3072 bytes of a key (TEXT is not indexable as a whole).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id        BIGINT NOT NULL,
    url             VARCHAR(700) NOT NULL,
    order_no        VARCHAR(64) NOT NULL,
    kind            VARCHAR(16) NOT NULL CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered')),
    body            TEXT NOT NULL,
    status          VARCHAR(16) NOT NULL CHECK (status IN ('pending', 'done', 'dead_lettered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at DATETIME(3) NOT NULL,
    delivered_at    DATETIME(3),
    created_at      DATETIME(3) NOT NULL,
    UNIQUE (event_id, url),
    -- An endpoint's deliveries, each order's oldest first (the claim and its "no earlier
    -- pending event of this order" check).
    INDEX webhook_deliveries_pending (url, order_no, event_id),
    -- GET /admin/deliveries?status=, newest first.
    INDEX webhook_deliveries_status_id (status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
