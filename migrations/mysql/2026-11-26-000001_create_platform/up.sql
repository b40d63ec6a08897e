-- The MySQL / MariaDB form of migrations/postgresql (same names, same schema in Diesel's
-- terms). InnoDB, utf8mb4, every text column utf8mb4_bin so comparisons and uniqueness are
-- byte-exact as on PostgreSQL and SQLite; DATETIME(3) timestamps (UTC, milliseconds, as the
-- engine writes them). MySQL has no partial indexes: each partial index of PostgreSQL is an
-- index led by the column its predicate tests. MySQL runs DDL outside transactions, so each
-- table comes with its indexes in one CREATE TABLE IF NOT EXISTS: a migration that stopped
-- half-way runs again.

CREATE TABLE IF NOT EXISTS users (
    id             BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name           TEXT NOT NULL CHECK (name <> ''),
    points         BIGINT NOT NULL CHECK (points >= 0),
    initial_points BIGINT NOT NULL CHECK (initial_points >= 0),
    created_at     DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS courses (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    title       TEXT NOT NULL CHECK (title <> ''),
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    on_sale     BOOLEAN NOT NULL,
    created_at  DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS chapters (
    id        BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    course_id BIGINT NOT NULL,
    position  INTEGER NOT NULL,
    title     TEXT NOT NULL CHECK (title <> ''),
    UNIQUE (course_id, position),
    FOREIGN KEY (course_id) REFERENCES courses (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS coupons (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    title           TEXT NOT NULL CHECK (title <> ''),
    discount_cents  BIGINT NOT NULL CHECK (discount_cents >= 1),
    min_spend_cents BIGINT NOT NULL CHECK (min_spend_cents >= 0),
    valid_until     DATETIME(3),
    created_at      DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS orders (
    order_no       VARCHAR(64) NOT NULL PRIMARY KEY,
    user_id        BIGINT NOT NULL,
    status         VARCHAR(16) NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'cancelled')),
    total_cents    BIGINT NOT NULL CHECK (total_cents >= 0),
    discount_cents BIGINT NOT NULL CHECK (discount_cents >= 0),
    points_used    BIGINT NOT NULL CHECK (points_used >= 0),
    payable_cents  BIGINT NOT NULL CHECK (payable_cents >= 0),
    user_coupon_id BIGINT,
    created_at     DATETIME(3) NOT NULL,
    expires_at     DATETIME(3) NOT NULL,
    paid_at        DATETIME(3),
    closed_at      DATETIME(3),
    close_reason   VARCHAR(16) CHECK (close_reason IN ('timeout', 'user', 'admin', 'payment_failed')),
    trade_no       VARCHAR(64),
    -- The engine process whose actor holds this pending order's timer.
    owner_node     VARCHAR(64),
    CHECK ((status = 'paid') = (paid_at IS NOT NULL)),
    CHECK ((status IN ('failed', 'cancelled')) = (closed_at IS NOT NULL AND close_reason IS NOT NULL)),
    INDEX orders_user_status (user_id, status),
    INDEX orders_pending_expiry (status, expires_at),
    INDEX orders_status_order_no (status, order_no),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS user_coupons (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    coupon_id  BIGINT NOT NULL,
    status     VARCHAR(16) NOT NULL CHECK (status IN ('unused', 'locked', 'used')),
    order_no   VARCHAR(64),
    created_at DATETIME(3) NOT NULL,
    CHECK ((status = 'unused') = (order_no IS NULL)),
    INDEX user_coupons_user (user_id),
    -- A coupon is locked by, or used for, at most one order.
    UNIQUE INDEX user_coupons_order (order_no),
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (coupon_id) REFERENCES coupons (id),
    FOREIGN KEY (order_no) REFERENCES orders (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- orders and user_coupons reference each other, so this key comes once both exist. The one
-- statement here that cannot run twice: after a failure past it, revert the migration first.
ALTER TABLE orders ADD CONSTRAINT orders_user_coupon_id_fkey
    FOREIGN KEY (user_coupon_id) REFERENCES user_coupons (id);

CREATE TABLE IF NOT EXISTS order_items (
    order_no    VARCHAR(64) NOT NULL,
    position    INTEGER NOT NULL,
    course_id   BIGINT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (order_no, position),
    UNIQUE (order_no, course_id),
    INDEX order_items_course (course_id),
    FOREIGN KEY (order_no) REFERENCES orders (order_no),
    FOREIGN KEY (course_id) REFERENCES courses (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The points ledger (score records): every change of a user's points.
CREATE TABLE IF NOT EXISTS points_ledger (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    order_no   VARCHAR(64) NOT NULL,
    kind       VARCHAR(16) NOT NULL CHECK (kind IN ('spend', 'refund')),
    delta      BIGINT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    UNIQUE (order_no, kind),
    CHECK ((kind = 'spend' AND delta < 0) OR (kind = 'refund' AND delta > 0)),
    INDEX points_ledger_user (user_id),
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (order_no) REFERENCES orders (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS user_courses (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    course_id  BIGINT NOT NULL,
    order_no   VARCHAR(64),
    created_at DATETIME(3) NOT NULL,
    UNIQUE (user_id, course_id),
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (course_id) REFERENCES courses (id),
    FOREIGN KEY (order_no) REFERENCES orders (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS user_course_chapters (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    course_id  BIGINT NOT NULL,
    chapter_id BIGINT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    UNIQUE (user_id, chapter_id),
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (course_id) REFERENCES courses (id),
    FOREIGN KEY (chapter_id) REFERENCES chapters (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every payment callback that was accepted, with what it did.
CREATE TABLE IF NOT EXISTS payment_events (
    id               BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_no         VARCHAR(64) NOT NULL,
    trade_no         VARCHAR(64) NOT NULL UNIQUE,
    code             BIGINT NOT NULL,
    amount_cents     BIGINT NOT NULL,
    provider_paid_at DATETIME(3),
    received_at      DATETIME(3) NOT NULL,
    outcome          VARCHAR(16) NOT NULL CHECK (outcome IN ('paid', 'failed', 'late_payment', 'double_payment', 'ignored')),
    INDEX payment_events_order (order_no),
    INDEX payment_events_refund_required (outcome, id),
    FOREIGN KEY (order_no) REFERENCES orders (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The effect outbox: written in the transition's transaction, applied by the grant and refund
-- actors, retried with backoff, dead-lettered after effects.max_attempts.
CREATE TABLE IF NOT EXISTS effects (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_no        VARCHAR(64) NOT NULL,
    kind            VARCHAR(16) NOT NULL CHECK (kind IN ('grant', 'refund')),
    status          VARCHAR(16) NOT NULL CHECK (status IN ('pending', 'done', 'dead_lettered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at DATETIME(3) NOT NULL,
    created_at      DATETIME(3) NOT NULL,
    updated_at      DATETIME(3) NOT NULL,
    UNIQUE (order_no, kind),
    INDEX effects_due (status, next_attempt_at),
    FOREIGN KEY (order_no) REFERENCES orders (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Stored first responses of POST /api/orders per (user, Idempotency-Key).
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id         BIGINT NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    request_hash    VARCHAR(64) NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    created_at      DATETIME(3) NOT NULL,
    PRIMARY KEY (user_id, idempotency_key),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
