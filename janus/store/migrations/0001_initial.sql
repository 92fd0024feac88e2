-- Jobs, the admission history that rate windows are rebuilt from, and the leader lease.
-- Times are Unix seconds (double precision), the same numbers the wire carries.

CREATE TABLE janus.jobs (
    job_id          text PRIMARY KEY,
    dependency      text NOT NULL,
    scope           text NOT NULL,
    payload         jsonb,
    state           text NOT NULL CHECK (state IN ('waiting', 'admitted', 'succeeded', 'dead')),
    attempt         integer NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    eligible_at     double precision NOT NULL,
    admitted_at     double precision,
    expires_at      double precision,
    lease_deadline  double precision,
    last_error      text,
    created_at      double precision NOT NULL,
    finished_at     double precision
);

-- The leader reloads only unfinished jobs; finished ones are kept for deduplication.
CREATE INDEX jobs_active ON janus.jobs (dependency, eligible_at) WHERE state IN ('waiting', 'admitted');

-- Every admission ever committed (pruned beyond the longest rate window): a committed
-- admission may have been published, so it counts against the rate even if unused.
CREATE TABLE janus.admissions (
    job_id       text NOT NULL,
    attempt      integer NOT NULL,
    dependency   text NOT NULL,
    scope        text NOT NULL,
    admitted_at  double precision NOT NULL,
    epoch        bigint NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX admissions_window ON janus.admissions (admitted_at);

-- One row: who leads, until when (database clock), and the term it leads in.
CREATE TABLE janus.leader (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder      uuid NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Every term ever started: two processes never share an epoch.
CREATE TABLE janus.leader_terms (
    epoch       bigint PRIMARY KEY,
    holder      uuid NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);
