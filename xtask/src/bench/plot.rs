//! `target/bench/scale.svg`: time to Ready and the operator's memory against the number of
//! resources (log scale), one panel each.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::scenarios::ScaleFigures;

/// One line of a panel: its legend, colour and points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

pub fn draw(figures: &[ScaleFigures], path: &Path) -> Result<()> {
    if figures.is_empty() {
        return Ok(());
    }
    let sizes: Vec<f64> = figures.iter().map(|f| f.resources as f64).collect();
    let x_min = sizes.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
    let x_max = sizes.iter().copied().fold(0.0, f64::max) * 2.0;

    let root = SVGBackend::new(path, (1100, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);

    let times: [Series; 3] = [
        (
            "kubectl apply → all Ready",
            BLUE,
            points(figures, |f| f.all_ready_seconds),
        ),
        (
            "per resource creation → Ready, p99",
            RED,
            points(figures, |f| f.to_ready.p99),
        ),
        (
            "per resource creation → Ready, p50",
            GREEN,
            points(figures, |f| f.to_ready.p50),
        ),
    ];
    panel(&left, "Time to Ready", "seconds", (x_min, x_max), &times)?;

    let memory: [Series; 3] = [
        ("peak", RED, points(figures, |f| f.rss_peak_mib)),
        (
            "after all Ready",
            BLUE,
            points(figures, |f| f.rss_after_mib),
        ),
        ("idle before", GREEN, points(figures, |f| f.rss_idle_mib)),
    ];
    panel(
        &right,
        "Operator memory (RSS)",
        "MiB",
        (x_min, x_max),
        &memory,
    )?;
    root.present()?;
    Ok(())
}

fn points(figures: &[ScaleFigures], value: impl Fn(&ScaleFigures) -> f64) -> Vec<(f64, f64)> {
    figures
        .iter()
        .map(|f| (f.resources as f64, value(f)))
        .collect()
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    (x_min, x_max): (f64, f64),
    series: &[Series],
) -> Result<()> {
    let y_max = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("AtlasMigrations (10 namespaces)")
        .y_desc(unit)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for (label, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart.draw_series(
            points
                .iter()
                .map(|point| Circle::new(*point, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
