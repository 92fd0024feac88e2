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

-- An admission that may never have reached the broker costs no attempt (issue 18). A tick's
-- admissions share its `admitted_at` (the core admits at one `now`); once the broker confirmed
-- (or refused) every one of them, the tick's `admitted_at` is recorded here, in a batched
-- statement after the publish. A new term treats an admitted job whose `admitted_at` is not
-- here as "maybe sent": held until its lease ends, then returned without charging an attempt.
-- Rows older than any lease are pruned by the same statement.
CREATE TABLE janus.sent_ticks (
    admitted_at double precision PRIMARY KEY,
    epoch bigint NOT NULL
);
