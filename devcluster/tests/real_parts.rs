//! The test bed's parts are real: the pinned Atlas CLI applies the seeds' examples to real
//! PostgreSQL, MariaDB and SQLite, and refuses a tampered `atlas.sum`.
//!
//! Needs `cargo xtask tools` (for `target/tools.env`); `cargo xtask test` runs it first. The
//! database servers start on first use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use devcluster::cmd;
use devcluster::db::{Engine, TestDatabase};
use devcluster::tools;

const LIMIT: Duration = Duration::from_secs(120);

/// The seed's migration directory, byte for byte, from the example ConfigMap.
fn seed_migration_files() -> BTreeMap<String, String> {
    let path = devcluster::workspace_root().join("examples/postgres-migration/migrationdir.yaml");
    let configmap: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(configmap["data"].clone()).unwrap()
}

fn seed_mysql_schema() -> String {
    let path = devcluster::workspace_root().join("examples/mysql-schema/schema.yaml");
    let schema: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    schema["spec"]["schema"]["sql"]
        .as_str()
        .unwrap()
        .to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("atlas-operator-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_dir(dir: &Path, files: &BTreeMap<String, String>) {
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

fn atlas(args: &[&str]) -> Result<String, cmd::CmdError> {
    let mut atlas = tools::atlas().expect("run `cargo xtask tools` first");
    atlas.args(args);
    cmd::output(&mut atlas, LIMIT)
}

#[test]
fn seed_migration_applies_to_postgres() {
    let db = TestDatabase::create(Engine::Postgres, "seed_migration").unwrap();
    let dir = temp_dir("seed-pg");
    write_dir(&dir, &seed_migration_files());
    let dir_url = format!("file://{}", dir.display());

    let out = atlas(&["migrate", "apply", "--url", &db.url, "--dir", &dir_url]).unwrap();
    assert!(out.contains("20230316085611"), "{out}");
    let default = db
        .query(
            "select column_default from information_schema.columns \
             where table_name = 'users' and column_name = 'id'",
        )
        .unwrap();
    assert_eq!(default.trim(), "nextval('users_seq'::regclass)");
    let columns = db
        .query(
            "select column_name, data_type, is_nullable from information_schema.columns \
             where table_name = 'users' order by ordinal_position",
        )
        .unwrap();
    assert_eq!(
        columns.trim(),
        "id\tinteger\tNO\nname\tcharacter varying\tNO\nemail\tcharacter varying\tNO\nshort_bio\tcharacter varying\tNO"
    );

    // A second apply finds nothing to do.
    let again = atlas(&["migrate", "apply", "--url", &db.url, "--dir", &dir_url]).unwrap();
    assert!(again.contains("No migration files to execute"), "{again}");
}

#[test]
fn tampered_atlas_sum_is_refused_and_nothing_is_applied() {
    let db = TestDatabase::create(Engine::Postgres, "tampered_sum").unwrap();
    let dir = temp_dir("tampered");
    let mut files = seed_migration_files();
    let sql = files.get_mut("20230316085611.sql").unwrap();
    *sql = sql.replace("short_bio varchar(255)", "short_bio varchar(1024)");
    write_dir(&dir, &files);

    let err = atlas(&[
        "migrate",
        "apply",
        "--url",
        &db.url,
        "--dir",
        &format!("file://{}", dir.display()),
    ])
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("checksum mismatch"), "{message}");
    let tables = db
        .query("select count(*) from information_schema.tables where table_name = 'users'")
        .unwrap();
    assert_eq!(tables.trim(), "0", "a refused directory must apply nothing");
}

#[test]
fn seed_schema_applies_to_mariadb() {
    let db = TestDatabase::create(Engine::MariaDb, "seed_schema").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "seed_schema_dev").unwrap();
    let dir = temp_dir("seed-mysql");
    std::fs::write(dir.join("schema.sql"), seed_mysql_schema()).unwrap();

    atlas(&[
        "schema",
        "apply",
        "--url",
        &db.url,
        "--dev-url",
        &dev.url,
        "--to",
        &format!("file://{}", dir.join("schema.sql").display()),
        "--auto-approve",
    ])
    .unwrap();

    // The seed's `describe myapp.users`, from MySQL 8. MariaDB prints integer display widths
    // (`int(11)`), which MySQL 8 dropped; everything else must be the same.
    let describe = db.query("describe users").unwrap();
    let rows: Vec<Vec<String>> = describe
        .lines()
        .map(|line| {
            line.split('\t')
                .map(|cell| cell.replace("int(11)", "int"))
                .collect()
        })
        .collect();
    let expected = [
        ["id", "int", "NO", "PRI", "NULL", "auto_increment"],
        ["name", "varchar(255)", "NO", "", "NULL", ""],
        ["email", "varchar(255)", "NO", "UNI", "NULL", ""],
        ["short_bio", "varchar(255)", "NO", "", "NULL", ""],
    ];
    assert_eq!(rows, expected.map(|row| row.map(String::from)).to_vec());
}

/// SQLite has no sequences, so the seed's PostgreSQL file cannot run on it: the same table in
/// SQLite's dialect, hashed by Atlas itself, takes the same path (hash, apply, no-op, tamper).
#[test]
fn migration_applies_to_sqlite() {
    let dir = temp_dir("sqlite");
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("20230316085611.sql"),
        "create table users (\n  id integer primary key autoincrement,\n  name varchar(255) not null,\n  \
         email varchar(255) unique not null,\n  short_bio varchar(255) not null\n);\n",
    )
    .unwrap();
    let dir_url = format!("file://{}", migrations.display());
    atlas(&["migrate", "hash", "--dir", &dir_url]).unwrap();
    let sum = std::fs::read_to_string(migrations.join("atlas.sum")).unwrap();
    assert!(
        sum.starts_with("h1:") && sum.contains("20230316085611.sql h1:"),
        "{sum}"
    );

    let url = format!("sqlite://{}", dir.join("app.db").display());
    atlas(&["migrate", "apply", "--url", &url, "--dir", &dir_url]).unwrap();
    let mut sqlite = Command::new("sqlite3");
    sqlite
        .arg(dir.join("app.db"))
        .arg("select name from pragma_table_info('users') order by cid");
    let columns = cmd::output(&mut sqlite, LIMIT).unwrap();
    assert_eq!(columns.trim(), "id\nname\nemail\nshort_bio");
    let again = atlas(&["migrate", "apply", "--url", &url, "--dir", &dir_url]).unwrap();
    assert!(again.contains("No migration files to execute"), "{again}");

    // Tampering after hashing is caught on SQLite too.
    std::fs::write(
        migrations.join("20230316085612.sql"),
        "create table t (id int);\n",
    )
    .unwrap();
    let err = atlas(&["migrate", "apply", "--url", &url, "--dir", &dir_url]).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}
