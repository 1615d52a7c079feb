//! Why an Atlas call failed, in the contract's terms: the [`Reason`] the result carries and
//! whether another attempt can go differently. One table, [`RULES`], read top to bottom; its
//! tests hold the exact messages of each Atlas version it was checked against.
//!
//! Structured output comes first, and is read where the call is made: `migrate apply --format
//! '{{ json . }}'` names the file and statement that failed (`Applied[].Error{Stmt,Text}`) and
//! `schema apply`'s JSON the statement (`Changes.Error`); which step failed decides their reason
//! there, and only the database's own `Text` of the error comes here, for transient or not.
//!
//! Text is all there is for everything else, on every Atlas version, because Atlas prints no
//! JSON for a failure before its report starts: `migrate apply` returns a checksum error, a lock
//! held elsewhere, a connection error, a database that is not clean or a file out of order before
//! it logs anything (ariga/atlas `cmd/atlas/internal/cmdapi/migrate_oss.go`, `migrateApplyRun`;
//! v0.13.1 alike), and `schema apply` a desired schema it cannot read before it plans anything
//! (`cmd/atlas/internal/cmdext/reader.go`). Those messages are matched here, against patterns
//! taken from both versions' messages.
//!
//! A pattern is looked for in the message in lowercase, with every double-quoted part blanked
//! out: Atlas quotes the user's statements, file and object names with Go's `%q`, so a table
//! named `timeout` or a statement mentioning a checksum never decides anything.

use contract::{Kind, Reason};

/// What went wrong, as far as the result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database could not be reached, or dropped the connection.
    Unreachable,
    /// The database is busy: Atlas's lock is held by another session, or it takes no more
    /// connections for now.
    Busy,
    /// The migration directory does not match its `atlas.sum`.
    Checksum,
    /// The desired schema cannot be read: SQL that fails on the dev database, HCL that does not
    /// parse or evaluate.
    DesiredSchema,
    /// The database refused the credentials.
    Credentials,
    /// The database has a history the directory does not account for: not clean before the
    /// first migration, or a file added below its version.
    History,
    /// Anything no row names: the apply failed, and would fail the same way again.
    Other,
}

impl Failure {
    /// The reason a failure of this kind of resource is reported under.
    pub fn reason(self, kind: Kind) -> Reason {
        match self {
            Failure::Checksum => Reason::ReadingMigrationData,
            Failure::DesiredSchema => Reason::ReadSchema,
            _ => kind.failure_reason(),
        }
    }

