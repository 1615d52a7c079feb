//! `runner schema` against the real Atlas CLI and real MariaDB, PostgreSQL and SQLite.

mod support;

use std::path::{Path, PathBuf};

use contract::Reason;
use contract::{
    self, CONTRACT_VERSION, Desired, EXIT_DEFINITIVE, EXIT_OK, Outcome, SchemaApply, Target, Task,
    Work,
};
use devcluster::db::{Engine, TestDatabase};
use devcluster::seed;
use support::{Ran, Scratch};

fn task(file: &Path, options: SchemaApply) -> Task {
    let content = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    Task {
        version: CONTRACT_VERSION,
        resource: "tests/schema".into(),
        target: Target::UrlEnv("DATABASE_URL".into()),
        dev_url_env: Some("DEV_URL".into()),
        dev_wait_seconds: None,
        env_name: "k8s".into(),
        vars: vec![],
        custom_config_env: None,
        cloud: None,
        inputs_digest: contract::digest_files([(name, content.as_slice())]),
        work: Work::Schema(SchemaApply {
            desired: Desired::File(file.display().to_string()),
            ..options
        }),
    }
}

fn desired(scratch: &Scratch, name: &str, sql: &str) -> PathBuf {
    let path = scratch.0.join(name);
    std::fs::write(&path, sql).unwrap();
    path
}

fn run_runner(task: &Task, env: &[(&str, &str)], scratch: &Scratch) -> Ran {
    support::run_runner("schema", task, env, &scratch.0, &[])
}

fn describe(db: &TestDatabase, table: &str) -> Vec<String> {
    db.query(&format!("describe {table}"))
        .unwrap()
        .lines()
        .map(|line| line.split('\t').next().unwrap().to_string())
        .collect()
}

#[test]
fn seed_schema_applies_to_mariadb_then_is_a_no_op() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_seed").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_seed_dev").unwrap();
    let scratch = Scratch::new("seed");
    let task = task(
        &desired(&scratch, "schema.sql", seed::SCHEMA_SQL),
        SchemaApply::default(),
    );
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
    ];
    let first = run_runner(&task, &env, &scratch);
    assert_eq!(first.code, EXIT_OK, "{}", first.result.message);
    assert_eq!(first.result.outcome, Outcome::Applied);
    assert!(
        first.stdout.contains("CREATE TABLE `users`"),
        "{}",
        first.stdout
    );
    assert_eq!(describe(&db, "users"), ["id", "name", "email", "short_bio"]);
    let second = run_runner(&task, &env, &scratch);
    assert_eq!(second.code, EXIT_OK);
    assert_eq!(second.result.outcome, Outcome::NoOp);
}

#[test]
fn destructive_change_under_the_lint_policy_applies_nothing() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_lint").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_lint_dev").unwrap();
    db.query("create table users (id int primary key, bio text); create table old_logs (id int)")
        .unwrap();
    let scratch = Scratch::new("lint");
    let lint = SchemaApply {
        lint_destructive: true,
        ..SchemaApply::default()
    };
    // Drops a column and a table, and adds one: nothing of it may happen.
    let task = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key);\ncreate table fresh (id int);\n",
        ),
        lint,
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::LintPolicyError);
    assert!(
        ran.result.message.contains("old_logs"),
        "{}",
        ran.result.message
    );
    // Upstream's wording, which scripts compare: a header, then one `- <statement>` per line.
    assert!(
        ran.result
            .message
            .starts_with("destructive changes detected:\n- "),
        "{}",
        ran.result.message
    );
    assert!(
        ran.result.message.lines().any(
            |line| line.starts_with("- ALTER TABLE") && line.ends_with("users DROP COLUMN bio")
        ),
        "{}",
        ran.result.message
    );
    let tables = db.query("show tables").unwrap();
    assert_eq!(tables.trim(), "old_logs\nusers");
    assert_eq!(describe(&db, "users"), ["id", "bio"]);
}

/// Words that look destructive in SQL text are not destructive changes.
#[test]
fn drop_in_names_and_comments_is_not_destructive() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_names").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_names_dev").unwrap();
    db.query("create table stats (id int primary key)").unwrap();
    let scratch = Scratch::new("names");
    let task = task(
        &desired(
            &scratch,
            "schema.sql",
            "-- drop table stats would be bad\ncreate table stats (id int primary key, drop_count int);\n",
        ),
        SchemaApply {
            lint_destructive: true,
            ..SchemaApply::default()
        },
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(describe(&db, "stats"), ["id", "drop_count"]);
}

