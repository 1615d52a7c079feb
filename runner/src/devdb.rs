//! The dev database as the runner found it, and the objects of the desired schema this Atlas
//! build does not manage.
//!
//! Atlas reads a desired schema by running it on the dev database, then drops what it knows it
//! created. What it does not know (the community build's views, sequences, functions, triggers,
//! …) stays: the next load of the same schema (the apply after the lint's inspection, or the
//! next run on a long-lived `spec.devURL`) then fails with "already exists". So the runner takes
//! an [`Inventory`] of the dev database with its own catalog queries before Atlas first loads the
//! desired schema into it, and after each Atlas call that loads it drops whatever is new
//! ([`Inventory::clean`]): the dev database is left as the runner found it.
//!
//! What a load left behind is also exactly what the desired schema holds that Atlas did not take
//! back: those of a kind Atlas may not manage that the target still lacks after a successful
//! apply are the objects this build did not manage ([`unmanaged`]), reported rather than
//! hidden behind "already as desired". Decided by what the target holds, never by the Atlas
//! version: a build that manages views creates them, and nothing is reported.
//!
//! The connections are the runner's own ([`crate::plain`]): where it has none (TLS, a socket,
//! SQLite, which is in memory anyway) the caller says so and Atlas runs as before.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use ::mysql::prelude::Queryable;

use crate::plain::{self, Connection, Parts, Unread, quoted};

/// How long one inventory, or one clean-up, may take.
pub const CHECK_LIMIT: Duration = Duration::from_secs(5);

/// What an object is, in the words of `DROP <kind>`; ordered as the clean-up drops them (what
/// depends on others first; `CASCADE` and `IF EXISTS` make the order a courtesy on PostgreSQL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Trigger,
    Event,
    View,
    MaterializedView,
    Procedure,
    Function,
    Aggregate,
    Table,
    Sequence,
    Domain,
    Type,
    Schema,
    Extension,
}

impl ObjectKind {
    fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Trigger => "trigger",
            ObjectKind::Event => "event",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Procedure => "procedure",
            ObjectKind::Function => "function",
            ObjectKind::Aggregate => "aggregate",
            ObjectKind::Table => "table",
            ObjectKind::Sequence => "sequence",
            ObjectKind::Domain => "domain",
            ObjectKind::Type => "type",
            ObjectKind::Schema => "schema",
            ObjectKind::Extension => "extension",
        }
    }

    fn parse(word: &str) -> Option<ObjectKind> {
        Some(match word {
            "trigger" => ObjectKind::Trigger,
            "event" => ObjectKind::Event,
            "view" => ObjectKind::View,
            "materialized view" => ObjectKind::MaterializedView,
            "procedure" => ObjectKind::Procedure,
            "function" => ObjectKind::Function,
            "aggregate" => ObjectKind::Aggregate,
            "table" => ObjectKind::Table,
            "sequence" => ObjectKind::Sequence,
            "domain" => ObjectKind::Domain,
            "type" => ObjectKind::Type,
            "schema" => ObjectKind::Schema,
            "extension" => ObjectKind::Extension,
            _ => return None,
        })
    }

    /// Whether Atlas manages every object of this kind on every build: tables and schemas (a
    /// table the target lacks after an apply is not a missing feature).
    pub fn always_managed(self) -> bool {
        matches!(self, ObjectKind::Table | ObjectKind::Schema)
    }
}

/// One object of a database: `schema` is empty for an extension or a schema (then `name` is
/// the schema); `detail` is a PostgreSQL routine's argument types or a trigger's table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Object {
    pub kind: ObjectKind,
    pub schema: String,
    pub name: String,
    pub detail: String,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind.as_str())?;
        if !self.schema.is_empty() {
            write!(f, "{}.", self.schema)?;
        }
        write!(f, "{}", self.name)?;
        match self.kind {
            ObjectKind::Function | ObjectKind::Procedure | ObjectKind::Aggregate => {
                write!(f, "({})", self.detail)
            }
            ObjectKind::Trigger => write!(f, " on {}", self.detail),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Postgres,
    MySql,
}

/// The objects of a database (a MySQL URL bound to a database: of that database only, as the
/// server may hold others'), with the schema its URL is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    engine: Engine,
    /// PostgreSQL's `search_path` (one schema), MySQL's database.
    bound: Option<String>,
    pub objects: BTreeSet<Object>,
}

/// One connection of the runner's own to a database, kept across uses: a PostgreSQL
/// handshake (SCRAM) costs more than the catalog queries. Each use is bounded by
/// [`CHECK_LIMIT`]; a connection lost to a use that did not answer is opened again.
pub struct Session {
    url: String,
    held: Option<(Connection, Parts)>,
}

