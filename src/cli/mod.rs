//! The command line's cluster side, shared by `tenant-capacity-operator
//! status|render` and the kubectl plugin `kubectl capacity status|render`
//! (the same binary under the name `kubectl-capacity`): which cluster to
//! talk to (`--kubeconfig`, `--context`, the context's namespace), what to
//! print (`-o json|yaml|wide`), and errors worded as kubectl words them.
//! [`probe`] is the chart's `helm test`.

pub mod probe;
mod status;

use std::path::PathBuf;

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};

pub use status::{
    Printed, StatusQuery, human_age, list_table, render, show_list, show_one, status,
};

use crate::controller::{self, Limits};

/// The plugin's name: a link named so on PATH makes `kubectl capacity`.
pub const PLUGIN: &str = "kubectl-capacity";

/// `-o`: machine-readable output, or a wider table (the human table when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Json,
    Yaml,
    Wide,
}

/// Which cluster, and as whom: kubectl's `--kubeconfig` and `--context`.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl Connection {
    /// A client, bounded as the operator's own (`controller::client_for`),
    /// and the namespace the context names (`default` when it names none,
    /// the pod's own in a cluster). Without flags the kubeconfig comes from
    /// `KUBECONFIG` or `~/.kube/config`, else the in-cluster service account,
    /// as kubectl finds it.
    pub async fn connect(&self) -> Result<(Client, String), CliError> {
        let config = if self.kubeconfig.is_none() && self.context.is_none() {
            kube::Config::infer()
                .await
                .map_err(|e| CliError::Config(chain(&e)))?
        } else {
            let kubeconfig = match &self.kubeconfig {
                Some(path) => Kubeconfig::read_from(path),
                None => Kubeconfig::read(),
            }
            .map_err(|e| CliError::Config(chain(&e)))?;
            if let Some(context) = &self.context
                && !kubeconfig.contexts.iter().any(|c| &c.name == context)
            {
                return Err(CliError::ContextNotFound(context.clone()));
            }
            let options = KubeConfigOptions {
                context: self.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| CliError::Config(chain(&e)))?
        };
        let namespace = config.default_namespace.clone();
        let client = controller::client_for(config, &Limits::default())
            .map_err(|e| CliError::Config(chain(&e)))?;
        Ok((client, namespace))
    }
}

/// What went wrong, printed as kubectl prints it; the command exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// kubectl's own words for it.
    #[error("error: context was not found for specified context: {0}")]
    ContextNotFound(String),
    #[error("error: {0}")]
    Config(String),
    /// The API server's refusal, e.g. `Error from server (NotFound):
    /// tenantsubscriptions.capacity.tenancy.dev "x" not found`.
    #[error("Error from server ({reason}): {message}")]
    Server { reason: String, message: String },
    /// No answer from the API server (refused connection, timeout, TLS).
    #[error("error: {0}")]
    Request(String),
    #[error("error: a resource cannot be retrieved by name across all namespaces")]
    NameAcrossNamespaces,
    #[error(
        "error: --output wide is a table of subscriptions; render prints yaml (the default) or json"
    )]
    RenderWide,
    /// A file that cannot be read or a subscription that cannot be rendered.
    #[error("error: {0}")]
    Render(String),
}

impl From<kube::Error> for CliError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => CliError::Server {
                reason: if status.reason.is_empty() {
                    status.code.to_string()
                } else {
                    status.reason.clone()
                },
                message: status.message.clone(),
            },
            other => CliError::Request(chain(&other)),
        }
    }
}

/// An error and its causes on one line, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_the_api_server_reads_as_kubectl_prints_it() {
        let status = kube::core::Status::failure(
            "tenantsubscriptions.capacity.tenancy.dev \"x\" not found",
            "NotFound",
        )
        .with_code(404);
        assert_eq!(
            CliError::from(kube::Error::Api(status.boxed())).to_string(),
            "Error from server (NotFound): tenantsubscriptions.capacity.tenancy.dev \"x\" not found"
        );
    }

    #[tokio::test]
    async fn an_unknown_context_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
             users: [{name: u, user: {token: t}}]\ncontexts: [{name: here, context: {cluster: c, user: u, namespace: team-a}}]\n\
             current-context: here\n",
        )
        .unwrap();
        let Err(e) = (Connection {
            kubeconfig: Some(path.clone()),
            context: Some("elsewhere".into()),
        })
        .connect()
        .await
        else {
            panic!("an unknown context was accepted");
        };
        assert_eq!(
            e.to_string(),
            "error: context was not found for specified context: elsewhere"
        );
        // The context's namespace is the default one.
        let (_, namespace) = Connection {
            kubeconfig: Some(path),
            context: Some("here".into()),
        }
        .connect()
        .await
        .unwrap();
        assert_eq!(namespace, "team-a");
    }
}
