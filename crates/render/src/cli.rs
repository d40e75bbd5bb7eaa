//! The command line (binary only): GNU envsubst's options plus the opt-in ones.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{CommandFactory, Parser};

const EXAMPLES: &str = "\
Examples:
  # Exactly like GNU envsubst:
  FALCO_SERVICE_CLUSTERIP=10.96.0.7 render < webhook-config.yaml.in > webhook-config.yaml
  # Only substitute the listed variables; others stay as written:
  render '$FALCO_SERVICE_CLUSTERIP' < audit-sink.yaml.in | kubectl apply -f -
  # List the variables a SHELL-FORMAT references:
  render -v '$A ${B}'
  # Refuse to render if anything is unset or empty; nothing reaches the pipe on error:
  render --strict --no-empty -i webhook-config.yaml.in | kubectl apply -f -
  # Shell defaults, values from a file and the command line, atomic output:
  render --defaults --env-file cluster.env --set PORT=9765 -i t.yaml.in -o t.yaml

Exit status: 0 on success, 1 on a usage, read, write or (opt-in) missing-variable error.";

#[derive(Parser, Debug)]
#[command(
    name = "render",
    about = "Substitute environment variables in a template: a byte-exact, faster GNU envsubst.",
    long_about = "Substitute environment variables in a template: a byte-exact, faster GNU \
        envsubst.\n\nReads standard input (or --input) and writes standard output (or \
        --output), replacing $NAME and ${NAME}. Without options the output is exactly GNU \
        envsubst 0.21's. With a SHELL-FORMAT only the variables it references are replaced.",
    after_help = EXAMPLES,
    disable_help_flag = true,
    disable_version_flag = true,
    infer_long_args = true,
    // GNU's getopt_long takes an option twice (`-v -v`, `-vv`) as once; a repeated value
    // option keeps its last value, as getopt users do.
    args_override_self = true
)]
pub struct Cli {
    /// Substitute only the variables referenced here, e.g. '$A ${B}'.
    #[arg(value_name = "SHELL-FORMAT")]
    pub format: Vec<OsString>,
    /// Print the variables referenced in SHELL-FORMAT, one per line, and exit.
    #[arg(short = 'v', long)]
    pub variables: bool,
    /// Print this help and exit.
    #[arg(short = 'h', long)]
    pub help: bool,
    /// Print version information and exit.
    #[arg(short = 'V', long)]
    pub version: bool,
    /// Fail (exit 1, write nothing) if a referenced variable is unset; report every one.
    #[arg(long, visible_alias = "no-unset")]
    pub strict: bool,
    /// Like --strict, and a variable that is set but empty is an error too.
    #[arg(long)]
    pub no_empty: bool,
    /// Understand ${VAR:-word}, ${VAR-word}, ${VAR:=word}, ${VAR:?msg}, ${VAR:+word}.
    #[arg(long)]
    pub defaults: bool,
    /// Read KEY=VALUE lines ('#' comments) that override the environment. Repeatable.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Set a variable, overriding the environment and env files. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = OsStringValueParser::new().try_map(parse_set))]
    pub set: Vec<(String, Vec<u8>)>,
    /// Read the template from FILE instead of standard input.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Write to FILE atomically (temporary file, then rename) instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl Cli {
    /// Parses like GNU getopt_long: options may follow operands, unless POSIXLY_CORRECT is set.
    pub fn parse_from_env() -> Result<Cli, clap::Error> {
        let mut args: Vec<OsString> = std::env::args_os().collect();
        if std::env::var_os("POSIXLY_CORRECT").is_some() {
            end_options_at_first_operand(&mut args);
        }
        Cli::try_parse_from(args)
    }

    pub fn help_text() -> String {
        Cli::command().render_long_help().to_string()
    }
}

fn parse_set(arg: OsString) -> Result<(String, Vec<u8>), render::AssignmentError> {
    render::parse_assignment(arg.as_bytes())
}

/// Inserts `--` before the first operand, so that later arguments are operands too.
fn end_options_at_first_operand(args: &mut Vec<OsString>) {
    let takes_value = |long: &[u8]| {
        !long.is_empty()
            && [&b"input"[..], b"output", b"env-file", b"set"]
                .iter()
                .any(|o| o.starts_with(long))
    };
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].as_bytes();
        if arg == b"--" {
            return;
        }
        if let Some(long) = arg.strip_prefix(b"--") {
            i += if !long.contains(&b'=') && takes_value(long) {
                2
            } else {
                1
            };
        } else if arg.len() > 1 && arg[0] == b'-' {
            // A cluster like -vi FILE: a value option takes the rest, or the next argument.
            let cluster = &arg[1..];
            let value_at = cluster.iter().position(|b| matches!(b, b'i' | b'o'));
            i += match value_at {
                Some(p) if p + 1 == cluster.len() => 2,
                _ => 1,
            };
        } else {
            args.insert(i, "--".into());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posix(args: &[&str]) -> Vec<String> {
        let mut args: Vec<OsString> = args.iter().map(Into::into).collect();
        end_options_at_first_operand(&mut args);
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn posixly_correct_stops_at_the_first_operand() {
        assert_eq!(posix(&["r", "$A", "-v"]), ["r", "--", "$A", "-v"]);
        assert_eq!(
            posix(&["r", "-v", "$A", "-h"]),
            ["r", "-v", "--", "$A", "-h"]
        );
        assert_eq!(posix(&["r", "-o", "f", "$A"]), ["r", "-o", "f", "--", "$A"]);
        assert_eq!(
            posix(&["r", "-vo", "f", "$A"]),
            ["r", "-vo", "f", "--", "$A"]
        );
        assert_eq!(posix(&["r", "-ofile", "$A"]), ["r", "-ofile", "--", "$A"]);
        assert_eq!(
            posix(&["r", "--set", "A=1", "$A"]),
            ["r", "--set", "A=1", "--", "$A"]
        );
        assert_eq!(
            posix(&["r", "--in=f", "-", "x"]),
            ["r", "--in=f", "--", "-", "x"]
        );
        assert_eq!(posix(&["r", "--", "-v"]), ["r", "--", "-v"]);
        assert_eq!(posix(&["r", "--strict"]), ["r", "--strict"]);
    }

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
    }
}
