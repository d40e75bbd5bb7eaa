//! Where received events go: a bounded channel (the binary's printer) or a [`Collector`] that
//! tests and `cargo xtask verify` query.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::event::Event;

/// The consumer is gone; the receiver answers 503 so that the sender retries later.
#[derive(Debug, thiserror::Error)]
#[error("the event consumer has stopped")]
pub struct SinkClosed;

/// A consumer of decoded, filtered events. Awaiting `accept` is the backpressure: the HTTP
/// request is answered only once it returns.
pub trait EventSink: Send + Sync + 'static {
    fn accept(&self, events: Vec<Event>) -> impl Future<Output = Result<(), SinkClosed>> + Send;
}

impl EventSink for mpsc::Sender<Event> {
    async fn accept(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        for event in events {
            self.send(event).await.map_err(|_| SinkClosed)?;
        }
        Ok(())
    }
}

/// Which events a [`Collector`] stores.
type Keep = dyn Fn(&Event) -> bool + Send + Sync;

/// Keeps the events it receives, in arrival order: all of them ([`Collector::new`], for tests)
/// or only those a filter picks ([`Collector::keeping`], so that a receiver on a busy cluster
/// holds just what it waits for).
#[derive(Clone)]
pub struct Collector {
    events: watch::Sender<Vec<Event>>,
    keep: Option<Arc<Keep>>,
    received: Arc<AtomicUsize>,
}

/// No matching event arrived before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("no matching audit event within {waited:?} ({seen} events received)")]
pub struct WaitTimeout {
    pub waited: Duration,
    pub seen: usize,
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            events: watch::Sender::new(Vec::new()),
            keep: None,
            received: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Collector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps only the events `keep` accepts; the others are counted, not stored.
    pub fn keeping(keep: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        Collector {
            keep: Some(Arc::new(keep)),
            ..Self::default()
        }
    }

    /// How many events arrived, kept or not.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// A copy of everything received so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.borrow().clone()
    }

    /// Waits until an event satisfying `matches` has arrived (including before the call).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut matches: impl FnMut(&Event) -> bool,
    ) -> Result<Event, WaitTimeout> {
        let mut rx = self.events.subscribe();
        let found = tokio::time::timeout(timeout, async {
            let seen = rx
                .wait_for(|events| events.iter().any(&mut matches))
                .await
                .ok()?;
            seen.iter().find(|e| matches(e)).cloned()
        })
        .await;
        match found {
            Ok(Some(event)) => Ok(event),
            _ => Err(WaitTimeout {
                waited: timeout,
                seen: self.received(),
            }),
        }
    }
}

impl EventSink for Collector {
    async fn accept(&self, mut events: Vec<Event>) -> Result<(), SinkClosed> {
        self.received.fetch_add(events.len(), Ordering::Relaxed);
        if let Some(keep) = &self.keep {
            events.retain(|e| keep(e));
        }
        if !events.is_empty() {
            self.events.send_modify(|all| all.extend(events));
        }
        Ok(())
    }
}
