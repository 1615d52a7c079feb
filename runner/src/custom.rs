//! A user's own `atlas.hcl` (`spec.config` / `spec.configFrom`, allowed by the operator's
//! `--allow-custom-config`) merged with the one the runner generates, and `spec.vars` handed to
//! it without putting a value on Atlas's command line.
//!
//! The generated env wins where both set the same thing (`url`, `dev`, `migration.dir`, …):
//! those come from the resource's spec, which is what the status reports on. Everything else of
//! the user's file stays: other envs, `variable`, `data` and `locals` blocks, and the user's own
//! settings inside the env (a `lint` block, `migration.lock_timeout`, …). One exception: a
//! `migration.dir` computed from a data source (a `template_dir` over `migrations`, the spec's
//! files as the runner writes them in Atlas's working directory) stays the user's.

use hcl::expr::{Expression, FuncCall};
use hcl::structure::{Attribute, Block, Body, Structure};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CustomConfigError {
    #[error("the custom Atlas config (spec.config or spec.configFrom) is not valid HCL: {0}")]
    Parse(String),
    #[error(
        "spec.vars sets `{0}`, but the custom Atlas config declares no `variable \"{0}\"` block"
    )]
    UndeclaredVar(String),
}

/// One `spec.vars` entry, its value in an environment variable Atlas inherits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarEnv {
    pub key: String,
    pub env: String,
}

/// `custom` with `generated`'s blocks merged in, and each variable in `vars` defaulting to its
/// environment variable (repeated keys make a list, as upstream's `--var` does).
pub fn merge(custom: &str, generated: Body, vars: &[VarEnv]) -> Result<Body, CustomConfigError> {
    let mut body: Body =
        hcl::parse(custom).map_err(|err| CustomConfigError::Parse(err.to_string()))?;
    for structure in generated.into_inner() {
        merge_structure(&mut body, structure);
    }
    let mut keys: Vec<&str> = vars.iter().map(|v| v.key.as_str()).collect();
    keys.dedup();
    for key in keys {
        let envs: Vec<Expression> = vars
            .iter()
            .filter(|v| v.key == key)
            .map(|v| getenv(&v.env))
            .collect();
        let value = match <[Expression; 1]>::try_from(envs) {
            Ok([one]) => one,
            Err(many) => Expression::Array(many),
        };
        let declared = body.iter_mut().find_map(|s| match s {
            Structure::Block(block)
                if block.identifier.as_str() == "variable"
                    && block.labels.len() == 1
                    && block.labels[0].as_str() == key =>
            {
                Some(block)
            }
            _ => None,
        });
        let Some(block) = declared else {
            return Err(CustomConfigError::UndeclaredVar(key.to_string()));
        };
        set_attribute(&mut block.body, Attribute::new("default", value));
    }
    Ok(body)
}

fn getenv(name: &str) -> Expression {
    Expression::from(FuncCall::builder("getenv").arg(name).build())
}

fn merge_structure(into: &mut Body, structure: Structure) {
    match structure {
        Structure::Attribute(attribute) => set_attribute(into, attribute),
        Structure::Block(block) => {
            let same = into.iter_mut().find_map(|s| match s {
                Structure::Block(existing)
                    if existing.identifier == block.identifier
                        && existing.labels == block.labels =>
                {
                    Some(existing)
                }
                _ => None,
            });
            match same {
                Some(existing) => {
                    for inner in block.body.into_inner() {
                        merge_structure(&mut existing.body, inner);
                    }
                }
                None => into.0.push(Structure::Block(block)),
            }
        }
    }
}

fn set_attribute(body: &mut Body, attribute: Attribute) {
    let existing = body.iter_mut().find_map(|s| match s {
        Structure::Attribute(a) if a.key == attribute.key => Some(a),
        _ => None,
    });
    match existing {
        // A computed migration dir (`dir = data.template_dir.migrations.url`, upstream's
        // template directories) renders the spec's own files, which the runner writes as
        // `migrations/` in Atlas's working directory: the user's stays.
        Some(existing) if existing.key.as_str() == "dir" && is_computed(&existing.expr) => {}
        Some(existing) => *existing = attribute,
        None => body.0.push(Structure::Attribute(attribute)),
    }
}

fn is_computed(expr: &Expression) -> bool {
    !matches!(expr, Expression::String(_))
}

/// The text of the `atlas.hcl` to run with: `generated` alone, or merged into the user's own.
/// Variables' values go into `run`'s Atlas environment (secret ones into its redactor too).
pub fn project_file(
    task: &contract::Task,
    generated: Body,
    run: &mut crate::run::Run,
) -> Result<String, String> {
    let body = project_body(task, generated, run)?;
    hcl::to_string(&body).map_err(|err| err.to_string())
}

