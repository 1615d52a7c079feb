//! The life of a local service shared by a whole test run (the cluster of [`crate::cluster`],
//! the databases of [`crate::db`]): whichever process needs it first starts it, every other
//! finds it through a state file of `KEY=value` lines under `target/`, and any of them stops it.
//!
//! `up` is idempotent and safe when several processes call it at once: it holds an exclusive lock
//! on `.lock`, next to the state file, while it checks the recorded service and starts a new one
//! if need be. The service's processes outlive the one that started them, so `down` stops them
//! by what the state file records, never by remembering them.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A step on the service's files that failed; each service turns it into its own error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct IoError {
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IoError {
    let what = what.into();
    move |source| IoError { what, source }
}

/// A state file's `KEY=value` pairs.
pub struct State(Vec<(String, String)>);

impl State {
    /// The state file at `path`; none when there is none (the service is down).
    pub fn read(path: &Path) -> Option<State> {
        crate::read_env_file(path).ok().map(State)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    /// The value of `key` parsed; none when it is missing or does not parse.
    pub fn parse<T: FromStr>(&self, key: &str) -> Option<T> {
        self.get(key)?.parse().ok()
    }
}

/// A service recorded in a state file.
pub trait Service: Sized {
    type Error: From<IoError>;
    /// What `up` says on stderr before it restarts a recorded service that does not answer.
    const RESTARTING: &'static str;

    /// The directory of the state file and the lock (`target/devcluster`, `target/devdb`).
    fn state_dir() -> PathBuf;
    fn state_file() -> PathBuf;
    /// What `down` removes once the service is stopped: the state file and whatever else `up`
    /// wrote for its users.
    fn files() -> Vec<PathBuf>;
    /// The service as its state file records it; none when a value is missing or broken.
    fn from_state(state: &State) -> Option<Self>;
    /// Whether the recorded service runs and answers; if not, why.
    fn check(&self) -> Result<(), String>;
    /// Stops the recorded service, as far as it still runs, and removes its data.
    fn stop(&self);
    /// What `down` (and a fresh start) must also stop or remove beyond what the state file
    /// records.
    fn clean_up() -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What the state file says and the service's own check found.
pub enum Found<S> {
    Down,
    Up(S),
    Broken { service: S, problem: String },
}

/// The recorded service, running or not.
pub fn recorded<S: Service>() -> Option<S> {
    S::from_state(&State::read(&S::state_file())?)
}

pub fn status<S: Service>() -> Found<S> {
    let Some(service) = recorded::<S>() else {
        return Found::Down;
    };
    match service.check() {
        Ok(()) => Found::Up(service),
        Err(problem) => Found::Broken { service, problem },
    }
}

/// The recorded service when it runs; otherwise `start`'s (a broken one is stopped first). The
/// lock makes concurrent callers wait for the first one's start and then find its service.
pub fn up<S: Service>(start: impl FnOnce() -> Result<S, S::Error>) -> Result<S, S::Error> {
    let _lock = lock(&S::state_dir())?;
    match status::<S>() {
        Found::Up(service) => return Ok(service),
        Found::Broken { service, problem } => {
            eprintln!("{} ({problem})", S::RESTARTING);
            service.stop();
        }
        Found::Down => {}
    }
    start()
}

/// Stops the recorded service, cleans up what it may have left unrecorded, and removes its
/// files.
pub fn down<S: Service>() -> Result<(), S::Error> {
    let _lock = lock(&S::state_dir())?;
    if let Some(service) = recorded::<S>() {
        service.stop();
    }
    S::clean_up()?;
    for path in S::files() {
        if path.exists() {
            fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

/// Writes a state file whole (a reader never sees half of it).
pub fn write_state(path: &Path, text: &str) -> Result<(), IoError> {
    let staging = path.with_extension("tmp");
    fs::write(&staging, text).map_err(io(format!("writing {}", staging.display())))?;
    fs::rename(&staging, path).map_err(io(format!("writing {}", path.display())))
}

/// Held until dropped: `up` and `down` of one service never run at once.
pub(crate) fn lock(dir: &Path) -> Result<File, IoError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(".lock");
    let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
    file.lock()
        .map_err(io(format!("locking {}", path.display())))?;
    Ok(file)
}

/// `$TMPDIR/atlas-operator-<name>-<hash of owner>`: the service's data, one per checkout or
/// target directory (`owner`), so two checkouts never share one.
pub fn scratch_dir(name: &str, owner: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(owner.display().to_string().as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!("atlas-operator-{name}-{hash}"))
}

/// `n` distinct free loopback ports: all listeners are held until every port is chosen, so no
/// two are the same.
pub fn free_ports(n: usize) -> Result<Vec<u16>, IoError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .map(|addr| addr.port())
                .map_err(io("finding a free port"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static STARTS: AtomicU32 = AtomicU32::new(0);
    static STOPS: AtomicU32 = AtomicU32::new(0);

    /// A service of nothing but its state file, which says whether it "answers".
    #[derive(Debug, PartialEq, Eq)]
    struct Fake {
        id: u32,
        healthy: bool,
    }

    impl Service for Fake {
        type Error = IoError;
        const RESTARTING: &'static str = "lifecycle test: restarting";

        fn state_dir() -> PathBuf {
            std::env::temp_dir().join(format!("devcluster-lifecycle-{}", std::process::id()))
        }
        fn state_file() -> PathBuf {
            Self::state_dir().join("state.env")
        }
        fn files() -> Vec<PathBuf> {
            vec![Self::state_file()]
        }
        fn from_state(state: &State) -> Option<Fake> {
            Some(Fake {
                id: state.parse("ID")?,
                healthy: state.get("HEALTHY")? == "yes",
            })
        }
        fn check(&self) -> Result<(), String> {
            self.healthy.then_some(()).ok_or_else(|| "unhealthy".into())
        }
        fn stop(&self) {
            STOPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn start() -> Result<Fake, IoError> {
        let id = STARTS.fetch_add(1, Ordering::SeqCst);
        // Long enough for the other callers to be waiting on the lock.
        std::thread::sleep(std::time::Duration::from_millis(100));
        write_state(
            &Fake::state_file(),
            &format!("# a comment\nID={id}\nHEALTHY=yes\n"),
        )?;
        Ok(Fake { id, healthy: true })
    }

    #[test]
    fn up_starts_once_for_concurrent_callers_and_down_removes_the_state() {
        let callers: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| up::<Fake>(start).unwrap()))
            .collect();
        let services: Vec<Fake> = callers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(STARTS.load(Ordering::SeqCst), 1);
        assert!(services.iter().all(|s| *s
            == Fake {
                id: 0,
                healthy: true
            }));
        assert!(matches!(status::<Fake>(), Found::Up(Fake { id: 0, .. })));

        // A recorded service that does not answer is stopped and started again.
        write_state(&Fake::state_file(), "ID=0\nHEALTHY=no\n").unwrap();
        assert!(matches!(status::<Fake>(), Found::Broken { .. }));
        assert_eq!(up::<Fake>(start).unwrap().id, 1);
        assert_eq!(STOPS.load(Ordering::SeqCst), 1);

        down::<Fake>().unwrap();
        assert_eq!(STOPS.load(Ordering::SeqCst), 2);
        assert!(!Fake::state_file().exists());
        assert!(matches!(status::<Fake>(), Found::Down));
        fs::remove_dir_all(Fake::state_dir()).unwrap();
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(5).unwrap();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 5);
    }
}
