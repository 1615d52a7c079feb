//! The safety corpus: destructive and data-losing changes that the lint policies must refuse
//! with nothing applied, and safe changes they must let through, each on real PostgreSQL and
//! MariaDB with rows in its tables, through the real runner binary and Atlas.
//!
//! Every case runs with both lint policies on (`policy.lint.destructive.error` and
//! `policy.lint.dataDepend.error`), some with a `policy.diff.skip` or an `exclude` that makes a
//! change safe. A refused case must leave the catalogue and the rows exactly as they were (a
//! SHA-256 of each, before and after); a safe one must apply. The counts per engine (`blocked
//! X/Y`, `safe applied X/Y`, `database unchanged when blocked X/Y`) are printed and written to
//! `target/tmp/safety-corpus/<engine>.txt`, which `cargo xtask test` shows in its summary.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use contract::{
    CONTRACT_VERSION, Desired, EXIT_DEFINITIVE, EXIT_OK, Outcome, Reason, SchemaApply, Target,
    Task, Work,
};
use devcluster::db::{Engine, TestDatabase};
use sha2::{Digest, Sha256};
use support::Scratch;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// Refused by a lint policy: `LintPolicyError`, nothing applied.
    Blocked,
    /// Applied.
    Safe,
}

/// What the case sets besides the two lint policies.
#[derive(Clone, Copy)]
enum Extra {
    None,
    Skip(&'static [&'static str]),
    Exclude(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    /// The database before: tables with rows.
    setup: &'static str,
    /// The desired schema (SQL).
    desired: &'static str,
    extra: Extra,
    expect: Expect,
}

const fn blocked(name: &'static str, setup: &'static str, desired: &'static str) -> Case {
    Case {
        name,
        setup,
        desired,
        extra: Extra::None,
        expect: Expect::Blocked,
    }
}

const fn safe(name: &'static str, setup: &'static str, desired: &'static str) -> Case {
    Case {
        name,
        setup,
        desired,
        extra: Extra::None,
        expect: Expect::Safe,
    }
}

const fn safe_with(
    name: &'static str,
    setup: &'static str,
    desired: &'static str,
    extra: Extra,
) -> Case {
    Case {
        name,
        setup,
        desired,
        extra,
        expect: Expect::Safe,
    }
}

/// A one-column change on `t (id, c)` holding three rows.
macro_rules! column {
    ($kind:ident, $name:literal, $from:literal, $values:literal, $to:literal) => {
        $kind(
            $name,
            concat!(
                "create table t (id int primary key, c ",
                $from,
                "); insert into t values ",
                $values
            ),
            concat!("create table t (id int primary key, c ", $to, ");"),
        )
    };
}