/// [`project_file`] before it is written out: what a caller reads of the file Atlas runs with
/// (the schema lint, the skips of its `diff` block).
pub fn project_body(
    task: &contract::Task,
    generated: Body,
    run: &mut crate::run::Run,
) -> Result<Body, String> {
    let body = match &task.custom_config_env {
        None => generated,
        Some(name) => {
            let custom = std::env::var(name).map_err(|_| {
                format!("the custom Atlas config is missing from the pod's environment ({name})")
            })?;
            let mut vars = Vec::new();
            for (index, var) in task.vars.iter().enumerate() {
                let value = match &var.value {
                    contract::Value::Literal(value) => value.clone(),
                    contract::Value::Env(from) => {
                        let value = std::env::var(from).map_err(|_| {
                            format!("the value of var `{}` is missing ({from})", var.key)
                        })?;
                        run.redactor.add(value.clone());
                        value
                    }
                };
                let env = format!("{VAR_ENV_PREFIX}{index}");
                run.atlas.env(&env, value);
                vars.push(VarEnv {
                    key: var.key.clone(),
                    env,
                });
            }
            merge(&custom, generated, &vars).map_err(|err| err.to_string())?
        }
    };
    Ok(match crate::cloud::token(run) {
        crate::cloud::Token::Used => crate::cloud::with_block(body, task, run),
        _ => body,
    })
}

/// Where Atlas finds the value of the n-th `spec.vars` entry.
pub const VAR_ENV_PREFIX: &str = "ATLAS_RUNNER_VAR_";

/// Whether `body` has a block `identifier "label"`; for tests and messages.
pub fn has_block(body: &Body, identifier: &str, label: &str) -> bool {
    body.blocks().any(|b: &Block| {
        b.identifier.as_str() == identifier && b.labels.iter().any(|l| l.as_str() == label)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::MigrateApply;

    const CUSTOM: &str = r#"
variable "schema" {
  type = string
}

variable "tags" {
  type = list(string)
  default = []
}

env "k8s" {
  url = "mysql://ignored"
  migration {
    dir = "file://ignored"
    lock_timeout = "5s"
  }
  lint {
    destructive {
      error = false
    }
  }
}

env "other" {
  url = "sqlite://other"
}
"#;

    fn generated() -> Body {
        let job = MigrateApply {
            dir: "/migrations".into(),
            ..Default::default()
        };
        crate::config::migration(
            "k8s",
            "file:///work/dir",
            crate::config::Generated::URL,
            &job,
        )
    }

    #[test]
    fn the_generated_env_wins_and_the_users_settings_stay() {
        let merged = merge(CUSTOM, generated(), &[]).unwrap();
        let text = hcl::to_string(&merged).unwrap();
        assert!(
            text.contains("url = getenv(\"ATLAS_RUNNER_URL\")"),
            "{text}"
        );
        assert!(!text.contains("mysql://ignored"), "{text}");
        assert!(text.contains("dir = \"file:///work/dir\""), "{text}");
        assert!(text.contains("lock_timeout = \"5s\""), "{text}");
        assert!(text.contains("error = false"), "{text}");
        assert!(text.contains("sqlite://other"), "{text}");
        assert_eq!(text.matches("env \"k8s\"").count(), 1, "{text}");
    }

    #[test]
    fn a_computed_migration_dir_stays_the_users() {
        let custom =
            "env \"k8s\" {\n  migration {\n    dir = data.template_dir.migrations.url\n  }\n}\n";
        let text = hcl::to_string(&merge(custom, generated(), &[]).unwrap()).unwrap();
        assert!(
            text.contains("dir = data.template_dir.migrations.url"),
            "{text}"
        );
        assert!(!text.contains("file:///work/dir"), "{text}");
    }

    #[test]
    fn an_env_the_user_lacks_is_added() {
        let merged = merge("variable \"x\" {\n  type = string\n}\n", generated(), &[]).unwrap();
        assert!(has_block(&merged, "env", "k8s"));
        assert!(has_block(&merged, "variable", "x"));
    }

    #[test]
    fn vars_default_to_environment_variables_never_to_their_values() {
        let vars = [
            VarEnv {
                key: "schema".into(),
                env: "ATLAS_RUNNER_VAR_0".into(),
            },
            VarEnv {
                key: "tags".into(),
                env: "ATLAS_RUNNER_VAR_1".into(),
            },
            VarEnv {
                key: "tags".into(),
                env: "ATLAS_RUNNER_VAR_2".into(),
            },
        ];
        let text = hcl::to_string(&merge(CUSTOM, generated(), &vars).unwrap()).unwrap();
        assert!(
            text.contains("default = getenv(\"ATLAS_RUNNER_VAR_0\")"),
            "{text}"
        );
        let compact: String = text.split_whitespace().collect();
        assert!(
            compact.contains(
                "default=[getenv(\"ATLAS_RUNNER_VAR_1\"),getenv(\"ATLAS_RUNNER_VAR_2\")]"
            ),
            "{text}"
        );
        assert!(!text.contains("default = []"), "{text}");
    }

    #[test]
    fn an_undeclared_var_and_broken_hcl_are_refused() {
        let vars = [VarEnv {
            key: "nope".into(),
            env: "E".into(),
        }];
        assert_eq!(
            merge(CUSTOM, generated(), &vars).unwrap_err(),
            CustomConfigError::UndeclaredVar("nope".into())
        );
        assert!(matches!(
            merge("env \"k8s\" {", generated(), &[]).unwrap_err(),
            CustomConfigError::Parse(_)
        ));
    }
}
