//! The pipeline's one error type. Each tool's own error is kept whole (so a caller can match on
//! it), and every layer may add a sentence of context, as `anyhow` would, without the library
//! depending on `anyhow`.

use std::fmt::Display;

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Ship(#[from] ship::ShipError),
    #[error(transparent)]
    Apply(#[from] ship::ApplyError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[cfg(feature = "remote")]
    #[error(transparent)]
    Sink(#[from] audit_sink::ServeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A check refused to go on, or a node command failed; the text says which and why.
    #[error("{0}")]
    Failed(String),
    /// `message` happened while doing something that failed with `inner`.
    #[error("{message}")]
    Context {
        message: String,
        #[source]
        inner: Box<PipelineError>,
    },
}

impl PipelineError {
    pub fn failed(message: impl Display) -> PipelineError {
        PipelineError::Failed(message.to_string())
    }

    /// What the light build (without the `remote` feature) cannot do.
    pub fn not_built(what: &str) -> PipelineError {
        PipelineError::Failed(format!(
            "{what} needs SSH or the cluster, which this light build of the pipeline leaves out (the `remote` feature); run it with `k8s-audit` or `cargo xtask`"
        ))
    }

    /// The message and its causes on one line, `outer: inner: cause`, each cause said once.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            let said = error.to_string();
            if !said.is_empty() && !text.contains(&said) {
                text.push_str(": ");
                text.push_str(&said);
            }
            cause = error.source();
        }
        text
    }
}

impl From<std::string::FromUtf8Error> for PipelineError {
    fn from(error: std::string::FromUtf8Error) -> Self {
        PipelineError::failed(error)
    }
}

impl From<std::num::ParseIntError> for PipelineError {
    fn from(error: std::num::ParseIntError) -> Self {
        PipelineError::failed(error)
    }
}

/// `anyhow::Context` for the pipeline's error: a sentence saying what was being done.
pub trait Context<T> {
    fn context(self, message: impl Display) -> Result<T>;
    fn with_context<M: Display>(self, message: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context(self, message: impl Display) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            message: message.to_string(),
            inner: Box::new(e.into()),
        })
    }

    fn with_context<M: Display>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            message: message().to_string(),
            inner: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, message: impl Display) -> Result<T> {
        self.ok_or_else(|| PipelineError::failed(message))
    }

    fn with_context<M: Display>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.ok_or_else(|| PipelineError::failed(message()))
    }
}

/// `return Err(PipelineError::Failed(format!(...)))`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::PipelineError::Failed(format!($($arg)*)))
    };
}

pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = Err::<(), _>(io)
            .context("reading /etc/x")
            .context("preflight")
            .unwrap_err();
        assert_eq!(error.report(), "preflight: reading /etc/x: no such file");
        let repeated = Err::<(), _>(PipelineError::failed("boom"))
            .context("it went boom")
            .unwrap_err();
        assert_eq!(repeated.report(), "it went boom");
    }
}
