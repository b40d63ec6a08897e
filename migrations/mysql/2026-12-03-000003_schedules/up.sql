-- Schedules (SPEC "Schedules and webhooks"; src/schedules/, src/db/schedules.rs). One row per
-- configured schedule: `spec` is how its timing reads (a change re-plans it), `next_fire_at`
-- its earliest due time nobody has claimed (null: an `at` schedule that has run). A process
-- claims a due time by locking this row, moving next_fire_at on and inserting the run, in one
-- transaction.
CREATE TABLE IF NOT EXISTS schedules (
    name         VARCHAR(64) NOT NULL PRIMARY KEY,
    spec         TEXT NOT NULL,
    next_fire_at DATETIME(3),
    updated_at   DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One claimed due time of a schedule, run by node_id while its lease lasts (renewed as it
-- runs); a running run whose lease has passed died with its process and is taken over.
CREATE TABLE IF NOT EXISTS schedule_runs (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name        VARCHAR(64) NOT NULL,
    fire_at     DATETIME(3) NOT NULL,
    status      VARCHAR(16) NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    node_id     VARCHAR(64) NOT NULL,
    attempts    INTEGER NOT NULL,
    started_at  DATETIME(3) NOT NULL,
    finished_at DATETIME(3),
    lease_until DATETIME(3) NOT NULL,
    error       TEXT,
    UNIQUE (name, fire_at),
    -- A schedule's running run (at most one: runs of a schedule never overlap).
    INDEX schedule_runs_running (name, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
