//! `runner migrate`: `atlas migrate apply` of the mounted directory.
//!
//! First the database's revisions (read by the runner itself, else `atlas migrate status`), to
//! refuse a protected "migrate down" (the database is at a newer version than the directory's
//! latest) or a file added out of order before anything runs; with the lint policy, the pending
//! files replayed on the dev database and refused if they drop something; then `atlas migrate
//! apply` with JSON output, read into versions, counts and, on failure, the file and statement
//! that failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::atlas::{DEV_URL_ENV, URL_ENV};
use crate::classify::{self, Failure};
use crate::config;
use crate::inputs::{self, WorkDir};
use crate::lint::{self, Catalog, Dialect, Realm, Skips};
use crate::revisions::{self, Revision, version_key};
use crate::run::Run;
use crate::target::{self, Scope};
use contract::Reason;
use contract::{ExecOrder, Kind, MigrateApply, Outcome, RunResult, Task};

/// How long the reachability check waits for the database's TCP port.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// How long the runner's own read of the revisions table may take (it takes milliseconds)
/// before `atlas migrate status` is asked instead.
const REVISIONS_LIMIT: Duration = Duration::from_secs(2);

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
    let generated_url = url.is_some();
    let url_scheme = url
        .as_deref()
        .and_then(|url| url.split_once("://"))
        .map(|(scheme, _)| scheme.to_string());
    let url_driver = url.as_deref().and_then(target::server_driver);
    let target_schema = url.as_deref().and_then(target::bound_schema);
    // The dev database `migrate down` and the lint of pending files work on: the resource's
    // (spec.devURL), the Job's sidecar, or for SQLite one in memory. Only those two reach it.
    let dev_url = match &task.dev_url_env {
        Some(name) => match target::dev_url(name, &mut run.redactor) {
            Ok(url) => Some(url),
            Err(err) => return run.failed(Reason::GettingDevDb, &err.to_string(), false),
        },
        None if url_scheme
            .as_deref()
            .is_some_and(|s| s.starts_with("sqlite")) =>
        {
            Some("sqlite://dev?mode=memory".to_string())
        }
        None => None,
    };
    // Where the runner reads the revisions table itself: a URL it generated (a project file's
    // may name another database, or move the table).
    let revisions_url = url.clone().filter(|_| task.custom_config_env.is_none());
    let target_url = url.clone();
    if let Some(url) = url {
        run.atlas.env(URL_ENV, url);
    }
    if let Some(dev_url) = &dev_url {
        run.atlas.env(DEV_URL_ENV, dev_url.clone());
    }

    let config_path = work.path().join("atlas.hcl");
    let body = config::migration(
        &task.env_name,
        &format!("file://{}", dir.display()),
        config::Generated {
            url: generated_url,
            dev: dev_url.is_some(),
        },
        options,
    );
    let mut project = match crate::custom::project_body(task, body, run) {
        Ok(project) => project,
        Err(err) => return run.failed(Reason::ReadingMigrationData, &err, false),
    };
    // Each check: the spec's policy, or the project file's own `lint { <check> { error = true } }`.
    let source = |policy: bool, check: &str| {
        if policy {
            Some(LintSource::Policy)
        } else if task.custom_config_env.is_some()
            && lint::lint_error_of_env(&project, &task.env_name, check)
        {
            Some(LintSource::ProjectFile)
        } else {
            None
        }
    };
    let checks = LintChecks {
        destructive: source(options.lint_destructive, "destructive"),
        data_depend: source(options.lint_data_depend, "data_depend"),
    };
    let replay = Replay {
        applied: work.path().join("lint-applied"),
        pending: work.path().join("lint-pending"),
    };
    if checks.any() {
        for (env, dir) in [
            (config::LINT_APPLIED_ENV, &replay.applied),
            (config::LINT_PENDING_ENV, &replay.pending),
        ] {
            let block = config::replay(env, &format!("file://{}", dir.display()));
            project.0.push(hcl::Structure::Block(block));
        }
    }
    let text = match hcl::to_string(&project) {
        Ok(text) => text,
        Err(err) => return run.failed(Reason::ReadingMigrationData, &err.to_string(), false),
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
    let status = match status(
        run,
        &base,
        target_url.as_deref(),
        revisions_url.as_deref(),
        options,
        &files,
    ) {
        Ok(status) => status,
        Err(result) => return *result,
    };
    let versions: Vec<&str> = files
        .iter()
        .filter_map(|(name, _)| file_version(name))
        .collect();
    if let Some((current, latest)) = ahead_of_directory(&status, &versions) {
        let down = Down {
            current,
            latest,
            dev_url: dev_url.as_deref(),
            url_driver,
            base: &base,
        };
        return migrate_down(run, task, options, down, &files);
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

    // 2. The lint of the pending files, when asked for: nothing reaches the target before it
    // passes.
    if checks.any() {
        let lint = Lint {
            checks,
            replay: &replay,
            dev_url: dev_url.as_deref(),
            url_driver,
            target_schema: target_schema.as_deref(),
            config_url: &config_url,
        };
        if let Some(refused) = lint_pending(run, task, options, &status, &files, &project, lint) {
            return refused;
        }
    }

    // 3. The apply.
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

/// The database's revisions: read from its table by the runner where it can (one Atlas start
/// per apply), else from `atlas migrate status` once the database's port is known to answer
/// (`target_url`, the URL the runner generated: one a project file names is Atlas's to reach, and
/// its error says which host failed).
fn status(
    run: &mut Run,
    base: &[&str],
    target_url: Option<&str>,
    url: Option<&str>,
    options: &MigrateApply,
    files: &[(String, Vec<u8>)],
) -> Result<Status, Box<RunResult>> {
    // A directory that fails its checksum is Atlas's to refuse, as `migrate status` does,
    // before any other check: so is one without atlas.sum, or one written otherwise than
    // `atlas migrate hash` writes it.
    let hashed = files
        .iter()
        .find(|(name, _)| name == SUM_FILE)
        .is_some_and(|(_, sum)| *sum == crate::sum::file(files).into_bytes());
    if let Some(url) = url.filter(|_| hashed) {
        match revisions::read(url, options.revisions_schema.as_deref(), REVISIONS_LIMIT) {
            Ok(applied) => {
                return Ok(Status {
                    applied,
                    ..Status::default()
                });
            }
            Err(why) => run.log(&format!("revisions read by `atlas migrate status` ({why})")),
        }
    }
    if let Some(url) = target_url
        && let Err(err) = target::check_reachable(url, CONNECT_LIMIT)
    {
        return Err(Box::new(run.failed(
            Reason::Migrating,
            &err.to_string(),
            true,
        )));
    }
    let mut args = vec!["migrate", "status"];
    args.extend(base);
    args.extend(["--format", "{{ json . }}"]);
    match run.atlas.run(&args) {
        Ok(output) if output.success => serde_json::from_str::<Status>(output.stdout.trim())
            .map_err(|err| {
                Box::new(run.failed(
                    Reason::Migrating,
                    &format!("reading `atlas migrate status`: {err}"),
                    false,
                ))
            }),
        Ok(output) => Err(Box::new(atlas_failure(run, &output.error_text(), files))),
        Err(err) => Err(Box::new(run.failed(
            Reason::Migrating,
            &err.to_string(),
            err.is_transient(),
        ))),
    }
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

/// The database's version and the directory's latest when the database is newer: a "migrate
/// down". `versions`: the directory's files'.
fn ahead_of_directory<'a>(status: &'a Status, versions: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let current = database_version(status)?;
    let latest = versions
        .iter()
        .copied()
        .max_by_key(|v| version_key(v))
        .unwrap_or("");
    (version_key(current) > version_key(latest)).then_some((current, latest))
}

/// What a migrate down works with.
struct Down<'a> {
    current: &'a str,
    latest: &'a str,
    dev_url: Option<&'a str>,
    /// The target's server driver, for the sidecar the operator adds when no dev URL is given.
    url_driver: Option<&'static str>,
    /// `--env … --config …`.
    base: &'a [&'a str],
}