    /// Whether another attempt can go differently (the Job's backoff retries it).
    pub fn is_transient(self) -> bool {
        matches!(self, Failure::Unreachable | Failure::Busy)
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Rule {
    /// Looked for in the message, lowercase, with its double-quoted parts blanked out.
    pub pattern: &'static str,
    /// The kind of resource the row is about; `None`: both.
    pub kind: Option<Kind>,
    pub failure: Failure,
}

const fn rule(pattern: &'static str, kind: Option<Kind>, failure: Failure) -> Rule {
    Rule {
        pattern,
        kind,
        failure,
    }
}

use Failure::*;
const MIGRATION: Option<Kind> = Some(Kind::Migration);
const SCHEMA: Option<Kind> = Some(Kind::Schema);

/// The desired schema's file name as the runner writes it (`schema.rs`): HCL diagnostics start
/// with the file they are about.
pub const DESIRED_FILE_STEM: &str = "schema";

/// The table. The first row whose pattern the message contains decides; no row: [`Other`].
///
/// The connection and lock rows come first: they name the innermost cause (the driver's or the
/// server's), whichever step met it, and a database that could not be reached says nothing about
/// the inputs. The same texts on v0.13.1 and v1.x unless a row says otherwise: Atlas wraps its
/// drivers' errors (`postgres: scanning system variables: %w`, `mysql: query system variables:
/// %w`, in `sql/postgres/driver.go` and `sql/mysql/driver.go`) and prints the rest as they come.
pub const RULES: &[Rule] = &[
    // Go's net package, under every driver.
    rule("connection refused", None, Unreachable),
    rule("connection reset", None, Unreachable),
    // A name that does not resolve (yet): a Service not created yet, or DNS down for a moment.
    rule("no such host", None, Unreachable),
    rule("i/o timeout", None, Unreachable),
    rule("network is unreachable", None, Unreachable),
    rule("broken pipe", None, Unreachable),
    // lib/pq, database/sql.
    rule("server closed the connection", None, Unreachable),
    rule("bad connection", None, Unreachable),
    // PostgreSQL's FATALs while it starts or stops.
    rule("the database system is starting up", None, Unreachable),
    rule("the database system is shutting down", None, Unreachable),
    // MySQL/MariaDB error 1040; PostgreSQL's max_connections.
    rule("too many connections", None, Busy),
    rule("too many clients", None, Busy),
    // Atlas's advisory lock: `acquiring database lock: %w` around `sql/schema: lock is held by
    // other session` (sql/schema/migrate.go ErrLocked), on both versions.
    rule("acquiring database lock", None, Busy),
    rule("lock is held by other session", None, Busy),
    rule("lock timeout", None, Busy),
    // Anything else that ran out of time (a statement timeout, a lock wait).
    rule("timeout", None, Unreachable),
    // `migrate apply` refuses a directory that does not match atlas.sum (sql/migrate/dir.go
    // Validate: ErrChecksumMismatch, ErrChecksumNotFound, ErrChecksumFormat); the guidance
    // `You have a checksum error in your migration directory.` goes to stdout.
    rule("checksum mismatch", MIGRATION, Checksum),
    rule("checksum file not found", MIGRATION, Checksum),
    rule("checksum file format invalid", MIGRATION, Checksum),
    rule("checksum error", MIGRATION, Checksum),
    // Atlas reads a desired SQL schema by running it on the dev database, as a one-file
    // migration directory: v0.13.1 says `sql/migrate: read migration directory state: …` (as
    // v1.x still does for an error that is not a statement's: sql/migrate/migrate.go Replay);
    // v1.x names the file and the statement, `read state from "schema.sql": executing statement:
    // …` (cmd/atlas/internal/cmdext/reader.go stateSchemaSQL).
    rule("read migration directory state", SCHEMA, DesiredSchema),
    rule("read state from", SCHEMA, DesiredSchema),
    // An HCL diagnostic about the desired schema: `<path>/schema.hcl:<line>,<column>-…:
    // <summary>; <detail>` (hashicorp/hcl's format, on both versions).
    rule("schema.hcl:", SCHEMA, DesiredSchema),
    // PostgreSQL's 28P01 through lib/pq; MySQL/MariaDB's error 1045.
    rule("password authentication failed", None, Credentials),
    rule("access denied for user", None, Credentials),
    // sql/migrate NotCleanError: `sql/migrate: connected database is not clean: <reason>.
    // baseline version or allow-dirty is required`.
    rule("connected database is not clean", MIGRATION, History),
    // v1.x's linear execution order (sql/migrate/migrate.go HistoryNonLinearError); v0.13.1
    // says nothing, and migrate.rs finds such a file itself.
    rule("added out of order", MIGRATION, History),
];

/// What a failed Atlas call comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub failure: Failure,
    pub reason: Reason,
    pub transient: bool,
}

/// The verdict on `message`, an error Atlas printed while applying a resource of `kind`.
pub fn classify(kind: Kind, message: &str) -> Verdict {
    let text = unquoted(message).to_lowercase();
    let failure = RULES
        .iter()
        .filter(|rule| rule.kind.is_none_or(|k| k == kind))
        .find(|rule| text.contains(rule.pattern))
        .map_or(Failure::Other, |rule| rule.failure);
    Verdict {
        failure,
        reason: failure.reason(kind),
        transient: failure.is_transient(),
    }
}

/// `text` with every double-quoted part (Go's `%q`, with its backslash escapes) replaced by
/// `""`, so that what the user wrote is never read as what Atlas said. An unclosed quote runs
/// to the end.
fn unquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    out.push('"');
                    break;
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One message as an Atlas version prints it, and what it must come to.
    struct Case {
        kind: Kind,
        message: &'static str,
        failure: Failure,
    }

