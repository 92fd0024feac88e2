-- Adaptive limits (issue 16): each dependency's current adaptive rate and concurrency, written
-- in the tick that changes them (at most once per round, a second or more), so that a new
-- leader starts from the last limits rather than from max_rate or a slow start.
CREATE TABLE janus.adaptive_limits (
    dependency   text PRIMARY KEY,
    rate         double precision,          -- calls per second; NULL: the rate does not adapt
    concurrency  double precision,          -- NULL: the concurrency does not adapt
    slow_start   boolean NOT NULL,          -- no throttle seen yet: the rate still doubles
    reason       text NOT NULL,             -- the signal that moved them last, for operators
    changed_at   double precision NOT NULL,
    updated_at   double precision NOT NULL
);
