-- Fair share pages waiting first attempts in per scope, in submission order: the leader
-- keeps only the head of each scope's backlog in memory (docs/fairness.md).

ALTER TABLE janus.jobs ADD COLUMN seq bigint;
UPDATE janus.jobs AS j SET seq = r.n
  FROM (SELECT job_id, row_number() OVER (ORDER BY created_at, job_id) AS n FROM janus.jobs) AS r
 WHERE j.job_id = r.job_id;
ALTER TABLE janus.jobs ALTER COLUMN seq SET NOT NULL;

CREATE INDEX jobs_scope_backlog ON janus.jobs (dependency, scope, seq) WHERE state = 'waiting' AND attempt = 0;
