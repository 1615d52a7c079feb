//! `runner wait`: for an application's init container. Exits 0 once the database has every
//! migration of the mounted directory applied; until then it polls `atlas migrate status` with a
//! growing pause, and gives up at the time limit. An app then starts only after its migrations,
//! without ArgoCD sync waves.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::atlas::URL_ENV;
use crate::config;
use crate::inputs::{self, WorkDir};
use crate::migrate::Status;
use crate::run::Run;
use contract::MigrateApply;

pub struct WaitOptions {
    pub dir: String,
    pub url_env: String,
    pub revisions_schema: Option<String>,
    pub limit: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    #[error("the environment variable {0} (the database URL) is not set")]
    NoUrl(String),
    #[error("after {}s the database still misses {pending}: last status: {last}", .waited.as_secs())]
    Timeout {
        waited: Duration,
        pending: String,
        last: String,
    },
    #[error("writing atlas.hcl: {0}")]
    Config(String),
}

/// Polls until the directory is applied or the limit passes.
pub fn run(options: &WaitOptions, run: &mut Run) -> Result<String, WaitError> {
    let files = inputs::read_dir(Path::new(&options.dir))?;
    let work = WorkDir::create(&run.tmp)?;
    let dir = inputs::write_copy(&work.path().join("migrations"), &files)?;
    let url =
        std::env::var(&options.url_env).map_err(|_| WaitError::NoUrl(options.url_env.clone()))?;
    run.redactor.add(url.clone());
    run.atlas.env(URL_ENV, url);
    let job = MigrateApply {
        dir: options.dir.clone(),
        revisions_schema: options.revisions_schema.clone(),
        ..Default::default()
    };
    let body = config::migration(
        "wait",
        &format!("file://{}", dir.display()),
        config::Generated::URL,
        &job,
    );
    let config_path = work.path().join("atlas.hcl");
    std::fs::write(
        &config_path,
        hcl::to_string(&body).map_err(|e| WaitError::Config(e.to_string()))?,
    )
    .map_err(|e| WaitError::Config(e.to_string()))?;
    let config_url = format!("file://{}", config_path.display());

    let started = Instant::now();
    let mut pause = Duration::from_secs(1);
    loop {
        let args = [
            "migrate",
            "status",
            "--env",
            "wait",
            "--config",
            config_url.as_str(),
            "--format",
            "{{ json . }}",
        ];
        let (pending, last) = match run.atlas.run(&args) {
            Ok(output) if output.success => {
                match serde_json::from_str::<Status>(output.stdout.trim()) {
                    Ok(status) if status.pending.is_empty() => {
                        let message = format!(
                            "every migration is applied: the database is at version {}",
                            status.current
                        );
                        run.log(&message);
                        return Ok(message);
                    }
                    Ok(status) => {
                        let names: Vec<_> =
                            status.pending.iter().map(|f| f.name.as_str()).collect();
                        (names.join(", "), format!("{} pending", names.len()))
                    }
                    Err(err) => ("(unknown)".into(), err.to_string()),
                }
            }
            Ok(output) => ("(unknown)".into(), output.error_text()),
            Err(err) => ("(unknown)".into(), err.to_string()),
        };
        if started.elapsed() + pause > options.limit {
            return Err(WaitError::Timeout {
                waited: started.elapsed(),
                pending,
                last: run.redactor.redact(&last),
            });
        }
        run.log(&format!(
            "waiting for {pending} ({last}); next look in {}s",
            pause.as_secs()
        ));
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}