/// `atlas migrate down --format '{{ json . }}'` (the official build's), the parts we read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reverted {
    #[serde(default)]
    reverted: Vec<AppliedFile>,
    #[serde(default)]
    current: String,
    #[serde(default)]
    target: String,
    /// Set when the plan goes through Atlas Cloud: `APPLIED`, or waiting for an approval.
    #[serde(default)]
    status: String,
    #[serde(default, rename = "URL")]
    url: String,
    #[serde(default)]
    error: String,
}

/// A database newer than the directory: refused unless `migrateDown.allow`; then refused
/// anyway when this Atlas build has no `migrate down`; otherwise reverted to the directory's
/// latest version with `atlas migrate down`, planned on the dev database.
fn migrate_down(
    run: &Run,
    task: &Task,
    options: &MigrateApply,
    down: Down,
    files: &[(String, Vec<u8>)],
) -> RunResult {
    let Down {
        current, latest, ..
    } = down;
    let refused = |message: String| {
        let mut result = run.failed(Reason::ProtectedFlowError, &message, false);
        result.current_version = Some(current.to_string());
        result.target_version = Some(latest.to_string());
        result
    };
    if !options.allow_migrate_down {
        // Upstream's wording first, which scripts compare.
        return refused(format!(
            "migrate down is not allowed, set `migrateDown.allow` to true to allow downgrade: \
             the database is at version {current}, newer than the directory's latest {latest} \
             (spec.protectedFlows.migrateDown.allow)"
        ));
    }
    if latest.is_empty() {
        return refused(format!(
            "the database is at version {current} and the directory has no migration file: \
             migrating down to nothing is not done; restore the files"
        ));
    }
    if !run.atlas.offers_command(&["migrate"], "down") {
        return refused(format!(
            "the database is at version {current}, newer than the directory's latest {latest}: \
             migrating down is allowed, but this runner's Atlas CLI ({}) has no `migrate down` \
             (the official Atlas build has it, the community build does not); restore the newer \
             files or migrate down by hand",
            run.atlas_version()
                .as_deref()
                .unwrap_or("of an unknown version")
        ));
    }
    let Some(dev_url) = down.dev_url else {
        // Atlas plans the revert by replaying the directory on a dev database.
        return needs_dev_database(
            run,
            down.url_driver,
            "migrate down plans the revert on a dev database and none was given: the operator \
             adds one to the next Job, or set spec.devURL or spec.devURLFrom",
        );
    };
    if let Some(failed) = dev_not_ready(run, task, dev_url) {
        return failed;
    }

    run.log(&format!(
        "migrating down from version {current} to {latest} (spec.protectedFlows.migrateDown.allow)"
    ));
    let mut args = vec!["migrate", "down"];
    args.extend(down.base);
    args.extend(["--to-version", latest, "--format", "{{ json . }}"]);
    let output = match run.atlas.run(&args) {
        Ok(output) => output,
        Err(err) => return run.failed(Reason::Migrating, &err.to_string(), err.is_transient()),
    };
    let Ok(reverted) = serde_json::from_str::<Reverted>(output.stdout.trim()) else {
        return atlas_failure(run, &output.error_text(), files);
    };
    report_down(run, reverted, output.success, current, latest)
}

