//! The lab's curves as one SVG: goodput and p99 against offered load, and
//! the step scenario's time series.

use std::{error::Error, path::Path};

use backpressure_lab::{
    scenarios::{Lab, Row},
    sim::Report,
    stacks::{Queue, Stack},
};
use plotters::prelude::*;

fn color(stack: Stack) -> RGBColor {
    match stack {
        Stack::None => RGBColor(150, 150, 150),
        Stack::Tower | Stack::TowerMistuned(_) => RGBColor(214, 39, 40),
        Stack::Fixed => RGBColor(31, 119, 180),
        Stack::Adaptive => RGBColor(44, 160, 44),
        Stack::Breaker => RGBColor(148, 103, 189),
        Stack::Queue(q) => match q {
            Queue::Fifo => RGBColor(255, 127, 14),
            Queue::Lifo => RGBColor(140, 86, 75),
            Queue::Codel => RGBColor(227, 119, 194),
            Queue::CodelLifo => RGBColor(23, 190, 207),
            Queue::Timed => RGBColor(188, 189, 34),
        },
    }
}

/// A log-scale load axis with a few labels and faint minor lines.
macro_rules! load_mesh {
    ($chart:expr, $y:expr) => {
        $chart
            .configure_mesh()
            .light_line_style(RGBColor(242, 242, 242))
            .x_labels(8)
            .x_label_formatter(&|x| format!("{x}x"))
            .x_desc("offered load (x capacity)")
            .y_desc($y)
            .draw()
    };
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Draws `plain` (a load sweep), `step` and, if any, `capacity` rows into
/// the SVG at `path`.
pub(crate) fn draw(
    path: &Path,
    lab: &Lab,
    plain: &[Row],
    step: &[Row],
    capacity: &[Row],
) -> Result<(), Box<dyn Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let rows = if capacity.is_empty() { 2 } else { 3 };
    let root = SVGBackend::new(path, (1200, 420 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((rows, 2));
    let stacks: Vec<Stack> = {
        let mut s: Vec<Stack> = plain.iter().map(|r| r.stack).collect();
        s.dedup();
        s.sort_by_key(|s| s.name());
        s.dedup();
        s
    };
    let max_load = plain.iter().map(load_of).fold(1.0, f64::max) * 1.5;
    let min_load = plain.iter().map(load_of).fold(f64::MAX, f64::min).min(1.0) / 1.5;

    let goodput = |r: &Report| 100.0 * r.goodput() / lab.capacity;
    let p99 = |r: &Report| r.quantile(0.99).as_secs_f64() * 1000.0;
    let max_p99 = plain.iter().map(|r| p99(&r.report)).fold(10.0, f64::max);
    let sweep = Sweep { plain, stacks: &stacks, loads: min_load..max_load };
    sweep.chart(&areas[0], "goodput vs offered load", "goodput (% of capacity)", 110.0, goodput)?;
    sweep.chart(
        &areas[1],
        "p99 latency of successes vs offered load",
        "p99 (ms)",
        max_p99 * 1.1,
        p99,
    )?;

    time_series(&areas[2], &areas[3], "step 1x -> 10x -> 1x", lab, step)?;
    if !capacity.is_empty() {
        time_series(&areas[4], &areas[5], "backend 3x slower 5-15 s", lab, capacity)?;
    }
    root.present()?;
    Ok(())
}

/// A plain row's offered load, from its label ("5x").
fn load_of(r: &Row) -> f64 {
    r.label.trim_end_matches('x').parse::<f64>().unwrap_or(1.0)
}

/// The load sweep: one line per stack against offered load.
struct Sweep<'r> {
    plain: &'r [Row],
    stacks: &'r [Stack],
    loads: std::ops::Range<f64>,
}

impl Sweep<'_> {
    fn chart(
        &self,
        area: &Area<'_>,
        title: &str,
        y_desc: &str,
        y_max: f64,
        value: impl Fn(&Report) -> f64,
    ) -> Result<(), Box<dyn Error>> {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(self.loads.clone().log_scale(), 0f64..y_max)?;
        load_mesh!(chart, y_desc)?;
        for &stack in self.stacks {
            let points: Vec<(f64, f64)> = self
                .plain
                .iter()
                .filter(|r| r.stack == stack)
                .map(|r| (load_of(r), value(&r.report)))
                .collect();
            let c = color(stack);
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
                .label(stack.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        legend(&mut chart)
    }
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> Result<(), Box<dyn Error>>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

fn time_series(
    goodput_area: &Area<'_>,
    p99_area: &Area<'_>,
    title: &str,
    lab: &Lab,
    rows: &[Row],
) -> Result<(), Box<dyn Error>> {
    let width = 0.5f32;
    let seconds = rows.iter().map(|r| r.report.seconds).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(goodput_area)
        .caption(format!("{title}: goodput per {width} s"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..seconds, 0f64..110f64)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(242, 242, 242))
        .x_desc("time (s)")
        .y_desc("goodput (% of capacity)")
        .draw()?;
    for r in rows {
        let c = color(r.stack);
        let points: Vec<(f64, f64)> = r
            .report
            .series(width)
            .iter()
            .map(|i| (f64::from(i.start + width / 2.0), 100.0 * i.goodput / lab.capacity))
            .collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(r.stack.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart)?;

    let max_p99 = rows
        .iter()
        .flat_map(|r| r.report.series(width))
        .map(|i| i.p99.as_secs_f64() * 1000.0)
        .fold(10.0, f64::max);
    let mut chart = ChartBuilder::on(p99_area)
        .caption(format!("{title}: p99 and the adaptive limit"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .right_y_label_area_size(45)
        .build_cartesian_2d(0f64..seconds, 0f64..max_p99 * 1.1)?
        .set_secondary_coord(0f64..seconds, 0f64..60f64);
    chart
        .configure_mesh()
        .light_line_style(RGBColor(242, 242, 242))
        .x_desc("time (s)")
        .y_desc("p99 (ms)")
        .draw()?;
    chart.configure_secondary_axes().y_desc("concurrency limit").draw()?;
    for r in rows {
        let c = color(r.stack);
        let s = r.report.series(width);
        // No successes in an interval: no p99 to draw (not a zero).
        let points: Vec<(f64, f64)> = s
            .iter()
            .filter(|i| i.goodput > 0.0)
            .map(|i| (f64::from(i.start + width / 2.0), i.p99.as_secs_f64() * 1000.0))
            .collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(format!("{} p99", r.stack.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        if r.stack == Stack::Adaptive {
            let limits: Vec<(f64, f64)> =
                r.report.limits.iter().map(|&(t, l)| (f64::from(t), l as f64)).collect();
            let dashed = c.mix(0.6).stroke_width(1);
            chart
                .draw_secondary_series(LineSeries::new(limits, dashed))?
                .label("adaptive limit (right axis)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], dashed));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
