//! Which events reach the sink: `--resource`, `--verb` and `--user`, each repeatable.

use crate::event::Event;

/// An empty list matches everything; otherwise the event's value must equal one entry.
/// The filters combine with AND, the entries of one filter with OR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `configmaps`, or `pods/log` to select a subresource.
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub users: Vec<String>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        let resource = event.resource();
        let base = event
            .object_ref
            .as_ref()
            .and_then(|o| o.resource.as_deref());
        (self.resources.is_empty()
            || self.resources.iter().any(|r| {
                resource.as_deref() == Some(r.as_str())
                    || (!r.contains('/') && base == Some(r.as_str()))
            }))
            && (self.verbs.is_empty() || self.verbs.contains(&event.verb))
            && (self.users.is_empty() || self.users.contains(&event.user.username))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;

    fn event(resource: &str, subresource: Option<&str>, verb: &str, user: &str) -> Event {
        let sub = subresource.map_or(String::new(), |s| format!(r#","subresource":"{s}""#));
        let body = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/x","verb":"{verb}","user":{{"username":"{user}"}},"objectRef":{{"resource":"{resource}"{sub}}}}}"#
        );
        decode(body.as_bytes()).expect("valid test event").remove(0)
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(Filter::default().matches(&event("pods", None, "get", "admin")));
    }

    #[test]
    fn filters_combine_with_and_entries_with_or() {
        let filter = Filter {
            resources: vec!["configmaps".into(), "secrets".into()],
            verbs: vec!["create".into()],
            users: vec![],
        };
        assert!(filter.matches(&event("secrets", None, "create", "u")));
        assert!(!filter.matches(&event("secrets", None, "delete", "u")));
        assert!(!filter.matches(&event("pods", None, "create", "u")));
    }

    #[test]
    fn base_resource_matches_subresources_but_not_the_reverse() {
        let pods = Filter {
            resources: vec!["pods".into()],
            ..Filter::default()
        };
        let logs = Filter {
            resources: vec!["pods/log".into()],
            ..Filter::default()
        };
        assert!(pods.matches(&event("pods", Some("log"), "get", "u")));
        assert!(logs.matches(&event("pods", Some("log"), "get", "u")));
        assert!(!logs.matches(&event("pods", None, "get", "u")));
    }

    #[test]
    fn user_filter_is_exact() {
        let filter = Filter {
            users: vec!["admin".into()],
            ..Filter::default()
        };
        assert!(filter.matches(&event("pods", None, "get", "admin")));
        assert!(!filter.matches(&event("pods", None, "get", "admin2")));
    }
}
