//! Database images (`postgres:<tag>`, `mysql:<tag>`, `mariadb:<tag>`) → Debian's servers, for
//! throwaway databases such as the operator's dev-database sidecars.
//!
//! The image's `ENTRYPOINT` is a `docker-entrypoint.sh` of ours (below, written into the run's
//! directory and mounted at `/usr/local/bin/docker-entrypoint.sh`), its `CMD` `postgres`,
//! `mysqld` or `mariadbd`, as in the official images. Like theirs, the entrypoint initialises an
//! empty data directory from the container's environment (`POSTGRES_*`, `MARIADB_*`/`MYSQL_*`),
//! then runs the server in the foreground, as the package's user (`postgres`, `mysql`: the
//! kubelet runs as root, the servers refuse root; `setpriv` drops to them inside the sandbox),
//! and passes the container's `args` to it. Unlike theirs:
//!
//! - the server is the host's whatever the tag: PostgreSQL from `/usr/lib/postgresql/<newest>/`
//!   and MariaDB for both `mysql` and `mariadb`;
//! - it listens on 127.0.0.1 (pods share the host's network) at the container's first
//!   `containerPort` (default 5432 / 3306), given to the entrypoint as `PGPORT` /
//!   `MYSQL_TCP_PORT`, which a container may set itself;
//! - durability is off (`fsync=off`, `innodb_flush_log_at_trx_commit=0`, …): the data never
//!   outlives the pod;
//! - TCP connections always need the password unless `POSTGRES_HOST_AUTH_METHOD=trust` or an
//!   empty MariaDB root password: the official images trust their own loopback, and here every
//!   pod is on the loopback;
//! - `/docker-entrypoint-initdb.d` is not run.
//!
//! The data directory (`$PGDATA`, default `/var/lib/postgresql/data`; `/var/lib/mysql`) is the
//! pod's volume when the container mounts one there (or above it), otherwise a fresh directory
//! per container start, under the run's directory on the host, removed when the container
//! exits. The socket directory (`/run/postgresql`, `/run/mysqld`) and `/tmp` are the sandbox's
//! own. MariaDB's empty data directory is made once per kubelet and copied ([`Templates`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the image's entrypoint is in the container.
pub const ENTRYPOINT: &str = "/usr/local/bin/docker-entrypoint.sh";

/// The database images the kubelet knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Postgres,
    MySql,
    MariaDb,
}

impl Flavour {
    /// The flavour of an image by its repository name (`docker.io/library/postgres:16` →
    /// PostgreSQL).
    pub fn of(image: &str) -> Option<Flavour> {
        match super::reference::short_name(image) {
            "postgres" => Some(Flavour::Postgres),
            "mysql" => Some(Flavour::MySql),
            "mariadb" => Some(Flavour::MariaDb),
            _ => None,
        }
    }

    /// The port the image's server listens on.
    pub fn default_port(self) -> i32 {
        match self {
            Flavour::Postgres => 5432,
            Flavour::MySql | Flavour::MariaDb => 3306,
        }
    }

