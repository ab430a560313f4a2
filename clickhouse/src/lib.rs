//! archtrace on ClickHouse, for teams whose traces already land in the OpenTelemetry
//! Collector's `otel_traces` table: workers derive edges from it ([`worker`], reading with
//! [`traces`]) into archtrace-owned bucket tables ([`buckets`], [`schema`]), and every reading
//! command and the viewer read windows from those ([`source`]) as they do from DuckDB.
//!
//! The engine is spoken to over its HTTP interface with the official `clickhouse` crate. The
//! crate is async; archtrace's query layer is not, so a [`Connection`] owns a small runtime and
//! blocks on it (callers in async code already run queries on blocking threads).

pub mod buckets;
pub mod schema;
pub mod source;
pub mod traces;
pub mod worker;

use std::future::Future;

pub use source::ClickHouseSource;
pub use worker::{Shard, Worker, WorkerSettings};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{address:?} is not a ClickHouse address: {problem} (write clickhouse://[user[:password]@]host[:8123]/database, or https://... for TLS)")]
    Address { address: String, problem: String },
    #[error("ClickHouse at {endpoint} could not {doing}")]
    Query {
        endpoint: String,
        doing: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("{endpoint} has no archtrace tables in database `{database}`: start a worker first (`archtrace derive --from ... --store {endpoint}`), or check the database name")]
    NoTables { endpoint: String, database: String },
    #[error("could not start the ClickHouse client's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Settings(String),
}

impl From<Error> for archtrace_query::QueryError {
    fn from(err: Error) -> Self {
        archtrace_query::QueryError::Engine(Box::new(err))
    }
}

/// Where a ClickHouse database is: `clickhouse://[user[:password]@]host[:port]/database`
/// (HTTP, port 8123 by default), or `http://` / `https://` (port 8443) with the same parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http(s)://host:port`, without credentials.
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Endpoint {
    pub fn parse(address: &str) -> Result<Endpoint, Error> {
        let bad = |problem: &str| Error::Address {
            address: redact(address),
            problem: problem.to_owned(),
        };
        let (scheme, rest) = address.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (http, default_port) = match scheme {
            "clickhouse" | "http" => ("http", 8123),
            "https" => ("https", 8443),
            _ => return Err(bad("the scheme must be clickhouse, http or https")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, authority),
        };
        if host_port.is_empty() {
            return Err(bad("no host"));
        }
        let host_port = if host_port.contains(':') && !host_port.ends_with(']') {
            let (_, port) = host_port.rsplit_once(':').expect("contains ':'");
            port.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))?;
            host_port.to_owned()
        } else {
            format!("{host_port}:{default_port}")
        };
        let database = path
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_matches('/');
        if database.is_empty() {
            return Err(bad("no database (add /database after the host)"));
        }
        if !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(bad("the database name may hold letters, digits and _ only"));
        }
        let (user, password) = match credentials {
            None => (None, None),
            Some(text) => match text.split_once(':') {
                Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
                None => (Some(text.to_owned()), None),
            },
        };
        Ok(Endpoint {
            url: format!("{http}://{host_port}"),
            database: database.to_owned(),
            user,
            password,
        })
    }

    /// The address without credentials, for messages and reports.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.url, self.database)
    }
}

/// Whether an address names ClickHouse rather than a file.
pub fn is_clickhouse_address(address: &str) -> bool {
    ["clickhouse://", "http://", "https://"]
        .iter()
        .any(|scheme| address.starts_with(scheme))
}

/// An address with its password replaced, for error messages.
fn redact(address: &str) -> String {
    match (address.find("://"), address.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &address[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:***{}", &address[..scheme_end + 3], &address[at..])
                }
                None => address.to_owned(),
            }
        }
        _ => address.to_owned(),
    }
}

/// A client for one database, and the runtime its requests run on.
pub struct Connection {
    client: clickhouse::Client,
    endpoint: Endpoint,
    runtime: tokio::runtime::Runtime,
}

impl Connection {
    pub fn open(endpoint: &Endpoint) -> Result<Connection, Error> {
        let mut client = clickhouse::Client::default()
            .with_url(&endpoint.url)
            .with_database(&endpoint.database);
        if let Some(user) = &endpoint.user {
            client = client.with_user(user);
        }
        if let Some(password) = &endpoint.password {
            client = client.with_password(password);
        }
        // Several threads (the viewer's requests) block on it at once.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("clickhouse-client")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Connection {
            client,
            endpoint: endpoint.clone(),
            runtime,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// Runs one request to completion; `doing` says what it was for in the error.
    pub(crate) fn run<T>(
        &self,
        doing: &str,
        request: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, Error> {
        self.runtime
            .block_on(request)
            .map_err(|source| Error::Query {
                endpoint: self.endpoint.describe(),
                doing: doing.to_owned(),
                source,
            })
    }

    /// Runs one statement that returns no rows.
    pub(crate) fn execute(&self, doing: &str, sql: &str) -> Result<(), Error> {
        self.run(doing, self.client.query(sql).execute())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_defaults_and_refuse_what_is_missing() {
        let endpoint = Endpoint::parse("clickhouse://ch.internal/otel").unwrap();
        assert_eq!(endpoint.url, "http://ch.internal:8123");
        assert_eq!(endpoint.database, "otel");
        assert_eq!(endpoint.user, None);
        let endpoint = Endpoint::parse("https://reader:s3cret@ch:9443/arch?x=1").unwrap();
        assert_eq!(endpoint.url, "https://ch:9443");
        assert_eq!(endpoint.database, "arch");
        assert_eq!(endpoint.user.as_deref(), Some("reader"));
        assert_eq!(endpoint.password.as_deref(), Some("s3cret"));
        assert_eq!(endpoint.describe(), "https://ch:9443/arch");
        for (address, problem) in [
            ("ch:8123/otel", "no scheme"),
            ("ftp://ch/otel", "scheme"),
            ("clickhouse://ch:80x/otel", "port"),
            ("clickhouse://ch", "no database"),
            ("clickhouse://ch/a;drop", "letters"),
            ("clickhouse:///otel", "no host"),
        ] {
            let message = Endpoint::parse(address).unwrap_err().to_string();
            assert!(message.contains(problem), "{address}: {message}");
        }
        let message = Endpoint::parse("ftp://u:pw@ch/x").unwrap_err().to_string();
        assert!(
            message.contains("u:***@ch") && !message.contains("pw"),
            "{message}"
        );
        assert!(is_clickhouse_address("clickhouse://ch/otel"));
        assert!(!is_clickhouse_address("archtrace.duckdb"));
    }
}
