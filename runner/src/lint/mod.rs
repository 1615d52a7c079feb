//! The lints of a change: the destructive one here (what the plan would drop, found by comparing
//! Atlas's inspection of the database with its inspection of the desired schema, both JSON, not
//! by reading SQL text: a column named `drop_count` or a `-- drop table` comment is nothing), the
//! data-dependent one in [`data_depend`], and what the project file says of either. An
//! AtlasSchema compares the database with its desired schema; an AtlasMigration the states
//! before and after its pending files.

use hcl::{Block, Body, Expression};
use serde::Deserialize;

use crate::target::Scope;

mod data_depend;
pub use data_depend::{Catalog, Dialect, data_dependent_changes};

/// `atlas schema inspect --format '{{ json . }}'`, the parts we compare.
#[derive(Debug, Default, Deserialize)]
pub struct Realm {
    #[serde(default)]
    pub schemas: Vec<Schema>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Schema {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tables: Vec<Table>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Table {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub columns: Vec<Column>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Column {
    #[serde(default)]
    pub name: String,
}

/// Which changes the diff policy leaves out of the plan: `diff { skip { … } }` of the env Atlas
/// runs with (`policy.diff.skip`, and a custom config's own skip block merged with it). The
/// drops are the destructive lint's; the others the data-dependent lint's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skips {
    pub drop_schema: bool,
    pub drop_table: bool,
    pub drop_column: bool,
    pub modify_table: bool,
    pub add_column: bool,
    pub modify_column: bool,
    pub add_index: bool,
    pub modify_index: bool,
}

impl Skips {
    /// The skips of `env "<env_name>"` in the project file Atlas runs with, read as HCL: what
    /// Atlas leaves out of the plan is what the lint must leave out too, or it refuses a drop
    /// that would never happen. As Atlas's `Diff.Extend`: the env's `diff { skip { … } }`, or,
    /// when the env's diff has no skip block, the project's top-level `diff { skip { … } }`.
    /// Only a literal `true` counts: a value Atlas computes (a variable, a function) is not
    /// known here, and counting it as "not skipped" can only refuse, never let a drop through.
    pub fn of_env(project: &Body, env_name: &str) -> Skips {
        fn blocks<'a>(body: &'a Body, identifier: &'a str) -> impl Iterator<Item = &'a Block> {
            body.blocks()
                .filter(move |block| block.identifier.as_str() == identifier)
        }
        fn skip_blocks(body: &Body) -> Vec<&Block> {
            blocks(body, "diff")
                .flat_map(|diff| blocks(&diff.body, "skip"))
                .collect()
        }
        let in_env: Vec<&Block> = blocks(project, "env")
            .filter(|env| env.labels.len() == 1 && env.labels[0].as_str() == env_name)
            .flat_map(|env| skip_blocks(&env.body))
            .collect();
        let chosen = if in_env.is_empty() {
            skip_blocks(project)
        } else {
            in_env
        };
        let mut skips = Skips::default();
        for attribute in chosen.iter().flat_map(|skip| skip.body.attributes()) {
            let on = matches!(attribute.expr, Expression::Bool(true));
            match attribute.key.as_str() {
                "drop_schema" => skips.drop_schema |= on,
                "drop_table" => skips.drop_table |= on,
                "drop_column" => skips.drop_column |= on,
                "modify_table" => skips.modify_table |= on,
                "add_column" => skips.add_column |= on,
                "modify_column" => skips.modify_column |= on,
                "add_index" => skips.add_index |= on,
                "modify_index" => skips.modify_index |= on,
                _ => {}
            }
        }
        skips
    }
}

/// The `exclude` patterns of `env "<env_name>"` in the project file Atlas runs with (the spec's,
/// or else a custom config's own); the literal strings only, as those are all that is known
/// before Atlas runs.
pub fn excludes_of_env(project: &Body, env_name: &str) -> Vec<String> {
    project
        .blocks()
        .filter(|env| {
            env.identifier.as_str() == "env"
                && env.labels.len() == 1
                && env.labels[0].as_str() == env_name
        })
        .flat_map(|env| env.body.attributes())
        .filter(|attribute| attribute.key.as_str() == "exclude")
        .flat_map(|attribute| match &attribute.expr {
            Expression::Array(values) => values
                .iter()
                .filter_map(|value| match value {
                    Expression::String(text) => Some(text.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Whether the project file Atlas runs with asks for the lint check `check` (Atlas's analyzer
/// names: `destructive`, `data_depend`) itself: `lint { <check> { error = … } }` in `env
/// "<env_name>"`, or else at the top level (the env's lint extends the top-level one). A value
/// Atlas computes (a variable, a function) is not known here and counts as on: refusing is the
/// safe side.
pub fn lint_error_of_env(project: &Body, env_name: &str, check: &str) -> bool {
    let error_of = |body: &Body| -> Option<bool> {
        body.blocks()
            .filter(|lint| lint.identifier.as_str() == "lint")
            .flat_map(|lint| lint.body.blocks())
            .filter(|block| block.identifier.as_str() == check)
            .flat_map(|check| check.body.attributes())
            .filter(|attribute| attribute.key.as_str() == "error")
            .map(|attribute| !matches!(attribute.expr, Expression::Bool(false)))
            .next_back()
    };
    let in_env = project
        .blocks()
        .filter(|env| {
            env.identifier.as_str() == "env"
                && env.labels.len() == 1
                && env.labels[0].as_str() == env_name
        })
        .filter_map(|env| error_of(&env.body))
        .next_back();
    in_env.or_else(|| error_of(project)).unwrap_or(false)
}

/// Every schema, table and column the plan would drop, as `DROP TABLE users.t` lines. `scope`
/// is the target URL's, as Atlas reads it ([`Scope::Realm`] when it is not known).
pub fn destructive_changes(
    current: &Realm,
    desired: &Realm,
    scope: Scope,
    skips: Skips,
) -> Vec<String> {
    let mut drops = Vec::new();
    // Pairing as Atlas diffs. A URL bound to one schema (MySQL's database, a PostgreSQL URL
    // with `search_path`) inspects as one schema on each side, named after the target and the
    // dev database, and Atlas compares their contents whatever the names: pair them. A
    // realm-level URL is diffed schema by schema, by name, even when each side has just one:
    // `legacy` in the database and `public` in the desired state is `DROP SCHEMA legacy
    // CASCADE`, which pairing them by position would hide.
    let pairs: Vec<(&Schema, Option<&Schema>)> =
        if scope == Scope::Schema && current.schemas.len() == 1 && desired.schemas.len() == 1 {
            vec![(&current.schemas[0], Some(&desired.schemas[0]))]
        } else {
            current
                .schemas
                .iter()
                .map(|schema| {
                    let other = desired.schemas.iter().find(|d| d.name == schema.name);
                    (schema, other)
                })
                .collect()
        };
    for (schema, desired_schema) in pairs {
        let Some(desired_schema) = desired_schema else {
            if !skips.drop_schema {
                drops.push(format!("DROP SCHEMA {}", schema.name));
            }
            continue;
        };
        for table in &schema.tables {
            match desired_schema.tables.iter().find(|t| t.name == table.name) {
                None if !skips.drop_table => {
                    drops.push(format!("DROP TABLE {}.{}", schema.name, table.name));
                }
                None => {}
                Some(desired_table) if !skips.drop_column => {
                    for column in &table.columns {
                        if !desired_table.columns.iter().any(|c| c.name == column.name) {
                            drops.push(format!(
                                "ALTER TABLE {}.{} DROP COLUMN {}",
                                schema.name, table.name, column.name
                            ));
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm(json: &str) -> Realm {
        serde_json::from_str(json).unwrap()
    }

    const CURRENT: &str = r#"{"schemas":[{"name":"main","tables":[
        {"name":"t","columns":[{"name":"id"},{"name":"drop_count"},{"name":"bio"}]},
        {"name":"keep_me","columns":[{"name":"id"}]}]}]}"#;

    #[test]
    fn dropped_tables_and_columns_are_named() {
        let desired = realm(
            r#"{"schemas":[{"name":"dev","tables":[{"name":"t","columns":[{"name":"id"},{"name":"drop_count"}]}]}]}"#,
        );
        assert_eq!(
            destructive_changes(&realm(CURRENT), &desired, Scope::Schema, Skips::default()),
            // In the database's table order.
            [
                "ALTER TABLE main.t DROP COLUMN bio",
                "DROP TABLE main.keep_me"
            ]
        );
    }

    #[test]
    fn names_that_look_destructive_are_not() {
        let same = realm(CURRENT);
        assert!(
            destructive_changes(&realm(CURRENT), &same, Scope::Schema, Skips::default()).is_empty()
        );
    }

    #[test]
    fn skipped_drops_are_not_destructive() {
        let desired = realm(
            r#"{"schemas":[{"name":"main","tables":[{"name":"t","columns":[{"name":"id"}]}]}]}"#,
        );
        let skips = Skips {
            drop_table: true,
            drop_column: true,
            ..Skips::default()
        };
        assert!(destructive_changes(&realm(CURRENT), &desired, Scope::Schema, skips).is_empty());
    }

    #[test]
    fn a_schema_missing_from_the_desired_state_is_dropped() {
        let current = realm(r#"{"schemas":[{"name":"a"},{"name":"b"}]}"#);
        let desired = realm(r#"{"schemas":[{"name":"a"}]}"#);
        assert_eq!(
            destructive_changes(&current, &desired, Scope::Realm, Skips::default()),
            ["DROP SCHEMA b"]
        );
    }

    #[test]
    fn a_realm_level_url_pairs_one_schema_each_by_name() {
        let current = realm(r#"{"schemas":[{"name":"legacy","tables":[{"name":"users"}]}]}"#);
        let desired = realm(r#"{"schemas":[{"name":"public","tables":[{"name":"users"}]}]}"#);
        assert_eq!(
            destructive_changes(&current, &desired, Scope::Realm, Skips::default()),
            ["DROP SCHEMA legacy"]
        );
        // Bound to one schema, the same two are the target's schema and the dev database's.
        assert!(
            destructive_changes(&current, &desired, Scope::Schema, Skips::default()).is_empty()
        );
    }

    #[test]
    fn the_destructive_check_is_read_from_the_env_or_the_top_level() {
        let project: Body = hcl::parse(
            r#"
variable "strict" {
  type = bool
}
lint {
  destructive {
    error = true
  }
}
env "relaxed" {
  lint {
    destructive {
      error = false
    }
  }
}
env "computed" {
  lint {
    destructive {
      error = var.strict
    }
  }
}
env "plain" {
  url = "postgres://db/app"
}
"#,
        )
        .unwrap();
        assert!(
            lint_error_of_env(&project, "plain", "destructive"),
            "the top level serves"
        );
        assert!(
            !lint_error_of_env(&project, "relaxed", "destructive"),
            "the env's own wins"
        );
        assert!(
            lint_error_of_env(&project, "computed", "destructive"),
            "unknown counts as on"
        );
        let none: Body = hcl::parse("env \"k8s\" {\n  url = \"sqlite://x\"\n}\n").unwrap();
        assert!(!lint_error_of_env(&none, "k8s", "destructive"));
        // Each check is its own block: the destructive one does not turn data_depend on.
        assert!(!lint_error_of_env(&project, "plain", "data_depend"));
    }

    #[test]
    fn skips_are_read_from_the_env_atlas_runs_with() {
        let project: Body = hcl::parse(
            r#"
variable "keep" {
  type = bool
}
env "other" {
  diff {
    skip {
      drop_column = true
    }
  }
}
env "k8s" {
  diff {
    skip {
      drop_table = true
      drop_schema = var.keep
      drop_index = true
    }
  }
}
"#,
        )
        .unwrap();
        assert_eq!(
            Skips::of_env(&project, "k8s"),
            Skips {
                drop_table: true,
                ..Skips::default()
            }
        );
        assert_eq!(Skips::of_env(&project, "none"), Skips::default());
        // The top-level diff serves an env whose diff has no skip block of its own.
        let project: Body = hcl::parse(
            r#"
diff {
  skip {
    drop_column = true
  }
}
env "k8s" {
  diff {
    concurrent_index {
      add = true
    }
  }
}
env "own" {
  diff {
    skip {
      drop_table = true
    }
  }
}
"#,
        )
        .unwrap();
        let column = Skips {
            drop_column: true,
            ..Skips::default()
        };
        assert_eq!(Skips::of_env(&project, "k8s"), column);
        assert_eq!(Skips::of_env(&project, "absent"), column);
        assert_eq!(
            Skips::of_env(&project, "own"),
            Skips {
                drop_table: true,
                ..Skips::default()
            }
        );
    }
}
