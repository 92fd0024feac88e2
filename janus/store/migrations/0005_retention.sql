-- Retention (issue 25): the leader deletes finished jobs past their state's retention, oldest
-- first, per dependency. One partial index per terminal state, so that each pruning batch is an
-- index range scan of exactly the rows it may delete (a dead job kept 14 days is never read by
-- the pruning of successes kept one day), and so that the oldest finished job of each
-- dependency is one index probe. Literal states: the pool plans statements generically, and a
-- generic plan can use a partial index only if the query names its predicate literally.
-- (On a large existing table this builds while writes wait: docs/operations.md, Upgrade.)
CREATE INDEX jobs_succeeded_finished ON janus.jobs (dependency, finished_at) WHERE state = 'succeeded';
CREATE INDEX jobs_dead_finished ON janus.jobs (dependency, finished_at) WHERE state = 'dead';

-- A job_id may come back as a new job once its finished job is pruned, and its new first
-- admission is (job_id, 1) again while the old one may still be in the admission log (kept
-- for the rate windows, an hour or more): the log's key would refuse it and fail the tick.
-- Nothing looks admissions up by job; they are read and pruned by admitted_at only.
ALTER TABLE janus.admissions DROP CONSTRAINT admissions_pkey;
