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

impl Error {
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
}
