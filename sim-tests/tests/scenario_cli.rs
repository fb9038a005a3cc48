//! The `nefele-sim` binary's contract: bad flags and bad scenario files exit
//! with code 2 and a message naming the flag, or the file, line and field, and leave
//! no file behind; `--report` writes the documented JSON fields; `--trace` writes
//! valid Chrome trace-event JSON, or JSON lines for a `.jsonl` name; `--html` writes one
//! self-contained page of plots; a path that is a pipe or a device is written in place.
//!
//! The binary is built by [`required_nefele_sim`] if needed; without it the tests fail
//! under CI (`NEFELE_CI=1`) and are skipped elsewhere, naming why.

use nefele_sim::scenario;
use nefele_sim::Simulation;
use nefele_sim_tests::{required_nefele_sim, scratch_dir};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs `nefele-sim run <args> --quiet`; `None` if there is no binary to run (the
/// test is then recorded as skipped, or fails under CI).
fn nefele_sim_run(args: &[&OsStr]) -> Option<Output> {
    let binary = required_nefele_sim()?;
    let output = std::process::Command::new(binary)
        .arg("run")
        .args(args)
        .arg("--quiet")
        .output()
        .expect("nefele-sim starts");
    Some(output)
}

fn os(text: &str) -> &OsStr {
    OsStr::new(text)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn scratch(test: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), test)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("scratch dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts `output` is a refusal: exit code 2, with every one of `names` in the message.
fn assert_refused(output: &Output, names: &[&str]) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    for name in names {
        assert!(message.contains(name), "{name:?} not named in: {message}");
    }
}

#[test]
fn a_bad_flag_exits_2_naming_the_flag() {
    for (args, flag) in [
        (&["--nodes", "many"][..], "--nodes"),
        (&["--nodes", "0"], "--nodes"),
        (&["--loss", "2"], "--loss"),
        (&["--duration", "soon"], "--duration"),
        (&["--duration", "0s"], "--duration"),
        (&["--fault", "{ at = \"1s\" }"], "--fault"),
        (&["--bogus"], "--bogus"),
    ] {
        let args: Vec<&OsStr> = args.iter().copied().map(os).collect();
        let Some(output) = nefele_sim_run(&args) else {
            return;
        };
        assert_refused(&output, &[flag]);
    }
}

#[test]
fn a_bad_scenario_file_exits_2_naming_file_line_and_field() {
    let dir = scratch("bad_scenario");
    let cases = [
        (
            "typo.toml",
            "seed = 1\n\nnodez = 5\n",
            &["typo.toml", ":3:", "nodez"][..],
        ),
        (
            "bad_at.toml",
            "nodes = 10\n\n[[faults]]\nat = \"soon\"\ncrash = { node = 1 }\n",
            &["bad_at.toml", ":3:", "faults[0]: at"],
        ),
        (
            "no_rack.toml",
            "nodes = 10\n\n\n[[faults]]\nat = \"1s\"\ncrash = { rack = 99 }\n",
            &["no_rack.toml", "line 4", "faults[0]", "rack 99"],
        ),
        (
            "bad_loss.toml",
            "[network]\nloss = 1.5\n",
            &["bad_loss.toml", "network.loss"],
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("scenario written");
        let Some(output) = nefele_sim_run(&[os("--scenario"), path.as_os_str()]) else {
            return;
        };
        assert_refused(&output, expected);
    }
    let missing = dir.join("missing.toml");
    if let Some(output) = nefele_sim_run(&[os("--scenario"), missing.as_os_str()]) {
        assert_refused(&output, &["missing.toml"]);
    }
}

/// Regression: `period = "500000000000y"` panicked in `Duration * u32` instead of
/// being refused; every duration of a scenario file now has an upper bound.
#[test]
fn a_huge_duration_exits_2_naming_the_field() {
    let dir = scratch("huge_duration");
    let huge = "\"500000000000y\"";
    let cases = [
        (
            "huge_period.toml",
            format!("nodes = 10\n\n[[federation]]\nname = \"placement\"\nperiod = {huge}\n"),
            &["huge_period.toml", ":5:", "federation.period"][..],
        ),
        (
            "long_period.toml",
            "nodes = 10\n\n[[federation]]\nname = \"placement\"\nperiod = \"2h\"\n".to_owned(),
            &["long_period.toml", "period"][..],
        ),
        (
            "huge_heartbeat.toml",
            format!("nodes = 10\n\n[discovery]\nheartbeat_period = {huge}\n"),
            &["huge_heartbeat.toml", ":4:", "discovery.heartbeat_period"][..],
        ),
        (
            "huge_run.toml",
            format!("nodes = 10\nduration = {huge}\n"),
            &["huge_run.toml", ":2:", "duration"][..],
        ),
        (
            "huge_fault.toml",
            format!("nodes = 10\n\n[[faults]]\nat = {huge}\ncrash = {{ node = 1 }}\n"),
            &["huge_fault.toml", ":3:", "faults[0]: at"][..],
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("scenario written");
        let Some(output) = nefele_sim_run(&[os("--scenario"), path.as_os_str()]) else {
            return;
        };
        assert_refused(&output, expected);
    }
}

#[test]
fn bad_input_leaves_no_file_behind() {
    let dir = scratch("nothing_half_written");
    let bad_scenario = dir.join("bad.toml");
    std::fs::write(&bad_scenario, "nodes = \"many\"\n").expect("scenario written");
    let (report, trace) = (dir.join("report.json"), dir.join("trace.json"));
    let rest = [
        os("--nodes"),
        os("10"),
        os("--duration"),
        os("1s"),
        os("--report"),
        report.as_os_str(),
        os("--trace"),
        trace.as_os_str(),
    ];
    for bad in [
        [os("--seed"), os("x")],
        [os("--scenario"), bad_scenario.as_os_str()],
        [os("--fault"), os("{ at = \"1s\", crash = { node = 50 } }")],
    ] {
        let args: Vec<&OsStr> = bad.iter().chain(&rest).copied().collect();
        let Some(output) = nefele_sim_run(&args) else {
            return;
        };
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert_eq!(files_in(&dir), ["bad.toml"], "after {bad:?}");
    }
}

#[test]
fn the_report_has_every_documented_field() {
    let dir = scratch("report");
    let report = dir.join("report.json");
    let args = [
        "--nodes",
        "30",
        "--seed",
        "4",
        "--duration",
        "3s",
        "--report",
    ]
    .map(os);
    let args: Vec<&OsStr> = args.into_iter().chain([report.as_os_str()]).collect();
    let Some(output) = nefele_sim_run(&args) else {
        return;
    };
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(files_in(&dir), ["report.json"], "no partial file is left");

    let json: Value = serde_json::from_slice(&std::fs::read(&report).expect("report"))
        .expect("the report is JSON");
    assert_eq!(json["seed"], 4);
    assert_eq!(json["nodes"], 30);
    assert_eq!(json["sim_seconds"].as_f64(), Some(3.0));
    for field in [
        "events",
        "messages_delivered",
        "messages_dropped",
        "peak_rss_bytes",
    ] {
        assert!(json[field].is_u64(), "{field}: {}", json[field]);
    }
    for field in ["wall_seconds", "events_per_second"] {
        assert!(json[field].is_number(), "{field}: {}", json[field]);
    }
    assert!(json["events"].as_u64() > Some(0));
    let invariants = &json["invariants"];
    assert!(invariants["checks"].is_u64() && invariants["violations"].is_u64());
    assert!(invariants.get("first_violation").is_some(), "{invariants}");

    let hash = json["trace_hash"].as_str().expect("trace_hash is a string");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some(format!("trace_hash={hash}").as_str())
    );
}

#[test]
fn the_trace_is_chrome_json_or_json_lines_by_its_name() {
    let dir = scratch("traces");
    let (chrome, lines) = (dir.join("trace.json"), dir.join("trace.jsonl"));
    let fault = r#"{ at = "1s", crash = { node = 3 }, duration = "500ms" }"#;
    let args = [
        "--nodes",
        "10",
        "--duration",
        "2s",
        "--fault",
        fault,
        "--trace",
    ]
    .map(os);
    for trace in [&chrome, &lines] {
        let args: Vec<&OsStr> = args.into_iter().chain([trace.as_os_str()]).collect();
        let Some(output) = nefele_sim_run(&args) else {
            return;
        };
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert_eq!(files_in(&dir), ["trace.json", "trace.jsonl"]);

    let events: Value =
        serde_json::from_slice(&std::fs::read(&chrome).expect("trace")).expect("valid JSON");
    let events = events.as_array().expect("an array of trace events");
    assert!(!events.is_empty());
    for event in events {
        assert!(event["name"].is_string() && event["ph"] == "i", "{event}");
        assert!(event["ts"].is_number() && event["pid"].is_u64() && event["tid"].is_u64());
    }
    assert!(
        events.iter().any(|e| e["cat"] == "fault"),
        "the crash is in the trace"
    );

    let text = std::fs::read_to_string(&lines).expect("trace");
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(
        records.len(),
        events.len(),
        "the same records in both formats"
    );
    assert!(records
        .iter()
        .all(|r| r["t_ns"].is_u64() && r["type"].is_string()));
}

/// A report or trace path that is not a regular file (here a FIFO, as `/dev/null`
/// or `/dev/stdout` would be) is written in place: before, the report was written
/// under a temporary name and renamed over it, and `--report /dev/null` run as root
/// replaced the machine's `/dev/null` with a file.
#[test]
fn a_report_to_a_pipe_is_written_into_it_and_the_pipe_stays() {
    let dir = scratch("report_to_a_pipe");
    let fifo = dir.join("report.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(&fifo).expect("the pipe reads"))
    };
    let args = [os("--nodes"), os("8"), os("--duration"), os("2s")];
    let Some(output) = nefele_sim_run(&[&args[..], &[os("--report"), fifo.as_os_str()]].concat())
    else {
        // Nothing will open the pipe's writing end: open it to end the reader.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
        return;
    };
    assert!(output.status.success(), "{}", stderr(&output));
    // Checked before the reader is joined: a pipe replaced by a file leaves the
    // reader waiting for a writer for ever.
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::symlink_metadata(&fifo)
        .expect("still there")
        .file_type();
    assert!(kind.is_fifo(), "the pipe was replaced: {kind:?}");
    assert_eq!(files_in(&dir), vec!["report.fifo".to_owned()]);
    let report: Value = serde_json::from_str(&reader.join().expect("the reader")).expect("JSON");
    assert_eq!(report["nodes"], 8);
}

/// A zero check interval would re-run the checker forever at one instant.
#[test]
fn a_zero_check_interval_is_refused() {
    let text = "nodes = 2\nduration = \"1s\"\n[check]\ninterval = \"0s\"\n";
    let refused = match scenario::parse(text, "zero-interval") {
        Err(_) => true,
        Ok(s) => Simulation::new(s.config).is_err(),
    };
    assert!(refused, "a zero check interval was accepted");
}

/// `--html` writes one page of plots with no script, and changes nothing in the run.
#[test]
fn the_html_page_has_the_plots_and_leaves_the_run_unchanged() {
    let dir = scratch("html");
    let page = dir.join("run.html");
    let base = ["--nodes", "30", "--seed", "4", "--duration", "4s"].map(os);
    let with_html: Vec<&OsStr> = base
        .iter()
        .copied()
        .chain([os("--html"), page.as_os_str()])
        .collect();
    let (Some(plain), Some(pictured)) = (nefele_sim_run(&base), nefele_sim_run(&with_html)) else {
        return;
    };
    assert!(pictured.status.success(), "{}", stderr(&pictured));
    assert_eq!(files_in(&dir), ["run.html"], "no partial file is left");
    let last = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .map(str::to_owned)
    };
    assert_eq!(last(&plain), last(&pictured), "the same trace hash");
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 7);
    for fetch in ["<script", "<link", "src=", "href="] {
        assert!(
            !html.contains(fetch),
            "{fetch}: the page must be self-contained"
        );
    }
}
