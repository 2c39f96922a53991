//! One router per resource.

pub mod approvals;
pub mod instances;
pub mod machines;
pub mod named;
pub mod ops;
pub mod stream;
pub mod tasks;

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
