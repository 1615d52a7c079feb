//! The dev-database images work as the operator's sidecar uses them, without a node: each image
//! is built with buildah, its root filesystem (buildah's `vfs` copy) becomes a runc bundle
//! whose config is what the kubelet and containerd would give the sidecar (uid and gid 999, a
//! read-only root, no capabilities, `noNewPrivileges`, a memory limit of 1Gi, fresh root-owned
//! 0777 directories bound where the `emptyDir`s go, a network namespace of its own), and runc
//! runs the image's entrypoint with the sidecar's environment. Then a client in the container
//! (`runc exec`, as `kubectl exec` would) connects as the runner does, to 127.0.0.1 without a
//! password, to the `dev` database, and the image's stop signal must end the server within
//! seconds.
//!
//! Needs root, buildah and runc (installed as root with the real node's packages); it does not
//! start containerd or a kubelet, so it runs beside any cluster.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devcluster::cmd;
use devcluster::images::Buildah;
use devcluster::images::dev_database::{self, SERVER_UID};

const RUNC: &str = "/usr/sbin/runc";
const LIMIT: Duration = Duration::from_secs(60);
/// How long the server may take to accept the runner's connection.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the stop signal may take to end the server.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// The machine can run the test, or the test fails saying why (a skipped check must not count
/// as a passed one).
fn prerequisites() {
    assert!(
        cmd::is_root(),
        "this test runs containers with runc as uid 999: run it as root"
    );
    devcluster::packages::ensure_real_node().expect("buildah, runc and busybox");
    assert!(Path::new(RUNC).exists(), "{RUNC} is missing");
}

