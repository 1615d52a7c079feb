//! The `atlas.hcl` the runner writes for each apply, emitted with `hcl-rs` (never by string
//! concatenation). URLs are read with `getenv`, so no secret is written to the file either.

use hcl::expr::{Expression, FuncCall};
use hcl::{Block, Body};

use crate::atlas::{DEV_URL_ENV, URL_ENV};
use contract::{MigrateApply, SchemaApply};

fn getenv(name: &str) -> Expression {
    Expression::from(FuncCall::builder("getenv").arg(name).build())
}

fn strings(values: &[String]) -> Expression {
    Expression::Array(values.iter().cloned().map(Expression::from).collect())
}

/// `env "<name>" { url = getenv(…) dev = getenv(…) migration { … } }` for `atlas migrate`;
/// without `url` when the resource's own project file names the target, without `dev` unless the
/// runner has a dev database (`migrate down` plans on one).
pub fn migration(env_name: &str, dir_url: &str, generated: Generated, job: &MigrateApply) -> Body {
    let mut migration = Block::builder("migration").add_attribute(("dir", dir_url));
    if let Some(schema) = &job.revisions_schema {
        migration = migration.add_attribute(("revisions_schema", schema.as_str()));
    }
    if let Some(baseline) = &job.baseline {
        migration = migration.add_attribute(("baseline", baseline.as_str()));
    }
    let mut env = Block::builder("env").add_label(env_name);
    if generated.url {
        env = env.add_attribute(("url", getenv(URL_ENV)));
    }
    if generated.dev {
        env = env.add_attribute(("dev", getenv(DEV_URL_ENV)));
    }
    let env = env.add_block(migration.build()).build();
    Body::builder().add_block(env).build()
}

/// The envs the lint of pending migration files inspects: the directory's files the database
/// has applied, and those with the pending files, each a migration directory of its own that
/// Atlas replays on the dev database when it inspects it (and cleans away afterwards).
pub const LINT_APPLIED_ENV: &str = "lint_applied";
pub const LINT_PENDING_ENV: &str = "lint_pending";

/// `env "<name>" { url = "<dir_url>" dev = getenv(…) }`: a migration directory as a state.
pub fn replay(env_name: &str, dir_url: &str) -> Block {
    Block::builder("env")
        .add_label(env_name)
        .add_attribute(("url", dir_url))
        .add_attribute(("dev", getenv(DEV_URL_ENV)))
        .build()
}

/// The env that names the desired schema itself as its URL, so the lint can inspect it with
/// the dev database (whose URL must stay off the command line).
pub const DESIRED_ENV: &str = "desired";

/// Which URLs the runner gives the generated env; the others the resource's own project file
/// names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generated {
    pub url: bool,
    pub dev: bool,
}

impl Generated {
    /// The target's URL only (no dev database).
    pub const URL: Generated = Generated {
        url: true,
        dev: false,
    };
}

/// Two envs for `atlas schema apply` and its lint: `<name>` { url, dev, src, schemas, exclude,
/// diff { … } } for the target, and [`DESIRED_ENV`] { url = <desired file>, dev, … } (which
/// needs a dev URL of the runner's).
pub fn schema(env_name: &str, desired_url: &str, generated: Generated, job: &SchemaApply) -> Body {
    let mut target = scope(Block::builder("env").add_label(env_name), job);
    if generated.url {
        target = target.add_attribute(("url", getenv(URL_ENV)));
    }
    target = target.add_attribute(("src", desired_url));
    if generated.dev {
        target = target.add_attribute(("dev", getenv(DEV_URL_ENV)));
    }
    let mut diff = Block::builder("diff");
    let mut has_diff = false;
    if !job.skip.is_empty() {
        let mut skip = Block::builder("skip");
        for change in &job.skip {
            skip = skip.add_attribute((change.as_str(), true));
        }
        diff = diff.add_block(skip.build());
        has_diff = true;
    }
    if job.concurrent_index_create.is_some() || job.concurrent_index_drop.is_some() {
        let mut concurrent = Block::builder("concurrent_index");
        if let Some(create) = job.concurrent_index_create {
            // Atlas 1.x reads `create`; v0.13.1 reads `add` (and ignores `create`, as 1.x
            // ignores `add`): both, so every build plans what the policy asks.
            concurrent = concurrent
                .add_attribute(("create", create))
                .add_attribute(("add", create));
        }
        if let Some(drop) = job.concurrent_index_drop {
            concurrent = concurrent.add_attribute(("drop", drop));
        }
        diff = diff.add_block(concurrent.build());
        has_diff = true;
    }
    let target = if has_diff {
        target.add_block(diff.build())
    } else {
        target
    };
    let desired = scope(Block::builder("env").add_label(DESIRED_ENV), job)
        .add_attribute(("url", desired_url))
        .add_attribute(("dev", getenv(DEV_URL_ENV)));
    Body::builder()
        .add_block(target.build())
        .add_block(desired.build())
        .build()
}

