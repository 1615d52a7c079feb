//! The table `cargo xtask bench` prints at the end: the main figures of each phase, for people to
//! read (`results.json` has all of them).

use std::fmt::Write as _;

use super::Results;
use super::scenarios::ScaleFigures;
use super::workload;

pub fn table(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(
        out,
        "\natlas-operator bench ({}, {} build) on {} CPUs ({}), {} MiB; load {} → {}",
        results.plan.mode,
        results.plan.profile,
        m.cpus,
        m.cpu_model,
        m.memory_mib,
        m.load_average,
        results.load_average_at_end
    );
    let sizes: Vec<String> = results
        .scale
        .iter()
        .map(|f| f.resources.to_string())
        .collect();
    let _ = writeln!(
        out,
        "\nscale ({} namespaces)                    {}",
        workload::NAMESPACES,
        sizes.iter().map(|s| format!("{s:>14}")).collect::<String>()
    );
    let row = |out: &mut String, title: &str, value: &dyn Fn(&ScaleFigures) -> String| {
        let _ = writeln!(
            out,
            "  {title:<38}{}",
            results
                .scale
                .iter()
                .map(|f| format!("{:>14}", value(f)))
                .collect::<String>()
        );
    };
    row(&mut out, "kubectl apply (s)", &|f| {
        format!("{:.1}", f.apply_seconds)
    });
    row(&mut out, "apply → all Ready (s)", &|f| {
        format!("{:.1}", f.all_ready_seconds)
    });
    row(&mut out, "creation → Job p50 / p99 (s)", &|f| {
        format!("{:.2} / {:.2}", f.to_job.p50, f.to_job.p99)
    });
    row(&mut out, "creation → Ready p50 / p99 (s)", &|f| {
        format!("{:.1} / {:.1}", f.to_ready.p50, f.to_ready.p99)
    });
    row(&mut out, "operator RSS idle (MiB)", &|f| {
        format!("{:.1}", f.rss_idle_mib)
    });
    row(&mut out, "operator RSS peak (MiB)", &|f| {
        format!("{:.1}", f.rss_peak_mib)
    });
    row(&mut out, "operator RSS after all Ready (MiB)", &|f| {
        format!("{:.1}", f.rss_after_mib)
    });
    row(&mut out, "operator CPU (s)", &|f| {
        format!("{:.2}", f.cpu_seconds)
    });
    row(&mut out, "operator CPU per resource (ms)", &|f| {
        format!("{:.1}", 1000.0 * f.cpu_seconds / f.resources as f64)
    });
    row(&mut out, "Jobs created", &|f| f.jobs_created.to_string());
    row(&mut out, "API reads / writes per resource", &|f| {
        format!("{:.1} / {:.1}", f.reads_per_resource, f.writes_per_resource)
    });

    let s = &results.steady;
    let _ = writeln!(
        out,
        "\nsteady state ({} Ready, {:.0} s idle)\n  writes to its namespaces {}   Lease renewals {}   \
         reads {}   CPU {:.2} s ({:.2}% of a core)   RSS {:.1} MiB",
        s.resources,
        s.idle_seconds,
        s.writes,
        s.lease_writes,
        s.reads,
        s.cpu_seconds,
        s.cpu_percent,
        s.rss_mib
    );
    for example in &s.write_examples {
        let _ = writeln!(out, "    write: {example}");
    }
    let c = &results.storm;
    let _ = writeln!(
        out,
        "\nchange storm ({} of {} ConfigMaps edited at once)\n  all Ready again {:.1} s   \
         edit → Job p50 / p99 {:.2} / {:.2} s   edit → Ready p50 / p99 {:.1} / {:.1} s\n  \
         Jobs created {} (expected {})   old Jobs deleted {}   operator writes {}   CPU {:.2} s",
        c.edited,
        c.resources,
        c.all_ready_seconds,
        c.to_job.p50,
        c.to_job.p99,
        c.to_ready.p50,
        c.to_ready.p99,
        c.jobs_created,
        c.edited,
        c.jobs_deleted,
        c.writes,
        c.cpu_seconds
    );
    out.push_str(&runner_paragraph(&results.runner));
    let st = &results.start;
    let _ = writeln!(
        out,
        "\noperator start ({} resources present)\n  first reconcile {:.2} s   all reconciled \
         {:.2} s   writes {}   CPU {:.2} s   RSS {:.1} MiB (peak {:.1})",
        st.resources,
        st.first_reconcile_seconds,
        st.all_reconciled_seconds,
        st.writes,
        st.cpu_seconds,
        st.rss_mib,
        st.rss_peak_mib
    );
    let _ = writeln!(
        out,
        "\nmeasured in {:.0} s ({:.0} s with builds and set-up)",
        results.measure_seconds, results.wall_seconds
    );
    out
}

/// The runner-overhead figures, as the table and `bench --runner-only` print them.
pub fn runner_paragraph(r: &super::runner::RunnerFigures) -> String {
    format!(
        "\nrunner overhead ({} runs each, {})\n  bare atlas migrate apply {:.0} ms ({:.0}–{:.0})   \
         runner migrate {:.0} ms ({:.0}–{:.0})   +{:.0} ms, ratio {:.2}\n  peak RSS: runner \
         {:.1} MiB, atlas {:.1} MiB\n",
        r.runs,
        r.database,
        r.atlas_median_ms,
        r.atlas_min_ms,
        r.atlas_max_ms,
        r.runner_median_ms,
        r.runner_min_ms,
        r.runner_max_ms,
        r.overhead_ms,
        r.ratio,
        r.runner_peak_rss_mib,
        r.atlas_peak_rss_mib
    )
}
