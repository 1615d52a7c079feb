//! The long-lived processes of the test bed (the control plane's, the MariaDB server): started
//! detached, so they outlive the `cargo xtask … up` or the test that started them, and stopped
//! later by pid from another process, which knows them only from a state file or a pid file.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;

/// Sets `command` up to run detached: in a process group of its own (a Ctrl-C meant for a test
/// run does not reach it), with no stdin, and its stdout and stderr in `log`.
pub fn detach(command: &mut Command, log: File) -> std::io::Result<()> {
    let stdout = log.try_clone()?;
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log);
    Ok(())
}

/// Whether `pid` is a live process whose command line names `dir`: after a reboot a recorded
/// pid may belong to someone else, who must not be signalled.
pub fn runs_in(pid: u32, dir: &Path) -> bool {
    cmd::process_alive(pid)
        && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
        })
}

/// Live processes (other than this one) whose program is one of `names` and whose arguments
/// name `dir`, with the name each matched: the processes of a service whose pids were never
/// recorded.
pub fn find_in<'a>(names: &[&'a str], dir: &Path) -> Vec<(&'a str, u32)> {
    let dir = dir.to_string_lossy();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
            let program = args.next()?;
            let program = program.rsplit('/').next().unwrap_or_default();
            let name = names.iter().copied().find(|name| *name == program)?;
            args.any(|arg| arg.contains(&*dir)).then_some((name, pid))
        })
        .collect()
}

/// Stops `pids` together: `SIGTERM`, then `SIGKILL` for those still alive after `grace`, and
/// waits (a few seconds at most) for them to be gone.
pub fn terminate(pids: &[u32], grace: Duration) {
    if pids.is_empty() {
        return;
    }
    signal("TERM", pids);
    let deadline = Instant::now() + grace;
    while pids.iter().any(|pid| cmd::process_alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| cmd::process_alive(*pid))
        .collect();
    if !left.is_empty() {
        signal("KILL", &left);
        let deadline = Instant::now() + Duration::from_secs(5);
        while left.iter().any(|pid| cmd::process_alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends `SIGKILL`, as a crash would end them (nothing is flushed or released), and waits (a few
/// seconds at most) for them to be gone.
pub fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    signal("KILL", pids);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|pid| cmd::process_alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(signal: &str, pids: &[u32]) {
    let mut kill = Command::new("kill");
    kill.arg(format!("-{signal}"))
        .args(pids.iter().map(|pid| pid.to_string()));
    let _ = cmd::output(&mut kill, Duration::from_secs(10));
}

/// The last `lines` lines of a log file, for an error saying why a process did not come up.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_lines() {
        let path = std::env::temp_dir().join(format!("devcluster-tail-{}", std::process::id()));
        fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), "b\nc");
        assert_eq!(tail(&path, 10), "a\nb\nc");
        fs::remove_file(&path).unwrap();
        assert_eq!(tail(&path, 2), "");
    }

    #[test]
    fn detached_processes_are_found_and_stopped() {
        let dir = std::env::temp_dir().join(format!("devcluster-process-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = File::create(dir.join("sh.log")).unwrap();
        // A shell whose arguments name the directory, as a component's name its data directory;
        // it ends by itself within a minute should the test fail before stopping it.
        let mut sh = Command::new("sh");
        sh.args([
            "-c",
            "i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
        ])
        .arg(&dir);
        detach(&mut sh, log).unwrap();
        let mut child = sh.spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !runs_in(pid, &dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(runs_in(pid, &dir));
        // The shell's children are briefly copies of it (fork before exec), so it need not be
        // the only one found.
        assert!(find_in(&["etcd", "sh"], &dir).contains(&("sh", pid)));
        assert!(find_in(&["etcd"], &dir).is_empty());
        terminate(&[pid], Duration::from_secs(5));
        let _ = child.wait();
        assert!(!runs_in(pid, &dir));
        fs::remove_dir_all(&dir).unwrap();
    }
}
