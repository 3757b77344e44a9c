//! Prometheus metrics: the recorder, its HTTP endpoint and one function per event.
//!
//! With `[metrics] listen` configured, [`install`] (called by
//! [`crate::daemon::start`]) binds the endpoint (Prometheus text format at
//! `/metrics`), installs the process-wide recorder and describes every series;
//! [`spawn_member_refresh`] then keeps `mxgate_member_up` current. Without it
//! no recorder is installed and every function here is a no-op of the
//! `metrics` facade.
//!
//! Call sites are one line: [`session_opened`] (accept loop), [`refused`]
//! (anything mxgate refuses itself), [`message`] and [`bytes_relayed`] (end
//! of DATA), [`failover`], [`injection_denied`], [`health_check`] (each
//! active check). Label values are the only
//! strings built per event. The series and their meaning are listed in
//! `docs/metrics.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use metrics::{
    Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;

mod endpoint;

/// `mxgate_smtp_sessions_total{listener}`.
pub const SESSIONS_TOTAL: &str = "mxgate_smtp_sessions_total";
/// `mxgate_smtp_active_sessions{listener}`.
pub const ACTIVE_SESSIONS: &str = "mxgate_smtp_active_sessions";
/// `mxgate_smtp_refused_total{listener,reason}`.
pub const REFUSED_TOTAL: &str = "mxgate_smtp_refused_total";
/// `mxgate_smtp_messages_total{member,result}`.
pub const MESSAGES_TOTAL: &str = "mxgate_smtp_messages_total";
/// `mxgate_smtp_bytes_total{member}`.
pub const BYTES_TOTAL: &str = "mxgate_smtp_bytes_total";
/// `mxgate_member_up{member}`.
pub const MEMBER_UP: &str = "mxgate_member_up";
/// `mxgate_route_failovers_total{from,to}`.
pub const FAILOVERS_TOTAL: &str = "mxgate_route_failovers_total";
/// `mxgate_injection_denied_total{source}`.
pub const INJECTION_DENIED_TOTAL: &str = "mxgate_injection_denied_total";
/// Gauge: LFT attachments waiting to be uploaded to a target.
pub const LFT_PENDING: &str = "mxgate_lft_pending";
/// `mxgate_health_checks_total{member,service,result}`.
pub const HEALTH_CHECKS_TOTAL: &str = "mxgate_health_checks_total";

/// `mxgate_dns_check_status{domain}`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
pub const DNS_CHECK_STATUS: &str = "mxgate_dns_check_status";
/// `mxgate_dns_mx_records{domain}`.
pub const DNS_MX_RECORDS: &str = "mxgate_dns_mx_records";
/// `mxgate_dns_mx_addresses{domain}`.
pub const DNS_MX_ADDRESSES: &str = "mxgate_dns_mx_addresses";
/// `mxgate_dns_mx_answering{domain}`.
pub const DNS_MX_ANSWERING: &str = "mxgate_dns_mx_answering";
/// `mxgate_dns_last_check_timestamp_seconds{domain}`.
pub const DNS_LAST_CHECK: &str = "mxgate_dns_last_check_timestamp_seconds";
/// Gauge: the highest cluster epoch (Raft term) this node has seen.
pub const CLUSTER_EPOCH: &str = "mxgate_cluster_epoch";
/// Gauge: seconds a member has been behind this node's applied state, by member.
pub const CLUSTER_REPLICATION_LAG: &str = "mxgate_cluster_replication_lag_seconds";

/// `mxgate_http_requests_total{listener,member,code}`.
pub const HTTP_REQUESTS_TOTAL: &str = "mxgate_http_requests_total";
/// `mxgate_http_request_duration_seconds{listener}` (histogram).
pub const HTTP_REQUEST_DURATION: &str = "mxgate_http_request_duration_seconds";
/// Buckets of [`HTTP_REQUEST_DURATION`], in seconds.
const HTTP_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// The `member` label of a message no member ever took (none was usable).
/// Member names start with a letter or digit, so it names no member.
pub const NO_MEMBER: &str = "-";

