//! Local PostgreSQL and MariaDB servers, from Debian's packages, on free loopback ports in a
//! temporary directory, and a fresh database per test on them.
//!
//! The servers are shared by a whole test run (starting one takes seconds, a database on it
//! milliseconds). `up` is idempotent and safe when several processes call it at once (a lock
//! file), so every test binary may call [`shared`] and the first one starts them.
//!
//! As in the seeds, the superuser is `root` with password `pass`; the databases are `postgres`
//! (PostgreSQL) and `myapp` (MariaDB, standing in for MySQL: Debian has no MySQL server).

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cmd::{self, CmdError, User};
use crate::lifecycle::{self, Found, Service, State};
use crate::packages::{self, PackagesError};
use crate::process;

pub const USER: &str = "root";
pub const PASSWORD: &str = "pass";
pub const POSTGRES_DATABASE: &str = "postgres";
pub const MYSQL_DATABASE: &str = "myapp";

const START_LIMIT: Duration = Duration::from_secs(90);
const QUERY_LIMIT: Duration = Duration::from_secs(60);
/// How long MariaDB gets to shut down after SIGTERM before it is killed.
const MARIADB_STOP_GRACE: Duration = Duration::from_secs(30);
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
    start_postgres(&servers)?;
    start_mariadb(&servers)?;
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
    // PostgreSQL: pg_ctl knows its server by the data dir and waits for it to end.
    if let Ok(bin) = postgres_bin_dir() {
        let mut stop = cmd::command(bin.join("pg_ctl"), server_user("postgres").ok().flatten());
        stop.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(servers.postgres_dir().join("data"));
        let _ = cmd::output(&mut stop, QUERY_LIMIT);
    }
    // MariaDB: SIGTERM to the pid in its pid file, then wait for it to go.
    let pid_file = servers.mariadb_dir().join("mariadbd.pid");
    if let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
    {
        process::terminate(&[pid], MARIADB_STOP_GRACE);
    }
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

fn postgres_bin_dir() -> Result<PathBuf, DbError> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| DbError::NoPostgres)?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(DbError::NoPostgres)
}

fn start_postgres(servers: &Servers) -> Result<(), DbError> {
    let bin = postgres_bin_dir()?;
    let user = server_user("postgres")?;
    let root = servers.postgres_dir();
    owned_dir(&root, user)?;
    let password_file = root.join("password");
    fs::write(&password_file, PASSWORD).map_err(io("writing the PostgreSQL password file"))?;
    if let Some(user) = user {
        std::os::unix::fs::chown(&password_file, Some(user.uid), Some(user.gid))
            .map_err(io("chown the PostgreSQL password file"))?;
    }
    let data = root.join("data");
    let mut initdb = cmd::command(bin.join("initdb"), user);
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", USER, "-E", "UTF8", "--locale=C"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", password_file.display()));
    cmd::output(&mut initdb, START_LIMIT).map_err(command_error("initdb (PostgreSQL)"))?;
    let _ = fs::remove_file(&password_file);

    // Durability is not wanted from a test server: fsync off makes CREATE DATABASE fast.
    let options = format!(
        "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=300",
        servers.postgres_port,
        root.display()
    );
    let mut start = cmd::command(bin.join("pg_ctl"), user);
    start
        .args([
            "start",
            "-w",
            "-t",
            &START_LIMIT.as_secs().to_string(),
            "-D",
        ])
        .arg(&data)
        .arg("-l")
        .arg(root.join("postgres.log"))
        .args(["-o", &options]);
    cmd::output(&mut start, START_LIMIT + Duration::from_secs(10)).map_err(|err| {
        DbError::NotReady {
            server: "PostgreSQL",
            log: format!(
                "{err}\n{}",
                process::tail(&root.join("postgres.log"), LOG_TAIL)
            ),
        }
    })?;
    Ok(())
}

