//! The comparison table `rotoscope bench` prints (markdown, to paste into the README), and
//! the same rows as JSON (`--json`).

use serde_json::{json, Value};

use super::{BenchCase, Measurement};

/// One case: our measurement, the references' (torch / TFLite, and OpenVINO, if they ran),
/// and the load before the case.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: BenchCase,
    pub ours: Measurement,
    /// torch (or TFLite for pose) running [`BenchCase::torch_case`].
    pub reference: Option<Measurement>,
    /// OpenVINO running [`BenchCase::openvino_case`].
    pub openvino: Option<Measurement>,
    /// 1-minute load average just before the case started.
    pub load: Option<f64>,
}

/// A reference that measured something (not one that reported its package missing).
fn measured(reference: Option<&Measurement>) -> Option<&Measurement> {
    reference.filter(|r| r.unavailable.is_none() && !r.seconds.is_empty())
}

fn time_ratio(ours: &Measurement, reference: Option<&Measurement>) -> Option<f64> {
    let reference = measured(reference)?.median();
    (reference > 0.0).then(|| ours.median() / reference)
}

fn memory_ratio(ours: &Measurement, reference: Option<&Measurement>) -> Option<f64> {
    let reference = measured(reference)?.peak_rss_bytes;
    (reference > 0).then(|| ours.peak_rss_bytes as f64 / reference as f64)
}

impl Row {
    /// Our median time over the reference's (< 1: we are faster).
    pub fn time_ratio(&self) -> Option<f64> {
        time_ratio(&self.ours, self.reference.as_ref())
    }

    /// Our peak RSS over the reference's.
    pub fn memory_ratio(&self) -> Option<f64> {
        memory_ratio(&self.ours, self.reference.as_ref())
    }

    /// Our median time over OpenVINO's.
    pub fn openvino_time_ratio(&self) -> Option<f64> {
        time_ratio(&self.ours, self.openvino.as_ref())
    }

    /// Our peak RSS over OpenVINO's.
    pub fn openvino_memory_ratio(&self) -> Option<f64> {
        memory_ratio(&self.ours, self.openvino.as_ref())
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

/// A reference's median and peak RSS cells: `not run` without one, `not installed` when
/// its package is missing, `–` where it has no counterpart (OpenVINO for HED, pose, frames).
fn reference_cells(reference: Option<&Measurement>, applies: bool) -> (String, String) {
    match reference {
        _ if !applies => ("–".to_string(), "–".to_string()),
        None => ("not run".to_string(), "–".to_string()),
        Some(r) if r.unavailable.is_some() => ("not installed".to_string(), "–".to_string()),
        Some(r) => {
            let precision = r
                .inference_precision
                .as_deref()
                .map_or(String::new(), |p| format!(" ({p})"));
            (
                format!("{}{precision}", seconds(r.median())),
                gib(r.peak_rss_bytes),
            )
        }
    }
}

/// A markdown table: case, our median, the torch reference's median, time ratio, OpenVINO's
/// median (with the inference precision it chose) and time ratio, the peak RSS of all three
/// and our ratios to them, and the load before the case.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | ours (median) | torch (median) | time ours/torch | OpenVINO (median) | time ours/OV | peak RSS ours (GiB) | peak RSS torch (GiB) | RSS ours/torch | peak RSS OV (GiB) | RSS ours/OV | load (1 min) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let (ref_time, ref_rss) = reference_cells(row.reference.as_ref(), true);
        let (ov_time, ov_rss) =
            reference_cells(row.openvino.as_ref(), row.case.openvino_case().is_some());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.case.description(),
            seconds(row.ours.median()),
            ref_time,
            ratio(row.time_ratio()),
            ov_time,
            ratio(row.openvino_time_ratio()),
            gib(row.ours.peak_rss_bytes),
            ref_rss,
            ratio(row.memory_ratio()),
            ov_rss,
            ratio(row.openvino_memory_ratio()),
            row.load.map_or("–".to_string(), |l| format!("{l:.1}")),
        ));
    }
    out
}