/// `diff.concurrent_index.create` on PostgreSQL: the index is built concurrently, outside a
/// transaction as PostgreSQL requires, and the log says so; an Atlas build that planned it
/// without CONCURRENTLY would be named in the message, never silent.
#[test]
fn the_concurrent_index_policy_builds_the_index_concurrently() {
    let db = TestDatabase::create(Engine::Postgres, "schema_concurrent").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_concurrent_dev").unwrap();
    db.query("create table users (id int primary key, email text)")
        .unwrap();
    let scratch = Scratch::new("concurrent");
    let task = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key, email text);\n\
             create index users_email on users (email);\n",
        ),
        SchemaApply {
            concurrent_index_create: Some(true),
            ..SchemaApply::default()
        },
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    assert!(
        ran.stdout.contains("without a transaction"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("CREATE INDEX CONCURRENTLY")
            || ran.result.message.contains("without CONCURRENTLY"),
        "{}\n{}",
        ran.result.message,
        ran.stdout
    );
    let index = db
        .query("select indexname from pg_indexes where indexname = 'users_email'")
        .unwrap();
    assert_eq!(index.trim(), "users_email");
}

#[test]
fn skip_drop_index_keeps_the_index_and_exclude_keeps_the_table() {
    let db = TestDatabase::create(Engine::Postgres, "schema_skip").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_skip_dev").unwrap();
    db.query(
        "create table users (id int primary key, email text); \
         create index users_email on users (email); create table ignore_me (id int)",
    )
    .unwrap();
    let scratch = Scratch::new("skip");
    let task = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key, email text, name text);\n",
        ),
        SchemaApply {
            skip: vec!["drop_index".into()],
            // The URL names no schema, so Atlas sees `public.ignore_me`: patterns are qualified.
            exclude: vec!["public.ignore_me".into()],
            lint_destructive: true,
            ..SchemaApply::default()
        },
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    let index = db
        .query("select indexname from pg_indexes where tablename = 'users' and indexname = 'users_email'")
        .unwrap();
    assert_eq!(index.trim(), "users_email");
    let tables = db
        .query("select table_name from information_schema.tables where table_schema = 'public' order by 1")
        .unwrap();
    assert_eq!(tables.trim(), "ignore_me\nusers");
    let name = db
        .query("select count(*) from information_schema.columns where table_name = 'users' and column_name = 'name'")
        .unwrap();
    assert_eq!(name.trim(), "1");
}

#[test]
fn broken_desired_schema_is_read_schema() {
    let db = TestDatabase::create(Engine::Postgres, "schema_broken").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_broken_dev").unwrap();
    let scratch = Scratch::new("broken");
    let task = task(
        &desired(&scratch, "schema.sql", "create tabel users (id int);\n"),
        SchemaApply::default(),
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE);
    assert_eq!(ran.result.reason, Reason::ReadSchema);
    assert!(
        ran.result.message.contains("tabel"),
        "{}",
        ran.result.message
    );
}

#[test]
fn hcl_schema_applies_to_sqlite_with_an_in_memory_dev_database() {
    let scratch = Scratch::new("sqlite");
    let hcl = "schema \"main\" {}\ntable \"users\" {\n  schema = schema.main\n  column \"id\" {\n    type = integer\n  }\n  primary_key {\n    columns = [column.id]\n  }\n}\n";
    let mut task = task(
        &desired(&scratch, "schema.hcl", hcl),
        SchemaApply::default(),
    );
    task.dev_url_env = None;
    let url = format!("sqlite://{}", scratch.0.join("app.db").display());
    let ran = run_runner(&task, &[("DATABASE_URL", &url)], &scratch);
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(ran.result.outcome, Outcome::Applied);
}

#[test]
fn no_dev_database_for_a_server_target_is_getting_dev_db() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_nodev").unwrap();
    let scratch = Scratch::new("nodev");
    let mut task = task(
        &desired(&scratch, "schema.sql", seed::SCHEMA_SQL),
        SchemaApply::default(),
    );
    task.dev_url_env = None;
    let ran = run_runner(&task, &[("DATABASE_URL", &db.url)], &scratch);
    // Not a failure: the driver tells the controller which dev database to add to the next Job.
    assert_eq!(ran.code, EXIT_OK);
    assert_eq!(ran.result.outcome, Outcome::NeedsDevDatabase);
    assert_eq!(ran.result.reason, Reason::GettingDevDb);
    assert_eq!(ran.result.dev_driver.as_deref(), Some("mysql"));
}

