-- Figures kept by the units that change what they count, so `/metrics` and `/v1/stats`
-- read a few rows instead of scanning: instances by machine and status, transitions
-- (history records of kind start or event), tasks by queue and status, timers, outbox
-- entries by receiving namespace (kept here by triggers, whatever changes the rows), and
-- the time spent in states (`dwell_ms`, `dwell_visits` by machine and state, added by the
-- engine). `name` and `detail` are '' where a kind has none.
CREATE TABLE figures (
    namespace TEXT NOT NULL,
    kind      TEXT NOT NULL,
    name      TEXT NOT NULL,
    detail    TEXT NOT NULL,
    value     INTEGER NOT NULL,
    PRIMARY KEY (namespace, kind, name, detail)
) WITHOUT ROWID;

-- When each active leaf of an instance was entered (JSON: leaf -> time).
ALTER TABLE instances ADD COLUMN entered TEXT NOT NULL DEFAULT '{}';

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

CREATE TRIGGER figures_instances_insert AFTER INSERT ON instances BEGIN
    INSERT INTO figures VALUES (new.namespace, 'instances', new.machine, new.status, 1)
        ON CONFLICT DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER figures_instances_update AFTER UPDATE OF machine, status ON instances
WHEN old.machine IS NOT new.machine OR old.status IS NOT new.status BEGIN
    UPDATE figures SET value = value - 1
        WHERE namespace = old.namespace AND kind = 'instances' AND name = old.machine AND detail = old.status;
    INSERT INTO figures VALUES (new.namespace, 'instances', new.machine, new.status, 1)
        ON CONFLICT DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER figures_instances_delete AFTER DELETE ON instances BEGIN
    UPDATE figures SET value = value - 1
        WHERE namespace = old.namespace AND kind = 'instances' AND name = old.machine AND detail = old.status;
END;

CREATE TRIGGER figures_history_insert AFTER INSERT ON history
WHEN new.kind IN ('start', 'event') BEGIN
    INSERT INTO figures VALUES (new.namespace, 'transitions', '', '', 1)
        ON CONFLICT DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER figures_history_update AFTER UPDATE OF kind ON history
WHEN (old.kind IN ('start', 'event')) IS NOT (new.kind IN ('start', 'event')) BEGIN
    INSERT INTO figures VALUES (new.namespace, 'transitions', '', '',
            CASE WHEN new.kind IN ('start', 'event') THEN 1 ELSE -1 END)
        ON CONFLICT DO UPDATE SET value = value + excluded.value;
END;
CREATE TRIGGER figures_history_delete AFTER DELETE ON history
WHEN old.kind IN ('start', 'event') BEGIN
    UPDATE figures SET value = value - 1
        WHERE namespace = old.namespace AND kind = 'transitions' AND name = '' AND detail = '';
END;

CREATE TRIGGER figures_tasks_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO figures VALUES (new.namespace, 'tasks', new.queue, new.status, 1)
        ON CONFLICT DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER figures_tasks_update AFTER UPDATE OF queue, status ON tasks
WHEN old.queue IS NOT new.queue OR old.status IS NOT new.status BEGIN
    UPDATE figures SET value = value - 1
        WHERE namespace = old.namespace AND kind = 'tasks' AND name = old.queue AND detail = old.status;
    INSERT INTO figures VALUES (new.namespace, 'tasks', new.queue, new.status, 1)
        ON CONFLICT DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER figures_tasks_delete AFTER DELETE ON tasks BEGIN
    UPDATE figures SET value = value - 1
        WHERE namespace = old.namespace AND kind = 'tasks' AND name = old.queue AND detail = old.status;
END;

CREATE TRIGGER figures_timers_insert AFTER INSERT ON timers BEGIN
    INSERT INTO figures VALUES (new.namespace, 'timers', '', '', 1)
        ON CONFLICT DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER figures_timers_delete AFTER DELETE ON timers BEGIN
    UPDATE figures SET value = value - 1
        WHERE namespace = old.namespace AND kind = 'timers' AND name = '' AND detail = '';
END;

CREATE TRIGGER figures_outbox_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO figures VALUES (new.namespace, 'outbox', '', '', 1)
        ON CONFLICT DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER figures_outbox_delete AFTER DELETE ON outbox BEGIN
    UPDATE figures SET value = value - 1
        WHERE namespace = old.namespace AND kind = 'outbox' AND name = '' AND detail = '';
END;
