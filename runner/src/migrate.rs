//! `runner migrate`: `atlas migrate apply` of the mounted directory.
//!
//! First `atlas migrate status`, to refuse a protected "migrate down" (the database is at a newer
//! version than the directory's latest) before anything runs; then `atlas migrate apply` with
//! JSON output, read into versions, counts and, on failure, the file and statement that failed.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::atlas::URL_ENV;
use crate::classify::{self, Failure};
use crate::config;
use crate::inputs::{self, WorkDir};
use crate::run::Run;
use crate::target;
use contract::Reason;
use contract::{ExecOrder, Kind, MigrateApply, Outcome, RunResult, Task};

/// How long the reachability check waits for the database's TCP port.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// `atlas migrate status --format '{{ json . }}'`, the parts we read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    #[serde(default)]
    pub available: Vec<File>,
    #[serde(default)]
    pub pending: Vec<File>,
    #[serde(default)]
    pub applied: Vec<Revision>,
    #[serde(default)]
    pub current: String,
    /// Files older than the database's version that it has not applied (Atlas 1.x lists them;
    /// v0.13.1 does not, and [`out_of_order`] finds them itself).
    #[serde(default)]
    pub out_of_order: Vec<File>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct File {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Revision {
    #[serde(default)]
    pub version: String,
    /// Statements of the file that ran, of `total`.
    #[serde(default)]
    pub applied: u32,
    #[serde(default)]
    pub total: u32,
    #[serde(default)]
    pub error: String,
}

impl Revision {
    /// Whether the file went through whole: a file that failed half-way on a database that does
    /// not roll DDL back (MySQL, MariaDB) leaves a revision with its error.
    fn is_complete(&self) -> bool {
        self.error.is_empty() && self.applied >= self.total
    }
}

/// `atlas migrate apply --format '{{ json . }}'`, the parts we read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Apply {
    #[serde(default)]
    pending: Vec<File>,
    #[serde(default)]
    applied: Vec<AppliedFile>,
    #[serde(default)]
    current: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    error: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AppliedFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    /// Statements an earlier, failed attempt already ran (Atlas resumes after them).
    #[serde(default)]
    skipped: usize,
    #[serde(default)]
    applied: Vec<String>,
    #[serde(default)]
    error: Option<StatementError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StatementError {
    #[serde(default)]
    stmt: String,
    #[serde(default)]
    text: String,
}

/// Version strings compare by length first: Atlas versions are digits of any length.
fn version_key(version: &str) -> (usize, &str) {
    (version.len(), version)
}

/// The newest version the database has applied whole, per `migrate status` (a file that
/// failed half-way is not applied, whatever its revision says).
fn database_version(status: &Status) -> Option<&str> {
    status
        .applied
        .iter()
        .filter(|r| r.is_complete())
        .map(|r| r.version.as_str())
        .max_by_key(|v| version_key(v))
}

pub fn run(task: &Task, options: &MigrateApply, run: &mut Run) -> RunResult {
    // Decided by what the binary offers, never by its version's text.
    if let Some(order) = options.exec_order.filter(|o| *o != ExecOrder::Linear)
        && !run.atlas.offers_flag(&["migrate", "apply"], "--exec-order")
    {
        return run.failed(
            Reason::Migrating,
            &format!(
                "execOrder {} needs an Atlas whose `migrate apply` has --exec-order (v0.14 and \
                 later); this runner's Atlas CLI ({}) has not: use execOrder linear",
                order.as_str(),
                run.atlas_version()
                    .as_deref()
                    .unwrap_or("of an unknown version")
            ),
            false,
        );
    }

    // The inputs, exactly as the controller hashed them.
    let files = match inputs::read_dir(Path::new(&options.dir)) {
        Ok(files) => files,
        Err(err) => return run.failed(Reason::ReadingMigrationData, &err.to_string(), false),
    };
    if let Err(err) = inputs::verify(&files, &task.inputs_digest) {
        return run.failed(Reason::ReadingMigrationData, &err.to_string(), false);
    }
    let work = match WorkDir::create(&run.tmp) {
        Ok(work) => work,
        Err(err) => return run.failed(Reason::ReadingMigrationData, &err.to_string(), true),
    };
    // `migrations/` in Atlas's working directory, where upstream's template directories
    // (`data "template_dir" { path = "migrations" }`) look for it.
    let dir = work.path().join("migrations");
    if let Err(err) = inputs::write_copy(&dir, &files) {
        return run.failed(Reason::ReadingMigrationData, &err.to_string(), true);
    }
    run.atlas.work_in(work.path());
    run.log(&format!(
        "migration directory: {} files from {}",
        files.len(),
        options.dir
    ));

    let url = match target::url(&task.target, &mut run.redactor) {
        Ok(url) => url,
        Err(err) => return run.failed(Reason::ReadingMigrationData, &err.to_string(), false),
    };
    // A URL the project file names is Atlas's to reach: its error says which host failed.
    if let Some(url) = url.as_deref()
        && let Err(err) = target::check_reachable(url, CONNECT_LIMIT)
    {
        return run.failed(Reason::Migrating, &err.to_string(), true);
    }
    let generated_url = url.is_some();
    let url_scheme = url
        .as_deref()
        .and_then(|url| url.split_once("://"))
        .map(|(scheme, _)| scheme.to_string());
    if let Some(url) = url {
        run.atlas.env(URL_ENV, url);
    }

    let config_path = work.path().join("atlas.hcl");
    let body = config::migration(
        &task.env_name,
        &format!("file://{}", dir.display()),
        generated_url,
        options,
    );
    let text = match crate::custom::project_file(task, body, run) {
        Ok(text) => text,
        Err(err) => return run.failed(Reason::ReadingMigrationData, &err, false),
    };
    if let Err(err) = std::fs::write(&config_path, text) {
        return run.failed(Reason::ReadingMigrationData, &err.to_string(), true);
    }
    let config_url = format!("file://{}", config_path.display());
    let base = [
        "--env",
        task.env_name.as_str(),
        "--config",
        config_url.as_str(),
    ];

    // 1. Where the database is, before anything runs.
    let mut args = vec!["migrate", "status"];
    args.extend(base);
    args.extend(["--format", "{{ json . }}"]);
    let status = match run.atlas.run(&args) {
        Ok(output) if output.success => {
            match serde_json::from_str::<Status>(output.stdout.trim()) {
                Ok(status) => status,
                Err(err) => {
                    return run.failed(
                        Reason::Migrating,
                        &format!("reading `atlas migrate status`: {err}"),
                        false,
                    );
                }
            }
        }
        Ok(output) => return atlas_failure(run, &output.error_text(), &files),
        Err(err) => return run.failed(Reason::Migrating, &err.to_string(), err.is_transient()),
    };
    let versions: Vec<&str> = files
        .iter()
        .filter_map(|(name, _)| file_version(name))
        .collect();
    if let Some(refused) = refuse_migrate_down(run, &status, &versions, options) {
        return refused;
    }
    let late = out_of_order(&status, &files, options);
    if !late.is_empty() {
        if options.exec_order == Some(ExecOrder::LinearSkip) {
            run.log(&format!(
                "execOrder linear-skip: skipping {}, added out of order",
                late.join(", ")
            ));
        } else {
            let current = database_version(&status).unwrap_or_default();
            let message = format!(
                "migration file {} was added out of order: the database is at version {current}, \
                 newer than that file, which it has not applied; nothing was applied. Renumber \
                 the file after {current} (and rehash the directory), or set execOrder: \
                 non-linear to apply it anyway (linear-skip to leave it out)",
                late.join(", ")
            );
            let mut result = run.failed(Reason::Migrating, &message, false);
            result.current_version = Some(current.to_string());
            return result;
        }
    }

    // 2. The apply.
    let mut args = vec!["migrate", "apply"];
    args.extend(base);
    args.extend(["--format", "{{ json . }}"]);
    if let Some(tx_mode) = &options.tx_mode {
        args.extend(["--tx-mode", tx_mode.as_str()]);
    }
    // Only an Atlas that has the flag gets here with another order (checked above).
    if let Some(order) = options.exec_order.filter(|o| *o != ExecOrder::Linear) {
        args.extend(["--exec-order", order.as_str()]);
    }
    let output = match run.atlas.run(&args) {
        Ok(output) => output,
        Err(err) => return run.failed(Reason::Migrating, &err.to_string(), err.is_transient()),
    };
    let Ok(apply) = serde_json::from_str::<Apply>(output.stdout.trim()) else {
        // Early failures (checksum, lock, connection) print plain text and no JSON.
        return atlas_failure(run, &output.error_text(), &files);
    };
    // PostgreSQL and SQLite roll a failed file's DDL back (unless told not to use transactions);
    // MySQL and MariaDB cannot. Unknown (a URL in the project file): said with "may".
    let rolls_back = url_scheme.as_deref().map(|scheme| {
        matches!(
            target::server_driver(&format!("{scheme}://")),
            Some("postgres")
        ) || scheme.starts_with("sqlite")
    });
    let rolls_back = rolls_back.map(|r| r && options.tx_mode != Some(contract::TxMode::None));
    report(
        run,
        apply,
        output.success,
        database_version(&status),
        rolls_back,
    )
}

/// A migration file's version: its name up to the first `_` (or `.sql`), as Atlas reads it.
fn file_version(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".sql")?;
    let version = stem.split('_').next().unwrap_or(stem);
    (!version.is_empty()).then_some(version)
}

