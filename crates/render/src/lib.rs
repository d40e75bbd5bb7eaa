//! `render`: a byte-exact replacement for GNU `envsubst` 0.21 that is faster, streams in
//! constant memory, and can refuse to render when a variable is missing.
//!
//! With [`Options::default`] the output is exactly GNU's: `$NAME` and `${NAME}` are replaced,
//! everything else (including `${NAME:-word}`, `$1`, invalid UTF-8 and NUL) passes through.
//! The opt-in modes ([`Options::strict`], [`Options::no_empty`], [`Options::defaults`]) are
//! the only ways a render can fail on its input, and they report every problem at once.
//!
//! ```
//! let mut vars = render::Vars::new();
//! vars.set("FALCO_SERVICE_CLUSTERIP", "10.0.0.7");
//! let out = render::render(b"server: http://$FALCO_SERVICE_CLUSTERIP:8765/k8s_audit\n", &vars, &Default::default()).unwrap();
//! assert_eq!(out, b"server: http://10.0.0.7:8765/k8s_audit\n");
//! ```

mod engine;
mod error;
mod format;
mod position;
mod stream;
mod vars;

pub use error::{AssignmentError, Missing, Origin, Reason, RenderError};
pub use format::shell_format_variables;
pub use stream::{render_buffered, render_stream};
pub use vars::{Vars, is_name, parse_assignment};

/// What to substitute and what counts as an error. `Default` is GNU `envsubst` exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// A reference to an unset variable is an error ([`Reason::Unset`]).
    pub strict: bool,
    /// A reference to a set but empty variable is an error ([`Reason::Empty`]). Implies `strict`:
    /// a variable that is not even set cannot be "non-empty" either.
    pub no_empty: bool,
    /// Understand the shell's `${VAR:-word}`, `${VAR-word}`, `${VAR:=word}`, `${VAR=word}`,
    /// `${VAR:?msg}`, `${VAR?msg}`, `${VAR:+word}` and `${VAR+word}`. `word` is expanded too.
    pub defaults: bool,
    /// Substitute only these names (GNU's SHELL-FORMAT argument); other references stay as written.
    pub only: Option<Vec<String>>,
}

impl Options {
    /// Only GNU's behaviour; `only` is taken from a SHELL-FORMAT string like `'$A ${B}'`.
    pub fn with_shell_format(format: &[u8]) -> Self {
        Options {
            only: Some(shell_format_variables(format)),
            ..Options::default()
        }
    }

    /// Whether a render with these options can fail on its input (and so must not stream
    /// straight to a consumer that cannot take back half a file).
    pub fn can_fail(&self) -> bool {
        self.strict || self.no_empty || self.defaults
    }
}

/// Renders a whole template held in memory.
///
/// Fails only in the opt-in modes, with [`RenderError::Missing`] listing every problem in
/// input order.
pub fn render(template: &[u8], vars: &Vars, opts: &Options) -> Result<Vec<u8>, RenderError> {
    let mut engine = engine::Engine::new(vars, opts);
    let mut out = Vec::with_capacity(template.len());
    engine.feed(template, true, &mut out);
    engine.finish(&Origin::Template)?;
    Ok(out)
}
