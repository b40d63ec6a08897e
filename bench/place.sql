-- One placement (POST /api/orders, one course, 10 points, no coupon), statement for statement
-- as order-engine sends it to PostgreSQL: captured with
--   ALTER DATABASE bench_x SET log_statement = 'all'
-- while the engine placed an order (see BENCHMARKS.md); re-captured 2026-12-03 from the engine
-- after e625ea7: the handler no longer looks the JWT's user up (the transaction's first
-- statement locks the user's row, 401 when there is none), and the two reads of the user's
-- orders by status come first, planned for their values, after which the transaction switches
-- to generic plans with index scans (`set_config(.., true)`, as `SET LOCAL`) for the statements found by key and for
-- the foreign-key checks inside the inserts. The r2d2 pool checks the connection out with
-- `SELECT 1`. Run by loadgen (`place --backend postgres`) as
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
BEGIN;
UPDATE "users" SET "points" = "users"."points" WHERE ("users"."id" = :uid);
SELECT "users"."points" FROM "users" WHERE ("users"."id" = :uid) LIMIT 1;
SELECT "order_items"."course_id", "orders"."expires_at" FROM ("order_items" INNER JOIN "orders" ON ("order_items"."order_no" = "orders"."order_no")) WHERE ((("orders"."user_id" = :uid) AND ("orders"."status" = :pending)) AND ("order_items"."course_id" = ANY(ARRAY[:cid]::bigint[]))) ORDER BY "orders"."order_no" FOR UPDATE;
SELECT "user_courses"."course_id" FROM "user_courses" WHERE ("user_courses"."user_id" = :uid);
SELECT "order_items"."course_id" FROM ("order_items" INNER JOIN "orders" ON ("order_items"."order_no" = "orders"."order_no")) WHERE (("orders"."user_id" = :uid) AND ("orders"."status" = :paid));
SELECT set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true);
SELECT "courses"."id", "courses"."title", "courses"."price_cents", "courses"."on_sale", "courses"."created_at" FROM "courses" WHERE ("courses"."id" = ANY(ARRAY[:cid]::bigint[]));
SELECT "chapters"."id", "chapters"."course_id", "chapters"."position", "chapters"."title" FROM "chapters" WHERE ("chapters"."course_id" = ANY(ARRAY[:cid]::bigint[])) ORDER BY "chapters"."course_id", "chapters"."position";
INSERT INTO "orders" ("order_no", "user_id", "status", "total_cents", "discount_cents", "points_used", "payable_cents", "user_coupon_id", "created_at", "expires_at", "paid_at", "closed_at", "close_reason", "trade_no", "owner_node") VALUES ('pgb' || :ono, :uid, :pending, 1000, 0, :points, 1000 - :points, DEFAULT, date_trunc('milliseconds', now() AT TIME ZONE 'UTC'), date_trunc('milliseconds', now() AT TIME ZONE 'UTC') + INTERVAL '1 hour', DEFAULT, DEFAULT, DEFAULT, DEFAULT, 'pgbench');
INSERT INTO "order_items" ("order_no", "position", "course_id", "price_cents") VALUES ('pgb' || :ono, 0, :cid, 1000);
UPDATE "users" SET "points" = ("users"."points" - :points) WHERE ("users"."id" = :uid);
INSERT INTO "points_ledger" ("user_id", "order_no", "kind", "delta", "created_at") VALUES (:uid, 'pgb' || :ono, :spend, 0 - :points, date_trunc('milliseconds', now() AT TIME ZONE 'UTC'));
COMMIT;