/// A Job without the dev database it needs: with the target's driver known, the result that
/// has the operator bring one in the next Job (`needs-dev-database`, exit 0); else a failure
/// asking for spec.devURL.
fn needs_dev_database(run: &Run, url_driver: Option<&str>, message: &str) -> RunResult {
    let Some(driver) = url_driver else {
        return run.failed(Reason::GettingDevDb, message, false);
    };
    let mut result = run.result(Outcome::NeedsDevDatabase, Reason::GettingDevDb, message);
    result.dev_driver = Some(driver.to_string());
    result
}

/// The dev database not answering: the Job's sidecar is waited for (it may still be starting),
/// a given devURL checked once. None: it answers.
fn dev_not_ready(run: &Run, task: &Task, dev_url: &str) -> Option<RunResult> {
    let dev_ready = match task.dev_wait_seconds {
        Some(seconds) => {
            target::wait_reachable(dev_url, Duration::from_secs(seconds)).map_err(|err| {
                format!("the dev database did not accept connections within {seconds}s: {err}")
            })
        }
        None => target::check_reachable(dev_url, CONNECT_LIMIT).map_err(|err| err.to_string()),
    };
    dev_ready
        .err()
        .map(|message| run.failed(Reason::GettingDevDb, &message, true))
}

/// What turned a check of the lint of pending files on, for its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LintSource {
    /// `spec.policy.lint.<check>.error`.
    Policy,
    /// The custom project file's `lint { <check> { error = … } }`.
    ProjectFile,
}