/// `schemas` and `exclude`: what Atlas looks at, on both sides.
fn scope(mut env: hcl::structure::BlockBuilder, job: &SchemaApply) -> hcl::structure::BlockBuilder {
    if !job.schemas.is_empty() {
        env = env.add_attribute(("schemas", strings(&job.schemas)));
    }
    if !job.exclude.is_empty() {
        env = env.add_attribute(("exclude", strings(&job.exclude)));
    }
    env
}

/// The names `policy.diff.skip` may hold (upstream's list); anything else is refused before
/// Atlas sees it.
pub const SKIP_CHANGES: &[&str] = &[
    "add_schema",
    "drop_schema",
    "modify_schema",
    "add_table",
    "drop_table",
    "modify_table",
    "add_column",
    "drop_column",
    "modify_column",
    "add_index",
    "drop_index",
    "modify_index",
    "add_foreign_key",
    "drop_foreign_key",
    "modify_foreign_key",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_config_reads_the_url_from_the_environment() {
        let job = MigrateApply {
            dir: "/migrations".into(),
            revisions_schema: Some("atlas".into()),
            baseline: Some("20230101000000".into()),
            ..Default::default()
        };
        let text =
            hcl::to_string(&migration("k8s", "file:///tmp/dir", Generated::URL, &job)).unwrap();
        assert!(text.contains("env \"k8s\""), "{text}");
        assert!(!text.contains("dev ="), "{text}");
        assert!(
            text.contains("url = getenv(\"ATLAS_RUNNER_URL\")"),
            "{text}"
        );
        // Named by the resource's own project file: no url of the runner's to override it.
        let dev_only = Generated {
            url: false,
            dev: true,
        };
        let text = hcl::to_string(&migration("k8s", "file:///tmp/dir", dev_only, &job)).unwrap();
        assert!(!text.contains("url ="), "{text}");
        assert!(
            text.contains("dev = getenv(\"ATLAS_RUNNER_DEV_URL\")"),
            "{text}"
        );
        assert!(text.contains("revisions_schema = \"atlas\""), "{text}");
        assert!(text.contains("baseline = \"20230101000000\""), "{text}");
    }

    #[test]
    fn schema_config_quotes_what_it_must() {
        let job = SchemaApply {
            exclude: vec!["ignore_me".into(), "a\"b".into()],
            skip: vec!["drop_index".into()],
            concurrent_index_create: Some(true),
            ..Default::default()
        };
        let both = Generated {
            url: true,
            dev: true,
        };
        let text = hcl::to_string(&schema("k8s", "file:///tmp/schema.sql", both, &job)).unwrap();
        assert!(text.contains("env \"desired\""), "{text}");
        assert!(text.contains("url = \"file:///tmp/schema.sql\""), "{text}");
        assert!(
            text.contains("dev = getenv(\"ATLAS_RUNNER_DEV_URL\")"),
            "{text}"
        );
        assert!(text.contains(r#""a\"b""#), "{text}");
        assert!(text.contains("drop_index = true"), "{text}");
        assert!(text.contains("create = true"), "{text}");
        assert!(text.contains("add = true"), "{text}");
    }
}
