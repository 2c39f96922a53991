//! Every problem type the API answers with, in one place: its `type` URI, HTTP status and
//! title, and the exit code the CLI gives it. The server renders errors from it, the CLI
//! decides its exit codes from it, the OpenAPI document lists it, and the Python client's
//! exception map is checked against that list.

use serde::{Deserialize, Serialize};

macro_rules! problems {
    ($($variant:ident = $slug:literal, $status:literal, $exit:literal;)*) => {
        /// A problem type (RFC 9457 `type`), rendered as `/problems/<slug>`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum ProblemType {
            $(
                #[doc = concat!("`/problems/", $slug, "` (HTTP ", stringify!($status), ", exit code ", stringify!($exit), ").")]
                $variant,
            )*
        }

        impl ProblemType {
            /// Every problem type.
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$variant),*];

            /// The slug: `not-found`, `version-conflict`, ...
            pub fn slug(self) -> &'static str {
                match self { $(ProblemType::$variant => $slug),* }
            }

            /// The HTTP status it is answered with.
            pub fn status(self) -> u16 {
                match self { $(ProblemType::$variant => $status),* }
            }

            /// The CLI's exit code for it: 2 usage or malformed input, 3 not found,
            /// 4 refused, 1 anything else.
            pub fn exit_code(self) -> u8 {
                match self { $(ProblemType::$variant => $exit),* }
            }
        }
    };
}

problems! {
    InvalidRequest = "invalid-request", 400, 2;
    InvalidDefinition = "invalid-definition", 400, 2;
    Unauthorized = "unauthorized", 401, 4;
    Forbidden = "forbidden", 403, 4;
    ForbiddenHost = "forbidden-host", 403, 4;
    CrossSite = "cross-site", 403, 4;
    NotFound = "not-found", 404, 3;
    MethodNotAllowed = "method-not-allowed", 405, 1;
    Timeout = "timeout", 504, 1;
    Conflict = "conflict", 409, 4;
    VersionConflict = "version-conflict", 409, 4;
    AlreadyExists = "already-exists", 409, 4;
    IdempotencyKeyReused = "idempotency-key-reused", 409, 4;
    InstanceFinished = "instance-finished", 409, 4;
    InstancePaused = "instance-paused", 409, 4;
    TooLarge = "too-large", 413, 2;
    UriTooLong = "uri-too-long", 414, 1;
    UnsupportedMediaType = "unsupported-media-type", 415, 2;
    EventNotAccepted = "event-not-accepted", 422, 4;
    EventRefused = "event-refused", 422, 4;
    ReservedEvent = "reserved-event", 422, 2;
    TooManyStreams = "too-many-streams", 503, 1;
    Internal = "internal", 500, 1;
    NotSupported = "not-supported", 501, 1;
    Unavailable = "unavailable", 503, 1;
}

impl ProblemType {
    /// The `type` URI: `/problems/<slug>`.
    pub fn uri(self) -> String {
        format!("/problems/{}", self.slug())
    }

    /// The problem type of a `type` URI (or a bare slug), if it is one of ours.
    pub fn from_uri(uri: &str) -> Option<ProblemType> {
        let slug = uri.strip_prefix("/problems/").unwrap_or(uri);
        ProblemType::ALL.iter().copied().find(|p| p.slug() == slug)
    }

    /// The CLI's exit code for an error answer: by its problem type when it is one of
    /// ours, else by its status (401 and 403 refuse, anything else is 1).
    pub fn exit_code_for(uri: &str, status: u16) -> u8 {
        match ProblemType::from_uri(uri) {
            Some(p) => p.exit_code(),
            None if status == 401 || status == 403 => 4,
            None => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &p in ProblemType::ALL {
            assert!(seen.insert(p.slug()), "{} twice", p.slug());
            assert_eq!(ProblemType::from_uri(&p.uri()), Some(p));
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::Value::String(p.slug().into())
            );
            assert!((400..600).contains(&p.status()));
        }
        assert_eq!(ProblemType::from_uri("/problems/nope"), None);
        assert_eq!(ProblemType::exit_code_for("about:blank", 401), 4);
        assert_eq!(ProblemType::exit_code_for("about:blank", 502), 1);
    }
}
