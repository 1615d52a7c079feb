//! `runner migrate` against the real Atlas CLI and real PostgreSQL, MariaDB and SQLite: each test
//! is one of the issue's bad inputs, and reads what a controller would read (the result in the
//! termination message and the exit code) plus what is in the database afterwards.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use atlas_runner::revisions::{self, Revision, version_key};
use atlas_runner::sum;
use contract::Reason;
use contract::{
    self, CONTRACT_VERSION, Credentials, EXIT_DEFINITIVE, EXIT_OK, EXIT_TRANSIENT, ExecOrder,
    MigrateApply, Outcome, Target, Task, Value, Work,
};
use devcluster::db::{Engine, TestDatabase};
use devcluster::seed;
use support::{Ran, Scratch};

fn hashed(files: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut owned: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
        .collect();
    let text = sum::file(&owned);
    owned.push(("atlas.sum".into(), text.into_bytes()));
    owned
        .into_iter()
        .map(|(n, c)| (n, String::from_utf8(c).unwrap()))
        .collect()
}

fn seed_files() -> Vec<(String, String)> {
    vec![
        (seed::MIGRATION_FILE.into(), seed::MIGRATION_SQL.into()),
        ("atlas.sum".into(), seed::MIGRATION_SUM.into()),
    ]
}

