//! Running the external programs of the test bed: with a time limit (a network step or a server
//! that never answers must not hang a test run), as another user when we are root (database
//! servers refuse to run as root), and with errors that say what to rerun.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {}s and was stopped", limit.as_secs())]
    Timeout { command: String, limit: Duration },
    #[error("`{command}` failed ({status}){}", output_tail(.output))]
    Failed {
        command: String,
        status: ExitStatus,
        output: String,
    },
    #[error("waiting for `{command}`: {source}")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

fn output_tail(output: &str) -> String {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = trimmed.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!(":\n{}", lines[start..].join("\n"))
}

/// A Unix user and group to run a program as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Looks a user up in `/etc/passwd` (the Debian packages create `postgres` and `mysql`).
    pub fn lookup(name: &str) -> Option<User> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == name {
                Some(User {
                    uid: fields[2].parse().ok()?,
                    gid: fields[3].parse().ok()?,
                })
            } else {
                None
            }
        })
    }
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A command line, shown in messages the way a person would type it again.
pub struct Shown<'a>(pub &'a Command);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.0.get_program().to_string_lossy();
        write!(f, "{program}")?;
        for arg in self.0.get_args() {
            write!(f, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

/// Builds a command that runs as `user` when given (we must then be root).
pub fn command(program: impl AsRef<OsStr>, user: Option<User>) -> Command {
    let mut command = Command::new(program);
    if let Some(user) = user {
        // std drops root's supplementary groups itself when it changes the uid.
        command.uid(user.uid).gid(user.gid);
    }
    command
}

/// Runs `command` to completion within `limit`, capturing its output; kills it at the limit.
pub fn output(command: &mut Command, limit: Duration) -> Result<String, CmdError> {
    let shown = Shown(command).to_string();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| CmdError::Spawn {
        command: shown.clone(),
        source,
    })?;
    // Read both pipes on threads, so a chatty program cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stdout.read_to_string(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let status = wait_with_limit(&mut child, limit, &shown)?;
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    if status.success() {
        Ok(text)
    } else {
        Err(CmdError::Failed {
            command: shown,
            status,
            output: text,
        })
    }
}

/// Runs `command` with its output going to the caller's terminal, within `limit`.
pub fn run_inherit(command: &mut Command, limit: Duration) -> Result<(), CmdError> {
    let shown = Shown(command).to_string();
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| CmdError::Spawn {
            command: shown.clone(),
            source,
        })?;
    let status = wait_with_limit(&mut child, limit, &shown)?;
    if status.success() {
        Ok(())
    } else {
        Err(CmdError::Failed {
            command: shown,
            status,
            output: String::new(),
        })
    }
}

fn wait_with_limit(
    child: &mut std::process::Child,
    limit: Duration,
    shown: &str,
) -> Result<ExitStatus, CmdError> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CmdError::Timeout {
                    command: shown.to_string(),
                    limit,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(source) => {
                return Err(CmdError::Wait {
                    command: shown.to_string(),
                    source,
                });
            }
        }
    }
}

/// Whether a process with this pid exists.
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
}
