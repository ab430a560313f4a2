//! Snapshots from a running `archtrace serve`, which holds its store's lock: asked over its
//! admin listener's snapshot API.

use archtrace_analyzer::findings::Thresholds;
use archtrace_analyzer::history::{History, Periods};
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_analyzer::time::rfc3339;

use crate::series::Point;
use crate::{HistoryQuery, QueryError, SnapshotSource, Window};

pub struct RemoteSource {
    /// The admin address, e.g. `http://127.0.0.1:4320`.
    server: String,
    auth_token: Option<String>,
    client: reqwest::blocking::Client,
}

impl RemoteSource {
    pub fn new(server: &str, auth_token: Option<String>) -> RemoteSource {
        RemoteSource {
            server: server.trim_end_matches('/').to_owned(),
            auth_token,
            client: reqwest::blocking::Client::new(),
        }
    }

    fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, QueryError> {
        let url = format!("{}{path}", self.server);
        let url = reqwest::Url::parse_with_params(&url, query).map_err(|source| {
            QueryError::Unreachable {
                url: url.clone(),
                source: Box::new(source),
            }
        })?;
        let mut request = self.client.get(url.clone());
        if let Some(token) = &self.auth_token {
            request = request.bearer_auth(token);
        }
        let unreachable = |source: reqwest::Error| QueryError::Unreachable {
            url: url.to_string(),
            source: Box::new(source),
        };
        let response = request.send().map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().map_err(unreachable)?;
        if !status.is_success() {
            return Err(QueryError::Refused {
                url: url.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(body.to_vec())
    }
}

impl SnapshotSource for RemoteSource {
    fn snapshot(&self, window: &Window) -> Result<Snapshot, QueryError> {
        // Exact instants, so that the server reads the window the user's clock meant.
        let mut query = vec![
            ("since", rfc3339(window.since_ns)),
            ("until", rfc3339(window.until_ns)),
        ];
        if let Some(environment) = &window.environment {
            query.push(("env", environment.clone()));
        }
        let body = self.get("/api/v1/snapshot", &query)?;
        serde_json::from_slice(&body).map_err(|source| QueryError::NotUnderstood {
            url: format!("{}/api/v1/snapshot", self.server),
            what: "a snapshot",
            source,
        })
    }

    fn periods(&self, _: i64, _: i64, _: i64) -> Result<Periods, QueryError> {
        Err(QueryError::Unsupported(
            "a running server's API gives events, not steps: ask it for history",
        ))
    }

    /// The server replays its own store; the window, step, gone-after time and thresholds
    /// (unless the defaults, which the server has too) are passed on.
    fn history(&self, window: &Window, query: &HistoryQuery) -> Result<History, QueryError> {
        let settings = &query.history;
        let seconds = |ns: i64| format!("{}s", ns / 1_000_000_000);
        let mut parameters = vec![
            ("since", rfc3339(window.since_ns)),
            ("until", rfc3339(window.until_ns)),
            ("step", seconds(settings.step_ns)),
            ("gone_after", seconds(settings.gone_after_ns)),
        ];
        let thresholds = &query.analysis.thresholds;
        if *thresholds != Thresholds::default() {
            let json = serde_json::to_string(thresholds).expect("thresholds serialize as JSON");
            parameters.push(("thresholds", json));
        }
        let body = self.get("/api/v1/events", &parameters)?;
        serde_json::from_slice(&body).map_err(|source| QueryError::NotUnderstood {
            url: format!("{}/api/v1/events", self.server),
            what: "events",
            source,
        })
    }

    fn series(&self, _service: &str, _window: &Window) -> Result<Vec<Point>, QueryError> {
        Err(QueryError::Unsupported(
            "a running server's API gives snapshots, not series: charts need --db or --traces",
        ))
    }

    fn environments(&self) -> Result<Vec<String>, QueryError> {
        Ok(Vec::new())
    }

    fn rebuild(&self, _since_ns: i64, _until_ns: i64) -> Result<u64, QueryError> {
        Err(QueryError::Unsupported(
            "stop the server and rebuild its store with --db",
        ))
    }

    fn describe(&self) -> String {
        format!("from the server at {}", self.server)
    }
}
