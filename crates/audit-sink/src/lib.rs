//! A Falco stand-in for smoke tests: receives the Kubernetes API server's audit webhook
//! (`audit.k8s.io/v1` and `v1beta1`, `EventList` or single `Event`) and hands decoded events to
//! a sink, with bounded memory under bursts.
//!
//! Embedding it, e.g. to wait for the events of a probe ConfigMap:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use audit_sink::{Collector, Config, Server, Stage};
//! let collector = Collector::new();
//! let server = Server::bind("127.0.0.1:0".parse()?, Config::default(), collector.clone()).await?;
//! // ... point the API server's webhook kubeconfig at server.url(), create the ConfigMap ...
//! let event = collector
//!     .wait_for(std::time::Duration::from_secs(30), |e| {
//!         e.name() == Some("probe-123") && e.stage == Stage::ResponseComplete
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Over TLS, with client certificates required (`server.url()` is then `https://...`):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use audit_sink::{Collector, Config, Server, TlsConfig};
//! let tls = TlsConfig::from_pem_files(
//!     Path::new("server.pem"),
//!     Path::new("server-key.pem"),
//!     Some(Path::new("ca.pem")),
//! )?;
//! let config = Config { tls: Some(tls), ..Config::default() };
//! let server = Server::bind("127.0.0.1:0".parse()?, config, Collector::new()).await?;
//! # Ok(()) }
//! ```

mod event;
mod filter;
mod format;
mod server;
mod sink;
mod tls;

pub use event::{ApiVersion, DecodeError, Event, Level, ObjectRef, Stage, User, decode};
pub use filter::Filter;
pub use format::{Format, write_event};
pub use server::{Config, PATHS, ServeError, Server, StatsSnapshot};
pub use sink::{Collector, EventSink, SinkClosed, WaitTimeout};
pub use tls::{TlsConfig, TlsError};
