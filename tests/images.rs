//! `Dockerfile.operator` and `Dockerfile.runner`. No Docker here to build them, so this checks
//! what a build would get wrong silently: the final stage is distroless/static with a numeric
//! non-root user and no shell needed, every base image is pinned, the Atlas CLI is the official
//! build at a stated version, and the binaries sit where the chart's Deployment, the Jobs of
//! `src/reconcile/build/` and the process-kubelet's emulation of the images (devcluster) expect them.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use atlas_operator::api::{AtlasMigration, AtlasSchema};
use atlas_operator::reconcile::build::{self, JobSettings, Owner};
use atlas_operator::reconcile::dereference::ConfigMaps;
use contract::Kind;
use devcluster::kubelet::image::{Process, Programs};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;
use support::{repo_path, yaml_documents};

/// The UID of distroless's `nonroot` user, which the chart and the Jobs run as.
const NONROOT: &str = "65532";

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Dockerfile {
    /// `ARG`s before the first `FROM`, with their defaults.
    global_args: BTreeMap<String, String>,
    stages: Vec<Vec<Instruction>>,
}

/// Instructions as the Dockerfile frontend reads them: comments (and parser directives) dropped,
/// `\` continuations joined, the keyword upper-cased.
fn parse(name: &str) -> Dockerfile {
    let text = std::fs::read_to_string(repo_path(name)).unwrap();
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "{name} ends in a continuation");
    let mut file = Dockerfile {
        global_args: BTreeMap::new(),
        stages: Vec::new(),
    };
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_string(),
        };
        if instruction.keyword == "FROM" {
            file.stages.push(Vec::new());
        }
        match file.stages.last_mut() {
            Some(stage) => stage.push(instruction),
            None => {
                assert_eq!(instruction.keyword, "ARG", "{name}: {line}");
                let (key, value) = instruction.args.split_once('=').unwrap_or_else(|| {
                    panic!("{name}: global ARG {} has no default", instruction.args)
                });
                file.global_args.insert(key.into(), value.into());
            }
        }
    }
    file
}

impl Dockerfile {
    /// `text` with the global ARGs' defaults substituted, also inside one another's defaults.
    fn substitute(&self, text: &str) -> String {
        let mut text = text.to_string();
        loop {
            let next = self
                .global_args
                .iter()
                .fold(text.clone(), |text, (key, value)| {
                    text.replace(&format!("${{{key}}}"), value)
                });
            if next == text {
                return text;
            }
            text = next;
        }
    }

    /// The stages' names (`FROM image AS name`).
    fn stage_names(&self) -> Vec<String> {
        self.stages
            .iter()
            .filter_map(|stage| {
                let words: Vec<&str> = stage[0].args.split_whitespace().collect();
                let at = words.iter().position(|w| w.eq_ignore_ascii_case("AS"))?;
                words.get(at + 1).map(|name| name.to_string())
            })
            .collect()
    }

    /// Every stage's base image (`FROM image [AS name]`), with the global ARGs substituted.
    fn bases(&self) -> Vec<String> {
        self.stages
            .iter()
            .map(|stage| {
                let from = &stage[0].args;
                let image = from
                    .split_whitespace()
                    .find(|word| !word.starts_with("--"))
                    .unwrap();
                self.substitute(image)
            })
            .collect()
    }

    fn last_stage(&self) -> &[Instruction] {
        self.stages.last().unwrap()
    }

    fn in_last_stage(&self, keyword: &str) -> Vec<&str> {
        self.last_stage()
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    /// The exec-form (JSON) array of the final stage's only `keyword` instruction.
    fn exec_form(&self, keyword: &str) -> Vec<String> {
        let args = self.in_last_stage(keyword);
        assert_eq!(args.len(), 1, "one {keyword}");
        serde_json::from_str(args[0]).unwrap_or_else(|err| {
            panic!(
                "{keyword} {} is not in exec form ({err}): the shell form needs a shell",
                args[0]
            )
        })
    }

    /// Where the final stage's `COPY`s put files.
    fn copied_to(&self) -> Vec<PathBuf> {
        self.in_last_stage("COPY")
            .iter()
            .map(|args| PathBuf::from(args.split_whitespace().last().unwrap()))
            .collect()
    }

    /// The final stage's `ENV key=value` pairs.
    fn env(&self) -> BTreeMap<String, String> {
        self.in_last_stage("ENV")
            .iter()
            .flat_map(|args| args.split_whitespace())
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("ENV in key=value form");
                (key.to_string(), value.trim_matches('"').to_string())
            })
            .collect()
    }
}