    const fn case(kind: Kind, message: &'static str, failure: Failure) -> Case {
        Case {
            kind,
            message,
            failure,
        }
    }

    const M: Kind = Kind::Migration;
    const S: Kind = Kind::Schema;

    fn check(cases: &[Case]) {
        for case in cases {
            let verdict = classify(case.kind, case.message);
            assert_eq!(
                verdict.failure, case.failure,
                "{:?} {:?}",
                case.kind, case.message
            );
            assert_eq!(verdict.reason, case.failure.reason(case.kind));
        }
    }

    /// Atlas v0.13.1, the build here (`cargo xtask tools`), as it printed them on stderr (stdout
    /// where it says so) against the test databases: captured by `runner/tests/classify.rs`
    /// (`cargo test -p atlas-runner --test classify -- --nocapture`), which checks the same
    /// verdicts on whatever Atlas it runs.
    const V0_13_1: &[Case] = &[
        case(
            M,
            "Error: postgres: scanning system variables: dial tcp 127.0.0.1:41637: connect: connection refused",
            Unreachable,
        ),
        case(
            M,
            "Error: mysql: query system variables: dial tcp 127.0.0.1:41637: connect: connection refused",
            Unreachable,
        ),
        case(
            M,
            "Error: postgres: scanning system variables: dial tcp: lookup no-such-host.invalid on 10.255.255.53:53: no such host",
            Unreachable,
        ),
        case(
            M,
            "Error: mysql: query system variables: dial tcp: lookup nosuchhost.invalid on 10.255.255.53:53: no such host",
            Unreachable,
        ),
        case(
            M,
            "Error: acquiring database lock: pq: canceling statement due to user request",
            Busy,
        ),
        case(
            M,
            "Error: postgres: scanning system variables: pq: password authentication failed for user \"root\"",
            Credentials,
        ),
        case(
            M,
            "Error: mysql: query system variables: Error 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: YES)",
            Credentials,
        ),
        case(M, "Error: checksum mismatch", Checksum),
        case(M, "Error: checksum file not found", Checksum),
        // stdout, beside either of the two above.
        case(
            M,
            "You have a checksum error in your migration directory.\nThis happens if you manually create or edit a migration file.\nPlease check your migration files and run\n\n'atlas migrate hash'\n\nto re-hash the contents and resolve the error\n\n",
            Checksum,
        ),
        case(
            M,
            "Error: sql/migrate: connected database is not clean: found schema \"public\". baseline version or allow-dirty is required",
            History,
        ),
        case(
            M,
            "Error: sql/migrate: connected database is not clean: found table \"already_here\" in schema \"t_dirty_14370_3\". baseline version or allow-dirty is required",
            History,
        ),
        case(
            M,
            "Error: sql/migrate: connected database is not clean: found multiple tables: 2. baseline version or allow-dirty is required",
            History,
        ),
        case(
            S,
            "Error: sql/migrate: read migration directory state: sql/migrate: execute: executing statement \"create tabel users (id int);\" from version \"schema\": pq: syntax error at or near \"tabel\"",
            DesiredSchema,
        ),
        case(
            S,
            "Error: sql/migrate: read migration directory state: sql/migrate: execute: executing statement \"create tabel users (id int);\" from version \"schema\": Error 1064 (42000): You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'tabel users (id int)' at line 1",
            DesiredSchema,
        ),
        case(
            S,
            "Error: sql/migrate: read migration directory state: sql/migrate: execute: executing statement \"create tabel users (id int);\" from version \"schema\": near \"tabel\": syntax error",
            DesiredSchema,
        ),
        case(
            S,
            "Error: sql/migrate: read migration directory state: sql/migrate: execute: scanning statements from \"schema.sql\": 1:32: unclosed quote '\\''",
            DesiredSchema,
        ),
        case(
            S,
            "Error: /tmp/runner-classify-hcl-15406-ThreadId(2)/schema.hcl:1,15-16: Unclosed configuration block; There is no closing brace for this block before the end of the file. This may be caused by incorrect brace nesting elsewhere in this file.",
            DesiredSchema,
        ),
        case(
            S,
            "Error: /tmp/runner-classify-hcl-15406-ThreadId(2)/schema.hcl:5,12-18: Unknown column.type; There is no type named \"integr\". Did you mean \"integer\"?",
            DesiredSchema,
        ),
        case(
            S,
            "Error: /tmp/runner-classify-hcl-15406-ThreadId(2)/schema.hcl:2,12-18: Unknown variable; There is no variable named \"schema\".",
            DesiredSchema,
        ),
        // A dev database with a table in it: met while Atlas takes its snapshot, before it reads
        // the desired schema; an apply failure, as before this table.
        case(
            S,
            "Error: sql/migrate: taking database snapshot: sql/migrate: connected database is not clean: found table \"leftover\" in schema \"public\"",
            Other,
        ),
        case(
            S,
            "Error: mysql: query system variables: Error 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: YES)",
            Credentials,
        ),
        // `schema apply`'s JSON `Changes.Error.Text` of a statement SQLite refused.
        case(S, "create \"users\" table: near \")\": syntax error", Other),
    ];

