-- Outcomes at least once (issue 18): the tick that finishes a job writes its outcome message
-- here, in the same statement as the job's new state; the leader publishes it after the commit
-- and deletes the row once the broker confirmed it (in a later, batched statement). Whatever a
-- term committed and did not see confirmed, the next term publishes again. Keyed by an id of
-- its own, not by (job_id, outcome): a dead job revived by `janus jobs retry` may die again, and
-- the confirmation of its first outcome must not delete the second.
CREATE TABLE janus.outbox (
    id uuid PRIMARY KEY,
    job_id text NOT NULL,
    routing_key text NOT NULL,
    body text NOT NULL,  -- the outcome message as published (JSON)
    epoch bigint NOT NULL,  -- the term that wrote it: a new term republishes earlier terms' rows
    created_at double precision NOT NULL
);