/// The directory's files the database skipped: older than its version, not in its revisions,
/// and not before the baseline (which stands in for them). With execOrder non-linear Atlas
/// applies them, so they are no problem.
fn out_of_order(
    status: &Status,
    files: &[(String, Vec<u8>)],
    options: &MigrateApply,
) -> Vec<String> {
    if options.exec_order == Some(ExecOrder::NonLinear) {
        return Vec::new();
    }
    let mut late: Vec<String> = status.out_of_order.iter().map(|f| f.name.clone()).collect();
    let Some(current) = database_version(status) else {
        return late;
    };
    let baseline = options.baseline.as_deref().map(version_key);
    for (name, _) in files {
        let Some(version) = file_version(name) else {
            continue;
        };
        let skipped = version_key(version) < version_key(current)
            && baseline.is_none_or(|baseline| version_key(version) > baseline)
            && !status.applied.iter().any(|r| r.version == version);
        if skipped && !late.contains(name) {
            late.push(name.clone());
        }
    }
    late
}

/// A database newer than the directory is a "migrate down": refused unless allowed, and then
/// refused anyway when this Atlas build cannot do it. `versions`: the directory's files'.
fn refuse_migrate_down(
    run: &Run,
    status: &Status,
    versions: &[&str],
    options: &MigrateApply,
) -> Option<RunResult> {
    let current = database_version(status)?;
    let latest = versions
        .iter()
        .copied()
        .max_by_key(|v| version_key(v))
        .unwrap_or("");
    if version_key(current) <= version_key(latest) {
        return None;
    }
    let message = if options.allow_migrate_down {
        format!(
            "the database is at version {current}, newer than the directory's latest {latest}: \
             migrating down is allowed, but this runner's Atlas CLI ({}, community build) has no \
             `migrate down`; restore the newer files or migrate down by hand",
            run.atlas_version().as_deref().unwrap_or("unknown version")
        )
    } else {
        // Upstream's wording first, which scripts compare.
        format!(
            "migrate down is not allowed, set `migrateDown.allow` to true to allow downgrade: \
             the database is at version {current}, newer than the directory's latest {latest} \
             (spec.protectedFlows.migrateDown.allow)"
        )
    };
    let mut result = run.failed(Reason::ProtectedFlowError, &message, false);
    result.current_version = Some(current.to_string());
    result.target_version = Some(latest.to_string());
    Some(result)
}

