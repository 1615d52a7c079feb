//! The seed's Getting Started content, written once for every test, benchmark and the demo: the
//! PostgreSQL migration with its `atlas.sum` (examples/postgres-migration/migrationdir.yaml) and
//! the MySQL desired schema (examples/mysql-schema/schema.yaml). tests/examples.rs holds these
//! to the example manifests, so the two cannot drift apart.

/// The name of the seed's one migration file.
pub const MIGRATION_FILE: &str = "20230316085611.sql";

/// The seed's migration, as the ConfigMap holds it (a YAML `|` block ends in a newline).
pub const MIGRATION_SQL: &str = "create sequence users_seq;\ncreate table users (\n  id int not null default nextval ('users_seq'),\n  name varchar(255) not null,\n  email varchar(255) unique not null,\n  short_bio varchar(255) not null,\n  primary key (id)\n);\n";

/// The seed's `atlas.sum` for [`MIGRATION_SQL`] under [`MIGRATION_FILE`].
pub const MIGRATION_SUM: &str = "h1:FwM0ApKo8xhcZFrSlpa6dYjvi0fnDPo/aZSzajtbHLc=\n20230316085611.sql h1:ldFr73m6ZQzNi8q9dVJsOU/ZHmkBo4Sax03AaL0VUUs=\n";

/// The seed AtlasSchema's desired schema (MySQL).
pub const SCHEMA_SQL: &str = "create table users (\n  id int not null auto_increment,\n  name varchar(255) not null,\n  email varchar(255) unique not null,\n  short_bio varchar(255) not null,\n  primary key (id)\n);\n";
