//! Local PostgreSQL and MariaDB servers, from Debian's packages, on free loopback ports in a
//! temporary directory, and a fresh database per test on them.
//!
//! The servers are shared by a whole test run (starting one takes seconds, a database on it
//! milliseconds). `up` is idempotent and safe when several processes call it at once (a lock
//! file, `crate::lifecycle`), so every test binary may call [`shared`] and the first one starts
//! them.
//!
//! As in the seeds, the superuser is `root` with password `pass`; the databases are `postgres`
//! (PostgreSQL) and `myapp` (MariaDB, standing in for MySQL: Debian has no MySQL server).

mod mariadb;
mod postgres;
mod test_database;

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::{self, CmdError, User};
use crate::lifecycle::{self, Found, Service, State};
use crate::packages::{self, PackagesError};

pub use test_database::{Engine, TestDatabase};

pub const USER: &str = "root";
pub const PASSWORD: &str = "pass";
pub const POSTGRES_DATABASE: &str = "postgres";
pub const MYSQL_DATABASE: &str = "myapp";

const START_LIMIT: Duration = Duration::from_secs(90);
const QUERY_LIMIT: Duration = Duration::from_secs(60);
/// How much of a server's log an error shows.
const LOG_TAIL: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Packages(#[from] PackagesError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Command {
        what: String,
        #[source]
        source: CmdError,
    },
    #[error("{server} did not accept connections within {}s; its log: {log}", START_LIMIT.as_secs())]
    NotReady { server: &'static str, log: String },
    #[error("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")]
    NoPostgres,
    #[error("user {0} does not exist; it comes with the Debian package (reinstall it)")]
    NoUser(&'static str),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DbError {
    let what = what.into();
    move |source| DbError::Io { what, source }
}

impl From<lifecycle::IoError> for DbError {
    fn from(err: lifecycle::IoError) -> DbError {
        DbError::Io {
            what: err.what,
            source: err.source,
        }
    }
}

fn command_error(what: impl Into<String>) -> impl FnOnce(CmdError) -> DbError {
    let what = what.into();
    move |source| DbError::Command { what, source }
}

/// Where the servers are, as written to `target/devdb/urls.env`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Servers {
    pub postgres_port: u16,
    pub mysql_port: u16,
    /// The temporary directory holding both servers' data, sockets and logs.
    pub dir: PathBuf,
}

impl Servers {
    /// The Atlas URL of the seed's PostgreSQL database.
    pub fn postgres_url(&self) -> String {
        self.postgres_url_for(POSTGRES_DATABASE)
    }

    pub fn postgres_url_for(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.postgres_port
        )
    }

    /// The Atlas URL of the seed's MySQL database (served by MariaDB).
    pub fn mysql_url(&self) -> String {
        self.mysql_url_for(MYSQL_DATABASE)
    }

    pub fn mysql_url_for(&self, database: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.mysql_port
        )
    }

    fn postgres_dir(&self) -> PathBuf {
        self.dir.join("postgres")
    }

    fn mariadb_dir(&self) -> PathBuf {
        self.dir.join("mariadb")
    }

    fn env_file(&self) -> String {
        format!(
            "# Written by `cargo xtask db up`; removed by `cargo xtask db down`.\n\
             POSTGRES_URL={}\nMYSQL_URL={}\nPOSTGRES_PORT={}\nMYSQL_PORT={}\nDEVDB_DIR={}\n",
            self.postgres_url(),
            self.mysql_url(),
            self.postgres_port,
            self.mysql_port,
            self.dir.display()
        )
    }
}

impl Service for Servers {
    type Error = DbError;
    const RESTARTING: &'static str = "devdb: restarting the local databases";

    fn state_dir() -> PathBuf {
        state_dir()
    }

    fn state_file() -> PathBuf {
        urls_file()
    }

    fn files() -> Vec<PathBuf> {
        vec![urls_file()]
    }

    fn from_state(state: &State) -> Option<Servers> {
        Some(Servers {
            postgres_port: state.parse("POSTGRES_PORT")?,
            mysql_port: state.parse("MYSQL_PORT")?,
            dir: PathBuf::from(state.get("DEVDB_DIR")?),
        })
    }

