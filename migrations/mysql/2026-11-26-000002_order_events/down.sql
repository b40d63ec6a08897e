DROP INDEX orders_pending_owner ON orders;
DROP TABLE IF EXISTS order_events;
