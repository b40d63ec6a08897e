-- The original platform's entities, plus the payment events and the effect outbox that the
-- order lifecycle needs. Timestamps are UTC, truncated to milliseconds by the engine.

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL CHECK (name <> ''),
    points         BIGINT NOT NULL CHECK (points >= 0),
    initial_points BIGINT NOT NULL CHECK (initial_points >= 0),
    created_at     TIMESTAMP NOT NULL
);

CREATE TABLE courses (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    title       TEXT NOT NULL CHECK (title <> ''),
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    on_sale     BOOLEAN NOT NULL,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE chapters (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    course_id BIGINT NOT NULL REFERENCES courses (id),
    position  INTEGER NOT NULL,
    title     TEXT NOT NULL CHECK (title <> ''),
    UNIQUE (course_id, position)
);

CREATE TABLE coupons (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    title           TEXT NOT NULL CHECK (title <> ''),
    discount_cents  BIGINT NOT NULL CHECK (discount_cents >= 1),
    min_spend_cents BIGINT NOT NULL CHECK (min_spend_cents >= 0),
    valid_until     TIMESTAMP,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE orders (
    order_no       VARCHAR(64) PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users (id),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'cancelled')),
    total_cents    BIGINT NOT NULL CHECK (total_cents >= 0),
    discount_cents BIGINT NOT NULL CHECK (discount_cents >= 0),
    points_used    BIGINT NOT NULL CHECK (points_used >= 0),
    payable_cents  BIGINT NOT NULL CHECK (payable_cents >= 0),
    user_coupon_id BIGINT REFERENCES user_coupons (id),
    created_at     TIMESTAMP NOT NULL,
    expires_at     TIMESTAMP NOT NULL,
    paid_at        TIMESTAMP,
    closed_at      TIMESTAMP,
    close_reason   TEXT CHECK (close_reason IN ('timeout', 'user', 'admin', 'payment_failed')),
    trade_no       VARCHAR(64),
    -- The engine process whose actor holds this pending order's timer.
    owner_node     VARCHAR(64),
    CHECK ((status = 'paid') = (paid_at IS NOT NULL)),
    CHECK ((status IN ('failed', 'cancelled')) = (closed_at IS NOT NULL AND close_reason IS NOT NULL))
);
CREATE INDEX orders_user_status ON orders (user_id, status);
CREATE INDEX orders_pending_expiry ON orders (expires_at) WHERE status = 'pending';
CREATE INDEX orders_status_order_no ON orders (status, order_no);

CREATE TABLE user_coupons (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    coupon_id  BIGINT NOT NULL REFERENCES coupons (id),
    status     TEXT NOT NULL CHECK (status IN ('unused', 'locked', 'used')),
    order_no   VARCHAR(64) REFERENCES orders (order_no),
    created_at TIMESTAMP NOT NULL,
    CHECK ((status = 'unused') = (order_no IS NULL))
);
CREATE INDEX user_coupons_user ON user_coupons (user_id);
-- A coupon is locked by, or used for, at most one order.
CREATE UNIQUE INDEX user_coupons_order ON user_coupons (order_no);

CREATE TABLE order_items (
    order_no    VARCHAR(64) NOT NULL REFERENCES orders (order_no),
    position    INTEGER NOT NULL,
    course_id   BIGINT NOT NULL REFERENCES courses (id),
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (order_no, position),
    UNIQUE (order_no, course_id)
);
CREATE INDEX order_items_course ON order_items (course_id);

-- The points ledger (score records): every change of a user's points.
CREATE TABLE points_ledger (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    order_no   VARCHAR(64) NOT NULL REFERENCES orders (order_no),
    kind       TEXT NOT NULL CHECK (kind IN ('spend', 'refund')),
    delta      BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (order_no, kind),
    CHECK ((kind = 'spend' AND delta < 0) OR (kind = 'refund' AND delta > 0))
);
CREATE INDEX points_ledger_user ON points_ledger (user_id);

CREATE TABLE user_courses (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    course_id  BIGINT NOT NULL REFERENCES courses (id),
    order_no   VARCHAR(64) REFERENCES orders (order_no),
    created_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, course_id)
);

CREATE TABLE user_course_chapters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    course_id  BIGINT NOT NULL REFERENCES courses (id),
    chapter_id BIGINT NOT NULL REFERENCES chapters (id),
    created_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, chapter_id)
);

-- Every payment callback that was accepted, with what it did.
CREATE TABLE payment_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    order_no         VARCHAR(64) NOT NULL REFERENCES orders (order_no),
    trade_no         VARCHAR(64) NOT NULL UNIQUE,
    code             BIGINT NOT NULL,
    amount_cents     BIGINT NOT NULL,
    provider_paid_at TIMESTAMP,
    received_at      TIMESTAMP NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('paid', 'failed', 'late_payment', 'double_payment', 'ignored'))
);
CREATE INDEX payment_events_order ON payment_events (order_no);
CREATE INDEX payment_events_refund_required ON payment_events (id) WHERE outcome IN ('late_payment', 'double_payment');

-- The effect outbox: written in the transition's transaction, applied by the grant and refund
-- actors, retried with backoff, dead-lettered after effects.max_attempts.
CREATE TABLE effects (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_no        VARCHAR(64) NOT NULL REFERENCES orders (order_no),
    kind            TEXT NOT NULL CHECK (kind IN ('grant', 'refund')),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'done', 'dead_lettered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TIMESTAMP NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    UNIQUE (order_no, kind)
);
CREATE INDEX effects_due ON effects (next_attempt_at) WHERE status = 'pending';

-- Stored first responses of POST /api/orders per (user, Idempotency-Key).
CREATE TABLE idempotency_keys (
    user_id         BIGINT NOT NULL REFERENCES users (id),
    idempotency_key VARCHAR(255) NOT NULL,
    request_hash    VARCHAR(64) NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