impl LintSource {
    /// `policy` is the check's name in the spec (`dataDepend`), `block` in Atlas's project file
    /// (`data_depend`).
    fn says(self, policy: &str, block: &str) -> String {
        match self {
            LintSource::Policy => format!("spec.policy.lint.{policy}.error is true"),
            LintSource::ProjectFile => format!("the custom atlas.hcl sets lint.{block}.error"),
        }
    }
}

/// The checks of the lint of pending files, each with what turned it on (None: off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LintChecks {
    destructive: Option<LintSource>,
    data_depend: Option<LintSource>,
}

impl LintChecks {
    fn any(self) -> bool {
        self.destructive.is_some() || self.data_depend.is_some()
    }

    /// Every check that is on, as its message says it.
    fn says(self) -> String {
        let mut said = Vec::new();
        if let Some(source) = self.destructive {
            said.push(source.says("destructive", "destructive"));
        }
        if let Some(source) = self.data_depend {
            said.push(source.says("dataDepend", "data_depend"));
        }
        said.join("; ")
    }
}

/// The two migration directories the lint has Atlas replay on the dev database
/// ([`config::LINT_APPLIED_ENV`], [`config::LINT_PENDING_ENV`]).
struct Replay {
    applied: PathBuf,
    pending: PathBuf,
}

/// What the lint of pending files works with.
struct Lint<'a> {
    checks: LintChecks,
    replay: &'a Replay,
    dev_url: Option<&'a str>,
    url_driver: Option<&'static str>,
    /// The schema the target's URL is bound to, where the runner knows its URL.
    target_schema: Option<&'a str>,
    config_url: &'a str,
}

/// The directory's files as the lint replays them: `applied`, those the database is at (its
/// complete revisions, and the files up to the baseline that stands in for them), and
/// `pending`, those `migrate apply` will run (after the database's version; with execOrder
/// non-linear, also older ones it skipped; a file that failed half-way, whole).
fn replay_sets<'a>(
    status: &Status,
    files: &'a [(String, Vec<u8>)],
    options: &MigrateApply,
) -> (Vec<&'a str>, Vec<&'a str>) {
    // A database with no revisions and a baseline is taken to be at the baseline.
    let current = database_version(status).or(options.baseline.as_deref());
    let baseline = options.baseline.as_deref().map(version_key);
    let (mut applied, mut pending) = (Vec::new(), Vec::new());
    for (name, _) in files {
        let Some(version) = file_version(name) else {
            continue;
        };
        let key = version_key(version);
        let done = status
            .applied
            .iter()
            .any(|r| r.version == version && r.is_complete())
            || baseline.as_ref().is_some_and(|b| key <= *b);
        match current {
            _ if done => applied.push(name.as_str()),
            Some(current) if key < version_key(current) => {
                // Older than the database and never applied: only non-linear runs it.
                if options.exec_order == Some(ExecOrder::NonLinear) {
                    pending.push(name.as_str());
                }
            }
            _ => pending.push(name.as_str()),
        }
    }
    (applied, pending)
}

