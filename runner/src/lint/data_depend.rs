//! The data-dependent lint (`policy.lint.dataDepend`, ours): what the plan would change whose
//! outcome depends on the rows (a narrowed type, `NOT NULL` added, enum values removed, a
//! unique index over existing columns), found by comparing Atlas's HCL inspections of the two
//! sides, never SQL text.

use hcl::{Block, Body, Expression};

use super::Skips;
use crate::target::Scope;

/// The data-dependent lint's view of one side: Atlas's inspection in its own HCL (what `atlas
/// schema inspect` prints without `--format`). The JSON of `--format '{{ json . }}'` is not
/// enough here: v0.13.1's gives a column's type without its length or precision on PostgreSQL
/// (`character varying`), and no column's default on any engine; the HCL has both, the enum
/// types' values, the `unsigned` attribute and every index, as structured HCL (never SQL).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Catalog {
    pub schemas: Vec<CatalogSchema>,
    /// Whether Atlas wrote MySQL's schema attributes (`charset`, `collate`): how a bare type
    /// is read when the driver is not known (a URL only a custom config names).
    pub mysql_attributes: bool,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct CatalogSchema {
    pub name: String,
    pub tables: Vec<CatalogTable>,
    /// PostgreSQL's enum types: name and values.
    pub enums: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct CatalogTable {
    pub name: String,
    pub columns: Vec<CatalogColumn>,
    /// What the table holds unique: its primary key and unique indexes.
    pub uniques: Vec<Unique>,
    /// The names of all its indexes, unique or not.
    pub indexes: Vec<String>,
}

/// A primary key (`index` None) or unique index, each part a column's name or, for an
/// expression part, the expression in parentheses.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unique {
    pub index: Option<String>,
    pub parts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogColumn {
    pub name: String,
    pub null: bool,
    pub ty: Expression,
    pub unsigned: bool,
    /// A value for rows that exist: a default, `auto_increment`, a `serial` type, an identity
    /// or a generated expression.
    pub filled: bool,
}

/// A `catalog` that is not Atlas's HCL.
#[derive(Debug, thiserror::Error)]
#[error("reading the HCL of `atlas schema inspect`: {0}")]
pub struct CatalogError(#[from] hcl::Error);

impl Catalog {
    /// Reads Atlas's HCL inspection. Blocks other than `schema`, `table` and `enum` (views,
    /// functions of other builds) are no data of a table and are passed over.
    pub fn from_hcl(text: &str) -> Result<Catalog, CatalogError> {
        let body: Body = hcl::parse(text)?;
        let mut catalog = Catalog::default();
        let schema_of = |block: &Block| -> Option<String> {
            // `table "s" "t"` where two schemas have a table of the same name, else
            // `schema = schema.s`.
            if block.labels.len() == 2 {
                return Some(block.labels[0].as_str().to_string());
            }
            block.body.attributes().find_map(|a| {
                (a.key.as_str() == "schema")
                    .then(|| reference_name(&a.expr))
                    .flatten()
            })
        };
        let mut pending: Vec<(String, Block)> = Vec::new();
        for block in body.blocks() {
            let Some(label) = block.labels.last().map(|l| l.as_str().to_string()) else {
                continue;
            };
            match block.identifier.as_str() {
                "schema" => {
                    catalog.mysql_attributes |= block
                        .body
                        .attributes()
                        .any(|a| matches!(a.key.as_str(), "charset" | "collate"));
                    catalog.schemas.push(CatalogSchema {
                        name: label,
                        ..CatalogSchema::default()
                    });
                }
                "table" | "enum" => {
                    pending.push((schema_of(block).unwrap_or_default(), block.clone()));
                }
                _ => {}
            }
        }
        for (schema, block) in pending {
            let index = match catalog.schemas.iter().position(|s| s.name == schema) {
                Some(index) => index,
                None => {
                    catalog.schemas.push(CatalogSchema {
                        name: schema,
                        ..CatalogSchema::default()
                    });
                    catalog.schemas.len() - 1
                }
            };
            let name = block.labels.last().unwrap().as_str().to_string();
            let target = &mut catalog.schemas[index];
            if block.identifier.as_str() == "enum" {
                let values = attribute(&block.body, "values")
                    .map(strings_of)
                    .unwrap_or_default();
                target.enums.push((name, values));
            } else {
                target.tables.push(table_of(name, &block.body));
            }
        }
        Ok(catalog)
    }
}

fn attribute<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
}

/// The last name of a reference such as `schema.public` or `column.id`.
fn reference_name(expr: &Expression) -> Option<String> {
    match expr {
        Expression::Traversal(traversal) => {
            traversal
                .operators
                .last()
                .and_then(|operator| match operator {
                    hcl::TraversalOperator::GetAttr(name) => Some(name.as_str().to_string()),
                    _ => None,
                })
        }
        Expression::Variable(variable) => Some(variable.as_str().to_string()),
        _ => None,
    }
}

fn strings_of(expr: &Expression) -> Vec<String> {
    match expr {
        Expression::Array(values) => values.iter().filter_map(literal).collect(),
        _ => Vec::new(),
    }
}

/// A literal argument as text: `255`, `"a"`.
fn literal(expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(text) => Some(text.clone()),
        Expression::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn table_of(name: String, body: &Body) -> CatalogTable {
    let mut table = CatalogTable {
        name,
        ..CatalogTable::default()
    };
    let is_true =
        |body: &Body, key: &str| matches!(attribute(body, key), Some(Expression::Bool(true)));
    for block in body.blocks() {
        match block.identifier.as_str() {
            "column" => {
                let Some(label) = block.labels.first() else {
                    continue;
                };
                // PostgreSQL's `serial` types are written as such, their sequence's default
                // left out.
                let serial = matches!(
                    attribute(&block.body, "type"),
                    Some(Expression::Variable(v))
                        if matches!(v.as_str(), "serial" | "smallserial" | "bigserial" | "serial2" | "serial4" | "serial8")
                );
                let filled = attribute(&block.body, "default").is_some()
                    || serial
                    || is_true(&block.body, "auto_increment")
                    || block
                        .body
                        .blocks()
                        .any(|b| matches!(b.identifier.as_str(), "identity" | "as"));
                table.columns.push(CatalogColumn {
                    name: label.as_str().to_string(),
                    // Atlas writes `null = true` for a nullable column and leaves it out or
                    // writes `false` otherwise.
                    null: is_true(&block.body, "null"),
                    ty: attribute(&block.body, "type")
                        .cloned()
                        .unwrap_or(Expression::Null),
                    unsigned: is_true(&block.body, "unsigned"),
                    filled,
                });
            }
            "primary_key" => table.uniques.push(Unique {
                index: None,
                parts: index_parts(&block.body),
            }),
            "index" => {
                let name = block
                    .labels
                    .first()
                    .map(|l| l.as_str().to_string())
                    .unwrap_or_default();
                if is_true(&block.body, "unique") {
                    table.uniques.push(Unique {
                        index: Some(name.clone()),
                        parts: index_parts(&block.body),
                    });
                }
                table.indexes.push(name);
            }
            _ => {}
        }
    }
    table
}

/// An index's parts: `columns = [column.a, …]`, or `on { column = column.a }` / `on { expr =
/// "…" }` blocks.
fn index_parts(body: &Body) -> Vec<String> {
    let mut parts: Vec<String> = match attribute(body, "columns") {
        Some(Expression::Array(columns)) => columns.iter().filter_map(reference_name).collect(),
        _ => Vec::new(),
    };
    for on in body.blocks().filter(|b| b.identifier.as_str() == "on") {
        if let Some(column) = attribute(&on.body, "column").and_then(reference_name) {
            parts.push(column);
        } else if let Some(expr) = attribute(&on.body, "expr").and_then(literal) {
            parts.push(format!("({expr})"));
        }
    }
    parts
}

/// How the bare types of an inspection are read: the defaults differ (`decimal` is
/// `decimal(10,0)` on MySQL and unbounded on PostgreSQL; a timestamp keeps 0 fractional
/// digits on MySQL, 6 on PostgreSQL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    /// From Atlas's driver name (`postgres`, `mysql`, `maria`), else from the inspection.
    pub fn of(driver: Option<&str>, catalog: &Catalog) -> Dialect {
        match driver {
            Some("postgres") => Dialect::Postgres,
            Some("mysql" | "maria" | "mariadb") => Dialect::MySql,
            _ if catalog.mysql_attributes => Dialect::MySql,
            _ => Dialect::Postgres,
        }
    }
}

/// A column's type as the data-dependent lint compares them: its family and what bounds the
/// values it holds.
#[derive(Clone, Debug, PartialEq)]
enum Family {
    /// The range of values, from the width in bytes and the sign.
    Integer {
        min: i128,
        max: i128,
    },
    /// Characters (`binary: false`) or bytes; `length` None is unbounded; `fixed` pads (and
    /// MySQL strips trailing spaces from a `char`).
    Text {
        binary: bool,
        length: Option<u64>,
        fixed: bool,
    },
    /// Digits in all and after the point; `precision` None is PostgreSQL's unbounded
    /// `numeric`.
    Decimal {
        precision: Option<u64>,
        scale: u64,
    },
    Float {
        bytes: u8,
    },
    /// Dates and times: what part each value keeps, its fractional digits, and (MySQL's
    /// `timestamp`) a range of 1970–2038.
    Time {
        date: bool,
        time: bool,
        precision: u64,
        zone: bool,
        narrow_range: bool,
    },
    Enum(Vec<String>),
    Boolean,
    /// Anything else, by its text as Atlas wrote it: equal or another family.
    Other(String),
}

fn integer_range(bytes: u32, unsigned: bool) -> (i128, i128) {
    let bits = 8 * bytes;
    if unsigned {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    }
}

/// The decimal digits of the largest value an integer range holds (`int`: 10).
fn digits(range: (i128, i128)) -> u64 {
    range
        .0
        .unsigned_abs()
        .max(range.1.unsigned_abs())
        .to_string()
        .len() as u64
}

fn family(column: &CatalogColumn, dialect: Dialect, enums: &[(String, Vec<String>)]) -> Family {
    let text = hcl::format::to_string(&column.ty).unwrap_or_default();
    let (name, args): (String, Vec<u64>) = match &column.ty {
        Expression::Variable(variable) => (variable.as_str().to_lowercase(), Vec::new()),
        Expression::FuncCall(call) if call.name.name.as_str() == "enum" => {
            return Family::Enum(call.args.iter().filter_map(literal).collect());
        }
        Expression::FuncCall(call) if call.name.name.as_str() != "sql" => (
            call.name.name.as_str().to_lowercase(),
            call.args
                .iter()
                .filter_map(literal)
                .filter_map(|a| a.parse().ok())
                .collect(),
        ),
        // `enum.mood`: PostgreSQL's enum type, by its values.
        Expression::Traversal(traversal) if matches!(&traversal.expr, Expression::Variable(v) if v.as_str() == "enum") =>
        {
            let name = reference_name(&column.ty).unwrap_or_default();
            return match enums.iter().find(|(n, _)| *n == name) {
                Some((_, values)) => Family::Enum(values.clone()),
                None => Family::Other(text),
            };
        }
        _ => return Family::Other(text),
    };
    let arg = |i: usize| args.get(i).copied();
    let int = |bytes: u32| {
        let (min, max) = integer_range(bytes, column.unsigned);
        Family::Integer { min, max }
    };
    let chars = |length: Option<u64>, fixed: bool| Family::Text {
        binary: false,
        length,
        fixed,
    };
    let bytes = |length: Option<u64>, fixed: bool| Family::Text {
        binary: true,
        length,
        fixed,
    };
    let time_precision = arg(0).unwrap_or(match dialect {
        Dialect::Postgres => 6,
        Dialect::MySql => 0,
    });
    let time = |date: bool, time: bool, zone: bool, narrow_range: bool| Family::Time {
        date,
        time,
        precision: if time { time_precision } else { 0 },
        zone,
        narrow_range,
    };
    match name.as_str() {
        "tinyint" | "bool" | "boolean" if dialect == Dialect::MySql => int(1),
        "bool" | "boolean" => Family::Boolean,
        "tinyint" => int(1),
        "smallint" | "int2" | "smallserial" | "serial2" => int(2),
        "mediumint" => int(3),
        "int" | "integer" | "int4" | "serial" | "serial4" => int(4),
        "bigint" | "int8" | "bigserial" | "serial8" => int(8),
        "varchar" | "character_varying" => chars(arg(0), false),
        "char" | "character" | "bpchar" => chars(Some(arg(0).unwrap_or(1)), true),
        "text" if dialect == Dialect::Postgres => chars(None, false),
        "tinytext" => chars(Some(255), false),
        "text" => chars(Some(65_535), false),
        "mediumtext" => chars(Some(16_777_215), false),
        "longtext" => chars(Some(4_294_967_295), false),
        "bytea" => bytes(None, false),
        "varbinary" => bytes(arg(0), false),
        "binary" => bytes(Some(arg(0).unwrap_or(1)), true),
        "tinyblob" => bytes(Some(255), false),
        "blob" => bytes(Some(65_535), false),
        "mediumblob" => bytes(Some(16_777_215), false),
        "longblob" => bytes(Some(4_294_967_295), false),
        "decimal" | "numeric" | "dec" | "fixed" => match (arg(0), dialect) {
            (Some(precision), _) => Family::Decimal {
                precision: Some(precision),
                scale: arg(1).unwrap_or(0),
            },
            (None, Dialect::MySql) => Family::Decimal {
                precision: Some(10),
                scale: 0,
            },
            (None, Dialect::Postgres) => Family::Decimal {
                precision: None,
                scale: 0,
            },
        },
        "real" | "float4" => Family::Float { bytes: 4 },
        "float" if dialect == Dialect::MySql => Family::Float { bytes: 4 },
        "double" | "double_precision" | "float8" | "float" => Family::Float { bytes: 8 },
        "date" => time(true, false, false, false),
        "time" | "time_without_time_zone" => time(false, true, false, false),
        "timetz" | "time_with_time_zone" => time(false, true, true, false),
        "timestamp" if dialect == Dialect::MySql => time(true, true, false, true),
        "timestamp" | "timestamp_without_time_zone" | "datetime" => time(true, true, false, false),
        "timestamptz" | "timestamp_with_time_zone" => time(true, true, true, false),
        _ => Family::Other(text),
    }
}

/// Why changing a column from `from` to `to` can lose or refuse what rows hold; None when
/// every value `from` holds is held by `to` unchanged.
fn narrowing(from: &Family, to: &Family) -> Option<String> {
    use Family::*;
    match (from, to) {
        (Integer { min: a, max: b }, Integer { min: c, max: d }) => (c > a || d < b)
            .then(|| "narrows the integer range: values outside it are refused or clamped".into()),
        (
            Text {
                binary: a,
                length: from_length,
                fixed: from_fixed,
            },
            Text {
                binary: b,
                length: to_length,
                fixed: to_fixed,
            },
        ) if a == b => {
            let shorter = match (from_length, to_length) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(from), Some(to)) => to < from,
            };
            if shorter {
                Some("narrows the length: longer values are cut or refused".into())
            } else if *to_fixed && !from_fixed {
                Some("to a fixed-length type: values are padded and trailing spaces lost".into())
            } else {
                None
            }
        }
        (
            Decimal {
                precision: p,
                scale: s,
            },
            Decimal {
                precision: q,
                scale: t,
            },
        ) => {
            let integer_digits = |p: &Option<u64>, s: &u64| p.map(|p| p.saturating_sub(*s));
            let fewer_integer = match (integer_digits(p, s), integer_digits(q, t)) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(from), Some(to)) => to < from,
            };
            // PostgreSQL's unbounded `numeric` keeps any scale.
            if q.is_some() && t < s {
                Some("narrows the scale: values are rounded".into())
            } else if fewer_integer {
                Some("narrows the precision: larger values are refused".into())
            } else {
                None
            }
        }
        (Integer { min, max }, Decimal { precision, scale }) => {
            let fits = precision.is_none_or(|p| p.saturating_sub(*scale) >= digits((*min, *max)));
            (!fits)
                .then(|| "to a decimal with fewer integer digits: larger values are refused".into())
        }
        (Float { bytes: a }, Float { bytes: b }) => {
            (b < a).then(|| "narrows the floating-point precision: values are rounded".into())
        }
        (
            Time {
                date: d1,
                time: t1,
                precision: p1,
                zone: z1,
                narrow_range: r1,
            },
            Time {
                date: d2,
                time: t2,
                precision: p2,
                zone: z2,
                narrow_range: r2,
            },
        ) => {
            if *d1 && !d2 {
                Some("drops the date: only the time of day is kept".into())
            } else if *t1 && !t2 {
                Some("drops the time of day: only the date is kept".into())
            } else if p2 < p1 {
                Some("fewer fractional seconds: values are rounded".into())
            } else if *z1 && !z2 {
                Some("drops the time zone: values are converted to the session's".into())
            } else if *r2 && !r1 {
                Some(
                    "to MySQL's timestamp (1970–2038): values outside are refused or zeroed".into(),
                )
            } else {
                None
            }
        }
        (Enum(from), Enum(to)) => {
            let removed: Vec<&String> = from.iter().filter(|v| !to.contains(v)).collect();
            (!removed.is_empty()).then(|| {
                format!(
                    "removes enum values {}: rows holding them are refused or emptied",
                    removed
                        .iter()
                        .map(|v| format!("'{v}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        }
        (Boolean, Boolean) => None,
        (Other(a), Other(b)) if a == b => None,
        _ => Some("to another type family: values are converted, or refused".into()),
    }
}

/// Every change of the plan whose outcome depends on the rows the tables hold, as `ALTER
/// TABLE s.t …: why` lines: a narrowed type or one of another family, `NOT NULL` set on a
/// column or a `NOT NULL` column without a default added to a table, enum values removed, a
/// unique index or primary key over columns that were not unique before. Only tables both
/// sides have: a new table has no rows, and a dropped one is the destructive lint's. The rows
/// are not read: each of these is refused whatever the table holds (a table empty now may not
/// be when the apply runs, and reading every table is not what a lint before an apply may
/// cost). Schemas are paired as [`destructive_changes`] pairs them.
pub fn data_dependent_changes(
    current: &Catalog,
    desired: &Catalog,
    scope: Scope,
    dialect: Dialect,
    skips: Skips,
) -> Vec<String> {
    let mut changes = Vec::new();
    if skips.modify_table {
        return changes;
    }
    let pairs: Vec<(&CatalogSchema, &CatalogSchema)> =
        if scope == Scope::Schema && current.schemas.len() == 1 && desired.schemas.len() == 1 {
            vec![(&current.schemas[0], &desired.schemas[0])]
        } else {
            current
                .schemas
                .iter()
                .filter_map(|schema| {
                    let other = desired.schemas.iter().find(|d| d.name == schema.name)?;
                    Some((schema, other))
                })
                .collect()
        };
    for (schema, desired_schema) in pairs {
        for table in &schema.tables {
            let Some(desired_table) = desired_schema.tables.iter().find(|t| t.name == table.name)
            else {
                continue;
            };
            let qualified = format!("{}.{}", schema.name, table.name);
            for column in &desired_table.columns {
                let Some(existing) = table.columns.iter().find(|c| c.name == column.name) else {
                    if !skips.add_column && !column.null && !column.filled {
                        changes.push(format!(
                            "ALTER TABLE {qualified} ADD COLUMN {} NOT NULL without a default: \
                             rows that exist get no value (refused, or an implicit zero or \
                             empty string)",
                            column.name
                        ));
                    }
                    continue;
                };
                if skips.modify_column {
                    continue;
                }
                let from = family(existing, dialect, &schema.enums);
                let to = family(column, dialect, &desired_schema.enums);
                if let Some(why) = narrowing(&from, &to) {
                    let text = |c: &CatalogColumn| {
                        let ty = hcl::format::to_string(&c.ty).unwrap_or_default();
                        if c.unsigned {
                            format!("{ty} unsigned")
                        } else {
                            ty
                        }
                    };
                    changes.push(format!(
                        "ALTER TABLE {qualified} ALTER COLUMN {} TYPE {} (was {}): {why}",
                        column.name,
                        text(column),
                        text(existing)
                    ));
                }
                if existing.null && !column.null {
                    changes.push(format!(
                        "ALTER TABLE {qualified} ALTER COLUMN {} SET NOT NULL: rows holding NULL \
                         are refused, or given an implicit zero or empty string",
                        column.name
                    ));
                }
            }
            // A column set held unique before stays so with more columns.
            let covered = |parts: &[String]| {
                table
                    .uniques
                    .iter()
                    .any(|old| !old.parts.is_empty() && old.parts.iter().all(|p| parts.contains(p)))
            };
            for unique in &desired_table.uniques {
                if covered(&unique.parts) {
                    continue;
                }
                // As Atlas plans it: a new index, an index made unique, or a primary key.
                let skipped = match &unique.index {
                    Some(name) if table.indexes.contains(name) => skips.modify_index,
                    Some(_) => skips.add_index,
                    None => false,
                };
                if skipped {
                    continue;
                }
                // A new column in it holds one value in every row that exists: its default
                // (duplicates as soon as there are two rows), or NULL, which a unique index
                // lets repeat (and a NOT NULL one without a default is refused above).
                let repeated = unique.parts.iter().any(|p| {
                    !table.columns.iter().any(|c| &c.name == p)
                        && desired_table
                            .columns
                            .iter()
                            .any(|c| &c.name == p && c.filled)
                });
                let existing = unique
                    .parts
                    .iter()
                    .all(|p| p.starts_with('(') || table.columns.iter().any(|c| &c.name == p));
                let what = match &unique.index {
                    Some(_) => "ADD UNIQUE",
                    None => "ADD PRIMARY KEY",
                };
                if repeated {
                    changes.push(format!(
                        "ALTER TABLE {qualified} {what} ({}) over a new column with a \
                         default: every row that exists gets the same value",
                        unique.parts.join(", ")
                    ));
                } else if existing {
                    changes.push(format!(
                        "ALTER TABLE {qualified} {what} ({}): rows holding duplicates are \
                         refused",
                        unique.parts.join(", ")
                    ));
                }
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MySQL's HCL as `atlas schema inspect` writes it: the schema after its tables, bare and
    /// sized types, `unsigned` as an attribute of the column.
    const MYSQL_BEFORE: &str = r#"
table "t" {
  schema = schema.app
  column "id" {
    null = false
    type = int
  }
  column "code" {
    null = true
    type = varchar(255)
  }
  column "n" {
    null     = true
    type     = int
    unsigned = true
  }
  column "size" {
    null = true
    type = enum("s","m","l")
  }
  column "total" {
    null = true
    type = decimal(12,4)
  }
  primary_key {
    columns = [column.id]
  }
  index "t_code" {
    columns = [column.code]
  }
}
schema "app" {
  charset = "utf8mb4"
  collate = "utf8mb4_general_ci"
}
"#;

    fn catalog(hcl: &str) -> Catalog {
        Catalog::from_hcl(hcl).unwrap()
    }

    fn mysql_after(columns: &str, rest: &str) -> Catalog {
        catalog(&format!(
            "table \"t\" {{\n  schema = schema.dev\n  column \"id\" {{\n    null = false\n    \
             type = int\n  }}\n{columns}\n  primary_key {{\n    columns = [column.id]\n  }}\n\
             {rest}\n}}\nschema \"dev\" {{\n  charset = \"utf8mb4\"\n}}\n"
        ))
    }

    fn changes(current: &Catalog, desired: &Catalog, skips: Skips) -> Vec<String> {
        let dialect = Dialect::of(None, current);
        data_dependent_changes(current, desired, Scope::Schema, dialect, skips)
    }

    #[test]
    fn atlas_hcl_is_read_into_a_catalog() {
        let before = catalog(MYSQL_BEFORE);
        assert!(before.mysql_attributes);
        assert_eq!(Dialect::of(None, &before), Dialect::MySql);
        let table = &before.schemas[0].tables[0];
        assert_eq!(before.schemas[0].name, "app");
        assert_eq!(table.columns.len(), 5);
        assert!(table.columns[2].unsigned && table.columns[2].null);
        assert!(!table.columns[0].null);
        assert_eq!(
            table.uniques,
            [Unique {
                index: None,
                parts: vec!["id".into()]
            }]
        );
        assert_eq!(table.indexes, ["t_code"]);
        // PostgreSQL: an enum type of the schema, a table named in two schemas.
        let pg = catalog(
            r#"
table "public" "t" {
  schema = schema.public
  column "m" {
    null = true
    type = enum.mood
  }
  index "t_m" {
    unique = true
    on {
      column = column.m
    }
    on {
      expr = "lower(m)"
    }
  }
}
table "other" "t" {
  schema = schema.other
}
enum "mood" {
  schema = schema.public
  values = ["happy", "sad"]
}
schema "other" {
}
schema "public" {
}
"#,
        );
        assert!(!pg.mysql_attributes);
        let public = pg.schemas.iter().find(|s| s.name == "public").unwrap();
        assert_eq!(
            public.enums,
            [("mood".to_string(), vec!["happy".to_string(), "sad".into()])]
        );
        assert_eq!(public.tables[0].uniques[0].parts, ["m", "(lower(m))"]);
        assert_eq!(
            pg.schemas
                .iter()
                .find(|s| s.name == "other")
                .unwrap()
                .tables
                .len(),
            1
        );
    }

    #[test]
    fn narrowed_types_are_data_dependent() {
        let before = catalog(MYSQL_BEFORE);
        let after = mysql_after(
            r#"  column "code" {
    null = true
    type = varchar(10)
  }
  column "n" {
    null = true
    type = int
  }
  column "size" {
    null = true
    type = enum("s","m")
  }
  column "total" {
    null = true
    type = decimal(12,2)
  }"#,
            "",
        );
        let found = changes(&before, &after, Skips::default());
        assert_eq!(
            found,
            [
                "ALTER TABLE app.t ALTER COLUMN code TYPE varchar(10) (was varchar(255)): \
                 narrows the length: longer values are cut or refused",
                "ALTER TABLE app.t ALTER COLUMN n TYPE int (was int unsigned): narrows the \
                 integer range: values outside it are refused or clamped",
                "ALTER TABLE app.t ALTER COLUMN size TYPE enum(\"s\", \"m\") (was enum(\"s\", \
                 \"m\", \"l\")): removes enum values 'l': rows holding them are refused or \
                 emptied",
                "ALTER TABLE app.t ALTER COLUMN total TYPE decimal(12, 2) (was decimal(12, 4)): \
                 narrows the scale: values are rounded",
            ]
        );
        let skip = Skips {
            modify_column: true,
            ..Skips::default()
        };
        assert!(changes(&before, &after, skip).is_empty());
    }

    #[test]
    fn widened_types_and_new_tables_are_not() {
        let before = catalog(MYSQL_BEFORE);
        let after = mysql_after(
            r#"  column "code" {
    null = true
    type = text
  }
  column "n" {
    null = true
    type = bigint
  }
  column "size" {
    null = true
    type = enum("s","m","l","xl")
  }
  column "total" {
    null = true
    type = decimal(14,4)
  }
  column "added" {
    null = false
    type = int
    default = 0
  }"#,
            "",
        );
        assert_eq!(
            changes(&before, &after, Skips::default()),
            Vec::<String>::new()
        );
        // A table only the desired schema has holds no rows.
        let new_table = catalog(
            "table \"u\" {\n  schema = schema.app\n  column \"c\" {\n    null = false\n    \
             type = int\n  }\n  index \"u_c\" {\n    unique = true\n    columns = [column.c]\n  \
             }\n}\nschema \"app\" {\n  charset = \"utf8mb4\"\n}\n",
        );
        assert!(changes(&catalog(""), &new_table, Skips::default()).is_empty());
    }

    #[test]
    fn not_null_and_unique_over_existing_rows_are_data_dependent() {
        let before = catalog(MYSQL_BEFORE);
        let after = mysql_after(
            r#"  column "code" {
    null = false
    type = varchar(255)
  }
  column "n" {
    null     = true
    type     = int
    unsigned = true
  }
  column "size" {
    null = true
    type = enum("s","m","l")
  }
  column "total" {
    null = true
    type = decimal(12,4)
  }
  column "batch" {
    null = false
    type = int
  }
  column "fresh" {
    null = true
    type = int
  }"#,
            r#"  index "t_code" {
    unique  = true
    columns = [column.code]
  }
  index "t_fresh" {
    unique  = true
    columns = [column.fresh]
  }
  index "t_id_n" {
    unique  = true
    columns = [column.id, column.n]
  }"#,
        );
        assert_eq!(
            changes(&before, &after, Skips::default()),
            [
                "ALTER TABLE app.t ALTER COLUMN code SET NOT NULL: rows holding NULL are \
                 refused, or given an implicit zero or empty string",
                "ALTER TABLE app.t ADD COLUMN batch NOT NULL without a default: rows that exist \
                 get no value (refused, or an implicit zero or empty string)",
                "ALTER TABLE app.t ADD UNIQUE (code): rows holding duplicates are refused",
            ]
        );
        // `t_code` existed: making it unique is a modified index, not an added one.
        let skips = Skips {
            add_column: true,
            add_index: true,
            ..Skips::default()
        };
        assert_eq!(changes(&before, &after, skips).len(), 2);
        let skips = Skips {
            modify_table: true,
            ..Skips::default()
        };
        assert!(changes(&before, &after, skips).is_empty());
    }

    #[test]
    fn time_types_lose_what_the_target_has_no_room_for() {
        let column = |ty: &str| CatalogColumn {
            name: "c".into(),
            null: true,
            ty: hcl::parse(&format!("x = {ty}"))
                .unwrap()
                .attributes()
                .next()
                .unwrap()
                .expr
                .clone(),
            unsigned: false,
            filled: false,
        };
        let lossy = |dialect: Dialect, from: &str, to: &str| {
            narrowing(
                &family(&column(from), dialect, &[]),
                &family(&column(to), dialect, &[]),
            )
            .is_some()
        };
        use Dialect::{MySql, Postgres};
        assert!(lossy(Postgres, "timestamp", "date"));
        assert!(lossy(Postgres, "timestamp(6)", "timestamp(0)"));
        assert!(lossy(Postgres, "timestamptz", "timestamp"));
        assert!(lossy(Postgres, "timestamp", "time"));
        assert!(!lossy(Postgres, "date", "timestamp"));
        assert!(!lossy(Postgres, "timestamp(0)", "timestamp"));
        assert!(!lossy(Postgres, "timestamp", "timestamptz"));
        assert!(lossy(MySql, "datetime(6)", "datetime"));
        assert!(lossy(MySql, "datetime", "timestamp"));
        assert!(!lossy(MySql, "timestamp", "datetime"));
        assert!(!lossy(MySql, "datetime", "datetime(6)"));
        // The defaults of a bare type differ: MySQL's decimal is decimal(10,0).
        assert!(lossy(MySql, "decimal", "decimal(8,0)"));
        assert!(!lossy(Postgres, "numeric(8,2)", "numeric"));
        assert!(lossy(Postgres, "numeric", "numeric(8,2)"));
        assert!(!lossy(Postgres, "integer", "numeric(10,0)"));
        assert!(lossy(Postgres, "bigint", "numeric(10,0)"));
        assert!(lossy(Postgres, "character_varying(20)", "integer"));
        assert!(!lossy(Postgres, "character_varying", "text"));
        assert!(lossy(Postgres, "text", "character_varying(10)"));
        assert!(lossy(MySql, "double", "float"));
        assert!(lossy(Postgres, "double_precision", "real"));
    }
}