impl Session {
    pub fn new(url: &str) -> Session {
        Session {
            url: url.to_string(),
            held: None,
        }
    }

    fn with<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection, &Parts) -> Result<T, Unread> + Send + 'static,
    ) -> Result<T, Unread> {
        let (held, url) = (self.held.take(), self.url.clone());
        let (result, back) = plain::within(CHECK_LIMIT, move || {
            let (mut connection, parts) = match held {
                Some(held) => held,
                None => plain::connect(&url, CHECK_LIMIT)?,
            };
            let result = f(&mut connection, &parts);
            Ok((result, (connection, parts)))
        })?;
        self.held = Some(back);
        result
    }
}

/// What [`Inventory::clean`] found and did.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// What the load left behind, now dropped (or tried).
    pub left: Vec<Object>,
    /// What is still there after the drops, with why.
    pub remaining: Vec<(Object, String)>,
}

impl Inventory {
    /// The inventory of the database behind `url`, within [`CHECK_LIMIT`].
    pub fn take(session: &mut Session) -> Result<Inventory, Unread> {
        session.with(take_now)
    }

    /// Drops from the database behind `url` what is there now and was not when `self` was
    /// taken, and says what that was and what could not be dropped.
    pub fn clean(&self, session: &mut Session) -> Result<Cleaned, Unread> {
        let before = self.clone();
        session.with(move |connection, parts| clean_now(connection, parts, &before))
    }

    /// The objects the desired SQL creates, as the runner itself finds them by loading it on
    /// the dev database behind `url`: on PostgreSQL in a transaction rolled back at once, on
    /// MySQL (whose DDL commits) followed by [`Inventory::clean`]'s drops. Atlas's own loads
    /// cannot say it whole: its clean-up drops a table with what hangs on it (a view over it
    /// on PostgreSQL, its triggers everywhere).
    pub fn load(&self, session: &mut Session, sql: &str) -> Result<Vec<Object>, Unread> {
        let (before, sql) = (self.clone(), sql.to_string());
        session.with(move |connection, parts| {
            let loading = |err: String| Unread::Query {
                schema: "the desired schema".into(),
                message: err,
            };
            match connection {
                Connection::Postgres(client) => {
                    let mut transaction =
                        client.transaction().map_err(|e| loading(e.to_string()))?;
                    if let Some(schema) = parts.param("search_path") {
                        transaction
                            .batch_execute(&format!(
                                "SET LOCAL search_path TO {}",
                                quoted(schema, '"')
                            ))
                            .map_err(|e| loading(e.to_string()))?;
                    }
                    transaction
                        .batch_execute(&sql)
                        .map_err(|e| loading(e.to_string()))?;
                    let loaded = postgres_objects(&mut transaction)?;
                    // Dropped with the transaction: the dev database never sees it committed.
                    transaction.rollback().map_err(|e| loading(e.to_string()))?;
                    Ok(loaded.difference(&before.objects).cloned().collect())
                }
                Connection::MySql(conn) => {
                    if let Some(database) = &before.bound {
                        conn.query_drop(format!("USE {}", quoted(database, '`')))
                            .map_err(|e| loading(e.to_string()))?;
                    }
                    let loaded = conn.query_drop(&sql).map_err(|e| loading(e.to_string()));
                    let cleaned = clean_now(connection, parts, &before)?;
                    loaded?;
                    Ok(cleaned.left)
                }
            }
        })
    }
}

fn clean_now(
    connection: &mut Connection,
    parts: &Parts,
    before: &Inventory,
) -> Result<Cleaned, Unread> {
    let now = take_now(connection, parts)?;
    let left: Vec<Object> = now.objects.difference(&before.objects).cloned().collect();
    if left.is_empty() {
        return Ok(Cleaned::default());
    }
    let mut failures = Vec::new();
    if let Connection::MySql(conn) = connection {
        // Tables the load made may reference each other: drop them in any order.
        let _ = conn.query_drop("SET SESSION FOREIGN_KEY_CHECKS = 0");
    }
    for object in &left {
        if let Err(err) = drop_object(connection, object) {
            failures.push((object.clone(), err));
        }
    }
    let after = take_now(connection, parts)?;
    let remaining = after
        .objects
        .difference(&before.objects)
        .map(|object| {
            let why = failures
                .iter()
                .find(|(failed, _)| failed == object)
                .map(|(_, err)| err.clone())
                .unwrap_or_else(|| "still there after the drops".into());
            (object.clone(), why)
        })
        .collect();
    Ok(Cleaned { left, remaining })
}