/// The lint of the pending files: Atlas replays the directory on the dev database as the
/// database has applied it, then with the pending files, inspecting each (`atlas schema inspect`
/// of a migration directory replays it on the dev database and cleans it away); the two JSON
/// inspections are compared, never the files' SQL text. Some: refused (or the lint could not
/// run), nothing applied.
fn lint_pending(
    run: &Run,
    task: &Task,
    options: &MigrateApply,
    status: &Status,
    files: &[(String, Vec<u8>)],
    project: &hcl::Body,
    lint: Lint,
) -> Option<RunResult> {
    let current = database_version(status).map(str::to_string);
    let refused = |message: &str, transient: bool| {
        let mut result = run.failed(Reason::LintPolicyError, message, transient);
        result.current_version = current.clone();
        result
    };
    let (applied, pending) = replay_sets(status, files, options);
    if pending.is_empty() {
        run.log("lint: no pending migration file");
        return None;
    }
    if computed_dir(project, &task.env_name) {
        return Some(refused(
            &format!(
                "the lint of pending files replays the migration directory's files, but the \
                 project file computes env \"{}\"'s migration dir (a template directory), \
                 whose rendered files the runner does not have; nothing was applied ({})",
                task.env_name,
                lint.checks.says()
            ),
            false,
        ));
    }
    let Some(dev_url) = lint.dev_url else {
        return Some(needs_dev_database(
            run,
            lint.url_driver,
            "the lint of pending migration files replays them on a dev database and none was \
             given: the operator adds one to the next Job, or set spec.devURL or spec.devURLFrom",
        ));
    };
    if let Some(failed) = dev_not_ready(run, task, dev_url) {
        return Some(failed);
    }
    run.log(&format!(
        "lint: replaying {} applied and {} pending migration files on the dev database",
        applied.len(),
        pending.len()
    ));
    let chosen = |names: &[&str]| -> Vec<(String, Vec<u8>)> {
        let mut chosen: Vec<(String, Vec<u8>)> = files
            .iter()
            .filter(|(name, _)| names.contains(&name.as_str()))
            .cloned()
            .collect();
        let sum = crate::sum::file(&chosen);
        chosen.push((SUM_FILE.to_string(), sum.into_bytes()));
        chosen
    };
    let with_pending: Vec<&str> = applied.iter().chain(&pending).copied().collect();
    for (dir, names) in [
        (&lint.replay.applied, &applied),
        (&lint.replay.pending, &with_pending),
    ] {
        if let Err(err) = inputs::write_copy(dir, &chosen(names)) {
            return Some(refused(&err.to_string(), true));
        }
    }
    // `format`: Atlas's JSON for the destructive check, its own HCL (no `--format`) for the
    // data-dependent one, as the schema lint reads them.
    let inspect = |env: &str, format: Option<&str>| -> Result<String, Box<RunResult>> {
        let mut args = vec![
            "schema",
            "inspect",
            "--env",
            env,
            "--config",
            lint.config_url,
        ];
        if let Some(format) = format {
            args.extend(["--format", format]);
        }
        match run.atlas.run(&args) {
            Ok(output) if output.success => Ok(output.stdout),
            Ok(output) => {
                // A file that fails on the dev database fails the same way on the target.
                let text = output.error_text();
                run.log(&text);
                let verdict = classify::classify(Kind::Migration, &text);
                let mut result = run.failed(
                    verdict.reason,
                    &format!(
                        "the lint of pending migration files could not replay them on the dev \
                         database: {text}; nothing was applied"
                    ),
                    verdict.transient,
                );
                result.current_version = current.clone();
                Err(Box::new(result))
            }
            Err(err) => Err(Box::new(refused(&err.to_string(), err.is_transient()))),
        }
    };
    let unreadable = |err: &dyn std::fmt::Display| Box::new(refused(&err.to_string(), false));
    // A dev database bound to one schema (MySQL's `…/dev`) names it after itself: the findings
    // name the target's schema instead, where its URL says it.
    let rename = lint
        .target_schema
        .filter(|_| target::bound_schema(dev_url).is_some());
    // Each check of the two states, its findings under its own header (the schema lint's
    // wording, which scripts compare). Both states are the same dev database's, so schemas
    // pair by name; diff.skip is no concern of a migration, whose files run whatever the diff
    // policy. Nothing applied yet: an empty state, without an Atlas start.
    let destructive = || -> Result<Vec<String>, Box<RunResult>> {
        let realm = |env: &str| -> Result<Realm, Box<RunResult>> {
            let json = inspect(env, Some("{{ json . }}"))?;
            let mut realm: Realm = serde_json::from_str(json.trim())
                .map_err(|err| unreadable(&format!("reading `atlas schema inspect`: {err}")))?;
            if let (Some(schema), [only]) = (rename, realm.schemas.as_mut_slice()) {
                only.name = schema.to_string();
            }
            Ok(realm)
        };
        let before = match applied.is_empty() {
            true => Realm::default(),
            false => realm(config::LINT_APPLIED_ENV)?,
        };
        let after = realm(config::LINT_PENDING_ENV)?;
        Ok(lint::destructive_changes(
            &before,
            &after,
            Scope::Realm,
            Skips::default(),
        ))
    };
    let data_dependent = || -> Result<Vec<String>, Box<RunResult>> {
        let catalog = |env: &str| -> Result<Catalog, Box<RunResult>> {
            let mut catalog =
                Catalog::from_hcl(&inspect(env, None)?).map_err(|err| unreadable(&err))?;
            if let (Some(schema), [only]) = (rename, catalog.schemas.as_mut_slice()) {
                only.name = schema.to_string();
            }
            Ok(catalog)
        };
        let before = match applied.is_empty() {
            true => Catalog::default(),
            false => catalog(config::LINT_APPLIED_ENV)?,
        };
        let after = catalog(config::LINT_PENDING_ENV)?;
        let dialect = Dialect::of(lint.url_driver, &after);
        Ok(lint::data_dependent_changes(
            &before,
            &after,
            Scope::Realm,
            dialect,
            Skips::default(),
        ))
    };
    let mut sections = Vec::new();
    for (on, header, check) in [
        (
            lint.checks.destructive.is_some(),
            "destructive changes detected",
            &destructive as &dyn Fn() -> Result<Vec<String>, Box<RunResult>>,
        ),
        (
            lint.checks.data_depend.is_some(),
            "data dependent changes detected",
            &data_dependent,
        ),
    ] {
        if !on {
            continue;
        }
        let findings = match check() {
            Ok(findings) => findings,
            Err(result) => return Some(*result),
        };
        if !findings.is_empty() {
            let lines: Vec<String> = findings.iter().map(|f| format!("- {f}")).collect();
            sections.push(format!("{header}:\n{}", lines.join("\n")));
        }
    }
    if sections.is_empty() {
        run.log("lint: no change the lint refuses in the pending files");
        return None;
    }
    let which = match pending.as_slice() {
        [one] => format!("file {one} makes"),
        many => format!("files {} make", many.join(", ")),
    };
    let message = format!(
        "{}\nnothing was applied: the pending migration {which} these changes, and {}",
        sections.join("\n"),
        lint.checks.says()
    );
    run.log(&message);
    Some(refused(&message, false))
}

