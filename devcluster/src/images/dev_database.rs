//! Dev-database images for a real kubelet: the operator's dev-database sidecar
//! (`src/reconcile/build/dev_database.rs`) runs them as uid 999 on a read-only root, with
//! `emptyDir`s at the data, socket and `/tmp` directories. Nothing can be pulled, so they are
//! Debian's servers as installed on this machine, each with exactly what it loads: the server and
//! its init programs, their shared libraries (the `ldd` closure, at the paths `ldd` found them,
//! with the dynamic loader), the share files, `/etc/passwd` naming uid 999 (initdb refuses a uid
//! without one) and busybox as `/bin/sh` and its applets for the entrypoint.
//!
//! The entrypoints initialise an empty data directory with networking off and then `exec` the
//! server, so it is PID 1 (the image's stop signal reaches it) and its port opens only once the
//! database the environment names exists.
//!
//! Everything is staged in one directory tree and copied into a `scratch` container at once
//! (one `buildah copy` per file would be one buildah start-up each).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Buildah, ImageError, LOCAL_REGISTRY, io, parse_ldd};
use crate::cmd::{self, User};

/// The official images' server user, which the sidecar's `runAsUser`/`runAsGroup` name.
pub const SERVER_UID: u32 = 999;
/// Where each image's entrypoint is, as in the official images.
pub const ENTRYPOINT: &str = "/usr/local/bin/docker-entrypoint.sh";
/// The stop signals the kubelet's runtime sends: PostgreSQL's fast shutdown, MariaDB's shutdown.
pub const POSTGRES_STOP_SIGNAL: &str = "SIGINT";
pub const MARIADB_STOP_SIGNAL: &str = "SIGTERM";
/// Where the mariadb image keeps the data directory `mariadb-install-db` made at build time.
const MARIADB_TEMPLATE: &str = "/usr/share/devdb/mariadb-data";

const LIMIT: Duration = Duration::from_secs(120);
const BUSYBOX: &str = "/bin/busybox";
const PATH_DIRS: &str = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds `devcluster.local/postgres:<major>` from the newest PostgreSQL server installed;
/// returns its name.
pub fn postgres(buildah: &Buildah) -> Result<String, ImageError> {
    let bin = crate::kubelet::database::postgres_bin_dir().ok_or_else(|| {
        ImageError::Missing(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin (Debian's postgresql)".into(),
        )
    })?;
    let version_dir = bin.parent().expect("bin has a parent").to_path_buf();
    let major = version_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("postgres_bin_dir found a numeric directory")
        .to_string();
    let name = format!("{LOCAL_REGISTRY}/postgres:{major}");
    let share = PathBuf::from(format!("/usr/share/postgresql/{major}"));
    require(&[&share, Path::new(BUSYBOX)])?;

    let stage = Stage::new(buildah, "postgres")?;
    // The server and initdb; the clients for `kubectl exec` (and the test).
    let programs: Vec<PathBuf> = ["postgres", "initdb", "psql", "pg_isready"]
        .iter()
        .map(|program| bin.join(program))
        .collect();
    for program in &programs {
        stage.file(program, program)?;
    }
    // The server loads these at run time (plpgsql and the snowball dictionaries already in
    // initdb); the JIT is left out: it alone would pull in LLVM, hundreds of MB.
    let lib = version_dir.join("lib");
    let modules = stage.tree(&lib, &lib, &|path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name == "bitcode" || name.starts_with("llvmjit")
    })?;
    let mut loaded = programs.clone();
    loaded.extend(modules.into_iter().filter(|path| is_shared_object(path)));
    stage.libraries(&loaded)?;
    stage.tree(&share, &share, &|path| path.ends_with("man"))?;
    // Debian's server reads the system's time zones (`--with-system-tzdata`).
    stage.tree(
        Path::new("/usr/share/zoneinfo"),
        Path::new("/usr/share/zoneinfo"),
        &|_| false,
    )?;
    stage.base("postgres", "PostgreSQL", "/var/lib/postgresql")?;
    for dir in ["/var/lib/postgresql/data", "/run/postgresql"] {
        stage.dir(dir, 0o755)?;
    }
    stage.write(ENTRYPOINT, POSTGRES_ENTRYPOINT, 0o755)?;

    let path = format!("PATH={}:{PATH_DIRS}", bin.display());
    build(
        buildah,
        &name,
        &[(stage.root(), "/", None)],
        &[
            "--env",
            &path,
            // A directory below the mount: initdb must own (and chmod) the data directory, and
            // the emptyDir itself belongs to root.
            "--env",
            "PGDATA=/var/lib/postgresql/data/pgdata",
            "--port",
            "5432/tcp",
            "--stop-signal",
            POSTGRES_STOP_SIGNAL,
        ],
    )?;
    Ok(name)
}

