//! `runner wait`: an application's init container waits for its migrations.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devcluster::db::{Engine, TestDatabase};
use devcluster::seed;

fn wait_command(dir: &std::path::Path, url: &str, seconds: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
    command
        .arg("wait")
        .arg("--dir")
        .arg(dir)
        .args(["--wait-seconds", &seconds.to_string()])
        .arg("--atlas")
        .arg(devcluster::tools::path("atlas").expect("run `cargo xtask tools` first"))
        .arg("--tmp")
        .arg(dir.parent().unwrap())
        .env("DATABASE_URL", url)
        .stdin(Stdio::null());
    command
}

#[test]
fn wait_ends_when_the_migrations_are_applied_and_gives_up_at_its_limit() {
    let db = TestDatabase::create(Engine::Postgres, "runner_wait").unwrap();
    let root = std::env::temp_dir().join(format!("runner-wait-{}", std::process::id()));
    let dir = root.join("migrations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(seed::MIGRATION_FILE), seed::MIGRATION_SQL).unwrap();
    std::fs::write(dir.join("atlas.sum"), seed::MIGRATION_SUM).unwrap();

    // Nothing applied: it gives up at its limit, naming what is missing.
    let started = Instant::now();
    let output = wait_command(&dir, &db.url, 3).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("20230316085611.sql"), "{stderr}");
    assert!(!stderr.contains(":pass@"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // Applied while it waits: it ends with 0.
    let mut waiting = wait_command(&dir, &db.url, 120)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut atlas = Command::new(devcluster::tools::path("atlas").unwrap());
    atlas
        .args(["migrate", "apply", "--url", &db.url, "--dir"])
        .arg(format!("file://{}", dir.display()))
        .env("ATLAS_NO_UPDATE_NOTIFIER", "1");
    assert!(atlas.status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = waiting.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "runner wait did not notice the migration"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success());
    let _ = std::fs::remove_dir_all(root);
}
