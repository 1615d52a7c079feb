//! Running the Atlas CLI: never with a secret on its command line (visible in `/proc`), always
//! with a time limit, with its network checks off.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by the SIGTERM handler ([`stop_on_sigterm`]).
static TERMINATED: AtomicBool = AtomicBool::new(false);
/// How long Atlas gets to exit after the runner passed SIGTERM on, before SIGKILL: well inside
/// the shortest grace period a drain gives (the runner still writes its result after).
const ATLAS_STOP_GRACE: Duration = Duration::from_millis(500);

extern "C" fn on_sigterm(_: libc::c_int) {
    // Only an atomic store: all a signal handler may safely do.
    TERMINATED.store(true, Ordering::SeqCst);
}

/// Makes SIGTERM stop the runner with a transient failure ([`AtlasError::Terminated`]) instead
/// of being ignored. The runner is its container's PID 1, and the kernel ignores a signal PID 1
/// has no handler for: the kubelet's SIGTERM (a pod deleted, a node drained) did nothing, and
/// the grace period ended in SIGKILL, exit 137, which the Job's pod failure policy reads as the
/// OOM killer (FailJob): the resource failed for good (tests/faults.rs found it).
pub fn stop_on_sigterm() {
    let handler: extern "C" fn(libc::c_int) = on_sigterm;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGTERM, handler as libc::sighandler_t) };
}

/// The environment variables through which the runner hands Atlas the URLs; the generated
/// `atlas.hcl` reads them with `getenv`.
pub const URL_ENV: &str = "ATLAS_RUNNER_URL";
pub const DEV_URL_ENV: &str = "ATLAS_RUNNER_DEV_URL";

#[derive(Debug, thiserror::Error)]
pub enum AtlasError {
    #[error("could not start the Atlas CLI ({program}): {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Atlas did not finish within {}s and was stopped", .0.as_secs())]
    Timeout(Duration),
    /// In a container, SIGKILL from no one the runner knows is the kernel's OOM killer: the
    /// container's memory limit. Running again with the same limit would end the same way.
    #[error("Atlas was killed by signal {signal}{}", if *.signal == 9 {
        " (SIGKILL): in a container this is most often its memory limit (the OOM killer)"
    } else { "" })]
    Killed { signal: i32 },
    /// The runner got SIGTERM: its pod is being deleted (a person, a drain). Another pod of the
    /// Job runs the apply again; what Atlas committed is in the revisions table.
    #[error("stopped by SIGTERM (the Job's pod is being deleted) before Atlas finished")]
    Terminated,
}

impl AtlasError {
    /// Whether another attempt can go differently.
    pub fn is_transient(&self) -> bool {
        !matches!(self, AtlasError::Killed { signal: 9 })
    }
}

/// What one Atlas call printed.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The text a person should read when the call failed: Atlas puts its error on stderr, or,
    /// with `--format`, in the JSON on stdout.
    pub fn error_text(&self) -> String {
        let stderr = self.stderr.trim();
        let text = if stderr.is_empty() {
            self.stdout.trim()
        } else {
            stderr
        };
        text.trim_start_matches("Error: ").to_string()
    }
}

/// The Atlas CLI and how to call it.
#[derive(Clone, Debug)]
pub struct Atlas {
    pub program: PathBuf,
    pub limit: Duration,
    /// Environment given to every call (the URLs): never on the command line.
    env: Vec<(String, String)>,
    /// The working directory of every call: relative paths of a project file (a
    /// `template_dir`'s `path`) are Atlas's working directory's.
    cwd: Option<PathBuf>,
}

impl Atlas {
    pub fn new(program: PathBuf, limit: Duration) -> Atlas {
        Atlas {
            program,
            limit,
            env: Vec::new(),
            cwd: None,
        }
    }

