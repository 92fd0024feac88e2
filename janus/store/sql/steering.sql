-- The policy of record and operators' steering (migration 0004). Loaded with queries.sql.

-- name: lock_policy_versions
-- params: none
-- Recording a version: one at a time, so that each diff is against the version before it.
LOCK TABLE janus.policy_versions IN SHARE ROW EXCLUSIVE MODE;

-- name: newest_policy_version
-- params: none
SELECT version, policy, applied_at IS NOT NULL AS applied FROM janus.policy_versions ORDER BY version DESC LIMIT 1;

-- name: newest_version_number
-- params: none
-- What the leader polls for: a number, not the policy.
SELECT max(version) AS version FROM janus.policy_versions;

-- name: policy_versions
-- params: none
-- Every version, oldest first: the last policy of a dependency removed since is in one of them.
SELECT version, policy FROM janus.policy_versions ORDER BY version;

-- name: record_policy_version
-- params: $1 version, $2 policy (JSON text), $3 actor, $4 reason or NULL, $5 diff
INSERT INTO janus.policy_versions (version, policy, actor, reason, diff) VALUES ($1, $2, $3, $4, $5);

-- name: mark_version_applied
-- params: $1 version, $2 epoch
UPDATE janus.policy_versions SET applied_at = now(), applied_epoch = $2 WHERE version = $1 AND applied_at IS NULL;

-- name: running_version
-- params: none
-- The newest version a leader has run: `janus apply` waits until it reaches its own.
SELECT max(version) AS version FROM janus.policy_versions WHERE applied_at IS NOT NULL;

-- name: record_steering
-- params: $1 dependency, $2 kind, $3 seconds it lasts or NULL, $4 concurrency or NULL, $5 rate limits or NULL, $6 actor, $7 reason or NULL
INSERT INTO janus.steering (dependency, kind, until, concurrency, rate_limits, actor, reason)
VALUES ($1, $2, extract(epoch FROM now())::double precision + $3::double precision, $4, $5::text[], $6, $7)
RETURNING id, until;

-- name: steering_in_force
-- params: none
-- The latest pause-or-resume and the latest override-or-clear of each dependency.
SELECT DISTINCT ON (dependency, kind IN ('pause', 'resume'))
       id, dependency, kind, until, concurrency, rate_limits, actor, reason
  FROM janus.steering
 ORDER BY dependency, kind IN ('pause', 'resume'), id DESC;

-- name: max_steering_id
-- params: none
SELECT coalesce(max(id), 0) AS id FROM janus.steering;

-- name: steering_pending
-- params: none
SELECT EXISTS (SELECT 1 FROM janus.steering WHERE applied_at IS NULL) AS pending;

-- name: mark_steering_applied
-- params: $1 up to this id, $2 epoch
UPDATE janus.steering SET applied_at = now(), applied_epoch = $2 WHERE applied_at IS NULL AND id <= $1;

-- name: steering_applied
-- params: $1 id
SELECT applied_at IS NOT NULL AS applied FROM janus.steering WHERE id = $1;

-- name: leader_alive
-- params: none
SELECT EXISTS (SELECT 1 FROM janus.leader WHERE expires_at > now()) AS alive;

-- name: change_history
-- params: $1 dependency or NULL
-- Every change, oldest first: versions (`dependency` filters by the diff's lines) and steering.
SELECT 'version' AS what, version AS id, NULL::text AS dependency, NULL::text AS kind, NULL::double precision AS until,
       NULL::integer AS concurrency, NULL::text[] AS rate_limits, actor, reason, diff, created_at, applied_at
  FROM janus.policy_versions
 WHERE $1::text IS NULL OR strpos(diff, 'dependencies.' || $1::text || '.') > 0
    OR strpos(diff, 'dependencies.' || $1::text || ':') > 0
UNION ALL
SELECT 'steering', id, dependency, kind, until, concurrency, rate_limits, actor, reason, NULL, created_at, applied_at
  FROM janus.steering
 WHERE $1::text IS NULL OR dependency = $1::text
 ORDER BY created_at, id;

-- name: record_first_version
-- params: $1 policy (JSON text), $2 actor, $3 reason, $4 diff
-- `janus run` on an empty table: its file becomes version 1 (nothing if a version exists).
INSERT INTO janus.policy_versions (version, policy, actor, reason, diff, applied_at)
SELECT 1, $1, $2, $3, $4, NULL WHERE NOT EXISTS (SELECT 1 FROM janus.policy_versions);

-- name: recent_changes
-- params: $1 how many
-- The newest changes, newest first (the status page's "recent changes"): versions and steering.
(SELECT 'version' AS what, version AS id, NULL::text AS dependency, NULL::text AS kind,
        NULL::double precision AS until, NULL::integer AS concurrency, NULL::text[] AS rate_limits,
        actor, reason, diff, created_at, applied_at
   FROM janus.policy_versions ORDER BY version DESC LIMIT $1)
UNION ALL
(SELECT 'steering', id, dependency, kind, until, concurrency, rate_limits, actor, reason, NULL, created_at, applied_at
   FROM janus.steering ORDER BY id DESC LIMIT $1)
ORDER BY created_at DESC, id DESC
LIMIT $1;