    /// The variable that tells the entrypoint (and the server) the port.
    pub fn port_variable(self) -> &'static str {
        match self {
            Flavour::Postgres => "PGPORT",
            Flavour::MySql | Flavour::MariaDb => "MYSQL_TCP_PORT",
        }
    }

    /// The image's `CMD`.
    pub fn command(self) -> &'static str {
        match self {
            Flavour::Postgres => "postgres",
            Flavour::MySql => "mysqld",
            Flavour::MariaDb => "mariadbd",
        }
    }

    /// The server's Unix socket directory: the sandbox's own, so pods never share sockets or
    /// lock files in the host's `/run`.
    pub fn socket_dir(self) -> &'static str {
        match self {
            Flavour::Postgres => "/run/postgresql",
            Flavour::MySql | Flavour::MariaDb => "/run/mysqld",
        }
    }

    /// The data directory in the container, given the container's environment.
    pub fn data_dir(self, env: impl Fn(&str) -> Option<String>) -> PathBuf {
        match self {
            Flavour::Postgres => env("PGDATA")
                .filter(|dir| dir.starts_with('/'))
                .map_or_else(|| PathBuf::from(POSTGRES_DATA), PathBuf::from),
            Flavour::MySql | Flavour::MariaDb => PathBuf::from(CONTAINER_MYSQL_DATA),
        }
    }

    /// The variables the image sets (`ENV`); `tag` is the image's tag.
    pub fn image_env(self, tag: Option<&str>) -> Vec<(String, String)> {
        match self {
            Flavour::Postgres => {
                // From 18 on the image keeps its data in a versioned directory.
                let data = match tag.map(major) {
                    None | Some(None) => "/var/lib/postgresql/18/docker".to_string(),
                    Some(Some(major)) if major >= 18 => {
                        format!("/var/lib/postgresql/{major}/docker")
                    }
                    Some(Some(_)) => POSTGRES_DATA.to_string(),
                };
                vec![("PGDATA".to_string(), data)]
            }
            Flavour::MySql | Flavour::MariaDb => Vec::new(),
        }
    }

    /// The entrypoint script.
    pub fn entrypoint(self) -> String {
        let script = match self {
            Flavour::Postgres => return POSTGRES_ENTRYPOINT.to_string(),
            Flavour::MySql => MYSQL_ENTRYPOINT.replace("@FLAVOUR@", "mysql"),
            Flavour::MariaDb => MYSQL_ENTRYPOINT.replace("@FLAVOUR@", "mariadb"),
        };
        script
            .replace("@TEMPLATE@", MARIADB_TEMPLATE)
            .replace("@INSTALL@", &MARIADB_INSTALL.join(" "))
            .replace("@TUNING@", &MARIADB_TUNING.join(" "))
    }

    /// What the image needs from the host: `None` when it is there, otherwise what is missing.
    pub fn missing(self) -> Option<String> {
        match self {
            Flavour::Postgres => postgres_bin_dir()
                .is_none()
                .then(|| "no PostgreSQL server under /usr/lib/postgresql/*/bin".to_string()),
            Flavour::MySql | Flavour::MariaDb => {
                ["/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db"]
                    .into_iter()
                    .find(|path| !Path::new(path).exists())
                    .map(|path| format!("no {path}"))
            }
        }
    }

    /// The Debian package that brings the server.
    pub fn package(self) -> &'static str {
        match self {
            Flavour::Postgres => "postgresql",
            Flavour::MySql | Flavour::MariaDb => "mariadb-server",
        }
    }
}

const POSTGRES_DATA: &str = "/var/lib/postgresql/data";
const CONTAINER_MYSQL_DATA: &str = "/var/lib/mysql";

/// Where the mysql and mariadb images find the kubelet's fresh MariaDB data directory.
pub const MARIADB_TEMPLATE: &str = "/.devcluster/mariadb-data";

/// `mariadb-install-db`'s options, the same for the kubelet's template and a container's own
/// install.
const MARIADB_INSTALL: &[&str] = &[
    "--skip-test-db",
    "--auth-root-authentication-method=normal",
    "--skip-name-resolve",
];

/// The server's settings, the same at install and at every start (a redo log of another size
/// would be rebuilt): durability off, a small redo log.
const MARIADB_TUNING: &[&str] = &[
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=0",
    "--skip-innodb-doublewrite",
    "--innodb-log-file-size=16M",
];

const INSTALL_LIMIT: Duration = Duration::from_secs(120);

