-- The order-event outbox: written in the same transaction as the change it describes (only
-- when Redis is configured), published to the Redis stream after commit, then deleted. The id
-- is the event's stable event_id (AUTOINCREMENT: never reused after a delete).
CREATE TABLE order_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    order_no VARCHAR(64) NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('placed', 'paid', 'failed', 'cancelled', 'granted', 'refunded', 'late_payment', 'dead_lettered')),
    at       TIMESTAMP NOT NULL,
    data     TEXT NOT NULL
);

-- Finding a lapsed node's pending orders.
CREATE INDEX orders_pending_owner ON orders (owner_node) WHERE status = 'pending';
