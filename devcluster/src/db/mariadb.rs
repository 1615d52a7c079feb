//! The MariaDB server (standing in for MySQL): set up with `mariadb-install-db`, run detached
//! as `mariadbd`, stopped by the pid in its pid file.

use std::fs::{self, File};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{
    DbError, LOG_TAIL, MYSQL_DATABASE, PASSWORD, START_LIMIT, Servers, USER, command_error, io,
    owned_dir, server_user,
};
use crate::cmd::{self, User};
use crate::process;

/// How long MariaDB gets to shut down after SIGTERM before it is killed.
const MARIADB_STOP_GRACE: Duration = Duration::from_secs(30);

pub(super) fn start(servers: &Servers) -> Result<(), DbError> {
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

pub(super) fn stop(servers: &Servers) {
    // MariaDB: SIGTERM to the pid in its pid file, then wait for it to go.
    let pid_file = servers.mariadb_dir().join("mariadbd.pid");
    if let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
    {
        process::terminate(&[pid], MARIADB_STOP_GRACE);
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
