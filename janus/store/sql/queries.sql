-- Named queries: a block starts with "-- name: NAME", followed by a comment line
-- "-- params:" listing its parameters: positional ($1, $2, ...) or, for the long statements,
-- named (:holder, :now, ...; bound by name). Loaded once by janus/store/queries.py.

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
-- params: :holder uuid, :epoch, :now,
--         :new_job_ids, :new_dependencies, :new_scopes, :new_payloads (JSON text or NULL),
--         :new_states, :new_attempts, :new_eligible_at, :new_admitted_at, :new_expires_at,
--         :new_lease_deadlines, :new_seqs, :new_costs,
--         :changed_job_ids, :changed_states, :changed_attempts, :changed_failures,
--         :changed_eligible_at, :changed_admitted_at, :changed_expires_at,
--         :changed_lease_deadlines, :changed_last_errors, :changed_finished_at,
--         :admitted_job_ids, :admitted_attempts, :admitted_dependencies, :admitted_scopes,
--         :admitted_at, :admitted_retries (the job had failed before: counts against the retry budget),
--         :admitted_units (the job's estimated cost, charged in its unit limits)
--         :outbox_ids, :outbox_job_ids, :outbox_routing_keys, :outbox_bodies (outcomes to publish)
--         :fenced (member mode: the caller's transaction locked the dependency leases first),
--         :fenced_dependencies, :fenced_epochs (their epochs, written into each admission)
-- (named: bound by name from store.session.TickParams, one array per column)
-- Everything one admission tick writes, as ONE statement (one round trip, its own transaction).
-- The lease row is locked FOR SHARE first: no takeover can commit before this statement does,
-- and if this process no longer holds the lease, every part writes nothing and `leading` is 0.
-- New jobs are written once, in the state the core gave them (perhaps already admitted).
-- Publishing the same job_id again never creates a second job: the first one wins, the ids
-- returned are the jobs that are really new, and a repeat's admission is not recorded (the
-- service retracts it before publishing anything).
-- The outcomes of the jobs this tick finishes go to the outbox in the same statement: published
-- after the commit, deleted once confirmed, published again by a new term if never confirmed.
WITH leader AS (
    SELECT epoch FROM janus.leader
     WHERE NOT :fenced::boolean AND holder = :holder AND epoch = :epoch AND expires_at > now()
       FOR SHARE
), lease AS (
    SELECT epoch FROM leader
    UNION ALL
    -- Member mode (docs/scale-out.md): janus.leader plays no part; the same transaction locked
    -- the lease rows of every dependency the tick writes for first (membership.sql, fence).
    SELECT :epoch WHERE :fenced::boolean
), inserted AS (
    INSERT INTO janus.jobs (job_id, dependency, scope, payload, state, attempt, eligible_at,
                            admitted_at, expires_at, lease_deadline, created_at, seq, cost)
    SELECT j, d, s, p::jsonb, st, a, e, ad, ex, l, :now, q, c
      FROM unnest(:new_job_ids::text[], :new_dependencies::text[], :new_scopes::text[],
                  :new_payloads::text[], :new_states::text[], :new_attempts::int[],
                  :new_eligible_at::float8[], :new_admitted_at::float8[], :new_expires_at::float8[],
                  :new_lease_deadlines::float8[], :new_seqs::bigint[], :new_costs::float8[])
           AS t(j, d, s, p, st, a, e, ad, ex, l, q, c)
     WHERE EXISTS (SELECT 1 FROM lease)
        -- The arbiter is the job_id's exclusion constraint (0009), the table's only one: an
        -- exclusion constraint cannot be named as a conflict target.
        ON CONFLICT DO NOTHING
    RETURNING job_id
), updated AS (
    UPDATE janus.jobs AS j
       SET state = u.state, attempt = u.attempt, failures = u.failures, eligible_at = u.eligible_at,
           admitted_at = u.admitted_at, expires_at = u.expires_at, lease_deadline = u.lease_deadline,
           last_error = u.last_error, finished_at = u.finished_at
      FROM unnest(:changed_job_ids::text[], :changed_states::text[], :changed_attempts::int[],
                  :changed_failures::int[], :changed_eligible_at::float8[], :changed_admitted_at::float8[],
                  :changed_expires_at::float8[], :changed_lease_deadlines::float8[],
                  :changed_last_errors::text[], :changed_finished_at::float8[])
           AS u(job_id, state, attempt, failures, eligible_at, admitted_at, expires_at, lease_deadline,
                last_error, finished_at)
     WHERE j.job_id = u.job_id AND EXISTS (SELECT 1 FROM lease)
    RETURNING 1
), admitted AS (
    -- An admission's epoch: its dependency's in member mode, else the leader's.
    INSERT INTO janus.admissions (job_id, attempt, dependency, scope, admitted_at, epoch, retry, units)
    SELECT j, a, d, s, t, COALESCE(f.epoch, :epoch), r, c
      FROM unnest(:admitted_job_ids::text[], :admitted_attempts::int[], :admitted_dependencies::text[],
                  :admitted_scopes::text[], :admitted_at::float8[], :admitted_retries::bool[],
                  :admitted_units::float8[])
           AS u(j, a, d, s, t, r, c)
      LEFT JOIN unnest(:fenced_dependencies::text[], :fenced_epochs::bigint[]) AS f(dependency, epoch)
             ON f.dependency = u.d
     WHERE EXISTS (SELECT 1 FROM lease)
       AND (j <> ALL (:new_job_ids::text[]) OR j IN (SELECT job_id FROM inserted))
    RETURNING 1
), outbox AS (
    INSERT INTO janus.outbox (id, job_id, routing_key, body, epoch, created_at)
    SELECT i, j, k, b, :epoch, :now
      FROM unnest(:outbox_ids::uuid[], :outbox_job_ids::text[], :outbox_routing_keys::text[],
                  :outbox_bodies::text[]) AS u(i, j, k, b)
     WHERE EXISTS (SELECT 1 FROM lease)
    RETURNING 1
)
SELECT (SELECT count(*) FROM lease) AS leading,
       ARRAY(SELECT job_id FROM inserted) AS inserted,
       (SELECT count(*) FROM updated) AS updated,
       (SELECT count(*) FROM admitted) AS admitted;

-- name: tick_retry_control
-- params: :now, :failed_job_ids, :failed_attempts, :failed_at, :failed_errors,
--         :gate_dependencies, :circuit_states, :circuit_since, :open_until, :open_for,
--         :pause_until
-- (named: bound by name from store.session.RetryControlParams, one array per column)
-- In the tick's transaction, after the tick statement (whose lease lock it shares), and only
-- when the tick failed attempts or changed a circuit or a pause: the error history, and
-- the gates a new leader must go on with.
WITH errors AS (
    INSERT INTO janus.attempt_errors (job_id, attempt, failed_at, error)
    SELECT j, a, f, e
      FROM unnest(:failed_job_ids::text[], :failed_attempts::int[], :failed_at::float8[],
                  :failed_errors::text[]) AS u(j, a, f, e)
        ON CONFLICT (job_id, attempt) DO NOTHING
    RETURNING 1
), gates AS (
    INSERT INTO janus.dependency_gates AS g (dependency, circuit_state, circuit_since, open_until, open_for,
                                             pause_until, updated_at)
    SELECT d, s, si, ou, o, p, :now
      FROM unnest(:gate_dependencies::text[], :circuit_states::text[], :circuit_since::float8[],
                  :open_until::float8[], :open_for::float8[], :pause_until::float8[])
           AS u(d, s, si, ou, o, p)
        ON CONFLICT (dependency) DO UPDATE
       SET circuit_state = excluded.circuit_state, circuit_since = excluded.circuit_since,
           open_until = excluded.open_until, open_for = excluded.open_for,
           pause_until = excluded.pause_until, updated_at = excluded.updated_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM errors) AS errors, (SELECT count(*) FROM gates) AS gates;

-- name: tick_adaptive
-- params: :now, :adaptive_dependencies, :rates, :concurrencies, :slow_starts, :reasons, :changed_at, :signals, :concurrency_slow_starts, :latency_floors
-- (named: bound by name from store.session.AdaptiveParams, one array per column)
-- In the tick's transaction, after the tick statement (whose lease lock fences it), only when
-- a dependency's adaptive limits changed in the tick.
INSERT INTO janus.adaptive_limits AS a (dependency, rate, concurrency, slow_start, reason, changed_at, updated_at,
                                        signal, concurrency_slow_start, latency_floor)
SELECT d, r, c, s, why, ch, :now, sig, cs, lf
  FROM unnest(:adaptive_dependencies::text[], :rates::float8[], :concurrencies::float8[],
              :slow_starts::bool[], :reasons::text[], :changed_at::float8[], :signals::text[],
              :concurrency_slow_starts::bool[], :latency_floors::float8[])
       AS u(d, r, c, s, why, ch, sig, cs, lf)
    ON CONFLICT (dependency) DO UPDATE
   SET rate = excluded.rate, concurrency = excluded.concurrency, slow_start = excluded.slow_start,
       reason = excluded.reason, changed_at = excluded.changed_at, updated_at = excluded.updated_at,
       signal = excluded.signal, concurrency_slow_start = excluded.concurrency_slow_start,
       latency_floor = excluded.latency_floor;

-- name: load_adaptive
-- params: none
SELECT dependency, rate, concurrency, slow_start, reason, changed_at, signal, concurrency_slow_start,
       latency_floor
  FROM janus.adaptive_limits;

-- name: load_adaptive_of
-- params: $1 dependencies (a member's snapshot: only the dependencies it leads)
SELECT dependency, rate, concurrency, slow_start, reason, changed_at, signal, concurrency_slow_start,
       latency_floor
  FROM janus.adaptive_limits
 WHERE dependency = ANY($1::text[]);

-- name: tick_settle_costs
-- params: :settled_job_ids, :settled_attempts, :settled_dependencies, :settled_admitted_at, :settled_costs, :settled_reported
-- (named: bound by name from store.session.SettleParams, one array per column)
-- In the tick's transaction, after the tick statement, only when results reported their actual
-- cost or admissions came back unused: the admission's units become that cost, or 0 (what a new
-- leader's unit windows hold), and the job keeps a reported cost beside its estimate. The
-- admission log has no key (0005): the admission is the one of that job, attempt and time.
WITH units AS (
    UPDATE janus.admissions AS a SET units = u.c
      FROM unnest(:settled_job_ids::text[], :settled_attempts::int[], :settled_dependencies::text[],
                  :settled_admitted_at::float8[], :settled_costs::float8[]) AS u(j, n, d, t, c)
     WHERE a.job_id = u.j AND a.attempt = u.n AND a.dependency = u.d AND a.admitted_at = u.t
    RETURNING 1
), jobs AS (
    UPDATE janus.jobs AS j SET actual_cost = u.c
      FROM unnest(:settled_job_ids::text[], :settled_costs::float8[], :settled_reported::bool[]) AS u(j, c, r)
     WHERE j.job_id = u.j AND u.r
    RETURNING 1
)
SELECT (SELECT count(*) FROM units) AS units, (SELECT count(*) FROM jobs) AS jobs;

-- name: load_gates
-- params: none
SELECT dependency, circuit_state, circuit_since, open_until, open_for, pause_until FROM janus.dependency_gates;

-- name: load_gates_of
-- params: $1 dependencies
SELECT dependency, circuit_state, circuit_since, open_until, open_for, pause_until
  FROM janus.dependency_gates
 WHERE dependency = ANY($1::text[]);

-- name: load_budget_admissions_since
-- params: $1 earliest admitted_at
SELECT dependency, admitted_at, retry FROM janus.admissions WHERE admitted_at > $1;

-- name: load_budget_admissions_since_of
-- params: $1 earliest admitted_at, $2 dependencies
SELECT dependency, admitted_at, retry FROM janus.admissions
 WHERE admitted_at > $1 AND dependency = ANY($2::text[]);

-- name: attempt_errors
-- params: $1 job id
SELECT attempt, failed_at, error FROM janus.attempt_errors WHERE job_id = $1 ORDER BY attempt;

-- name: job_state
-- params: $1 job id
SELECT state, dependency, scope, attempt, failures, last_error, finished_at FROM janus.jobs WHERE job_id = $1;

-- name: count_dead_jobs
-- params: $1 job id or NULL, $2 dependency or NULL, $3 scope or NULL
SELECT count(*) FROM janus.jobs
 WHERE state = 'dead' AND ($1::text IS NULL OR job_id = $1) AND ($2::text IS NULL OR dependency = $2)
   AND ($3::text IS NULL OR scope = $3);

-- name: request_retry
-- params: $1 job id or NULL, $2 dependency or NULL, $3 scope or NULL
INSERT INTO janus.retry_requests (job_id, dependency, scope) VALUES ($1, $2, $3) RETURNING id;

-- name: retry_request_status
-- params: $1 request id
SELECT handled_at IS NOT NULL AS handled, revived FROM janus.retry_requests WHERE id = $1;

-- name: retry_requests_pending
-- params: none
SELECT EXISTS (SELECT 1 FROM janus.retry_requests WHERE handled_at IS NULL);

-- name: take_retry_requests
-- params: none
-- In a fenced transaction: the requests to apply now, locked so that nobody else applies them.
SELECT id, job_id, dependency, scope FROM janus.retry_requests
 WHERE handled_at IS NULL ORDER BY id FOR UPDATE;

-- name: revive_dead_jobs
-- params: $1 now, $2 job id or NULL, $3 dependency or NULL, $4 scope or NULL, $5 configured dependencies
-- Dead jobs matching a request become waiting, eligible now, with no failures counted: a
-- fresh max_attempts. `attempt` keeps counting, so a late result of an old attempt stays stale.
UPDATE janus.jobs
   SET state = 'waiting', failures = 0, eligible_at = $1, admitted_at = NULL, expires_at = NULL,
       lease_deadline = NULL, finished_at = NULL
 WHERE state = 'dead' AND dependency = ANY ($5::text[])
   AND ($2::text IS NULL OR job_id = $2) AND ($3::text IS NULL OR dependency = $3)
   AND ($4::text IS NULL OR scope = $4)
RETURNING job_id, dependency, scope, payload::text AS payload, seq, state, attempt, failures, eligible_at,
          admitted_at, expires_at, lease_deadline, last_error, cost;

-- name: finish_retry_request
-- params: $1 request id, $2 jobs revived
UPDATE janus.retry_requests SET handled_at = now(), revived = $2 WHERE id = $1;

-- name: load_active_jobs
-- params: none
-- What a new leader holds in memory: held jobs, and jobs admitted before that wait again
-- (retries, returned admissions). First attempts stay in the store (load_backlog, load_pages).
-- Ordered so that jobs eligible at the same time keep their arrival order.
SELECT job_id, dependency, scope, payload::text AS payload, seq, state, attempt, failures, eligible_at,
       admitted_at, expires_at, lease_deadline, last_error, cost
  FROM janus.jobs
 WHERE state = 'admitted' OR (state = 'waiting' AND attempt > 0)
 ORDER BY eligible_at, seq;

-- name: load_active_jobs_of
-- params: $1 dependencies
-- load_active_jobs of these dependencies only. `state IN (...)` as jobs_active's predicate says,
-- so that the partial index on (dependency, eligible_at) serves the filter.
SELECT job_id, dependency, scope, payload::text AS payload, seq, state, attempt, failures, eligible_at,
       admitted_at, expires_at, lease_deadline, last_error, cost
  FROM janus.jobs
 WHERE state IN ('waiting', 'admitted') AND (state = 'admitted' OR attempt > 0)
   AND dependency = ANY($1::text[])
 ORDER BY eligible_at, seq;

-- name: load_backlog
-- params: none
-- Per scope, how many first attempts wait in the store, and the highest seq among them.
SELECT dependency, scope, count(*) AS waiting, max(seq) AS max_seq
  FROM janus.jobs
 WHERE state = 'waiting' AND attempt = 0
 GROUP BY dependency, scope;

-- name: load_backlog_of
-- params: $1 dependencies
SELECT dependency, scope, count(*) AS waiting, max(seq) AS max_seq
  FROM janus.jobs
 WHERE state = 'waiting' AND attempt = 0 AND dependency = ANY($1::text[])
 GROUP BY dependency, scope;

-- name: load_pages
-- params: $1 dependencies, $2 scopes, $3 after seq, $4 limits (one page request per index)
-- The next first attempts of several scopes in one round trip, each in seq order.
SELECT r.ord, j.job_id, j.dependency, j.scope, j.payload::text AS payload, j.seq, j.state, j.attempt,
       j.failures, j.eligible_at, j.admitted_at, j.expires_at, j.lease_deadline, j.last_error, j.cost
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
SELECT dependency, scope, admitted_at, job_id, attempt, units FROM janus.admissions WHERE admitted_at > $1 ORDER BY admitted_at;

-- name: load_admissions_since_of
-- params: $1 earliest admitted_at, $2 dependencies
SELECT dependency, scope, admitted_at, job_id, attempt, units FROM janus.admissions
 WHERE admitted_at > $1 AND dependency = ANY($2::text[])
 ORDER BY admitted_at;

-- name: job_states
-- params: none
-- Every job's state: what the audit compares with the workers' records.
SELECT job_id, state FROM janus.jobs;

-- name: dead_jobs
-- params: none
-- The jobs Janus gave up on, in the order they died.
SELECT job_id, dependency, last_error FROM janus.jobs WHERE state = 'dead' ORDER BY finished_at;

-- name: finished_count
-- params: none
SELECT count(*) AS finished FROM janus.jobs WHERE state IN ('succeeded', 'dead');

-- name: prune_admissions
-- params: $1 keep admissions after this time
DELETE FROM janus.admissions WHERE admitted_at <= $1;

-- name: who_leads
-- params: none
-- The lease as it stands, and the host its holder connects from (each process names its
-- connections janus-<holder>): what a standby answers when asked who leads.
SELECT l.holder, l.epoch, l.expires_at > now() AS live,
       (SELECT host(a.client_addr) FROM pg_stat_activity a
         WHERE a.application_name = 'janus-' || l.holder::text
         ORDER BY a.client_addr NULLS LAST LIMIT 1) AS address
  FROM janus.leader l;

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

-- name: database_exists
-- params: $1 database name
-- On a maintenance connection (janus migrate --create): is there a database of that name?
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1);

-- name: reported_attempts
-- params: $1 job ids, $2 attempts (one reported result per index)
-- For the rare results the core could not apply: the job's dependency, state and latest attempt,
-- and the error recorded for the reported attempt if it failed (core/repeats.py tells a repeat
-- of an applied result from a stale one with them). No row for a job the store never had.
SELECT r.ord, j.dependency, j.state, j.attempt, e.error
  FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS r(job_id, attempt, ord)
  JOIN janus.jobs AS j ON j.job_id = r.job_id
  LEFT JOIN janus.attempt_errors AS e ON e.job_id = r.job_id AND e.attempt = r.attempt;

-- name: prune_succeeded
-- params: $1 dependency, $2 finished before (Unix seconds), $3 at most this many jobs
-- One bounded batch of retention pruning, in a fenced leader transaction: the oldest succeeded
-- jobs of a dependency past its retention, with their error history. Rows another transaction
-- holds are skipped, never waited for; FOR UPDATE re-checks each row's state and finished_at
-- once locked, so a job that changed meanwhile is not deleted. (Two blocks with the state
-- written out, not one with a parameter: only then can a generic plan use the partial index.)
WITH victims AS (
    SELECT job_id FROM janus.jobs
     WHERE state = 'succeeded' AND dependency = $1 AND finished_at < $2
     ORDER BY finished_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), errors AS (
    DELETE FROM janus.attempt_errors WHERE job_id IN (SELECT job_id FROM victims)
), pruned AS (
    DELETE FROM janus.jobs WHERE job_id IN (SELECT job_id FROM victims) RETURNING 1
)
SELECT count(*) AS pruned FROM pruned;

-- name: prune_dead
-- params: $1 dependency, $2 finished before (Unix seconds), $3 at most this many jobs
-- As prune_succeeded, for dead jobs. A dead job revived by `janus jobs retry` is waiting again
-- (the re-check excludes it); one being revived now is locked (skipped).
WITH victims AS (
    SELECT job_id FROM janus.jobs
     WHERE state = 'dead' AND dependency = $1 AND finished_at < $2
     ORDER BY finished_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), errors AS (
    DELETE FROM janus.attempt_errors WHERE job_id IN (SELECT job_id FROM victims)
), pruned AS (
    DELETE FROM janus.jobs WHERE job_id IN (SELECT job_id FROM victims) RETURNING 1
)
SELECT count(*) AS pruned FROM pruned;

-- name: prune_retry_requests
-- params: $1 handled before (Unix seconds), $2 at most this many
-- One bounded batch, in a fenced leader transaction: `janus jobs retry` requests handled long
-- ago. A pending request (handled_at NULL) is never deleted; one being handled is skipped.
WITH victims AS (
    SELECT id FROM janus.retry_requests
     WHERE handled_at < to_timestamp($1)
     ORDER BY id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
DELETE FROM janus.retry_requests WHERE id IN (SELECT id FROM victims);

-- name: prune_leader_terms
-- params: $1 started before (Unix seconds), $2 at most this many
-- One bounded batch, in a fenced leader transaction: terms that started long ago, never the
-- one in force. Epochs stay unique without them: a new term's epoch is the lease row's + 1.
WITH victims AS (
    SELECT epoch FROM janus.leader_terms
     WHERE started_at < to_timestamp($1) AND epoch < (SELECT epoch FROM janus.leader)
     ORDER BY epoch
     LIMIT $2
)
DELETE FROM janus.leader_terms WHERE epoch IN (SELECT epoch FROM victims);

-- name: oldest_finished
-- params: none
-- Per terminal state and dependency, the oldest finished_at: a skip scan of the partial indexes
-- (one probe per dependency), however many rows they hold.
WITH RECURSIVE succeeded AS (
    (SELECT dependency FROM janus.jobs WHERE state = 'succeeded' ORDER BY dependency LIMIT 1)
    UNION ALL
    SELECT (SELECT j.dependency FROM janus.jobs AS j
             WHERE j.state = 'succeeded' AND j.dependency > s.dependency ORDER BY j.dependency LIMIT 1)
      FROM succeeded AS s WHERE s.dependency IS NOT NULL
), dead AS (
    (SELECT dependency FROM janus.jobs WHERE state = 'dead' ORDER BY dependency LIMIT 1)
    UNION ALL
    SELECT (SELECT j.dependency FROM janus.jobs AS j
             WHERE j.state = 'dead' AND j.dependency > d.dependency ORDER BY j.dependency LIMIT 1)
      FROM dead AS d WHERE d.dependency IS NOT NULL
)
SELECT 'succeeded' AS state, s.dependency,
       (SELECT min(j.finished_at) FROM janus.jobs AS j
         WHERE j.state = 'succeeded' AND j.dependency = s.dependency) AS oldest
  FROM succeeded AS s WHERE s.dependency IS NOT NULL
UNION ALL
SELECT 'dead' AS state, d.dependency,
       (SELECT min(j.finished_at) FROM janus.jobs AS j
         WHERE j.state = 'dead' AND j.dependency = d.dependency) AS oldest
  FROM dead AS d WHERE d.dependency IS NOT NULL;

-- name: table_sizes
-- params: $1 table names (in schema janus)
-- Cheap at any size: live rows as PostgreSQL's statistics count them (not count(*)), and the
-- bytes on disk with indexes and TOAST.
SELECT s.relname AS name, s.n_live_tup AS live_rows, pg_total_relation_size(s.relid) AS bytes
  FROM pg_stat_user_tables AS s
 WHERE s.schemaname = 'janus' AND s.relname = ANY ($1::text[]);

-- name: limit_statement_time
-- params: $1 milliseconds (text)
-- For the rest of this transaction: a statement running longer is cancelled (the transaction
-- rolls back), so a pruning batch cannot keep the lease row locked past its budget.
SELECT set_config('statement_timeout', $1, true);

-- name: autovacuum_on
-- params: none
SELECT current_setting('autovacuum')::boolean;

-- name: table_churn
-- params: $1 table names (in schema janus)
-- What autovacuum decides by: live and dead rows, and rows changed since the last ANALYZE.
SELECT relname AS name, n_live_tup AS live_rows, n_dead_tup AS dead_rows,
       n_mod_since_analyze AS changed_rows
  FROM pg_stat_user_tables
 WHERE schemaname = 'janus' AND relname = ANY ($1::text[]);

-- name: vacuum_jobs
-- params: none
-- Only when the server's autovacuum is off (janus/service/retention.py). Outside a transaction;
-- takes no lock that DML waits for. TRUNCATE false: giving empty trailing pages back to the
-- operating system would take an exclusive lock that the ticks would wait for.
VACUUM (ANALYZE, TRUNCATE false) janus.jobs;

-- name: vacuum_attempt_errors
-- params: none
VACUUM (ANALYZE, TRUNCATE false) janus.attempt_errors;

-- name: vacuum_admissions
-- params: none
VACUUM (ANALYZE, TRUNCATE false) janus.admissions;

-- name: vacuum_retry_requests
-- params: none
VACUUM (ANALYZE, TRUNCATE false) janus.retry_requests;

-- name: vacuum_leader_terms
-- params: none
VACUUM (ANALYZE, TRUNCATE false) janus.leader_terms;

-- name: job_dependencies
-- params: $1 job ids
-- The dependency of each of these jobs the store has: a job id published again after its job
-- finished is a duplicate for the same dependency, and set aside for another.
SELECT j.job_id, j.dependency
  FROM unnest($1::text[]) AS r(job_id)
  JOIN janus.jobs AS j ON j.job_id = r.job_id;
