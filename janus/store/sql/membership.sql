-- Members and per-dependency leases (migration 0010, docs/scale-out.md): janus/store/membership.py.

-- name: heartbeat_member
-- params: $1 member uuid, $2 host, $3 ttl seconds
-- Returns the database's clock, the one every expiry is on.
INSERT INTO janus.members AS m (member, host, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (member) DO UPDATE
   SET heartbeat_at = now(), expires_at = excluded.expires_at, host = excluded.host
RETURNING extract(epoch FROM now())::double precision;

-- name: leave_members
-- params: $1 member uuid
DELETE FROM janus.members WHERE member = $1;

-- name: assignment_view
-- params: none
-- Members and leases with the database's clock, in one statement: one consistent view.
SELECT 'member' AS kind, member::text AS name, NULL::text AS holder, NULL::bigint AS epoch,
       extract(epoch FROM expires_at)::double precision AS expires_at, host,
       extract(epoch FROM now())::double precision AS now
  FROM janus.members
UNION ALL
SELECT 'lease', dependency, holder::text, epoch, extract(epoch FROM expires_at)::double precision,
       NULL, extract(epoch FROM now())::double precision
  FROM janus.dependency_leases
UNION ALL
SELECT 'clock', NULL, NULL, NULL, NULL, NULL, extract(epoch FROM now())::double precision;

-- name: lock_assignment_shared
-- params: none
-- Before a claim, in its transaction: orders claims against janus.leader_guard (migration 0010).
-- A statement of its own, so that the claim's snapshot is taken after the lock is granted.
SELECT pg_advisory_xact_lock_shared(456901162349);

-- name: claim_dependency
-- params: $1 dependency, $2 holder uuid, $3 lease seconds
-- Take a dependency's lease if it is absent, expired or ours, and only for a live member, and
-- only while janus.leader is not held live by a process that is not a member (an earlier
-- version leading everything). Every take grows the epoch and records the term. Updating the
-- row waits for every transaction holding it FOR SHARE: no earlier owner commits after this.
WITH legacy AS (
    SELECT 1 FROM janus.leader AS l
     WHERE l.expires_at > now() AND l.holder <> $2
       AND NOT EXISTS (SELECT 1 FROM janus.members AS m WHERE m.member = l.holder AND m.expires_at > now())
), claimed AS (
    INSERT INTO janus.dependency_leases AS d (dependency, holder, epoch, expires_at)
    SELECT $1, $2, 1, now() + make_interval(secs => $3)
     WHERE NOT EXISTS (SELECT 1 FROM legacy)
       AND EXISTS (SELECT 1 FROM janus.members WHERE member = $2 AND expires_at > now())
    ON CONFLICT (dependency) DO UPDATE
       SET holder = excluded.holder, epoch = d.epoch + 1, expires_at = excluded.expires_at
     WHERE d.expires_at <= now() OR d.holder = excluded.holder
    RETURNING epoch
)
INSERT INTO janus.dependency_terms (dependency, epoch, holder)
SELECT $1, epoch, $2 FROM claimed
RETURNING epoch;

-- name: renew_dependencies
-- params: $1 holder uuid, $2 dependencies text[], $3 epochs bigint[], $4 lease seconds
-- Each lease only for its holder and epoch, while unexpired; returns the ones renewed.
UPDATE janus.dependency_leases AS d SET expires_at = now() + make_interval(secs => $4)
  FROM unnest($2::text[], $3::bigint[]) AS r(dependency, epoch)
 WHERE d.dependency = r.dependency AND d.holder = $1 AND d.epoch = r.epoch AND d.expires_at > now()
RETURNING d.dependency;

-- name: release_dependency
-- params: $1 dependency, $2 holder uuid, $3 epoch
UPDATE janus.dependency_leases SET expires_at = now()
 WHERE dependency = $1 AND holder = $2 AND epoch = $3 AND expires_at > now();

-- name: fence_dependencies
-- params: $1 holder uuid, $2 dependencies text[], $3 epochs bigint[]
-- Inside every write for these dependencies: lock their lease rows (share) so that no claim
-- commits before this transaction does; returns the ones still held.
SELECT d.dependency FROM janus.dependency_leases AS d
  JOIN unnest($2::text[], $3::bigint[]) AS r(dependency, epoch) ON r.dependency = d.dependency
 WHERE d.holder = $1 AND d.epoch = r.epoch AND d.expires_at > now()
   FOR SHARE OF d;

-- name: prune_members
-- params: $1 seconds
-- Members gone for longer than $1 seconds (a crashed process's row; a stopped one deletes its own).
DELETE FROM janus.members WHERE expires_at < now() - make_interval(secs => $1);

-- name: prune_dependency_terms
-- params: $1 started before (Unix seconds), $2 at most this many
-- One bounded batch: terms that started long ago, never one in force. Epochs stay unique
-- without them: a new term's epoch is its lease row's + 1.
WITH victims AS (
    SELECT t.dependency, t.epoch FROM janus.dependency_terms AS t
      JOIN janus.dependency_leases AS d ON d.dependency = t.dependency
     WHERE t.started_at < to_timestamp($1) AND t.epoch < d.epoch
     ORDER BY t.started_at
     LIMIT $2
)
DELETE FROM janus.dependency_terms AS t USING victims AS v
 WHERE t.dependency = v.dependency AND t.epoch = v.epoch;

-- name: owners_view
-- params: none
-- Who leads what, for operators (`janus status`, /status, /readyz, the owners metrics), in one
-- statement on the database's clock: each live member with its heartbeat's age, and each
-- dependency's lease with its holder's host, whether the lease and its holder are live, and
-- when its term started.
WITH clock AS (SELECT now() AS now)
SELECT 'member' AS kind, m.member::text AS name, m.host, NULL::text AS holder, NULL::bigint AS epoch,
       extract(epoch FROM m.started_at)::double precision AS started_at,
       extract(epoch FROM c.now - m.heartbeat_at)::double precision AS heartbeat_age,
       extract(epoch FROM m.expires_at)::double precision AS expires_at,
       TRUE AS live, NULL::boolean AS holder_live, extract(epoch FROM c.now)::double precision AS now
  FROM janus.members AS m, clock AS c
 WHERE m.expires_at > c.now
UNION ALL
SELECT 'lease', d.dependency, m.host, d.holder::text, d.epoch,
       extract(epoch FROM t.started_at)::double precision, NULL,
       extract(epoch FROM d.expires_at)::double precision,
       d.expires_at > c.now, coalesce(m.expires_at > c.now, FALSE),
       extract(epoch FROM c.now)::double precision
  FROM janus.dependency_leases AS d
 CROSS JOIN clock AS c
  LEFT JOIN janus.dependency_terms AS t ON t.dependency = d.dependency AND t.epoch = d.epoch
  LEFT JOIN janus.members AS m ON m.member = d.holder
UNION ALL
SELECT 'clock', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, extract(epoch FROM c.now)::double precision
  FROM clock AS c;

-- name: mark_steering_applied_of
-- params: $1 up to this id, $2 dependencies text[], $3 epochs bigint[]
-- Member mode, in a transaction fenced by these dependencies' leases: their owner applied every
-- steering row of theirs up to $1. Each row gets its dependency's epoch.
UPDATE janus.steering AS s SET applied_at = now(), applied_epoch = r.epoch
  FROM unnest($2::text[], $3::bigint[]) AS r(dependency, epoch)
 WHERE s.applied_at IS NULL AND s.id <= $1 AND s.dependency = r.dependency;

-- name: revived_up_to
-- params: none
-- Member mode: the newest `janus jobs retry` request that revived jobs (the global holder applied
-- it, fenced by the global lease): an owner whose term began before it rebuilds to take them.
SELECT COALESCE((SELECT id FROM janus.retry_requests WHERE handled_at IS NOT NULL AND revived > 0
                  ORDER BY id DESC LIMIT 1), 0) AS id;
