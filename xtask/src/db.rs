//! `cargo xtask db up | down | status`: the local PostgreSQL and MariaDB servers.

use anyhow::{Result, bail};
use clap::Subcommand;
use devcluster::db::{self, Status};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Start PostgreSQL and MariaDB on free loopback ports (does nothing if they run).
    Up,
    /// Stop them and remove their data.
    Down,
    /// Say whether they run, and where.
    Status,
}

pub fn run(command: DbCommand) -> Result<()> {
    match command {
        DbCommand::Up => {
            let servers = db::up()?;
            println!("POSTGRES_URL={}", servers.postgres_url());
            println!("MYSQL_URL={}", servers.mysql_url());
            println!("(written to {})", db::urls_file().display());
        }
        DbCommand::Down => {
            db::down()?;
            println!("local databases stopped");
        }
        DbCommand::Status => match db::status() {
            Status::Down => println!("local databases: down"),
            Status::Up(servers) => {
                println!("local databases: up");
                println!("POSTGRES_URL={}", servers.postgres_url());
                println!("MYSQL_URL={}", servers.mysql_url());
            }
            Status::Broken { problem, .. } => {
                bail!(
                    "local databases: not answering ({problem}); run `cargo xtask db up` to restart them"
                )
            }
        },
    }
    Ok(())
}
