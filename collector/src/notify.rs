//! Webhook notifications of architecture events. A thread replays the recent buckets every so
//! often ([`archtrace_query::history`]), and hands each event at or above the chosen severity
//! that was not sent before to one delivery thread per webhook, which posts it with retries and
//! backoff. Ingest never waits for either: they read the store beside it, and a webhook that
//! is down only fills its own queue (beyond which events are dropped and counted).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use archtrace_analyzer::history::{Event, EventFilter};
use archtrace_analyzer::time::now_ns;
use archtrace_query::history::HistoryQuery;
use archtrace_query::store::StoreSource;
use archtrace_query::{SnapshotSource, Window};
use archtrace_store::notified::NotifiedLog;

#[derive(Clone, Debug)]
pub struct NotifySettings {
    pub webhooks: Vec<String>,
    /// Which events are sent (severity, kinds).
    pub filter: EventFilter,
    /// How often recent events are looked for.
    pub every: Duration,
    /// Only events this recent are sent: a server started on a month of data does not post
    /// the month.
    pub lookback: Duration,
    pub history: HistoryQuery,
    /// Attempts per event and webhook, the first included.
    pub attempts: u32,
    /// The wait before the first retry; doubled for each next one.
    pub backoff: Duration,
}

impl NotifySettings {
    pub fn new(webhooks: Vec<String>) -> NotifySettings {
        NotifySettings {
            webhooks,
            filter: EventFilter::default(),
            every: Duration::from_secs(60),
            lookback: Duration::from_secs(2 * 3_600),
            history: HistoryQuery::default(),
            attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default)]
pub struct NotifyMetrics {
    pub events: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
    pub dropped: AtomicU64,
    pub runs_failed: AtomicU64,
}

/// Events waiting per webhook; beyond this a webhook that is down loses them (counted).
const QUEUE: usize = 1_024;

/// The running threads.
pub struct Notifier {
    stop: mpsc::Sender<()>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Stops looking for events; a post under way ends (without retries), what is still
    /// queued is dropped and counted.
    pub fn join(self) {
        let Notifier {
            stop,
            stopping,
            threads,
        } = self;
        stopping.store(true, Ordering::Relaxed);
        drop(stop);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Whether `url` can be posted to; the reason when not.
pub fn check_webhook(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("not a URL: {err}"))?;
    if matches!(parsed.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err("only http and https URLs can be posted to".to_owned())
    }
}

/// Whether `url` is a Slack-style incoming webhook, which takes `{"text": ...}`.
pub fn is_slack(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|url| {
        url.host_str() == Some("hooks.slack.com") || url.path().starts_with("/services/")
    })
}

/// The body posted for an event: the event's JSON, or a Slack message.
pub fn payload(event: &Event, slack: bool) -> String {
    if !slack {
        return serde_json::to_string(event).unwrap_or_default();
    }
    let mut text = format!(
        "[{}] {}: {}",
        event.severity.as_str(),
        event.kind.as_str(),
        event.message
    );
    if !event.versions.is_empty() {
        text.push_str(&format!(" (releases: {})", event.versions.join(", ")));
    }
    text.push_str(&format!(" at {}", event.time));
    serde_json::json!({ "text": text }).to_string()
}

pub fn start(
    source: Arc<StoreSource>,
    log: NotifiedLog,
    settings: NotifySettings,
    metrics: Arc<NotifyMetrics>,
) -> Option<Notifier> {
    if settings.webhooks.is_empty() {
        return None;
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let stopping = Arc::new(AtomicBool::new(false));
    let mut queues = Vec::new();
    let mut threads = Vec::new();
    for url in &settings.webhooks {
        let (queue, events) = mpsc::sync_channel::<Event>(QUEUE);
        queues.push(queue);
        let (url, settings, metrics) = (url.clone(), settings.clone(), metrics.clone());
        let stopping = stopping.clone();
        threads.push(
            std::thread::Builder::new()
                .name("archtrace-webhook".into())
                .spawn(move || deliver(&url, events, &settings, &metrics, &stopping))
                .expect("spawning a webhook thread"),
        );
    }
    threads.push(
        std::thread::Builder::new()
            .name("archtrace-notifier".into())
            .spawn(move || {
                let mut sent: Option<HashSet<String>> = None;
                loop {
                    look(&source, &log, &settings, &metrics, &queues, &mut sent);
                    match stopped.recv_timeout(settings.every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })
            .expect("spawning the notifier thread"),
    );
    Some(Notifier {
        stop,
        stopping,
        threads,
    })
}

/// One run: the events of the lookback not yet sent are queued and recorded as sent.
fn look(
    source: &StoreSource,
    log: &NotifiedLog,
    settings: &NotifySettings,
    metrics: &NotifyMetrics,
    queues: &[SyncSender<Event>],
    sent: &mut Option<HashSet<String>>,
) {
    let now = now_ns();
    let lookback = i64::try_from(settings.lookback.as_nanos()).unwrap_or(i64::MAX);
    let since = now.saturating_sub(lookback);
    let mut run = || -> Result<Vec<Event>, Box<dyn std::error::Error>> {
        let known = match sent {
            Some(known) => known,
            None => sent.insert(log.sent_since(since)?),
        };
        let window = Window::new(since, now)?;
        let history = source.history(&window, &settings.history)?;
        let fresh: Vec<Event> = history
            .events
            .into_iter()
            // Finding events start at their slice, which may begin before the lookback.
            .filter(|e| e.time_ns >= since)
            .filter(|e| settings.filter.accepts(e) && !known.contains(&e.key()))
            .collect();
        if !fresh.is_empty() {
            let keys: Vec<(String, i64)> = fresh.iter().map(|e| (e.key(), e.time_ns)).collect();
            // Recorded before they are handed on: an event is sent at most once.
            log.record(&keys, since)?;
            known.extend(keys.into_iter().map(|(key, _)| key));
        }
        known.retain(|key| {
            key.split('|')
                .next()
                .and_then(|t| t.parse::<i64>().ok())
                .is_none_or(|t| t >= since)
        });
        Ok(fresh)
    };
    match run() {
        Ok(fresh) => {
            for event in fresh {
                metrics.events.fetch_add(1, Ordering::Relaxed);
                for queue in queues {
                    if let Err(TrySendError::Full(_)) = queue.try_send(event.clone()) {
                        metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Err(err) => {
            metrics.runs_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "looking for architecture events to notify failed; trying again later");
        }
    }
}

fn deliver(
    url: &str,
    events: mpsc::Receiver<Event>,
    settings: &NotifySettings,
    metrics: &NotifyMetrics,
    stopping: &AtomicBool,
) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client with default TLS settings");
    let slack = is_slack(url);
    for event in events {
        if stopping.load(Ordering::Relaxed) {
            // Shutting down: a slow webhook must not hold the server; what is left is lost.
            metrics.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let body = payload(&event, slack);
        let mut wait = settings.backoff;
        for attempt in 1..=settings.attempts.max(1) {
            let outcome = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send();
            match outcome {
                Ok(response) if response.status().is_success() => {
                    metrics.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                outcome => {
                    let why = match outcome {
                        Ok(response) => format!("answered {}", response.status()),
                        Err(err) => err.to_string(),
                    };
                    if attempt == settings.attempts.max(1) || stopping.load(Ordering::Relaxed) {
                        metrics.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            url,
                            event = event.key(),
                            why,
                            "webhook failed; event not delivered"
                        );
                        break;
                    }
                    metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(url, why, "webhook failed; retrying");
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archtrace_analyzer::history::EventKind;
    use archtrace_analyzer::snapshot::Severity;

    #[test]
    fn slack_style_webhooks_get_a_text_message_others_the_event() {
        assert!(is_slack("https://hooks.slack.com/services/T0/B0/x"));
        assert!(is_slack("http://127.0.0.1:9000/services/T0/B0/x"));
        assert!(!is_slack("https://example.com/hooks/archtrace"));
        assert!(check_webhook("ftp://example.com/x").is_err());
        assert!(check_webhook("example.com").is_err());
        assert!(check_webhook("https://example.com/x").is_ok());
        let event = Event {
            time: "2026-12-04T10:00:00.000000Z".into(),
            kind: EventKind::NewEdge,
            severity: Severity::Info,
            subjects: vec!["cart -> payment".into()],
            versions: vec!["cart 1.1 -> payment 2.0".into()],
            evidence: Default::default(),
            message: "new synchronous call cart → payment".into(),
            time_ns: 1,
        };
        let slack: serde_json::Value = serde_json::from_str(&payload(&event, true)).unwrap();
        assert_eq!(
            slack["text"],
            "[info] new_edge: new synchronous call cart → payment (releases: cart 1.1 -> payment 2.0) at 2026-12-04T10:00:00.000000Z"
        );
        let plain: Event = serde_json::from_str(&payload(&event, false)).unwrap();
        assert_eq!(plain, event);
    }
}
