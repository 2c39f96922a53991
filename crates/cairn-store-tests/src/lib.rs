//! The behaviour suite every storage backend must pass: SQLite always, PostgreSQL when
//! its URL is given (and always in CI). Each `# Contract` of `cairn-store` is tested here.
//! Not yet built: see the write-path issue.
