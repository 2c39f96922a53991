//! The PostgreSQL unit's side of [`cairn_store::InstancesTx`].

use super::*;

impl cairn_store::InstancesTx for PgTx<'_> {
    fn instance(&mut self, ns: &str, id: &str) -> Result<Option<InstanceRecord>, Error> {
        sql::instance(&mut self.db(), ns, id, true)
    }
    fn claim_instance(&mut self, ns: &str, id: &str) -> Result<cairn_store::Claim, Error> {
        use cairn_store::Claim;
        if let Some(i) = sql::claim_instance(&mut self.db(), ns, id)? {
            return Ok(Claim::Got(Box::new(i)));
        }
        Ok(match sql::instance(&mut self.db(), ns, id, false)? {
            Some(_) => Claim::Busy,
            None => Claim::Missing,
        })
    }
    fn insert_instance(&mut self, i: &InstanceRecord) -> Result<(), Error> {
        sql::insert_instance(&mut self.db(), i)
    }
    fn update_instance(&mut self, i: &InstanceRecord, expected: u64) -> Result<(), Error> {
        sql::update_instance(&mut self.db(), i, expected)
    }
    fn push_inbox(&mut self, e: &InboxRecord) -> Result<(), Error> {
        sql::push_inbox(&mut self.db(), e)
    }
    fn take_inbox(&mut self, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
        sql::take_inbox(&mut self.db(), ns, id)
    }
    fn inbox_key(&mut self, ns: &str, id: &str, key: &str) -> Result<Option<InboxRecord>, Error> {
        sql::inbox_key(&mut self.db(), ns, id, key)
    }
    fn delete_instance(&mut self, ns: &str, id: &str) -> Result<bool, Error> {
        sql::delete_instance(&mut self.db(), ns, id)
    }
    fn insert_child(&mut self, c: &ChildRecord) -> Result<(), Error> {
        sql::insert_child(&mut self.db(), c)
    }
    fn children(&mut self, ns: &str, parent: &str) -> Result<Vec<ChildRecord>, Error> {
        sql::children(&mut self.db(), ns, parent)
    }
    fn put_map(&mut self, ns: &str, id: &str, state: &str, progress: &Value) -> Result<(), Error> {
        sql::put_map(&mut self.db(), ns, id, state, progress)
    }
    fn map_progress(&mut self, ns: &str, id: &str, state: &str) -> Result<Option<Value>, Error> {
        sql::map_progress(&mut self.db(), ns, id, state)
    }
    fn maps_of(&mut self, ns: &str, id: &str) -> Result<Vec<(String, Value)>, Error> {
        sql::maps_of(&mut self.db(), ns, id)
    }
    fn delete_map(&mut self, ns: &str, id: &str, state: &str) -> Result<bool, Error> {
        sql::delete_map(&mut self.db(), ns, id, state)
    }
}