/// Fresh data directories the kubelet makes once and the database images copy at each start.
///
/// `mariadb-install-db` takes about 3 s (its system tables and help text go through the server
/// statement by statement); a copy of its result, 30 MB, a tenth of that. It runs as the
/// containers' would, as `mysql` in a sandbox whose host name is `localhost` (so no account
/// names a host). PostgreSQL's `initdb` is faster and bakes the container's superuser and
/// password in, so each container runs its own.
pub struct Templates {
    dir: PathBuf,
    bwrap: PathBuf,
    mariadb: tokio::sync::OnceCell<Option<PathBuf>>,
}

impl Templates {
    /// Templates made under `dir` (the kubelet's own directory), with `bwrap`.
    pub fn new(dir: PathBuf, bwrap: PathBuf) -> Templates {
        Templates {
            dir,
            bwrap,
            mariadb: tokio::sync::OnceCell::new(),
        }
    }

    /// The fresh MariaDB data directory, made on first use (later calls wait for it); none
    /// when it could not be made, and the containers then run `mariadb-install-db` themselves.
    pub async fn mariadb(&self) -> Option<PathBuf> {
        let make = || async {
            let (dir, bwrap) = (self.dir.clone(), self.bwrap.clone());
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || install_mariadb(&dir, &bwrap)).await {
                Ok(Ok(path)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(path = %path.display(), seconds, "MariaDB data template made");
                    Some(path)
                }
                Ok(Err(err)) => {
                    tracing::warn!(%err, "making the MariaDB data template; containers install their own");
                    None
                }
                Err(err) => {
                    tracing::warn!(%err, "making the MariaDB data template; containers install their own");
                    None
                }
            }
        };
        self.mariadb.get_or_init(make).await.clone()
    }
}

fn install_mariadb(dir: &Path, bwrap: &Path) -> Result<PathBuf, String> {
    let target = dir.join("mariadb-data");
    let partial = dir.join("mariadb-data.partial");
    let io = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |err: std::io::Error| format!("{what}: {err}")
    };
    for path in [&target, &partial] {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(io("removing", path))?;
        }
    }
    std::fs::create_dir_all(&partial).map_err(io("creating", &partial))?;
    let root = crate::cmd::is_root();
    let mut command = std::process::Command::new(bwrap);
    command
        .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
        .args(["--unshare-pid", "--unshare-uts", "--hostname", "localhost"])
        // Where the containers have it (the kubelet's directory is closed to `mysql`).
        .arg("--bind")
        .arg(&partial)
        .arg(CONTAINER_MYSQL_DATA)
        .args(["--die-with-parent", "--"]);
    if root {
        let user = crate::cmd::User::lookup("mysql")
            .ok_or("user mysql does not exist (Debian's mariadb-server makes it)")?;
        std::os::unix::fs::chown(&partial, Some(user.uid), Some(user.gid))
            .map_err(io("chown", &partial))?;
        command.args([
            "/usr/bin/setpriv",
            "--reuid=mysql",
            "--regid=mysql",
            "--init-groups",
            "--",
        ]);
    }
    command
        .args(["/usr/bin/mariadb-install-db", "--no-defaults"])
        .arg(format!("--datadir={CONTAINER_MYSQL_DATA}"))
        .args(MARIADB_INSTALL)
        .args(MARIADB_TUNING);
    crate::cmd::output(&mut command, INSTALL_LIMIT).map_err(|err| err.to_string())?;
    std::fs::rename(&partial, &target).map_err(io("renaming", &partial))?;
    Ok(target)
}

/// The major version a tag starts with (`16`, `16.4-bookworm` → 16); `latest` counts as none.
fn major(tag: &str) -> Option<u32> {
    let digits: String = tag.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The newest PostgreSQL server's `bin` directory (Debian installs each major version under
/// `/usr/lib/postgresql/<major>/`).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The port the container's server listens on: its first `containerPort`, else the image's.
pub fn port(flavour: Flavour, ports: &[i32]) -> i32 {
    ports.first().copied().unwrap_or(flavour.default_port())
}

/// The postgres image's entrypoint. POSIX `sh`: it runs as PID 1 of the sandbox, with the
/// server as its child, and turns the kubelet's `SIGTERM` into the image's stop signal
/// (`SIGINT`: a fast shutdown).
const POSTGRES_ENTRYPOINT: &str = r#"#!/bin/sh
# docker-entrypoint.sh of devcluster's postgres image (written by devcluster-kubelet): the
# official image's start-up with the host's PostgreSQL. See devcluster/src/kubelet/database.rs.
set -euf

case "${1:-}" in -*) set -- postgres "$@" ;; esac
[ "${1:-}" = postgres ] || exec "$@"
shift