/// Whether the dev database may hold the target: the same server and database, or a MySQL dev
/// URL bound to no database on the target's server. Then what an apply creates is new in the
/// dev database too, and the clean-up would drop what was just applied: the runner leaves such
/// a dev database alone. Unknown URLs count as overlapping.
pub fn may_hold(dev_url: &str, target_url: &str) -> bool {
    let (Ok(dev), Ok(target)) = (plain::parts(dev_url), plain::parts(target_url)) else {
        return true;
    };
    let scheme = |url: &str| url.split_once("://").map(|(scheme, _)| scheme.to_string());
    let mysql = matches!(
        scheme(dev_url).as_deref(),
        Some("mysql" | "maria" | "mariadb")
    );
    let server = |parts: &Parts| {
        (
            parts.host.to_lowercase(),
            parts.port.unwrap_or(if mysql { 3306 } else { 5432 }),
        )
    };
    if server(&dev) != server(&target) {
        return false;
    }
    if mysql {
        dev.path.is_empty() || dev.path == target.path
    } else {
        // A PostgreSQL URL without a database path connects to the user's database.
        let database = |parts: &Parts| {
            if parts.path.is_empty() {
                parts.user.clone()
            } else {
                parts.path.clone()
            }
        };
        database(&dev) == database(&target)
    }
}

/// The objects of `desired` (what loads of the desired schema left in the dev database) of a
/// kind Atlas may not manage that `target` (inventoried after a successful apply) lacks: those
/// this Atlas build did not apply. When both URLs are bound to one schema, the dev database's
/// schema stands for the target's (Atlas applies a schema-bound desired schema to the target's
/// schema, whatever the dev database's is called), and the objects are named as the target's.
pub fn unmanaged(desired: &[Object], dev: &Inventory, target: &Inventory) -> Vec<Object> {
    let mut missing: Vec<Object> = desired
        .iter()
        .filter(|object| !object.kind.always_managed())
        .map(|object| {
            // Named as the target would have it.
            let mut mapped = object.clone();
            if let (Some(dev_schema), Some(target_schema)) = (&dev.bound, &target.bound)
                && &mapped.schema == dev_schema
            {
                mapped.schema = target_schema.clone();
            }
            mapped
        })
        .filter(|object| !target.objects.contains(object))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

fn take_now(connection: &mut Connection, parts: &Parts) -> Result<Inventory, Unread> {
    match connection {
        Connection::Postgres(client) => Ok(Inventory {
            engine: Engine::Postgres,
            bound: parts.param("search_path").map(str::to_string),
            objects: postgres_objects(client)?,
        }),
        Connection::MySql(conn) => {
            let bound = Some(parts.path.clone()).filter(|path| !path.is_empty());
            // Bound: that database only (the server may hold other users' databases); a
            // realm-level dev database is the server's, less its system schemas.
            let (filter, params): (&str, Vec<::mysql::Value>) = match &bound {
                Some(database) => ("= ?", vec![database.as_str().into()]),
                None => (
                    "NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')",
                    vec![],
                ),
            };
            let mut objects = BTreeSet::new();
            for template in MYSQL_INVENTORY {
                let query = template.replace("{filter}", filter);
                let rows: Vec<(String, String, String, String)> = conn
                    .exec(query, params.clone())
                    .map_err(|err| Unread::Query {
                        schema: "information_schema".into(),
                        message: err.to_string(),
                    })?;
                for (kind, schema, name, detail) in rows {
                    if let Some(kind) = ObjectKind::parse(&kind) {
                        objects.insert(Object {
                            kind,
                            schema,
                            name,
                            detail,
                        });
                    }
                }
            }
            Ok(Inventory {
                engine: Engine::MySql,
                bound,
                objects,
            })
        }
    }
}

fn postgres_objects(
    client: &mut impl ::postgres::GenericClient,
) -> Result<BTreeSet<Object>, Unread> {
    let mut objects = BTreeSet::new();
    for query in POSTGRES_INVENTORY {
        let rows = client.query(*query, &[]).map_err(|err| Unread::Query {
            schema: "the catalog".into(),
            message: err.to_string(),
        })?;
        for row in rows {
            let field = |i| row.try_get::<_, String>(i).unwrap_or_default();
            if let Some(kind) = ObjectKind::parse(&field(0)) {
                objects.insert(Object {
                    kind,
                    schema: field(1),
                    name: field(2),
                    detail: field(3),
                });
            }
        }
    }
    Ok(objects)
}

/// Each query lists objects as (kind, schema, name, detail), outside the system schemas and
/// the extensions' own members (dropped with their extension). Sequences a column owns
/// (`serial`, identity) and triggers go with their table, but are listed all the same where
/// they are not owned.
const POSTGRES_INVENTORY: &[&str] = &[
    "SELECT 'schema', '', n.nspname::text, '' FROM pg_namespace n
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                       AND d.objid = n.oid AND d.deptype = 'e')",
    "SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                           WHEN 'S' THEN 'sequence' ELSE 'table' END,
            n.nspname::text, c.relname::text, ''
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND n.nspname NOT LIKE 'pg\\_temp\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                       AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))",
    "SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate'
                           ELSE 'function' END,
            n.nspname::text, p.proname::text, pg_get_function_identity_arguments(p.oid)
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                       AND d.objid = p.oid AND d.deptype = 'e')",
    "SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END,
            n.nspname::text, t.typname::text, ''
     FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE (t.typtype IN ('e', 'd', 'r')
            OR (t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class c
                                            WHERE c.oid = t.typrelid AND c.relkind = 'c')))
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                       AND d.objid = t.oid AND d.deptype = 'e')",
    "SELECT 'trigger', n.nspname::text, t.tgname::text, c.relname::text
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE NOT t.tgisinternal AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    // plpgsql comes with every database.
    "SELECT 'extension', '', e.extname::text, '' FROM pg_extension e WHERE e.extname <> 'plpgsql'",
];