/// `reason` label values of [`REFUSED_TOTAL`] in use.
pub mod reason {
    /// The client talked before the greeting.
    pub const PREGREET: &str = "pregreet";
    /// A PROXY header from a peer that may not send one (or mid-session).
    pub const PROXY_UNTRUSTED: &str = "proxy_untrusted";
    /// A trusted proxy sent no valid PROXY header in time.
    pub const PROXY_HEADER: &str = "proxy_header";
    /// XCLIENT from a client not in `trusted_proxies`.
    pub const XCLIENT_UNTRUSTED: &str = "xclient_untrusted";
    /// A bare CR or LF in message content (`bare_lf = "reject"`).
    pub const BARE_LINE_ENDING: &str = "bare_line_ending";
    /// `MAIL SIZE=` or message content over `max_message_size`.
    pub const MESSAGE_SIZE: &str = "message_size";
    /// The listener was at `max_sessions`.
    pub const MAX_SESSIONS: &str = "max_sessions";
    /// The client was at `max_sessions_per_client`.
    pub const MAX_SESSIONS_PER_CLIENT: &str = "max_sessions_per_client";
    /// The session reached `max_errors`.
    pub const MAX_ERRORS: &str = "max_errors";
    /// The client was silent past `command_timeout` or `data_timeout`.
    pub const TIMEOUT: &str = "timeout";
    /// Every client connection the descriptor budget allows is open.
    pub const DESCRIPTOR_BUDGET: &str = "descriptor_budget";

    /// Every reason above, for pre-registering the series at zero.
    pub(super) const ALL: [&str; 11] = [
        PREGREET,
        PROXY_UNTRUSTED,
        PROXY_HEADER,
        XCLIENT_UNTRUSTED,
        BARE_LINE_ENDING,
        MESSAGE_SIZE,
        MAX_SESSIONS,
        MAX_SESSIONS_PER_CLIENT,
        MAX_ERRORS,
        TIMEOUT,
        DESCRIPTOR_BUDGET,
    ];
}

/// How a message ended, the `result` label of [`MESSAGES_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageResult {
    /// The member said `2xx` to the end of data.
    Accepted,
    /// `5xx` to the end of data, or refused by mxgate (size, bare line ending).
    Rejected,
    /// `4xx`: the member's, or mxgate's `451 4.4.1` / `451 4.4.2`.
    Tempfail,
}

impl MessageResult {
    /// The result the client was told with a reply of `code`.
    pub fn of(code: u16) -> MessageResult {
        match code {
            200..=299 => MessageResult::Accepted,
            400..=499 => MessageResult::Tempfail,
            _ => MessageResult::Rejected,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            MessageResult::Accepted => "accepted",
            MessageResult::Rejected => "rejected",
            MessageResult::Tempfail => "tempfail",
        }
    }

    const ALL: [MessageResult; 3] = [
        MessageResult::Accepted,
        MessageResult::Rejected,
        MessageResult::Tempfail,
    ];
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listener could not be bound.
    #[error("metrics: cannot listen on {addr} ([metrics] listen): {reason}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the exporter reported.
        reason: String,
    },
    /// Another recorder is installed in this process (a second daemon in one process).
    #[error("metrics: a metrics recorder is already installed in this process")]
    AlreadyInstalled,
}

/// Binds `[metrics] listen`, installs the Prometheus recorder, describes
/// every series and serves `/metrics` until `stop` ([`endpoint`]). Returns
/// false (and does nothing) when metrics are not configured. Must run
/// inside the tokio runtime.
pub fn install(config: &Config, stop: CancellationToken) -> Result<bool, MetricsError> {
    let Some(metrics) = &config.metrics else {
        return Ok(false);
    };
    let addr = metrics.listen;
    let bind_error = |e: std::io::Error| MetricsError::Bind {
        addr,
        reason: e.to_string(),
    };
    let listener = crate::service::sockets::tcp_listener("metrics", addr).map_err(bind_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(HTTP_REQUEST_DURATION.to_owned()),
            &HTTP_DURATION_BUCKETS,
        )
        .map_err(|e| MetricsError::Bind {
            addr,
            reason: e.to_string(),
        })?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    tokio::spawn(endpoint::serve(listener, handle, stop));
    describe();
    // Listener series exist from the start, at zero, so rates work at once.
    for listener in &config.smtp {
        let name = &listener.name;
        counter!(SESSIONS_TOTAL, "listener" => name.clone()).absolute(0);
        gauge!(ACTIVE_SESSIONS, "listener" => name.clone()).set(0.0);
        for reason in reason::ALL {
            counter!(REFUSED_TOTAL, "listener" => name.clone(), "reason" => reason).absolute(0);
        }
    }
    let accept_loops = ["admin", "metrics", "cluster"].map(String::from);
    let workers = (config.smtp.iter().map(|l| format!("smtp-{}", l.name)))
        .chain(config.http.iter().map(|l| format!("http-{}", l.name)));
    for listener in workers.chain(accept_loops) {
        for error in crate::accept::AcceptFailure::LABELS {
            counter!(crate::accept::ACCEPT_ERRORS_TOTAL, "listener" => listener.clone(), "error" => error)
                .absolute(0);
        }
    }
    RECORDING.store(true, std::sync::atomic::Ordering::Relaxed);
    for listener in &config.http {
        counter!(HTTP_REQUESTS_TOTAL, "listener" => listener.name.clone(), "member" => NO_MEMBER, "code" => "503")
            .absolute(0);
    }
    info!(addr = %addr, "metrics endpoint listening (/metrics)");
    Ok(true)
}