const POSTGRES: &[Case] = &[
    // Destructive: drops.
    blocked(
        "drop table",
        "create table t (id int primary key); create table old (id int); \
         insert into t values (1); insert into old values (1), (2)",
        "create table t (id int primary key);",
    ),
    blocked(
        "drop column",
        "create table t (id int primary key, bio text); insert into t values (1, 'a'), (2, 'b')",
        "create table t (id int primary key);",
    ),
    blocked(
        "drop schema",
        "create schema extra; create table extra.t (id int); insert into extra.t values (1); \
         create table t (id int primary key); insert into t values (1)",
        "create table t (id int primary key);",
    ),
    // Data-dependent: narrowed types.
    column!(
        blocked,
        "varchar(255) to varchar(10)",
        "varchar(255)",
        "(1, 'abcdefghijklmnop'), (2, 'b'), (3, null)",
        "varchar(10)"
    ),
    column!(
        blocked,
        "char(20) to char(5)",
        "char(20)",
        "(1, 'abcdefgh'), (2, 'b'), (3, null)",
        "char(5)"
    ),
    column!(
        blocked,
        "text to varchar(50)",
        "text",
        "(1, repeat('x', 80)), (2, 'b'), (3, null)",
        "varchar(50)"
    ),
    column!(
        blocked,
        "varchar to varchar(30)",
        "varchar",
        "(1, repeat('x', 40)), (2, 'b'), (3, null)",
        "varchar(30)"
    ),
    column!(
        blocked,
        "varchar(10) to char(10)",
        "varchar(10)",
        "(1, 'a '), (2, 'b'), (3, null)",
        "char(10)"
    ),
    column!(
        blocked,
        "bigint to int",
        "bigint",
        "(1, 9000000000), (2, 2), (3, null)",
        "int"
    ),
    column!(
        blocked,
        "int to smallint",
        "int",
        "(1, 100000), (2, 2), (3, null)",
        "smallint"
    ),
    column!(
        blocked,
        "bigint to smallint",
        "bigint",
        "(1, 40000), (2, 2), (3, null)",
        "smallint"
    ),
    column!(
        blocked,
        "numeric(12,4) to numeric(8,2)",
        "numeric(12,4)",
        "(1, 12345.6789), (2, 1.5), (3, null)",
        "numeric(8,2)"
    ),
    column!(
        blocked,
        "numeric(12,4) to numeric(12,2)",
        "numeric(12,4)",
        "(1, 1.2345), (2, 1.5), (3, null)",
        "numeric(12,2)"
    ),
    column!(
        blocked,
        "numeric(10,2) to numeric(6,2)",
        "numeric(10,2)",
        "(1, 12345678.12), (2, 1.5), (3, null)",
        "numeric(6,2)"
    ),
    column!(
        blocked,
        "numeric to numeric(10,2)",
        "numeric",
        "(1, 1.23456), (2, 1.5), (3, null)",
        "numeric(10,2)"
    ),
    column!(
        blocked,
        "timestamp to date",
        "timestamp",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "date"
    ),
    column!(
        blocked,
        "timestamp to timestamp(0)",
        "timestamp",
        "(1, '2024-05-06 07:08:09.123456'), (2, now()), (3, null)",
        "timestamp(0)"
    ),
    column!(
        blocked,
        "timestamptz to timestamp",
        "timestamptz",
        "(1, '2024-05-06 07:08:09+02'), (2, now()), (3, null)",
        "timestamp"
    ),
    column!(
        blocked,
        "timestamptz to date",
        "timestamptz",
        "(1, '2024-05-06 07:08:09+02'), (2, now()), (3, null)",
        "date"
    ),
    column!(
        blocked,
        "time to time(0)",
        "time",
        "(1, '07:08:09.5'), (2, '01:00'), (3, null)",
        "time(0)"
    ),
    column!(
        blocked,
        "double precision to real",
        "double precision",
        "(1, 1.23456789012345), (2, 2), (3, null)",
        "real"
    ),
    // Data-dependent: another type family.
    column!(
        blocked,
        "varchar to int",
        "varchar(20)",
        "(1, '12'), (2, 'abc'), (3, null)",
        "int"
    ),
    column!(
        blocked,
        "numeric to int",
        "numeric(10,2)",
        "(1, 1.75), (2, 2), (3, null)",
        "int"
    ),
    column!(
        blocked,
        "text to boolean",
        "text",
        "(1, 'yes'), (2, 'maybe'), (3, null)",
        "boolean"
    ),
    // Data-dependent: NOT NULL.
    column!(
        blocked,
        "NOT NULL set on a column holding NULL",
        "text",
        "(1, 'a'), (2, null), (3, null)",
        "text not null"
    ),
    blocked(
        "NOT NULL column added without a default",
        "create table t (id int primary key); insert into t values (1), (2)",
        "create table t (id int primary key, c int not null);",
    ),
    // Data-dependent: enum values.
    blocked(
        "enum value removed",
        "create type mood as enum ('happy', 'sad', 'meh'); \
         create table t (id int primary key, m mood); \
         insert into t values (1, 'meh'), (2, 'happy')",
        "create type mood as enum ('happy', 'sad'); create table t (id int primary key, m mood);",
    ),
    // Data-dependent: uniqueness.
    column!(
        blocked,
        "unique index added",
        "text",
        "(1, 'a'), (2, 'a'), (3, 'b')",
        "text unique"
    ),
    blocked(
        "index made unique",
        "create table t (id int primary key, c text); create index t_c on t (c); \
         insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c text); create unique index t_c on t (c);",
    ),
    blocked(
        "primary key added",
        "create table t (id int not null, c text); insert into t values (1, 'a'), (1, 'b')",
        "create table t (id int not null primary key, c text);",
    ),
    blocked(
        "composite unique added",
        "create table t (id int primary key, a int, b int); \
         insert into t values (1, 1, 1), (2, 1, 1)",
        "create table t (id int primary key, a int, b int, unique (a, b));",
    ),
    blocked(
        "unique over a new column with a default",
        "create table t (id int primary key); insert into t values (1), (2)",
        "create table t (id int primary key, c int default 0 unique);",
    ),
    // Safe.
    safe(
        "table added",
        "create table t (id int primary key); insert into t values (1)",
        "create table t (id int primary key); create table u (id int primary key, c text not null);",
    ),
    column!(
        safe,
        "nullable column added",
        "text",
        "(1, 'a'), (2, 'b'), (3, null)",
        "text, d int"
    ),
    column!(
        safe,
        "NOT NULL column added with a default",
        "text",
        "(1, 'a'), (2, 'b'), (3, null)",
        "text, d int not null default 7"
    ),
    column!(
        safe,
        "varchar(10) to varchar(255)",
        "varchar(10)",
        "(1, 'abc'), (2, 'b'), (3, null)",
        "varchar(255)"
    ),
    column!(
        safe,
        "varchar(10) to text",
        "varchar(10)",
        "(1, 'abc'), (2, 'b'), (3, null)",
        "text"
    ),
    column!(
        safe,
        "char(5) to char(10)",
        "char(5)",
        "(1, 'abc'), (2, 'b'), (3, null)",
        "char(10)"
    ),
    column!(
        safe,
        "int to bigint",
        "int",
        "(1, 2147483647), (2, 2), (3, null)",
        "bigint"
    ),
    column!(
        safe,
        "smallint to int",
        "smallint",
        "(1, 32767), (2, 2), (3, null)",
        "int"
    ),
    column!(
        safe,
        "numeric(8,2) to numeric(12,4)",
        "numeric(8,2)",
        "(1, 123456.78), (2, 1.5), (3, null)",
        "numeric(12,4)"
    ),
    column!(
        safe,
        "numeric(8,2) to numeric",
        "numeric(8,2)",
        "(1, 123456.78), (2, 1.5), (3, null)",
        "numeric"
    ),
    column!(
        safe,
        "int to numeric(12,0)",
        "int",
        "(1, 2147483647), (2, 2), (3, null)",
        "numeric(12,0)"
    ),
    column!(
        safe,
        "date to timestamp",
        "date",
        "(1, '2024-05-06'), (2, now()), (3, null)",
        "timestamp"
    ),
    column!(
        safe,
        "timestamp(0) to timestamp",
        "timestamp(0)",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "timestamp"
    ),
    column!(
        safe,
        "timestamp to timestamptz",
        "timestamp",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "timestamptz"
    ),
    column!(
        safe,
        "real to double precision",
        "real",
        "(1, 1.5), (2, 2), (3, null)",
        "double precision"
    ),
    column!(
        safe,
        "NOT NULL dropped",
        "text not null",
        "(1, 'a'), (2, 'b'), (3, 'c')",
        "text"
    ),
    column!(
        safe,
        "default added",
        "int",
        "(1, 1), (2, 2), (3, null)",
        "int default 5"
    ),
    column!(
        safe,
        "default dropped",
        "int default 5",
        "(1, 1), (2, 2), (3, null)",
        "int"
    ),
    safe(
        "index added",
        "create table t (id int primary key, c text); insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c text); create index t_c on t (c);",
    ),
    safe(
        "index dropped",
        "create table t (id int primary key, c text); create index t_c on t (c); \
         insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c text);",
    ),
    safe(
        "enum value added",
        "create type mood as enum ('happy', 'sad'); create table t (id int primary key, m mood); \
         insert into t values (1, 'sad'), (2, 'happy')",
        "create type mood as enum ('happy', 'sad', 'meh'); create table t (id int primary key, m mood);",
    ),
    safe(
        "unique over a new nullable column",
        "create table t (id int primary key); insert into t values (1), (2)",
        "create table t (id int primary key, c int unique);",
    ),
    safe(
        "unique covered by the primary key",
        "create table t (id int primary key, c text); insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c text, unique (id, c));",
    ),
    safe(
        "foreign key added over rows that satisfy it",
        "create table p (id int primary key); create table t (id int primary key, p_id int); \
         insert into p values (1), (2); insert into t values (1, 1), (2, null)",
        "create table p (id int primary key); \
         create table t (id int primary key, p_id int references p (id));",
    ),
    safe_with(
        "table dropped under diff.skip drop_table",
        "create table t (id int primary key); create table old (id int); \
         insert into t values (1); insert into old values (1)",
        "create table t (id int primary key, d int);",
        Extra::Skip(&["drop_table"]),
    ),
    safe_with(
        "column dropped under diff.skip drop_column",
        "create table t (id int primary key, bio text); insert into t values (1, 'a')",
        "create table t (id int primary key, d int);",
        Extra::Skip(&["drop_column"]),
    ),
    safe_with(
        "schema dropped under diff.skip drop_schema",
        "create schema extra; create table extra.t (id int); insert into extra.t values (1); \
         create table t (id int primary key); insert into t values (1)",
        "create table t (id int primary key, d int);",
        Extra::Skip(&["drop_schema"]),
    ),
    safe_with(
        "narrowing under diff.skip modify_column",
        "create table t (id int primary key, c varchar(255)); \
         insert into t values (1, 'abcdefghijklmnop')",
        "create table t (id int primary key, c varchar(10), d int);",
        Extra::Skip(&["modify_column"]),
    ),
    safe_with(
        "unique index under diff.skip add_index",
        "create table t (id int primary key, c text); insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c text, d int); create unique index t_c on t (c);",
        Extra::Skip(&["add_index"]),
    ),
    safe_with(
        "NOT NULL column under diff.skip add_column",
        "create table t (id int primary key, c text); insert into t values (1, 'a')",
        "create table t (id int primary key, c text, d int not null); create index t_c on t (c);",
        Extra::Skip(&["add_column"]),
    ),
    safe_with(
        "dropped table excluded",
        "create table t (id int primary key); create table old (id int); \
         insert into t values (1); insert into old values (1)",
        "create table t (id int primary key, d int);",
        Extra::Exclude(&["public.old"]),
    ),
    safe_with(
        "narrowed table excluded",
        "create table t (id int primary key); create table legacy (id int, c varchar(255)); \
         insert into t values (1); insert into legacy values (1, 'abcdefghijklmnop')",
        "create table t (id int primary key, d int); create table legacy (id int, c varchar(10));",
        Extra::Exclude(&["public.legacy"]),
    ),
];