# NAME_FILE names a file holding NAME's value (a mounted Secret).
from_file() {
	eval "file=\${${1}_FILE:-}"
	[ -n "$file" ] || return 0
	value=$(cat "$file")
	eval "$1=\$value"
}
for name in POSTGRES_PASSWORD POSTGRES_USER POSTGRES_DB POSTGRES_INITDB_ARGS; do
	from_file "$name"
done

: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
port=${PGPORT:-5432}
sockets=/run/postgresql

mkdir -p "$PGDATA" "$sockets"
as_server=
if [ "$(id -u)" = 0 ]; then
	# The server refuses root: it runs as the package's user.
	as_server="setpriv --reuid=postgres --regid=postgres --init-groups --"
	chown postgres:postgres "$PGDATA" "$sockets"
fi
chmod 700 "$PGDATA"
chmod 3777 "$sockets" 2>/dev/null || :

stopping=
server=
stop() {
	stopping=1
	[ -z "$server" ] || kill -INT "$server" 2>/dev/null || :
}
trap stop TERM INT

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
		echo "error: Database is uninitialized and superuser password is not specified." >&2
		echo "       Set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust to allow all" >&2
		echo "       connections without a password." >&2
		exit 1
	fi
	password_file=$sockets/.initdb-password
	(umask 077 && printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$password_file")
	[ -z "$as_server" ] || chown postgres "$password_file"
	# shellcheck disable=SC2086
	$as_server initdb -D "$PGDATA" --username="$user" --pwfile="$password_file" \
		--encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host="$auth" \
		--no-sync --no-instructions ${POSTGRES_INITDB_ARGS:-}
	rm -f "$password_file"
	if [ "$db" != postgres ]; then
		quoted=$(printf '%s' "$db" | sed 's/"/""/g')
		printf 'CREATE DATABASE "%s";\n' "$quoted" |
			$as_server postgres --single -D "$PGDATA" -j -c fsync=off -c exit_on_error=on \
				postgres >/dev/null
	fi
	echo "PostgreSQL init process complete; ready for start up."
fi
[ -z "$stopping" ] || exit 143

$as_server postgres -D "$PGDATA" -p "$port" -c listen_addresses=127.0.0.1 \
	-c unix_socket_directories="$sockets" -c fsync=off -c synchronous_commit=off \
	-c full_page_writes=off "$@" &
server=$!
[ -z "$stopping" ] || stop
while :; do
	if wait "$server"; then code=0; else code=$?; fi
	kill -0 "$server" 2>/dev/null || break
done
exit "$code"
"#;

/// The mysql and mariadb images' entrypoint (`@FLAVOUR@` is `mysql` or `mariadb`: the mariadb
/// image reads `MARIADB_*` then `MYSQL_*`, the mysql image only `MYSQL_*`).
const MYSQL_ENTRYPOINT: &str = r#"#!/bin/sh
# docker-entrypoint.sh of devcluster's @FLAVOUR@ image (written by devcluster-kubelet): the
# official image's start-up with the host's MariaDB. See devcluster/src/kubelet/database.rs.
set -euf
flavour=@FLAVOUR@

case "${1:-}" in -*) set -- mariadbd "$@" ;; esac
case "${1:-}" in
mariadbd | mysqld) shift ;;
*) exec "$@" ;;
esac