/// Both images must build to a final stage that runs without a shell as a numeric non-root user.
fn assert_hardened(name: &str, file: &Dockerfile) {
    let bases = file.bases();
    let stages = file.stage_names();
    // A stage built on an earlier stage (`FROM build AS binaries`) names no image to pin.
    for base in bases.iter().filter(|base| !stages.contains(base)) {
        let tag = base.rsplit_once(':').map(|(_, tag)| tag);
        assert!(
            tag.is_some_and(|tag| !tag.is_empty() && tag != "latest" && !tag.contains('$')),
            "{name}: base image {base} is not pinned to a tag"
        );
    }
    let last = bases.last().unwrap();
    assert!(
        last.starts_with("gcr.io/distroless/static"),
        "{name}: the final stage is {last}, not distroless/static"
    );
    let users = file.in_last_stage("USER");
    assert_eq!(users.len(), 1, "{name}: one USER in the final stage");
    let (uid, gid) = users[0].split_once(':').unwrap_or((users[0], ""));
    assert_eq!(
        uid, NONROOT,
        "{name}: USER must be numeric (runAsNonRoot checks it)"
    );
    assert!(gid.is_empty() || gid == NONROOT, "{name}: group {gid}");
    assert!(
        file.in_last_stage("RUN").is_empty(),
        "{name}: the final stage has no shell to RUN anything"
    );
    assert!(
        file.in_last_stage("SHELL").is_empty() && file.in_last_stage("ADD").is_empty(),
        "{name}: no SHELL or ADD in the final stage"
    );
}

fn programs() -> Programs {
    Programs {
        // Stand-ins for the built binaries: files that exist.
        runner: std::env::current_exe().unwrap(),
        operator: PathBuf::from(env!("CARGO_BIN_EXE_atlas-operator")),
        atlas: Some(PathBuf::from("/tools/atlas")),
        kubectl: None,
    }
}

/// How the process-kubelet runs a container of `image` with these `args` (and no command).
fn as_the_test_bed_runs(image: &str, args: &[String]) -> Process {
    programs()
        .resolve(image, &[], args)
        .unwrap_or_else(|err| panic!("{image}: {err}"))
}

fn chart_deployment() -> Value {
    let helm = devcluster::tools::path("helm")
        .unwrap_or_else(|err| panic!("{err} (`cargo xtask tools` builds helm)"));
    let chart = repo_path("charts/atlas-operator");
    let output = std::process::Command::new(helm)
        .args(["template", "atlas-operator", chart.to_str().unwrap()])
        .args(["--show-only", "templates/deployment.yaml"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_saphyr::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap()
}

#[test]
fn the_operator_image_runs_what_the_chart_asks_for() {
    let file = parse("Dockerfile.operator");
    assert_hardened("Dockerfile.operator", &file);
    let entrypoint = file.exec_form("ENTRYPOINT");
    let cmd = file.exec_form("CMD");
    assert_eq!(entrypoint, ["/usr/local/bin/atlas-operator"]);
    assert!(file.copied_to().contains(&PathBuf::from(&entrypoint[0])));

    // The chart gives only args, so the image's ENTRYPOINT runs them: `atlas-operator run`.
    let deployment = chart_deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(container.get("command").is_none());
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    assert_eq!(args, cmd, "the chart's args are the image's CMD");
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), NONROOT);
    assert_eq!(
        container["securityContext"]["runAsUser"].to_string(),
        NONROOT
    );

    // The local test bed runs the chart's image the way the Dockerfile builds it.
    let image = container["image"].as_str().unwrap();
    let process = as_the_test_bed_runs(image, &args);
    assert_eq!(process.argv, [entrypoint, args].concat());
    for (_, in_image) in &process.files {
        assert!(
            file.copied_to().contains(in_image),
            "{}",
            in_image.display()
        );
    }

    // And `run` is the binary's subcommand.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_atlas-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap()
        .status;
    assert!(status.success());
}

fn seed_jobs() -> Vec<Job> {
    let settings = JobSettings::default();
    let doc = |path: &str, kind: &str| -> Value {
        let mut doc = yaml_documents(&repo_path(path))
            .into_iter()
            .find(|d| d["kind"] == kind)
            .unwrap();
        doc["metadata"]["namespace"] = "tenant-a".into();
        doc
    };
    let owner = |kind, name: &str| Owner {
        kind,
        namespace: "tenant-a".into(),
        name: name.into(),
        uid: "0b9f6a52-1c1e-4d4e-9a43-5f0c1f7f0001".into(),
    };
    let migration: AtlasMigration = serde_json::from_value(doc(
        "examples/postgres-migration/atlasmigration.yaml",
        "AtlasMigration",
    ))
    .unwrap();
    let dir: ConfigMap = serde_json::from_value(doc(
        "examples/postgres-migration/migrationdir.yaml",
        "ConfigMap",
    ))
    .unwrap();
    let configmaps: ConfigMaps = BTreeMap::from([("migrationdir".to_string(), dir)]);
    let schema: AtlasSchema =
        serde_json::from_value(doc("examples/schema-policy/schema.yaml", "AtlasSchema")).unwrap();
    vec![
        build::render(
            &support::plan(&migration, &configmaps).unwrap(),
            &owner(Kind::Migration, "m"),
            &settings,
        ),
        build::render(
            &support::plan(&schema, &ConfigMaps::new()).unwrap(),
            &owner(Kind::Schema, "s"),
            &settings,
        ),
    ]
}

