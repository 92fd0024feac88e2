-- The job_id's uniqueness through a hash index instead of the primary key's B-tree.
-- Every new job is checked against, and inserted into, the index of every stored job's id: with
-- ids as random as UUIDs, each lands on a random page of it. A B-tree of 32-character ids takes
-- about 70 bytes a job and is descended level by level; a hash index keeps a 4-byte hash code
-- a job (about 25 bytes with its overhead, a third of the size) and reaches the one bucket page
-- directly. Over a day of history the smaller index stays in PostgreSQL's shared buffers far
-- longer, and each checkpoint's first write to a page (a full-page image in the WAL) is shared
-- by three times as many jobs: docs/benchmarks.md, retention_history.
-- PostgreSQL's hash indexes cannot be UNIQUE, but can back an exclusion constraint with `=`:
-- the same guarantee, the same arbiter for the tick's ON CONFLICT DO NOTHING (which then names
-- no column: an exclusion constraint is an arbiter only when none is named). The column stays
-- NOT NULL. Nothing needs the ids' order, and every lookup by job_id is an equality.
-- (On a large existing table this builds while writes wait: docs/operations.md, Upgrade.)
ALTER TABLE janus.jobs DROP CONSTRAINT jobs_pkey;
ALTER TABLE janus.jobs ADD CONSTRAINT jobs_job_id_unique EXCLUDE USING hash (job_id WITH =);
