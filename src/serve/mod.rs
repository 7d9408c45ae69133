//! `pimoe serve`: an OpenAI-compatible HTTP server over the one continuous-batching
//! scheduler. Two sides and a channel between them: the HTTP side (axum on tokio,
//! its own threads) parses requests and shapes responses; the engine side (the
//! calling thread, which owns the model) runs the scheduler. Every request, streamed
//! or not, is a job in that one scheduler, so concurrent clients share steps and
//! routed expert batches.

pub mod api;
mod http;
pub mod metrics;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::scheduler::SchedulerConfig;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub host: IpAddr,
    /// 0 picks a free port (printed at start).
    pub port: u16,
    /// When set, every /v1 route needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// The `model` clients name and /v1/models lists.
    pub model_name: String,
    pub sched: SchedulerConfig,
    /// Requests waiting for admission before new ones get a 429.
    pub max_queue: usize,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

/// Serves until the process gets Ctrl-C or SIGTERM; in-flight requests finish first.
/// `ready` is called with the bound address once requests can be taken.
pub fn serve<B: Backend>(engine: &Engine<B>, cfg: ServeConfig, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    if cfg.max_queue == 0 || cfg.body_limit == 0 {
        return Err(Error::Request("--max-queue and --body-limit must be positive".into()));
    }
    let listener = std::net::TcpListener::bind((cfg.host, cfg.port))
        .map_err(|e| Error::Request(format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port)))?;
    let addr = listener.local_addr().map_err(|e| Error::Request(format!("the bound address: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| Error::Request(format!("listening socket: {e}")))?;
    let (jobs, inbox) = std::sync::mpsc::channel();
    let metrics = Arc::new(metrics::Metrics::default());
    let created =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let state = Arc::new(http::AppState {
        jobs: Mutex::new(jobs),
        metrics: metrics.clone(),
        model: cfg.model_name.clone(),
        api_key: cfg.api_key.clone(),
        created,
        next_id: AtomicU64::new(0),
    });
    let app = http::router(state, cfg.body_limit);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pimoe-http")
        .enable_all()
        .build()
        .map_err(|e| Error::Request(format!("cannot start the HTTP runtime: {e}")))?;
    // The HTTP side owns the only job sender: when it ends, the engine loop does too.
    let http = std::thread::Builder::new()
        .name("pimoe-http-main".into())
        .spawn(move || {
            runtime.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(l, app).with_graceful_shutdown(shutdown()).await
            })
        })
        .map_err(|e| Error::Request(format!("cannot start the HTTP thread: {e}")))?;
    worker::run(engine, cfg.sched, cfg.max_queue, inbox, &metrics, || ready(addr))?;
    match http.join() {
        Ok(r) => r.map_err(|e| Error::Request(format!("the HTTP server failed: {e}"))),
        Err(_) => Err(Error::Request("the HTTP server thread panicked".into())),
    }
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