/// Builds `devcluster.local/mariadb:<major.minor>` from Debian's MariaDB server, for both the
/// `mariadb` and the `mysql` dev databases; returns its name.
pub fn mariadb(buildah: &Buildah) -> Result<String, ImageError> {
    let server = Path::new("/usr/sbin/mariadbd");
    let install_db = Path::new("/usr/bin/mariadb-install-db");
    let share = Path::new("/usr/share/mysql");
    // The clients are for `kubectl exec` (and the test).
    let clients = [
        Path::new("/usr/bin/mariadb"),
        Path::new("/usr/bin/mariadb-admin"),
    ];
    require(&[server, install_db, share, Path::new(BUSYBOX)])?;
    require(&clients)?;
    let major = mariadb_version(server)?;
    let name = format!("{LOCAL_REGISTRY}/mariadb:{major}");

    let stage = Stage::new(buildah, "mariadb")?;
    let mut programs = vec![server.to_path_buf()];
    programs.extend(clients.iter().map(|client| client.to_path_buf()));
    for program in &programs {
        stage.file(program, program)?;
    }
    stage.libraries(&programs)?;
    stage.tree(share, share, &|_| false)?;
    stage.tree(
        Path::new("/usr/share/zoneinfo"),
        Path::new("/usr/share/zoneinfo"),
        &|_| false,
    )?;
    stage.base("mysql", "MariaDB", "/var/lib/mysql")?;
    for dir in ["/var/lib/mysql", "/run/mysqld"] {
        stage.dir(dir, 0o755)?;
    }
    stage.write(ENTRYPOINT, MARIADB_ENTRYPOINT, 0o755)?;

    // `mariadb-install-db` takes seconds (its system tables go through the server statement by
    // statement) and needs a dozen host tools: once here rather than at each container start.
    // In the temporary directory: the uid must reach it, and `target/` may be closed to it.
    let template = std::env::temp_dir().join(format!(
        "atlas-devcluster-mariadb-data-{}",
        std::process::id()
    ));
    let installed = install_mariadb(install_db, &template);

    let tuning = format!("MARIADB_TUNING={}", MARIADB_TUNING.join(" "));
    let path = format!("PATH={PATH_DIRS}");
    let owner = format!("{SERVER_UID}:{SERVER_UID}");
    let built = installed.and_then(|()| {
        build(
            buildah,
            &name,
            &[
                (stage.root(), "/", None),
                (&template, MARIADB_TEMPLATE, Some(&owner)),
            ],
            &[
                "--env",
                &path,
                "--env",
                &tuning,
                "--port",
                "3306/tcp",
                "--stop-signal",
                MARIADB_STOP_SIGNAL,
            ],
        )
    });
    let _ = fs::remove_dir_all(&template);
    built?;
    Ok(name)
}

/// The server's settings, the same at install and at every start (a redo log of another size
/// would be rebuilt): durability off, a small redo log, and synchronous I/O (io_uring and
/// libaio may be refused in a container).
const MARIADB_TUNING: &[&str] = &[
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=0",
    "--skip-innodb-doublewrite",
    "--innodb-log-file-size=16M",
    "--innodb-use-native-aio=0",
];

/// `10.11` from `mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu`.
fn mariadb_version(server: &Path) -> Result<String, ImageError> {
    let mut version = Command::new(server);
    version.arg("--version");
    let out = cmd::output(&mut version, LIMIT).map_err(|source| ImageError::Command {
        what: "asking mariadbd for its version".into(),
        source,
    })?;
    parse_mariadb_version(&out)
        .ok_or_else(|| ImageError::Missing(format!("no version in `mariadbd --version`: {out}")))
}

fn parse_mariadb_version(out: &str) -> Option<String> {
    let words: Vec<&str> = out.split_whitespace().collect();
    let full = words.windows(2).find(|w| w[0] == "Ver").map(|w| w[1])?;
    let mut parts = full.split(['.', '-']);
    let (major, minor) = (parts.next()?, parts.next()?);
    (major.chars().all(|c| c.is_ascii_digit()) && minor.chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("{major}.{minor}"))
}

