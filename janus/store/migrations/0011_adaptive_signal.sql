-- Adaptive limits (issue 16): the rest of what a new leader needs to go on where the last one
-- stopped. `signal` is the metric label of the last move (`reason` is its sentence); the
-- concurrency's own slow start (off once latency left its floor: a new leader must not grow
-- by slow start's steps past a knee already found) and its latency floor (else re-learnt from
-- the first round, which may queue).
ALTER TABLE janus.adaptive_limits
    ADD COLUMN signal                  text,              -- NULL: not moved yet
    ADD COLUMN concurrency_slow_start  boolean NOT NULL DEFAULT true,
    ADD COLUMN latency_floor           double precision;  -- seconds; NULL: not measured yet
