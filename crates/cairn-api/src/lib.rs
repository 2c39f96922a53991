//! Wire types (requests, responses, stream events) shared by `cairn-server`, the CLI and
//! the dashboard, converted explicitly from internal types so a storage change never
//! silently changes the API. Must not know about storage. Not yet built: see the server
//! issue.