/// A dev database that is still starting (a sidecar): the runner waits for it, up to its limit.
#[test]
fn a_dev_database_that_never_comes_up_is_getting_dev_db_after_the_wait() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_devwait").unwrap();
    let scratch = Scratch::new("devwait");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut task = task(
        &desired(&scratch, "schema.sql", seed::SCHEMA_SQL),
        SchemaApply::default(),
    );
    task.dev_wait_seconds = Some(2);
    let dev = format!("mysql://root@127.0.0.1:{port}/dev");
    let started = std::time::Instant::now();
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev)],
        &scratch,
    );
    assert_eq!(ran.result.reason, Reason::GettingDevDb);
    assert!(ran.result.transient);
    assert!(
        ran.result.message.contains("within 2s"),
        "{}",
        ran.result.message
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

fn lint_policy() -> SchemaApply {
    SchemaApply {
        lint_destructive: true,
        ..SchemaApply::default()
    }
}

/// A PostgreSQL URL without `search_path` is the whole database (realm): Atlas diffs schema by
/// schema, by name. The database's only schema `legacy` and the desired schema's only `public`
/// are two schemas, and the plan drops `legacy` with its rows: the lint names and refuses it.
#[test]
fn dropping_the_only_schema_of_a_realm_url_is_refused() {
    let db = TestDatabase::create(Engine::Postgres, "schema_realm_drop").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_realm_drop_dev").unwrap();
    db.query(
        "drop schema public cascade; create schema legacy; \
         create table legacy.users (id int primary key); insert into legacy.users values (1), (2)",
    )
    .unwrap();
    let scratch = Scratch::new("realm-drop");
    let task = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key);\n",
        ),
        lint_policy(),
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::LintPolicyError);
    assert!(
        ran.result
            .message
            .lines()
            .any(|l| l == "- DROP SCHEMA legacy"),
        "{}",
        ran.result.message
    );
    assert_eq!(
        db.query("select count(*) from legacy.users")
            .unwrap()
            .trim(),
        "2"
    );
}

/// The same on an HCL desired schema that moves the table into `schema "app"`: `public` is
/// dropped with its rows unless the lint refuses.
#[test]
fn moving_a_table_to_another_schema_in_hcl_is_refused_on_a_realm_url() {
    let db = TestDatabase::create(Engine::Postgres, "schema_realm_move").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_realm_move_dev").unwrap();
    db.query("create table users (id int primary key); insert into users values (1), (2), (3)")
        .unwrap();
    let scratch = Scratch::new("realm-move");
    let hcl = "schema \"app\" {}\ntable \"users\" {\n  schema = schema.app\n  column \"id\" {\n    type = int\n  }\n  primary_key {\n    columns = [column.id]\n  }\n}\n";
    let task = task(&desired(&scratch, "schema.hcl", hcl), lint_policy());
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::LintPolicyError);
    assert!(
        ran.result
            .message
            .lines()
            .any(|l| l == "- DROP SCHEMA public"),
        "{}",
        ran.result.message
    );
    assert_eq!(
        db.query("select count(*) from public.users")
            .unwrap()
            .trim(),
        "3"
    );
}

/// A MariaDB URL with a database is bound to that one schema: it and the dev database's are
/// paired whatever their names, so a safe change applies and a dropped column is still refused.
#[test]
fn a_schema_bound_url_pairs_the_target_with_the_dev_database() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_bound").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_bound_dev").unwrap();
    assert_ne!(db.name, dev.name);
    db.query(
        "create table users (id int primary key, bio text); insert into users values (1, 'x')",
    )
    .unwrap();
    let scratch = Scratch::new("bound");
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
    ];
    let safe = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key, bio text, name text);\n",
        ),
        lint_policy(),
    );
    let ran = run_runner(&safe, &env, &scratch);
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(ran.result.outcome, Outcome::Applied);
    assert_eq!(describe(&db, "users"), ["id", "bio", "name"]);
    let drop = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key, name text);\n",
        ),
        lint_policy(),
    );
    let ran = run_runner(&drop, &env, &scratch);
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::LintPolicyError);
    assert!(
        ran.result
            .message
            .lines()
            .any(|l| l == format!("- ALTER TABLE {}.users DROP COLUMN bio", db.name)),
        "{}",
        ran.result.message
    );
    assert_eq!(describe(&db, "users"), ["id", "bio", "name"]);
}

