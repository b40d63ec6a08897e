-- One placement (POST /api/orders, one course, 10 points, no coupon), statement for statement
-- as order-engine sends it to MySQL/MariaDB: captured 2026-12-04 from the engine at 89fe86c with
--   SET GLOBAL log_output = 'FILE', general_log_file = '/tmp/gen.log', general_log = 1
-- while loadgen placed a few orders (see BENCHMARKS.md). The engine's connections are READ
-- COMMITTED (src/db/mysql.rs), as mysqlslap's are here through --init-command. Run by loadgen
-- (`place --backend mysql`) as
--   mysqlslap --concurrency=64 --iterations=1 --number-of-queries=N --delimiter=";" --query=FILE
-- on the database the engine just used (same catalog, same orders), with :clients, :users,
-- :courses and :points filled in and these comment lines dropped (mysqlslap cuts the file at
-- every semicolon, comments included).
-- mysqlslap has no client-side variables: the first statement, in place of the pool's
-- `SELECT 1` check-out, picks the user, the course and the order number into session
-- variables. Client c (its connection id modulo :clients; mysqlslap opens its connections one
-- after another) owns users c+1, c+1+clients, ... so, as in loadgen, no two clients place for
-- one user at once. The engine sends each statement as a prepared statement (most of them
-- prepared, executed and closed each time: see BENCHMARKS.md); mysqlslap sends text.
-- The timestamps the engine binds (its own clock, milliseconds) are UTC_TIMESTAMP(3) here.
SET @uid = CONNECTION_ID() % :clients + 1 + :clients * FLOOR(RAND() * (:users DIV :clients)), @cid = FLOOR(1 + RAND() * :courses), @ono = CONCAT('slap', UUID_SHORT());
BEGIN;
UPDATE `users` SET `points` = `users`.`points` WHERE (`users`.`id` = @uid);
SELECT `users`.`points` FROM `users` WHERE (`users`.`id` = @uid) LIMIT 1;
SELECT `order_items`.`course_id`, `orders`.`expires_at` FROM (`order_items` INNER JOIN `orders` ON (`order_items`.`order_no` = `orders`.`order_no`)) WHERE (((`orders`.`user_id` = @uid) AND (`orders`.`status` = 'pending')) AND (`order_items`.`course_id` IN (@cid))) ORDER BY `orders`.`order_no` FOR UPDATE;
SELECT `user_courses`.`course_id` FROM `user_courses` WHERE (`user_courses`.`user_id` = @uid);
SELECT `order_items`.`course_id` FROM (`order_items` INNER JOIN `orders` ON (`order_items`.`order_no` = `orders`.`order_no`)) WHERE ((`orders`.`user_id` = @uid) AND (`orders`.`status` = 'paid'));
SELECT `courses`.`id`, `courses`.`title`, `courses`.`price_cents`, `courses`.`on_sale`, `courses`.`created_at` FROM `courses` WHERE (`courses`.`id` IN (@cid));
SELECT `chapters`.`id`, `chapters`.`course_id`, `chapters`.`position`, `chapters`.`title` FROM `chapters` WHERE (`chapters`.`course_id` IN (@cid)) ORDER BY `chapters`.`course_id`, `chapters`.`position`;
INSERT INTO `orders` (`order_no`, `user_id`, `status`, `total_cents`, `discount_cents`, `points_used`, `payable_cents`, `user_coupon_id`, `created_at`, `expires_at`, `paid_at`, `closed_at`, `close_reason`, `trade_no`, `owner_node`) VALUES (@ono, @uid, 'pending', 1000, 0, :points, 1000 - :points, DEFAULT, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 1 HOUR, NULL, NULL, DEFAULT, DEFAULT, 'mysqlslap');
INSERT INTO `order_items` (`order_no`, `position`, `course_id`, `price_cents`) VALUES (@ono, 0, @cid, 1000);
UPDATE `users` SET `points` = (`users`.`points` - :points) WHERE (`users`.`id` = @uid);
INSERT INTO `points_ledger` (`user_id`, `order_no`, `kind`, `delta`, `created_at`) VALUES (@uid, @ono, 'spend', 0 - :points, UTC_TIMESTAMP(3));
COMMIT;
