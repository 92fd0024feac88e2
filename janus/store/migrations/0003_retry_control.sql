-- Retry control (issue 4): what a new leader needs to keep the retry budget, the circuit
-- and the Retry-After pause of every dependency where the last one left them; the error
-- history of failed attempts; and requests to give dead jobs another chance.

-- An admission of a job that had failed before counts against the retry budget.
ALTER TABLE janus.admissions ADD COLUMN retry boolean NOT NULL DEFAULT false;

-- One row per failed attempt (result of failure or lease time-out): a dead job's history.
-- Bounded per job by max_attempts per life (errors are truncated to 2,000 characters).
CREATE TABLE janus.attempt_errors (
    job_id      text NOT NULL,
    attempt     integer NOT NULL,
    failed_at   double precision NOT NULL,
    error       text NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

-- The circuit and the pause of each dependency, written in the tick that changes them.
CREATE TABLE janus.dependency_gates (
    dependency     text PRIMARY KEY,
    circuit_state  text NOT NULL CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    circuit_since  double precision NOT NULL,
    open_until     double precision,
    open_for       double precision NOT NULL,
    pause_until    double precision,
    updated_at     double precision NOT NULL
);

-- `janus jobs retry`: a request the leader applies in a fenced transaction (see docs/decisions.md).
-- Exactly one of job_id, or a filter by dependency and/or scope (NULL: any).
CREATE TABLE janus.retry_requests (
    id            bigserial PRIMARY KEY,
    job_id        text,
    dependency    text,
    scope         text,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    handled_at    timestamptz,
    revived       integer
);
CREATE INDEX retry_requests_pending ON janus.retry_requests (id) WHERE handled_at IS NULL;
CREATE INDEX jobs_dead ON janus.jobs (dependency, scope) WHERE state = 'dead';
