//! `patch-apiserver`: the command-line shell around the library.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use patch_apiserver::{
    DEFAULT_AUDIT_DIR, DEFAULT_BATCH_MAX_WAIT, KubeVersion, Mode, Outcome, PatchOptions, Rotation,
    check, needed_files, patch, revert, unified_diff,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("patch-apiserver: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let opts = cli.options();
    let (name, text) = match &cli.in_place {
        Some(path) => (
            path.display().to_string(),
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None if cli.file == "-" => {
            let mut s = String::new();
            io::stdin()
                .read_to_string(&mut s)
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
        eprintln!("patch-apiserver: note: {note}");
    }
    if cli.check {
        return Ok(ExitCode::from(u8::from(outcome.changed)));
    }
    if cli.diff {
        let label = if cli.revert { "reverted" } else { "patched" };
        print(&unified_diff(
            &text,
            &outcome.text,
            &name,
            &format!("{name} ({label})"),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(path) = &cli.in_place else {
        print(&outcome.text)?;
        return Ok(ExitCode::SUCCESS);
    };
    if !outcome.changed {
        eprintln!("patch-apiserver: {name}: nothing to change; not written");
        return Ok(ExitCode::SUCCESS);
    }
    let backup_dir = cli
        .backup_dir
        .clone()
        .unwrap_or_else(|| Path::new(&opts.audit_dir).join("backup"));
    let backup = write_in_place(path, &text, &outcome.text, &backup_dir)?;
    eprintln!(
        "patch-apiserver: backup of the original: {}",
        backup.display()
    );
    if !cli.revert {
        for file in needed_files(&opts) {
            if !Path::new(&file).exists() {
                eprintln!(
                    "patch-apiserver: warning: {file} does not exist yet; the API server will not start until it does"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(s: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .context("writing standard output")
}

/// `path` made absolute with symlinks resolved, as far as it exists.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            break;
        };
        missing.push(name);
        existing = parent;
    }
    let mut resolved = existing
        .canonicalize()
        .with_context(|| format!("resolving {}", existing.display()))?;
    resolved.extend(missing.iter().rev());
    Ok(resolved)
}

/// Backs `path` up into `backup_dir`, then replaces it through a hidden temporary file
/// in its own directory (the kubelet ignores dotfiles) and a rename.
fn write_in_place(path: &Path, old: &str, new: &str, backup_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    // Checked before anything is created: a directory in the manifests directory would
    // be bad enough, a backup manifest there would start as a second API server.
    let manifests = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    if resolve(backup_dir)?.starts_with(&manifests) {
        bail!(
            "backup directory {} is inside {}, where the kubelet would run the backup as a second pod; choose another --backup-dir",
            backup_dir.display(),
            manifests.display()
        );
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(backup_dir)
        .with_context(|| format!("creating backup directory {}", backup_dir.display()))?;
    let backups = backup_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", backup_dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut backup = backups.join(format!("{file_name}.{stamp}.orig"));
    let mut n = 1;
    let mut file = loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&backup)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => {
                backup = backups.join(format!("{file_name}.{stamp}.{n}.orig"));
                n += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating backup {}", backup.display()));
            }
        }
    };
    file.write_all(old.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing backup {}", backup.display()))?;

    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let tmp = dir.join(format!(
        ".{file_name}.patch-apiserver.{}.tmp",
        std::process::id()
    ));
    let written = (|| -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(new.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("replacing {}", path.display()));
    }
    Ok(backup)
}
