//! Why a reconcile failed: a write the API server did not take, named by
//! what was written. (A spec that cannot be applied is no failure: it is a
//! status, decided in `decide`.)

/// The API call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Apply,
    Delete,
    Annotate,
    List,
    ApplyStatus,
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Apply => "apply",
            Self::Delete => "delete",
            Self::Annotate => "annotate",
            Self::List => "list",
            Self::ApplyStatus => "apply status of",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request about one object (or, for `List`, one kind in a namespace).
    #[error("{verb} {kind} {namespace}/{name}: {source}")]
    Api {
        verb: Verb,
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("subscription has no namespace")]
    NoNamespace,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A write about a child that the API server refused for what it is
/// (invalid, or forbidden by an admission rule or by RBAC), not for the
/// moment it came at: status says so, with the API server's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub verb: Verb,
    pub kind: String,
    pub name: String,
    pub code: u16,
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} refused by the API server ({}): {}",
            self.verb, self.kind, self.name, self.code, self.message
        )
    }
}

impl Error {
    /// The refusal of a child write: 400 Bad Request, 403 Forbidden, 422
    /// Invalid. Not 404, 409 or 429, nor an outage: those pass by
    /// themselves. A refused status write is no child's.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Self::Api {
                verb,
                kind,
                name,
                source: kube::Error::Api(s),
                ..
            } if *verb != Verb::ApplyStatus && matches!(s.code, 400 | 403 | 422) => {
                Some(Rejection {
                    verb: *verb,
                    kind: kind.clone(),
                    name: name.clone(),
                    code: s.code,
                    message: s.message.clone(),
                })
            }
            _ => None,
        }
    }

    /// The operator's own permissions (RBAC) do not allow this request:
    /// what was refused ("apply HorizontalPodAutoscaler in namespace a")
    /// and the API server's words. Not a tenant's fault, and not the
    /// moment's: readiness fails with it until the permission is back.
    pub fn permission_refused(&self) -> Option<(String, String)> {
        match self {
            Self::Api {
                verb,
                kind,
                namespace,
                source: kube::Error::Api(s),
                ..
            } if s.code == 403 && is_rbac_denial(&s.message) => Some((
                format!("{verb} {kind} in namespace {namespace}"),
                s.message.clone(),
            )),
            _ => None,
        }
    }

    /// The API server answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { source: kube::Error::Api(s), .. } if s.code == 404)
    }

    /// The `error` label of the failures metric: the HTTP status, or the kind of failure.
    pub fn metric_label(&self) -> String {
        match self {
            Self::Api {
                source: kube::Error::Api(s),
                ..
            } => format!("api_{}", s.code),
            Self::Api { .. } => "kube".into(),
            Self::NoNamespace => "no_namespace".into(),
        }
    }
}

/// RBAC's denial reads `<resource> "<name>" is forbidden: User "<who>"
/// cannot <verb> resource ...`; a quota (`is forbidden: exceeded quota`) or
/// an admission policy's or webhook's denial (also 403) reads otherwise.
fn is_rbac_denial(message: &str) -> bool {
    message
        .split_once("is forbidden: User \"")
        .is_some_and(|(_, rest)| rest.contains("\" cannot "))
}

/// Attach what was being written to a client error.
pub(crate) fn api_error(
    verb: Verb,
    kind: &str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Api {
        verb,
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        api_error(Verb::Apply, "Deployment", "ns", "a-video")(kube::Error::Api(
            kube::core::Status::failure("no", "NotFound")
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn a_failure_names_the_write_and_keeps_the_server_answer() {
        let e = api(404);
        assert!(e.is_not_found());
        assert_eq!(e.metric_label(), "api_404");
        assert!(
            e.to_string().starts_with("apply Deployment ns/a-video: "),
            "{e}"
        );
        assert!(!api(409).is_not_found());
        assert_eq!(Error::NoNamespace.metric_label(), "no_namespace");
    }

    #[test]
    fn the_operators_own_permissions_are_told_from_other_refusals() {
        let forbidden = |verb, kind: &str, message: &str| {
            api_error(verb, kind, "tenant-a", "a-video")(kube::Error::Api(
                kube::core::Status::failure(message, "Forbidden")
                    .with_code(403)
                    .boxed(),
            ))
        };
        let rbac = "horizontalpodautoscalers.autoscaling \"a-video\" is forbidden: User \"system:serviceaccount:ops:tco\" cannot patch resource \"horizontalpodautoscalers\" in API group \"autoscaling\" in the namespace \"tenant-a\"";
        assert_eq!(
            forbidden(Verb::Apply, "HorizontalPodAutoscaler", rbac).permission_refused(),
            Some((
                "apply HorizontalPodAutoscaler in namespace tenant-a".to_string(),
                rbac.to_string()
            ))
        );
        let status = "tenantsubscriptions.capacity.tenancy.dev \"a\" is forbidden: User \"system:serviceaccount:ops:tco\" cannot patch resource \"tenantsubscriptions/status\"";
        assert_eq!(
            forbidden(Verb::ApplyStatus, "TenantSubscription", status)
                .permission_refused()
                .unwrap()
                .0,
            "apply status of TenantSubscription in namespace tenant-a"
        );
        for other in [
            "pods \"a-video-1\" is forbidden: exceeded quota: tenant, requested: cpu=2, used: cpu=9, limited: cpu=10",
            "admission webhook \"guard.example.com\" denied the request: the operator cannot write this",
            "ValidatingAdmissionPolicy 'tco-children' with binding 'tco-children' denied request: only the operator writes children",
        ] {
            assert_eq!(
                forbidden(Verb::Apply, "Deployment", other).permission_refused(),
                None,
                "{other}"
            );
        }
        assert_eq!(api(404).permission_refused(), None);
    }

    #[test]
    fn only_a_refusal_of_a_child_write_is_a_rejection() {
        let r = api(422).rejection().expect("422 is a rejection");
        assert_eq!(
            r.to_string(),
            "apply Deployment a-video refused by the API server (422): no"
        );
        assert!(api(403).rejection().is_some());
        assert!(api(400).rejection().is_some());
        for code in [404, 409, 429, 500, 503] {
            assert!(api(code).rejection().is_none(), "{code}");
        }
        let status =
            api_error(Verb::ApplyStatus, "TenantSubscription", "ns", "a")(kube::Error::Api(
                kube::core::Status::failure("no", "Invalid")
                    .with_code(422)
                    .boxed(),
            ));
        assert!(status.rejection().is_none());
    }
}
