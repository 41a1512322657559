//! `safejob-bench report`: the JSON lines of `queue` runs, gathered into one JSON file and PNG
//! charts for docs/ (see docs/BENCHMARKS.md, "Report").
//!
//! ```text
//! safejob-bench queue --url … > target/bench/pg-w4-r1.jsonl   # as many runs as wanted
//! safejob-bench report --out docs/bench target/bench/*.jsonl
//! ```
//!
//! Every `queue` step line (`"bench":"queue"`) joins a series named by its system and mode
//! (`safejob guarded`, `safejob plain`, `river`, `fang`) and a group named by backend, worker
//! count and retention (`postgres, 4 workers, keep`); repeated runs of the same step give the median of each figure.
//! `queue_tables` lines are copied as they are. Other lines (targets, ratios) are skipped. The
//! output, in `--out`:
//!
//! * `queue.json` — one entry per (group, series, step): runs, median jobs/s, median commits,
//!   statements and WAL bytes per job, the load range, what counted them; and the tables;
//! * `queue_throughput.png` — the drain's jobs/s per group and series;
//! * `queue_per_job_<backend>.png` — the drain's commits, statements and WAL bytes per job, one
//!   file per backend (a SQLite WAL frame is a whole page, a PostgreSQL WAL record a row's
//!   change: the scales differ too much to share an axis).

use std::{
    fs,
    io::{self, BufRead},
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::chart::{self, BarChart, ChartError};

/// Arguments of `safejob-bench report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Files of JSON lines printed by `safejob-bench queue` (`-` for standard input).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Folder to write `queue.json` and the PNG charts into (created if missing).
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// An input could not be read.
    #[error("reading {path}")]
    Read {
        /// The input.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A line is not a JSON object.
    #[error("{path}:{line}: not a JSON object")]
    NotJson {
        /// The input.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A `queue` line lacks a field the report needs.
    #[error("{path}:{line}: a queue line without {field:?}")]
    MissingField {
        /// The input.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// No `queue` line in any input.
    #[error("no queue step lines in the inputs: give files printed by `safejob-bench queue`")]
    Empty,
    /// An output could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] ChartError),
}

/// One step line of one run, as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `postgres`, `sqlite`, `mysql`.
    pub backend: String,
    /// `postgres, 4 workers, keep`: backend, workers and retention.
    pub group: String,
    /// `safejob guarded`, `safejob plain`, `river`, `fang`.
    pub series: String,
    /// `enqueue_single`, `enqueue_batched`, `drain`.
    pub op: String,
    /// Retention of the run (`keep`, `delete`; `null` from runs before the switch).
    pub retention: Value,
    /// Jobs per second.
    pub jobs_per_s: f64,
    /// Per-job counts, where counted.
    pub commits_per_job: Option<f64>,
    /// Statements per job.
    pub statements_per_job: Option<f64>,
    /// WAL bytes per job.
    pub wal_bytes_per_job: Option<f64>,
    /// The machine's load when the line was printed.
    pub load1: Option<f64>,
    /// What counted the per-job figures.
    pub counted_by: Value,
}

impl Step {
    /// Reads a `queue` line's fields; `Err(field)` names one that is missing.
    pub fn of(v: &Value) -> Result<Step, &'static str> {
        let text = |k: &'static str| v[k].as_str().ok_or(k);
        let backend = text("backend")?;
        let workers = v["workers"].as_u64().ok_or("workers")?;
        let system = text("system")?;
        let series = match (system, v["guarded"].as_bool()) {
            ("safejob", Some(true)) => "safejob guarded".to_owned(),
            ("safejob", _) => "safejob plain".to_owned(),
            (other, _) => other.to_owned(),
        };
        let series = match v["ledger"].as_bool() {
            Some(false) => format!("{series} (no ledger)"),
            _ => series,
        };
        let retention = match v["retention"].as_str() {
            Some(r) => format!(", {r}"),
            None => String::new(),
        };
        Ok(Step {
            backend: backend.to_owned(),
            group: format!(
                "{backend}, {workers} worker{}{retention}",
                if workers == 1 { "" } else { "s" }
            ),
            series,
            op: text("op")?.to_owned(),
            retention: v["retention"].clone(),
            jobs_per_s: v["jobs_per_s"].as_f64().ok_or("jobs_per_s")?,
            commits_per_job: v["commits_per_job"].as_f64(),
            statements_per_job: v["statements_per_job"].as_f64(),
            wal_bytes_per_job: v["wal_bytes_per_job"].as_f64(),
            load1: v["load1"].as_f64(),
            counted_by: v["counted_by"].clone(),
        })
    }
}

/// The median of `xs` (the mean of the middle two for an even count); `None` for none.
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The lines of every input: the queue steps and the table lines.
pub fn read(inputs: &[PathBuf]) -> Result<(Vec<Step>, Vec<Value>), ReportError> {
    let mut steps = Vec::new();
    let mut tables = Vec::new();
    for path in inputs {
        let read_err = |source| ReportError::Read {
            path: path.clone(),
            source,
        };
        let text = if path == Path::new("-") {
            let mut s = String::new();
            for l in io::stdin().lock().lines() {
                s.push_str(&l.map_err(read_err)?);
                s.push('\n');
            }
            s
        } else {
            fs::read_to_string(path).map_err(read_err)?
        };
        parse_lines(path, &text, &mut steps, &mut tables)?;
    }
    if steps.is_empty() {
        return Err(ReportError::Empty);
    }
    Ok((steps, tables))
}

/// Parses one input's lines into `steps` and `tables`.
pub fn parse_lines(
    path: &Path,
    text: &str,
    steps: &mut Vec<Step>,
    tables: &mut Vec<Value>,
) -> Result<(), ReportError> {
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(l).map_err(|_| ReportError::NotJson {
            path: path.to_owned(),
            line: i + 1,
        })?;
        if !v.is_object() {
            return Err(ReportError::NotJson {
                path: path.to_owned(),
                line: i + 1,
            });
        }
        match v["bench"].as_str() {
            Some("queue") => {
                steps.push(Step::of(&v).map_err(|field| ReportError::MissingField {
                    path: path.to_owned(),
                    line: i + 1,
                    field,
                })?)
            }
            Some("queue_tables") => tables.push(v),
            _ => {}
        }
    }
    Ok(())
}

