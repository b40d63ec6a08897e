-- The order-event outbox: written in the same transaction as the change it describes (only
-- when Redis is configured), published to the Redis stream after commit, then deleted. The id
-- is the event's stable event_id.
CREATE TABLE IF NOT EXISTS order_events (
    id       BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_no VARCHAR(64) NOT NULL,
    kind     VARCHAR(16) NOT NULL CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered')),
    at       DATETIME(3) NOT NULL,
    data     TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Finding a lapsed node's pending orders.
CREATE INDEX orders_pending_owner ON orders (status, owner_node);
