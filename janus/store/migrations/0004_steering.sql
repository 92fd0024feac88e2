-- Steering live (issue 14): the policy of record, versioned, and operators' pauses and
-- overrides; the leader applies both in fenced transactions (docs/decisions.md).

-- Every version of the policy: the newest is the one a leader runs (a restart or a takeover
-- never reverts it). `policy` is the file's content as JSON, without connection settings.
CREATE TABLE janus.policy_versions (
    version        bigint PRIMARY KEY,
    policy         text NOT NULL,
    actor          text NOT NULL,
    reason         text,
    diff           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    applied_epoch  bigint
);

-- `janus pause` / `resume` / `override` / `override --clear`: the latest row of each kind's
-- pair (pause or resume; override or clear) per dependency is what is in force.
-- `until` is Unix seconds on the database's clock.
CREATE TABLE janus.steering (
    id             bigserial PRIMARY KEY,
    dependency     text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('pause', 'resume', 'override', 'clear')),
    until          double precision,
    concurrency    integer,
    rate_limits    text[],
    actor          text NOT NULL,
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    applied_epoch  bigint
);
CREATE INDEX steering_pending ON janus.steering (id) WHERE applied_at IS NULL;
CREATE INDEX steering_latest ON janus.steering (dependency, (kind IN ('pause', 'resume')), id);
