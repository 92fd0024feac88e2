-- Members and per-dependency leases: several `janus run` processes share the dependencies, each
-- led by one of them (docs/scale-out.md). Times on the database's clock, as janus.leader's.
-- Nothing here changes a single leader's behaviour: janus.leader stays the global lease.

-- One row per running process, heartbeated; live while expires_at > now().
CREATE TABLE janus.members (
    member        uuid PRIMARY KEY,
    host          text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);

-- janus.leader generalised: one lease per dependency, its epoch grown by every take.
CREATE TABLE janus.dependency_leases (
    dependency  text PRIMARY KEY,
    holder      uuid NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Every term of every dependency: an epoch of a dependency is never reused.
CREATE TABLE janus.dependency_terms (
    dependency  text NOT NULL,
    epoch       bigint NOT NULL,
    holder      uuid NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dependency, epoch)
);

-- Mixed versions (docs/scale-out.md, upgrade path): a process that knows only janus.leader
-- (not a member) may not start a term while a member holds a live dependency lease, or it
-- would admit for every dependency beside them. Its acquire then returns no row: it stands
-- by. Claims check the converse (store/sql/membership.sql, claim_dependency). Both take the
-- advisory lock 456901162349 first (exclusive here, shared by claims), so the two checks cannot
-- pass at once. Renewals and releases (the epoch unchanged) are not checked.
CREATE FUNCTION janus.leader_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.epoch = OLD.epoch THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(456901162349);
    IF EXISTS (SELECT 1 FROM janus.members WHERE member = NEW.holder AND expires_at > now()) THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM janus.dependency_leases WHERE expires_at > now() AND holder <> NEW.holder) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER leader_guard BEFORE INSERT OR UPDATE ON janus.leader
    FOR EACH ROW EXECUTE FUNCTION janus.leader_guard();
