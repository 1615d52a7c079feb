//! Images → local programs. There is no container runtime here: an image name picks a program
//! of this machine by the table below (also in `docs/devcluster.md`), and the container's
//! `command` and `args` are applied to it as a runtime applies them to the image's `ENTRYPOINT`
//! and `CMD`.
//!
//! | image name | `ENTRYPOINT` | `CMD` | `PATH` starts with |
//! |---|---|---|---|
//! | contains `atlas-operator/runner` | `/usr/local/bin/runner` (the built `runner`) | – | (`/usr/local/bin` holds the built `atlas`) |
//! | repository ends with `atlas-operator` (`ghcr.io/atlas-operator/atlas-operator:dev`) | `/usr/local/bin/atlas-operator` (the built operator) | `run` | – |
//! | last path segment starts with `kubectl` | `/usr/local/bin/kubectl` (the built `kubectl`) | – | – |
//! | last path segment starts with `busybox`, `debian`, `alpine` or `ubuntu` | – | `sh` | – |
//! | repository `postgres` (`postgres:16`, `docker.io/library/postgres:…`) | `/usr/local/bin/docker-entrypoint.sh` (ours) | `postgres` | – (the server's `bin` directory ends it) |
//! | repository `mysql` / `mariadb` | `/usr/local/bin/docker-entrypoint.sh` (ours) | `mysqld` / `mariadbd` | – |
//!
//! The database images run Debian's PostgreSQL and MariaDB as the official images would run
//! theirs: see [`super::database`].
//!
//! The built programs are mounted into the container at `/usr/local/bin/<name>`, as an image
//! would carry them: their host paths (a clone anywhere, even under `/tmp`, which a pod's
//! `emptyDir` hides) never matter inside the sandbox. Within `command`, a first word `runner`,
//! `atlas-operator`, `atlas` or `kubectl` (bare or as an absolute path) means the built program,
//! as it would in the image; anything else is looked up on the container's `PATH`, i.e. the host's `/usr/bin`,
//! `/bin`, … (so `sh -c '…'` runs the host's shell). Any other image makes the container wait with
//! reason `ErrImagePull`.

use std::path::{Path, PathBuf};

use super::database::{self, Flavour};
pub use super::reference::{repository, short_name, tag};

/// The programs the table maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programs {
    /// The `runner` binary (`RUNNER_BIN`, or `target/debug/runner`); it may not be built yet.
    pub runner: PathBuf,
    /// The `atlas-operator` binary (`OPERATOR_BIN`, or `target/debug/atlas-operator`); it may
    /// not be built yet.
    pub operator: PathBuf,
    /// The pinned Atlas CLI.
    pub atlas: Option<PathBuf>,
    /// The pinned kubectl.
    pub kubectl: Option<PathBuf>,
}

/// The `PATH` of a Debian image.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What runs for a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// The program and its arguments (the program is a path or a name looked up on `PATH`).
    pub argv: Vec<String>,
    /// The `PATH` the container starts with (its own `env` may override it).
    pub path: String,
    /// Variables the image would set (`ENV` lines), before the container's own.
    pub image_env: Vec<(String, String)>,
    /// Built programs the image carries: (host path, path in the container).
    pub files: Vec<(PathBuf, PathBuf)>,
    /// A database image: the launch adds its entrypoint, port, data and socket directories.
    pub database: Option<Flavour>,
}

/// The operator's binary, by its name in the image.
const OPERATOR: &str = "atlas-operator";

/// Where the image carries the built programs.
pub const IMAGE_BIN: &str = "/usr/local/bin";

fn in_image(name: &str) -> PathBuf {
    Path::new(IMAGE_BIN).join(name)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error(
        "devcluster-kubelet has no local program for image \"{0}\" (the table is in docs/devcluster.md)"
    )]
    Unknown(String),
    #[error("the {what} binary for image \"{image}\" is not built: {hint}")]
    NotBuilt {
        what: &'static str,
        image: String,
        hint: String,
    },
    #[error("image \"{0}\" has no entrypoint: give the container a `command`")]
    NoCommand(String),
    #[error(
        "image \"{image}\" runs the host's {package} server, which is not installed ({missing}); \
         `cargo xtask cluster up` installs Debian's packages"
    )]
    NotInstalled {
        image: String,
        package: &'static str,
        missing: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Runner,
    Operator,
    Kubectl,
    Shell,
    Database(Flavour),
}