/// `rolls_back`: whether the database rolls a failed file's statements back (None: unknown).
fn report(
    run: &Run,
    apply: Apply,
    success: bool,
    before: Option<&str>,
    rolls_back: Option<bool>,
) -> RunResult {
    for file in &apply.applied {
        run.log(&format!(
            "-- migrating version {} ({})",
            file.version, file.name
        ));
        for statement in &file.applied {
            run.log(&format!("   -> {}", statement.trim()));
        }
        if let Some(error) = &file.error {
            run.log(&format!("   !! {}", error.text));
        }
    }
    let statements: usize = apply
        .applied
        .iter()
        .map(|f| f.applied.len() - usize::from(f.error.is_some()))
        .sum();
    let complete: Vec<&AppliedFile> = apply.applied.iter().filter(|f| f.error.is_none()).collect();
    // The version the database is at now: the last file that went through whole.
    let now = complete
        .last()
        .map(|f| f.version.clone())
        .or_else(|| before.map(str::to_string))
        .or_else(|| Some(apply.current.clone()).filter(|c| !c.is_empty()));

    if success && apply.error.is_empty() {
        let outcome = if apply.pending.is_empty() {
            Outcome::NoOp
        } else {
            Outcome::Applied
        };
        let message = match outcome {
            Outcome::NoOp => format!(
                "no migration to apply: the database is at version {}",
                now.as_deref().unwrap_or("(none)")
            ),
            _ => format!(
                "migrated to version {} ({} files, {statements} statements)",
                now.as_deref().unwrap_or("?"),
                complete.len()
            ),
        };
        run.log(&message);
        let mut result = run.result(outcome, Reason::Applied, &message);
        result.current_version = now;
        result.target_version = Some(apply.target).filter(|t| !t.is_empty());
        result.files_applied = complete.len() as u32;
        result.statements_applied = statements as u32;
        return result;
    }

    let failed = apply.applied.iter().find(|f| f.error.is_some());
    // The JSON names the file and the statement that failed: a migration that failed, and the
    // database's own text of the error says whether another attempt can go differently (a lock
    // wait, a dropped connection). Without a file, the report's error is all there is.
    let (reason, transient) = match failed.and_then(|file| file.error.as_ref()) {
        Some(error) => (
            Reason::Migrating,
            classify::classify(Kind::Migration, &error.text).transient,
        ),
        None => {
            let verdict = classify::classify(Kind::Migration, &apply.error);
            (verdict.reason, verdict.transient)
        }
    };
    let message = match failed {
        Some(file) => {
            let error = file.error.as_ref().expect("found by its error");
            let mut message = format!(
                "migration file {} failed at statement `{}`: {}; the database is at version {}",
                file.name,
                error.stmt.trim(),
                error.text,
                now.as_deref().unwrap_or("(none)")
            );
            // The statements of the file that ran before the failing one, in this attempt or
            // an earlier one.
            let ran = file.skipped + file.applied.len().saturating_sub(1);
            if ran > 0 && rolls_back != Some(true) {
                let may = if rolls_back.is_none() { "may be" } else { "is" };
                message.push_str(&format!(
                    ", and {may} partially at version {} ({ran} of the file's statements ran \
                     before it): this database does not roll DDL back, so the same file will \
                     fail again until the file or the database is fixed (undo those statements \
                     by hand, or change the file to continue from them and rehash the directory)",
                    file.version
                ));
            }
            message
        }
        None => apply.error.clone(),
    };
    run.log(&message);
    let mut result = run.failed(reason, &message, transient);
    result.current_version = now;
    result.target_version = Some(apply.target).filter(|t| !t.is_empty());
    result.files_applied = complete.len() as u32;
    result.statements_applied = statements as u32;
    result
}