fn describe() {
    describe_counter!(
        SESSIONS_TOTAL,
        Unit::Count,
        "SMTP connections accepted, per listener."
    );
    describe_gauge!(
        ACTIVE_SESSIONS,
        Unit::Count,
        "SMTP sessions open now, per listener."
    );
    describe_counter!(
        REFUSED_TOTAL,
        Unit::Count,
        "Sessions or commands mxgate refused itself, per listener and reason (pregreet, proxy_untrusted, proxy_header, xclient_untrusted, bare_line_ending, message_size, ...)."
    );
    describe_counter!(
        crate::accept::ACCEPT_ERRORS_TOTAL,
        Unit::Count,
        "Failed accept(2) calls per accept loop (smtp-NAME, http-NAME, admin, metrics, cluster) and error (emfile, enfile, enobufs, other); each makes the loop pause."
    );
    describe_counter!(
        MESSAGES_TOTAL,
        Unit::Count,
        "Messages by member and result: accepted (2xx to end of data), rejected (5xx to end of data, or refused by mxgate: size, bare line ending), tempfail (4xx, including 451 4.4.1 no member and 451 4.4.2 member lost). member is \"-\" when no member was usable."
    );
    describe_counter!(
        BYTES_TOTAL,
        Unit::Bytes,
        "Message bytes relayed to a member that answered 2xx to the end of data."
    );
    describe_gauge!(
        MEMBER_UP,
        "1 when the member's SMTP service is usable for routing, 0 while its health checks or a failure seen by a session keep it out."
    );
    describe_counter!(
        HEALTH_CHECKS_TOTAL,
        Unit::Count,
        "Active health checks by member, service (smtp, gina) and result (pass, fail)."
    );
    describe_counter!(
        FAILOVERS_TOTAL,
        Unit::Count,
        "Sessions moved from a failed member to the next one in their order."
    );
    describe_counter!(
        INJECTION_DENIED_TOTAL,
        Unit::Count,
        "Transactions refused because the source member may inject into no member."
    );
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        Unit::Count,
        "GINA HTTP requests answered, per listener, member (\"-\" when mxgate answered itself: 413, 502, 503, 504) and status code."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "GINA HTTP request duration, from the request head to the end of the response body, per listener."
    );
    describe_gauge!(
        DNS_CHECK_STATUS,
        "Result of the last periodic DNS check of the domain: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
    );
    describe_gauge!(
        DNS_MX_RECORDS,
        Unit::Count,
        "MX records of the domain at the last check."
    );
    describe_gauge!(
        DNS_MX_ADDRESSES,
        Unit::Count,
        "Addresses (A/AAAA) of the domain's MX hosts at the last check."
    );
    describe_gauge!(
        DNS_MX_ANSWERING,
        Unit::Count,
        "MX addresses that greeted with 220 at the last check."
    );
    describe_gauge!(
        LFT_PENDING,
        Unit::Count,
        "LFT attachments queued for upload to the target member."
    );
    describe_gauge!(
        DNS_LAST_CHECK,
        Unit::Seconds,
        "When the domain was last checked (Unix time)."
    );
    describe_gauge!(
        CLUSTER_EPOCH,
        "The highest cluster epoch (Raft term) this node has seen; raised by every election."
    );
    describe_gauge!(
        CLUSTER_REPLICATION_LAG,
        Unit::Seconds,
        "Per member: seconds it has been behind this node's applied state, as this node's probe sees it (0: in step); 0 for this node itself."
    );
}

