//! `patch-apiserver`: the command-line shell around the library.

// A C `main` instead of Rust's, as in render: std's start-up would reopen a closed stdout as
// /dev/null, and `patch-apiserver FILE >&-` would lose the manifest and exit 0.
#![cfg_attr(not(test), no_main)]

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use atomic_file::Stdout;
use clap::Parser;
use patch_apiserver::{
    DEFAULT_AUDIT_DIR, DEFAULT_BATCH_MAX_WAIT, KubeVersion, Mode, Outcome, PatchOptions, Rotation,
    check, needed_files, patch, read_manifest, revert, unified_diff, write_in_place,
};

const EXAMPLES: &str = "\
Examples:
  # Print the manifest with static audit logging enabled
  patch-apiserver /etc/kubernetes/manifests/kube-apiserver.yaml

  # Review the change as a diff, from a pipe
  ssh node sudo -n cat /etc/kubernetes/manifests/kube-apiserver.yaml | patch-apiserver --diff -

  # Is it patched already? (exit 0 yes, 1 no, 2 error)
  patch-apiserver --check --mode dynamic+log --kube-version v1.16.15 manifest.yaml

  # Edit on the node, atomically, with a backup outside the manifests directory
  sudo patch-apiserver --in-place /etc/kubernetes/manifests/kube-apiserver.yaml --cis

  # Undo
  sudo patch-apiserver --revert --in-place /etc/kubernetes/manifests/kube-apiserver.yaml

Exit status: 0 success, 1 --check found the manifest not patched, 2 error (nothing written).";

/// Enable Kubernetes API-server audit logging in a kube-apiserver static pod manifest,
/// changing nothing but what it adds.
#[derive(Debug, Parser)]
#[command(name = "patch-apiserver", version, after_help = EXAMPLES)]
struct Cli {
    /// Manifest to read; `-` for standard input.
    #[arg(value_name = "FILE", default_value = "-", conflicts_with = "in_place")]
    file: String,
    /// Where audit events go: static, dynamic (1.13–1.18) or dynamic+log (1.13–1.18).
    #[arg(long, default_value = "static")]
    mode: Mode,
    /// Directory on the node for the policy, webhook config and log; mounted at the same path.
    #[arg(long, default_value = DEFAULT_AUDIT_DIR, value_name = "DIR")]
    audit_dir: String,
    /// Value of --audit-webhook-batch-max-wait (static mode, Kubernetes 1.10+).
    #[arg(long, default_value = DEFAULT_BATCH_MAX_WAIT, value_name = "DURATION")]
    batch_max_wait: String,
    /// --audit-log-maxage: days to keep rotated logs.
    #[arg(long, value_name = "DAYS")]
    log_maxage: Option<u32>,
    /// --audit-log-maxbackup: rotated logs to keep.
    #[arg(long, value_name = "N")]
    log_maxbackup: Option<u32>,
    /// --audit-log-maxsize: megabytes before rotation.
    #[arg(long, value_name = "MB")]
    log_maxsize: Option<u32>,
    /// Log rotation per the CIS benchmark: maxage 30, maxbackup 10, maxsize 100.
    #[arg(long, conflicts_with_all = ["log_maxage", "log_maxbackup", "log_maxsize"])]
    cis: bool,
    /// Replace audit flags the manifest sets to other values instead of refusing.
    #[arg(long)]
    force: bool,
    /// Kubernetes version, when the image tag has none (or to override it).
    #[arg(long, value_name = "VERSION")]
    kube_version: Option<KubeVersion>,
    /// Remove what this tool adds instead of adding it.
    #[arg(long)]
    revert: bool,
    /// Print a unified diff instead of the manifest.
    #[arg(long, conflicts_with_all = ["check", "in_place"])]
    diff: bool,
    /// Exit 0 if nothing would change, 1 if something would; print nothing.
    #[arg(long, conflicts_with = "in_place")]
    check: bool,
    /// Rewrite FILE atomically (via a hidden temporary file in its directory).
    #[arg(long, value_name = "FILE")]
    in_place: Option<PathBuf>,
    /// With --in-place: where the original goes; must be outside the manifests directory
    /// [default: AUDIT_DIR/backup].
    #[arg(long, value_name = "DIR", requires = "in_place")]
    backup_dir: Option<PathBuf>,
}