    /// The file the program is: as given when it holds a `/`, else found on PATH as a call
    /// would find it.
    pub fn resolved(&self) -> Option<PathBuf> {
        if self.program.components().count() > 1 {
            return Some(self.program.clone());
        }
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(&self.program))
            .find(|candidate| candidate.is_file())
    }

    /// Runs every later call in `dir`.
    pub fn work_in(&mut self, dir: &std::path::Path) {
        self.cwd = Some(dir.to_path_buf());
    }

    pub fn env(&mut self, key: &str, value: String) {
        self.env.push((key.to_string(), value));
    }

    pub fn run(&self, args: &[&str]) -> Result<Output, AtlasError> {
        if TERMINATED.load(Ordering::SeqCst) {
            return Err(AtlasError::Terminated);
        }
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .env("ATLAS_NO_UPDATE_NOTIFIER", "1")
            .env("ATLAS_NO_UPGRADE_SUGGESTIONS", "1")
            .env("ATLAS_NO_ANON_TELEMETRY", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|source| AtlasError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // Atlas closing its stdout (it exits) wakes the wait below at once, rather than at the
        // next tick of a poll: each tick cost up to its length per Atlas call.
        let (closed, stdout_closed) = std::sync::mpsc::channel::<()>();
        let out = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stdout.read_to_string(&mut buf);
            drop(closed);
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf);
            buf
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|source| AtlasError::Spawn {
                program: self.program.display().to_string(),
                source,
            })? {
                break status;
            }
            if TERMINATED.load(Ordering::SeqCst) {
                // Passed on, so Atlas can roll its transaction back and release its lock.
                // SAFETY: kill(2) on our own child, not reaped yet.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let stopping = Instant::now();
                while matches!(child.try_wait(), Ok(None)) && stopping.elapsed() < ATLAS_STOP_GRACE
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(AtlasError::Terminated);
            }
            if started.elapsed() >= self.limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AtlasError::Timeout(self.limit));
            }
            // Woken when stdout closes; otherwise every 20 ms for the checks above. Once closed
            // the channel answers at once: the exit is then only being reaped.
            if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                stdout_closed.recv_timeout(Duration::from_millis(20))
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
            return Err(AtlasError::Killed { signal });
        }
        Ok(Output {
            success: status.success(),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }

    /// Whether `atlas <command> --help` lists `flag`: what this build can do, read from the
    /// binary itself rather than from its version.
    pub fn offers_flag(&self, command: &[&str], flag: &str) -> bool {
        let mut args = command.to_vec();
        args.push("--help");
        self.run(&args).is_ok_and(|output| {
            output
                .stdout
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .chain(output.stderr.split(|c: char| c.is_whitespace() || c == ','))
                .any(|word| word == flag)
        })
    }

    /// Whether `atlas <command> --help` lists `subcommand` under "Available Commands" (the
    /// official build's `migrate down`, which the community build lacks).
    pub fn offers_command(&self, command: &[&str], subcommand: &str) -> bool {
        let mut args = command.to_vec();
        args.push("--help");
        self.run(&args)
            .is_ok_and(|output| lists_command(&output.stdout, subcommand))
    }

    /// `atlas version`'s version, for the result (`v0.13.1`).
    pub fn version(&self) -> Option<String> {
        let output = self.run(&["version"]).ok()?;
        output
            .stdout
            .split_whitespace()
            .find(|word| {
                word.starts_with('v') && word[1..].starts_with(|c: char| c.is_ascii_digit())
            })
            .map(str::to_string)
    }
}

/// Whether a cobra help text lists `subcommand`: the first word of an indented line in the
/// "Available Commands:" section, which ends at the first blank line.
fn lists_command(help: &str, subcommand: &str) -> bool {
    help.lines()
        .skip_while(|line| !line.starts_with("Available Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .any(|line| line.split_whitespace().next() == Some(subcommand))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `atlas migrate --help` of v0.13.1 (community, no `down`), as it prints it, and the same
    /// section with the official build's `down` line.
    #[test]
    fn subcommands_are_read_from_the_help_section() {
        let community = "Usage:\n  atlas migrate [command]\n\nAvailable Commands:\n  apply       \
                         Applies pending migration files on the connected database.\n  diff        \
                         Compute the diff\n  status      Get information about the current \
                         migration status.\n\nFlags:\n  -h, --help   help for migrate\n\n\
                         Use \"atlas migrate [command] --help\" for more information about a \
                         command. down is not here.\n";
        assert!(lists_command(community, "apply"));
        assert!(!lists_command(community, "down"));
        let official = community.replace(
            "  diff ",
            "  down        Revert applied migration files from the database\n  diff ",
        );
        assert!(lists_command(&official, "down"));
    }

    /// A call ends when Atlas does, not at the next tick of a poll: a poll of 20 ms made every
    /// call last at least 20 ms (two per apply). Measured on a process that exits at once.
    #[test]
    fn a_call_returns_as_soon_as_the_process_exits() {
        let atlas = Atlas::new(PathBuf::from("/bin/true"), Duration::from_secs(10));
        let started = Instant::now();
        for _ in 0..10 {
            assert!(atlas.run(&[]).unwrap().success);
        }
        let each = started.elapsed() / 10;
        assert!(each < Duration::from_millis(12), "{each:?} per call");
    }

    /// A process SIGKILLed as the OOM killer does it (here by itself: a real kill, not a mock).
    #[test]
    fn a_killed_atlas_says_so_and_is_not_retried() {
        let atlas = Atlas::new(PathBuf::from("/bin/sh"), Duration::from_secs(10));
        let err = atlas.run(&["-c", "kill -9 $$"]).unwrap_err();
        assert!(matches!(err, AtlasError::Killed { signal: 9 }), "{err}");
        assert!(err.to_string().contains("memory limit"), "{err}");
        assert!(!err.is_transient());
        let err = atlas.run(&["-c", "kill -15 $$"]).unwrap_err();
        assert_eq!(err.to_string(), "Atlas was killed by signal 15");
        assert!(err.is_transient());
    }
}
