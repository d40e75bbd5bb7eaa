//! The audit policy that goes to the node: a bundled preset, or the user's own file, checked
//! here first. The API server reads the policy only at startup and refuses to start on one it
//! cannot load, so a policy it would refuse must never reach the node: the check decodes it as
//! the server's version would (apiVersion, levels, stages, rule fields) and says FILE:LINE:COL.

use std::path::PathBuf;

use patch_apiserver::{KubeVersion, Pos};
use serde::Deserialize;

use crate::error::{Context, PipelineError, Result};
use crate::templates;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The rules of Falco's k8saudit plugin today: Secrets at Metadata, so their values are never logged.
    Falco,
    /// The seed's exact rules: Secrets at RequestResponse, so their values are logged and sent to Falco.
    Seed,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// The bundled audit policy to ship.
    #[arg(long, value_enum, default_value_t = Preset::Falco)]
    pub policy_preset: Preset,
    /// Ship this audit Policy instead of a bundled one; it is checked before anything is written.
    #[arg(long, value_name = "FILE", conflicts_with = "policy_preset")]
    pub policy: Option<PathBuf>,
}

/// Falco's limits, which a catch-all RequestResponse rule runs into (k8saudit plugin defaults).
pub const FALCO_MAX_EVENT_SIZE: usize = 262_144;
pub const FALCO_WEBHOOK_MAX_BATCH_SIZE: usize = 12_582_912;

/// The policy file's bytes for `version` (None: unknown), and warnings for the step log.
pub fn policy_file(
    args: &PolicyArgs,
    version: Option<&KubeVersion>,
) -> Result<(Vec<u8>, Vec<String>)> {
    let (bytes, origin, mut warnings) = match (&args.policy, args.policy_preset) {
        (Some(path), _) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the audit policy {}", path.display()))?;
            (bytes, path.display().to_string(), Vec::new())
        }
        (None, Preset::Falco) => (
            templates::audit_policy(version)?,
            "the bundled falco policy".to_string(),
            Vec::new(),
        ),
        (None, Preset::Seed) => (
            templates::seed_policy(version)?,
            "the bundled seed policy".to_string(),
            vec![
                "--policy-preset seed logs Secrets at RequestResponse: their values land in audit.log on the node and are sent to Falco; the default preset (falco) logs them at Metadata".to_string(),
            ],
        ),
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| PipelineError::failed(format!("{origin}: not UTF-8 text ({e})")))?;
    let policy = check(&text, version).map_err(|e| e.located(&origin))?;
    warnings.extend(policy.warnings());
    Ok((text.into_bytes(), warnings))
}

/// Why a policy would be refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub at: Pos,
    pub message: String,
}