/// A fresh MariaDB data directory in `dir`, owned by the server's uid as the container will run
/// it. `--cross-bootstrap` keeps this machine's host name out of the accounts.
fn install_mariadb(install_db: &Path, dir: &Path) -> Result<(), ImageError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let user = cmd::is_root().then_some(User {
        uid: SERVER_UID,
        gid: SERVER_UID,
    });
    if let Some(user) = user {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(io(format!("chown {}", dir.display())))?;
    }
    let mut install = cmd::command(install_db, user);
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.display()))
        .args([
            "--cross-bootstrap",
            "--skip-test-db",
            "--auth-root-authentication-method=normal",
            "--skip-name-resolve",
        ])
        .args(MARIADB_TUNING)
        .current_dir(dir);
    cmd::output(&mut install, LIMIT).map_err(|source| ImageError::Command {
        what: "making the mariadb image's data directory".into(),
        source,
    })?;
    Ok(())
}

fn require(paths: &[&Path]) -> Result<(), ImageError> {
    match paths.iter().find(|path| !path.exists()) {
        Some(path) => Err(ImageError::Missing(format!(
            "{} is not installed (Debian's postgresql, mariadb-server and busybox-static)",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// An image `name` from `scratch` of the trees `copies` (host directory, where its contents go,
/// owner when not root), run as the server's uid with our entrypoint and `config` on top.
fn build(
    buildah: &Buildah,
    name: &str,
    copies: &[(&Path, &str, Option<&str>)],
    config: &[&str],
) -> Result<(), ImageError> {
    let what = format!("building the image {name}");
    let container = buildah.run(&what, &["from", "--pull=never", "scratch"])?;
    let built = (|| {
        for (host, inside, owner) in copies {
            let host = host.to_string_lossy();
            let mut args = vec!["copy", "--quiet"];
            if let Some(owner) = owner {
                args.extend(["--chown", owner]);
            }
            args.extend([container.as_str(), &host, inside]);
            buildah.run(&what, &args)?;
        }
        let user = format!("{SERVER_UID}:{SERVER_UID}");
        let entrypoint = serde_json::json!([ENTRYPOINT]).to_string();
        let mut args = vec![
            "config",
            "--user",
            &user,
            "--entrypoint",
            &entrypoint,
            "--workingdir",
            "/",
        ];
        args.extend_from_slice(config);
        args.push(&container);
        buildah.run(&what, &args)?;
        buildah.run(&what, &["commit", "-q", &container, name])
    })();
    let _ = buildah.run(&what, &["rm", &container]);
    built.map(drop)
}

fn is_shared_object(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".so") || name.contains(".so."))
}

/// An image's files, laid out under `root` as they will be in the image; removed once the image
/// holds them.
struct Stage {
    root: PathBuf,
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Stage {
    /// A fresh stage in `buildah`'s storage, of this process alone (two builds of one image may
    /// share the storage).
    fn new(buildah: &Buildah, image: &str) -> Result<Stage, ImageError> {
        let root = buildah
            .storage
            .join(format!("stage/{image}-{}", std::process::id()));
        let root = root.as_path();
        if root.exists() {
            fs::remove_dir_all(root).map_err(io(format!("removing {}", root.display())))?;
        }
        fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        Ok(Stage {
            root: root.to_path_buf(),
        })
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn at(&self, inside: impl AsRef<Path>) -> PathBuf {
        let inside = inside.as_ref();
        self.root.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    fn parent_of(&self, path: &Path) -> Result<(), ImageError> {
        let parent = path.parent().expect("staged paths are below the root");
        fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))
    }

    /// The file `host` (symbolic links followed) at `inside`, with its mode.
    fn file(&self, host: &Path, inside: impl AsRef<Path>) -> Result<(), ImageError> {
        let target = self.at(inside);
        self.parent_of(&target)?;
        fs::copy(host, &target)
            .map(drop)
            .map_err(io(format!("copying {}", host.display())))
    }

    /// The tree `host` at `inside`, symbolic links as links, without what `skip` names; returns
    /// the host paths of the files copied.
    fn tree(
        &self,
        host: &Path,
        inside: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let mut copied = Vec::new();
        let target = self.at(inside);
        fs::create_dir_all(&target).map_err(io(format!("creating {}", target.display())))?;
        let entries = fs::read_dir(host).map_err(io(format!("reading {}", host.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("reading {}", host.display())))?;
            let path = entry.path();
            if skip(&path) {
                continue;
            }
            let kind = entry
                .file_type()
                .map_err(io(format!("reading {}", path.display())))?;
            let inner = inside.join(entry.file_name());
            if kind.is_symlink() {
                let link =
                    fs::read_link(&path).map_err(io(format!("reading {}", path.display())))?;
                self.symlink(&link, &inner)?;
            } else if kind.is_dir() {
                copied.extend(self.tree(&path, &inner, skip)?);
            } else if kind.is_file() {
                self.file(&path, &inner)?;
                copied.push(path);
            }
        }
        Ok(copied)
    }

    fn symlink(&self, target: &Path, inside: impl AsRef<Path>) -> Result<(), ImageError> {
        let link = self.at(inside);
        self.parent_of(&link)?;
        std::os::unix::fs::symlink(target, &link).map_err(io(format!("linking {}", link.display())))
    }

    fn dir(&self, inside: &str, mode: u32) -> Result<(), ImageError> {
        let dir = self.at(inside);
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", dir.display())))
    }

    fn write(&self, inside: &str, contents: &str, mode: u32) -> Result<(), ImageError> {
        let file = self.at(inside);
        self.parent_of(&file)?;
        fs::write(&file, contents).map_err(io(format!("writing {}", file.display())))?;
        fs::set_permissions(&file, fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", file.display())))
    }

    /// The shared libraries `objects` load, each at the path `ldd` resolved it to on this
    /// machine (the image has no `ld.so.cache`; those paths are in the loader's default search
    /// path), and the dynamic loader itself.
    fn libraries(&self, objects: &[PathBuf]) -> Result<(), ImageError> {
        let mut ldd = Command::new("ldd");
        ldd.args(objects);
        let out = cmd::output(&mut ldd, LIMIT).map_err(|source| ImageError::Command {
            what: "listing the shared libraries of the servers".into(),
            source,
        })?;
        for library in parse_ldd(&out)? {
            self.file(&library, &library)?;
        }
        Ok(())
    }

    /// What every image has besides its server: busybox as `/bin/sh` and its applets (the
    /// entrypoint's `sed`, `cp`, …), the server's user as uid 999, `/tmp`, `/var/run` → `/run`
    /// (so the sidecar's `/var/run/…` and `/run/…` mounts are the same directory) and UTC.
    fn base(&self, user: &str, gecos: &str, home: &str) -> Result<(), ImageError> {
        self.file(Path::new(BUSYBOX), BUSYBOX)?;
        let mut list = Command::new(BUSYBOX);
        list.arg("--list");
        let applets = cmd::output(&mut list, LIMIT).map_err(|source| ImageError::Command {
            what: "listing busybox's applets".into(),
            source,
        })?;
        for applet in applets.lines().map(str::trim) {
            if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
                self.symlink(Path::new("busybox"), format!("/bin/{applet}"))?;
            }
        }
        self.write(
            "/etc/passwd",
            &format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 {user}:x:{SERVER_UID}:{SERVER_UID}:{gecos}:{home}:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            ),
            0o644,
        )?;
        self.write(
            "/etc/group",
            &format!("root:x:0:\n{user}:x:{SERVER_UID}:\nnogroup:x:65534:\n"),
            0o644,
        )?;
        self.write(
            "/etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
            0o644,
        )?;
        self.symlink(Path::new("/usr/share/zoneinfo/Etc/UTC"), "/etc/localtime")?;
        // The runtime's mount points, so it need not make them in the image's root.
        for dir in ["/proc", "/sys", "/dev"] {
            self.dir(dir, 0o755)?;
        }
        self.dir("/tmp", 0o1777)?;
        self.dir("/run", 0o755)?;
        self.symlink(Path::new("/run"), "/var/run")?;
        self.dir("/root", 0o700)
    }
}

/// The postgres image's entrypoint: the official image's start-up as far as the dev database
/// relies on it (`POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB`,
/// `POSTGRES_HOST_AUTH_METHOD`, `PGDATA`, `PGPORT`), then the server in its place.
const POSTGRES_ENTRYPOINT: &str = r#"#!/bin/sh
# The entrypoint of devcluster's postgres image (devcluster/src/images/dev_database.rs).
set -eu

case "${1:-}" in "" | -*) set -- postgres "$@" ;; esac
[ "${1:-}" = postgres ] || exec "$@"
shift

# A stop before the server runs ends the container at once (PID 1 ignores unhandled signals).
trap 'exit 130' INT
trap 'exit 143' TERM

: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
port=${PGPORT:-5432}
sockets=/run/postgresql
[ -w "$sockets" ] || sockets=/tmp

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
		echo "error: Database is uninitialized and superuser password is not specified." >&2
		echo "       Set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust to allow all" >&2
		echo "       connections without a password." >&2
		exit 1
	fi
	mkdir -p "$PGDATA"
	chmod 700 "$PGDATA"
	password_file=
	if [ -n "${POSTGRES_PASSWORD:-}" ]; then
		password_file=$(mktemp)
		printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
	fi
	initdb -D "$PGDATA" --username="$user" ${password_file:+--pwfile="$password_file"} \
		--encoding=UTF8 --no-locale --auth-local=trust --auth-host="$auth" \
		--no-sync --no-instructions
	[ -z "$password_file" ] || rm -f "$password_file"
	if [ "$db" != postgres ]; then
		# Single-user mode: no socket, no port, so nobody connects before the database exists.
		quoted=$(printf '%s' "$db" | sed 's/"/""/g')
		printf 'CREATE DATABASE "%s";\n' "$quoted" |
			postgres --single -D "$PGDATA" -c fsync=off -c exit_on_error=on postgres >/dev/null
	fi
	echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -D "$PGDATA" -c port="$port" -c listen_addresses=127.0.0.1 \
	-c unix_socket_directories="$sockets" -c fsync=off -c synchronous_commit=off \
	-c full_page_writes=off -c jit=off "$@"
"#;

/// The mariadb image's entrypoint: the official mariadb and mysql images' start-up as far as the
/// dev database relies on it (each `MARIADB_*` setting, else its `MYSQL_*` name), then the
/// server in its place.
const MARIADB_ENTRYPOINT: &str = r#"#!/bin/sh
# The entrypoint of devcluster's mariadb image (devcluster/src/images/dev_database.rs).
set -eu

case "${1:-}" in "" | -*) set -- mariadbd "$@" ;; esac
case "${1:-}" in
mariadbd | mysqld) shift ;;
*) exec "$@" ;;
esac

