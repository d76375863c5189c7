//! The API server's audit log (hack/cluster.sh up writes every write to it,
//! at Metadata level): who wrote what, with which response, counted by the
//! API server itself rather than by the operator.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use serde_json::Value;

pub struct Audit {
    path: PathBuf,
}

/// A place in the log: later counts read only what follows it.
pub struct Mark {
    offset: u64,
}

/// Writes found in the log, by `"<verb> <resource>[/<subresource>] <code>"`
/// and by response code.
#[derive(Default)]
pub struct Writes {
    counts: BTreeMap<String, u64>,
    codes: BTreeMap<u16, u64>,
}

impl Writes {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn code(&self, code: u16) -> u64 {
        self.codes.get(&code).copied().unwrap_or(0)
    }

    pub fn by_key(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    fn add(&mut self, e: &Value) {
        let code = e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16;
        let o = &e["objectRef"];
        let resource = o["resource"].as_str().unwrap_or("?");
        let resource = match o["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        };
        let verb = e["verb"].as_str().unwrap_or("?");
        *self
            .counts
            .entry(format!("{verb} {resource} {code}"))
            .or_default() += 1;
        *self.codes.entry(code).or_default() += 1;
    }
}

impl Audit {
    /// Where hack/cluster.sh keeps the local cluster's audit log.
    pub fn local_cluster_path() -> PathBuf {
        let state = std::env::var("TCO_CLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".local/state/tenant-capacity-operator/cluster")
            });
        state.join("logs/audit.log")
    }

    /// The local cluster's audit log; fails the test without one.
    pub fn local_cluster() -> Self {
        Self::open(Self::local_cluster_path()).expect("the API server's audit log")
    }

    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no audit log at {} (hack/cluster.sh up writes one)",
                    path.display()
                ),
            ));
        }
        Ok(Self { path })
    }

    /// The log's end now.
    pub fn mark(&self) -> io::Result<Mark> {
        Ok(Mark {
            offset: std::fs::metadata(&self.path)?.len(),
        })
    }

    /// Completed requests logged after `mark` that `keep` selects. Only lines
    /// that mention one of `mentioning` (all lines when it is empty) are
    /// parsed: a busy log is long.
    pub fn writes_since(
        &self,
        mark: &Mark,
        mentioning: &[&str],
        keep: impl Fn(&Value) -> bool,
    ) -> io::Result<Writes> {
        let mut w = Writes::default();
        for e in self.events_since(mark, mentioning, keep)? {
            w.add(&e);
        }
        Ok(w)
    }

    /// The completed requests themselves (as [`Self::writes_since`] selects
    /// them), in the log's order.
    pub fn events_since(
        &self,
        mark: &Mark,
        mentioning: &[&str],
        keep: impl Fn(&Value) -> bool,
    ) -> io::Result<Vec<Value>> {
        let mut f = std::fs::File::open(&self.path)?;
        // A rotated log starts again from the beginning.
        let from = if f.metadata()?.len() < mark.offset {
            0
        } else {
            mark.offset
        };
        f.seek(SeekFrom::Start(from))?;
        let mut events = Vec::new();
        for line in io::BufReader::new(f).lines() {
            let line = line?;
            if !mentioning.is_empty() && !mentioning.iter().any(|m| line.contains(m)) {
                continue;
            }
            let Ok(e) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if e["stage"] == "ResponseComplete" && keep(&e) {
                events.push(e);
            }
        }
        Ok(events)
    }
}