impl PolicyError {
    fn located(self, origin: &str) -> PipelineError {
        PipelineError::failed(format!(
            "{origin}:{}: {}; the API server would refuse to start with it, so nothing was written",
            self.at, self.message
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ApiVersion {
    #[serde(rename = "audit.k8s.io/v1")]
    V1,
    #[serde(rename = "audit.k8s.io/v1beta1")]
    V1beta1,
    #[serde(rename = "audit.k8s.io/v1alpha1")]
    V1alpha1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Kind {
    Policy,
}

/// The audit Policy as the API server decodes it; every field it does not know is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    pub api_version: ApiVersion,
    #[allow(dead_code)]
    kind: Kind,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_norway::Mapping>,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

impl Rule {
    /// Matches every request: no selector at all.
    fn is_catch_all(&self) -> bool {
        self.users.is_empty()
            && self.user_groups.is_empty()
            && self.verbs.is_empty()
            && self.resources.is_empty()
            && self.namespaces.is_empty()
            && self.non_resource_urls.is_empty()
    }
}

impl Policy {
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(last) = self.rules.last()
            && last.is_catch_all()
            && last.level == Level::RequestResponse
        {
            warnings.push(format!(
                "the policy's catch-all rule (the last, with no selectors) logs RequestResponse: every object body goes to the webhook, and Falco drops events over {FALCO_MAX_EVENT_SIZE} bytes (maxEventSize) and requests over {FALCO_WEBHOOK_MAX_BATCH_SIZE} bytes (webhookMaxBatchSize); Metadata is the usual catch-all level"
            ));
        }
        warnings
    }
}

/// Which audit API versions a server of `version` serves: v1 from 1.12, v1beta1 and v1alpha1
/// up to 1.23 (removed in 1.24). An unknown version (an image by digest) accepts v1 only,
/// because every server this tool can still patch serves it.
fn serves(version: Option<&KubeVersion>, api: ApiVersion) -> Result<(), String> {
    let Some(v) = version else {
        return match api {
            ApiVersion::V1 => Ok(()),
            _ => Err(
                "the Kubernetes version is unknown (the image tag does not say), and only audit.k8s.io/v1 is accepted then; pass --kube-version if the server serves this one"
                    .into(),
            ),
        };
    };
    let minor = (v.major, v.minor);
    match api {
        ApiVersion::V1 if minor < (1, 12) => Err(format!(
            "Kubernetes {v} does not serve audit.k8s.io/v1 (it came in 1.12); use audit.k8s.io/v1beta1"
        )),
        ApiVersion::V1beta1 | ApiVersion::V1alpha1 if minor >= (1, 24) => Err(format!(
            "Kubernetes {v} no longer serves {} (removed in 1.24); use audit.k8s.io/v1",
            api_name(api)
        )),
        _ => Ok(()),
    }
}

fn api_name(api: ApiVersion) -> &'static str {
    match api {
        ApiVersion::V1 => "audit.k8s.io/v1",
        ApiVersion::V1beta1 => "audit.k8s.io/v1beta1",
        ApiVersion::V1alpha1 => "audit.k8s.io/v1alpha1",
    }
}

/// Decodes and checks a policy for a server of `version`.
pub fn check(text: &str, version: Option<&KubeVersion>) -> Result<Policy, PolicyError> {
    let policy: Policy = serde_norway::from_str(text).map_err(|e| {
        let at = e.location().map_or(Pos { line: 1, column: 1 }, |l| Pos {
            line: l.line(),
            column: l.column(),
        });
        PolicyError {
            at,
            message: patch_apiserver::without_locations(&e.to_string()),
        }
    })?;
    let at_key = |key: &str, nth: usize| key_position(text, key, nth);
    serves(version, policy.api_version).map_err(|message| PolicyError {
        at: at_key("apiVersion", 0),
        message: format!("apiVersion {}: {message}", api_name(policy.api_version)),
    })?;
    if policy.rules.is_empty() {
        return Err(PolicyError {
            at: at_key("rules", 0),
            message: "the policy has no rules; the API server refuses a policy with 0 rules".into(),
        });
    }
    // omitManagedFields came in 1.20; an older server refuses the field.
    let managed_fields = policy.omit_managed_fields.is_some()
        || policy.rules.iter().any(|r| r.omit_managed_fields.is_some());
    let before_1_20 = version.is_some_and(|v| (v.major, v.minor) < (1, 20));
    if managed_fields && before_1_20 {
        return Err(PolicyError {
            at: at_key("omitManagedFields", 0),
            message: format!(
                "omitManagedFields is not known to Kubernetes {} (it came in 1.20)",
                version.map(ToString::to_string).unwrap_or_default()
            ),
        });
    }
    for (n, rule) in policy.rules.iter().enumerate() {
        let at = at_key("level", n);
        let refuse = |message: String| PolicyError {
            at,
            message: format!("rule {}: {message}", n + 1),
        };
        if !rule.resources.is_empty() && !rule.non_resource_urls.is_empty() {
            return Err(refuse(
                "a rule cannot select both resources and nonResourceURLs".into(),
            ));
        }
        if !rule.namespaces.is_empty() && !rule.non_resource_urls.is_empty() {
            return Err(refuse(
                "a rule cannot select both namespaces and nonResourceURLs".into(),
            ));
        }
        for url in &rule.non_resource_urls {
            let star = url.find('*');
            // "*" alone matches every URL, as the API server allows.
            if url != "*" && (!url.starts_with('/') || star.is_some_and(|i| i != url.len() - 1)) {
                return Err(refuse(format!(
                    "nonResourceURL {url:?} must start with / and may hold * only at its end"
                )));
            }
        }
        for group in &rule.resources {
            if !group.group.is_empty() && !is_dns_subdomain(&group.group) {
                return Err(refuse(format!(
                    "group {:?} is not a lower-case DNS subdomain (\"\" is the core group)",
                    group.group
                )));
            }
            if !group.resource_names.is_empty() && group.resources.is_empty() {
                return Err(refuse(
                    "resourceNames needs at least one resource in the same entry".into(),
                ));
            }
        }
    }
    Ok(policy)
}

/// A DNS-1123 subdomain, as API group names are: lower-case labels of letters, digits and `-`.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Where the `nth` occurrence of `key:` as a mapping key starts (1:1 when not found, e.g. in
/// flow style): enough to point at the line a semantic error is about.
fn key_position(text: &str, key: &str, nth: usize) -> Pos {
    let mut found = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start_matches([' ', '-', '\t']);
        let body = trimmed.trim_start_matches(['"', '\'']);
        if body.starts_with(key)
            && body[key.len()..]
                .trim_start_matches(['"', '\''])
                .starts_with(':')
        {
            if found == nth {
                return Pos::of(text, offset + (line.len() - trimmed.len()));
            }
            found += 1;
        }
        offset += line.len();
    }
    Pos { line: 1, column: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> KubeVersion {
        text.parse().unwrap()
    }

    const MINIMAL: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";

    #[test]
    fn bundled_presets_pass_their_own_check_for_every_version() {
        for version in [
            None,
            Some(v("v1.11.2")),
            Some(v("v1.20.2")),
            Some(v("v1.33.0")),
        ] {
            for preset in [Preset::Falco, Preset::Seed] {
                let args = PolicyArgs {
                    policy_preset: preset,
                    policy: None,
                };
                let (_, warnings) = policy_file(&args, version.as_ref()).unwrap();
                assert_eq!(
                    warnings.len(),
                    usize::from(preset == Preset::Seed),
                    "{warnings:?}"
                );
            }
        }
    }

    #[test]
    fn falco_preset_logs_secrets_at_metadata_and_seed_at_request_response() {
        let level_of = |text: &[u8], resource: &str| {
            let policy = check(std::str::from_utf8(text).unwrap(), None).unwrap();
            policy
                .rules
                .iter()
                .find(|r| {
                    r.resources
                        .iter()
                        .any(|g| g.group.is_empty() && g.resources.iter().any(|x| x == resource))
                })
                .map(|r| r.level)
        };
        let falco = templates::audit_policy(None).unwrap();
        let seed = templates::seed_policy(None).unwrap();
        assert_eq!(level_of(&falco, "secrets"), Some(Level::Metadata));
        assert_eq!(level_of(&seed, "secrets"), Some(Level::RequestResponse));
        for text in [&falco, &seed] {
            assert_eq!(level_of(text, "pods"), Some(Level::RequestResponse));
            assert_eq!(level_of(text, "configmaps"), Some(Level::None)); // controller-leader first
            let policy = check(std::str::from_utf8(text).unwrap(), None).unwrap();
            assert_eq!(policy.omit_stages, [Stage::RequestReceived]);
        }
    }

    #[test]
    fn errors_say_where() {
        let err = |text: &str, version: Option<&str>| {
            let version = version.map(v);
            let e = check(text, version.as_ref()).unwrap_err();
            format!("{}: {}", e.at, e.message)
        };
        assert_eq!(
            err(&MINIMAL.replace("Metadata", "Everything"), None),
            "4:10: rules[0].level: unknown variant `Everything`, expected one of `None`, `Metadata`, `Request`, `RequestResponse`"
        );
        assert_eq!(
            err(&MINIMAL.replace("/v1", "/v1beta1"), Some("v1.28.3")),
            "1:1: apiVersion audit.k8s.io/v1beta1: Kubernetes v1.28.3 no longer serves audit.k8s.io/v1beta1 (removed in 1.24); use audit.k8s.io/v1"
        );
        assert!(
            err(&MINIMAL.replace("/v1", "/v1beta1"), None).contains("--kube-version"),
            "unknown version: v1 only"
        );
        assert!(check(&MINIMAL.replace("/v1", "/v1beta1"), Some(&v("v1.23.0"))).is_ok());
        assert!(err(MINIMAL, Some("v1.11.0")).contains("came in 1.12"));
        assert_eq!(
            err(&format!("{MINIMAL}  verb: [get]\n"), None),
            "5:3: rules[0]: unknown field `verb`, expected one of `level`, `users`, `userGroups`, `verbs`, `resources`, `namespaces`, `nonResourceURLs`, `omitStages`, `omitManagedFields`"
        );
        assert_eq!(
            err(&format!("{MINIMAL}  omitStages: [ResponseDone]\n"), None),
            "5:16: rules[0].omitStages[0]: unknown variant `ResponseDone`, expected one of `RequestReceived`, `ResponseStarted`, `ResponseComplete`, `Panic`"
        );
        assert_eq!(
            err(&format!("{MINIMAL}  verbs: [get\n"), None),
            "6:1: did not find expected ',' or ']', while parsing a flow sequence"
        );
        assert_eq!(
            err(
                &format!("{MINIMAL}  omitManagedFields: true\n"),
                Some("v1.19.4")
            ),
            "5:3: omitManagedFields is not known to Kubernetes v1.19.4 (it came in 1.20)"
        );
        assert!(
            check(
                &format!("{MINIMAL}  omitManagedFields: true\n"),
                Some(&v("v1.20.2"))
            )
            .is_ok()
        );
        assert_eq!(
            err(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n- level: Metadata\n  nonResourceURLs: [\"/a*b\"]\n",
                None
            ),
            "5:3: rule 2: nonResourceURL \"/a*b\" must start with / and may hold * only at its end"
        );
        assert!(
            err(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
                None
            )
            .starts_with("3:1: the policy has no rules")
        );
        assert!(
            err(&MINIMAL.replace("kind: Policy", "kind: Pod"), None)
                .starts_with("2:7: kind: unknown variant")
        );
    }

    /// The API server's own rules: `*` alone is a valid nonResourceURL; a group is a
    /// lower-case DNS subdomain.
    #[test]
    fn server_side_rules_are_mirrored() {
        assert!(check(&format!("{MINIMAL}  nonResourceURLs: [\"*\"]\n"), None).is_ok());
        let e = check(
            &format!("{MINIMAL}  resources: [{{group: RBAC.authorization.k8s.io}}]\n"),
            None,
        )
        .unwrap_err();
        assert_eq!(
            format!("{}: {}", e.at, e.message),
            "4:3: rule 1: group \"RBAC.authorization.k8s.io\" is not a lower-case DNS subdomain (\"\" is the core group)"
        );
    }

    #[test]
    fn catch_all_request_response_is_warned_about() {
        let loud = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  resources: [{group: \"\", resources: [secrets]}]\n- level: RequestResponse\n";
        let warnings = check(loud, None).unwrap().warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("262144 bytes (maxEventSize)"),
            "{}",
            warnings[0]
        );
        assert!(check(MINIMAL, None).unwrap().warnings().is_empty());
    }
}
