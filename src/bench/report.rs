//! The comparison table `rotoscope bench` prints (markdown, to paste into the README).

use super::{BenchCase, Measurement};

/// One case: our measurement, the reference's (if it ran), and the load before the case.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: BenchCase,
    pub ours: Measurement,
    pub reference: Option<Measurement>,
    /// 1-minute load average just before the case started.
    pub load: Option<f64>,
}

impl Row {
    /// Our median time over the reference's (< 1: we are faster).
    pub fn time_ratio(&self) -> Option<f64> {
        let reference = self.reference.as_ref()?.median();
        (reference > 0.0).then(|| self.ours.median() / reference)
    }

    /// Our peak RSS over the reference's.
    pub fn memory_ratio(&self) -> Option<f64> {
        let reference = self.reference.as_ref()?.peak_rss_bytes;
        (reference > 0).then(|| self.ours.peak_rss_bytes as f64 / reference as f64)
    }
}

/// The median (the mean of the middle two for an even count); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1u64 << 30) as f64)
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("–".to_string(), |r| format!("{r:.2}×"))
}

/// A markdown table: case, our median, the reference's median, time ratio, both peak RSS, the
/// memory ratio and the load before the case.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | ours (median) | reference (median) | time ours/ref | peak RSS ours (GiB) | peak RSS ref (GiB) | RSS ours/ref | load (1 min) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let (ref_time, ref_rss) = match &row.reference {
            Some(r) => (seconds(r.median()), gib(r.peak_rss_bytes)),
            None => ("not run".to_string(), "–".to_string()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.case.description(),
            seconds(row.ours.median()),
            ref_time,
            ratio(row.time_ratio()),
            gib(row.ours.peak_rss_bytes),
            ref_rss,
            ratio(row.memory_ratio()),
            row.load.map_or("–".to_string(), |l| format!("{l:.1}")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(seconds: &[f64], rss: u64) -> Measurement {
        Measurement {
            case: "unet-64".into(),
            seconds: seconds.to_vec(),
            peak_rss_bytes: rss,
            ..Default::default()
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn table_has_ratios_and_marks_a_missing_reference() {
        let rows = [
            Row {
                case: BenchCase::Unet64,
                ours: measurement(&[6.0, 8.0, 7.0], 3 << 30),
                reference: Some(measurement(&[7.0, 7.0, 9.0], 4 << 30)),
                load: Some(2.04),
            },
            Row {
                case: BenchCase::Pose,
                ours: measurement(&[0.02], 1 << 29),
                reference: None,
                load: None,
            },
        ];
        let table = markdown_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[2],
            "| UNet step, batch 2, 64² latents | 7.00 s | 7.00 s | 1.00× | 3.00 | 4.00 | 0.75× | 2.0 |"
        );
        assert_eq!(
            lines[3],
            "| pose+hands+face, tracked, per 512² frame | 20.0 ms | not run | – | 0.50 | – | – | – |"
        );
    }
}