/// The highest cluster epoch (Raft term) this node has seen.
pub fn cluster_epoch(epoch: u64) {
    gauge!(CLUSTER_EPOCH).set(epoch as f64);
}

/// `member`'s replication lag in seconds.
pub fn cluster_replication_lag(member: &str, seconds: u64) {
    gauge!(CLUSTER_REPLICATION_LAG, "member" => member.to_owned()).set(seconds as f64);
}

/// One domain's result of a periodic DNS check, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct DnsDomainSample<'a> {
    /// The domain.
    pub domain: &'a str,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    /// MX records (0 for an implicit MX).
    pub records: usize,
    /// A/AAAA addresses of the MX hosts.
    pub addresses: usize,
    /// Addresses that greeted with 220.
    pub answering: usize,
    /// When the check finished (Unix seconds).
    pub checked_at: u64,
}

/// Sets the `mxgate_dns_*` gauges of one domain.
pub fn dns_domain(sample: DnsDomainSample<'_>) {
    let domain = sample.domain.to_owned();
    gauge!(DNS_CHECK_STATUS, "domain" => domain.clone()).set(f64::from(sample.status));
    gauge!(DNS_MX_RECORDS, "domain" => domain.clone()).set(sample.records as f64);
    gauge!(DNS_MX_ADDRESSES, "domain" => domain.clone()).set(sample.addresses as f64);
    gauge!(DNS_MX_ANSWERING, "domain" => domain.clone()).set(sample.answering as f64);
    gauge!(DNS_LAST_CHECK, "domain" => domain).set(sample.checked_at as f64);
}

/// Counts an open session on `listener` until the returned guard is dropped.
/// Call once per accepted connection, and hold the guard in the session task.
#[must_use = "the session counts as active only while the guard lives"]
pub fn session_opened(listener: &str) -> ActiveSession {
    counter!(SESSIONS_TOTAL, "listener" => listener.to_owned()).increment(1);
    let active = gauge!(ACTIVE_SESSIONS, "listener" => listener.to_owned());
    active.increment(1.0);
    ActiveSession(active)
}

/// A listener's session series, looked up once (the accept loop holds it):
/// per connection only the increments remain, no label strings or registry
/// lookups. Create it after [`install`], or it stays a no-op.
#[derive(Debug)]
pub struct ListenerMetrics {
    sessions: metrics::Counter,
    active: Gauge,
}

impl ListenerMetrics {
    /// The series of `listener`.
    pub fn new(listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            sessions: counter!(SESSIONS_TOTAL, "listener" => listener.to_owned()),
            active: gauge!(ACTIVE_SESSIONS, "listener" => listener.to_owned()),
        }
    }

    /// Like [`session_opened`], with the handles already at hand.
    #[must_use = "the session counts as active only while the guard lives"]
    pub fn session_opened(&self) -> ActiveSession {
        self.sessions.increment(1);
        self.active.increment(1.0);
        ActiveSession(self.active.clone())
    }
}

/// Decrements `mxgate_smtp_active_sessions` when the session task ends, however it ends.
#[derive(Debug)]
pub struct ActiveSession(Gauge);

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// mxgate refused a session or a command itself on `listener` (see [`reason`]).
pub fn refused(listener: &str, reason: &'static str) {
    counter!(REFUSED_TOTAL, "listener" => listener.to_owned(), "reason" => reason).increment(1);
}

/// A message ended on `member` with `result` (see [`MessageResult::of`]).
pub fn message(member: &str, result: MessageResult) {
    counter!(MESSAGES_TOTAL, "member" => member.to_owned(), "result" => result.label())
        .increment(1);
}

/// `bytes` of message content were relayed to `member`, which answered `2xx`.
pub fn bytes_relayed(member: &str, bytes: u64) {
    counter!(BYTES_TOTAL, "member" => member.to_owned()).increment(bytes);
}

/// The series a message accepted by one member counts in (`result="accepted"`
/// of [`MESSAGES_TOTAL`] and [`BYTES_TOTAL`]), resolved once per member
/// connection: [`message`] and [`bytes_relayed`] look the series up per call.
#[derive(Debug, Clone)]
pub struct AcceptedMessages {
    messages: metrics::Counter,
    bytes: metrics::Counter,
}

