//! The failure table (`atlas_runner::classify`) against what the Atlas CLI under test really
//! prints: each test makes one failure happen on a real database and checks the verdict. Run with
//! `ATLAS_BIN=/path/to/another/atlas` to check another Atlas version's messages; `--nocapture`
//! shows each message as it came (the table's unit tests hold them, per version).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atlas_runner::atlas::Atlas;
use atlas_runner::classify::{self, Failure};
use atlas_runner::sum;
use contract::Kind;
use devcluster::db::{Engine, TestDatabase};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "runner-classify-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A migration directory with an `atlas.sum` as Atlas computes it.
    fn migrations(&self, files: &[(&str, &str)]) -> PathBuf {
        let owned: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
            .collect();
        for (name, content) in files {
            self.file(&format!("migrations/{name}"), content);
        }
        self.file("migrations/atlas.sum", &sum::file(&owned));
        self.0.join("migrations")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn atlas() -> Atlas {
    Atlas::new(
        devcluster::tools::path("atlas").expect("run `cargo xtask tools` first"),
        Duration::from_secs(120),
    )
}

/// Runs Atlas, which must fail, and returns the error the runner would read.
fn failing(args: &[&str]) -> String {
    let output = atlas().run(args).unwrap();
    assert!(!output.success, "{}\n{}", output.stdout, output.stderr);
    let text = output.error_text();
    eprintln!(
        "captured {args:?}:\n  {text:?}\n  stdout: {:?}",
        output.stdout
    );
    text
}

fn migrate_apply(url: &str, dir: &Path) -> String {
    let dir = format!("file://{}", dir.display());
    failing(&[
        "migrate",
        "apply",
        "--url",
        url,
        "--dir",
        &dir,
        "--format",
        "{{ json . }}",
    ])
}

fn schema_apply(url: &str, dev: &str, desired: &Path) -> String {
    let to = format!("file://{}", desired.display());
    failing(&[
        "schema",
        "apply",
        "--url",
        url,
        "--dev-url",
        dev,
        "--to",
        &to,
        "--auto-approve",
        "--format",
        "{{ json . }}",
    ])
}

#[track_caller]
fn verdict_is(kind: Kind, message: &str, failure: Failure) {
    let verdict = classify::classify(kind, message);
    assert_eq!(verdict.failure, failure, "{message}");
    assert_eq!(verdict.transient, failure.is_transient(), "{message}");
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn with_password(url: &str, password: &str) -> String {
    url.replacen(":pass@", &format!(":{password}@"), 1)
}

const ONE_FILE: &[(&str, &str)] = &[("1_init.sql", "CREATE TABLE t (id int);\n")];

#[test]
fn a_wrong_password_is_definitive_on_postgres_and_mariadb() {
    let scratch = Scratch::new("password");
    let dir = scratch.migrations(ONE_FILE);
    for engine in [Engine::Postgres, Engine::MariaDb] {
        let db = TestDatabase::create(engine, "password").unwrap();
        let message = migrate_apply(&with_password(&db.url, "wrong"), &dir);
        verdict_is(Kind::Migration, &message, Failure::Credentials);
    }
}

#[test]
fn a_closed_port_and_an_unknown_host_are_transient() {
    let scratch = Scratch::new("unreachable");
    let dir = scratch.migrations(ONE_FILE);
    let port = closed_port();
    for url in [
        format!("postgres://root:pass@127.0.0.1:{port}/x?sslmode=disable"),
        format!("mysql://root:pass@127.0.0.1:{port}/x"),
        "postgres://root:pass@no-such-host.invalid:5432/x?sslmode=disable".to_string(),
    ] {
        let message = migrate_apply(&url, &dir);
        verdict_is(Kind::Migration, &message, Failure::Unreachable);
    }
}

#[test]
fn a_tampered_or_missing_atlas_sum_is_a_checksum_error() {
    let scratch = Scratch::new("checksum");
    let dir = scratch.migrations(ONE_FILE);
    let db = TestDatabase::create(Engine::Postgres, "checksum").unwrap();
    scratch.file("migrations/1_init.sql", "CREATE TABLE t (id bigint);\n");
    verdict_is(
        Kind::Migration,
        &migrate_apply(&db.url, &dir),
        Failure::Checksum,
    );
    std::fs::remove_file(dir.join("atlas.sum")).unwrap();
    verdict_is(
        Kind::Migration,
        &migrate_apply(&db.url, &dir),
        Failure::Checksum,
    );
}

#[test]
fn a_database_that_is_not_clean_is_definitive() {
    let scratch = Scratch::new("dirty");
    let dir = scratch.migrations(ONE_FILE);
    for engine in [Engine::Postgres, Engine::MariaDb] {
        let db = TestDatabase::create(engine, "dirty").unwrap();
        db.query("CREATE TABLE already_here (id int)").unwrap();
        let message = migrate_apply(&db.url, &dir);
        verdict_is(Kind::Migration, &message, Failure::History);
    }
}

/// Atlas's advisory lock for `migrate apply`, held by another session: FNV-1 (32 bits) of its
/// name, as `sql/postgres/driver.go` computes it.
fn apply_lock_id() -> u32 {
    "atlas_migrate_execute".bytes().fold(0x811c9dc5u32, |h, b| {
        h.wrapping_mul(0x01000193) ^ u32::from(b)
    })
}

struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lock_held_elsewhere_is_transient() {
    let scratch = Scratch::new("lock");
    let dir = scratch.migrations(ONE_FILE);
    let db = TestDatabase::create(Engine::Postgres, "lock").unwrap();
    let _holder = Holder(
        Command::new("psql")
            .arg(&db.url)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-c",
                &format!("SELECT pg_advisory_lock({})", apply_lock_id()),
            ])
            .args(["-c", "SELECT pg_sleep(20)"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Until the holder has the lock.
    let id = apply_lock_id();
    let held = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        db.query(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {id} AND granted"
        ))
        .is_ok_and(|n| n.trim() == "1")
    });
    assert!(held, "the other session never took the lock");
    let url = format!("file://{}", dir.display());
    let message = failing(&[
        "migrate",
        "apply",
        "--url",
        &db.url,
        "--dir",
        &url,
        "--lock-timeout",
        "1s",
        "--format",
        "{{ json . }}",
    ]);
    verdict_is(Kind::Migration, &message, Failure::Busy);
}

