use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a template came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Stdin,
    File(PathBuf),
    /// A template handed to [`crate::render`] as bytes.
    Template,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Stdin => f.write_str("<stdin>"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Template => f.write_str("<template>"),
        }
    }
}

/// Why a reference could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Not set, under `strict`.
    Unset,
    /// Set to the empty string, under `no_empty`.
    Empty,
    /// `${VAR:?message}` or `${VAR?message}` fired; holds the expanded message (cut after
    /// 4 KiB).
    Required(String),
    /// `${VAR:=word}` would make the assigned values exceed 1 MiB in all; not assigned.
    TooMuchAssigned,
}

/// One reference that could not be rendered. `line` and `column` are 1-based and point at the
/// `$`; the column counts characters (each byte of invalid UTF-8 counts as one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub name: String,
    pub line: u64,
    pub column: u64,
    pub reason: Reason,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.name)?;
        match &self.reason {
            Reason::Unset => f.write_str(" is not set"),
            Reason::Empty => f.write_str(" is set but empty"),
            Reason::Required(message) => write!(f, ": {message}"),
            Reason::TooMuchAssigned => {
                f.write_str(": the values assigned with := would exceed 1 MiB in all")
            }
        }
    }
}

/// A malformed `KEY=VALUE` (an `--env-file` line or a `--set` argument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("expected KEY=VALUE, found no `=`")]
    MissingEquals,
    #[error("expected a variable name ([A-Za-z_][A-Za-z0-9_]*) before `=`, found {0:?}")]
    InvalidName(String),
    #[error("unterminated {0} quote: expected the value to end with {0}")]
    UnterminatedQuote(char),
}

/// Each message is complete on its own (the I/O cause is part of it, not a separate `source`),
/// so that printing it, or a chain of contexts around it, never repeats the cause.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The references that could not be rendered, in input order, one per line: the first
    /// 1,000, then a count of the rest.
    #[error("{}", MissingList { origin, missing, unreported: *unreported })]
    Missing {
        origin: Origin,
        missing: Vec<Missing>,
        /// How many more there were beyond `missing`.
        unreported: u64,
    },
    #[error("error while reading {origin}: {error}")]
    Read { origin: Origin, error: io::Error },
    #[error("write error: {0}")]
    Write(io::Error),
    #[error("cannot read env file {}: {error}", path.display())]
    EnvFileRead { path: PathBuf, error: io::Error },
    #[error("{}:{line}:{column}: {problem}", path.display())]
    EnvFile {
        path: PathBuf,
        line: u64,
        column: u64,
        problem: AssignmentError,
    },
    /// `-o FILE`: what could not be written, and what was left behind (nothing).
    #[error(transparent)]
    Output(#[from] atomic_file::Error),
    /// The temporary file that holds a render until it is known to succeed.
    #[error("cannot buffer the output in a temporary file under {}: {error}", dir.display())]
    Buffer { dir: PathBuf, error: io::Error },
}

struct MissingList<'a> {
    origin: &'a Origin,
    missing: &'a [Missing],
    unreported: u64,
}

impl fmt::Display for MissingList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, missing) in self.missing.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{missing}", self.origin)?;
        }
        if self.unreported > 0 {
            write!(
                f,
                "\n{}: and {} more, not listed",
                self.origin, self.unreported
            )?;
        }
        Ok(())
    }
}
