-- One placement (POST /api/orders, one course, 10 points, no coupon), statement for statement
-- as order-engine sends it to PostgreSQL: captured with
--   ALTER DATABASE bench_x SET log_statement = 'all'
-- while the engine placed an order (see BENCHMARKS.md); re-captured 2026-12-02 from the engine at
-- 75a4922: the user's pending orders holding the courses are locked (lock_open_orders, FOR UPDATE,
-- before the ownership reads; their deadlines are compared in Rust, no longer in SQL). The r2d2 pool checks each connection
-- out with `SELECT 1`; the handler authenticates the JWT's user with one read, then the
-- placement transaction runs. Run by loadgen (`place --backend postgres`) as
--   pgbench -n -M prepared -c 64 -j 2 -T 20 -D users=U -D courses=C -D clients=64 -D points=10 -f place.sql URL
-- (plus -D pending=pending -D paid=paid -D spend=spend: the engine binds these strings as
-- parameters, so they are parameters here too, and plans are chosen alike)
-- on the database the engine just used (same catalog, same orders). Client c owns users
-- c+1, c+1+clients, ... so, as in loadgen, no two clients place for one user at once.
\set k random(0, :users / :clients - 1)
\set uid :client_id + 1 + :clients * :k
\set cid random(1, :courses)
\set ono random(1, 9000000000000000)
SELECT 1;
SELECT "users"."id", "users"."name", "users"."points", "users"."initial_points", "users"."created_at" FROM "users" WHERE ("users"."id" = :uid) LIMIT 1;
SELECT 1;
BEGIN;
UPDATE "users" SET "points" = "users"."points" WHERE ("users"."id" = :uid);
SELECT "users"."points" FROM "users" WHERE ("users"."id" = :uid) LIMIT 1;
SELECT "courses"."id", "courses"."title", "courses"."price_cents", "courses"."on_sale", "courses"."created_at" FROM "courses" WHERE ("courses"."id" = ANY(ARRAY[:cid]::bigint[]));
SELECT "chapters"."id", "chapters"."course_id", "chapters"."position", "chapters"."title" FROM "chapters" WHERE ("chapters"."course_id" = ANY(ARRAY[:cid]::bigint[])) ORDER BY "chapters"."course_id", "chapters"."position";
SELECT "order_items"."course_id", "orders"."expires_at" FROM ("order_items" INNER JOIN "orders" ON ("order_items"."order_no" = "orders"."order_no")) WHERE ((("orders"."user_id" = :uid) AND ("orders"."status" = :pending)) AND ("order_items"."course_id" = ANY(ARRAY[:cid]::bigint[]))) ORDER BY "orders"."order_no" FOR UPDATE;
SELECT "user_courses"."course_id" FROM "user_courses" WHERE ("user_courses"."user_id" = :uid);
SELECT "order_items"."course_id" FROM ("order_items" INNER JOIN "orders" ON ("order_items"."order_no" = "orders"."order_no")) WHERE (("orders"."user_id" = :uid) AND ("orders"."status" = :paid));
INSERT INTO "orders" ("order_no", "user_id", "status", "total_cents", "discount_cents", "points_used", "payable_cents", "user_coupon_id", "created_at", "expires_at", "paid_at", "closed_at", "close_reason", "trade_no", "owner_node") VALUES ('pgb' || :ono, :uid, :pending, 1000, 0, :points, 1000 - :points, DEFAULT, date_trunc('milliseconds', now() AT TIME ZONE 'UTC'), date_trunc('milliseconds', now() AT TIME ZONE 'UTC') + INTERVAL '1 hour', DEFAULT, DEFAULT, DEFAULT, DEFAULT, 'pgbench');
INSERT INTO "order_items" ("order_no", "position", "course_id", "price_cents") VALUES ('pgb' || :ono, 0, :cid, 1000);
UPDATE "users" SET "points" = ("users"."points" - :points) WHERE ("users"."id" = :uid);
INSERT INTO "points_ledger" ("user_id", "order_no", "kind", "delta", "created_at") VALUES (:uid, 'pgb' || :ono, :spend, 0 - :points, date_trunc('milliseconds', now() AT TIME ZONE 'UTC'));
COMMIT;