const MARIADB: &[Case] = &[
    // Destructive: drops.
    blocked(
        "drop table",
        "create table t (id int primary key); create table old (id int); \
         insert into t values (1); insert into old values (1), (2)",
        "create table t (id int primary key);",
    ),
    blocked(
        "drop column",
        "create table t (id int primary key, bio text); insert into t values (1, 'a'), (2, 'b')",
        "create table t (id int primary key);",
    ),
    blocked(
        "drop two tables",
        "create table t (id int primary key); create table a (id int); create table b (id int); \
         insert into t values (1); insert into a values (1); insert into b values (2)",
        "create table t (id int primary key);",
    ),
    // Data-dependent: narrowed types.
    column!(
        blocked,
        "varchar(255) to varchar(10)",
        "varchar(255)",
        "(1, 'abcdefghijklmnop'), (2, 'b'), (3, null)",
        "varchar(10)"
    ),
    column!(
        blocked,
        "char(20) to char(5)",
        "char(20)",
        "(1, 'abcdefgh'), (2, 'b'), (3, null)",
        "char(5)"
    ),
    column!(
        blocked,
        "text to varchar(50)",
        "text",
        "(1, repeat('x', 80)), (2, 'b'), (3, null)",
        "varchar(50)"
    ),
    column!(
        blocked,
        "mediumtext to text",
        "mediumtext",
        "(1, repeat('x', 70000)), (2, 'b'), (3, null)",
        "text"
    ),
    column!(
        blocked,
        "varchar(10) to char(10)",
        "varchar(10)",
        "(1, 'a '), (2, 'b'), (3, null)",
        "char(10)"
    ),
    column!(
        blocked,
        "varbinary(100) to varbinary(10)",
        "varbinary(100)",
        "(1, repeat('x', 40)), (2, 'b'), (3, null)",
        "varbinary(10)"
    ),
    column!(
        blocked,
        "bigint to int",
        "bigint",
        "(1, 9000000000), (2, 2), (3, null)",
        "int"
    ),
    column!(
        blocked,
        "int to smallint",
        "int",
        "(1, 100000), (2, 2), (3, null)",
        "smallint"
    ),
    column!(
        blocked,
        "smallint to tinyint",
        "smallint",
        "(1, 1000), (2, 2), (3, null)",
        "tinyint"
    ),
    column!(
        blocked,
        "int to int unsigned",
        "int",
        "(1, -5), (2, 2), (3, null)",
        "int unsigned"
    ),
    column!(
        blocked,
        "int unsigned to int",
        "int unsigned",
        "(1, 4000000000), (2, 2), (3, null)",
        "int"
    ),
    column!(
        blocked,
        "decimal(12,4) to decimal(8,2)",
        "decimal(12,4)",
        "(1, 12345.6789), (2, 1.5), (3, null)",
        "decimal(8,2)"
    ),
    column!(
        blocked,
        "decimal(12,4) to decimal(12,2)",
        "decimal(12,4)",
        "(1, 1.2345), (2, 1.5), (3, null)",
        "decimal(12,2)"
    ),
    column!(
        blocked,
        "decimal(10,2) to decimal(6,2)",
        "decimal(10,2)",
        "(1, 12345678.12), (2, 1.5), (3, null)",
        "decimal(6,2)"
    ),
    column!(
        blocked,
        "datetime to date",
        "datetime",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "date"
    ),
    column!(
        blocked,
        "timestamp to date",
        "timestamp null",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "date"
    ),
    column!(
        blocked,
        "datetime(6) to datetime",
        "datetime(6)",
        "(1, '2024-05-06 07:08:09.123456'), (2, now()), (3, null)",
        "datetime"
    ),
    column!(
        blocked,
        "datetime to time",
        "datetime",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "time"
    ),
    column!(
        blocked,
        "datetime to timestamp",
        "datetime",
        "(1, '2050-05-06 07:08:09'), (2, '1960-01-01'), (3, null)",
        "timestamp null"
    ),
    column!(
        blocked,
        "double to float",
        "double",
        "(1, 1.23456789012345), (2, 2), (3, null)",
        "float"
    ),
    // Data-dependent: another type family.
    column!(
        blocked,
        "varchar to int",
        "varchar(20)",
        "(1, '12'), (2, 'abc'), (3, null)",
        "int"
    ),
    column!(
        blocked,
        "decimal to int",
        "decimal(10,2)",
        "(1, 1.75), (2, 2), (3, null)",
        "int"
    ),
    column!(
        blocked,
        "enum to varchar(3)",
        "enum('small', 'large')",
        "(1, 'large'), (2, 'small'), (3, null)",
        "varchar(3)"
    ),
    // Data-dependent: NOT NULL.
    column!(
        blocked,
        "NOT NULL set on a column holding NULL",
        "int",
        "(1, 5), (2, null), (3, null)",
        "int not null"
    ),
    blocked(
        "NOT NULL column added without a default",
        "create table t (id int primary key); insert into t values (1), (2)",
        "create table t (id int primary key, c int not null);",
    ),
    // Data-dependent: enum values.
    column!(
        blocked,
        "enum value removed",
        "enum('happy', 'sad', 'meh')",
        "(1, 'meh'), (2, 'happy'), (3, null)",
        "enum('happy', 'sad')"
    ),
    // Data-dependent: uniqueness.
    column!(
        blocked,
        "unique index added",
        "varchar(10)",
        "(1, 'a'), (2, 'a'), (3, 'b')",
        "varchar(10) unique"
    ),
    blocked(
        "index made unique",
        "create table t (id int primary key, c varchar(10), index t_c (c)); \
         insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c varchar(10), unique index t_c (c));",
    ),
    blocked(
        "primary key added",
        "create table t (id int not null, c text); insert into t values (1, 'a'), (1, 'b')",
        "create table t (id int not null primary key, c text);",
    ),
    blocked(
        "composite unique added",
        "create table t (id int primary key, a int, b int); \
         insert into t values (1, 1, 1), (2, 1, 1)",
        "create table t (id int primary key, a int, b int, unique (a, b));",
    ),
    blocked(
        "unique over a new column with a default",
        "create table t (id int primary key); insert into t values (1), (2)",
        "create table t (id int primary key, c int default 0 unique);",
    ),
    // Safe.
    safe(
        "table added",
        "create table t (id int primary key); insert into t values (1)",
        "create table t (id int primary key); create table u (id int primary key, c text not null);",
    ),
    column!(
        safe,
        "nullable column added",
        "text",
        "(1, 'a'), (2, 'b'), (3, null)",
        "text, d int"
    ),
    column!(
        safe,
        "NOT NULL column added with a default",
        "text",
        "(1, 'a'), (2, 'b'), (3, null)",
        "text, d int not null default 7"
    ),
    column!(
        safe,
        "varchar(10) to varchar(255)",
        "varchar(10)",
        "(1, 'abc'), (2, 'b'), (3, null)",
        "varchar(255)"
    ),
    column!(
        safe,
        "varchar(10) to text",
        "varchar(10)",
        "(1, 'abc'), (2, 'b'), (3, null)",
        "text"
    ),
    column!(
        safe,
        "text to mediumtext",
        "text",
        "(1, 'abc'), (2, 'b'), (3, null)",
        "mediumtext"
    ),
    column!(
        safe,
        "char(5) to char(10)",
        "char(5)",
        "(1, 'abc'), (2, 'b'), (3, null)",
        "char(10)"
    ),
    column!(
        safe,
        "int to bigint",
        "int",
        "(1, 2147483647), (2, 2), (3, null)",
        "bigint"
    ),
    column!(
        safe,
        "tinyint to smallint",
        "tinyint",
        "(1, 127), (2, 2), (3, null)",
        "smallint"
    ),
    column!(
        safe,
        "int unsigned to bigint",
        "int unsigned",
        "(1, 4000000000), (2, 2), (3, null)",
        "bigint"
    ),
    column!(
        safe,
        "smallint unsigned to int",
        "smallint unsigned",
        "(1, 65535), (2, 2), (3, null)",
        "int"
    ),
    column!(
        safe,
        "decimal(8,2) to decimal(12,4)",
        "decimal(8,2)",
        "(1, 123456.78), (2, 1.5), (3, null)",
        "decimal(12,4)"
    ),
    column!(
        safe,
        "int to decimal(12,0)",
        "int",
        "(1, 2147483647), (2, 2), (3, null)",
        "decimal(12,0)"
    ),
    column!(
        safe,
        "date to datetime",
        "date",
        "(1, '2024-05-06'), (2, now()), (3, null)",
        "datetime"
    ),
    column!(
        safe,
        "datetime to datetime(6)",
        "datetime",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "datetime(6)"
    ),
    column!(
        safe,
        "timestamp to datetime",
        "timestamp null",
        "(1, '2024-05-06 07:08:09'), (2, now()), (3, null)",
        "datetime"
    ),
    column!(
        safe,
        "float to double",
        "float",
        "(1, 1.5), (2, 2), (3, null)",
        "double"
    ),
    column!(
        safe,
        "NOT NULL dropped",
        "int not null",
        "(1, 1), (2, 2), (3, 3)",
        "int"
    ),
    column!(
        safe,
        "default added",
        "int",
        "(1, 1), (2, 2), (3, null)",
        "int default 5"
    ),
    column!(
        safe,
        "default dropped",
        "int default 5",
        "(1, 1), (2, 2), (3, null)",
        "int"
    ),
    column!(
        safe,
        "enum value added at the end",
        "enum('happy', 'sad')",
        "(1, 'sad'), (2, 'happy'), (3, null)",
        "enum('happy', 'sad', 'meh')"
    ),
    column!(
        safe,
        "comment added",
        "int",
        "(1, 1), (2, 2), (3, null)",
        "int comment 'the count'"
    ),
    safe(
        "index added",
        "create table t (id int primary key, c varchar(10)); insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c varchar(10), index t_c (c));",
    ),
    safe(
        "index dropped",
        "create table t (id int primary key, c varchar(10), index t_c (c)); \
         insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c varchar(10));",
    ),
    safe(
        "unique over a new nullable column",
        "create table t (id int primary key); insert into t values (1), (2)",
        "create table t (id int primary key, c int unique);",
    ),
    safe(
        "unique covered by the primary key",
        "create table t (id int primary key, c varchar(10)); insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c varchar(10), unique (id, c));",
    ),
    safe(
        "foreign key added over rows that satisfy it",
        "create table p (id int primary key); create table t (id int primary key, p_id int); \
         insert into p values (1), (2); insert into t values (1, 1), (2, null)",
        "create table p (id int primary key); \
         create table t (id int primary key, p_id int, foreign key (p_id) references p (id));",
    ),
    safe_with(
        "table dropped under diff.skip drop_table",
        "create table t (id int primary key); create table old (id int); \
         insert into t values (1); insert into old values (1)",
        "create table t (id int primary key, d int);",
        Extra::Skip(&["drop_table"]),
    ),
    safe_with(
        "column dropped under diff.skip drop_column",
        "create table t (id int primary key, bio text); insert into t values (1, 'a')",
        "create table t (id int primary key, d int);",
        Extra::Skip(&["drop_column"]),
    ),
    safe_with(
        "narrowing under diff.skip modify_column",
        "create table t (id int primary key, c varchar(255)); \
         insert into t values (1, 'abcdefghijklmnop')",
        "create table t (id int primary key, c varchar(10), d int);",
        Extra::Skip(&["modify_column"]),
    ),
    safe_with(
        "unique index under diff.skip add_index",
        "create table t (id int primary key, c varchar(10)); insert into t values (1, 'a'), (2, 'a')",
        "create table t (id int primary key, c varchar(10), d int, unique index t_c (c));",
        Extra::Skip(&["add_index"]),
    ),
    safe_with(
        "NOT NULL column under diff.skip add_column",
        "create table t (id int primary key, c varchar(10)); insert into t values (1, 'a')",
        "create table t (id int primary key, c varchar(10), d int not null, index t_c (c));",
        Extra::Skip(&["add_column"]),
    ),
    safe_with(
        "dropped table excluded",
        "create table t (id int primary key); create table old (id int); \
         insert into t values (1); insert into old values (1)",
        "create table t (id int primary key, d int);",
        Extra::Exclude(&["old"]),
    ),
];