# The image's setting NAME: MARIADB_NAME (mariadb only), else MYSQL_<mysql name>; either may
# come from the file named by the variable with _FILE appended (a mounted Secret).
setting() {
	value=
	if [ "$flavour" = mariadb ]; then
		read_variable "MARIADB_$1"
	fi
	[ -n "$value" ] || read_variable "MYSQL_$2"
	printf '%s' "$value"
}
read_variable() {
	eval "value=\${$1:-}"
	eval "file=\${$1_FILE:-}"
	if [ -z "$value" ] && [ -n "$file" ]; then
		value=$(cat "$file")
	fi
}
root_password=$(setting ROOT_PASSWORD ROOT_PASSWORD)
allow_empty=$(setting ALLOW_EMPTY_ROOT_PASSWORD ALLOW_EMPTY_PASSWORD)
random_root=$(setting RANDOM_ROOT_PASSWORD RANDOM_ROOT_PASSWORD)
root_host=$(setting ROOT_HOST ROOT_HOST)
database=$(setting DATABASE DATABASE)
user=$(setting USER USER)
password=$(setting PASSWORD PASSWORD)
: "${root_host:=%}"
port=${MYSQL_TCP_PORT:-3306}
datadir=/var/lib/mysql
sockets=/run/mysqld

mkdir -p "$datadir" "$sockets"
as_server=
if [ "$(id -u)" = 0 ]; then
	# The server refuses root: it runs as the package's user.
	as_server="setpriv --reuid=mysql --regid=mysql --init-groups --"
	chown mysql:mysql "$datadir" "$sockets"
fi
chmod 1777 /tmp 2>/dev/null || :

# A line of SQL (printf: dash's echo would eat backslashes).
line() {
	printf '%s\n' "$1"
}
# A string literal and a quoted name for SQL.
sql_string() {
	printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")"
}
sql_name() {
	printf '`%s`' "$(printf '%s' "$1" | sed 's/`/``/g')"
}

stopping=
server=
stop() {
	stopping=1
	[ -z "$server" ] || kill -TERM "$server" 2>/dev/null || :
}
trap stop TERM INT

# Durability is not wanted from a throwaway server; the redo log is kept small.
tuning="@TUNING@"
init_file=
if [ ! -d "$datadir/mysql" ]; then
	if [ -z "$root_password" ] && [ -z "$allow_empty" ] && [ -z "$random_root" ]; then
		echo "error: Database is uninitialized and password option is not specified" >&2
		echo "       You need to specify one of the root password, allow-empty-root-password" >&2
		echo "       or random-root-password settings." >&2
		exit 1
	fi
	if [ -n "$random_root" ]; then
		root_password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
		echo "GENERATED ROOT PASSWORD: $root_password"
	fi
	echo "Initializing database files"
	if [ -d @TEMPLATE@/mysql ]; then
		# The kubelet ran the same mariadb-install-db once: a copy is a fresh install.
		cp -a @TEMPLATE@/. "$datadir/"
	else
		# shellcheck disable=SC2086
		$as_server mariadb-install-db --no-defaults --datadir="$datadir" @INSTALL@ $tuning \
			>/dev/null
	fi
	# The accounts and database, set up by the server itself before it serves anyone.
	init_file=$sockets/init.sql
	(
		umask 077
		{
			line "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';"
			line "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@''', @@hostname, '''');"
			if [ -n "$root_password" ]; then
				line "SET PASSWORD FOR 'root'@'localhost' = PASSWORD($(sql_string "$root_password"));"
			fi
			if [ "$root_host" != localhost ]; then
				host=$(sql_string "$root_host")
				line "CREATE USER 'root'@$host IDENTIFIED BY $(sql_string "$root_password");"
				line "GRANT ALL ON *.* TO 'root'@$host WITH GRANT OPTION;"
			fi
			if [ -n "$database" ]; then
				line "CREATE DATABASE IF NOT EXISTS $(sql_name "$database");"
			fi
			if [ -n "$user" ] && [ -n "$password" ]; then
				line "CREATE USER $(sql_string "$user")@'%' IDENTIFIED BY $(sql_string "$password");"
				if [ -n "$database" ]; then
					line "GRANT ALL ON $(sql_name "$database").* TO $(sql_string "$user")@'%';"
				fi
			fi
		} >"$init_file"
	)
	[ -z "$as_server" ] || chown mysql "$init_file"
	echo "Database files initialized"