/// The same through a custom config that names the URL itself: the runner does not know the
/// URL, and asks Atlas whether it is bound to one schema.
#[test]
fn a_schema_bound_url_in_a_custom_config_pairs_the_target_with_the_dev_database() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_bound_custom").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_bound_custom_dev").unwrap();
    db.query("create table users (id int primary key)").unwrap();
    let scratch = Scratch::new("bound-custom");
    let mut task = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key, name text);\n",
        ),
        lint_policy(),
    );
    task.target = Target::FromConfig;
    task.custom_config_env = Some("CUSTOM_CONFIG".into());
    let custom = hcl::to_string(
        &hcl::Body::builder()
            .add_block(
                hcl::Block::builder("env")
                    .add_label("k8s")
                    .add_attribute(("url", db.url.as_str()))
                    .build(),
            )
            .build(),
    )
    .unwrap();
    let ran = run_runner(
        &task,
        &[("CUSTOM_CONFIG", &custom), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    assert_eq!(describe(&db, "users"), ["id", "name"]);
}

/// A custom config's own `diff { skip { drop_table = true } }`: Atlas leaves the drop out of
/// the plan, so the lint must not refuse it.
#[test]
fn the_lint_honours_a_skip_set_in_the_custom_config() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_custom_skip").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_custom_skip_dev").unwrap();
    db.query("create table users (id int primary key); create table old_logs (id int)")
        .unwrap();
    let scratch = Scratch::new("custom-skip");
    let mut task = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key, name text);\n",
        ),
        lint_policy(),
    );
    task.custom_config_env = Some("CUSTOM_CONFIG".into());
    let custom = hcl::to_string(
        &hcl::Body::builder()
            .add_block(
                hcl::Block::builder("env")
                    .add_label("k8s")
                    .add_block(
                        hcl::Block::builder("diff")
                            .add_block(
                                hcl::Block::builder("skip")
                                    .add_attribute(("drop_table", true))
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build(),
    )
    .unwrap();
    let ran = run_runner(
        &task,
        &[
            ("DATABASE_URL", &db.url),
            ("DEV_URL", &dev.url),
            ("CUSTOM_CONFIG", &custom),
        ],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_OK, "{}", ran.result.message);
    assert_eq!(db.query("show tables").unwrap().trim(), "old_logs\nusers");
    assert_eq!(describe(&db, "users"), ["id", "name"]);
}

/// `exclude: ["ignore_me"]` on a PostgreSQL URL without `search_path` names a schema, not the
/// table `public.ignore_me`, which a desired schema without it would drop: refused, naming the
/// pattern that means the table.
#[test]
fn an_unqualified_exclude_on_a_realm_url_is_refused() {
    let db = TestDatabase::create(Engine::Postgres, "schema_realm_exclude").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_realm_exclude_dev").unwrap();
    db.query(
        "create table users (id int primary key); create table ignore_me (id int); \
         insert into ignore_me values (1)",
    )
    .unwrap();
    let scratch = Scratch::new("realm-exclude");
    let task = task(
        &desired(
            &scratch,
            "schema.sql",
            "create table users (id int primary key, name text);\n",
        ),
        SchemaApply {
            exclude: vec!["ignore_me".into()],
            ..SchemaApply::default()
        },
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::ReadSchema);
    assert!(
        ran.result.message.contains("`public.ignore_me`"),
        "{}",
        ran.result.message
    );
    assert_eq!(
        db.query("select count(*) from ignore_me").unwrap().trim(),
        "1"
    );
    let name = db
        .query("select count(*) from information_schema.columns where table_name = 'users' and column_name = 'name'")
        .unwrap();
    assert_eq!(name.trim(), "0");
}

/// Desired: `a` gains a column (runs), `b` a unique index its rows break (fails).
const TWO_STATEMENTS: &str = "create table a (id int primary key, y int);\n\
    create table b (id int primary key, x int);\ncreate unique index ux on b (x);\n";
const TWO_TABLES: &str = "create table a (id int primary key); \
    create table b (id int primary key, x int); insert into b values (1, 1), (2, 1)";

/// MariaDB commits each DDL statement: when the second fails, the first stays, and the status
/// says exactly which ran and which did not.
#[test]
fn a_failed_second_statement_on_mariadb_leaves_the_first_applied_and_says_so() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_partial").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_partial_dev").unwrap();
    db.query(TWO_TABLES).unwrap();
    let scratch = Scratch::new("partial");
    let task = task(
        &desired(&scratch, "schema.sql", TWO_STATEMENTS),
        SchemaApply::default(),
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::ApplyingSchema);
    let message = &ran.result.message;
    assert!(
        message.contains("(1 statements applied, 1 not: "),
        "{message}"
    );
    assert!(
        message.contains("applied:\n- ALTER TABLE `a` ADD COLUMN `y`"),
        "{message}"
    );
    assert!(
        message.contains("not applied:\n- ALTER TABLE `b` ADD UNIQUE INDEX `ux`"),
        "{message}"
    );
    assert_eq!(ran.result.statements_applied, 1);
    assert!(ran.stdout.contains("-> ALTER TABLE `a`"), "{}", ran.stdout);
    assert_eq!(describe(&db, "a"), ["id", "y"]);
}

