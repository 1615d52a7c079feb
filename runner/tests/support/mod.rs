//! What the runner's test binaries share: a scratch directory and one run of the runner binary
//! as a Job's pod would run it (the task in its environment, the result in the termination log).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contract::{RunResult, Task};

/// A scratch directory, removed at the end of the test whatever happens.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "runner-test-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run of the runner left behind.
#[allow(dead_code)] // each test binary reads a different part of it
pub struct Ran {
    pub code: u8,
    pub result: RunResult,
    pub stdout: String,
    pub stderr: String,
    pub result_text: String,
    pub took: Duration,
}

/// Runs `runner <command>` for `task` with the built Atlas, `env` added, its files under
/// `scratch`; panics unless it leaves a valid result that fits a termination message.
pub fn run_runner(
    command: &str,
    task: &Task,
    env: &[(&str, &str)],
    scratch: &Path,
    extra: &[&str],
) -> Ran {
    let result_path = scratch.join("termination-log");
    let _ = std::fs::remove_file(&result_path);
    let tmp = scratch.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg(command)
        .arg("--termination-log")
        .arg(&result_path)
        .arg("--atlas")
        .arg(devcluster::tools::path("atlas").expect("run `cargo xtask tools` first"))
        .arg("--tmp")
        .arg(&tmp)
        .args(extra)
        .env(contract::TASK_ENV, task.encode())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let result_text = std::fs::read_to_string(&result_path).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let result: RunResult = serde_json::from_str(&result_text).unwrap_or_else(|err| {
        panic!("no valid result ({err}): {result_text}\nstdout: {stdout}\nstderr: {stderr}")
    });
    assert!(result_text.len() <= contract::TERMINATION_MESSAGE_LIMIT);
    Ran {
        code: output.status.code().unwrap() as u8,
        result,
        stdout,
        stderr,
        result_text,
        took,
    }
}
