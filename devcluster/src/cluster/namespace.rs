//! A namespace of its own for each test on the shared cluster, so tests run in parallel and
//! never see each other's objects.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CALL_LIMIT, Cluster, ClusterError};

impl Cluster {
    /// A fresh namespace for one test, deleted when the value is dropped. Returns once its
    /// `default` service account exists (pods cannot be created before it does).
    pub fn namespace(&self, hint: &str) -> Result<TestNamespace, ClusterError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = namespace_name(
            hint,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        self.kubectl_output(&["create", "namespace", &name])?;
        let namespace = TestNamespace {
            name,
            cluster: self.clone(),
        };
        let timeout = format!("--timeout={}s", CALL_LIMIT.as_secs() / 2);
        self.kubectl_output(&[
            "wait",
            "--for=create",
            "serviceaccount/default",
            "-n",
            &namespace.name,
            &timeout,
        ])?;
        Ok(namespace)
    }
}

/// A namespace of its own for one test; deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    cluster: Cluster,
}

impl TestNamespace {
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// `kubectl -n <namespace>` as the admin.
    pub fn kubectl(&self) -> Command {
        let mut kubectl = self.cluster.kubectl();
        kubectl.args(["-n", &self.name]);
        kubectl
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort: the namespace controller deletes what is in it; `down` removes all anyway.
        let _ = self.cluster.kubectl_output(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// A DNS label: `t-<hint>-<pid>-<n>`, at most 63 characters.
fn namespace_name(hint: &str, pid: u32, n: u64) -> String {
    let suffix = format!("-{pid}-{n}");
    let mut hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63 - 2 - suffix.len())
        .collect();
    while hint.contains("--") {
        hint = hint.replace("--", "-");
    }
    match hint.trim_matches('-') {
        "" => format!("t{suffix}"),
        hint => format!("t-{hint}{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        assert_eq!(
            namespace_name("My_Test::case", 42, 7),
            "t-my-test-case-42-7"
        );
        let long = namespace_name(&"x".repeat(200), 4_194_304, 123_456);
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-4194304-123456"));
        assert_eq!(namespace_name("--", 1, 2), "t-1-2");
    }
}
