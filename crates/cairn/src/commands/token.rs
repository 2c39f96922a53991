//! `cairn token create|ls|revoke`: API tokens for `cairn serve`. Embedded (to create the
//! first admin token before the server starts) or over HTTP with an admin token, which
//! administers tokens within its own namespaces only.

use anyhow::anyhow;
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
    let result: Value = match &g.server {
        Some(url) => {
            let http = crate::client::http::Http::new(url, g.token.clone(), &g.namespace)?;
            match t {
                Token::Create {
                    role,
                    namespaces,
                    name,
                } => http.call(
                    "POST",
                    "/v1/tokens",
                    Some(json!({"role": role, "namespaces": namespaces, "name": name})),
                )?,
                Token::Ls => http.call("GET", "/v1/tokens", None)?,
                Token::Revoke { id } => {
                    http.call("DELETE", &format!("/v1/tokens/{id}"), None)?;
                    json!({"revoked": id})
                }
            }
        }
        None => {
            let engine = crate::store::engine(settings, cairn_engine::Config::default())
                .map_err(crate::client::failure)?;
            match t {
                Token::Create {
                    role,
                    namespaces,
                    name,
                } => {
                    let role = cairn_engine::Role::parse(&role).ok_or_else(|| {
                        Failure::usage(anyhow!(
                            "unknown role `{role}`; expected viewer, worker, operator or admin"
                        ))
                    })?;
                    let (t, secret) = engine
                        .create_token(&name, role, namespaces)
                        .map_err(crate::client::failure)?;
                    serde_json::to_value(cairn_api::CreatedToken {
                        token: cairn_engine::wire::token(&t),
                        secret,
                    })
                    .expect("serialises")
                }
                Token::Ls => Value::Array(
                    engine
                        .tokens()
                        .map_err(crate::client::failure)?
                        .iter()
                        .map(|t| {
                            serde_json::to_value(cairn_engine::wire::token(t)).expect("serialises")
                        })
                        .collect(),
                ),
                Token::Revoke { id } => {
                    engine.revoke_token(&id).map_err(crate::client::failure)?;
                    json!({"revoked": id})
                }
            }
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