/// The order things are first seen in.
fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.iter().any(|o| o == i) {
            out.push(i.to_owned());
        }
    }
    out
}

/// The medians of every (group, series, op, retention), in the order first seen.
pub fn summarize(steps: &[Step]) -> Vec<Value> {
    let mut keys: Vec<(&str, &str, &str, &Value, &str)> = Vec::new();
    for s in steps {
        let k = (
            s.group.as_str(),
            s.series.as_str(),
            s.op.as_str(),
            &s.retention,
            s.backend.as_str(),
        );
        if !keys
            .iter()
            .any(|o| o.0 == k.0 && o.1 == k.1 && o.2 == k.2 && o.3 == k.3)
        {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(group, series, op, retention, backend)| {
            let runs: Vec<&Step> = steps
                .iter()
                .filter(|s| {
                    s.group == group
                        && s.series == series
                        && s.op == op
                        && &s.retention == retention
                })
                .collect();
            let med = |f: fn(&Step) -> Option<f64>| {
                let xs: Vec<f64> = runs.iter().filter_map(|s| f(s)).collect();
                // A figure missing from some runs is not a median of the others.
                if xs.len() == runs.len() {
                    median(xs).map(round3)
                } else {
                    None
                }
            };
            let loads: Vec<f64> = runs.iter().filter_map(|s| s.load1).collect();
            let load = match (
                loads.iter().copied().reduce(f64::min),
                loads.iter().copied().reduce(f64::max),
            ) {
                (Some(lo), Some(hi)) => json!([lo, hi]),
                _ => Value::Null,
            };
            json!({
                "backend": backend,
                "group": group,
                "series": series,
                "op": op,
                "retention": retention,
                "runs": runs.len(),
                "jobs_per_s": med(|s| Some(s.jobs_per_s)),
                "commits_per_job": med(|s| s.commits_per_job),
                "statements_per_job": med(|s| s.statements_per_job),
                "wal_bytes_per_job": med(|s| s.wal_bytes_per_job),
                "load1": load,
                "counted_by": runs[0].counted_by,
            })
        })
        .collect()
}

/// A bar chart of `field` of the drain (on `backend` only, if given): one group of bars per
/// group, one bar per series.
fn drain_chart(
    summary: &[Value],
    backend: Option<&str>,
    field: &str,
    title: &str,
    y_label: &str,
) -> BarChart {
    let drains: Vec<&Value> = summary
        .iter()
        .filter(|v| v["op"] == "drain" && backend.is_none_or(|b| v["backend"] == b))
        .collect();
    let groups = ordered(drains.iter().filter_map(|v| v["group"].as_str()));
    let series = ordered(drains.iter().filter_map(|v| v["series"].as_str()));
    let values = series
        .iter()
        .map(|s| {
            groups
                .iter()
                .map(|g| {
                    drains
                        .iter()
                        .find(|v| v["group"] == g.as_str() && v["series"] == s.as_str())
                        .and_then(|v| v[field].as_f64())
                })
                .collect()
        })
        .collect();
    BarChart {
        title: title.to_owned(),
        y_label: y_label.to_owned(),
        groups,
        series,
        values,
    }
}

/// Writes `queue.json`, `queue_throughput.png` and a `queue_per_job_<backend>.png` per backend
/// into `out`; returns the paths written.
pub fn write(
    steps: &[Step],
    tables: &[Value],
    inputs: &[PathBuf],
    out: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ReportError::Write { path, source }
    };
    fs::create_dir_all(out).map_err(write_err(out))?;
    let summary = summarize(steps);
    let doc = json!({
        "inputs": inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "figures": summary,
        "tables": tables,
    });
    let json_path = out.join("queue.json");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| ReportError::Write {
        path: json_path.clone(),
        source: io::Error::other(e),
    })?;
    fs::write(&json_path, text + "\n").map_err(write_err(&json_path))?;

    let throughput = out.join("queue_throughput.png");
    chart::draw(
        &throughput,
        &[drain_chart(
            &summary,
            None,
            "jobs_per_s",
            "Drain throughput (median of runs)",
            "jobs/s",
        )],
    )?;
    let mut written = vec![json_path, throughput];
    let backends = ordered(
        summary
            .iter()
            .filter(|v| v["op"] == "drain")
            .filter_map(|v| v["backend"].as_str()),
    );
    for backend in backends {
        let b = Some(backend.as_str());
        let path = out.join(format!("queue_per_job_{backend}.png"));
        chart::draw(
            &path,
            &[
                drain_chart(
                    &summary,
                    b,
                    "commits_per_job",
                    &format!("{backend}, drain: commits per job"),
                    "commits/job",
                ),
                drain_chart(
                    &summary,
                    b,
                    "statements_per_job",
                    &format!("{backend}, drain: statements per job (no bar: not counted)"),
                    "statements/job",
                ),
                drain_chart(
                    &summary,
                    b,
                    "wal_bytes_per_job",
                    &format!("{backend}, drain: WAL bytes per job"),
                    "bytes/job",
                ),
            ],
        )?;
        written.push(path);
    }
    Ok(written)
}

