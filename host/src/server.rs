//! The listener: accepts TCP connections, serves HTTP/1.1 (API, health, metrics) and hands
//! WebSocket upgrades to `ws`; shuts down gracefully on request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backplane::Delivery;
use crate::backplane::{Backplane, BackplaneStatus};
use crate::channels::{Hub, Link, NoLink};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::{http_api, webhooks, ws};

/// What every request handler shares.
pub struct State {
    pub config: Config,
    pub hub: Arc<Hub>,
    /// Turns true when the server begins shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// The WebAssembly adapter, when one is configured.
    pub adapter: Option<LoadedAdapter>,
    /// The cluster layer, present with an adapter.
    pub cluster: Option<Arc<Cluster>>,
}

/// A running adapter and its counters.
pub struct LoadedAdapter {
    pub name: String,
    pub supervised: crate::plugin::Supervised,
    pub metrics: Arc<crate::plugin::AdapterMetrics>,
}

impl State {
    fn backplane_status(&self) -> BackplaneStatus {
        self.adapter
            .as_ref()
            .map_or(BackplaneStatus::Local, |a| a.supervised.status())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Adapter(#[from] crate::plugin::LoadError),
    #[error("starting the WebAssembly runtime: {0}")]
    Runtime(String),
}

/// A bound server, not yet serving; lets callers learn the port before `run`.
pub struct Server {
    listener: TcpListener,
    config: Config,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let addr = format!("{}:{}", config.server.host, config.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self { listener, config })
    }

    /// Loads the configured adapter component, if any, before serving, so a bad plugin stops
    /// start-up with a clear message rather than failing later.
    #[allow(clippy::type_complexity)]
    fn start_adapter(
        config: &Config,
        node_id: u32,
    ) -> Result<Option<(LoadedAdapter, tokio::sync::mpsc::Receiver<Delivery>)>, StartError> {
        let a = &config.adapter;
        if a.driver == "local" {
            return Ok(None);
        }
        let cache = a
            .cache_dir
            .clone()
            .unwrap_or_else(|| a.plugins_dir.join(".cache"));
        let runtime = crate::plugin::Runtime::new(Some(cache))
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(a.limits.queue);
        // Our own messages come back from the broker; all but heartbeats (our liveness
        // probe) are dropped before they cost a hand-off to the cluster task.
        let keep: crate::plugin::DeliveryFilter =
            Arc::new(move |_topic: &str, p: &[u8]| !crate::cluster::wire::is_own_echo(p, node_id));
        let (supervised, metrics) =
            runtime.start_filtered(a, &node_id.to_string(), tx, Some(keep))?;
        Ok(Some((
            LoadedAdapter {
                name: a.driver.clone(),
                supervised,
                metrics,
            },
            rx,
        )))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves, then stops accepting, closes every client with 4200,
    /// flushes webhooks, and returns within the configured grace period.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> Result<(), StartError> {
        let metrics = Arc::new(Metrics::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (hooks, hooks_task) = webhooks::spawn(
            self.config.webhooks.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        );
        let node_id = rand::random::<u32>() >> 1;
        let grace = Duration::from_secs(self.config.server.shutdown_grace_secs);
        let (adapter, deliveries) = match Self::start_adapter(&self.config, node_id)? {
            Some((a, rx)) => (Some(a), Some(rx)),
            None => (None, None),
        };
        let cluster = adapter.as_ref().map(|a| {
            Arc::new(Cluster::new(
                node_id,
                self.config.cluster.clone(),
                Arc::new(a.supervised.clone()),
            ))
        });
        let link: Arc<dyn Link> = match &cluster {
            Some(c) => c.clone(),
            None => Arc::new(NoLink),
        };
        let hub = Arc::new(Hub::new(
            &self.config.apps,
            node_id,
            link,
            metrics.clone(),
            hooks,
        ));
        // Throttled subscription counts go out once their interval has passed.
        let flusher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    for app in hub.apps() {
                        app.flush_counts();
                    }
                }
            })
        };
        if let (Some(c), Some(rx)) = (&cluster, deliveries) {
            tokio::spawn(c.clone().run(hub.clone(), rx));
        }
        let state = Arc::new(State {
            config: self.config,
            hub,
            shutdown: shutdown_rx.clone(),
            adapter,
            cluster,
        });
        tracing::info!(addr = %self.listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), node_id, "switchyard listening");

        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    match accepted {
                        Ok((stream, _)) => spawn_connection(state.clone(), stream),
                        Err(e) => {
                            // Usually EMFILE: back off briefly instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                _ = &mut stop => break,
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: closing clients with 4200");
        let _ = shutdown_tx.send(true);
        state.hub.close_all(
            crate::protocol::ErrorCode::ReconnectImmediately,
            "server shutting down",
        );
        let deadline = tokio::time::Instant::now() + grace;
        while metrics
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        flusher.abort();
        if let Some(c) = &state.cluster {
            c.goodbye();
            // Let the adapter hand the goodbye to the broker before it stops.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(a) = &state.adapter {
            a.supervised.stop();
        }
        drop(state);
        if tokio::time::timeout_at(deadline, hooks_task).await.is_err() {
            tracing::warn!("webhook deliveries still pending at the end of the grace period");
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

fn spawn_connection(state: Arc<State>, stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        let io = TokioIo::new(stream);
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(state, req).await) }
        });
        if let Err(e) = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades()
            .await
        {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
    });
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(key) = path.strip_prefix("/app/") {
        if req.method() == Method::GET {
            let key = key.trim_end_matches('/').to_owned();
            return ws::upgrade(state, &key, req);
        }
    }
    match (req.method(), path) {
        (&Method::GET, "/up") | (&Method::GET, "/") => {
            // The node serves its local clients whatever the adapter does, so it is up; the
            // body says how the backplane stands.
            let status = state.backplane_status();
            let detail = match &status {
                BackplaneStatus::Restarting(why) | BackplaneStatus::Failed(why) => {
                    Some(why.clone())
                }
                _ => None,
            };
            let body = serde_json::json!({
                "ok": true,
                "adapter": state.adapter.as_ref().map_or("local", |a| a.name.as_str()),
                "adapter_state": status.label(),
                "adapter_detail": detail,
                "node_id": state.hub.node_id,
                "peers": state.cluster.as_ref().map(|c| {
                    let mut p = c.peer_ids();
                    p.sort_unstable();
                    p
                }),
            });
            http_api::json_response(StatusCode::OK, body.to_string())
        }
        (&Method::GET, "/metrics") => {
            let mut text = state.hub.metrics.render();
            if let Some(a) = &state.adapter {
                a.metrics.render(&a.name, &mut text);
            }
            if let Some(c) = &state.cluster {
                c.metrics.render(&mut text);
            }
            Response::builder()
                .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(text)))
                .expect("static response parts are valid")
        }
        _ if path.starts_with("/apps/") => http_api::handle(state, req).await,
        _ => http_api::ApiError::NotFound("not found".into()).into_response(),
    }
}