# A stop before the server runs ends the container at once (PID 1 ignores unhandled signals).
trap 'exit 130' INT
trap 'exit 143' TERM

root_password=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
allow_empty=${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}
random_root=${MARIADB_RANDOM_ROOT_PASSWORD:-${MYSQL_RANDOM_ROOT_PASSWORD:-}}
root_host=${MARIADB_ROOT_HOST:-${MYSQL_ROOT_HOST:-%}}
database=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
user=${MARIADB_USER:-${MYSQL_USER:-}}
password=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
port=${MYSQL_TCP_PORT:-3306}
datadir=/var/lib/mysql
sockets=
for dir in /run/mysqld /var/run/mysqld /tmp; do
	if [ -w "$dir" ]; then
		sockets=$dir
		break
	fi
done
# shellcheck disable=SC2086
set -- --no-defaults --datadir="$datadir" --socket="$sockets/mysqld.sock" \
	--pid-file="$sockets/mysqld.pid" --skip-name-resolve ${MARIADB_TUNING:-} "$@"

# A line of SQL (printf: echo may eat backslashes), a string literal, a quoted name.
line() {
	printf '%s\n' "$1"
}
sql_string() {
	printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")"
}
sql_name() {
	printf '`%s`' "$(printf '%s' "$1" | sed 's/`/``/g')"
}