/// PostgreSQL rolls the plan's transaction back: nothing stays, and neither the status nor the
/// log says a statement was applied.
#[test]
fn a_failed_second_statement_on_postgres_is_rolled_back_and_said_so() {
    let db = TestDatabase::create(Engine::Postgres, "schema_rollback").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_rollback_dev").unwrap();
    db.query(TWO_TABLES).unwrap();
    let scratch = Scratch::new("rollback");
    let task = task(
        &desired(&scratch, "schema.sql", TWO_STATEMENTS),
        SchemaApply::default(),
    );
    let ran = run_runner(
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::ApplyingSchema);
    let message = &ran.result.message;
    assert!(
        message.contains("(0 statements applied, 2 not): the transaction was rolled back"),
        "{message}"
    );
    assert_eq!(ran.result.statements_applied, 0);
    assert!(!ran.stdout.contains("-> ALTER TABLE"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("-> rolled back: ALTER TABLE"),
        "{}",
        ran.stdout
    );
    let y = db
        .query("select count(*) from information_schema.columns where table_name = 'a' and column_name = 'y'")
        .unwrap();
    assert_eq!(y.trim(), "0");
}

/// The objects of the dev database, one line each, as the test reads them with its own client.
fn dev_inventory(dev: &TestDatabase) -> String {
    let sql = match dev.engine {
        Engine::Postgres => {
            "select 'schema ' || nspname from pg_namespace
               where nspname not like 'pg\\_%' and nspname <> 'information_schema'
             union all
             select c.relkind::text || ' ' || n.nspname || '.' || c.relname
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
             union all
             select 'function ' || n.nspname || '.' || p.proname
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname not in ('pg_catalog', 'information_schema')
             union all
             select 'type ' || n.nspname || '.' || t.typname
               from pg_type t join pg_namespace n on n.oid = t.typnamespace
               where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
             order by 1"
        }
        Engine::MariaDb => {
            "select concat(table_type, ' ', table_name) from information_schema.tables
               where table_schema = database()
             union all
             select concat(routine_type, ' ', routine_name) from information_schema.routines
               where routine_schema = database()
             union all
             select concat('TRIGGER ', trigger_name) from information_schema.triggers
               where trigger_schema = database()
             order by 1"
        }
    };
    dev.query(sql).unwrap()
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names
}

/// Issue 17, items 4 and 5, on MariaDB: the lint loads the desired schema into the dev database
/// and v0.13.1 leaves its view there, so the apply (and every later run on a long-lived dev
/// database) failed with "already exists". The runner leaves the dev database as it found it,
/// run after run, and names the view when the target still lacks it after the apply.
#[test]
fn a_view_leaves_the_mariadb_dev_database_as_found_and_is_named_when_not_applied() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_view").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_view_dev").unwrap();
    db.query(
        "create table users (id int primary key, name varchar(50) not null, active int not null);
         insert into users values (1, 'ann', 1), (2, 'bob', 0), (3, 'cy', 1)",
    )
    .unwrap();
    let scratch = Scratch::new("view");
    let path = desired(
        &scratch,
        "schema.sql",
        "create table users (id int primary key, name varchar(50) not null, active int not null);\n\
         create view active_users as select id, name from users where active = 1;\n\
         create trigger users_trim before insert on users for each row set new.name = trim(new.name);\n",
    );
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
    ];
    let found = dev_inventory(&dev);
    // Twice under the lint, then once without: the dev database lives on across runs.
    for (run, options) in [lint_policy(), lint_policy(), SchemaApply::default()]
        .into_iter()
        .enumerate()
    {
        let ran = run_runner(&task(&path, options), &env, &scratch);
        assert_eq!(
            ran.code, EXIT_OK,
            "run {run}: {}\n{}",
            ran.result.message, ran.stdout
        );
        assert_eq!(ran.result.reason, Reason::Applied);
        assert_eq!(dev_inventory(&dev), found, "run {run}: {}", ran.stdout);
        assert_eq!(db.query("select count(*) from users").unwrap().trim(), "3");
        // What the target holds decides, not the Atlas version: a build that manages views
        // created it, and names nothing.
        let has_view = db
            .query(
                "select count(*) from information_schema.views \
                 where table_schema = database() and table_name = 'active_users'",
            )
            .unwrap()
            .trim()
            == "1";
        let has_trigger = db
            .query(
                "select count(*) from information_schema.triggers \
                 where trigger_schema = database() and trigger_name = 'users_trim'",
            )
            .unwrap()
            .trim()
            == "1";
        let mut expected = Vec::new();
        if !has_view {
            expected.push(format!("view {}.active_users", db.name));
        }
        if !has_trigger {
            expected.push(format!("trigger {}.users_trim on users", db.name));
        }
        assert_eq!(
            sorted(&ran.result.unmanaged),
            sorted(&expected),
            "run {run}: {}",
            ran.stdout
        );
        if !expected.is_empty() {
            assert!(
                ran.result
                    .message
                    .contains(&format!("does not manage {} object(s)", expected.len()))
                    && expected
                        .iter()
                        .all(|name| ran.result.message.contains(name.as_str())),
                "run {run}: {}",
                ran.result.message
            );
        }
    }
}