    /// Atlas v1.x, put together from the format strings in its source (github.com/ariga/atlas,
    /// the file named above each), with Atlas's `Error: ` in front as its CLI prints an error.
    const V1: &[Case] = &[
        // sql/migrate/dir.go: ErrChecksumMismatch, ErrChecksumNotFound.
        case(M, "Error: checksum mismatch", Checksum),
        case(M, "Error: checksum file not found", Checksum),
        // cmd/atlas/internal/cmdapi/migrate.go printChecksumError (stdout, no terminal colors).
        case(
            M,
            "You have a checksum error in your migration directory.\nPlease check your migration files and run 'atlas migrate hash' to re-hash the contents\n\n",
            Checksum,
        ),
        // sql/migrate/migrate.go HistoryNonLinearError; the first as cmd/atlas/internal/cmdapi/
        // migrate_test.go (TestMigrate_ApplyExecOrder) expects it verbatim.
        case(
            M,
            "Error: migration file 2.sql was added out of order. See: https://atlasgo.io/versioned/apply#non-linear-error",
            History,
        ),
        case(
            M,
            "Error: migration files 2.sql, 3.sql were added out of order. See: https://atlasgo.io/versioned/apply#non-linear-error",
            History,
        ),
        // sql/migrate/migrate.go Pending and NotCleanError, with sql/postgres/driver.go
        // CheckClean's reason.
        case(
            M,
            "Error: sql/migrate: connected database is not clean: found table \"users\" in schema \"public\". baseline version or allow-dirty is required",
            History,
        ),
        // cmd/atlas/internal/cmdapi/migrate_oss.go migrateApplyRun, around sql/schema/migrate.go
        // ErrLocked.
        case(
            M,
            "Error: acquiring database lock: sql/schema: lock is held by other session",
            Busy,
        ),
        // sql/postgres/driver.go Open, around Go's dial error.
        case(
            M,
            "Error: postgres: scanning system variables: dial tcp 10.96.0.15:5432: connect: connection refused",
            Unreachable,
        ),
        case(
            M,
            "Error: postgres: scanning system variables: pq: password authentication failed for user \"app\"",
            Credentials,
        ),
        // sql/migrate/migrate.go Execute: the JSON report's `Error` of a failed statement.
        case(
            M,
            "sql/migrate: executing statement \"INSERT INTO t VALUES (1)\" from version \"2\": pq: duplicate key value violates unique constraint \"t_pkey\"",
            Other,
        ),
        // cmd/atlas/internal/cmdext/reader.go stateSchemaSQL: the phrase v0.13.1 printed is gone.
        case(
            S,
            "Error: read state from \"schema.sql\": executing statement: \"create tabel users (id int);\": pq: syntax error at or near \"tabel\"",
            DesiredSchema,
        ),
        case(
            S,
            "Error: read state from \"schema.sql\": executing statement: \"create tabel users (id int);\": Error 1064 (42000): You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'tabel users (id int)' at line 1",
            DesiredSchema,
        ),
        // sql/migrate/migrate.go Replay and Execute, for an error that is not a statement's
        // (stateSchemaSQL leaves it as it is), around sql/migrate/lex.go's.
        case(
            S,
            "Error: sql/migrate: read migration directory state: sql/migrate: scanning statements from \"schema.sql\": 1:32: unclosed quote '\\''",
            DesiredSchema,
        ),
        // cmd/atlas/internal/cmdext/reader.go mayParse returns hashicorp/hcl's diagnostics.
        case(
            S,
            "Error: /tmp/atlas-runner-1a2b/schema.hcl:1,15-16: Unclosed configuration block; There is no closing brace for this block before the end of the file. This may be caused by incorrect brace nesting elsewhere in this file.",
            DesiredSchema,
        ),
        // sql/migrate/migrate.go Replay takes its snapshot first; sql/postgres/driver.go Snapshot.
        case(
            S,
            "Error: sql/migrate: taking database snapshot: sql/migrate: connected database is not clean: found table \"leftover\" in schema \"public\"",
            Other,
        ),
    ];

