-- Named queries: a block starts with "-- name: NAME", followed by a comment line
-- "-- params:" listing its positional parameters. Loaded once by janus/store/queries.py.

-- name: fence
-- params: $1 holder uuid, $2 epoch
-- Inside every leader transaction: lock the lease row (share) so no takeover can
-- commit before this transaction does, and prove we still hold it.
SELECT 1 FROM janus.leader
 WHERE holder = $1 AND epoch = $2 AND expires_at > now()
   FOR SHARE;

-- name: acquire_lease
-- params: $1 holder uuid, $2 lease seconds
-- Take the lease if nobody holds it, it has expired, or we hold it ourselves (a process whose
-- term ended on a failure starts its next one at once); every term gets a new epoch. Updating the
-- row waits for every tick still holding it FOR SHARE, so no earlier term commits after this.
INSERT INTO janus.leader AS l (singleton, holder, epoch, expires_at)
VALUES (true, $1, 1, now() + make_interval(secs => $2))
ON CONFLICT (singleton) DO UPDATE
   SET holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at
 WHERE l.expires_at <= now() OR l.holder = excluded.holder
RETURNING epoch;

-- name: record_term
-- params: $1 epoch, $2 holder uuid
INSERT INTO janus.leader_terms (epoch, holder) VALUES ($1, $2);

-- name: renew_lease
-- params: $1 holder uuid, $2 epoch, $3 lease seconds
UPDATE janus.leader SET expires_at = now() + make_interval(secs => $3)
 WHERE holder = $1 AND epoch = $2 AND expires_at > now()
RETURNING extract(epoch FROM expires_at)::double precision;

-- name: release_lease
-- params: $1 holder uuid, $2 epoch
UPDATE janus.leader SET expires_at = now() WHERE holder = $1 AND epoch = $2;

-- name: tick
-- params: $1 holder uuid, $2 epoch, $3 now,
--         $4 new job ids, $5 dependencies, $6 scopes, $7 payloads (JSON text or NULL), $8 states,
--         $9 attempts, $10 eligible_at, $11 admitted_at, $12 expires_at, $13 lease_deadline,
--         $14 changed job ids, $15 states, $16 attempts, $17 failures, $18 eligible_at,
--         $19 admitted_at, $20 expires_at, $21 lease_deadline, $22 last_error, $23 finished_at,
--         $24 admitted job ids, $25 attempts, $26 dependencies, $27 scopes, $28 admitted_at,
--         $29 new jobs' seq
-- Everything one admission tick writes, as ONE statement (one round trip, its own transaction).
-- The lease row is locked FOR SHARE first: no takeover can commit before this statement does,
-- and if this process no longer holds the lease, every part writes nothing and `leading` is 0.
-- New jobs are written once, in the state the core gave them (perhaps already admitted).
-- Publishing the same job_id again never creates a second job: the first one wins, the ids
-- returned are the jobs that are really new, and a repeat's admission is not recorded (the
-- service retracts it before publishing anything).
WITH lease AS (
    SELECT epoch FROM janus.leader
     WHERE holder = $1 AND epoch = $2 AND expires_at > now()
       FOR SHARE
), inserted AS (
    INSERT INTO janus.jobs (job_id, dependency, scope, payload, state, attempt, eligible_at,
                            admitted_at, expires_at, lease_deadline, created_at, seq)
    SELECT j, d, s, p::jsonb, st, a, e, ad, ex, l, $3, q
      FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int[],
                  $10::float8[], $11::float8[], $12::float8[], $13::float8[], $29::bigint[])
           AS t(j, d, s, p, st, a, e, ad, ex, l, q)
     WHERE EXISTS (SELECT 1 FROM lease)
        ON CONFLICT (job_id) DO NOTHING
    RETURNING job_id
), updated AS (
    UPDATE janus.jobs AS j
       SET state = u.state, attempt = u.attempt, failures = u.failures, eligible_at = u.eligible_at,
           admitted_at = u.admitted_at, expires_at = u.expires_at, lease_deadline = u.lease_deadline,
           last_error = u.last_error, finished_at = u.finished_at
      FROM unnest($14::text[], $15::text[], $16::int[], $17::int[], $18::float8[], $19::float8[],
                  $20::float8[], $21::float8[], $22::text[], $23::float8[])
           AS u(job_id, state, attempt, failures, eligible_at, admitted_at, expires_at, lease_deadline,
                last_error, finished_at)
     WHERE j.job_id = u.job_id AND EXISTS (SELECT 1 FROM lease)
    RETURNING 1
), admitted AS (
    INSERT INTO janus.admissions (job_id, attempt, dependency, scope, admitted_at, epoch)
    SELECT j, a, d, s, t, $2
      FROM unnest($24::text[], $25::int[], $26::text[], $27::text[], $28::float8[]) AS u(j, a, d, s, t)
     WHERE EXISTS (SELECT 1 FROM lease)
       AND (j <> ALL ($4::text[]) OR j IN (SELECT job_id FROM inserted))
    RETURNING 1
)
SELECT (SELECT count(*) FROM lease) AS leading,
       ARRAY(SELECT job_id FROM inserted) AS inserted,
       (SELECT count(*) FROM updated) AS updated,
       (SELECT count(*) FROM admitted) AS admitted;

