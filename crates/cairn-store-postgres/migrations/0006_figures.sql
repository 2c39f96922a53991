-- Figures kept by the units that change what they count, so `/metrics` and `/v1/stats`
-- read a few rows instead of scanning: instances by machine and status, transitions
-- (history records of kind start or event), tasks by queue and status, timers, outbox
-- entries by receiving namespace (kept by triggers, whatever changes the rows), and the
-- time spent in states (`dwell_ms`, `dwell_visits` by machine and state, added by the
-- engine). `name` and `detail` are '' where a kind has none.
CREATE TABLE figures (
    namespace text NOT NULL,
    kind      text NOT NULL,
    name      text NOT NULL,
    detail    text NOT NULL,
    value     bigint NOT NULL,
    PRIMARY KEY (namespace, kind, name, detail)
);

-- Units add to figures here (only inserts: concurrent units never wait on one row); the
-- store folds them into `figures` every few hundred commits, and reads add what is left.
CREATE TABLE figure_deltas (
    id        bigserial PRIMARY KEY,
    namespace text NOT NULL,
    kind      text NOT NULL,
    name      text NOT NULL,
    detail    text NOT NULL,
    value     bigint NOT NULL
);

-- When each active leaf of an instance was entered (leaf -> time).
ALTER TABLE instances ADD COLUMN entered json NOT NULL DEFAULT '{}';

INSERT INTO figures (namespace, kind, name, detail, value)
    SELECT namespace, 'instances', machine, status, count(*) FROM instances GROUP BY namespace, machine, status;
INSERT INTO figures (namespace, kind, name, detail, value)
    SELECT namespace, 'transitions', '', '', count(*) FROM history WHERE kind IN ('start', 'event') GROUP BY namespace;
INSERT INTO figures (namespace, kind, name, detail, value)
    SELECT namespace, 'tasks', queue, status, count(*) FROM tasks GROUP BY namespace, queue, status;
INSERT INTO figures (namespace, kind, name, detail, value)
    SELECT namespace, 'timers', '', '', count(*) FROM timers GROUP BY namespace;
INSERT INTO figures (namespace, kind, name, detail, value)
    SELECT namespace, 'outbox', '', '', count(*) FROM outbox GROUP BY namespace;

CREATE FUNCTION cairn_figures_instances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (OLD.namespace, 'instances', OLD.machine, OLD.status, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (NEW.namespace, 'instances', NEW.machine, NEW.status, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER figures_instances AFTER INSERT OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION cairn_figures_instances();
CREATE TRIGGER figures_instances_update AFTER UPDATE OF machine, status ON instances
    FOR EACH ROW WHEN (OLD.machine IS DISTINCT FROM NEW.machine OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cairn_figures_instances();

CREATE FUNCTION cairn_figures_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.kind IN ('start', 'event') THEN
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (OLD.namespace, 'transitions', '', '', -1);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.kind IN ('start', 'event') THEN
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (NEW.namespace, 'transitions', '', '', 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER figures_history AFTER INSERT OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION cairn_figures_history();
CREATE TRIGGER figures_history_update AFTER UPDATE OF kind ON history
    FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind)
    EXECUTE FUNCTION cairn_figures_history();

CREATE FUNCTION cairn_figures_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (OLD.namespace, 'tasks', OLD.queue, OLD.status, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (NEW.namespace, 'tasks', NEW.queue, NEW.status, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER figures_tasks AFTER INSERT OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION cairn_figures_tasks();
CREATE TRIGGER figures_tasks_update AFTER UPDATE OF queue, status ON tasks
    FOR EACH ROW WHEN (OLD.queue IS DISTINCT FROM NEW.queue OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cairn_figures_tasks();

-- Timers and outbox entries counted by namespace (`TG_ARGV[0]` is the kind).
CREATE FUNCTION cairn_figures_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (OLD.namespace, TG_ARGV[0], '', '', -1);
    ELSE
        INSERT INTO figure_deltas (namespace, kind, name, detail, value)
            VALUES (NEW.namespace, TG_ARGV[0], '', '', 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER figures_timers AFTER INSERT OR DELETE ON timers
    FOR EACH ROW EXECUTE FUNCTION cairn_figures_rows('timers');
CREATE TRIGGER figures_outbox AFTER INSERT OR DELETE ON outbox
    FOR EACH ROW EXECUTE FUNCTION cairn_figures_rows('outbox');
