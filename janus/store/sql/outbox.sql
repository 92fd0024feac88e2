-- What the broker confirmed after a tick's commit (migration 0006): the outbox of outcomes,
-- written by the tick statement (queries.sql, `tick`), and the ticks whose admissions were
-- all confirmed. Read at the start of a term; written in one batched statement.

-- name: outbox_unconfirmed
-- params: $1 epoch (rows written by earlier terms)
-- What earlier terms committed and never saw confirmed, oldest first: a new term publishes it.
SELECT id, job_id, routing_key, body FROM janus.outbox WHERE epoch < $1 ORDER BY created_at;

-- name: confirmations
-- params: $1 outbox ids confirmed, $2 sent ticks' admitted_at, $3 epoch, $4 forget sent ticks before this
-- ($2: the ticks whose admissions the broker all confirmed or refused)
-- One statement for every confirmation since the last. Not fenced: a confirmation is true
-- whoever leads (outbox ids are unique; a repeat deletes or inserts nothing).
WITH outbox AS (
    DELETE FROM janus.outbox WHERE id = ANY($1::uuid[]) RETURNING 1
), sent AS (
    INSERT INTO janus.sent_ticks (admitted_at, epoch)
    SELECT t, $3 FROM unnest($2::float8[]) AS t
        ON CONFLICT (admitted_at) DO NOTHING
    RETURNING 1
), forgotten AS (
    DELETE FROM janus.sent_ticks WHERE admitted_at < $4 RETURNING 1
)
SELECT (SELECT count(*) FROM outbox) AS outbox, (SELECT count(*) FROM sent) AS sent;

-- name: maybe_sent
-- params: $1 dependencies (NULL: every one; member mode: the term's own)
-- Admitted jobs whose admission the broker may never have had: its tick's commit is all a new
-- term knows of it (the leader died before the confirms were recorded).
SELECT job_id, attempt, lease_deadline FROM janus.jobs AS j
 WHERE state = 'admitted' AND ($1::text[] IS NULL OR dependency = ANY($1::text[]))
   AND NOT EXISTS (SELECT 1 FROM janus.sent_ticks AS s WHERE s.admitted_at = j.admitted_at);

-- name: outbox_unconfirmed_of
-- params: $1 dependencies, $2 created before (the term's start)
-- Member mode: what earlier terms of these dependencies left unconfirmed (the epoch of a row is
-- not comparable across dependencies, so rows are read by their job's dependency instead).
SELECT o.id, o.job_id, o.routing_key, o.body FROM janus.outbox AS o
  JOIN janus.jobs AS j ON j.job_id = o.job_id
 WHERE j.dependency = ANY($1::text[]) AND o.created_at < $2
 ORDER BY o.created_at;
