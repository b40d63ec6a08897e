DROP INDEX orders_pending_owner;
DROP TABLE order_events;