fn start_mariadb(servers: &Servers) -> Result<(), DbError> {
    let user = server_user("mysql")?;
    let root = servers.mariadb_dir();
    owned_dir(&root, user)?;
    let data = root.join("data");
    let socket = root.join("mariadbd.sock");
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if let Some(user) = user {
        install.arg(format!("--user={}", name_of(user)));
    }
    cmd::output(&mut install, START_LIMIT).map_err(command_error("mariadb-install-db"))?;

    let log = root.join("mariadbd.log");
    let log_file = File::create(&log).map_err(io("creating the MariaDB log"))?;
    let mut server = Command::new("mariadbd");
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            root.join("mariadbd.pid").display()
        ))
        .arg(format!("--port={}", servers.mysql_port))
        .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
        .args([
            "--innodb-flush-log-at-trx-commit=0",
            "--skip-innodb-doublewrite",
        ])
        .args(["--innodb-buffer-pool-size=128M", "--max-connections=300"]);
    if let Some(user) = user {
        // mariadbd drops root itself when told which user to become.
        server.arg(format!("--user={}", name_of(user)));
    }
    // The server outlives the `cargo xtask db up` that started it.
    process::detach(&mut server, log_file).map_err(io("MariaDB log"))?;
    server.spawn().map_err(io("starting mariadbd"))?;

    // Ready when root can run a statement over the socket (no password yet).
    let deadline = Instant::now() + START_LIMIT;
    let setup = format!(
        "ALTER USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}';\
         ALTER USER IF EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';\
         ALTER USER IF EXISTS '{USER}'@'::1' IDENTIFIED BY '{PASSWORD}';\
         CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';\
         GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%' WITH GRANT OPTION;\
         CREATE DATABASE IF NOT EXISTS {MYSQL_DATABASE};"
    );
    loop {
        let mut client = Command::new("mariadb");
        client
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["-u", USER, "-e", &setup]);
        match cmd::output(&mut client, Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(err) => {
                return Err(DbError::NotReady {
                    server: "MariaDB",
                    log: format!("{err}\n{}", process::tail(&log, LOG_TAIL)),
                });
            }
        }
    }
}

fn name_of(user: User) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() > 2 && fields[2] == user.uid.to_string())
                    .then(|| fields[0].to_string())
            })
        })
        .unwrap_or_else(|| user.uid.to_string())
}

/// The shared servers for this test run, started on first use.
pub fn shared() -> Result<Servers, DbError> {
    if let Status::Up(servers) = status() {
        return Ok(servers);
    }
    up()
}

/// The database engines a test can ask a fresh database of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MariaDb,
}

/// A database of its own for one test, dropped when the value is.
#[derive(Debug)]
pub struct TestDatabase {
    pub engine: Engine,
    pub name: String,
    /// The Atlas URL of the database, as the superuser.
    pub url: String,
    servers: Servers,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDatabase {
    /// Creates a new, empty database on the shared server of `engine`.
    pub fn create(engine: Engine, hint: &str) -> Result<TestDatabase, DbError> {
        let servers = shared()?;
        let sanitized: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!(
            "t_{sanitized}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let database = TestDatabase {
            engine,
            url: match engine {
                Engine::Postgres => servers.postgres_url_for(&name),
                Engine::MariaDb => servers.mysql_url_for(&name),
            },
            name,
            servers,
        };
        database.admin(&format!("CREATE DATABASE {}", database.name))?;
        Ok(database)
    }

    /// Runs SQL as the superuser against this database; returns what the client printed
    /// (tab-separated rows, no headers).
    pub fn query(&self, sql: &str) -> Result<String, DbError> {
        self.run_sql(Some(&self.name), sql)
    }

    /// Runs SQL as the superuser on the server, outside this database.
    fn admin(&self, sql: &str) -> Result<String, DbError> {
        self.run_sql(None, sql)
    }

    fn run_sql(&self, database: Option<&str>, sql: &str) -> Result<String, DbError> {
        let mut client = match self.engine {
            Engine::Postgres => {
                let url = self
                    .servers
                    .postgres_url_for(database.unwrap_or(POSTGRES_DATABASE));
                let mut client = Command::new("psql");
                client
                    .arg(url)
                    .args(["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"])
                    .args(["-c", sql]);
                client
            }
            Engine::MariaDb => {
                let mut client = Command::new("mariadb");
                client
                    .arg("--no-defaults")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-P",
                        &self.servers.mysql_port.to_string(),
                    ])
                    .args(["-u", USER, "-B", "-N"])
                    .env("MYSQL_PWD", PASSWORD);
                if let Some(database) = database {
                    client.arg(database);
                }
                client.args(["-e", sql]);
                client
            }
        };
        cmd::output(&mut client, QUERY_LIMIT).map_err(command_error(format!(
            "running SQL on {:?} database {}",
            self.engine, self.name
        )))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: the whole server directory goes with `db down` anyway.
        let drop = match self.engine {
            Engine::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Engine::MariaDb => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let _ = self.admin(&drop);
    }
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
