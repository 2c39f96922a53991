//! One router per resource.

pub mod approvals;
pub mod instances;
pub mod machines;
pub mod ops;
pub mod schedules;
pub mod stream;
pub mod tasks;
pub mod triggers;

use serde::Deserialize;

/// `?namespace=NS`, default `default`.
#[derive(Debug, Deserialize)]
pub struct Ns {
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

pub fn default_namespace() -> String {
    "default".to_string()
}