/// The same on PostgreSQL with a sequence, a function and a view (v0.13.1 left the sequence
/// and the function in the dev database): applied three times on one dev database, which is
/// left as found each time; what the target lacks afterwards is named.
#[test]
fn a_sequence_function_and_view_leave_the_postgres_dev_database_as_found() {
    sequence_function_and_view_on_postgres("");
}

/// The same with both URLs bound to one schema (`search_path`): the runner loads the desired
/// schema into that schema, as Atlas does.
#[test]
fn a_sequence_function_and_view_leave_a_schema_bound_postgres_dev_database_as_found() {
    sequence_function_and_view_on_postgres("&search_path=public");
}

fn sequence_function_and_view_on_postgres(bound: &str) {
    let db = TestDatabase::create(Engine::Postgres, "schema_objects").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_objects_dev").unwrap();
    let (db_url, dev_url) = (format!("{}{bound}", db.url), format!("{}{bound}", dev.url));
    db.query(
        "create table orders (id int primary key, amount int not null);
         insert into orders values (1, 50), (2, 150), (3, 300)",
    )
    .unwrap();
    let scratch = Scratch::new("objects");
    let path = desired(
        &scratch,
        "schema.sql",
        "create table orders (id int primary key, amount int not null, note text);\n\
         create sequence invoice_numbers start 1000;\n\
         create function order_total(min_amount integer) returns bigint language sql as \
         $$ select coalesce(sum(amount), 0) from orders where amount >= min_amount $$;\n\
         create view big_orders as select id, amount from orders where amount >= 100;\n",
    );
    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("DEV_URL", dev_url.as_str()),
    ];
    let found = dev_inventory(&dev);
    for (run, options) in [lint_policy(), lint_policy(), SchemaApply::default()]
        .into_iter()
        .enumerate()
    {
        let ran = run_runner(&task(&path, options), &env, &scratch);
        assert_eq!(
            ran.code, EXIT_OK,
            "run {run}: {}\n{}",
            ran.result.message, ran.stdout
        );
        assert_eq!(
            ran.result.outcome,
            if run == 0 {
                Outcome::Applied
            } else {
                Outcome::NoOp
            },
            "run {run}: {}",
            ran.result.message
        );
        assert_eq!(dev_inventory(&dev), found, "run {run}: {}", ran.stdout);
        assert_eq!(
            db.query("select count(*), sum(amount) from orders")
                .unwrap()
                .trim(),
            "3\t500"
        );
        let has = |sql: &str| db.query(sql).unwrap().trim() == "1";
        let mut expected = Vec::new();
        if !has("select count(*) from pg_class where relkind = 'S' and relname = 'invoice_numbers'")
        {
            expected.push("sequence public.invoice_numbers".to_string());
        }
        if !has("select count(*) from pg_proc where proname = 'order_total'") {
            expected.push("function public.order_total(min_amount integer)".to_string());
        }
        if !has("select count(*) from pg_views where viewname = 'big_orders'") {
            expected.push("view public.big_orders".to_string());
        }
        assert_eq!(
            sorted(&ran.result.unmanaged),
            sorted(&expected),
            "run {run}: {}",
            ran.stdout
        );
    }
}