/// Whether the project file computes `env "<env_name>"`'s `migration { dir }` (a template
/// directory's URL), rather than naming the directory the runner wrote.
fn computed_dir(project: &hcl::Body, env_name: &str) -> bool {
    project
        .blocks()
        .filter(|env| {
            env.identifier.as_str() == "env"
                && env.labels.len() == 1
                && env.labels[0].as_str() == env_name
        })
        .flat_map(|env| env.body.blocks())
        .filter(|block| block.identifier.as_str() == "migration")
        .flat_map(|migration| migration.body.attributes())
        .any(|attribute| {
            attribute.key.as_str() == "dir" && !matches!(attribute.expr, hcl::Expression::String(_))
        })
}

/// The result of a migrate down, from its report.
fn report_down(run: &Run, down: Reverted, success: bool, before: &str, latest: &str) -> RunResult {
    for file in &down.reverted {
        run.log(&format!(
            "-- reverting version {} ({})",
            file.version, file.name
        ));
        for statement in &file.applied {
            run.log(&format!("   -> {}", statement.trim()));
        }
        if let Some(error) = &file.error {
            run.log(&format!("   !! {}", error.text));
        }
    }
    let statements: usize = down
        .reverted
        .iter()
        .map(|f| f.applied.len() - usize::from(f.error.is_some()))
        .sum();
    let target = Some(down.target.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| latest.to_string());
    let failed = down.reverted.iter().find(|f| f.error.is_some());
    let approved = matches!(down.status.as_str(), "" | "APPLIED");
    if success && down.error.is_empty() && failed.is_none() && approved {
        let message = format!(
            "migrated down from version {before} to {target} ({} files reverted, {statements} \
             statements)",
            down.reverted.len()
        );
        run.log(&message);
        let mut result = run.result(Outcome::Applied, Reason::Applied, &message);
        result.current_version = Some(target.clone());
        result.target_version = Some(target);
        result.files_applied = down.reverted.len() as u32;
        result.statements_applied = statements as u32;
        return result;
    }
    let (message, transient) = match failed.and_then(|f| f.error.as_ref().map(|e| (f, e))) {
        Some((file, error)) => (
            format!(
                "migrate down failed reverting {} at statement `{}`: {}; the database is at \
                 version {}",
                file.name,
                error.stmt.trim(),
                error.text,
                Some(down.current.as_str())
                    .filter(|c| !c.is_empty())
                    .unwrap_or(before)
            ),
            classify::classify(Kind::Migration, &error.text).transient,
        ),
        None if !approved && down.error.is_empty() => (
            // Waiting on Atlas Cloud: another attempt goes on once someone approves it there.
            format!(
                "migrate down from version {before} to {target} is {} on Atlas Cloud{}: nothing \
                 was reverted yet",
                down.status.to_lowercase().replace('_', " "),
                Some(down.url.as_str())
                    .filter(|u| !u.is_empty())
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default()
            ),
            true,
        ),
        None => {
            let verdict = classify::classify(Kind::Migration, &down.error);
            (
                format!("migrate down failed: {}", down.error),
                verdict.transient,
            )
        }
    };
    run.log(&message);
    let mut result = run.failed(Reason::Migrating, &message, transient);
    result.current_version = Some(down.current).filter(|c| !c.is_empty());
    result.target_version = Some(target);
    result
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

    fn bare_run() -> Run {
        let atlas = crate::atlas::Atlas::new("/bin/false".into(), Duration::from_secs(1));
        Run::new(atlas, std::env::temp_dir())
    }

    /// The official build's `migrate down` report (its JSON shape; this machine's community
    /// Atlas has no `migrate down`, so the real run is only tested where the binary has it).
    #[test]
    fn a_migrate_down_report_is_read() {
        let run = bare_run();
        let done: Reverted = serde_json::from_str(
            r#"{"Planned":[{"Name":"2_b.sql","Version":"2"}],"Reverted":[{"Name":"2_b.sql",
                "Version":"2","Applied":["DROP TABLE \"public\".\"b\""]}],"Current":"1",
                "Target":"1","Total":1,"Status":"APPLIED"}"#,
        )
        .unwrap();
        let result = report_down(&run, done, true, "2", "1");
        assert_eq!(result.outcome, Outcome::Applied);
        assert_eq!(result.current_version.as_deref(), Some("1"));
        assert_eq!(result.statements_applied, 1);
        assert_eq!(
            result.message,
            "migrated down from version 2 to 1 (1 files reverted, 1 statements)"
        );

        let failed: Reverted = serde_json::from_str(
            r#"{"Reverted":[{"Name":"2_b.sql","Version":"2","Applied":["DROP TABLE b"],
                "Error":{"Stmt":"DROP TABLE b","Text":"pq: table b is referenced"}}],
                "Current":"2","Target":"1","Error":"pq: table b is referenced"}"#,
        )
        .unwrap();
        let result = report_down(&run, failed, false, "2", "1");
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.reason, Reason::Migrating);
        assert!(
            result
                .message
                .starts_with("migrate down failed reverting 2_b.sql at statement `DROP TABLE b`"),
            "{}",
            result.message
        );
        assert_eq!(result.current_version.as_deref(), Some("2"));

        let waiting: Reverted = serde_json::from_str(
            r#"{"Current":"2","Target":"1","Status":"PENDING_USER","URL":"https://x.atlasgo.cloud/p/1"}"#,
        )
        .unwrap();
        let result = report_down(&run, waiting, true, "2", "1");
        assert!(result.transient);
        assert_eq!(
            result.message,
            "migrate down from version 2 to 1 is pending user on Atlas Cloud \
             (https://x.atlasgo.cloud/p/1): nothing was reverted yet"
        );
    }

    /// What the lint replays as the database's state and as the pending files, on each exec
    /// order, with a baseline, and with a file that failed half-way.
    #[test]
    fn the_lint_replays_what_the_database_has_and_what_apply_will_run() {
        let dir = files(&["1_a.sql", "2_b.sql", "3_c.sql", "4_d.sql", "atlas.sum"]);
        let revision = |version: &str, applied: u32, total: u32| Revision {
            version: version.into(),
            applied,
            total,
            ..Revision::default()
        };
        let at_3_without_2 = Status {
            applied: vec![revision("1", 1, 1), revision("3", 1, 1)],
            ..Status::default()
        };
        let linear = MigrateApply::default();
        assert_eq!(
            replay_sets(&at_3_without_2, &dir, &linear),
            (vec!["1_a.sql", "3_c.sql"], vec!["4_d.sql"]),
            "linear-skip (and linear, which refuses 2 before) leave 2 out"
        );
        let non_linear = MigrateApply {
            exec_order: Some(ExecOrder::NonLinear),
            ..MigrateApply::default()
        };
        assert_eq!(
            replay_sets(&at_3_without_2, &dir, &non_linear),
            (vec!["1_a.sql", "3_c.sql"], vec!["2_b.sql", "4_d.sql"])
        );
        // A fresh database with a baseline: the files up to it stand for what it has.
        let baselined = MigrateApply {
            baseline: Some("2".into()),
            ..MigrateApply::default()
        };
        assert_eq!(
            replay_sets(&Status::default(), &dir, &baselined),
            (vec!["1_a.sql", "2_b.sql"], vec!["3_c.sql", "4_d.sql"])
        );
        assert_eq!(
            replay_sets(&Status::default(), &dir, &linear),
            (vec![], vec!["1_a.sql", "2_b.sql", "3_c.sql", "4_d.sql"])
        );
        // A file that failed half-way (MariaDB keeps the statements that ran) is pending.
        let half = Status {
            applied: vec![revision("1", 1, 1), revision("2", 1, 2)],
            ..Status::default()
        };
        assert_eq!(
            replay_sets(&half, &dir, &linear),
            (vec!["1_a.sql"], vec!["2_b.sql", "3_c.sql", "4_d.sql"])
        );
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