#[test]
fn a_broken_sql_schema_is_read_schema_on_every_engine() {
    let scratch = Scratch::new("sql");
    let desired = scratch.file("schema.sql", "create tabel users (id int);\n");
    for engine in [Engine::Postgres, Engine::MariaDb] {
        let db = TestDatabase::create(engine, "sql").unwrap();
        let dev = TestDatabase::create(engine, "sql_dev").unwrap();
        let message = schema_apply(&db.url, &dev.url, &desired);
        verdict_is(Kind::Schema, &message, Failure::DesiredSchema);
    }
    let sqlite = format!("sqlite://{}", scratch.0.join("app.db").display());
    let message = schema_apply(&sqlite, "sqlite://dev?mode=memory", &desired);
    verdict_is(Kind::Schema, &message, Failure::DesiredSchema);
    // Atlas cannot even split it into statements.
    let unclosed = scratch.file("schema.sql", "create table t (a text default 'x);\n");
    let message = schema_apply(&sqlite, "sqlite://dev?mode=memory", &unclosed);
    verdict_is(Kind::Schema, &message, Failure::DesiredSchema);
}

#[test]
fn a_broken_hcl_schema_is_read_schema() {
    let scratch = Scratch::new("hcl");
    let sqlite = format!("sqlite://{}", scratch.0.join("app.db").display());
    for hcl in [
        // Does not parse.
        "table \"users\" {\n  schema = schema.main\n",
        // Parses, does not evaluate.
        "schema \"main\" {}\ntable \"users\" {\n  schema = schema.main\n  column \"id\" {\n    type = integr\n  }\n}\n",
        "table \"users\" {\n  schema = schema.main\n  column \"id\" {\n    type = int\n  }\n}\n",
    ] {
        let desired = scratch.file("schema.hcl", hcl);
        let message = schema_apply(&sqlite, "sqlite://dev?mode=memory", &desired);
        verdict_is(Kind::Schema, &message, Failure::DesiredSchema);
    }
}

/// A dev database with tables in it cannot replay the desired schema. Atlas says so while it
/// takes its snapshot, before it reads the schema: an apply failure (`ApplyingSchema`, as before
/// the table), with Atlas's words saying why; not transient, as a retry finds the same tables.
#[test]
fn a_dev_database_that_is_not_clean_is_definitive() {
    let scratch = Scratch::new("dirtydev");
    let desired = scratch.file("schema.sql", "create table users (id int);\n");
    let db = TestDatabase::create(Engine::Postgres, "dirtydev").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "dirtydev_dev").unwrap();
    dev.query("create table leftover (id int)").unwrap();
    let message = schema_apply(&db.url, &dev.url, &desired);
    assert!(message.contains("not clean"), "{message}");
    verdict_is(Kind::Schema, &message, Failure::Other);
}

#[test]
fn a_wrong_password_on_a_schema_target_is_definitive() {
    let scratch = Scratch::new("schemapassword");
    let desired = scratch.file("schema.sql", "create table users (id int);\n");
    let db = TestDatabase::create(Engine::MariaDb, "schemapassword").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schemapassword_dev").unwrap();
    let message = schema_apply(&with_password(&db.url, "wrong"), &dev.url, &desired);
    verdict_is(Kind::Schema, &message, Failure::Credentials);
}