/// A dev URL the runner's own client does not follow (here a MySQL parameter it does not know)
/// is Atlas's alone: the apply goes on as before, and the log says the dev database was not
/// checked.
#[test]
fn a_dev_database_the_runner_cannot_open_itself_is_said_and_the_apply_goes_on() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_devopaque").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_devopaque_dev").unwrap();
    db.query("create table users (id int primary key); insert into users values (1), (2)")
        .unwrap();
    let scratch = Scratch::new("devopaque");
    let path = desired(
        &scratch,
        "schema.sql",
        "create table users (id int primary key, name text);\n",
    );
    let dev_url = format!("{}?multiStatements=true", dev.url);
    let ran = run_runner(
        &task(&path, lint_policy()),
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("DEV_URL", dev_url.as_str()),
        ],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    assert!(
        ran.stdout
            .contains("the runner could not check the dev database itself"),
        "{}",
        ran.stdout
    );
    assert!(ran.result.unmanaged.is_empty());
    assert_eq!(describe(&db, "users"), ["id", "name"]);
    assert_eq!(db.query("select count(*) from users").unwrap().trim(), "2");
}

/// A dev URL that is the target's own database: what the apply creates is new there too, and
/// the runner must not take it for the dev database's leftovers.
#[test]
fn a_dev_database_that_is_the_target_keeps_what_was_applied() {
    let db = TestDatabase::create(Engine::Postgres, "schema_devistarget").unwrap();
    let scratch = Scratch::new("devistarget");
    let path = desired(
        &scratch,
        "schema.sql",
        "create table users (id int primary key, name text);\n",
    );
    let ran = run_runner(
        &task(&path, SchemaApply::default()),
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("DEV_URL", db.url.as_str()),
        ],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_OK, "{}\n{}", ran.result.message, ran.stdout);
    assert!(
        ran.stdout.contains("the dev database may hold the target"),
        "{}",
        ran.stdout
    );
    db.query("insert into users values (1, 'ann')").unwrap();
    assert_eq!(db.query("select count(*) from users").unwrap().trim(), "1");
}

fn data_depend_policy() -> SchemaApply {
    SchemaApply {
        lint_data_depend: true,
        ..SchemaApply::default()
    }
}

/// Changes that lose data without dropping anything: each is refused under
/// `policy.lint.dataDepend.error`, with one line each in the destructive lint's shape, and
/// the table and its rows stay as they were. Without the policy, MariaDB applies all of them
/// and the rows come back cut, rounded, without their time and with a 0 nobody wrote.
#[test]
fn data_losing_changes_under_the_data_depend_policy_apply_nothing_on_mariadb() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_datadep").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_datadep_dev").unwrap();
    db.query(
        "create table orders (id int primary key, code varchar(255), total decimal(12,4), \
         placed datetime, size enum('s', 'm', 'l'), qty bigint); \
         insert into orders values (1, 'a-very-long-order-code', 1234.5678, \
         '2024-05-06 07:08:09', 'l', 9000000000), (2, 'b', 1, '2024-01-01 00:00:00', 's', 1)",
    )
    .unwrap();
    let rows = "select * from orders order by id";
    let before = db.query(rows).unwrap();
    let scratch = Scratch::new("datadep-maria");
    let desired_sql = "create table orders (id int primary key, code varchar(10), \
                       total decimal(8,2), placed date, size enum('s', 'm'), qty int, \
                       batch int not null);\n";
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
    ];
    let task_file = desired(&scratch, "schema.sql", desired_sql);
    let ran = run_runner(&task(&task_file, data_depend_policy()), &env, &scratch);
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::LintPolicyError);
    let message = &ran.result.message;
    assert!(
        message.starts_with("data dependent changes detected:\n- "),
        "{message}"
    );
    let table = format!("ALTER TABLE {}.orders", db.name);
    for change in [
        "ALTER COLUMN code TYPE varchar(10) (was varchar(255)): narrows the length",
        "ALTER COLUMN total TYPE decimal(8, 2) (was decimal(12, 4)): narrows the scale",
        "ALTER COLUMN placed TYPE date (was datetime): drops the time of day",
        "ALTER COLUMN size TYPE enum(\"s\", \"m\") (was enum(\"s\", \"m\", \"l\")): removes enum \
         values 'l'",
        "ALTER COLUMN qty TYPE int (was bigint): narrows the integer range",
        "ADD COLUMN batch NOT NULL without a default",
    ] {
        let line = format!("- {table} {change}");
        assert!(
            message.lines().any(|l| l.starts_with(&line)),
            "no line starts with {line:?}:\n{message}"
        );
    }
    assert!(
        message.ends_with("nothing was applied: spec.policy.lint.dataDepend.error is true (set it to false for this change, or change the data and the desired schema in steps)"),
        "{message}"
    );
    assert_eq!(db.query(rows).unwrap(), before);
    assert_eq!(
        describe(&db, "orders"),
        ["id", "code", "total", "placed", "size", "qty"]
    );
}

