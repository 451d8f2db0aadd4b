//! `rerank-node eval` end to end: the real binary, its per-mode child processes, and the JSON
//! report, on a small set against the all-MiniLM-L6-v2 bi-encoder; and bad data rejected with
//! the line named, before any model is loaded.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

const SMALL_SET: &str = r#"{"query": "how do bees make honey", "documents": ["Bees turn flower nectar into honey by adding enzymes and fanning it until most of the water evaporates.", "Honeybees pollinate apple orchards.", "The stock market fell sharply on Tuesday.", "Wasps can sting more than once.", "A spelling bee is a competition in which contestants spell words aloud.", "Beeswax caps each cell of honey once it is ripe."], "relevant": [0, 5]}

{"query": "what causes earthquakes", "documents": ["Earthquakes happen when stress built up along a fault is released and the rocks slip.", "Tsunamis often follow large undersea earthquakes.", "Bake the bread for forty minutes.", "The plates of the Earth's crust move a few centimetres a year.", "Chess is played on a board of sixty-four squares.", "Seismographs record the shaking of the ground."]}
{"query": "tips for falling asleep faster", "documents": ["Go to bed at the same time every night and keep the bedroom dark and cool.", "Caffeine late in the day makes it harder to fall asleep.", "The airport has two runways.", "Adults need seven to nine hours of sleep.", "Put your laptop to sleep by closing the lid."]}
"#;

fn write_data(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("writes the data file");
    path
}

fn eval(args: &[&str]) -> Output {
    Command::new(common::node_binary())
        .current_dir(common::workspace_root())
        // Info logs must go to stderr: stdout is the JSON report (and each child's run).
        .env("RUST_LOG", "info")
        .arg("eval")
        .args(args)
        .output()
        .expect("runs rerank-node eval")
}

fn row<'a>(report: &'a serde_json::Value, mode: &str) -> &'a serde_json::Value {
    report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["mode"] == mode))
        .unwrap_or_else(|| panic!("no {mode} row in {report:#}"))
}

fn number(row: &serde_json::Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {row:#}"))
}

#[test]
fn reports_int8_against_f32_on_minilm() {
    let model = common::minilm_dir();
    let data = write_data("eval-small.jsonl", SMALL_SET);
    let output = eval(&[
        "--model",
        model.to_str().expect("utf-8 path"),
        "--data",
        data.to_str().expect("utf-8 path"),
        "--modes",
        "none,int8",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "eval failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON report ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(report["kind"], "bi-encoder");
    assert_eq!(report["queries"], 3);
    assert_eq!(report["pairs"], 17);
    assert!(report["scores_compared"]
        .as_str()
        .is_some_and(|s| s.contains("RerankBackend::score")));
    assert_eq!(report["rows"].as_array().map(Vec::len), Some(2));

    let f32_row = row(&report, "none");
    assert_eq!(number(f32_row, "max_abs_diff"), 0.0);
    assert_eq!(number(f32_row, "mean_abs_diff"), 0.0);
    assert_eq!(number(f32_row, "spearman_mean"), 1.0);
    assert_eq!(number(f32_row, "top1_agreement"), 1.0);
    assert_eq!(number(f32_row, "top5_agreement"), 1.0);
    assert_eq!(number(f32_row, "weight_pct_of_f32"), 100.0);

    let int8 = row(&report, "int8");
    assert_eq!(int8["in_effect"], "int8");
    let rho = number(int8, "spearman_mean");
    assert!(rho >= 0.99, "int8 mean rho {rho}");
    assert!(
        number(int8, "max_abs_diff") > 0.0,
        "int8 changes the scores somewhat"
    );
    assert!(number(int8, "max_abs_diff") < 0.1);
    assert!(number(int8, "weight_pct_of_f32") < 50.0);
    for r in [f32_row, int8] {
        for key in [
            "top1_agreement",
            "top5_agreement",
            "weight_mb",
            "pairs_per_s",
            "peak_rss_mb",
        ] {
            assert!(number(r, key) > 0.0, "{key} in {r:#}");
        }
    }
}

#[test]
fn bad_data_fails_naming_the_line() {
    let data = write_data(
        "eval-bad.jsonl",
        "{\"query\": \"q\", \"documents\": [\"a\"]}\n\n{\"query\": \"q\", \"documents\": \"a\"}\n",
    );
    // Data is checked before any model is built or loaded: no model needed here.
    let output = eval(&[
        "--model",
        "does/not/exist",
        "--data",
        data.to_str().expect("utf-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("eval-bad.jsonl, line 3: not a JSON query record: invalid type"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = eval(&["--data", "no/such/file.jsonl"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot read no/such/file.jsonl"),
        "{stderr}"
    );
}

#[test]
fn unknown_modes_are_refused() {
    let output = eval(&["--modes", "none,int4"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("int4"), "{stderr}");
}
