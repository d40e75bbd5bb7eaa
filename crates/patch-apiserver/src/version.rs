//! Kubernetes versions, as written in image tags and on the command line.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid Kubernetes version {input:?}: expected MAJOR.MINOR[.PATCH] with an optional leading v and -suffix, e.g. v1.28.3"
)]
pub struct ParseVersionError {
    pub input: String,
}

impl KubeVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        KubeVersion {
            major,
            minor,
            patch,
        }
    }

    /// The version in an image reference's tag, e.g. `registry.k8s.io/kube-apiserver:v1.28.1`
    /// or `rancher/hardened-kubernetes:v1.28.9-rke2r1-build20240416`; `None` for a digest
    /// or a tag that is not a version.
    pub fn from_image(image: &str) -> Option<KubeVersion> {
        let name = image.split('@').next().unwrap_or(image);
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let tag = name[last_slash..].rsplit_once(':')?.1;
        tag.parse().ok()
    }
}

impl FromStr for KubeVersion {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseVersionError {
            input: s.to_string(),
        };
        let body = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let core = body.split(['-', '+']).next().unwrap_or(body);
        let mut parts = core.split('.');
        let mut number = |required: bool| -> Result<Option<u32>, ParseVersionError> {
            match parts.next() {
                None if !required => Ok(None),
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map(Some).map_err(|_| err())
                }
                _ => Err(err()),
            }
        };
        let major = number(true)?.ok_or_else(err)?;
        let minor = number(true)?.ok_or_else(err)?;
        let patch = number(false)?.unwrap_or(0);
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(KubeVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_in_the_wild() {
        for (s, want) in [
            ("v1.28.3", KubeVersion::new(1, 28, 3)),
            ("1.20", KubeVersion::new(1, 20, 0)),
            ("v1.28.9-rke2r1-build20240416", KubeVersion::new(1, 28, 9)),
            ("v1.11.2+k3s1", KubeVersion::new(1, 11, 2)),
        ] {
            assert_eq!(s.parse::<KubeVersion>(), Ok(want), "{s}");
        }
        for bad in [
            "",
            "v",
            "1",
            "latest",
            "1.x",
            "v1.2.3.4",
            "1..2",
            "99999999999.1",
        ] {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad}");
        }
        assert_eq!(KubeVersion::new(1, 28, 3).to_string(), "v1.28.3");
        assert!(KubeVersion::new(1, 9, 9) < KubeVersion::new(1, 10, 0));
    }

    #[test]
    fn reads_image_tags() {
        for (image, want) in [
            (
                "registry.k8s.io/kube-apiserver:v1.28.1",
                Some(KubeVersion::new(1, 28, 1)),
            ),
            (
                "k8s.gcr.io/kube-apiserver-amd64:v1.11.2",
                Some(KubeVersion::new(1, 11, 2)),
            ),
            (
                "rancher/hardened-kubernetes:v1.28.9-rke2r1-build20240416",
                Some(KubeVersion::new(1, 28, 9)),
            ),
            (
                "localhost:5000/kube-apiserver:v1.20.0",
                Some(KubeVersion::new(1, 20, 0)),
            ),
            ("localhost:5000/kube-apiserver", None),
            ("registry.k8s.io/kube-apiserver@sha256:abcd", None),
            (
                "registry.k8s.io/kube-apiserver:v1.29.0@sha256:abcd",
                Some(KubeVersion::new(1, 29, 0)),
            ),
            ("kube-apiserver:latest", None),
        ] {
            assert_eq!(KubeVersion::from_image(image), want, "{image}");
        }
    }
}