    #[test]
    fn atlas_v0_13_1_messages() {
        check(V0_13_1);
    }

    #[test]
    fn atlas_v1_messages() {
        check(V1);
    }

    #[test]
    fn quoted_parts_are_blanked() {
        assert_eq!(
            unquoted(
                r#"executing statement "create table \"timeout\" (id int)" from version "schema": x"#
            ),
            r#"executing statement "" from version "": x"#
        );
        assert_eq!(unquoted(r#"near "tabel: syntax error"#), r#"near ""#);
        assert_eq!(unquoted("no quotes"), "no quotes");
    }

    /// A user's statement or name never decides: only what Atlas and the database said.
    #[test]
    fn what_the_user_wrote_is_not_read() {
        let verdict = classify(
            Kind::Migration,
            r#"sql/migrate: executing statement "CREATE TABLE checksum_timeout (id int)" from version "2": pq: permission denied for schema public"#,
        );
        assert_eq!(verdict.failure, Failure::Other);
        assert!(!verdict.transient);
    }

    #[test]
    fn reasons_follow_the_kind() {
        assert_eq!(
            Failure::Checksum.reason(Kind::Migration),
            Reason::ReadingMigrationData
        );
        assert_eq!(
            Failure::DesiredSchema.reason(Kind::Schema),
            Reason::ReadSchema
        );
        assert_eq!(
            Failure::Unreachable.reason(Kind::Schema),
            Reason::ApplyingSchema
        );
        assert_eq!(
            Failure::Credentials.reason(Kind::Migration),
            Reason::Migrating
        );
        assert!(Failure::Busy.is_transient() && Failure::Unreachable.is_transient());
        assert!(!Failure::Credentials.is_transient() && !Failure::Other.is_transient());
    }

    /// The rows about a desired schema or a directory apply to that kind only: a migration file
    /// that fails is `Migrating`, whatever its message looks like.
    #[test]
    fn rows_apply_to_their_kind() {
        assert_eq!(
            classify(M, "sql/migrate: read migration directory state: x").failure,
            Failure::Other
        );
        assert_eq!(classify(S, "checksum mismatch").failure, Failure::Other);
    }

    #[test]
    fn the_runner_names_the_desired_file_as_the_table_expects() {
        assert_eq!(format!("{DESIRED_FILE_STEM}.hcl:"), "schema.hcl:");
        assert!(RULES.iter().any(|rule| rule.pattern == "schema.hcl:"));
    }
}