impl Cli {
    fn options(&self) -> PatchOptions {
        let rotation = if self.cis {
            Some(Rotation::CIS)
        } else if self
            .log_maxage
            .or(self.log_maxbackup)
            .or(self.log_maxsize)
            .is_some()
        {
            Some(Rotation {
                max_age_days: self.log_maxage,
                max_backups: self.log_maxbackup,
                max_size_mb: self.log_maxsize,
            })
        } else {
            None
        };
        PatchOptions {
            mode: self.mode,
            audit_dir: self.audit_dir.clone(),
            batch_max_wait: self.batch_max_wait.clone(),
            rotation,
            force: self.force,
            kube_version: self.kube_version,
        }
    }
}

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // std::env::args_os still works: on Linux std captures argv from .init_array itself.
    real_main()
}

/// 0 success, 1 --check found something to change, 2 error.
#[cfg_attr(test, allow(dead_code))]
fn real_main() -> std::ffi::c_int {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return 2;
        }
        // --help and --version: their text must not vanish into a closed stdout either.
        Err(e) => {
            return match print(&e.render().to_string()) {
                Ok(()) => 0,
                Err(e) => {
                    say(format_args!("{e:#}"));
                    2
                }
            };
        }
    };
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            say(format_args!("{e:#}"));
            2
        }
    }
}

/// A line on stderr. Not eprintln!, which panics when stderr fails (`2>/dev/full`).
fn say(message: std::fmt::Arguments) {
    let _ = writeln!(io::stderr(), "patch-apiserver: {message}");
}

fn run(cli: &Cli) -> anyhow::Result<std::ffi::c_int> {
    let opts = cli.options();
    let (name, text) = match &cli.in_place {
        Some(path) => (path.display().to_string(), read_manifest(path)?),
        None if cli.file == "-" => {
            // Through a duplicate of descriptor 0: std's stdin reads a closed one as empty.
            let mut s = String::new();
            io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map(fs::File::from)
                .and_then(|mut stdin| stdin.read_to_string(&mut s))
                .context("reading standard input")?;
            ("<stdin>".to_string(), s)
        }
        None => (
            cli.file.clone(),
            fs::read_to_string(&cli.file).with_context(|| format!("reading {}", cli.file))?,
        ),
    };
    let result = if cli.check && !cli.revert {
        check(&text, &opts).map(|patched| Outcome {
            text: String::new(),
            changed: !patched,
            notes: Vec::new(),
        })
    } else if cli.revert {
        revert(&text, &opts)
    } else {
        patch(&text, &opts)
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => bail!("{}", e.located(&name)),
    };
    for note in &outcome.notes {
        say(format_args!("note: {note}"));
    }
    if cli.check {
        return Ok(outcome.changed.into());
    }
    if cli.diff {
        let label = if cli.revert { "reverted" } else { "patched" };
        print(&unified_diff(
            &text,
            &outcome.text,
            &name,
            &format!("{name} ({label})"),
        ))?;
        return Ok(0);
    }
    let Some(path) = &cli.in_place else {
        print(&outcome.text)?;
        return Ok(0);
    };
    if !outcome.changed {
        say(format_args!("{name}: nothing to change; not written"));
        return Ok(0);
    }
    let backup_dir = cli
        .backup_dir
        .clone()
        .unwrap_or_else(|| Path::new(&opts.audit_dir).join("backup"));
    let backup = write_in_place(path, &outcome.text, &backup_dir)?;
    say(format_args!("backup of the original: {}", backup.display()));
    if !cli.revert {
        for file in needed_files(&opts) {
            if !Path::new(&file).exists() {
                say(format_args!(
                    "warning: {file} does not exist yet; the API server will not start until it does"
                ));
            }
        }
    }
    Ok(0)
}

fn print(s: &str) -> anyhow::Result<()> {
    Stdout::open()
        .write_all(s.as_bytes())
        .context("writing standard output")
}