/// The rows as one JSON object (`rotoscope bench --json`): per case its description, each
/// side's measurement as its child printed it (`null` where it did not run) and the ratios.
pub fn json_report(rows: &[Row], runs: usize, cpus: usize) -> Value {
    let cases: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "case": row.case.name(),
                "description": row.case.description(),
                "ours": row.ours,
                "ours_median_seconds": row.ours.median(),
                "torch_case": row.case.torch_case().name(),
                "torch": row.reference,
                "torch_median_seconds": measured(row.reference.as_ref()).map(Measurement::median),
                "time_ours_over_torch": row.time_ratio(),
                "rss_ours_over_torch": row.memory_ratio(),
                "openvino_case": row.case.openvino_case().map(BenchCase::name),
                "openvino": row.openvino,
                "openvino_median_seconds": measured(row.openvino.as_ref()).map(Measurement::median),
                "time_ours_over_openvino": row.openvino_time_ratio(),
                "rss_ours_over_openvino": row.openvino_memory_ratio(),
                "load_1min": row.load,
            })
        })
        .collect();
    json!({"runs": runs, "cpus": cpus, "cases": cases})
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
        let openvino = Measurement {
            inference_precision: Some("bf16".into()),
            ..measurement(&[3.5], 2 << 30)
        };
        let rows = [
            Row {
                case: BenchCase::Unet64,
                ours: measurement(&[6.0, 8.0, 7.0], 3 << 30),
                reference: Some(measurement(&[7.0, 7.0, 9.0], 4 << 30)),
                openvino: Some(openvino),
                load: Some(2.04),
            },
            Row {
                case: BenchCase::Pose,
                ours: measurement(&[0.02], 1 << 29),
                reference: None,
                openvino: None,
                load: None,
            },
        ];
        let table = markdown_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[2],
            "| UNet step, batch 2, 64² latents | 7.00 s | 7.00 s | 1.00× | 3.50 s (bf16) | 2.00× | 3.00 | 4.00 | 0.75× | 2.00 | 1.50× | 2.0 |"
        );
        // No OpenVINO counterpart for pose: a dash, not "not run".
        assert_eq!(
            lines[3],
            "| pose+hands+face, tracked, per 512² frame | 20.0 ms | not run | – | – | – | 0.50 | – | – | – | – | – |"
        );
    }

    #[test]
    fn a_missing_openvino_package_is_reported_not_measured() {
        let missing = Measurement {
            unavailable: Some("openvino is not importable".into()),
            ..Default::default()
        };
        let row = Row {
            case: BenchCase::VaeDecode,
            ours: measurement(&[8.0], 1 << 30),
            reference: None,
            openvino: Some(missing),
            load: None,
        };
        assert_eq!(row.openvino_time_ratio(), None);
        assert_eq!(row.openvino_memory_ratio(), None);
        let table = markdown_table(std::slice::from_ref(&row));
        assert!(
            table
                .lines()
                .nth(2)
                .unwrap()
                .contains("| not installed | – |"),
            "{table}"
        );
        let json = json_report(&[row], 1, 2);
        let case = &json["cases"][0];
        assert_eq!(case["openvino_case"], "vae-decode");
        assert!(case["openvino_median_seconds"].is_null());
        assert_eq!(
            case["openvino"]["unavailable"],
            "openvino is not importable"
        );
    }

    #[test]
    fn frame_rows_compare_with_the_torch_unet_step() {
        let row = Row {
            case: BenchCase::FrameFast,
            ours: measurement(&[10.0], 5 << 30),
            reference: Some(measurement(&[6.25], 4 << 30)),
            openvino: None,
            load: Some(1.0),
        };
        assert_eq!(row.time_ratio(), Some(1.6));
        let json = json_report(&[row], 1, 2);
        let case = &json["cases"][0];
        assert_eq!(case["torch_case"], "unet-64");
        assert!(case["openvino_case"].is_null());
        assert_eq!(case["time_ours_over_torch"], 1.6);
        assert_eq!(case["rss_ours_over_torch"], 1.25);
        assert_eq!(json["runs"], 1);
    }
}