-- name: load_active_jobs
-- params: none
-- What a new leader holds in memory: held jobs, and jobs admitted before that wait again
-- (retries, returned admissions). First attempts stay in the store (load_backlog, load_pages).
-- Ordered so that jobs eligible at the same time keep their arrival order.
SELECT job_id, dependency, scope, payload::text AS payload, seq, state, attempt, failures, eligible_at,
       admitted_at, expires_at, lease_deadline, last_error
  FROM janus.jobs
 WHERE state = 'admitted' OR (state = 'waiting' AND attempt > 0)
 ORDER BY eligible_at, seq;

-- name: load_backlog
-- params: none
-- Per scope, how many first attempts wait in the store, and the highest seq among them.
SELECT dependency, scope, count(*) AS waiting, max(seq) AS max_seq
  FROM janus.jobs
 WHERE state = 'waiting' AND attempt = 0
 GROUP BY dependency, scope;

-- name: load_pages
-- params: $1 dependencies, $2 scopes, $3 after seq, $4 limits (one page request per index)
-- The next first attempts of several scopes in one round trip, each in seq order.
SELECT r.ord, j.job_id, j.dependency, j.scope, j.payload::text AS payload, j.seq, j.state, j.attempt,
       j.failures, j.eligible_at, j.admitted_at, j.expires_at, j.lease_deadline, j.last_error
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[]) WITH ORDINALITY AS r(dep, sc, after, lim, ord)
 CROSS JOIN LATERAL (
        SELECT * FROM janus.jobs
         WHERE dependency = r.dep AND scope = r.sc AND state = 'waiting' AND attempt = 0 AND seq > r.after
         ORDER BY seq
         LIMIT r.lim
       ) AS j
 ORDER BY r.ord, j.seq;

-- name: load_admissions_since
-- params: $1 earliest admitted_at
SELECT dependency, scope, admitted_at FROM janus.admissions WHERE admitted_at > $1 ORDER BY admitted_at;

-- name: job_states
-- params: none
-- Every job's state: what the audit compares with the workers' records.
SELECT job_id, state FROM janus.jobs;

-- name: prune_admissions
-- params: $1 keep admissions after this time
DELETE FROM janus.admissions WHERE admitted_at <= $1;

-- name: database_time
-- params: none
SELECT extract(epoch FROM clock_timestamp())::double precision;

-- name: job_position
-- params: $1 job id
-- A job's row, and for a waiting first attempt how many of its scope's go before it.
SELECT j.job_id, j.dependency, j.scope, j.state, j.attempt, j.failures, j.seq, j.eligible_at, j.last_error,
       CASE WHEN j.state = 'waiting' AND j.attempt = 0 THEN (
           SELECT count(*) FROM janus.jobs AS o
            WHERE o.dependency = j.dependency AND o.scope = j.scope
              AND o.state = 'waiting' AND o.attempt = 0 AND o.seq < j.seq
       ) END AS ahead
  FROM janus.jobs AS j
 WHERE j.job_id = $1;
