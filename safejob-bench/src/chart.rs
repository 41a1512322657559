//! Grouped bar charts as PNG files, for `safejob-bench report`.
//!
//! Drawn with plotters' bitmap backend; text is rendered by ab_glyph from DejaVu Sans compiled
//! into the binary (the `dejavu` crate), so no font needs to be installed on the machine.

use std::{path::Path, sync::OnceLock};

use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// The compiled-in font was refused.
    #[error("the compiled-in font could not be loaded")]
    Font,
    /// plotters failed to draw or to write the file.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The PNG.
        path: String,
        /// plotters' error, as text (its error type borrows the backend).
        message: String,
    },
}

/// One chart: bars of `values[series][group]` (missing: no bar), grouped by `groups`.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// The title over the chart.
    pub title: String,
    /// The y axis's label.
    pub y_label: String,
    /// The groups along the x axis.
    pub groups: Vec<String>,
    /// One bar per series in each group, with a legend entry each.
    pub series: Vec<String>,
    /// `values[series][group]`.
    pub values: Vec<Vec<Option<f64>>>,
}

const FONT: &str = "sans-serif";

fn font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

/// A number as a bar's label: at most 3 significant decimals, thousands as `12.3k`.
pub fn label(x: f64) -> String {
    if x.abs() >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Draws `charts` one above the other into the PNG at `path` (1,100 px wide, 450 px per chart).
pub fn draw(path: &Path, charts: &[BarChart]) -> Result<(), ChartError> {
    font()?;
    let name = path.display().to_string();
    let fail = |e: &dyn std::fmt::Display| ChartError::Draw {
        path: name.clone(),
        message: e.to_string(),
    };
    let height = 450 * u32::try_from(charts.len().max(1)).unwrap_or(1);
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let areas = root.split_evenly((charts.len().max(1), 1));
    for (chart, area) in charts.iter().zip(areas) {
        draw_one(chart, &area).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_one(
    c: &BarChart,
    area: &Area<'_>,
) -> Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>> {
    let n_series = c.series.len().max(1);
    // Each group: one slot per series, and one empty slot between groups.
    let slots = i32::try_from(c.groups.len() * (n_series + 1)).unwrap_or(i32::MAX);
    let top = c
        .values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(0.0_f64, f64::max);
    // Headroom above the tallest bar for its label and the legend (upper right).
    let top = if top > 0.0 { top * 1.45 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, (FONT, 22).into_font().style(FontStyle::Bold))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(95)
        .build_cartesian_2d(0..slots.max(1), 0.0..top)?;
    let center = i32::try_from(n_series / 2).unwrap_or(0);
    let stride = i32::try_from(n_series + 1).unwrap_or(1);
    let groups = c.groups.clone();
    let formatter = move |x: &i32| -> String {
        if x.rem_euclid(stride) == center {
            usize::try_from(x / stride)
                .ok()
                .and_then(|g| groups.get(g))
                .cloned()
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(usize::try_from(slots).unwrap_or(0) + 1)
        .x_label_formatter(&formatter)
        .y_desc(c.y_label.as_str())
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for (s, name) in c.series.iter().enumerate() {
        let color = Palette99::pick(s).mix(0.9);
        let slot = |g: usize| i32::try_from(g * (n_series + 1) + s).unwrap_or(0);
        let bars: Vec<(i32, f64)> = c.values[s]
            .iter()
            .enumerate()
            .filter_map(|(g, v)| v.map(|v| (slot(g), v)))
            .collect();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x, v)| Rectangle::new([(x, 0.0), (x + 1, v)], color.filled())),
            )?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart.draw_series(bars.iter().map(|&(x, v)| {
            Text::new(
                label(v),
                (x, v + top * 0.015),
                (FONT, 14).into_font().color(&BLACK),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_labels_stay_short() {
        assert_eq!(label(12_345.0), "12.3k");
        assert_eq!(label(1_234.4), "1234");
        assert_eq!(label(12.34), "12.3");
        assert_eq!(label(2.0), "2.00");
    }

    #[test]
    fn a_chart_with_missing_values_still_draws() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let chart = BarChart {
            title: "t".into(),
            y_label: "y".into(),
            groups: vec!["a".into(), "b".into()],
            series: vec!["s".into(), "r".into()],
            values: vec![vec![Some(1.0), None], vec![None, None]],
        };
        draw(&path, &[chart.clone(), chart]).unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG"));
    }
}