/// As [`POSTGRES_INVENTORY`], from MySQL's and MariaDB's `information_schema` (MariaDB's
/// sequences are tables of type `SEQUENCE`); `{filter}` restricts the schema.
const MYSQL_INVENTORY: &[&str] = &[
    "SELECT 'schema', '', CAST(SCHEMA_NAME AS CHAR), '' FROM information_schema.SCHEMATA
     WHERE SCHEMA_NAME {filter}",
    "SELECT CASE TABLE_TYPE WHEN 'VIEW' THEN 'view' WHEN 'SEQUENCE' THEN 'sequence'
                            ELSE 'table' END,
            CAST(TABLE_SCHEMA AS CHAR), CAST(TABLE_NAME AS CHAR), ''
     FROM information_schema.TABLES
     WHERE TABLE_SCHEMA {filter} AND TABLE_TYPE <> 'TEMPORARY'",
    "SELECT LOWER(ROUTINE_TYPE), CAST(ROUTINE_SCHEMA AS CHAR), CAST(ROUTINE_NAME AS CHAR), ''
     FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA {filter}",
    "SELECT 'trigger', CAST(TRIGGER_SCHEMA AS CHAR), CAST(TRIGGER_NAME AS CHAR),
            CAST(EVENT_OBJECT_TABLE AS CHAR)
     FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA {filter}",
    "SELECT 'event', CAST(EVENT_SCHEMA AS CHAR), CAST(EVENT_NAME AS CHAR), ''
     FROM information_schema.EVENTS WHERE EVENT_SCHEMA {filter}",
];

/// `DROP <kind> IF EXISTS <object>`, as each engine spells it.
fn drop_statement(engine: Engine, object: &Object) -> String {
    let quote = match engine {
        Engine::Postgres => '"',
        Engine::MySql => '`',
    };
    let name = if object.schema.is_empty() {
        quoted(&object.name, quote)
    } else {
        format!(
            "{}.{}",
            quoted(&object.schema, quote),
            quoted(&object.name, quote)
        )
    };
    let kind = match (engine, object.kind) {
        (Engine::MySql, ObjectKind::Schema) => "DATABASE",
        (_, ObjectKind::MaterializedView) => "MATERIALIZED VIEW",
        (_, kind) => match kind {
            ObjectKind::Trigger => "TRIGGER",
            ObjectKind::Event => "EVENT",
            ObjectKind::View => "VIEW",
            ObjectKind::Procedure => "PROCEDURE",
            ObjectKind::Function => "FUNCTION",
            ObjectKind::Aggregate => "AGGREGATE",
            ObjectKind::Table => "TABLE",
            ObjectKind::Sequence => "SEQUENCE",
            ObjectKind::Domain => "DOMAIN",
            ObjectKind::Type => "TYPE",
            ObjectKind::Schema => "SCHEMA",
            ObjectKind::Extension => "EXTENSION",
            ObjectKind::MaterializedView => "MATERIALIZED VIEW",
        },
    };
    match engine {
        Engine::Postgres => {
            let target = match object.kind {
                ObjectKind::Function | ObjectKind::Procedure | ObjectKind::Aggregate => {
                    format!("{name}({})", object.detail)
                }
                ObjectKind::Trigger => format!(
                    "{} ON {}.{}",
                    quoted(&object.name, quote),
                    quoted(&object.schema, quote),
                    quoted(&object.detail, quote)
                ),
                _ => name,
            };
            // A trigger has no dependents; everything else may (a view on a view).
            let cascade = if object.kind == ObjectKind::Trigger {
                ""
            } else {
                " CASCADE"
            };
            format!("DROP {kind} IF EXISTS {target}{cascade}")
        }
        Engine::MySql => format!("DROP {kind} IF EXISTS {name}"),
    }
}

