//! `cairn token create|ls|revoke`: API tokens for `cairn serve`. Embedded (to create the
//! first admin token before the server starts; the local principal is unrestricted) or
//! over HTTP with an admin token, which administers tokens within its own namespaces only.

use serde_json::{Value, json};

use crate::{Failure, Global};

#[derive(clap::Subcommand)]
pub enum Token {
    /// Create a token; its secret is printed once.
    Create {
        /// viewer, worker, operator or admin.
        #[arg(long)]
        role: String,
        /// A namespace it may use; repeatable; `*` for all. Default: the current
        /// `--namespace`.
        #[arg(long = "scope")]
        namespaces: Vec<String>,
        /// Its subject: who it stands for, recorded as the actor of every change made
        /// with it and matched against approvals' `approvers` (expected; `token:<id>`
        /// when absent).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token by id.
    Revoke { id: String },
}

pub fn run(g: &Global, settings: &crate::config::Settings, mut t: Token) -> Result<(), Failure> {
    if let Token::Create { namespaces, .. } = &mut t
        && namespaces.is_empty()
    {
        namespaces.push(g.namespace.clone());
    }
    // Embedded (the first admin token, before the server starts) or over HTTP: the same
    // requests to the same routes.
    let http = crate::client::http::Http::connect(g, settings, settings.engine_config())?;
    let result: Value = match t {
        Token::Create {
            role,
            namespaces,
            name,
        } => {
            let new = cairn_api::NewToken {
                name,
                role,
                namespaces,
            };
            http.call(
                "POST",
                "/v1/tokens",
                Some(serde_json::to_value(new).expect("serialises")),
            )?
        }
        Token::Ls => http.call("GET", "/v1/tokens", None)?,
        Token::Revoke { id } => {
            http.call("DELETE", &format!("/v1/tokens/{id}"), None)?;
            json!({"revoked": id})
        }
    };
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("serialises")
        );
    } else if let Some(secret) = result.get("token").and_then(|t| t.as_str()) {
        println!(
            "token {} for {} ({}, namespaces {}): {secret}",
            result["id"].as_str().unwrap_or(""),
            result["subject"].as_str().unwrap_or(""),
            result["role"].as_str().unwrap_or(""),
            result["namespaces"]
        );
        println!("keep it now: only its hash is stored");
    } else if let Some(list) = result.as_array() {
        for t in list {
            println!(
                "{}  {}  {}  namespaces {}{}",
                t["id"].as_str().unwrap_or(""),
                t["role"].as_str().unwrap_or(""),
                t["subject"].as_str().unwrap_or(""),
                t["namespaces"],
                if t["revoked_at"].is_null() {
                    ""
                } else {
                    "  (revoked)"
                }
            );
        }
    } else {
        println!("{result}");
    }
    Ok(())
}
