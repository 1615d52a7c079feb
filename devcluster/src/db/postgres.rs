//! The PostgreSQL server: Debian's newest, set up with `initdb` and run by `pg_ctl`, which also
//! stops it.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    DbError, LOG_TAIL, PASSWORD, QUERY_LIMIT, START_LIMIT, Servers, USER, command_error, io,
    owned_dir, server_user,
};
use crate::{cmd, process};

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

pub(super) fn start(servers: &Servers) -> Result<(), DbError> {
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

pub(super) fn stop(servers: &Servers) {
    // PostgreSQL: pg_ctl knows its server by the data dir and waits for it to end.
    if let Ok(bin) = postgres_bin_dir() {
        let mut stop = cmd::command(bin.join("pg_ctl"), server_user("postgres").ok().flatten());
        stop.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(servers.postgres_dir().join("data"));
        let _ = cmd::output(&mut stop, QUERY_LIMIT);
    }
}