fn drop_object(connection: &mut Connection, object: &Object) -> Result<(), String> {
    match connection {
        Connection::Postgres(client) => client
            .batch_execute(&drop_statement(Engine::Postgres, object))
            .map_err(|err| err.to_string()),
        Connection::MySql(conn) => conn
            .query_drop(drop_statement(Engine::MySql, object))
            .map_err(|err| err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: ObjectKind, schema: &str, name: &str, detail: &str) -> Object {
        Object {
            kind,
            schema: schema.into(),
            name: name.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn drops_are_spelled_as_each_engine_wants() {
        let function = object(ObjectKind::Function, "public", "f\"x", "integer, text");
        assert_eq!(
            drop_statement(Engine::Postgres, &function),
            r#"DROP FUNCTION IF EXISTS "public"."f""x"(integer, text) CASCADE"#
        );
        let trigger = object(ObjectKind::Trigger, "app", "audit", "orders");
        assert_eq!(
            drop_statement(Engine::Postgres, &trigger),
            r#"DROP TRIGGER IF EXISTS "audit" ON "app"."orders""#
        );
        assert_eq!(
            drop_statement(Engine::MySql, &trigger),
            "DROP TRIGGER IF EXISTS `app`.`audit`"
        );
        let schema = object(ObjectKind::Schema, "", "extra", "");
        assert_eq!(
            drop_statement(Engine::MySql, &schema),
            "DROP DATABASE IF EXISTS `extra`"
        );
        assert_eq!(
            drop_statement(Engine::Postgres, &schema),
            r#"DROP SCHEMA IF EXISTS "extra" CASCADE"#
        );
    }

    #[test]
    fn a_dev_database_that_may_hold_the_target_is_known() {
        let pg = "postgres://u:p@db:5432/app?sslmode=disable";
        assert!(may_hold("postgres://u:p@db/app?sslmode=disable", pg));
        assert!(!may_hold("postgres://u:p@db:5432/dev?sslmode=disable", pg));
        assert!(!may_hold(
            "postgres://u:p@other:5432/app?sslmode=disable",
            pg
        ));
        let my = "mysql://u:p@db:3306/app";
        assert!(may_hold("mysql://u:p@db:3306/", my));
        assert!(may_hold("mysql://u:p@DB/app", my));
        assert!(!may_hold("mysql://u:p@db:3306/dev", my));
        assert!(may_hold("postgres:///x?host=/tmp", pg));
    }

    #[test]
    fn objects_read_as_a_person_names_them() {
        assert_eq!(
            object(ObjectKind::Function, "public", "total", "integer").to_string(),
            "function public.total(integer)"
        );
        assert_eq!(
            object(ObjectKind::Trigger, "app", "audit", "orders").to_string(),
            "trigger app.audit on orders"
        );
        assert_eq!(
            object(ObjectKind::MaterializedView, "public", "m", "").to_string(),
            "materialized view public.m"
        );
    }

    /// The dev database's bound schema stands for the target's; tables never count.
    #[test]
    fn unmanaged_objects_are_those_of_the_desired_schema_the_target_lacks() {
        let view = |schema: &str| object(ObjectKind::View, schema, "active", "");
        let table = |schema: &str| object(ObjectKind::Table, schema, "users", "");
        let inventory = |bound: &str, objects: Vec<Object>| Inventory {
            engine: Engine::MySql,
            bound: Some(bound.into()),
            objects: objects.into_iter().collect(),
        };
        let dev = inventory("dev", vec![]);
        let desired = [view("dev"), table("dev")];
        let without = inventory("app", vec![table("app")]);
        assert_eq!(unmanaged(&desired, &dev, &without), [view("app")]);
        let with = inventory("app", vec![table("app"), view("app")]);
        assert!(unmanaged(&desired, &dev, &with).is_empty());
    }
}
