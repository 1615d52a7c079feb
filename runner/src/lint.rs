//! The destructive-change lint of an AtlasSchema: what the plan would drop, found by comparing
//! Atlas's inspection of the database with its inspection of the desired schema (both JSON), not
//! by reading SQL text: a column named `drop_count` or a `-- drop table` comment is nothing.

use serde::Deserialize;

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

/// Which drops the diff policy leaves out of the plan (`policy.diff.skip`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Skips {
    pub drop_schema: bool,
    pub drop_table: bool,
    pub drop_column: bool,
}

/// Every schema, table and column the plan would drop, as `drop table users.t` lines.
pub fn destructive_changes(current: &Realm, desired: &Realm, skips: Skips) -> Vec<String> {
    let mut drops = Vec::new();
    // A URL bound to one schema (MySQL's database, or a schema-scoped PostgreSQL URL) inspects
    // as one schema on each side, named after the target and the dev database: pair them.
    let pairs: Vec<(&Schema, Option<&Schema>)> =
        if current.schemas.len() == 1 && desired.schemas.len() == 1 {
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
            destructive_changes(&realm(CURRENT), &desired, Skips::default()),
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
        assert!(destructive_changes(&realm(CURRENT), &same, Skips::default()).is_empty());
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
        assert!(destructive_changes(&realm(CURRENT), &desired, skips).is_empty());
    }

    #[test]
    fn a_schema_missing_from_the_desired_state_is_dropped() {
        let current = realm(r#"{"schemas":[{"name":"a"},{"name":"b"}]}"#);
        let desired = realm(r#"{"schemas":[{"name":"a"}]}"#);
        assert_eq!(
            destructive_changes(&current, &desired, Skips::default()),
            ["DROP SCHEMA b"]
        );
    }
}
