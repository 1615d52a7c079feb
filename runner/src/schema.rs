//! `runner schema`: `atlas schema apply --auto-approve` of the mounted desired schema, after the
//! destructive-change lint when the policy asks for it.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::atlas::{DEV_URL_ENV, URL_ENV};
use crate::classify::{self, DESIRED_FILE_STEM};
use crate::config::{self, DESIRED_ENV};
use crate::devdb::{self, Inventory, Object, Session};
use crate::inputs::{self, WorkDir};
use crate::lint::{self, Catalog, Dialect, Realm, Skips};
use crate::migrate::CONNECT_LIMIT;
use crate::run::Run;
use crate::target::{self, Scope};
use contract::Reason;
use contract::{Desired, Kind, Outcome, RunResult, SchemaApply, Task, UNMANAGED_LISTED};

/// `atlas schema apply --format '{{ json . }}'`, the parts we read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Apply {
    /// Atlas's driver (`postgres`, `mysql`, `sqlite3`, …): whether a failed plan was rolled back.
    #[serde(default)]
    driver: String,
    #[serde(default)]
    changes: Changes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Changes {
    #[serde(default)]
    applied: Vec<String>,
    #[serde(default)]
    pending: Vec<String>,
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

pub fn run(task: &Task, options: &SchemaApply, run: &mut Run) -> RunResult {
    if let Some(unknown) = options
        .skip
        .iter()
        .find(|s| !config::SKIP_CHANGES.contains(&s.as_str()))
    {
        return run.failed(
            Reason::ReadSchema,
            &format!("policy.diff.skip.{unknown} is not a kind of change Atlas knows"),
            false,
        );
    }
    let path = match &options.desired {
        Desired::File(path) => path,
        Desired::Url(url) => {
            return run.failed(
                Reason::ReadSchema,
                &format!(
                    "schema.url {url} is read from Atlas Cloud, which this runner's Atlas CLI \
                     (community build) cannot reach: give the schema as sql, hcl or configMapKeyRef"
                ),
                false,
            );
        }
    };

    let file = match inputs::read_file(Path::new(path)) {
        Ok(file) => file,
        Err(err) => return run.failed(Reason::ReadSchema, &err.to_string(), false),
    };
    let language = match Path::new(&file.0).extension().and_then(|e| e.to_str()) {
        Some("sql") => "sql",
        Some("hcl") => "hcl",
        _ => {
            return run.failed(
                Reason::ReadSchema,
                &format!(
                    "the desired schema {} must end in .sql or .hcl, which says its language",
                    file.0
                ),
                false,
            );
        }
    };
    let files = vec![file];
    if let Err(err) = inputs::verify(&files, &task.inputs_digest) {
        return run.failed(Reason::ReadSchema, &err.to_string(), false);
    }
    let work = match WorkDir::create(&run.tmp) {
        Ok(work) => work,
        Err(err) => return run.failed(Reason::ReadSchema, &err.to_string(), true),
    };
    // Named as the failure table expects: HCL diagnostics start with the file they are about.
    let desired_path = work.path().join(format!("{DESIRED_FILE_STEM}.{language}"));
    if let Err(err) = std::fs::write(&desired_path, &files[0].1) {
        return run.failed(Reason::ReadSchema, &err.to_string(), true);
    }
    let desired_url = format!("file://{}", desired_path.display());

    let url = match target::url(&task.target, &mut run.redactor) {
        Ok(url) => url,
        Err(err) => return run.failed(Reason::ReadSchema, &err.to_string(), false),
    };
    // The dev database: given, or (SQLite) in memory, or named by the project file that names
    // the target. Atlas needs one to read a desired schema.
    let dev_url = match (&task.dev_url_env, &url) {
        (Some(name), _) => match target::dev_url(name, &mut run.redactor) {
            Ok(url) => Some(url),
            Err(err) => return run.failed(Reason::GettingDevDb, &err.to_string(), false),
        },
        (None, None) => None,
        (None, Some(url)) if url.starts_with("sqlite://") || url.starts_with("libsql") => {
            Some("sqlite://dev?mode=memory".to_string())
        }
        (None, Some(url)) => {
            let driver = target::server_driver(url);
            let message = format!(
                "no dev database was given for this {} target: the operator adds one to the \
                 next Job, or set spec.devURL or spec.devURLFrom",
                driver.unwrap_or("database")
            );
            let Some(driver) = driver else {
                return run.failed(Reason::GettingDevDb, &message, false);
            };
            let mut result = run.result(Outcome::NeedsDevDatabase, Reason::GettingDevDb, &message);
            result.dev_driver = Some(driver.to_string());
            return result;
        }
    };
    if dev_url.is_none() && (options.lint_destructive || options.lint_data_depend) {
        // The lint inspects the desired schema on the dev database, in an env of the runner's.
        let policy = if options.lint_destructive {
            "destructive"
        } else {
            "dataDepend"
        };
        return run.failed(
            Reason::LintPolicyError,
            &format!(
                "policy.lint.{policy} needs a dev database the operator knows: set spec.devURL \
                 or spec.devURLFrom (the custom config's dev is Atlas's alone)"
            ),
            false,
        );
    }
    // URLs the project file names are Atlas's to reach: its error says which host failed.
    if let Some(url) = &url
        && let Err(err) = target::check_reachable(url, CONNECT_LIMIT)
    {
        return run.failed(Reason::ApplyingSchema, &err.to_string(), true);
    }
    if let Some(dev_url) = &dev_url {
        let dev_ready = match task.dev_wait_seconds {
            Some(seconds) => {
                target::wait_reachable(dev_url, Duration::from_secs(seconds)).map_err(|err| {
                    format!("the dev database did not accept connections within {seconds}s: {err}")
                })
            }
            None => target::check_reachable(dev_url, CONNECT_LIMIT).map_err(|err| err.to_string()),
        };
        if let Err(message) = dev_ready {
            return run.failed(Reason::GettingDevDb, &message, true);
        }
    }
    let generated = config::Generated {
        url: url.is_some(),
        dev: dev_url.is_some(),
    };
    // Known before the URL goes into Atlas's environment; None when the resource's project file
    // names the target (or its scheme is one the runner does not know): then Atlas is asked.
    let known_scope = url.as_deref().and_then(target::scope);
    let url_driver = url.as_deref().and_then(target::server_driver).or_else(|| {
        url.as_deref()
            .filter(|url| url.starts_with("sqlite") || url.starts_with("libsql"))
            .map(|_| "sqlite3")
    });
    // What an unqualified table is under on a realm-level URL, for the exclude check's advice.
    let default_schema = match url_driver {
        Some("postgres") => "public",
        _ => "<schema>",
    };
    // Kept for the runner's own look at the dev database and the target (never logged).
    let (target_url, dev_check_url) = (url.clone(), dev_url.clone());
    if let Some(url) = url {
        run.atlas.env(URL_ENV, url);
    }
    if let Some(dev_url) = dev_url {
        run.atlas.env(DEV_URL_ENV, dev_url);
    }

    let body = config::schema(&task.env_name, &desired_url, generated, options);
    let config_path = work.path().join("atlas.hcl");
    let project = match crate::custom::project_body(task, body, run) {
        Ok(project) => project,
        Err(err) => return run.failed(Reason::ReadSchema, &err, false),
    };
    match hcl::to_string(&project) {
        Ok(text) => {
            if let Err(err) = std::fs::write(&config_path, text) {
                return run.failed(Reason::ReadSchema, &err.to_string(), true);
            }
        }
        Err(err) => return run.failed(Reason::ReadSchema, &err.to_string(), false),
    }
    let config_url = format!("file://{}", config_path.display());

    let exclude = lint::excludes_of_env(&project, &task.env_name);
    let needs_scope = options.lint_destructive
        || options.lint_data_depend
        || exclude.iter().any(|p| !p.contains('.'));
    let scope = match known_scope {
        Some(scope) => Some(scope),
        None if needs_scope => atlas_scope(run, &task.env_name, &config_url),
        None => None,
    };
    if scope == Some(Scope::Realm)
        && let Some(refused) = realm_exclude(run, &exclude, default_schema)
    {
        return refused;
    }

    // Before Atlas first loads the desired schema into the dev database.
    let desired_sql =
        (language == "sql").then(|| String::from_utf8_lossy(&files[0].1).into_owned());
    let mut dev_check = match (dev_check_url, &target_url) {
        (Some(dev), Some(target)) if devdb::may_hold(&dev, target) => {
            run.log(
                "the dev database may hold the target (the same database, or a MySQL server URL \
                 on the target's server): the runner leaves it as Atlas leaves it, and objects of \
                 the desired schema that this Atlas build does not manage are not looked for",
            );
            None
        }
        (Some(dev), _) => DevCheck::start(run, dev, desired_sql),
        (None, _) => None,
    };
    if options.lint_destructive || options.lint_data_depend {
        let lints = Lints {
            env_name: &task.env_name,
            config_url: &config_url,
            scope,
            skips: Skips::of_env(&project, &task.env_name),
            driver: url_driver,
            destructive: options.lint_destructive,
            data_depend: options.lint_data_depend,
        };
        let refused = lint(run, &lints);
        // The lint's inspections of the desired schema loaded it: the apply loads it again.
        if let Some(check) = &mut dev_check {
            check.clean(run, "the lint's inspection of the desired schema");
        }
        if let Some(refused) = refused {
            return refused;
        }
    }

    let mut args = vec![
        "schema",
        "apply",
        "--env",
        task.env_name.as_str(),
        "--config",
        config_url.as_str(),
        "--auto-approve",
        "--format",
        "{{ json . }}",
    ];
    let concurrent = options.concurrent_index_create == Some(true)
        || options.concurrent_index_drop == Some(true);
    let in_transaction = !concurrent && options.tx_mode != Some(contract::TxMode::None);
    if concurrent {
        // PostgreSQL refuses CREATE/DROP INDEX CONCURRENTLY inside a transaction block.
        run.log("concurrent index policy: applying without a transaction, as PostgreSQL requires");
        args.extend(["--tx-mode", "none"]);
    } else if let Some(tx_mode) = &options.tx_mode {
        args.extend(["--tx-mode", tx_mode.as_str()]);
    }
    let output = run.atlas.run(&args);
    if let Some(check) = &mut dev_check {
        check.clean(run, "the apply");
    }
    let output = match output {
        Ok(output) => output,
        Err(err) => {
            return run.failed(Reason::ApplyingSchema, &err.to_string(), err.is_transient());
        }
    };
    let parsed = serde_json::from_str::<Apply>(output.stdout.trim()).ok();
    match parsed {
        Some(apply) if output.success && apply.changes.error.is_none() => {
            for statement in &apply.changes.applied {
                run.log(&format!("-> {statement}"));
            }
            let count = apply.changes.applied.len();
            let blocking = blocking_index_statements(&apply.changes.applied, options);
            for statement in &blocking {
                run.log(&format!(
                    "the concurrent index policy is set, but this Atlas build planned `{statement}` \
                     without CONCURRENTLY: it locked the table while it ran"
                ));
            }
            let (outcome, message) = if count == 0 {
                (
                    Outcome::NoOp,
                    "the schema is already as desired: nothing to apply".to_string(),
                )
            } else {
                (
                    Outcome::Applied,
                    format!(
                        "the schema has been applied ({count} statements):\n{}",
                        statement_list(&apply.changes.applied)
                    ),
                )
            };
            let unmanaged = match &mut dev_check {
                Some(check) => check.unmanaged(run, target_url.as_deref()),
                None => Vec::new(),
            };
            let message = match unmanaged_note(&unmanaged) {
                Some(note) => format!("{message}\n{note}"),
                None => message,
            };
            let message = if blocking.is_empty() {
                message
            } else {
                format!(
                    "{message}\n(the concurrent index policy is set, but this Atlas build planned \
                     {} index statement(s) without CONCURRENTLY, which locked the table)",
                    blocking.len()
                )
            };
            run.log(&message);
            let mut result = run.result(outcome, Reason::Applied, &message);
            result.statements_applied = count as u32;
            result.unmanaged = listed(&unmanaged);
            result
        }
        Some(apply) => {
            let driver = Some(apply.driver.as_str())
                .filter(|d| !d.is_empty())
                .or(url_driver);
            let rolls_back = rolls_back(driver, in_transaction);
            let (message, stayed) = match &apply.changes.error {
                Some(error) => failed_plan(run, &apply.changes, error, rolls_back),
                None => {
                    for statement in &apply.changes.applied {
                        run.log(&format!("-> {statement}"));
                    }
                    (output.error_text(), apply.changes.applied.len())
                }
            };
            run.log(&message);
            // A statement Atlas planned failed: the database's own text of the error says
            // whether another attempt can go differently. No statement: the text is all there is.
            let (reason, transient) = match &apply.changes.error {
                Some(error) => (
                    Reason::ApplyingSchema,
                    classify::classify(Kind::Schema, &error.text).transient,
                ),
                None => {
                    let verdict = classify::classify(Kind::Schema, &message);
                    (verdict.reason, verdict.transient)
                }
            };
            let mut result = run.failed(reason, &message, transient);
            result.statements_applied = stayed as u32;
            result
        }
        None => failure(run, &output.error_text()),
    }
}

/// The runner's own look at the dev database (docs/runner.md, "The dev database"): its
/// inventory before Atlas first loads the desired schema into it, and what each load left.
struct DevCheck {
    session: Session,
    before: Inventory,
    /// What the loads left behind: the desired schema's objects Atlas did not take back.
    left: Vec<Object>,
    /// The desired schema when it is SQL, which the runner can load itself.
    desired_sql: Option<String>,
}

impl DevCheck {
    /// None, said in the log, when the runner cannot open its own connection (TLS, a socket)
    /// or read the catalog: then Atlas runs as before. SQLite's dev database is in memory.
    fn start(run: &Run, url: String, desired_sql: Option<String>) -> Option<DevCheck> {
        if url.starts_with("sqlite") || url.starts_with("libsql") {
            return None;
        }
        let mut session = Session::new(&url);
        match Inventory::take(&mut session) {
            Ok(before) => Some(DevCheck {
                session,
                before,
                left: Vec::new(),
                desired_sql,
            }),
            Err(err) => {
                run.log(&format!(
                    "the runner could not check the dev database itself ({err}): it is left as \
                     Atlas leaves it, and objects of the desired schema that this Atlas build \
                     does not manage are not looked for"
                ));
                None
            }
        }
    }

    /// Drops what the Atlas call `after` left in the dev database, so that the next load (the
    /// apply, the next run on a long-lived dev database) finds it as the runner did.
    fn clean(&mut self, run: &Run, after: &str) {
        match self.before.clean(&mut self.session) {
            Ok(cleaned) => {
                if !cleaned.left.is_empty() {
                    run.log(&format!(
                        "dev database: dropped what {after} left there: {}",
                        names(&cleaned.left)
                    ));
                }
                for (object, why) in &cleaned.remaining {
                    run.log(&format!(
                        "dev database: could not drop {object}, which {after} left there: {why}"
                    ));
                }
                self.left.extend(cleaned.left);
            }
            Err(err) => run.log(&format!(
                "dev database: could not check what {after} left there: {err}"
            )),
        }
    }

    /// The desired schema's objects this Atlas build did not apply, from what the target holds
    /// after a successful apply.
    fn unmanaged(&mut self, run: &Run, target_url: Option<&str>) -> Vec<Object> {
        // What the desired SQL creates, loaded by the runner itself; else (HCL, or a load
        // that fails here) what Atlas's loads left behind.
        let desired = match &self.desired_sql {
            Some(sql) => match self.before.load(&mut self.session, sql) {
                Ok(desired) => desired,
                Err(err) => {
                    run.log(&format!(
                        "dev database: the runner could not load the desired schema itself \
                         ({err}): only what Atlas's loads left behind is looked at"
                    ));
                    self.left.clone()
                }
            },
            None => self.left.clone(),
        };
        if !desired.iter().any(|object| !object.kind.always_managed()) {
            return Vec::new();
        }
        let target = match target_url.map(|url| Inventory::take(&mut Session::new(url))) {
            Some(Ok(target)) => target,
            Some(Err(err)) => {
                run.log(&format!(
                    "the runner could not check the target itself ({err}): objects of the desired \
                     schema that this Atlas build does not manage are not looked for"
                ));
                return Vec::new();
            }
            None => {
                run.log(
                    "the target is the project file's: objects of the desired schema that this \
                     Atlas build does not manage are not looked for",
                );
                return Vec::new();
            }
        };
        devdb::unmanaged(&desired, &self.before, &target)
    }
}

/// The sentence the message gets for objects this Atlas build did not apply.
fn unmanaged_note(unmanaged: &[Object]) -> Option<String> {
    if unmanaged.is_empty() {
        return None;
    }
    Some(format!(
        "this Atlas build does not manage {} object(s) of the desired schema, which were not \
         applied (views, sequences, functions and triggers are an Atlas Pro feature upstream): {}",
        unmanaged.len(),
        listed(unmanaged).join(", ")
    ))
}

/// At most [`UNMANAGED_LISTED`] objects, each cut, the last saying how many more.
fn listed(objects: &[Object]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .take(UNMANAGED_LISTED)
        .map(|object| {
            let name = object.to_string();
            match name.char_indices().nth(LISTED_STATEMENT_CHARS / 2) {
                Some((at, _)) => format!("{}…", &name[..at]),
                None => name,
            }
        })
        .collect();
    if objects.len() > UNMANAGED_LISTED {
        names.push(format!("… and {} more", objects.len() - UNMANAGED_LISTED));
    }
    names
}

fn names(objects: &[Object]) -> String {
    objects
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the database undid the plan's statements when one failed: PostgreSQL and SQLite run
/// DDL in the transaction `--tx-mode file` opens; MySQL and MariaDB commit each DDL statement
/// as it runs. None: the driver is not known (the log and message then say "may").
fn rolls_back(driver: Option<&str>, in_transaction: bool) -> Option<bool> {
    match driver? {
        "postgres" | "sqlite3" | "sqlite" | "libsql" => Some(in_transaction),
        "mysql" | "maria" | "mariadb" => Some(false),
        _ => None,
    }
}

/// The message of a plan whose statement `error.stmt` failed, and how many statements stayed
/// applied; the log gets each statement that ran before it, said as undone when it was.
/// v0.13.1 lists the statements before the failing one as `Applied` and the failing one first
/// in `Pending`; a build that counted the failing one as applied is read the same way.
fn failed_plan(
    run: &Run,
    changes: &Changes,
    error: &StatementError,
    rolls_back: Option<bool>,
) -> (String, usize) {
    let failed = error.stmt.trim();
    let mut ran: &[String] = &changes.applied;
    if ran.last().is_some_and(|last| last.trim() == failed) {
        ran = &ran[..ran.len() - 1];
    }
    let not_run: Vec<String> = changes
        .pending
        .iter()
        .filter(|statement| statement.trim() != failed)
        .cloned()
        .collect();
    let not_applied: Vec<String> = std::iter::once(failed.to_string())
        .chain(not_run.iter().cloned())
        .collect();
    let head = format!("applying the schema failed at `{failed}`: {}", error.text);
    match rolls_back {
        Some(true) => {
            for statement in ran {
                run.log(&format!("-> rolled back: {statement}"));
            }
            let message = format!(
                "{head} (0 statements applied, {} not): the transaction was rolled back, so \
                 the database is as it was before{}",
                ran.len() + not_applied.len(),
                if ran.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} statements ran before the failure and were undone)",
                        ran.len()
                    )
                }
            );
            (message, 0)
        }
        stays => {
            for statement in ran {
                run.log(&format!("-> {statement}"));
            }
            let (verb, note) = match stays {
                Some(_) => (
                    "applied",
                    "this database does not roll DDL back, so the applied statements stay",
                ),
                None => (
                    "ran",
                    "they may have stayed applied: this database is not known to roll DDL back",
                ),
            };
            let mut message = format!(
                "{head} ({} statements {verb}, {} not: {note})",
                ran.len(),
                not_applied.len()
            );
            if !ran.is_empty() {
                message.push_str(&format!("\n{verb}:\n{}", statement_list(ran)));
            }
            message.push_str(&format!("\nnot applied:\n{}", statement_list(&not_applied)));
            (message, if stays.is_some() { ran.len() } else { 0 })
        }
    }
}