if [ ! -d "$datadir/mysql" ]; then
	if [ -z "$root_password" ] && [ -z "$allow_empty" ] && [ -z "$random_root" ]; then
		echo "error: Database is uninitialized and password option is not specified" >&2
		echo "       You need to specify one of MARIADB_ROOT_PASSWORD," >&2
		echo "       MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD" >&2
		exit 1
	fi
	if [ -n "$random_root" ]; then
		root_password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
		echo "GENERATED ROOT PASSWORD: $root_password"
	fi
	# The image's data directory is a fresh mariadb-install-db, made when the image was built.
	cp -R /usr/share/devdb/mariadb-data/. "$datadir/"
	# Bootstrap mode: no socket, no port, so nobody connects before the accounts and the
	# database exist. FLUSH PRIVILEGES loads the grant tables bootstrap mode skips.
	{
		line "FLUSH PRIVILEGES;"
		line "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';"
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
	} | mariadbd "$@" --bootstrap --skip-networking
	echo "MariaDB init process done. Ready for start up."
fi

exec mariadbd "$@" --port="$port" --bind-address=127.0.0.1
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_version_is_major_and_minor() {
        assert_eq!(
            parse_mariadb_version(
                "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64"
            )
            .as_deref(),
            Some("10.11")
        );
        assert_eq!(parse_mariadb_version("mariadbd Ver 11-x"), None);
        assert_eq!(parse_mariadb_version("nothing"), None);
    }

    #[test]
    fn entrypoints_exec_the_server() {
        for (script, server) in [
            (POSTGRES_ENTRYPOINT, "\nexec postgres "),
            (MARIADB_ENTRYPOINT, "\nexec mariadbd "),
        ] {
            assert!(script.starts_with("#!/bin/sh\n"));
            assert!(script.contains(server), "{server}");
        }
    }
}