    fn check(&self) -> Result<(), String> {
        check(self)
    }

    fn stop(&self) {
        stop(self)
    }
}

/// `target/devdb`: the URLs file and the lock.
pub fn state_dir() -> PathBuf {
    crate::target_dir().join("devdb")
}

pub fn urls_file() -> PathBuf {
    state_dir().join("urls.env")
}

/// What `status` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Down,
    Up(Servers),
    /// The URLs file exists but a server does not answer (killed, or the machine rebooted).
    Broken {
        servers: Servers,
        problem: String,
    },
}

/// Whether the servers recorded in `urls.env` are up and answering.
pub fn status() -> Status {
    match lifecycle::status::<Servers>() {
        Found::Down => Status::Down,
        Found::Up(servers) => Status::Up(servers),
        Found::Broken { service, problem } => Status::Broken {
            servers: service,
            problem,
        },
    }
}

fn check(servers: &Servers) -> Result<(), String> {
    for (name, port) in [
        ("PostgreSQL", servers.postgres_port),
        ("MariaDB", servers.mysql_port),
    ] {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
            .map_err(|err| format!("{name} on port {port}: {err}"))?;
    }
    Ok(())
}

/// Starts both servers unless they already run; returns where they are.
pub fn up() -> Result<Servers, DbError> {
    lifecycle::up(start_new)
}

fn start_new() -> Result<Servers, DbError> {
    packages::ensure()?;
    let dir = lifecycle::scratch_dir("devdb", &crate::workspace_root());
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let ports = lifecycle::free_ports(2)?;
    let servers = Servers {
        postgres_port: ports[0],
        mysql_port: ports[1],
        dir,
    };
    let started = Instant::now();
    postgres::start(&servers)?;
    mariadb::start(&servers)?;
    lifecycle::write_state(&urls_file(), &servers.env_file())?;
    eprintln!(
        "devdb: PostgreSQL on 127.0.0.1:{} and MariaDB on 127.0.0.1:{} started in {:.1}s",
        servers.postgres_port,
        servers.mysql_port,
        started.elapsed().as_secs_f64()
    );
    Ok(servers)
}

/// Stops both servers and removes their directory and `urls.env`.
pub fn down() -> Result<(), DbError> {
    lifecycle::down::<Servers>()
}

fn stop(servers: &Servers) {
    postgres::stop(servers);
    mariadb::stop(servers);
    let _ = fs::remove_dir_all(&servers.dir);
}

/// The user a server runs as: its package's user when we are root (the servers refuse root),
/// otherwise ourselves.
fn server_user(name: &'static str) -> Result<Option<User>, DbError> {
    if !cmd::is_root() {
        return Ok(None);
    }
    User::lookup(name).map(Some).ok_or(DbError::NoUser(name))
}

/// A directory the server's user owns.
fn owned_dir(path: &Path, user: Option<User>) -> Result<(), DbError> {
    fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))?;
    if let Some(user) = user {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .map_err(io(format!("chown {}", path.display())))?;
    }
    Ok(())
}

/// The shared servers for this test run, started on first use.
pub fn shared() -> Result<Servers, DbError> {
    if let Status::Up(servers) = status() {
        return Ok(servers);
    }
    up()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_match_the_seeds() {
        let servers = Servers {
            postgres_port: 5432,
            mysql_port: 3306,
            dir: PathBuf::from("/tmp/x"),
        };
        assert_eq!(
            servers.postgres_url(),
            "postgres://root:pass@127.0.0.1:5432/postgres?sslmode=disable"
        );
        assert_eq!(
            servers.mysql_url(),
            "mysql://root:pass@127.0.0.1:3306/myapp"
        );
    }

    #[test]
    fn urls_file_round_trips() {
        let servers = Servers {
            postgres_port: 40001,
            mysql_port: 40002,
            dir: PathBuf::from("/tmp/atlas-operator-devdb-1234"),
        };
        let dir = std::env::temp_dir().join(format!("devdb-env-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("urls.env");
        fs::write(&path, servers.env_file()).unwrap();
        let state = State::read(&path).unwrap();
        assert_eq!(Servers::from_state(&state), Some(servers));
        fs::remove_dir_all(dir).unwrap();
    }
}