fn kind(image: &str) -> Option<Kind> {
    let short = short_name(image);
    if image.contains("atlas-operator/runner") {
        Some(Kind::Runner)
    } else if repository(image).ends_with("atlas-operator") {
        Some(Kind::Operator)
    } else if short.starts_with("kubectl") {
        Some(Kind::Kubectl)
    } else if ["busybox", "debian", "alpine", "ubuntu"]
        .iter()
        .any(|name| short.starts_with(name))
    {
        Some(Kind::Shell)
    } else {
        Flavour::of(image).map(Kind::Database)
    }
}

impl Programs {
    /// The process for a container of `image` with the container's `command` and `args`.
    pub fn resolve(
        &self,
        image: &str,
        command: &[String],
        args: &[String],
    ) -> Result<Process, ImageError> {
        let kind = kind(image).ok_or_else(|| ImageError::Unknown(image.to_string()))?;
        let mut files = Vec::new();
        let mut image_env = Vec::new();
        let mut path = DEFAULT_PATH.to_string();
        let mut database = None;
        let entrypoint: Vec<String> = match kind {
            Kind::Runner => {
                files.push((self.atlas(image)?, in_image("atlas")));
                files.push((self.runner(image)?, in_image("runner")));
                // As the runner image sets them: no network checks from inside a Job.
                image_env = [
                    ("ATLAS_NO_UPDATE_NOTIFIER", "1"),
                    ("ATLAS_NO_UPGRADE_SUGGESTIONS", "1"),
                    ("ATLAS_NO_ANON_TELEMETRY", "true"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec();
                vec![in_image("runner").display().to_string()]
            }
            Kind::Operator => {
                files.push((self.operator(image)?, in_image(OPERATOR)));
                vec![in_image(OPERATOR).display().to_string()]
            }
            Kind::Kubectl => {
                files.push((self.kubectl(image)?, in_image("kubectl")));
                vec![in_image("kubectl").display().to_string()]
            }
            Kind::Shell => Vec::new(),
            Kind::Database(flavour) => {
                if let Some(missing) = flavour.missing() {
                    return Err(ImageError::NotInstalled {
                        image: image.to_string(),
                        package: flavour.package(),
                        missing,
                    });
                }
                if flavour == Flavour::Postgres
                    && let Some(bin) = database::postgres_bin_dir()
                {
                    // As the image puts its server's directory on PATH.
                    path = format!("{path}:{}", bin.display());
                }
                image_env = flavour.image_env(tag(image));
                database = Some(flavour);
                vec![database::ENTRYPOINT.to_string()]
            }
        };
        // A runtime's rule: `command` replaces ENTRYPOINT (and drops CMD), `args` replace CMD.
        let mut argv: Vec<String> = if command.is_empty() {
            let cmd = match kind {
                _ if !args.is_empty() => args.to_vec(),
                Kind::Shell => vec!["sh".to_string()],
                // What the operator's image runs when the pod gives no args.
                Kind::Operator => vec!["run".to_string()],
                Kind::Database(flavour) => vec![flavour.command().to_string()],
                Kind::Runner | Kind::Kubectl => Vec::new(),
            };
            entrypoint.into_iter().chain(cmd).collect()
        } else {
            command.iter().chain(args).cloned().collect()
        };
        if argv.is_empty() {
            return Err(ImageError::NoCommand(image.to_string()));
        }
        if !command.is_empty()
            && let Some((host, name)) = self.built(image, &argv[0])?
        {
            let target = in_image(name);
            if !files.iter().any(|(_, t)| *t == target) {
                files.push((host, target.clone()));
            }
            argv[0] = target.display().to_string();
        }
        Ok(Process {
            argv,
            path,
            image_env,
            files,
            database,
        })
    }

    /// A `command`'s first word: the built program (its host path and name) when it names one
    /// of ours.
    fn built(
        &self,
        image: &str,
        word: &str,
    ) -> Result<Option<(PathBuf, &'static str)>, ImageError> {
        let bare = word.strip_prefix('/').map_or(word, |_| {
            Path::new(word)
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or(word)
        });
        Ok(match bare {
            "runner" => Some((self.runner(image)?, "runner")),
            OPERATOR => Some((self.operator(image)?, OPERATOR)),
            "atlas" => Some((self.atlas(image)?, "atlas")),
            "kubectl" => Some((self.kubectl(image)?, "kubectl")),
            _ => None,
        })
    }

    fn runner(&self, image: &str) -> Result<PathBuf, ImageError> {
        if self.runner.is_file() {
            Ok(self.runner.clone())
        } else {
            Err(ImageError::NotBuilt {
                what: "runner",
                image: image.to_string(),
                hint: format!(
                    "{} does not exist; run `cargo build -p atlas-runner` (or set RUNNER_BIN before `cargo xtask cluster up`)",
                    self.runner.display()
                ),
            })
        }
    }

    fn operator(&self, image: &str) -> Result<PathBuf, ImageError> {
        if self.operator.is_file() {
            Ok(self.operator.clone())
        } else {
            Err(ImageError::NotBuilt {
                what: OPERATOR,
                image: image.to_string(),
                hint: format!(
                    "{} does not exist; run `cargo build -p atlas-operator` (or set OPERATOR_BIN before `cargo xtask cluster up`)",
                    self.operator.display()
                ),
            })
        }
    }

    fn atlas(&self, image: &str) -> Result<PathBuf, ImageError> {
        self.atlas.clone().ok_or_else(|| ImageError::NotBuilt {
            what: "atlas",
            image: image.to_string(),
            hint: "run `cargo xtask tools`".to_string(),
        })
    }

    fn kubectl(&self, image: &str) -> Result<PathBuf, ImageError> {
        self.kubectl.clone().ok_or_else(|| ImageError::NotBuilt {
            what: "kubectl",
            image: image.to_string(),
            hint: "run `cargo xtask tools`".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs() -> Programs {
        // The test binary itself stands in for a built runner (it is a file that exists).
        Programs {
            runner: std::env::current_exe().unwrap(),
            operator: std::env::current_exe().unwrap(),
            atlas: Some(PathBuf::from("/tools/atlas/bin/atlas")),
            kubectl: Some(PathBuf::from("/tools/kube/bin/kubectl")),
        }
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn shell_images_run_command_and_args() {
        let p = programs()
            .resolve(
                "busybox:1.36",
                &strings(&["sh", "-c"]),
                &strings(&["echo hi; exit 3"]),
            )
            .unwrap();
        assert_eq!(p.argv, strings(&["sh", "-c", "echo hi; exit 3"]));
        assert_eq!(p.path, DEFAULT_PATH);
        let p = programs().resolve("debian:12", &[], &[]).unwrap();
        assert_eq!(p.argv, strings(&["sh"]));
        let p = programs()
            .resolve("alpine", &[], &strings(&["echo", "x"]))
            .unwrap();
        assert_eq!(p.argv, strings(&["echo", "x"]));
    }

    #[test]
    fn the_runner_image_runs_the_built_runner_with_atlas_on_path() {
        let runner = "/usr/local/bin/runner".to_string();
        let p = programs()
            .resolve(
                "ghcr.io/atlas-operator/runner:dev",
                &[],
                &strings(&["apply"]),
            )
            .unwrap();
        assert_eq!(p.argv, vec![runner.clone(), "apply".to_string()]);
        assert_eq!(p.path, DEFAULT_PATH);
        assert_eq!(
            p.files,
            vec![
                (
                    PathBuf::from("/tools/atlas/bin/atlas"),
                    PathBuf::from("/usr/local/bin/atlas")
                ),
                (
                    std::env::current_exe().unwrap(),
                    PathBuf::from("/usr/local/bin/runner")
                ),
            ]
        );
        assert!(
            p.image_env
                .iter()
                .any(|(k, _)| k == "ATLAS_NO_ANON_TELEMETRY")
        );
        let p = programs()
            .resolve(
                "atlas-operator/runner",
                &strings(&["/usr/local/bin/runner", "--check"]),
                &[],
            )
            .unwrap();
        assert_eq!(p.argv, vec![runner, "--check".to_string()]);
        let p = programs()
            .resolve(
                "atlas-operator/runner",
                &strings(&["atlas", "version"]),
                &[],
            )
            .unwrap();
        assert_eq!(p.argv, strings(&["/usr/local/bin/atlas", "version"]));
    }

    #[test]
    fn operator_images_run_the_built_operator() {
        let operator = "/usr/local/bin/atlas-operator".to_string();
        for image in [
            "ghcr.io/atlas-operator/atlas-operator:dev",
            "atlas-operator",
            "registry:5000/team/atlas-operator@sha256:abc",
        ] {
            let p = programs().resolve(image, &[], &[]).unwrap();
            assert_eq!(p.argv, vec![operator.clone(), "run".to_string()], "{image}");
            assert_eq!(
                p.files,
                vec![(
                    std::env::current_exe().unwrap(),
                    PathBuf::from("/usr/local/bin/atlas-operator")
                )]
            );
            assert!(p.image_env.is_empty());
        }
        // `args` replace the image's `run`, as they replace any CMD.
        let p = programs()
            .resolve(
                "ghcr.io/atlas-operator/atlas-operator:dev",
                &[],
                &strings(&["run", "--metrics-address", "0.0.0.0:8080"]),
            )
            .unwrap();
        assert_eq!(
            p.argv,
            vec![
                operator.clone(),
                "run".to_string(),
                "--metrics-address".to_string(),
                "0.0.0.0:8080".to_string()
            ]
        );
        // A `command` naming the binary where an image would keep it means the built one.
        let p = programs()
            .resolve(
                "ghcr.io/atlas-operator/atlas-operator:dev",
                &strings(&["/atlas-operator", "crds"]),
                &[],
            )
            .unwrap();
        assert_eq!(p.argv, vec![operator, "crds".to_string()]);
        // The runner's image is not the operator's, and a longer name is not it either.
        let p = programs()
            .resolve("ghcr.io/atlas-operator/runner:dev", &[], &[])
            .unwrap();
        assert_eq!(p.argv, strings(&["/usr/local/bin/runner"]));
        assert!(matches!(
            programs().resolve("ghcr.io/x/atlas-operator-bundle:1", &[], &[]),
            Err(ImageError::Unknown(_))
        ));
        let mut missing = programs();
        missing.operator = PathBuf::from("/nonexistent/atlas-operator");
        assert!(matches!(
            missing.resolve("ghcr.io/atlas-operator/atlas-operator:dev", &[], &[]),
            Err(ImageError::NotBuilt {
                what: "atlas-operator",
                ..
            })
        ));
    }

    #[test]
    fn kubectl_images_run_the_built_kubectl() {
        let p = programs()
            .resolve(
                "registry.k8s.io/kubectl:v1.33.0",
                &[],
                &strings(&["get", "pods"]),
            )
            .unwrap();
        assert_eq!(p.argv, strings(&["/usr/local/bin/kubectl", "get", "pods"]));
        assert_eq!(
            p.files,
            vec![(
                PathBuf::from("/tools/kube/bin/kubectl"),
                PathBuf::from("/usr/local/bin/kubectl")
            )]
        );
    }

    #[test]
    fn database_images_run_our_entrypoint_with_the_server_as_cmd() {
        let entrypoint = database::ENTRYPOINT.to_string();
        let p = programs().resolve("mariadb:11", &[], &[]).unwrap();
        assert_eq!(p.argv, vec![entrypoint.clone(), "mariadbd".to_string()]);
        assert_eq!(p.database, Some(Flavour::MariaDb));
        assert!(p.files.is_empty());
        let p = programs()
            .resolve(
                "mysql:8.4",
                &[],
                &strings(&["--character-set-server=utf8mb4"]),
            )
            .unwrap();
        assert_eq!(
            p.argv,
            vec![
                entrypoint.clone(),
                "--character-set-server=utf8mb4".to_string()
            ]
        );
        let p = programs().resolve("postgres:16", &[], &[]).unwrap();
        assert_eq!(p.argv, vec![entrypoint, "postgres".to_string()]);
        assert!(p.path.starts_with(DEFAULT_PATH), "{}", p.path);
        assert!(p.path.ends_with("/bin"), "{}", p.path);
        assert_eq!(
            p.image_env,
            vec![("PGDATA".to_string(), "/var/lib/postgresql/data".to_string())]
        );
        let p = programs()
            .resolve("postgres:16", &strings(&["sh", "-c", "true"]), &[])
            .unwrap();
        assert_eq!(p.argv, strings(&["sh", "-c", "true"]));
        assert_eq!(p.database, Some(Flavour::Postgres));
    }

    #[test]
    fn unknown_and_unbuilt_images_are_errors() {
        assert_eq!(
            programs().resolve("nginx:1", &[], &[]),
            Err(ImageError::Unknown("nginx:1".into()))
        );
        let mut missing = programs();
        missing.runner = PathBuf::from("/nonexistent/runner");
        assert!(matches!(
            missing.resolve("atlas-operator/runner", &[], &[]),
            Err(ImageError::NotBuilt { what: "runner", .. })
        ));
    }
}