/// The same on PostgreSQL, whose inspection names the types otherwise (`character_varying`,
/// `numeric`, an enum type of its own), with a unique index over a column holding duplicates
/// and `NOT NULL` set on one holding NULL.
#[test]
fn data_losing_changes_under_the_data_depend_policy_apply_nothing_on_postgres() {
    let db = TestDatabase::create(Engine::Postgres, "schema_datadep_pg").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "schema_datadep_pg_dev").unwrap();
    db.query(
        "create type size as enum ('s', 'm', 'l'); \
         create table orders (id int primary key, code varchar(255), total numeric(12,4), \
         placed timestamp, size size, email text, note text); \
         insert into orders values (1, 'a-very-long-order-code', 1234.5678, \
         '2024-05-06 07:08:09', 'l', 'a@example.com', null), \
         (2, 'b', 1, '2024-01-01', 's', 'a@example.com', 'x')",
    )
    .unwrap();
    let rows = "select * from orders order by id";
    let before = db.query(rows).unwrap();
    let scratch = Scratch::new("datadep-pg");
    let desired_sql = "create type size as enum ('s', 'm');\n\
                       create table orders (id int primary key, code varchar(10), \
                       total numeric(8,2), placed date, size size, email text unique, \
                       note text not null);\n";
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DEV_URL", dev.url.as_str()),
    ];
    let task_file = desired(&scratch, "schema.sql", desired_sql);
    let ran = run_runner(&task(&task_file, data_depend_policy()), &env, &scratch);
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::LintPolicyError);
    let message = &ran.result.message;
    assert!(
        message.starts_with("data dependent changes detected:\n- "),
        "{message}"
    );
    for change in [
        "ALTER COLUMN code TYPE",
        "ALTER COLUMN total TYPE numeric(8, 2) (was numeric(12, 4)): narrows the scale",
        "ALTER COLUMN placed TYPE date",
        "ALTER COLUMN size TYPE enum.size (was enum.size): removes enum values 'l'",
        "ADD UNIQUE (email): rows holding duplicates are refused",
        "ALTER COLUMN note SET NOT NULL",
    ] {
        let line = format!("- ALTER TABLE public.orders {change}");
        assert!(
            message.lines().any(|l| l.starts_with(&line)),
            "no line starts with {line:?}:\n{message}"
        );
    }
    assert!(
        message.contains("nothing was applied: spec.policy.lint.dataDepend.error is true"),
        "{message}"
    );
    assert_eq!(db.query(rows).unwrap(), before);
    assert_eq!(
        db.query("select enum_range(null::size)").unwrap().trim(),
        "{s,m,l}"
    );
}

/// Both policies on: one refusal names the drops and the data-dependent changes, each under
/// its own header, and both policies.
#[test]
fn both_lint_policies_refuse_in_one_message() {
    let db = TestDatabase::create(Engine::MariaDb, "schema_both_lints").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "schema_both_lints_dev").unwrap();
    db.query(
        "create table users (id int primary key, name varchar(100), bio text); \
         insert into users values (1, 'ann', 'x')",
    )
    .unwrap();
    let scratch = Scratch::new("both-lints");
    let options = SchemaApply {
        lint_destructive: true,
        lint_data_depend: true,
        ..SchemaApply::default()
    };
    let file = desired(
        &scratch,
        "schema.sql",
        "create table users (id int primary key, name varchar(5));\n",
    );
    let ran = run_runner(
        &task(&file, options),
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch,
    );
    assert_eq!(ran.code, EXIT_DEFINITIVE, "{}", ran.result.message);
    assert_eq!(ran.result.reason, Reason::LintPolicyError);
    let message = &ran.result.message;
    assert!(
        message.starts_with(&format!(
            "destructive changes detected:\n- ALTER TABLE {}.users DROP COLUMN bio\n\
             data dependent changes detected:\n- ALTER TABLE {}.users ALTER COLUMN name TYPE \
             varchar(5)",
            db.name, db.name
        )),
        "{message}"
    );
    assert!(
        message.contains(
            "nothing was applied: spec.policy.lint.destructive.error is true; \
             spec.policy.lint.dataDepend.error is true"
        ),
        "{message}"
    );
    assert_eq!(describe(&db, "users"), ["id", "name", "bio"]);
}
