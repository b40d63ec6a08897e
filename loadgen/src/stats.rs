//! Percentiles and the end-of-run summary (a table, or JSON with `--json`).

use serde::Serialize;
use serde_json::{json, Value};

/// Distribution of a sample, in the sample's unit (milliseconds throughout the load generator).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Dist {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises a sample; `None` when it is empty.
pub fn dist(mut sample: Vec<f64>) -> Option<Dist> {
    if sample.is_empty() {
        return None;
    }
    sample.sort_by(f64::total_cmp);
    let sum: f64 = sample.iter().sum();
    Some(Dist {
        count: sample.len(),
        min: sample[0],
        p50: percentile(&sample, 50.0),
        p99: percentile(&sample, 99.0),
        max: sample[sample.len() - 1],
        mean: sum / sample.len() as f64,
    })
}

/// One named figure of a run.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// What a scenario reports: its figures, any SPEC invariant violations, and notes.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub backend: String,
    pub figures: Vec<Figure>,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, backend: &str) -> Self {
        Self {
            scenario: scenario.into(),
            backend: backend.into(),
            ..Self::default()
        }
    }

    pub fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
        });
    }

    /// Adds `<prefix>_p50`, `_p99`, `_max` (and the count) of a distribution.
    pub fn add_dist(&mut self, prefix: &str, d: Option<Dist>, unit: &'static str) {
        match d {
            Some(d) => {
                self.add(&format!("{prefix}_count"), d.count as f64, "");
                self.add(&format!("{prefix}_p50"), d.p50, unit);
                self.add(&format!("{prefix}_p99"), d.p99, unit);
                self.add(&format!("{prefix}_max"), d.max, unit);
            }
            None => self.notes.push(format!("{prefix}: no samples")),
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn to_json(&self) -> Value {
        let figures: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .map(|f| (f.name.clone(), json!(f.value)))
            .collect();
        let units: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .filter(|f| !f.unit.is_empty())
            .map(|f| (f.name.clone(), json!(f.unit)))
            .collect();
        json!({
            "scenario": self.scenario,
            "backend": self.backend,
            "figures": figures,
            "units": units,
            "violations": self.violations,
            "notes": self.notes,
        })
    }

    /// The human summary: one line per figure, then notes and violations.
    pub fn table(&self) -> String {
        let width = self
            .figures
            .iter()
            .map(|f| f.name.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let mut out = format!("\n== {} on {} ==\n", self.scenario, self.backend);
        for f in &self.figures {
            out.push_str(&format!(
                "{:<width$}  {:>14}  {}\n",
                f.name,
                format_value(f.value),
                f.unit
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if self.violations.is_empty() {
            out.push_str("invariants: OK\n");
        } else {
            out.push_str(&format!(
                "invariants: {} VIOLATION(S)\n",
                self.violations.len()
            ));
            for v in self.violations.iter().take(50) {
                out.push_str(&format!("  - {v}\n"));
            }
        }
        out
    }
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sample: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sample, 50.0), 50.0);
        assert_eq!(percentile(&sample, 99.0), 99.0);
        assert_eq!(percentile(&sample, 100.0), 100.0);
        assert_eq!(percentile(&sample, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn dist_sorts_and_summarises() {
        let d = dist(vec![5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((d.count, d.min, d.p50, d.max), (5, 1.0, 3.0, 5.0));
        assert_eq!(d.p99, 5.0);
        assert_eq!(d.mean, 3.0);
        assert!(dist(Vec::new()).is_none());
    }

    #[test]
    fn report_json_and_table() {
        let mut r = Report::new("place", "sqlite");
        r.add("throughput", 1234.5, "orders/s");
        r.violations.push("user 1: points".into());
        let j = r.to_json();
        assert_eq!(j["figures"]["throughput"], 1234.5);
        assert_eq!(j["units"]["throughput"], "orders/s");
        assert!(r.table().contains("1 VIOLATION"));
    }
}