/// The target's scope as Atlas itself reads the env's URL (`.URL.Schema` of `schema inspect`'s
/// template data: the schema the URL is bound to, empty for a realm). None when this Atlas
/// build's template data has no such field, or the inspection fails: the caller then assumes
/// nothing.
fn atlas_scope(run: &Run, env_name: &str, config_url: &str) -> Option<Scope> {
    let args = [
        "schema",
        "inspect",
        "--env",
        env_name,
        "--config",
        config_url,
        "--format",
        "{{ .URL.Schema }}",
    ];
    match run.atlas.run(&args) {
        Ok(output) if output.success => Some(if output.stdout.trim().is_empty() {
            Scope::Realm
        } else {
            Scope::Schema
        }),
        _ => {
            run.log(
                "this Atlas build does not say whether the project file's URL is bound to one \
                 schema: the lint pairs schemas by name, and exclude patterns are not checked",
            );
            None
        }
    }
}

/// Refuses exclude patterns without a dot on a realm-level URL. There, Atlas matches such a
/// pattern against schema names only: `ignore_me` meant for the table `public.ignore_me`
/// protects nothing, and a desired schema without that table drops it with its rows. A whole
/// schema is left alone by listing the schemas Atlas manages in `schemas` instead.
fn realm_exclude(run: &Run, exclude: &[String], default_schema: &str) -> Option<RunResult> {
    let unqualified: Vec<&String> = exclude.iter().filter(|p| !p.contains('.')).collect();
    if unqualified.is_empty() {
        return None;
    }
    let message = format!(
        "exclude {} would match schemas, not tables: the URL is not bound to one schema (a \
         PostgreSQL URL without search_path, a MySQL URL without a database), so Atlas reads \
         each pattern as <schema>.<table>; write {} to leave a table alone (or list the schemas \
         Atlas manages in `schemas` to leave a whole schema alone). Nothing was applied",
        unqualified
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", "),
        unqualified
            .iter()
            .map(|p| format!("`{default_schema}.{p}`"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    run.log(&message);
    Some(run.failed(Reason::ReadSchema, &message, false))
}

/// What the lint policies need to know of the apply.
struct Lints<'a> {
    env_name: &'a str,
    config_url: &'a str,
    scope: Option<Scope>,
    skips: Skips,
    /// Atlas's driver of the target URL, when the runner knows it.
    driver: Option<&'a str>,
    destructive: bool,
    data_depend: bool,
}

/// Inspects the database and the desired schema, and refuses the apply when the difference
/// drops something (`destructive`) or has an outcome that depends on the rows (`dataDepend`).
/// Both policies are checked before refusing, so one message names everything either finds.
fn lint(run: &Run, lints: &Lints) -> Option<RunResult> {
    // `format`: Atlas's JSON for the destructive lint, its own HCL (no `--format`) for the
    // data-dependent one, which needs what the JSON leaves out (see `lint::Catalog`).
    let inspect = |env: &str, format: Option<&str>| -> Result<String, Box<RunResult>> {
        let mut args = vec![
            "schema",
            "inspect",
            "--env",
            env,
            "--config",
            lints.config_url,
        ];
        if let Some(format) = format {
            args.extend(["--format", format]);
        }
        match run.atlas.run(&args) {
            Ok(output) if output.success => Ok(output.stdout),
            Ok(output) => Err(Box::new(failure(run, &output.error_text()))),
            Err(err) => Err(Box::new(run.failed(
                Reason::LintPolicyError,
                &err.to_string(),
                err.is_transient(),
            ))),
        }
    };
    let unreadable = |err: &dyn std::fmt::Display| {
        Box::new(run.failed(Reason::LintPolicyError, &err.to_string(), false))
    };
    // Not known: by name, which at worst refuses a change that drops nothing (a schema-bound
    // URL whose schema is named otherwise than the dev database's), never lets a drop through.
    let scope = lints.scope.unwrap_or(Scope::Realm);
    let destructive = || -> Result<Vec<String>, Box<RunResult>> {
        let realm = |env: &str| -> Result<Realm, Box<RunResult>> {
            let json = inspect(env, Some("{{ json . }}"))?;
            serde_json::from_str(json.trim())
                .map_err(|err| unreadable(&format!("reading `atlas schema inspect`: {err}")))
        };
        let current = realm(lints.env_name)?;
        let desired = realm(DESIRED_ENV)?;
        Ok(lint::destructive_changes(
            &current,
            &desired,
            scope,
            lints.skips,
        ))
    };
    let data_dependent = || -> Result<Vec<String>, Box<RunResult>> {
        let catalog = |env: &str| -> Result<Catalog, Box<RunResult>> {
            Catalog::from_hcl(&inspect(env, None)?).map_err(|err| unreadable(&err))
        };
        let current = catalog(lints.env_name)?;
        let desired = catalog(DESIRED_ENV)?;
        let dialect = Dialect::of(lints.driver, &current);
        Ok(lint::data_dependent_changes(
            &current,
            &desired,
            scope,
            dialect,
            lints.skips,
        ))
    };
    let drops = if lints.destructive {
        match destructive() {
            Ok(drops) => drops,
            Err(result) => return Some(*result),
        }
    } else {
        Vec::new()
    };
    let dependent = if lints.data_depend {
        match data_dependent() {
            Ok(changes) => changes,
            Err(result) => return Some(*result),
        }
    } else {
        Vec::new()
    };
    if lints.destructive && drops.is_empty() {
        run.log("lint: no destructive change");
    }
    if lints.data_depend && dependent.is_empty() {
        run.log("lint: no data-dependent change");
    }
    let message = refusal(&drops, &dependent)?;
    run.log(&message);
    Some(run.failed(Reason::LintPolicyError, &message, false))
}

/// The refusal of the lint policies, None when neither found anything. Upstream's wording for
/// the destructive lint, which scripts compare: the header, then one `- <change>` line each,
/// then the policy that refused; the data-dependent lint's in the same shape, after it.
fn refusal(drops: &[String], dependent: &[String]) -> Option<String> {
    let section = |header: &str, changes: &[String]| {
        format!(
            "{header}:\n{}",
            changes
                .iter()
                .map(|change| format!("- {change}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let mut sections = Vec::new();
    let mut policies = Vec::new();
    if !drops.is_empty() {
        sections.push(section("destructive changes detected", drops));
        policies.push("spec.policy.lint.destructive.error is true");
    }
    if !dependent.is_empty() {
        sections.push(section("data dependent changes detected", dependent));
        policies.push(
            "spec.policy.lint.dataDepend.error is true (set it to false for this change, or \
             change the data and the desired schema in steps)",
        );
    }
    if sections.is_empty() {
        return None;
    }
    Some(format!(
        "{}\nnothing was applied: {}",
        sections.join("\n"),
        policies.join("; ")
    ))
}

/// An Atlas error with no JSON to read: Atlas prints none when it cannot read the desired
/// schema or reach the database, so its text is classified (a broken desired schema is
/// `ReadSchema`: Atlas reads it by running it on the dev database, and an error there is in the
/// user's schema, not in the target).
fn failure(run: &Run, error: &str) -> RunResult {
    run.log(error);
    let verdict = classify::classify(Kind::Schema, error);
    run.failed(verdict.reason, error, verdict.transient)
}

/// The index statements of `applied` that the concurrent index policy wanted concurrent but
/// this Atlas build planned without `CONCURRENTLY`.
fn blocking_index_statements(applied: &[String], options: &SchemaApply) -> Vec<String> {
    let wanted = |verb: &str| match verb {
        "CREATE" => options.concurrent_index_create == Some(true),
        "DROP" => options.concurrent_index_drop == Some(true),
        _ => false,
    };
    applied
        .iter()
        .filter(|statement| {
            let upper = statement.to_uppercase();
            let mut words = upper.split_whitespace();
            let verb = words.next().unwrap_or_default();
            let rest: Vec<&str> = words.collect();
            let is_index = rest.first() == Some(&"INDEX")
                || (rest.first() == Some(&"UNIQUE") && rest.get(1) == Some(&"INDEX"));
            is_index && wanted(verb) && !rest.contains(&"CONCURRENTLY")
        })
        .cloned()
        .collect()
}

/// The statements of a message, one `- <statement>` line each, each on one line and cut, at
/// most [`LISTED_STATEMENTS`] of them: a message lives in a condition and an event.
fn statement_list(statements: &[String]) -> String {
    let mut lines: Vec<String> = statements
        .iter()
        .take(LISTED_STATEMENTS)
        .map(|statement| {
            let line = statement.split_whitespace().collect::<Vec<_>>().join(" ");
            match line.char_indices().nth(LISTED_STATEMENT_CHARS) {
                Some((at, _)) => format!("- {}…", &line[..at]),
                None => format!("- {line}"),
            }
        })
        .collect();
    if statements.len() > LISTED_STATEMENTS {
        lines.push(format!(
            "- … and {} more (the Job's log has them all)",
            statements.len() - LISTED_STATEMENTS
        ));
    }
    lines.join("\n")
}

const LISTED_STATEMENTS: usize = 10;
const LISTED_STATEMENT_CHARS: usize = 160;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_statements_without_concurrently_are_found_when_the_policy_wants_it() {
        let applied = [
            "CREATE INDEX \"a\" ON \"t\" (\"x\")".to_string(),
            "CREATE UNIQUE INDEX CONCURRENTLY \"b\" ON \"t\" (\"y\")".into(),
            "DROP INDEX \"c\"".into(),
            "CREATE TABLE \"index\" (id int)".into(),
        ];
        let create = SchemaApply {
            concurrent_index_create: Some(true),
            ..SchemaApply::default()
        };
        assert_eq!(
            blocking_index_statements(&applied, &create),
            [applied[0].clone()]
        );
        assert!(blocking_index_statements(&applied, &SchemaApply::default()).is_empty());
    }

    #[test]
    fn applied_statements_are_listed_within_bounds() {
        let two = [
            "CREATE TABLE t (\n  id int\n)".to_string(),
            "CREATE INDEX i ON t (id)".into(),
        ];
        assert_eq!(
            statement_list(&two),
            "- CREATE TABLE t ( id int )\n- CREATE INDEX i ON t (id)"
        );
        let many: Vec<String> = (0..12).map(|n| format!("DROP TABLE t{n}")).collect();
        let listed = statement_list(&many);
        assert_eq!(listed.lines().count(), LISTED_STATEMENTS + 1);
        assert!(
            listed.ends_with("- … and 2 more (the Job's log has them all)"),
            "{listed}"
        );
        let long = ["x".repeat(500)];
        assert_eq!(
            statement_list(&long).chars().count(),
            "- ".len() + LISTED_STATEMENT_CHARS + 1
        );
    }
}