/// The test's own buildah storage and scratch directory, fresh each run.
fn workspace(name: &str) -> (Buildah, PathBuf) {
    let dir = devcluster::target_dir().join(format!("images/test-dev-database-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    (Buildah::at(&dir.join("buildah")), dir)
}

/// One sidecar: a container of `image` run by runc, removed on drop.
struct Sidecar {
    buildah: Buildah,
    id: String,
    bundle: PathBuf,
    state: PathBuf,
    container: String,
    pid: u32,
    stop_signal: String,
}

/// What differs between the sidecars of the three drivers.
struct Flavour<'a> {
    env: &'a [(&'a str, &'a str)],
    port: u16,
    data: &'a str,
    run: &'a str,
}

impl Sidecar {
    fn start(buildah: &Buildah, dir: &Path, image: &str, id: &str, flavour: &Flavour) -> Sidecar {
        let config = buildah.inspect(image).unwrap();
        let config = &config["OCIv1"]["config"];
        assert_eq!(config["User"], "999:999", "{config}");
        let port = format!("{}/tcp", flavour.port);
        assert!(config["ExposedPorts"].get(&port).is_some(), "{config}");
        let entrypoint: Vec<String> = serde_json::from_value(config["Entrypoint"].clone()).unwrap();
        let stop_signal = config["StopSignal"].as_str().unwrap().to_string();
        let image_env: Vec<String> = serde_json::from_value(config["Env"].clone()).unwrap();

        let container = buildah
            .run("a container", &["from", "--pull=never", image])
            .unwrap();
        let rootfs = buildah
            .run("its root filesystem", &["mount", &container])
            .unwrap();

        let bundle = dir.join(id);
        let _ = fs::remove_dir_all(&bundle);
        let mut mounts = vec![
            mount("proc", "/proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount(
                "tmpfs",
                "/dev",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "devpts",
                "/dev/pts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
            ),
            mount(
                "shm",
                "/dev/shm",
                "tmpfs",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            mount(
                "mqueue",
                "/dev/mqueue",
                "mqueue",
                &["nosuid", "noexec", "nodev"],
            ),
            mount(
                "sysfs",
                "/sys",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
        ];
        for (name, target) in [
            ("data", flavour.data),
            ("run", flavour.run),
            ("tmp", "/tmp"),
        ] {
            // What the kubelet makes of an emptyDir: root's, open to all.
            let source = bundle.join("volumes").join(name);
            fs::create_dir_all(&source).unwrap();
            fs::set_permissions(&source, fs::Permissions::from_mode(0o777)).unwrap();
            mounts.push(serde_json::json!({
                "destination": target,
                "type": "bind",
                "source": source,
                "options": ["rbind", "rw"],
            }));
        }
        let env: Vec<String> = image_env
            .into_iter()
            .chain(flavour.env.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": SERVER_UID, "gid": SERVER_UID},
                "args": entrypoint,
                "env": env,
                "cwd": "/",
                "capabilities": {"bounding": [], "effective": [], "permitted": [], "ambient": []},
                "noNewPrivileges": true,
            },
            "root": {"path": rootfs, "readonly": true},
            "hostname": id,
            "mounts": mounts,
            "linux": {
                "resources": {
                    "devices": [{"allow": false, "access": "rwm"}],
                    "memory": {"limit": 1_u64 << 30},
                },
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"},
                ],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            },
        });
        fs::write(bundle.join("config.json"), spec.to_string()).unwrap();

        let state = bundle.join("runc");
        let log = fs::File::create(bundle.join("log")).unwrap();
        let mut run = Command::new(RUNC);
        run.arg("--root")
            .arg(&state)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(id)
            // Detached, the container's output is ours: into the log, not a pipe we would wait on.
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let mut sidecar = Sidecar {
            buildah: buildah.clone(),
            id: id.to_string(),
            bundle,
            state,
            container,
            pid: 0,
            stop_signal,
        };
        cmd::run_inherit(&mut run, LIMIT).unwrap_or_else(|err| panic!("{err}\n{}", sidecar.log()));
        sidecar.pid = sidecar.runc_state()["pid"].as_u64().unwrap() as u32;
        sidecar
    }

    fn runc(&self) -> Command {
        let mut runc = Command::new(RUNC);
        runc.arg("--root").arg(&self.state);
        runc
    }

    fn runc_state(&self) -> serde_json::Value {
        let mut state = self.runc();
        state.args(["state", &self.id]);
        serde_json::from_str(&cmd::output(&mut state, LIMIT).unwrap()).unwrap()
    }

    /// `args` in the container as uid 999, as `kubectl exec` would run them.
    fn exec(&self, args: &[&str]) -> Result<String, cmd::CmdError> {
        let mut exec = self.runc();
        exec.args(["exec", "--user", "999:999", &self.id])
            .args(args);
        cmd::output(&mut exec, Duration::from_secs(20))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.bundle.join("log")).unwrap_or_default()
    }

    fn volume(&self, name: &str) -> PathBuf {
        self.bundle.join("volumes").join(name)
    }

    /// Retries `connect` while the server is not up yet (`not_yet` names such errors); any other
    /// error, a missing database above all, fails at once. Returns what the first session
    /// printed and how long it took.
    fn first_session(&self, connect: &[&str], not_yet: &[&str]) -> (String, Duration) {
        let started = Instant::now();
        loop {
            match self.exec(connect) {
                Ok(out) => return (out.trim().to_string(), started.elapsed()),
                Err(err) => {
                    let text = err.to_string();
                    let waiting = not_yet.iter().any(|sign| text.contains(sign));
                    assert!(waiting, "{text}\nserver log:\n{}", self.log());
                    assert!(
                        started.elapsed() < READY_WITHIN,
                        "not up within {READY_WITHIN:?}: {text}\nserver log:\n{}",
                        self.log()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The checks every sidecar passes once its server serves: the server itself is PID 1 of
    /// the container (the entrypoint exec'd it, so the stop signal reaches it) as uid and gid
    /// 999, and the root filesystem is read-only while the emptyDirs are not.
    fn check_process_and_filesystem(&self, server: &str) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(field("Name:"), server, "{status}");
        assert_eq!(field("Uid:"), "999 999 999 999");
        assert_eq!(field("Gid:"), "999 999 999 999");
        assert_eq!(field("CapEff:"), "0000000000000000");
        for path in ["/probe", "/etc/probe", "/usr/probe", "/var/lib/probe"] {
            let touch = self.exec(&["touch", path]).unwrap_err().to_string();
            assert!(touch.contains("Read-only file system"), "{touch}");
        }
        self.exec(&["touch", "/tmp/probe"]).unwrap();
    }

    /// Sends the image's stop signal as the runtime would; returns how long the server took to
    /// end.
    fn stop(&self) -> Duration {
        let started = Instant::now();
        let mut kill = self.runc();
        kill.args(["kill", &self.id, &self.stop_signal]);
        cmd::output(&mut kill, LIMIT).unwrap();
        while self.runc_state()["status"] != "stopped" {
            assert!(
                started.elapsed() < STOP_WITHIN,
                "{} did not end the server within {STOP_WITHIN:?}\n{}",
                self.stop_signal,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let mut delete = self.runc();
        delete.args(["delete", "--force", &self.id]);
        let _ = cmd::output(&mut delete, LIMIT);
        let _ = self
            .buildah
            .run("removing the container", &["rm", &self.container]);
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.bundle);
        }
    }
}

fn mount(source: &str, destination: &str, kind: &str, options: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "destination": destination,
        "type": kind,
        "source": source,
        "options": options,
    })
}

#[test]
fn postgres_image_serves_the_dev_database_as_999_on_a_read_only_root() {
    prerequisites();
    let (buildah, dir) = workspace("postgres");
    let started = Instant::now();
    let image = dev_database::postgres(&buildah).unwrap();
    eprintln!("built {image} in {:.1?}", started.elapsed());
    assert!(image.starts_with("devcluster.local/postgres:"), "{image}");

    // The operator's sidecar for the postgres driver.
    let flavour = Flavour {
        env: &[
            ("POSTGRES_HOST_AUTH_METHOD", "trust"),
            ("POSTGRES_DB", "dev"),
        ],
        port: 5432,
        data: "/var/lib/postgresql/data",
        run: "/var/run/postgresql",
    };
    let sidecar = Sidecar::start(&buildah, &dir, &image, "atlas-devdb-postgres", &flavour);
    let (out, ready) = sidecar.first_session(
        &[
            "psql",
            "postgres://postgres@127.0.0.1:5432/dev?sslmode=disable",
            "-Atc",
            "select current_user, current_database(), inet_server_addr()",
        ],
        &["Connection refused", "the database system is starting up"],
    );
    eprintln!("postgres served the runner's URL {ready:.1?} after its start");
    assert_eq!(out, "postgres|dev|127.0.0.1");
    sidecar.check_process_and_filesystem("postgres");
    assert!(sidecar.volume("data").join("pgdata/PG_VERSION").exists());
    let socket = sidecar.volume("run").join(".s.PGSQL.5432");
    assert!(socket.exists(), "{}", socket.display());
    let stopped = sidecar.stop();
    eprintln!("{} stopped postgres in {stopped:.1?}", sidecar.stop_signal);
    assert_eq!(sidecar.stop_signal, "SIGINT");
    assert!(
        sidecar.log().contains("database system is shut down"),
        "{}",
        sidecar.log()
    );
}

#[test]
fn mariadb_image_serves_the_dev_database_for_the_maria_and_mysql_drivers() {
    prerequisites();
    let (buildah, dir) = workspace("mariadb");
    let started = Instant::now();
    let image = dev_database::mariadb(&buildah).unwrap();
    eprintln!("built {image} in {:.1?}", started.elapsed());
    assert!(image.starts_with("devcluster.local/mariadb:"), "{image}");

    // The operator's sidecars for the maria and the mysql drivers: the same image.
    let maria = Flavour {
        env: &[
            ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "1"),
            ("MARIADB_DATABASE", "dev"),
        ],
        port: 3306,
        data: "/var/lib/mysql",
        run: "/run/mysqld",
    };
    let mysql = Flavour {
        env: &[
            ("MYSQL_ALLOW_EMPTY_PASSWORD", "yes"),
            ("MYSQL_DATABASE", "dev"),
        ],
        port: 3306,
        data: "/var/lib/mysql",
        run: "/var/run/mysqld",
    };
    for (id, flavour) in [("atlas-devdb-maria", maria), ("atlas-devdb-mysql", mysql)] {
        let sidecar = Sidecar::start(&buildah, &dir, &image, id, &flavour);
        let (out, ready) = sidecar.first_session(
            &[
                "mariadb",
                "--protocol=tcp",
                "--host=127.0.0.1",
                "--port=3306",
                "--user=root",
                "--database=dev",
                "--skip-column-names",
                "--batch",
                "--execute=select current_user(), database(), @@bind_address",
            ],
            &["Can't connect", "Lost connection"],
        );
        eprintln!("{id} served the runner's URL {ready:.1?} after its start");
        assert_eq!(out, "root@%\tdev\t127.0.0.1");
        sidecar.check_process_and_filesystem("mariadbd");
        assert!(sidecar.volume("data").join("dev").is_dir());
        assert!(sidecar.volume("run").join("mysqld.sock").exists());
        let stopped = sidecar.stop();
        eprintln!("{} stopped {id} in {stopped:.1?}", sidecar.stop_signal);
        assert_eq!(sidecar.stop_signal, "SIGTERM");
        assert!(
            sidecar.log().contains("Shutdown complete"),
            "{}",
            sidecar.log()
        );
    }
}
