//! The REST API's runtime: its own thread and tokio runtime, so that HTTP
//! work (JSON, SQLite reads, TLS, webhook deliveries) never runs on the SIP
//! thread. The API reaches the switch core only through a bounded channel
//! of requests that the SIP loop serves ([`api::PortRequest`]).

use crate::config::Config;
use api::{ApiOptions, ApiState, PortRequest, Webhooks};
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Requests waiting for the SIP loop; beyond, the API answers 503.
const PORT_QUEUE: usize = 1024;
/// How long the API waits for the switch core's answer.
const PORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running API, as the SIP loop sees it.
pub struct Http {
    /// What the API asks of the switch.
    pub requests: mpsc::Receiver<PortRequest>,
    /// Where every persisted record goes, for webhooks (and metrics).
    pub webhooks: Webhooks,
    /// ... and for the open consoles.
    pub events: api::LiveEvents,
    /// The server, to stop at shutdown.
    pub server: Server,
}

/// The API server thread.
pub struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Stops accepting requests, lets running ones finish (bounded), and
    /// joins the thread.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `[http] listen` (failing at start when it cannot) and starts the
/// API on its own thread.
pub fn start(
    cfg: &Config,
    db: Arc<dyn Store>,
    traces: Option<crate::capture::SharedTraces>,
) -> Result<Http, String> {
    let listener = std::net::TcpListener::bind(cfg.http.listen)
        .map_err(|e| format!("cannot bind [http] listen {}: {e}", cfg.http.listen))?;
    listener.set_nonblocking(true).map_err(|e| format!("http listener: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("http listener: {e}"))?;
    let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(c), Some(k)) => Some(api::tls::load(c, k)?),
        _ => None,
    };
    let nice = cfg.http.nice;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("forkswitch-http")
        .on_thread_start(move || lower_priority(nice))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    let webhooks = Webhooks::new(cfg.webhooks(), rt.handle().clone());
    let hooks = webhooks.load(db.as_ref()).map_err(|e| format!("cannot read webhooks: {e}"))?;
    let (port, requests) = api::channel(PORT_QUEUE, PORT_TIMEOUT);
    let options = ApiOptions { body_limit: cfg.http.body_limit_bytes };
    let state = ApiState::new(db, Arc::new(port), webhooks.clone(), options);
    if let Some(t) = traces {
        state.set_traces(t);
    }
    let events = state.events().clone();
    let router = api::router(state);
    let (stop, stopped) = oneshot::channel::<()>();
    let https = tls.is_some();
    let thread = std::thread::Builder::new()
        .name("forkswitch-http".into())
        .spawn(move || {
            lower_priority(nice);
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return warn!(error = %e, "http listener"),
                };
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = api::serve(listener, router, tls, shutdown).await {
                    warn!(error = %e, "the REST API stopped");
                }
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    info!(addr = %addr, tls = https, webhooks = hooks, "http listening");
    let server = Server { stop: Some(stop), thread: Some(thread) };
    Ok(Http { requests, webhooks, events, server })
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux: the
/// niceness is per thread). The API's threads run this at start, so that on
/// a busy machine call processing gets the CPU first; measured in
/// `tests/bench/api.sh`. Where it fails (another OS), it is logged once per
/// thread and the thread runs at the normal priority.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; the thread id is
        // the calling thread's own.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            warn!(nice, error = %std::io::Error::last_os_error(), "http: cannot lower the thread priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    warn!(nice, "http: thread priorities are set on Linux only");
}
