//! The SQLite writer's side of [`cairn_store::InstancesTx`].

use super::*;

impl cairn_store::InstancesTx for SqlTx<'_> {
    fn instance(&mut self, ns: &str, id: &str) -> Result<Option<InstanceRecord>, Error> {
        instance(self.conn, ns, id)
    }

    fn insert_instance(&mut self, i: &InstanceRecord) -> Result<(), Error> {
        let r = self
            .conn
            .prepare_cached(
                "INSERT INTO instances (namespace, id, machine, machine_version, status, configuration, context, version, labels, parent, last_error, created_at, updated_at, history_seq, entered) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    i.namespace,
                    i.id,
                    i.machine,
                    i.machine_version,
                    i.status.as_str(),
                    json(&i.configuration),
                    json(&i.context),
                    i.version as i64,
                    json(&i.labels),
                    i.parent,
                    i.last_error,
                    ts(&i.created_at),
                    ts(&i.updated_at),
                    i.history_seq as i64,
                    json(&i.entered)
                ])
            });
        conflict_if_duplicate(r, || {
            format!("instance `{}` exists in namespace `{}`", i.id, i.namespace)
        })?;
        for (k, v) in &i.labels {
            self.conn
                .prepare_cached("INSERT INTO instance_labels (namespace, instance_id, key, value) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut s| s.execute(params![i.namespace, i.id, k, v]))
                .map_err(db_err)?;
        }
        Ok(())
    }

    fn update_instance(&mut self, i: &InstanceRecord, expected_version: u64) -> Result<(), Error> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE instances SET machine_version = ?3, status = ?4, configuration = ?5, context = ?6, version = ?7, last_error = ?8, updated_at = ?9, history_seq = ?11, entered = ?12 \
                 WHERE namespace = ?1 AND id = ?2 AND version = ?10",
            )
            .and_then(|mut s| {
                s.execute(params![
                    i.namespace,
                    i.id,
                    i.machine_version,
                    i.status.as_str(),
                    json(&i.configuration),
                    json(&i.context),
                    i.version as i64,
                    i.last_error,
                    ts(&i.updated_at),
                    expected_version as i64,
                    i.history_seq as i64,
                    json(&i.entered)
                ])
            })
            .map_err(db_err)?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "instance `{}` is not at version {expected_version}",
                i.id
            )))
        }
    }
    fn push_inbox(&mut self, e: &InboxRecord) -> Result<(), Error> {
        lc::push_inbox(self.conn, e)
    }
    fn take_inbox(&mut self, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
        lc::take_inbox(self.conn, ns, id)
    }
    fn inbox_key(&mut self, ns: &str, id: &str, key: &str) -> Result<Option<InboxRecord>, Error> {
        lc::inbox_key(self.conn, ns, id, key)
    }
    fn delete_instance(&mut self, ns: &str, id: &str) -> Result<bool, Error> {
        lc::delete_instance(self.conn, ns, id)
    }

    fn insert_child(&mut self, c: &cairn_store::ChildRecord) -> Result<(), Error> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO children (namespace, parent_id, child_id, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut s| s.execute(params![c.namespace, c.parent_id, c.child_id, c.state, ts(&c.created_at)]))
            .map(|_| ())
            .map_err(db_err)
    }
    fn children(&mut self, ns: &str, parent: &str) -> Result<Vec<cairn_store::ChildRecord>, Error> {
        let mut s = self
            .conn
            .prepare_cached("SELECT child_id, state, created_at FROM children WHERE namespace = ?1 AND parent_id = ?2 ORDER BY created_at, child_id")
            .map_err(db_err)?;
        let rows = s
            .query_map(params![ns, parent], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(db_err)?;
        rows.map(|r| {
            let (child_id, state, created) = r.map_err(db_err)?;
            Ok(cairn_store::ChildRecord {
                namespace: ns.to_string(),
                parent_id: parent.to_string(),
                child_id,
                state,
                created_at: parse_ts(&created)?,
            })
        })
        .collect()
    }

    fn put_map(
        &mut self,
        ns: &str,
        id: &str,
        state: &str,
        progress: &serde_json::Value,
    ) -> Result<(), Error> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO maps (namespace, instance_id, state, progress) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![ns, id, state, json(progress)]))
            .map(|_| ())
            .map_err(db_err)
    }
    fn map_progress(
        &mut self,
        ns: &str,
        id: &str,
        state: &str,
    ) -> Result<Option<serde_json::Value>, Error> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT progress FROM maps WHERE namespace = ?1 AND instance_id = ?2 AND state = ?3")
            .and_then(|mut s| s.query_row(params![ns, id, state], |r| r.get(0)).optional())
            .map_err(db_err)?;
        text.map(|t| parse_json(&t, "map progress")).transpose()
    }
    fn maps_of(&mut self, ns: &str, id: &str) -> Result<Vec<(String, serde_json::Value)>, Error> {
        let mut s = self
            .conn
            .prepare_cached("SELECT state, progress FROM maps WHERE namespace = ?1 AND instance_id = ?2 ORDER BY state")
            .map_err(db_err)?;
        let rows = s
            .query_map(params![ns, id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db_err)?;
        rows.map(|r| {
            let (state, t) = r.map_err(db_err)?;
            Ok((state, parse_json(&t, "map progress")?))
        })
        .collect()
    }
    fn delete_map(&mut self, ns: &str, id: &str, state: &str) -> Result<bool, Error> {
        self.conn
            .prepare_cached(
                "DELETE FROM maps WHERE namespace = ?1 AND instance_id = ?2 AND state = ?3",
            )
            .and_then(|mut s| s.execute(params![ns, id, state]))
            .map(|n| n > 0)
            .map_err(db_err)
    }
}