impl AcceptedMessages {
    /// The series of `member`: resolved once per member and worker thread
    /// (building the labels and looking the series up cost about 1 k
    /// instructions per member connection); nothing is built when no
    /// recorder takes them.
    pub fn new(member: &str) -> AcceptedMessages {
        if !RECORDING.load(std::sync::atomic::Ordering::Relaxed) {
            return AcceptedMessages {
                messages: metrics::Counter::noop(),
                bytes: metrics::Counter::noop(),
            };
        }
        ACCEPTED_CACHE.with_borrow_mut(|cache| {
            if let Some(found) = cache.get(member) {
                return found.clone();
            }
            let handles = AcceptedMessages {
                messages: counter!(MESSAGES_TOTAL, "member" => member.to_owned(), "result" => MessageResult::Accepted.label()),
                bytes: counter!(BYTES_TOTAL, "member" => member.to_owned()),
            };
            // Bounded: member names come from the policy, but reloads may
            // rename members; start over rather than grow without end.
            if cache.len() >= ACCEPTED_CACHE_MAX {
                cache.clear();
            }
            cache.insert(member.into(), handles.clone());
            handles
        })
    }

    /// Counts one accepted message of `bytes` bytes.
    pub fn record(&self, bytes: u64) {
        self.messages.increment(1);
        self.bytes.increment(bytes);
    }
}

/// Most members kept in one thread's [`AcceptedMessages`] cache.
const ACCEPTED_CACHE_MAX: usize = 1024;

thread_local! {
    /// [`AcceptedMessages`] per member name, per thread (no lock).
    static ACCEPTED_CACHE: std::cell::RefCell<std::collections::HashMap<Box<str>, AcceptedMessages>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// A session moved from member `from` to member `to`.
pub fn failover(from: &str, to: &str) {
    counter!(FAILOVERS_TOTAL, "from" => from.to_owned(), "to" => to.to_owned()).increment(1);
}

/// A transaction from member `source` was refused: it may inject into no member.
pub fn injection_denied(source: &str) {
    counter!(INJECTION_DENIED_TOTAL, "source" => source.to_owned()).increment(1);
}

/// `n` LFT attachments are pending for `target`.
pub fn lft_pending(target: &str, n: u64) {
    gauge!(LFT_PENDING, "target" => target.to_owned()).set(n as f64);
}

/// An active health check of `member`'s `service` (`smtp`, `gina`) ended.
pub fn health_check(member: &str, service: &'static str, passed: bool) {
    let result = if passed { "pass" } else { "fail" };
    counter!(HEALTH_CHECKS_TOTAL, "member" => member.to_owned(), "service" => service, "result" => result)
        .increment(1);
}

/// A GINA request on `listener` was answered with `code`, by `member`
/// ([`NO_MEMBER`] when mxgate answered itself), taking `elapsed` in all.
pub fn http_request(listener: &str, member: &str, code: u16, elapsed: Duration) {
    // Per request on the hot path: build no labels when nothing records them.
    if !RECORDING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    counter!(HTTP_REQUESTS_TOTAL, "listener" => listener.to_owned(), "member" => member.to_owned(), "code" => code.to_string())
        .increment(1);
    histogram!(HTTP_REQUEST_DURATION, "listener" => listener.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Set by [`install`]: a recorder takes the series, so the per-request HTTP
/// labels and the accepted-message handles ([`AcceptedMessages::new`]) are
/// worth building.
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The per-member series: `mxgate_member_up` set on every refresh, and the
/// member's counters registered at zero the first time it is seen (members
/// a reload removed keep their last value: nothing is removed).
#[derive(Debug, Default)]
pub struct MemberSeries {
    seen: HashSet<String>,
}

impl MemberSeries {
    /// Records `member`'s state: `up` for routing, `injects` when it has
    /// `addresses` (so it can be an injection source).
    pub fn record(&mut self, member: &str, up: bool, injects: bool) {
        gauge!(MEMBER_UP, "member" => member.to_owned()).set(if up { 1.0 } else { 0.0 });
        if self.seen.contains(member) {
            return;
        }
        for result in MessageResult::ALL {
            counter!(MESSAGES_TOTAL, "member" => member.to_owned(), "result" => result.label())
                .absolute(0);
        }
        counter!(BYTES_TOTAL, "member" => member.to_owned()).absolute(0);
        if injects {
            counter!(INJECTION_DENIED_TOTAL, "source" => member.to_owned()).absolute(0);
        }
        self.seen.insert(member.to_owned());
    }
}