/// The directory's checksum file, which Atlas requires.
const SUM_FILE: &str = "atlas.sum";

/// An Atlas error with no JSON to read: Atlas prints none for what fails before its report
/// starts (checksum, lock, connection, a database that is not clean), so its text is classified.
fn atlas_failure(run: &Run, error: &str, files: &[(String, Vec<u8>)]) -> RunResult {
    run.log(error);
    let verdict = classify::classify(Kind::Migration, error);
    if verdict.failure == Failure::Checksum && !files.iter().any(|(name, _)| name == SUM_FILE) {
        return run.failed(
            verdict.reason,
            "atlas.sum is missing from the migration directory: Atlas applies only a hashed \
             directory; run `atlas migrate hash` and commit atlas.sum with the files (in the \
             ConfigMap too)",
            false,
        );
    }
    if verdict.failure == Failure::Checksum {
        let which = crate::sum::first_mismatch(files)
            .map(|file| format!(" (first file that does not match: {file})"))
            .unwrap_or_default();
        return run.failed(
            verdict.reason,
            &format!(
                "atlas.sum does not match the migration files{which}: a file was edited or added \
                 after the directory was hashed; run `atlas migrate hash` and commit atlas.sum"
            ),
            false,
        );
    }
    run.failed(verdict.reason, error, verdict.transient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<(String, Vec<u8>)> {
        names.iter().map(|n| (n.to_string(), Vec::new())).collect()
    }

    #[test]
    fn file_versions_are_atlas_s() {
        assert_eq!(file_version("20230316085611.sql"), Some("20230316085611"));
        assert_eq!(file_version("2_b.sql"), Some("2"));
        assert_eq!(file_version("atlas.sum"), None);
    }

    /// v0.13.1 says nothing of a skipped file: it is found from the revisions. Atlas 1.x's
    /// status names it under `OutOfOrder` (its JSON as it prints it).
    #[test]
    fn files_the_database_skipped_are_out_of_order_on_both_versions() {
        let old: Status = serde_json::from_str(
            r#"{"Available":[{"Name":"1_a.sql","Version":"1"},{"Name":"2_b.sql","Version":"2"},
                {"Name":"3_c.sql","Version":"3"}],"Pending":[],"Applied":[{"Version":"1"},
                {"Version":"3"}],"Current":"3","Status":"OK"}"#,
        )
        .unwrap();
        let dir = files(&["1_a.sql", "2_b.sql", "3_c.sql", "atlas.sum"]);
        let linear = MigrateApply::default();
        assert_eq!(out_of_order(&old, &dir, &linear), ["2_b.sql"]);
        let new: Status = serde_json::from_str(
            r#"{"Pending":[{"Name":"2_b.sql","Version":"2"}],"OutOfOrder":[{"Name":"2_b.sql",
                "Version":"2"}],"Applied":[{"Version":"1"},{"Version":"3"}],"Current":"3",
                "Status":"PENDING","Error":"migration file 2_b.sql was added out of order"}"#,
        )
        .unwrap();
        assert_eq!(out_of_order(&new, &dir, &linear), ["2_b.sql"]);
        let non_linear = MigrateApply {
            exec_order: Some(ExecOrder::NonLinear),
            ..MigrateApply::default()
        };
        assert!(out_of_order(&new, &dir, &non_linear).is_empty());
        // Files up to the baseline stand for the database's past: never out of order.
        let baselined = MigrateApply {
            baseline: Some("2".into()),
            ..MigrateApply::default()
        };
        assert!(out_of_order(&old, &dir, &baselined).is_empty());
    }
}