/// The catalogue (columns with types, nullability and defaults; indexes; constraints; enum
/// types; schemas) and every table's rows, as sorted lines: what a refused apply must leave as
/// it was.
fn snapshot(db: &TestDatabase) -> (String, String) {
    let (catalogue, tables) = match db.engine {
        Engine::Postgres => (
            "select format('col %s.%s.%s %s %s %s,%s,%s %s %s', table_schema, table_name, \
             column_name, udt_name, character_maximum_length, numeric_precision, numeric_scale, \
             datetime_precision, is_nullable, column_default) from information_schema.columns \
             where table_schema not in ('pg_catalog', 'information_schema') \
             union all select format('idx %s', indexdef) from pg_indexes \
             where schemaname <> 'pg_catalog' \
             union all select format('con %s %s %s', conrelid::regclass, conname, \
             pg_get_constraintdef(oid)) from pg_constraint \
             where connamespace <> 'pg_catalog'::regnamespace \
             union all select format('enum %s %s %s', t.typname, e.enumsortorder, e.enumlabel) \
             from pg_enum e join pg_type t on t.oid = e.enumtypid \
             union all select format('schema %s', nspname) from pg_namespace \
             where nspname not like 'pg\\_%' and nspname <> 'information_schema'",
            "select format('%I.%I', table_schema, table_name) from information_schema.tables \
             where table_schema not in ('pg_catalog', 'information_schema') \
             and table_type = 'BASE TABLE'",
        ),
        Engine::MariaDb => (
            "select concat_ws(' ', 'col', table_name, column_name, column_type, is_nullable, \
             ifnull(column_default, '-'), ifnull(collation_name, '-'), extra, column_comment) \
             from information_schema.columns where table_schema = database() \
             union all select concat_ws(' ', 'idx', table_name, index_name, non_unique, \
             seq_in_index, column_name) from information_schema.statistics \
             where table_schema = database() \
             union all select concat_ws(' ', 'con', table_name, constraint_name, constraint_type) \
             from information_schema.table_constraints where table_schema = database()",
            "select concat('`', table_name, '`') from information_schema.tables \
             where table_schema = database() and table_type = 'BASE TABLE'",
        ),
    };
    let sorted = |text: String| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    let catalogue = sorted(db.query(catalogue).unwrap());
    let mut rows = String::new();
    for table in sorted(db.query(tables).unwrap()).lines() {
        let select = match db.engine {
            Engine::Postgres => format!("select r::text from {table} r"),
            Engine::MariaDb => format!("select * from {table}"),
        };
        writeln!(rows, "{table}:\n{}", sorted(db.query(&select).unwrap())).unwrap();
    }
    (catalogue, rows)
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What one case did.
struct Verdict {
    expect: Expect,
    /// As expected: refused by a lint policy, or applied.
    held: bool,
    /// For a refused case: the catalogue's and rows' hashes were the same after.
    unchanged: bool,
    report: String,
}

fn run_case(engine: Engine, case: &Case) -> Verdict {
    let hint = format!("corpus_{}", case.name);
    let db = TestDatabase::create(engine, &hint).unwrap();
    let dev = TestDatabase::create(engine, &format!("{hint}_dev")).unwrap();
    db.query(case.setup)
        .unwrap_or_else(|err| panic!("{engine:?} {}: setting up: {err}", case.name));
    let scratch = Scratch::new(&format!("corpus-{engine:?}-{}", db.name));
    let file = scratch.0.join("schema.sql");
    std::fs::write(&file, case.desired).unwrap();
    let (skip, exclude) = match case.extra {
        Extra::None => (vec![], vec![]),
        Extra::Skip(kinds) => (kinds.iter().map(|k| k.to_string()).collect(), vec![]),
        Extra::Exclude(patterns) => (vec![], patterns.iter().map(|p| p.to_string()).collect()),
    };
    let task = task(
        &file,
        SchemaApply {
            lint_destructive: true,
            lint_data_depend: true,
            skip,
            exclude,
            ..SchemaApply::default()
        },
    );
    let before = snapshot(&db);
    let ran = support::run_runner(
        "schema",
        &task,
        &[("DATABASE_URL", &db.url), ("DEV_URL", &dev.url)],
        &scratch.0,
        &[],
    );
    let after = snapshot(&db);
    let unchanged = sha256(&before.0) == sha256(&after.0) && sha256(&before.1) == sha256(&after.1);
    let held = match case.expect {
        Expect::Blocked => {
            ran.code == EXIT_DEFINITIVE && ran.result.reason == Reason::LintPolicyError
        }
        Expect::Safe => ran.code == EXIT_OK && ran.result.outcome == Outcome::Applied,
    };
    let mut report = format!(
        "{engine:?} {:?} `{}`: exit {}, {:?}: {}",
        case.expect, case.name, ran.code, ran.result.reason, ran.result.message
    );
    if case.expect == Expect::Blocked && !unchanged {
        write!(
            report,
            "\ncatalogue before:\n{}\nafter:\n{}\nrows before:\n{}\nafter:\n{}",
            before.0, after.0, before.1, after.1
        )
        .unwrap();
    }
    Verdict {
        expect: case.expect,
        held,
        unchanged,
        report,
    }
}

fn task(file: &Path, options: SchemaApply) -> Task {
    let content = std::fs::read(file).unwrap();
    Task {
        version: CONTRACT_VERSION,
        resource: "tests/safety-corpus".into(),
        target: Target::UrlEnv("DATABASE_URL".into()),
        dev_url_env: Some("DEV_URL".into()),
        dev_wait_seconds: None,
        env_name: "k8s".into(),
        vars: vec![],
        custom_config_env: None,
        cloud: None,
        inputs_digest: contract::digest_files([("schema.sql", content.as_slice())]),
        work: Work::Schema(SchemaApply {
            desired: Desired::File(file.display().to_string()),
            ..options
        }),
    }
}

/// Runs every case of `cases` on `engine`, a few at a time, and checks the three counts.
fn corpus(engine: Engine, cases: &[Case]) {
    let blocked_cases = cases.iter().filter(|c| c.expect == Expect::Blocked).count();
    let safe_cases = cases.len() - blocked_cases;
    assert!(
        blocked_cases >= 30 && safe_cases >= 30,
        "{engine:?}: the corpus has {blocked_cases} destructive or data-losing cases and \
         {safe_cases} safe ones, fewer than 30"
    );
    let next = AtomicUsize::new(0);
    let verdicts = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(index) else {
                        break;
                    };
                    let verdict = run_case(engine, case);
                    verdicts.lock().unwrap().push(verdict);
                }
            });
        }
    });
    let verdicts = verdicts.into_inner().unwrap();
    let count = |f: &dyn Fn(&Verdict) -> bool| verdicts.iter().filter(|v| f(v)).count();
    let blocked = count(&|v| v.expect == Expect::Blocked && v.held);
    let applied = count(&|v| v.expect == Expect::Safe && v.held);
    let unchanged = count(&|v| v.expect == Expect::Blocked && v.held && v.unchanged);
    let summary = format!(
        "safety corpus, {engine:?}: blocked {blocked}/{blocked_cases}, safe applied \
         {applied}/{safe_cases}, database unchanged when blocked {unchanged}/{blocked_cases}"
    );
    println!("{summary}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("safety-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{engine:?}.txt")), format!("{summary}\n")).unwrap();
    let failures: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.held || (v.expect == Expect::Blocked && !v.unchanged))
        .map(|v| v.report.as_str())
        .collect();
    assert!(
        failures.is_empty(),
        "{summary}\n\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn the_lint_policies_hold_the_safety_corpus_on_postgres() {
    corpus(Engine::Postgres, POSTGRES);
}

#[test]
fn the_lint_policies_hold_the_safety_corpus_on_mariadb() {
    corpus(Engine::MariaDb, MARIADB);
}
