//! The route table: every route's method, path, [`Access`] and handler, in one list. The
//! router is built from it and nothing else (`crate::app`), so a route cannot exist
//! without an access declaration; the OpenAPI document and the authorization matrix test
//! read the same list ([`ROUTES`]). Handlers live in one module per resource.

pub mod approvals;
pub mod instances;
pub mod machines;
pub mod named;
pub mod ops;
pub mod stream;
pub mod tasks;

use std::sync::Arc;

use axum::routing::{MethodFilter, MethodRouter, on};
use cairn_engine::Role::{Admin, Operator, Viewer, Worker};
use cairn_store::Store;

use crate::Ctx;
use crate::auth::Access;

/// One declared route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The path as axum matches it (`/v1/instances/{id}`).
    pub path: &'static str,
    /// Who may call it, and on which namespaces.
    pub access: Access,
}

fn filter(method: &str) -> MethodFilter {
    match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "DELETE" => MethodFilter::DELETE,
        other => unreachable!("no route uses {other}"),
    }
}

/// Declares every route once: [`ROUTES`] (the data) and `handlers` (the same routes'
/// handlers, in the same order).
macro_rules! table {
    ($($method:ident $path:literal $access:expr => $($handler:ident)::+;)*) => {
        /// Every route of the API, in the order the router is built.
        pub static ROUTES: &[Route] = &[
            $(Route { method: stringify!($method), path: $path, access: $access },)*
        ];

        /// The handler of each route of [`ROUTES`], in order.
        pub(crate) fn handlers<S: Store + Send + Sync + 'static>() -> Vec<MethodRouter<Arc<Ctx<S>>>> {
            vec![$(on(filter(stringify!($method)), $($handler)::+::<S>),)*]
        }
    };
}

table! {
    GET "/v1/machines" Access::one(Viewer) => machines::list;
    POST "/v1/machines" Access::one(Admin).definition() => machines::apply;
    GET "/v1/machines/{name}" Access::one(Viewer) => machines::latest;
    GET "/v1/machines/{name}/versions/{version}" Access::one(Viewer) => machines::version;
    DELETE "/v1/machines/{name}/versions/{version}" Access::one(Admin) => machines::delete;
    GET "/v1/machines/{name}/diagram" Access::one(Viewer) => machines::diagram;
    POST "/v1/instances" Access::one(Operator) => instances::start;
    GET "/v1/instances" Access::one(Viewer) => instances::list;
    GET "/v1/instances/{id}" Access::one(Viewer) => instances::show;
    DELETE "/v1/instances/{id}" Access::one(Admin) => instances::delete;
    POST "/v1/instances/{id}/events" Access::one(Operator) => instances::send;
    GET "/v1/instances/{id}/accepts" Access::one(Viewer) => instances::accepts;
    GET "/v1/instances/{id}/waiting" Access::one(Viewer) => instances::waiting;
    GET "/v1/instances/{id}/history" Access::one(Viewer) => instances::history;
    GET "/v1/instances/{id}/checkpoints" Access::one(Viewer) => instances::checkpoints;
    POST "/v1/instances/{id}/checkpoints" Access::one(Operator) => instances::checkpoint;
    POST "/v1/instances/{id}/fork" Access::one(Operator) => instances::fork;
    POST "/v1/instances/{id}/pause" Access::one(Operator) => instances::pause;
    POST "/v1/instances/{id}/resume" Access::one(Operator) => instances::resume;
    POST "/v1/instances/{id}/cancel" Access::one(Operator) => instances::cancel;
    GET "/v1/instances/{id}/export" Access::one(Viewer) => instances::export;
    POST "/v1/verify" Access::one(Operator) => instances::verify;
    GET "/v1/approvals" Access::one(Viewer) => approvals::list;
    POST "/v1/approvals/{aid}/approve" Access::one(Operator) => approvals::approve;
    POST "/v1/approvals/{aid}/reject" Access::one(Operator) => approvals::reject;
    GET "/v1/tasks" Access::one(Viewer) => tasks::list;
    POST "/v1/tasks/claim" Access::set(Worker).long() => tasks::claim;
    POST "/v1/tasks/report" Access::set(Worker).long() => tasks::report;
    POST "/v1/tasks/{id}/heartbeat" Access::set(Worker) => tasks::heartbeat;
    POST "/v1/tasks/{id}/complete" Access::set(Worker) => tasks::complete;
    POST "/v1/tasks/{id}/fail" Access::set(Worker) => tasks::fail;
    POST "/v1/triggers" Access::one(Operator) => named::add_trigger;
    GET "/v1/triggers" Access::one(Viewer) => named::triggers;
    DELETE "/v1/triggers/{name}" Access::one(Operator) => named::remove_trigger;
    POST "/v1/schedules" Access::one(Operator) => named::add_schedule;
    GET "/v1/schedules" Access::one(Viewer) => named::schedules;
    DELETE "/v1/schedules/{name}" Access::one(Operator) => named::remove_schedule;
    GET "/v1/stats" Access::one(Viewer) => ops::stats;
    POST "/v1/tick" Access::one(Admin) => ops::tick;
    POST "/v1/backup" Access::global(Admin).long() => ops::backup;
    POST "/v1/repair" Access::global(Admin).long() => ops::repair;
    POST "/v1/vacuum" Access::global(Admin).long() => ops::vacuum;
    POST "/v1/tokens" Access::set(Admin) => ops::create_token;
    GET "/v1/tokens" Access::set(Admin) => ops::tokens;
    DELETE "/v1/tokens/{id}" Access::set(Admin) => ops::revoke_token;
    GET "/v1/events" Access::set(Viewer).long() => stream::events;
    GET "/metrics" Access::set(Viewer) => ops::metrics;
    GET "/healthz" Access::OPEN => ops::healthz;
    GET "/openapi.json" Access::OPEN => ops::openapi;
    GET "/" Access::OPEN => ops::index;
}

/// The declared route of `method` and `path` (as written in the table).
pub fn route(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}
