//! The status rules, held to what kstatus and ArgoCD conclude from them.

use super::*;
use contract::Kind;

/// Every observation as kstatus and ArgoCD read it: at work or retrying is in progress for
/// kstatus (ArgoCD: Progressing while the Job runs, Degraded with the message once a failure
/// is known), a definitive failure is failed (Degraded), applied is current (Healthy).
#[test]
fn kstatus_and_argocd_read_every_observation_right() {
    let cases = [
        (
            Observation::InProgress {
                detail: "Job j is applying the change".into(),
            },
            KStatus::InProgress,
            ArgoHealth::Progressing,
        ),
        (
            Observation::Retrying {
                reason: Reason::Migrating,
                message: "cannot reach the database at db:5432: connection refused".into(),
                detail: "Job j: attempt 1 failed".into(),
            },
            KStatus::InProgress,
            ArgoHealth::Degraded,
        ),
        (
            Observation::Failed {
                reason: Reason::ReadingMigrationData,
                message: "the Job's pod cannot start: secret \"db\" not found".into(),
                stalled: false,
            },
            KStatus::InProgress,
            ArgoHealth::Degraded,
        ),
        (
            Observation::Failed {
                reason: Reason::Migrating,
                message: "migration file 2.sql failed".into(),
                stalled: true,
            },
            KStatus::Failed,
            ArgoHealth::Degraded,
        ),
        (
            Observation::Applied {
                hash: "h".into(),
                message: "migrated".into(),
                applied_at: 1,
                version: None,
                unmanaged: vec![],
            },
            KStatus::Current,
            ArgoHealth::Healthy,
        ),
    ];
    for (observation, kstatus_reads, argo_reads) in cases {
        let computed = compute(&CommonStatus::default(), Some(2), &observation, None, at(1));
        assert_eq!(
            kstatus(Some(2), &computed),
            kstatus_reads,
            "{observation:?}"
        );
        assert_eq!(
            argo_health(Kind::Migration, &computed.conditions),
            argo_reads,
            "{observation:?}"
        );
        // A status of an older generation is in progress, whatever it says.
        assert_eq!(kstatus(Some(3), &computed), KStatus::InProgress);
    }
}

fn at(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(seconds).unwrap())
}

fn ready(computed: &CommonStatus) -> &Condition {
    computed
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .unwrap()
}

fn in_progress() -> Observation {
    Observation::InProgress {
        detail: "Job atlasmigration-x-0123abcd is applying the change".into(),
    }
}

fn applied() -> Observation {
    Observation::Applied {
        hash: "h1".into(),
        message: "migrated to version 20230316085611".into(),
        applied_at: 1_700_000_000,
        version: Some("20230316085611".into()),
        unmanaged: vec![],
    }
}

#[test]
fn a_running_job_is_progressing_for_argocd_for_both_kinds() {
    let computed = compute(
        &CommonStatus::default(),
        Some(1),
        &in_progress(),
        None,
        at(10),
    );
    let ready = ready(&computed);
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        ("False", "Reconciling", "Reconciling")
    );
    assert_eq!(
        argo_health(Kind::Migration, &computed.conditions),
        ArgoHealth::Progressing
    );
    assert_eq!(
        argo_health(Kind::Schema, &computed.conditions),
        ArgoHealth::Progressing
    );
    let reconciling = computed
        .conditions
        .iter()
        .find(|c| c.type_ == RECONCILING)
        .unwrap();
    assert_eq!(reconciling.status, "True");
    assert!(reconciling.message.contains("atlasmigration-x-0123abcd"));
    assert_eq!(computed.observed_generation, Some(1));
}

#[test]
fn a_retried_failure_has_its_reason_now_and_is_in_progress_for_kstatus() {
    let retrying = Observation::Retrying {
        reason: Reason::Migrating,
        message: "cannot reach the database at db:5432: connection refused".into(),
        detail: "Job atlasmigration-x-0123abcd: attempt 1 failed; the Job tries again".into(),
    };
    let computed = compute(
        &CommonStatus::default(),
        Some(1),
        &retrying,
        Some(1),
        at(10),
    );
    let condition = |type_: &str| {
        computed
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .clone()
    };
    let ready = condition(READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Migrating")
    );
    assert!(ready.message.contains("connection refused"));
    // kstatus: Reconciling=True is in progress, whatever Ready says.
    assert_eq!(condition(RECONCILING).status, "True");
    assert!(condition(RECONCILING).message.contains("attempt 1"));
    assert_eq!(condition(STALLED).status, "False");
    assert_eq!(computed.failed, Some(1));
    assert_eq!(
        argo_health(Kind::Migration, &computed.conditions),
        ArgoHealth::Degraded
    );
}

#[test]
fn applied_is_healthy_with_hash_time_and_version() {
    let running = compute(
        &CommonStatus::default(),
        Some(1),
        &in_progress(),
        None,
        at(10),
    );
    let done = compute(&running, Some(1), &applied(), None, at(20));
    assert_eq!(ready(&done).status, "True");
    assert_eq!(ready(&done).reason, "Applied");
    assert_eq!(ready(&done).last_transition_time, at(20));
    assert_eq!(done.observed_hash.as_deref(), Some("h1"));
    assert_eq!(done.last_applied, Some(1_700_000_000));
    assert_eq!(done.last_applied_version.as_deref(), Some("20230316085611"));
    assert_eq!(done.failed, Some(0));
    assert_eq!(
        argo_health(Kind::Migration, &done.conditions),
        ArgoHealth::Healthy
    );
}