fi
[ -z "$stopping" ] || exit 143

# shellcheck disable=SC2086
$as_server mariadbd --no-defaults --datadir="$datadir" --socket="$sockets/mysqld.sock" \
	--port="$port" --bind-address=127.0.0.1 --skip-name-resolve $tuning \
	${init_file:+--init-file="$init_file"} "$@" &
server=$!
[ -z "$stopping" ] || stop
while :; do
	if wait "$server"; then code=0; else code=$?; fi
	kill -0 "$server" 2>/dev/null || break
done
exit "$code"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_by_repository_name() {
        assert_eq!(Flavour::of("postgres:16"), Some(Flavour::Postgres));
        assert_eq!(
            Flavour::of("docker.io/library/postgres:16-alpine"),
            Some(Flavour::Postgres)
        );
        assert_eq!(Flavour::of("mysql:8.4"), Some(Flavour::MySql));
        assert_eq!(Flavour::of("mariadb"), Some(Flavour::MariaDb));
        assert_eq!(Flavour::of("postgresql:16"), None);
        assert_eq!(Flavour::of("bitnami/mysql-exporter"), None);
    }

    #[test]
    fn pgdata_follows_the_tag_as_in_the_official_images() {
        let pgdata = |tag| Flavour::Postgres.image_env(tag)[0].1.clone();
        assert_eq!(pgdata(Some("16")), "/var/lib/postgresql/data");
        assert_eq!(pgdata(Some("13.2-bookworm")), "/var/lib/postgresql/data");
        assert_eq!(pgdata(Some("18")), "/var/lib/postgresql/18/docker");
        assert_eq!(pgdata(Some("latest")), "/var/lib/postgresql/18/docker");
        assert_eq!(pgdata(None), "/var/lib/postgresql/18/docker");
        assert!(Flavour::MariaDb.image_env(Some("11")).is_empty());
    }

    #[test]
    fn data_dirs_and_ports() {
        let none = |_: &str| None;
        assert_eq!(
            Flavour::Postgres.data_dir(none),
            PathBuf::from("/var/lib/postgresql/data")
        );
        assert_eq!(
            Flavour::Postgres.data_dir(|_| Some("/pg".to_string())),
            PathBuf::from("/pg")
        );
        assert_eq!(
            Flavour::MySql.data_dir(|_| Some("/pg".to_string())),
            PathBuf::from("/var/lib/mysql")
        );
        assert_eq!(port(Flavour::Postgres, &[]), 5432);
        assert_eq!(port(Flavour::MariaDb, &[3307, 9104]), 3307);
    }

    #[test]
    fn entrypoints_name_their_flavour() {
        assert!(
            Flavour::MariaDb
                .entrypoint()
                .contains("\nflavour=mariadb\n")
        );
        assert!(Flavour::MySql.entrypoint().contains("\nflavour=mysql\n"));
        for flavour in [Flavour::MySql, Flavour::MariaDb, Flavour::Postgres] {
            let script = flavour.entrypoint();
            for placeholder in ["@FLAVOUR@", "@TEMPLATE@", "@INSTALL@", "@TUNING@"] {
                assert!(!script.contains(placeholder), "{flavour:?}: {placeholder}");
            }
        }
        assert!(Flavour::Postgres.entrypoint().starts_with("#!/bin/sh\n"));
    }
}
