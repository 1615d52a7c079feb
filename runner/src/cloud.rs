//! The Atlas Cloud token: in the pod's environment from a Secret (never in the task, the Job's
//! spec or the project file's text), hidden from every line the runner prints, and handed to
//! Atlas through the project file's `atlas { cloud { token = getenv("ATLAS_TOKEN") } }` where
//! the build can use it.

use hcl::expr::{Expression, FuncCall};
use hcl::{Block, Body};

use crate::run::Run;
use contract::{ATLAS_TOKEN_ENV, Task};

/// What this run does with the token.
#[derive(Debug, PartialEq, Eq)]
pub enum Token {
    /// No token in the pod (none configured, or the install-wide Secret is not in this namespace).
    Absent,
    /// Given, and this build logs in to Atlas Cloud: the project file gets the `atlas` block.
    Used,
    /// Given, but this build has no Atlas Cloud login (the community build): Atlas never sees it.
    Unusable,
}

/// Reads the token, adds it to the redactor and says in the log what becomes of it.
pub fn token(run: &mut Run) -> Token {
    let Some(token) = std::env::var(ATLAS_TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    else {
        return Token::Absent;
    };
    run.redactor.add(token);
    // Asked of the binary: the official build has `atlas login`, the community build has not.
    if run.atlas.offers_command(&[], "login") {
        run.log("Atlas Cloud token given (ATLAS_TOKEN): passed to Atlas in the project file");
        Token::Used
    } else {
        run.log(
            "Atlas Cloud token given (ATLAS_TOKEN), but this Atlas build has no Atlas Cloud login \
             (the community build): the token is not used, and features that need Atlas Cloud \
             are not available",
        );
        Token::Unusable
    }
}

/// `atlas { cloud { token = getenv("ATLAS_TOKEN") url = … project = … } }`.
pub fn block(task: &Task) -> Block {
    let mut cloud = Block::builder("cloud").add_attribute((
        "token",
        Expression::from(FuncCall::builder("getenv").arg(ATLAS_TOKEN_ENV).build()),
    ));
    if let Some(settings) = &task.cloud {
        if let Some(url) = &settings.url {
            cloud = cloud.add_attribute(("url", url.as_str()));
        }
        if let Some(project) = &settings.project {
            cloud = cloud.add_attribute(("project", project.as_str()));
        }
    }
    Block::builder("atlas").add_block(cloud.build()).build()
}

/// `body` with the `atlas` block first, unless the resource's own project file has one (its
/// cloud settings are the user's to make).
pub fn with_block(body: Body, task: &Task, run: &Run) -> Body {
    if body.blocks().any(|b| b.identifier.as_str() == "atlas") {
        run.log("the project file has its own `atlas` block: the token is left to it");
        return body;
    }
    let mut out = Body::builder().add_block(block(task));
    for structure in body.into_inner() {
        out = out.add_structure(structure);
    }
    out.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_reads_the_token_from_the_environment() {
        let task = Task {
            cloud: Some(contract::Cloud {
                url: Some("https://atlas.example".into()),
                project: Some("shop".into()),
            }),
            ..serde_json::from_value(serde_json::json!({
                "version": contract::CONTRACT_VERSION, "resource": "a/b",
                "target": {"urlEnv": "U"}, "envName": "k8s", "inputsDigest": "x",
                "work": {"kind": "migration", "dir": "/d"}
            }))
            .unwrap()
        };
        let text = hcl::to_string(&Body::builder().add_block(block(&task)).build()).unwrap();
        assert!(text.contains("token = getenv(\"ATLAS_TOKEN\")"), "{text}");
        assert!(text.contains("url = \"https://atlas.example\""), "{text}");
        assert!(text.contains("project = \"shop\""), "{text}");
    }
}
