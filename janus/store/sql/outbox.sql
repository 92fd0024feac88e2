-- The outbox of outcomes (migration 0006): written by the tick statement (queries.sql, `tick`),
-- read and pruned here.

-- name: outbox_unconfirmed
-- params: $1 epoch (rows written by earlier terms)
-- What earlier terms committed and never saw confirmed, oldest first: a new term publishes it.
SELECT id, job_id, routing_key, body FROM janus.outbox WHERE epoch < $1 ORDER BY created_at;

-- name: outbox_confirmed
-- params: $1 ids
-- Confirmed by the broker: nothing left to send. Not fenced: deleting a confirmed outcome is
-- right whoever leads (ids are unique; a repeat of the delete deletes nothing).
DELETE FROM janus.outbox WHERE id = ANY($1::uuid[]);
