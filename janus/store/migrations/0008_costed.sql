-- Costed jobs (issue 23): a job's estimated cost (intake `cost`), the actual cost its worker
-- reported, and the units each admission holds in the dependency's unit limits (the estimate,
-- replaced by the actual cost when the result settles it). A new leader rebuilds its unit
-- windows from admissions.units. Defaults of 1: every job before this counted as one.
ALTER TABLE janus.jobs ADD COLUMN cost double precision NOT NULL DEFAULT 1;
ALTER TABLE janus.jobs ADD COLUMN actual_cost double precision;
ALTER TABLE janus.admissions ADD COLUMN units double precision NOT NULL DEFAULT 1;