/// Runs `safejob-bench report`.
pub fn run(args: &ReportArgs) -> Result<(), ReportError> {
    let (steps, tables) = read(&args.inputs)?;
    for path in write(&steps, &tables, &args.inputs, &args.out)? {
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"
{"bench":"queue","system":"safejob","backend":"postgres","op":"drain","guarded":true,"effects":"none","jobs":200,"workers":4,"batch":null,"jobs_per_s":1000.0,"elapsed_s":0.2,"passes":2,"ledger":true,"load1":1.5,"retention":"keep","commits":400,"rollbacks":0,"statements":1000,"wal_bytes":80000,"commits_per_job":2.0,"statements_per_job":5.0,"wal_bytes_per_job":400.0,"counted_by":{"commits":"pg_stat_database.xact_commit (this database)","statements":"client","wal_bytes":"pg_current_wal_lsn delta (server-wide)"}}
{"bench":"queue","system":"river","backend":"postgres","op":"drain","guarded":false,"effects":null,"jobs":200,"workers":4,"batch":null,"jobs_per_s":500.0,"elapsed_s":0.4,"passes":1,"ledger":null,"load1":2.5,"retention":"keep","commits":100,"rollbacks":0,"statements":null,"wal_bytes":60000,"commits_per_job":0.5,"statements_per_job":null,"wal_bytes_per_job":300.0,"counted_by":{"commits":"pg_stat_database.xact_commit (this database)","statements":null,"wal_bytes":"pg_current_wal_lsn delta (server-wide)"}}
{"bench":"queue_tables","system":"river","backend":"postgres","database":"b_river_1","retention":"keep","tables":[],"total_rows":0,"total_bytes":0,"load1":null}
{"bench":"queue_targets","backend":"postgres","workers":4}
"#;

    const SECOND_RUN: &str = r#"{"bench":"queue","system":"safejob","backend":"postgres","op":"drain","guarded":true,"effects":"none","jobs":200,"workers":4,"batch":null,"jobs_per_s":3000.0,"elapsed_s":0.2,"passes":2,"ledger":true,"load1":0.5,"retention":"keep","commits_per_job":4.0,"statements_per_job":6.0,"wal_bytes_per_job":500.0,"counted_by":{}}"#;

    fn parsed() -> (Vec<Step>, Vec<Value>) {
        let (mut steps, mut tables) = (Vec::new(), Vec::new());
        parse_lines(Path::new("a"), LINES, &mut steps, &mut tables).unwrap();
        parse_lines(Path::new("b"), SECOND_RUN, &mut steps, &mut tables).unwrap();
        (steps, tables)
    }

    #[test]
    fn medians_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    // Catches: runs averaged instead of their median taken, and a per-job count missing from a
    // run (not counted) turned into a median of the others or a 0.
    #[test]
    fn runs_of_one_step_give_their_medians() {
        let (steps, tables) = parsed();
        assert_eq!(steps.len(), 3);
        assert_eq!(tables.len(), 1);
        let s = summarize(&steps);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["group"], "postgres, 4 workers, keep");
        assert_eq!(s[0]["backend"], "postgres");
        assert_eq!(s[0]["series"], "safejob guarded");
        assert_eq!(s[0]["runs"], 2);
        assert_eq!(s[0]["jobs_per_s"], 2000.0);
        assert_eq!(s[0]["commits_per_job"], 3.0);
        assert_eq!(s[0]["wal_bytes_per_job"], 450.0);
        assert_eq!(s[0]["load1"], json!([0.5, 1.5]));
        assert_eq!(s[1]["series"], "river");
        assert_eq!(
            s[1]["statements_per_job"],
            Value::Null,
            "not counted is not zero"
        );
    }

    // Catches: a malformed line skipped silently (a report missing a run without saying so).
    #[test]
    fn bad_lines_are_typed_errors() {
        let (mut steps, mut tables) = (Vec::new(), Vec::new());
        let e = parse_lines(Path::new("x"), "\n{oops", &mut steps, &mut tables).unwrap_err();
        assert!(matches!(e, ReportError::NotJson { line: 2, .. }), "{e}");
        let e = parse_lines(
            Path::new("x"),
            r#"{"bench":"queue","system":"fang"}"#,
            &mut steps,
            &mut tables,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ReportError::MissingField {
                    field: "backend",
                    ..
                }
            ),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jsonl");
        fs::write(&empty, "{\"bench\":\"ratio\"}\n").unwrap();
        assert!(matches!(read(&[empty]), Err(ReportError::Empty)));
    }

    #[test]
    fn the_report_writes_its_json_and_a_png_per_chart() {
        let (steps, tables) = parsed();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bench");
        let written = write(&steps, &tables, &[PathBuf::from("a")], &out).unwrap();
        // queue.json, the throughput, one per-job chart (one backend in the input).
        assert_eq!(written.len(), 3);
        let doc: Value =
            serde_json::from_str(&fs::read_to_string(out.join("queue.json")).unwrap()).unwrap();
        assert_eq!(doc["inputs"], json!(["a"]));
        assert_eq!(doc["figures"], Value::Array(summarize(&steps)));
        assert_eq!(doc["tables"][0]["database"], "b_river_1");
        for png in ["queue_throughput.png", "queue_per_job_postgres.png"] {
            let bytes = fs::read(out.join(png)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png} is a PNG");
            assert!(
                bytes.len() > 5_000,
                "{png} has something drawn: {}",
                bytes.len()
            );
        }
    }
}