#[test]
fn observing_the_same_thing_again_changes_nothing() {
    let done = compute(&CommonStatus::default(), Some(1), &applied(), None, at(20));
    let again = compute(&done, Some(1), &applied(), None, at(99));
    assert_eq!(again, done, "a second reconcile must have nothing to write");
    let failed = Observation::Failed {
        reason: Reason::Migrating,
        message: "migration file 2.sql failed".into(),
        stalled: true,
    };
    let once = compute(&done, Some(2), &failed, None, at(30));
    let twice = compute(&once, Some(2), &failed, None, at(40));
    assert_eq!(twice, once);
    assert_eq!(once.failed, Some(1));
}

/// As upstream's: `failed` counts the failed attempts while retries go on, and is 0 again
/// once applied.
#[test]
fn failed_counts_the_attempts_and_resets_on_success() {
    let retrying = compute(
        &CommonStatus::default(),
        Some(1),
        &in_progress(),
        Some(2),
        at(10),
    );
    assert_eq!(retrying.failed, Some(2));
    assert_eq!(ready(&retrying).reason, RECONCILING);
    let failed = Observation::Failed {
        reason: Reason::Migrating,
        message: "connection refused".into(),
        stalled: true,
    };
    let gave_up = compute(&retrying, Some(1), &failed, Some(3), at(20));
    assert_eq!(gave_up.failed, Some(3));
    let applied = compute(&gave_up, Some(2), &applied(), Some(0), at(30));
    assert_eq!(applied.failed, Some(0));
}

#[test]
fn a_definitive_failure_is_degraded_and_stalled() {
    let failed = compute(
        &CommonStatus::default(),
        Some(1),
        &Observation::Failed {
            reason: Reason::Migrating,
            message: "migration file 2.sql failed at statement `create tabel`".into(),
            stalled: true,
        },
        None,
        at(10),
    );
    assert_eq!(ready(&failed).reason, "Migrating");
    assert_eq!(
        argo_health(Kind::Migration, &failed.conditions),
        ArgoHealth::Degraded
    );
    assert_eq!(
        argo_health(Kind::Schema, &failed.conditions),
        ArgoHealth::Degraded
    );
    let stalled = failed
        .conditions
        .iter()
        .find(|c| c.type_ == STALLED)
        .unwrap();
    assert_eq!(stalled.status, "True");
}

#[test]
fn waiting_for_a_dev_database_stays_progressing_for_schemas() {
    let waiting = compute(
        &CommonStatus::default(),
        Some(1),
        &Observation::Failed {
            reason: Reason::GettingDevDb,
            message: "GettingDevDB".into(),
            stalled: false,
        },
        None,
        at(10),
    );
    assert_eq!(
        argo_health(Kind::Schema, &waiting.conditions),
        ArgoHealth::Progressing
    );
}

#[test]
fn only_ready_for_this_hash_and_generation_is_current() {
    let done = compute(&CommonStatus::default(), Some(3), &applied(), None, at(10));
    assert!(is_current(&done, "h1", Some(3)));
    assert!(!is_current(&done, "def", Some(3)), "another hash");
    assert!(!is_current(&done, "h1", Some(4)), "a newer generation");
    let running = compute(&done, Some(3), &in_progress(), None, at(11));
    assert!(!is_current(&running, "h1", Some(3)), "not Ready");
}

#[test]
fn no_status_yet_is_progressing() {
    assert_eq!(argo_health(Kind::Migration, &[]), ArgoHealth::Progressing);
}

/// Objects the Atlas build left out are a Warning condition next to Ready=True (still Healthy
/// for ArgoCD and Current for kstatus: the tables were applied), and an apply without any takes
/// it away.
#[test]
fn objects_an_apply_left_out_are_a_warning_until_an_apply_has_none() {
    let left_out = Observation::Applied {
        hash: "h1".into(),
        message: "the schema has been applied (1 statements)".into(),
        applied_at: 1_700_000_000,
        version: None,
        unmanaged: vec![
            "view app.active_users".into(),
            "function app.total()".into(),
        ],
    };
    let warned = compute(&CommonStatus::default(), Some(1), &left_out, None, at(1));
    assert_eq!(ready(&warned).status, "True");
    let warning = warned
        .conditions
        .iter()
        .find(|c| c.type_ == WARNING)
        .expect("a Warning condition");
    assert_eq!(
        (warning.status.as_str(), warning.reason.as_str()),
        ("True", "UnmanagedObjects")
    );
    assert!(
        warning.message.contains("2 object(s)")
            && warning
                .message
                .ends_with(": view app.active_users, function app.total()"),
        "{}",
        warning.message
    );
    assert_eq!(kstatus(Some(1), &warned), KStatus::Current);
    assert_eq!(
        argo_health(Kind::Schema, &warned.conditions),
        ArgoHealth::Healthy
    );
    // The same observation again writes nothing new.
    assert_eq!(compute(&warned, Some(1), &left_out, None, at(2)), warned);

    let whole = Observation::Applied {
        hash: "h2".into(),
        message: "the schema has been applied (1 statements)".into(),
        applied_at: 1_700_000_100,
        version: None,
        unmanaged: vec![],
    };
    let cleared = compute(&warned, Some(2), &whole, None, at(3));
    assert!(
        !cleared.conditions.iter().any(|c| c.type_ == WARNING),
        "{:?}",
        cleared.conditions
    );
    assert_eq!(ready(&cleared).status, "True");
}

#[test]
fn a_cut_list_of_unmanaged_objects_says_there_are_more() {
    let listed = ["view a.v".to_string(), "… and 5 more".to_string()];
    let message = unmanaged_message(&listed).unwrap();
    assert!(message.contains("more than 1 object(s)"), "{message}");
    assert!(unmanaged_message(&[]).is_none());
}