#[test]
fn the_runner_image_runs_what_the_jobs_ask_for() {
    let file = parse("Dockerfile.runner");
    assert_hardened("Dockerfile.runner", &file);
    let entrypoint = file.exec_form("ENTRYPOINT");
    assert_eq!(entrypoint, ["/usr/local/bin/runner"]);
    assert!(
        file.in_last_stage("CMD").is_empty(),
        "the Jobs always give the subcommand"
    );

    for job in seed_jobs() {
        let pod = job.spec.unwrap().template.spec.unwrap();
        let container = pod
            .containers
            .iter()
            .find(|c| c.name == build::RUNNER_CONTAINER)
            .unwrap();
        assert!(container.command.is_none(), "the image's ENTRYPOINT runs");
        let args = container.args.clone().unwrap();
        let image = container.image.as_deref().unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(65532));

        // The test bed's emulation of this image is the Dockerfile's image: same ENTRYPOINT,
        // the same files at the same paths (`atlas` on PATH for the runner), the same ENV.
        let process = as_the_test_bed_runs(image, &args);
        assert_eq!(process.argv, [entrypoint.clone(), args].concat());
        let copied = file.copied_to();
        for (_, in_image) in &process.files {
            assert!(
                copied.contains(in_image),
                "{} is not in the image",
                in_image.display()
            );
        }
        assert!(copied.contains(&PathBuf::from("/usr/local/bin/atlas")));
        assert!(
            process.path.split(':').any(|dir| dir == "/usr/local/bin"),
            "the runner finds `atlas` on PATH"
        );
        let env = file.env();
        assert!(
            !env.contains_key("ATLAS_BIN") && !env.contains_key("PATH"),
            "the runner's default (`atlas` on distroless's PATH) is what the test bed runs"
        );
        for (key, value) in &process.image_env {
            assert_eq!(env.get(key), Some(value), "ENV {key}");
        }
    }
}

#[test]
fn the_runner_carries_the_official_atlas_at_a_pinned_version() {
    let file = parse("Dockerfile.runner");
    let version = file
        .global_args
        .get("ATLAS_VERSION")
        .expect("ARG ATLAS_VERSION=<x.y.z>");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "ATLAS_VERSION {version} is not an exact x.y.z"
    );
    // The official image (not `-community`): Atlas Cloud features work for users with a token.
    let atlas_stage = file
        .stages
        .iter()
        .position(|stage| stage[0].args.ends_with(" AS atlas"))
        .expect("a stage named atlas");
    assert_eq!(
        file.bases()[atlas_stage],
        format!("docker.io/arigaio/atlas:{version}")
    );
    assert!(
        file.in_last_stage("COPY")
            .iter()
            .any(|args| args.starts_with("--from=atlas ")
                && args.ends_with(" /atlas /usr/local/bin/atlas")),
        "the final stage copies /atlas from the official image"
    );
    // The version users read is the one built.
    for doc in ["docs/install.md", "charts/atlas-operator/README.md"] {
        let text = std::fs::read_to_string(repo_path(doc)).unwrap();
        assert!(
            text.contains(&format!("Atlas v{version}")),
            "{doc} does not name Atlas v{version}"
        );
    }
}

#[test]
fn the_images_build_the_workspaces_binaries() {
    for (name, package, bin) in [
        ("Dockerfile.operator", "atlas-operator", "atlas-operator"),
        ("Dockerfile.runner", "atlas-runner", "runner"),
    ] {
        let file = parse(name);
        let build = file
            .stages
            .iter()
            .flatten()
            .filter(|i| i.keyword == "RUN")
            .find(|i| i.args.contains("cargo build"))
            .unwrap_or_else(|| panic!("{name}: no cargo build"));
        for flag in [
            format!("--package {package}"),
            format!("--bin {bin}"),
            "--locked".to_string(),
            "--release".to_string(),
        ] {
            assert!(
                build.args.contains(&flag),
                "{name}: cargo build without {flag}"
            );
        }
        // Unless told otherwise (the local test bed brings binaries built outside), the binary
        // copied into the final stage is the one the build stage compiled.
        assert_eq!(
            file.global_args.get("BINARIES").map(String::as_str),
            Some("build"),
            "{name}: ARG BINARIES=build"
        );
        assert!(
            file.stage_names().iter().any(|stage| stage == "build")
                && file.bases().iter().any(|base| base == "build"),
            "{name}: a stage FROM ${{BINARIES}} (the build stage by default)"
        );
        // A static binary: distroless/static has no libc.
        assert!(
            build.args.contains("-unknown-linux-musl"),
            "{name}: not musl"
        );
    }
    // The sources reach the build without the build output.
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    for entry in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|line| line == entry),
            ".dockerignore: {entry}"
        );
    }
}