fn write_dir(dir: &Path, files: &[(String, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

fn digest(files: &[(String, String)]) -> String {
    contract::digest_files(files.iter().map(|(n, c)| (n.as_str(), c.as_bytes())))
}

fn task(dir: &Path, files: &[(String, String)], target: Target) -> Task {
    Task {
        version: CONTRACT_VERSION,
        resource: "tests/migration".into(),
        target,
        dev_url_env: None,
        dev_wait_seconds: None,
        env_name: "k8s".into(),
        vars: vec![],
        custom_config_env: None,
        cloud: None,
        inputs_digest: digest(files),
        work: Work::Migration(MigrateApply {
            dir: dir.display().to_string(),
            ..Default::default()
        }),
    }
}

fn migrate_apply(task: &mut Task) -> &mut MigrateApply {
    match &mut task.work {
        Work::Migration(options) => options,
        other => panic!("not a migration: {other:?}"),
    }
}

fn url_target() -> Target {
    Target::UrlEnv("DATABASE_URL".into())
}

fn run_runner(task: &Task, env: &[(&str, &str)], scratch: &Path, extra: &[&str]) -> Ran {
    support::run_runner("migrate", task, env, scratch, extra)
}

#[test]
fn seed_directory_applies_then_is_a_no_op() {
    let db = TestDatabase::create(Engine::Postgres, "runner_seed").unwrap();
    let scratch = Scratch::new("seed");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let task = task(&dir, &seed_files(), url_target());

    let first = run_runner(&task, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
    assert_eq!(first.code, EXIT_OK, "{}", first.stdout);
    assert_eq!(first.result.outcome, Outcome::Applied);
    assert_eq!(first.result.reason, Reason::Applied);
    assert_eq!(
        first.result.current_version.as_deref(),
        Some("20230316085611")
    );
    assert_eq!(first.result.files_applied, 1);
    assert_eq!(first.result.statements_applied, 2);
    // The version the binary records of itself, where it does (any `go install`ed Atlas): it is
    // what the result reports, without an `atlas version` start.
    let recorded = atlas_runner::buildinfo::version(&devcluster::tools::path("atlas").unwrap());
    if let Some(recorded) = &recorded {
        assert_eq!(*recorded, devcluster::tools::atlas_version().unwrap());
    }
    eprintln!("the Atlas binary records its version: {recorded:?}");
    // Whatever Atlas runs (ATLAS_BIN picks another): the version it reports.
    assert_eq!(
        first.result.atlas_version,
        Some(devcluster::tools::atlas_version().unwrap())
    );
    assert!(
        first.stdout.contains("create sequence users_seq"),
        "{}",
        first.stdout
    );
    // One Atlas start: the runner read the revisions table itself.
    assert!(
        !first.stdout.contains("revisions read by"),
        "{}",
        first.stdout
    );
    let default = db
        .query("select column_default from information_schema.columns where table_name = 'users' and column_name = 'id'")
        .unwrap();
    assert_eq!(default.trim(), "nextval('users_seq'::regclass)");

    let second = run_runner(&task, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
    assert_eq!(second.code, EXIT_OK);
    assert_eq!(second.result.outcome, Outcome::NoOp);
    assert_eq!(
        second.result.current_version.as_deref(),
        Some("20230316085611")
    );
    assert_eq!(second.result.files_applied, 0);
}

/// A ConfigMap volume: every key a symlink into `..data/`, itself a symlink.
#[test]
fn a_configmap_volume_works_as_the_directory() {
    let db = TestDatabase::create(Engine::Postgres, "runner_cm").unwrap();
    let scratch = Scratch::new("cm");
    let volume = scratch.0.join("volume");
    let stamp = volume.join("..2026_11_23_17_00_00.000000001");
    write_dir(&stamp, &seed_files());
    std::os::unix::fs::symlink("..2026_11_23_17_00_00.000000001", volume.join("..data")).unwrap();
    for (name, _) in seed_files() {
        std::os::unix::fs::symlink(format!("..data/{name}"), volume.join(&name)).unwrap();
    }
    let ran = run_runner(
        &task(&volume, &seed_files(), url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(ran.result.outcome, Outcome::Applied);
}

#[test]
fn tampered_atlas_sum_applies_nothing_and_names_the_file() {
    let db = TestDatabase::create(Engine::Postgres, "runner_tampered").unwrap();
    let scratch = Scratch::new("tampered");
    let mut files = seed_files();
    files[0].1 = seed::MIGRATION_SQL.replace(
        "varchar(255) not null,\n  primary",
        "text not null,\n  primary",
    );
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let ran = run_runner(
        &task(&dir, &files, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE);
    assert_eq!(ran.result.reason, Reason::ReadingMigrationData);
    assert!(
        ran.result.message.contains("20230316085611.sql"),
        "{}",
        ran.result.message
    );
    let tables = db
        .query("select count(*) from information_schema.tables where table_schema = 'public'")
        .unwrap();
    assert_eq!(tables.trim(), "0");
}

/// A directory without `atlas.sum` is said to lack it, not to mismatch it.
#[test]
fn a_missing_atlas_sum_is_named_missing() {
    let db = TestDatabase::create(Engine::Postgres, "runner_nosum").unwrap();
    let scratch = Scratch::new("nosum");
    let files: Vec<(String, String)> = seed_files()
        .into_iter()
        .filter(|(name, _)| name != "atlas.sum")
        .collect();
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let ran = run_runner(
        &task(&dir, &files, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE);
    assert_eq!(ran.result.reason, Reason::ReadingMigrationData);
    assert!(
        ran.result.message.contains("atlas.sum is missing"),
        "{}",
        ran.result.message
    );
    let tables = db
        .query("select count(*) from information_schema.tables where table_schema = 'public'")
        .unwrap();
    assert_eq!(tables.trim(), "0");
}

#[test]
fn broken_statement_in_file_two_of_three_keeps_file_one() {
    let db = TestDatabase::create(Engine::Postgres, "runner_broken").unwrap();
    let scratch = Scratch::new("broken");
    let files = hashed(&[
        ("1_users.sql", "create table users (id int primary key);\n"),
        (
            "2_orders.sql",
            "create table orders (id int);\ncreate tabel broken (id int);\n",
        ),
        ("3_items.sql", "create table items (id int);\n"),
    ]);
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let ran = run_runner(
        &task(&dir, &files, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::Migrating);
    assert!(!ran.result.transient);
    assert_eq!(ran.result.current_version.as_deref(), Some("1"));
    assert!(
        ran.result.message.contains("2_orders.sql"),
        "{}",
        ran.result.message
    );
    assert!(
        ran.result.message.contains("create tabel broken"),
        "{}",
        ran.result.message
    );
    let tables = db
        .query("select table_name from information_schema.tables where table_schema = 'public' and table_name in ('users','orders','items') order by 1")
        .unwrap();
    // File 2 ran in its own transaction: its first statement was rolled back with it.
    assert_eq!(tables.trim(), "users");
}

#[test]
fn unreachable_database_is_transient() {
    let scratch = Scratch::new("refused");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://root:pass@127.0.0.1:{port}/postgres?sslmode=disable");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let ran = run_runner(
        &task(&dir, &seed_files(), url_target()),
        &[("DATABASE_URL", &url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_TRANSIENT, "{}", ran.result.message);
    assert!(ran.result.transient);
    assert!(
        ran.result.message.contains("cannot reach the database"),
        "{}",
        ran.result.message
    );
}

/// A server that accepts connections and never answers: the runner's time limit ends the wait.
#[test]
fn a_database_that_never_answers_does_not_hang_the_runner() {
    let scratch = Scratch::new("silent");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("postgres://root:pass@127.0.0.1:{port}/postgres?sslmode=disable");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let ran = run_runner(
        &task(&dir, &seed_files(), url_target()),
        &[("DATABASE_URL", &url)],
        &scratch.0,
        &["--timeout-seconds", "3"],
    );
    drop(listener);
    assert_eq!(ran.code, EXIT_TRANSIENT, "{}", ran.result.message);
    assert!(
        ran.result.message.contains("did not finish within 3s"),
        "{}",
        ran.result.message
    );
    assert!(ran.took < Duration::from_secs(30), "took {:?}", ran.took);
}

#[test]
fn wrong_password_is_definitive_and_redacted() {
    let db = TestDatabase::create(Engine::Postgres, "runner_wrongpw").unwrap();
    let scratch = Scratch::new("wrongpw");
    let url = db.url.replace(":pass@", ":Sentinel-Wrong-9f3@");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let ran = run_runner(
        &task(&dir, &seed_files(), url_target()),
        &[("DATABASE_URL", &url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert!(
        ran.result
            .message
            .contains("password authentication failed"),
        "{}",
        ran.result.message
    );
    for text in [&ran.result_text, &ran.stdout, &ran.stderr] {
        assert!(
            !text.contains("Sentinel-Wrong-9f3"),
            "the password leaked: {text}"
        );
    }
}

#[test]
fn an_enormous_error_still_fits_the_termination_message() {
    let db = TestDatabase::create(Engine::Postgres, "runner_huge").unwrap();
    let scratch = Scratch::new("huge");
    let huge = format!("select '{}' from nowhere;\n", "x".repeat(200 * 1024));
    let files = hashed(&[("1_huge.sql", &huge)]);
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let ran = run_runner(
        &task(&dir, &files, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE);
    assert!(ran.result_text.len() <= contract::TERMINATION_MESSAGE_LIMIT);
    assert!(
        ran.result.message.contains("bytes cut]"),
        "{}",
        ran.result.message
    );
    assert!(
        ran.result.message.contains("1_huge.sql"),
        "{}",
        ran.result.message
    );
}

#[test]
fn missing_mounted_directory_and_changed_inputs_are_refused() {
    let scratch = Scratch::new("missing");
    let ran = run_runner(
        &task(&scratch.0.join("nowhere"), &seed_files(), url_target()),
        &[("DATABASE_URL", "postgres://root:pass@127.0.0.1:1/x")],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE);
    assert_eq!(ran.result.reason, Reason::ReadingMigrationData);
    assert!(
        ran.result.message.contains("is missing"),
        "{}",
        ran.result.message
    );

    // The ConfigMap was edited after the Job was made: the Job refuses the new content.
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let mut edited = seed_files();
    edited[0].1.push_str("-- edited\n");
    let ran = run_runner(
        &task(&dir, &edited, url_target()),
        &[("DATABASE_URL", "postgres://root:pass@127.0.0.1:1/x")],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE);
    assert!(
        ran.result
            .message
            .contains("changed after this Job was created"),
        "{}",
        ran.result.message
    );
}

/// A password full of URL syntax, given as credentials: assembled with percent-encoding, it
/// reaches PostgreSQL intact, and appears in no output and on no command line.
#[test]
fn credentials_with_url_special_characters_work_and_never_show() {
    let db = TestDatabase::create(Engine::Postgres, "runner_creds").unwrap();
    let role = format!("r_{}", db.name);
    let password = "Sentinel-p@ss:w/rd#%";
    db.query(&format!(
        "create role {role} login password '{password}'; grant all on schema public to {role}; \
         alter database {} owner to {role}",
        db.name
    ))
    .unwrap();
    let scratch = Scratch::new("creds");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let (host, port) = devcluster::db::shared()
        .map(|s| ("127.0.0.1".to_string(), s.postgres_port))
        .unwrap();
    let target = Target::Credentials(Credentials {
        scheme: "postgres".into(),
        user: Some(Value::Literal(role.clone())),
        password_env: Some("DB_PASSWORD".into()),
        host: Value::Literal(host),
        port: Some(port as i32),
        database: Some(db.name.clone()),
        parameters: BTreeMap::from([("sslmode".to_string(), "disable".to_string())]),
    });
    let ran = run_runner(
        &task(&dir, &seed_files(), target),
        &[("DB_PASSWORD", password)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    for text in [&ran.result_text, &ran.stdout, &ran.stderr] {
        assert!(
            !text.contains("Sentinel-p@ss"),
            "the password leaked: {text}"
        );
        assert!(
            !text.contains("Sentinel-p%40ss"),
            "the password leaked: {text}"
        );
    }
}

/// While Atlas waits on a silent server, its command line is there to read in /proc: the
/// password must not be on it.
#[test]
fn the_password_is_not_on_atlas_command_line() {
    let scratch = Scratch::new("cmdline");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url =
        format!("postgres://root:Sentinel-Cmdline-42@127.0.0.1:{port}/postgres?sslmode=disable");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let task = task(&dir, &seed_files(), url_target());
    let atlas = devcluster::tools::path("atlas").unwrap();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.starts_with(&atlas.display().to_string()) {
                    seen.push(cmdline);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    });
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &url)],
        &scratch.0,
        &["--timeout-seconds", "3"],
    );
    let seen = watcher.join().unwrap();
    drop(listener);
    assert!(!seen.is_empty(), "never saw Atlas running");
    for cmdline in &seen {
        assert!(
            !cmdline.contains("Sentinel-Cmdline-42"),
            "on the command line: {cmdline}"
        );
    }
    for text in [&ran.result_text, &ran.stdout, &ran.stderr] {
        assert!(
            !text.contains("Sentinel-Cmdline-42"),
            "the password leaked: {text}"
        );
    }
}

#[test]
fn baseline_skips_the_files_up_to_it() {
    let db = TestDatabase::create(Engine::Postgres, "runner_baseline").unwrap();
    let scratch = Scratch::new("baseline");
    let files = hashed(&[
        ("1_a.sql", "create table a (id int);\n"),
        ("2_b.sql", "create table b (id int);\n"),
        ("3_c.sql", "create table c (id int);\n"),
    ]);
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let mut task = task(&dir, &files, url_target());
    migrate_apply(&mut task).baseline = Some("2".into());
    let ran = run_runner(&task, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(ran.result.current_version.as_deref(), Some("3"));
    assert_eq!(ran.result.files_applied, 1);
    let tables = db
        .query("select table_name from information_schema.tables where table_schema = 'public' and table_name in ('a','b','c') order by 1")
        .unwrap();
    assert_eq!(tables.trim(), "c");
}

#[test]
fn revisions_schema_holds_the_revisions_table() {
    let db = TestDatabase::create(Engine::Postgres, "runner_revisions").unwrap();
    db.query("create schema atlas_meta").unwrap();
    let scratch = Scratch::new("revisions");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let mut task = task(&dir, &seed_files(), url_target());
    migrate_apply(&mut task).revisions_schema = Some("atlas_meta".into());
    let ran = run_runner(&task, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    let where_ = db
        .query("select table_schema from information_schema.tables where table_name = 'atlas_schema_revisions'")
        .unwrap();
    assert_eq!(where_.trim(), "atlas_meta");
}

/// Upstream's users name the target in their own atlas.hcl (`env "test" { url = var.db_url }`)
/// with the URL in a variable from a Secret: the runner leaves that url as it is, and Atlas
/// migrates the database it names.
#[test]
fn a_target_named_only_by_the_custom_config_is_migrated() {
    let db = TestDatabase::create(Engine::Postgres, "runner_from_config").unwrap();
    let scratch = Scratch::new("from-config");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let mut task = task(&dir, &seed_files(), Target::FromConfig);
    task.env_name = "test".into();
    task.custom_config_env = Some("CUSTOM_CONFIG".into());
    task.vars = vec![contract::Var {
        key: "db_url".into(),
        value: Value::Env("VAR_DB_URL".into()),
    }];
    let custom = r#"
variable "db_url" {
  type = string
}

env "test" {
  url = var.db_url
}
"#;
    let env = [("CUSTOM_CONFIG", custom), ("VAR_DB_URL", db.url.as_str())];
    let ran = run_runner(&task, &env, &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    assert_eq!(
        ran.result.current_version.as_deref(),
        Some("20230316085611")
    );
    let tables = db
        .query("select count(*) from information_schema.tables where table_name = 'users'")
        .unwrap();
    assert_eq!(tables.trim(), "1");
}

/// Upstream's template directories: the spec's files are templates, which the project file's
/// `data "template_dir"` (over `migrations`, where the runner writes them) renders with
/// variables; its computed `migration.dir` stays the user's.
#[test]
fn a_template_directory_renders_the_specs_files() {
    let db = TestDatabase::create(Engine::Postgres, "runner_template_dir").unwrap();
    let scratch = Scratch::new("template-dir");
    let files = hashed(&[("1_init.sql", "create table {{ .table }} (id int);\n")]);
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let mut task = task(&dir, &files, url_target());
    task.custom_config_env = Some("CUSTOM_CONFIG".into());
    task.vars = vec![contract::Var {
        key: "table".into(),
        value: Value::Literal("from_template".into()),
    }];
    let custom = r#"
variable "table" {
  type = string
}

data "template_dir" "migrations" {
  path = "migrations"
  vars = {
    table = var.table
  }
}

env "k8s" {
  migration {
    dir = data.template_dir.migrations.url
  }
}
"#;
    let env = [("DATABASE_URL", db.url.as_str()), ("CUSTOM_CONFIG", custom)];
    let ran = run_runner(&task, &env, &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    let tables = db
        .query("select count(*) from information_schema.tables where table_name = 'from_template'")
        .unwrap();
    assert_eq!(tables.trim(), "1");
}

/// A user's own atlas.hcl (allowed by the operator) keeps its settings, the spec still decides
/// the URL and directory, and a variable read from a Secret reaches Atlas without showing.
#[test]
fn a_custom_config_and_its_vars_reach_atlas() {
    let db = TestDatabase::create(Engine::Postgres, "runner_custom").unwrap();
    db.query("create schema tenant_meta").unwrap();
    let scratch = Scratch::new("custom");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let mut task = task(&dir, &seed_files(), url_target());
    task.custom_config_env = Some("CUSTOM_CONFIG".into());
    task.vars = vec![contract::Var {
        key: "meta".into(),
        value: Value::Env("VAR_META".into()),
    }];
    let custom = r#"
variable "meta" {
  type = string
}

env "k8s" {
  url = "postgres://nobody@nowhere/ignored"
  migration {
    dir = "file://ignored"
    revisions_schema = var.meta
  }
}
"#;
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("CUSTOM_CONFIG", custom),
        ("VAR_META", "tenant_meta"),
    ];
    let ran = run_runner(&task, &env, &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    let where_ = db
        .query("select table_schema from information_schema.tables where table_name = 'atlas_schema_revisions'")
        .unwrap();
    assert_eq!(where_.trim(), "tenant_meta");
    assert!(!ran.stdout.contains("tenant_meta"), "{}", ran.stdout);

    // A variable the config does not declare is the user's to fix, said plainly.
    task.vars[0].key = "undeclared".into();
    let refused = run_runner(&task, &env, &scratch.0, &[]);
    assert_eq!(refused.code, EXIT_DEFINITIVE);
    assert_eq!(refused.result.reason, Reason::ReadingMigrationData);
    assert!(
        refused
            .result
            .message
            .contains("no `variable \"undeclared\"`"),
        "{}",
        refused.result.message
    );
}

#[test]
fn migrating_down_is_protected() {
    let db = TestDatabase::create(Engine::Postgres, "runner_down").unwrap();
    let scratch = Scratch::new("down");
    let both = hashed(&[
        ("1_a.sql", "create table a (id int);\n"),
        ("2_b.sql", "create table b (id int);\n"),
    ]);
    let dir = scratch.0.join("both");
    write_dir(&dir, &both);
    let ran = run_runner(
        &task(&dir, &both, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);

    let first = hashed(&[("1_a.sql", "create table a (id int);\n")]);
    let dir = scratch.0.join("first");
    write_dir(&dir, &first);
    let mut down = task(&dir, &first, url_target());
    let ran = run_runner(&down, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_DEFINITIVE);
    assert_eq!(ran.result.reason, Reason::ProtectedFlowError);
    // Upstream's wording, which scripts compare.
    assert!(
        ran.result.message.starts_with(
            "migrate down is not allowed, set `migrateDown.allow` to true to allow downgrade"
        ),
        "{}",
        ran.result.message
    );
    assert_eq!(ran.result.current_version.as_deref(), Some("2"));

    // Allowed: the official build's `migrate down` reverts file 2, planned on the dev database;
    // a build without it (the community one) says so plainly and drops nothing.
    migrate_apply(&mut down).allow_migrate_down = true;
    let tables_b = "select count(*) from information_schema.tables where table_name = 'b'";
    if atlas_has_migrate_down() {
        // Without a dev database the runner asks for one (the operator's next Job brings it).
        let ran = run_runner(&down, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
        assert_eq!(
            ran.result.outcome,
            Outcome::NeedsDevDatabase,
            "{}",
            ran.result.message
        );
        assert_eq!(ran.result.dev_driver.as_deref(), Some("postgres"));
        assert_eq!(db.query(tables_b).unwrap().trim(), "1");
        let dev = TestDatabase::create(Engine::Postgres, "runner_down_dev").unwrap();
        down.dev_url_env = Some("DEV_URL".into());
        let ran = run_runner(
            &down,
            &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
            &scratch.0,
            &[],
        );
        assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
        assert_eq!(ran.result.current_version.as_deref(), Some("1"));
        assert!(
            ran.result
                .message
                .starts_with("migrated down from version 2 to 1"),
            "{}",
            ran.result.message
        );
        assert_eq!(db.query(tables_b).unwrap().trim(), "0");
    } else {
        let ran = run_runner(&down, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
        assert_eq!(ran.result.reason, Reason::ProtectedFlowError);
        assert!(
            ran.result.message.contains("has no `migrate down`"),
            "{}",
            ran.result.message
        );
        assert_eq!(db.query(tables_b).unwrap().trim(), "1");
    }
}

/// Whether the Atlas the tests run has `migrate down` (the official build does, the community
/// build does not): asked of the binary, as the runner does.
fn atlas_has_migrate_down() -> bool {
    let atlas = devcluster::tools::path("atlas").expect("run `cargo xtask tools` first");
    let help = Command::new(atlas)
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&help.stdout)
        .lines()
        .skip_while(|line| !line.starts_with("Available Commands:"))
        .any(|line| line.split_whitespace().next() == Some("down"))
}

/// Whether the Atlas the tests run has `migrate apply --exec-order`: asked of the binary, as the
/// runner does, so these tests pass with any Atlas.
fn atlas_has_exec_order() -> bool {
    let atlas = devcluster::tools::path("atlas").expect("run `cargo xtask tools` first");
    let help = Command::new(atlas)
        .args(["migrate", "apply", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&help.stdout).contains("--exec-order")
}

#[test]
fn exec_order_is_used_where_this_atlas_has_it_and_refused_plainly_where_not() {
    let db = TestDatabase::create(Engine::Postgres, "runner_execorder").unwrap();
    let scratch = Scratch::new("execorder");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let mut task = task(&dir, &seed_files(), url_target());
    migrate_apply(&mut task).exec_order = Some(ExecOrder::NonLinear);
    let ran = run_runner(&task, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
    if atlas_has_exec_order() {
        assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    } else {
        assert_eq!(ran.code, EXIT_DEFINITIVE);
        assert!(
            ran.result.message.contains(
                "execOrder non-linear needs an Atlas whose `migrate apply` has --exec-order"
            ),
            "{}",
            ran.result.message
        );
    }
}

/// A file added below the database's version (database at 1 and 3, the directory now 1, 2, 3):
/// on every Atlas nothing is applied, and the message names the file and what to do.
#[test]
fn a_file_added_out_of_order_is_refused_by_name() {
    let db = TestDatabase::create(Engine::Postgres, "runner_out_of_order").unwrap();
    let scratch = Scratch::new("out-of-order");
    let first = hashed(&[
        ("1_a.sql", "create table a (id int);\n"),
        ("3_c.sql", "create table c (id int);\n"),
    ]);
    let dir = scratch.0.join("first");
    write_dir(&dir, &first);
    let ran = run_runner(
        &task(&dir, &first, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);

    let late = hashed(&[
        ("1_a.sql", "create table a (id int);\n"),
        ("2_b.sql", "create table b (id int);\n"),
        ("3_c.sql", "create table c (id int);\n"),
    ]);
    let dir = scratch.0.join("late");
    write_dir(&dir, &late);
    let ran = run_runner(
        &task(&dir, &late, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::Migrating);
    let message = &ran.result.message;
    assert!(
        message.contains("2_b.sql was added out of order"),
        "{message}"
    );
    assert!(message.contains("Renumber"), "{message}");
    assert_eq!(ran.result.current_version.as_deref(), Some("3"));
    let b = db
        .query("select count(*) from information_schema.tables where table_name = 'b'")
        .unwrap();
    assert_eq!(b.trim(), "0", "nothing applied");
}

/// MariaDB runs DDL outside transactions: when the second statement of file 2 fails, its first
/// stays. Neither that run nor a retry may report version 2 as applied: the message says the
/// database is partially at 2, which statement failed, and that retrying cannot help.
#[test]
fn a_half_applied_file_on_mariadb_is_never_reported_as_applied() {
    let files = hashed(&[
        ("1_a.sql", "create table a (id int);\n"),
        (
            "2_b.sql",
            "create table b (id int);\ncreate table a (id int);\n",
        ),
    ]);
    let db = TestDatabase::create(Engine::MariaDb, "runner_partial").unwrap();
    let scratch = Scratch::new("partial");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let task = task(&dir, &files, url_target());
    for attempt in ["first", "retry"] {
        let ran = run_runner(&task, &[("DATABASE_URL", &db.url)], &scratch.0, &[]);
        assert_eq!(
            ran.code, EXIT_DEFINITIVE,
            "{attempt}: {}",
            ran.result.message
        );
        assert_eq!(ran.result.reason, Reason::Migrating, "{attempt}");
        let message = &ran.result.message;
        assert_eq!(
            ran.result.current_version.as_deref(),
            Some("1"),
            "{attempt}: {message}"
        );
        assert!(
            message.contains("partially at version 2"),
            "{attempt}: {message}"
        );
        assert!(message.contains("create table a"), "{attempt}: {message}");
        assert!(message.contains("will fail again"), "{attempt}: {message}");
        eprintln!("{attempt}: {message}");
    }
    let tables = db.query("show tables").unwrap();
    assert!(
        tables.contains('b'),
        "the first statement of file 2 stayed: {tables}"
    );
}

#[test]
fn mariadb_and_sqlite_migrate_too() {
    let files = hashed(&[
        (
            "1_users.sql",
            "create table users (id int not null auto_increment, name varchar(255) not null, primary key (id));\n",
        ),
        (
            "2_bio.sql",
            "alter table users add column short_bio varchar(255) not null;\n",
        ),
    ]);
    let db = TestDatabase::create(Engine::MariaDb, "runner_maria").unwrap();
    let scratch = Scratch::new("maria");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let ran = run_runner(
        &task(&dir, &files, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(ran.result.current_version.as_deref(), Some("2"));
    let columns = db.query("select column_name from information_schema.columns where table_schema = database() and table_name = 'users' order by ordinal_position").unwrap();
    assert_eq!(columns.trim(), "id\nname\nshort_bio");

    let sqlite_files = hashed(&[(
        "1_users.sql",
        "create table users (id integer primary key, name text not null);\n",
    )]);
    let dir = scratch.0.join("sqlite");
    write_dir(&dir, &sqlite_files);
    let url = format!("sqlite://{}", scratch.0.join("app.db").display());
    let ran = run_runner(
        &task(&dir, &sqlite_files, url_target()),
        &[("DATABASE_URL", &url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    let again = run_runner(
        &task(&dir, &sqlite_files, url_target()),
        &[("DATABASE_URL", &url)],
        &scratch.0,
        &[],
    );
    assert_eq!(again.result.outcome, Outcome::NoOp);
}

/// An Atlas Cloud token in the pod (from `spec.cloud.tokenFrom` or the install-wide Secret):
/// never printed, and said what becomes of it, by what the binary offers (`atlas login`).
#[test]
fn an_atlas_cloud_token_is_never_shown_and_said_what_becomes_of_it() {
    let db = TestDatabase::create(Engine::Postgres, "runner_token").unwrap();
    let scratch = Scratch::new("token");
    let dir = scratch.0.join("dir");
    write_dir(&dir, &seed_files());
    let token = "aci_sentinel_token_5f0c1e";
    let ran = run_runner(
        &task(&dir, &seed_files(), url_target()),
        &[("DATABASE_URL", &db.url), ("ATLAS_TOKEN", token)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    for text in [&ran.stdout, &ran.stderr, &ran.result_text] {
        assert!(!text.contains(token), "{text}");
    }
    let atlas = devcluster::tools::path("atlas").expect("run `cargo xtask tools` first");
    let help = Command::new(atlas).arg("--help").output().unwrap();
    let has_login = String::from_utf8_lossy(&help.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some("login"));
    let said = if has_login {
        "passed to Atlas in the project file"
    } else {
        "this Atlas build has no Atlas Cloud login (the community build): the token is not used"
    };
    assert!(ran.stdout.contains(said), "{}", ran.stdout);
}

/// `atlas migrate status`'s revisions of `url`, for comparing the runner's own read with.
fn status_revisions(url: &str, dir: &Path, revisions_schema: Option<&str>) -> Vec<Revision> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Status {
        #[serde(default)]
        applied: Vec<Revision>,
    }
    let mut atlas = devcluster::tools::atlas().unwrap();
    atlas
        .args([
            "migrate",
            "status",
            "--format",
            "{{ json . }}",
            "--url",
            url,
        ])
        .arg(format!("--dir=file://{}", dir.display()));
    if let Some(schema) = revisions_schema {
        atlas.args(["--revisions-schema", schema]);
    }
    let output = atlas.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let mut applied = serde_json::from_slice::<Status>(&output.stdout)
        .unwrap()
        .applied;
    applied.sort_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)));
    applied
}

/// The runner reads the revisions table itself (so an apply starts Atlas once) wherever it knows
/// where Atlas keeps it: on each URL shape and `revisionsSchema`, on PostgreSQL and MariaDB, it
/// reads what `atlas migrate status` reads, a half-applied file on MariaDB included, and a
/// database nothing was applied to has no revisions.
#[test]
fn the_runners_own_revisions_read_agrees_with_atlas_migrate_status() {
    let files = hashed(&[
        ("1_a.sql", "create table a (id int);\n"),
        (
            "2_b.sql",
            "create table b (id int);\ncreate table a (id int);\n",
        ),
    ]);
    let whole = hashed(&[("1_a.sql", "create table a (id int);\n")]);
    let scratch = Scratch::new("revisions-read");
    let limit = Duration::from_secs(10);
    for engine in [Engine::Postgres, Engine::MariaDb] {
        for case in ["bound", "revisions schema", "realm"] {
            let db = TestDatabase::create(engine, "runner_revisions_read").unwrap();
            let bound = || match engine {
                Engine::Postgres => {
                    db.query("create schema app").unwrap();
                    format!("{}&search_path=app", db.url)
                }
                Engine::MariaDb => db.url.clone(),
            };
            // On MariaDB a schema is a database of the shared server: named after this test's.
            let meta = format!("{}_meta", db.name);
            let (url, revisions_schema, files) = match case {
                "bound" => (bound(), None, &files),
                "revisions schema" => {
                    db.query(&format!("create schema {meta}")).unwrap();
                    (bound(), Some(meta.as_str()), &whole)
                }
                _ => (db.url.clone(), None, &whole),
            };
            let url = url.as_str();
            let what = format!("{engine:?} {case}");
            let dir = scratch.0.join(what.replace(' ', "-"));
            write_dir(&dir, files);
            // MariaDB's realm is the whole server, which other tests share: read, never applied.
            if engine == Engine::MariaDb && case == "realm" {
                let url = db.url.rsplit_once('/').unwrap().0.to_string() + "/";
                let read = revisions::read(&url, None, limit).unwrap();
                assert_eq!(read, status_revisions(&url, &dir, None), "{what}");
                continue;
            }
            assert_eq!(
                revisions::read(url, revisions_schema, limit).unwrap(),
                Vec::new(),
                "{what}: nothing applied yet"
            );
            let mut apply = devcluster::tools::atlas().unwrap();
            apply
                .args(["migrate", "apply", "--url", url])
                .arg(format!("--dir=file://{}", dir.display()));
            if let Some(schema) = revisions_schema {
                apply.args(["--revisions-schema", schema]);
            }
            let applied = apply.output().unwrap();
            let read = revisions::read(url, revisions_schema, limit)
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(
                read,
                status_revisions(url, &dir, revisions_schema),
                "{what} (apply: {applied:?})"
            );
            assert!(!read.is_empty(), "{what}: {applied:?}");
            if case == "bound" && engine == Engine::MariaDb {
                let partial = read.iter().find(|r| r.version == "2").expect("file 2");
                assert!(!partial.is_complete(), "{partial:?}");
            }
            if revisions_schema.is_some() {
                let cascade = if engine == Engine::Postgres {
                    " cascade"
                } else {
                    ""
                };
                db.query(&format!("drop schema {meta}{cascade}")).unwrap();
            }
        }
    }
}

/// The tables of a test database's own schema (`public`, MariaDB's database), in order, but
/// Atlas's revisions table.
fn tables_of(db: &TestDatabase) -> String {
    let schema = match db.engine {
        Engine::Postgres => "'public'",
        Engine::MariaDb => "database()",
    };
    db.query(&format!(
        "select table_name from information_schema.tables where table_schema = {schema} \
         and table_name <> 'atlas_schema_revisions' order by 1"
    ))
    .unwrap()
    .trim()
    .to_string()
}

/// The version the database's revisions table says it is at.
fn revisions_version(db: &TestDatabase) -> Option<String> {
    let revisions = revisions::read(&db.url, None, Duration::from_secs(10)).unwrap();
    revisions
        .iter()
        .filter(|r| r.is_complete())
        .map(|r| r.version.as_str())
        .max_by_key(|v| version_key(v))
        .map(str::to_string)
}

/// `policy.lint.destructive` on AtlasMigration (issue 17 item 6), on PostgreSQL and MariaDB,
/// with rows in the tables: a pending file that drops a table, or a column, is refused naming
/// it and what it drops, before anything reaches the target (rows, columns and version as they
/// were); a safe pending file applies under the policy; with the policy off the same drop
/// applies as before; the dev database is left as clean as it came.
#[test]
fn pending_files_that_drop_a_table_or_a_column_are_refused_under_the_lint_policy() {
    for engine in [Engine::Postgres, Engine::MariaDb] {
        let db = TestDatabase::create(engine, "runner_lint").unwrap();
        let dev = TestDatabase::create(engine, "runner_lint_dev").unwrap();
        let scratch = Scratch::new("lint");
        let base = [
            (
                "1_users.sql",
                "create table users (id int not null, name varchar(100) not null, bio varchar(200), primary key (id));\n",
            ),
            (
                "2_posts.sql",
                "create table posts (id int not null, body varchar(200) not null, primary key (id));\n",
            ),
        ];
        let files = hashed(&base);
        let dir = scratch.0.join("base");
        write_dir(&dir, &files);
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("DEV_URL", dev.url.as_str()),
        ];
        let ran = run_runner(&task(&dir, &files, url_target()), &env, &scratch.0, &[]);
        assert_eq!(ran.code, EXIT_OK, "{engine:?}: {}", ran.result.message);
        db.query(
            "insert into users (id, name, bio) values (1, 'ada', 'maths'), (2, 'alan', 'logic')",
        )
        .unwrap();
        db.query("insert into posts (id, body) values (1, 'hello'), (2, 'world'), (3, '!')")
            .unwrap();
        let schema = match engine {
            Engine::Postgres => "public".to_string(),
            Engine::MariaDb => db.name.clone(),
        };

        let lint_task = |name: &str, pending: (&str, &str)| {
            let mut all = base.to_vec();
            all.push(pending);
            let files = hashed(&all);
            let dir = scratch.0.join(name);
            write_dir(&dir, &files);
            let mut task = task(&dir, &files, url_target());
            task.dev_url_env = Some("DEV_URL".into());
            migrate_apply(&mut task).lint_destructive = true;
            task
        };
        for (name, pending, finding) in [
            (
                "drop-table",
                ("3_drop_posts.sql", "drop table posts;\n"),
                format!("- DROP TABLE {schema}.posts"),
            ),
            (
                "drop-column",
                ("3_drop_bio.sql", "alter table users drop column bio;\n"),
                format!("- ALTER TABLE {schema}.users DROP COLUMN bio"),
            ),
        ] {
            let refused = run_runner(&lint_task(name, pending), &env, &scratch.0, &[]);
            assert_eq!(
                refused.code, EXIT_DEFINITIVE,
                "{engine:?} {name}: {}",
                refused.stdout
            );
            assert_eq!(refused.result.reason, Reason::LintPolicyError);
            assert_eq!(
                refused.result.message,
                format!(
                    "destructive changes detected:\n{finding}\nnothing was applied: the pending \
                     migration file {} makes these changes, and spec.policy.lint.destructive.\
                     error is true",
                    pending.0
                ),
                "{engine:?} {name}"
            );
            assert_eq!(refused.result.current_version.as_deref(), Some("2"));
            assert_eq!(refused.result.files_applied, 0);
            // The target as it was: its tables, columns, rows and version.
            assert_eq!(tables_of(&db), "posts\nusers", "{engine:?} {name}");
            assert_eq!(db.query("select count(*) from posts").unwrap().trim(), "3");
            assert_eq!(
                db.query("select bio from users order by id")
                    .unwrap()
                    .trim(),
                "maths\nlogic"
            );
            assert_eq!(revisions_version(&db).as_deref(), Some("2"));
            // And the dev database as it came: Atlas's replays are cleaned away.
            assert_eq!(tables_of(&dev), "", "{engine:?} {name}: the dev database");
        }

        // A safe pending file passes the lint and is applied.
        let safe = lint_task(
            "safe",
            (
                "3_email.sql",
                "alter table users add column email varchar(200);\n",
            ),
        );
        let ran = run_runner(&safe, &env, &scratch.0, &[]);
        assert_eq!(
            ran.code, EXIT_OK,
            "{engine:?}: {}\n{}",
            ran.result.message, ran.stdout
        );
        assert_eq!(ran.result.current_version.as_deref(), Some("3"));
        assert!(
            ran.stdout
                .contains("lint: no change the lint refuses in the pending files"),
            "{}",
            ran.stdout
        );
        assert_eq!(db.query("select count(*) from users").unwrap().trim(), "2");

        // Policy off: the drop applies as before, without a dev database.
        let mut all = base.to_vec();
        all.push((
            "3_email.sql",
            "alter table users add column email varchar(200);\n",
        ));
        all.push(("4_drop_posts.sql", "drop table posts;\n"));
        let files = hashed(&all);
        let dir = scratch.0.join("off");
        write_dir(&dir, &files);
        let ran = run_runner(&task(&dir, &files, url_target()), &env, &scratch.0, &[]);
        assert_eq!(ran.code, EXIT_OK, "{engine:?}: {}", ran.result.message);
        assert_eq!(ran.result.current_version.as_deref(), Some("4"));
        assert!(!ran.stdout.contains("lint:"), "{}", ran.stdout);
        assert_eq!(tables_of(&db), "users");
        assert_eq!(tables_of(&dev), "");
    }
}

/// `policy.lint.dataDepend` on AtlasMigration, on PostgreSQL and MariaDB with rows in the
/// table: a pending file that narrows a column, or adds a `NOT NULL` column without a default
/// (MariaDB fills the rows with 0 unasked), is refused in the schema lint's shape before
/// anything reaches the target; with the destructive check on as well, a file that both drops
/// and narrows is refused once, naming both policies; with only the destructive check on, the
/// narrowing file applies as before (the rows fit: refused or not, the rows are never read).
#[test]
fn pending_files_whose_outcome_depends_on_the_rows_are_refused_under_the_data_depend_policy() {
    for engine in [Engine::Postgres, Engine::MariaDb] {
        let db = TestDatabase::create(engine, "runner_lint_dd").unwrap();
        let dev = TestDatabase::create(engine, "runner_lint_dd_dev").unwrap();
        let scratch = Scratch::new("lint-dd");
        let base = [(
            "1_orders.sql",
            "create table orders (id int not null, code varchar(255) not null, note varchar(100), primary key (id));\n",
        )];
        let files = hashed(&base);
        let dir = scratch.0.join("base");
        write_dir(&dir, &files);
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("DEV_URL", dev.url.as_str()),
        ];
        let ran = run_runner(&task(&dir, &files, url_target()), &env, &scratch.0, &[]);
        assert_eq!(ran.code, EXIT_OK, "{engine:?}: {}", ran.result.message);
        db.query("insert into orders (id, code, note) values (1, 'a-1', 'x'), (2, 'b-2', 'y')")
            .unwrap();
        let rows = "select id, code, note from orders order by id";
        let before = db.query(rows).unwrap();
        let narrow = match engine {
            Engine::Postgres => "alter table orders alter column code type varchar(10);\n",
            Engine::MariaDb => "alter table orders modify code varchar(10) not null;\n",
        };
        let columns = "select column_name from information_schema.columns where table_name = \
                       'orders' and table_schema not in ('information_schema') order by 1";
        let columns_before = db.query(columns).unwrap();

        let lint_task = |name: &str, pending: (&str, &str), destructive: bool| {
            let all = [base[0], pending];
            let files = hashed(&all);
            let dir = scratch.0.join(name);
            write_dir(&dir, &files);
            let mut task = task(&dir, &files, url_target());
            task.dev_url_env = Some("DEV_URL".into());
            let options = migrate_apply(&mut task);
            options.lint_data_depend = true;
            options.lint_destructive = destructive;
            task
        };
        for (name, pending) in [
            ("narrow", ("2_narrow.sql", narrow)),
            (
                "not-null",
                (
                    "2_batch.sql",
                    "alter table orders add column batch int not null;\n",
                ),
            ),
        ] {
            let refused = run_runner(&lint_task(name, pending, false), &env, &scratch.0, &[]);
            assert_eq!(
                refused.code, EXIT_DEFINITIVE,
                "{engine:?} {name}: {}",
                refused.stdout
            );
            assert_eq!(refused.result.reason, Reason::LintPolicyError);
            let message = &refused.result.message;
            assert!(
                message.starts_with("data dependent changes detected:\n- ")
                    && message.contains("orders")
                    && message.ends_with(&format!(
                        "nothing was applied: the pending migration file {} makes these \
                         changes, and spec.policy.lint.dataDepend.error is true",
                        pending.0
                    )),
                "{engine:?} {name}: {message}"
            );
            assert_eq!(refused.result.current_version.as_deref(), Some("1"));
            assert_eq!(refused.result.files_applied, 0);
            assert_eq!(db.query(rows).unwrap(), before, "{engine:?} {name}");
            assert_eq!(
                db.query(columns).unwrap(),
                columns_before,
                "{engine:?} {name}"
            );
            assert_eq!(revisions_version(&db).as_deref(), Some("1"));
            assert_eq!(tables_of(&dev), "", "{engine:?} {name}: the dev database");
        }

        // Both checks on, one file that drops and narrows: one refusal, both sections.
        let both = format!("{narrow}alter table orders drop column note;\n");
        let refused = run_runner(
            &lint_task("both", ("2_both.sql", &both), true),
            &env,
            &scratch.0,
            &[],
        );
        assert_eq!(
            refused.code, EXIT_DEFINITIVE,
            "{engine:?}: {}",
            refused.stdout
        );
        let message = &refused.result.message;
        assert!(
            message.starts_with("destructive changes detected:\n- ")
                && message.contains("DROP COLUMN note\ndata dependent changes detected:\n- ")
                && message.ends_with(
                    "spec.policy.lint.destructive.error is true; \
                     spec.policy.lint.dataDepend.error is true"
                ),
            "{engine:?}: {message}"
        );
        assert_eq!(db.query(rows).unwrap(), before, "{engine:?}");

        // Only the destructive check: the narrowing file is none of its business.
        let mut only_destructive = lint_task("destructive-only", ("2_narrow.sql", narrow), true);
        migrate_apply(&mut only_destructive).lint_data_depend = false;
        let ran = run_runner(&only_destructive, &env, &scratch.0, &[]);
        assert_eq!(
            ran.code, EXIT_OK,
            "{engine:?}: {}\n{}",
            ran.result.message, ran.stdout
        );
        assert_eq!(revisions_version(&db).as_deref(), Some("2"));
    }
}

/// A custom atlas.hcl whose env, or top level, says `lint { destructive { error = true } }`
/// turns the check on without the spec's policy, and one whose env says `false` leaves it off.
/// Without a dev database the runner first asks for one (`needs-dev-database` with the
/// target's driver, nothing applied), as for a migrate down.
#[test]
fn a_custom_config_lint_block_turns_the_check_on() {
    let db = TestDatabase::create(Engine::Postgres, "runner_lint_custom").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "runner_lint_custom_dev").unwrap();
    let scratch = Scratch::new("lint-custom");
    let base = hashed(&[(
        "1_users.sql",
        "create table users (id int primary key, bio text);\n",
    )]);
    let dir = scratch.0.join("base");
    write_dir(&dir, &base);
    let ran = run_runner(
        &task(&dir, &base, url_target()),
        &[("DATABASE_URL", &db.url)],
        &scratch.0,
        &[],
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    db.query("insert into users values (1, 'ada'), (2, 'alan')")
        .unwrap();

    let files = hashed(&[
        (
            "1_users.sql",
            "create table users (id int primary key, bio text);\n",
        ),
        ("2_drop_bio.sql", "alter table users drop column bio;\n"),
    ]);
    let dir = scratch.0.join("drop");
    write_dir(&dir, &files);
    let mut task = task(&dir, &files, url_target());
    task.custom_config_env = Some("CUSTOM_CONFIG".into());
    let in_env = "env \"k8s\" {\n  lint {\n    destructive {\n      error = true\n    }\n  }\n}\n";
    let top_level = "lint {\n  destructive {\n    error = true\n  }\n}\nenv \"k8s\" {\n}\n";
    let env_off = "lint {\n  destructive {\n    error = true\n  }\n}\nenv \"k8s\" {\n  lint {\n    destructive {\n      error = false\n    }\n  }\n}\n";

    // No dev database yet: the runner asks for one, and applies nothing.
    let asked = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("CUSTOM_CONFIG", in_env)],
        &scratch.0,
        &[],
    );
    assert_eq!(asked.code, EXIT_OK, "{}", asked.result.message);
    assert_eq!(asked.result.outcome, Outcome::NeedsDevDatabase);
    assert_eq!(asked.result.reason, Reason::GettingDevDb);
    assert_eq!(asked.result.dev_driver.as_deref(), Some("postgres"));
    assert_eq!(revisions_version(&db).as_deref(), Some("1"));

    task.dev_url_env = Some("DEV_URL".into());
    for custom in [in_env, top_level] {
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("DEV_URL", dev.url.as_str()),
            ("CUSTOM_CONFIG", custom),
        ];
        let refused = run_runner(&task, &env, &scratch.0, &[]);
        assert_eq!(
            refused.code, EXIT_DEFINITIVE,
            "{custom}: {}",
            refused.stdout
        );
        assert_eq!(refused.result.reason, Reason::LintPolicyError);
        assert!(
            refused.result.message.starts_with(
                "destructive changes detected:\n- ALTER TABLE public.users DROP COLUMN bio\n"
            ),
            "{}",
            refused.result.message
        );
        assert!(
            refused
                .result
                .message
                .ends_with("file 2_drop_bio.sql makes these changes, and the custom atlas.hcl sets lint.destructive.error"),
            "{}",
            refused.result.message
        );
        assert_eq!(
            db.query("select bio from users order by id")
                .unwrap()
                .trim(),
            "ada\nalan"
        );
        assert_eq!(revisions_version(&db).as_deref(), Some("1"));
    }
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
        ("CUSTOM_CONFIG", env_off),
    ];
    let ran = run_runner(&task, &env, &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(ran.result.current_version.as_deref(), Some("2"));
    assert_eq!(
        db.query("select count(*) from information_schema.columns where table_name = 'users' and column_name = 'bio'")
            .unwrap()
            .trim(),
        "0"
    );
}

/// The lint replays what the database stands on, by its revisions: with a baseline (a database
/// that had its tables, with rows, before its migrations were managed: the files up to the
/// baseline stand for them) and the revisions table in `revisionsSchema`, a safe pending file
/// applies and one that drops the baseline's table is refused; the revisions schema never
/// reaches the dev database, which stays empty.
#[test]
fn the_lint_replays_the_baseline_and_keeps_to_the_revisions_schema() {
    let db = TestDatabase::create(Engine::Postgres, "runner_lint_baseline").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "runner_lint_baseline_dev").unwrap();
    db.query("create schema atlas_meta").unwrap();
    db.query("create table legacy (id int primary key, note text)")
        .unwrap();
    db.query("insert into legacy values (1, 'kept'), (2, 'also kept')")
        .unwrap();
    let scratch = Scratch::new("lint-baseline");
    let base = (
        "1_legacy.sql",
        "create table legacy (id int primary key, note text);\n",
    );
    let safe = ("2_tags.sql", "create table tags (id int primary key);\n");
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
    ];
    let linted = |name: &str, files: &[(&str, &str)]| {
        let files = hashed(files);
        let dir = scratch.0.join(name);
        write_dir(&dir, &files);
        let mut task = task(&dir, &files, url_target());
        task.dev_url_env = Some("DEV_URL".into());
        let options = migrate_apply(&mut task);
        options.lint_destructive = true;
        options.baseline = Some("1".into());
        options.revisions_schema = Some("atlas_meta".into());
        task
    };
    let ran = run_runner(&linted("safe", &[base, safe]), &env, &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    assert_eq!(ran.result.current_version.as_deref(), Some("2"));
    assert!(
        ran.stdout
            .contains("lint: replaying 1 applied and 1 pending migration files"),
        "{}",
        ran.stdout
    );

    let drop = ("3_drop_legacy.sql", "drop table legacy;\n");
    let refused = run_runner(&linted("drop", &[base, safe, drop]), &env, &scratch.0, &[]);
    assert_eq!(refused.code, EXIT_DEFINITIVE, "{}", refused.stdout);
    assert_eq!(refused.result.reason, Reason::LintPolicyError);
    assert!(
        refused
            .result
            .message
            .starts_with("destructive changes detected:\n- DROP TABLE public.legacy\n"),
        "{}",
        refused.result.message
    );
    assert_eq!(refused.result.current_version.as_deref(), Some("2"));
    assert_eq!(db.query("select count(*) from legacy").unwrap().trim(), "2");
    let revisions = db
        .query("select max(version) from atlas_meta.atlas_schema_revisions where version <> '1'")
        .unwrap();
    assert_eq!(revisions.trim(), "2");
    let dev_schemas = dev
        .query("select count(*) from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema')")
        .unwrap();
    assert_eq!(dev_schemas.trim(), "0");
}

/// A pending file that fails on the dev database fails as it would on the target, said as the
/// lint's, and nothing reaches the target (no revision, no table).
#[test]
fn a_pending_file_that_fails_in_the_lint_replay_applies_nothing() {
    let db = TestDatabase::create(Engine::Postgres, "runner_lint_broken").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "runner_lint_broken_dev").unwrap();
    let scratch = Scratch::new("lint-broken");
    let files = hashed(&[
        ("1_a.sql", "create table a (id int);\n"),
        ("2_b.sql", "create tabel b (id int);\n"),
    ]);
    let dir = scratch.0.join("dir");
    write_dir(&dir, &files);
    let mut task = task(&dir, &files, url_target());
    task.dev_url_env = Some("DEV_URL".into());
    migrate_apply(&mut task).lint_destructive = true;
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
    ];
    let ran = run_runner(&task, &env, &scratch.0, &[]);
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.stdout);
    assert_eq!(
        ran.result.reason,
        Reason::Migrating,
        "{}",
        ran.result.message
    );
    assert!(
        ran.result.message.starts_with(
            "the lint of pending migration files could not replay them on the dev database: "
        ),
        "{}",
        ran.result.message
    );
    assert!(
        ran.result.message.contains("tabel"),
        "{}",
        ran.result.message
    );
    assert!(ran.result.message.ends_with("; nothing was applied"));
    assert_eq!(revisions_version(&db), None);
    assert_eq!(
        db.query("select count(*) from information_schema.tables where table_name = 'a'")
            .unwrap()
            .trim(),
        "0"
    );
}
