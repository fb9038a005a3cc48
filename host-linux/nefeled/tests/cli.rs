//! `nefeled --check-config`: validates the file, the flags and the key file, and exits.

#![cfg(not(madsim))]

use std::path::Path;
use std::process::Command;

fn check(config: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nefeled"))
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .args(extra)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_config_accepts_a_good_file_and_names_what_is_wrong_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "listen = \"127.0.0.1:7600\"\ncluster_key_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let (ok, text) = check(&good, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("configuration is valid"), "{text}");

    let (ok, text) = check(&good, &["--listen", "localhost"]);
    assert!(!ok);
    assert!(text.contains("the command line: field `listen`"), "{text}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "cluster_key_file = \"{}\"\n[[tenant]]\nname = \"a\"\n",
            key.display()
        ),
    )
    .unwrap();
    let (ok, text) = check(&bad, &[]);
    assert!(!ok);
    assert!(text.contains("bad.toml") && text.contains("id"), "{text}");

    let limits = |table: &str| {
        format!(
            "cluster_key_file = \"{}\"\n[[tenant]]\nname = \"a\"\nid = 1\nlimits = {table}\n",
            key.display()
        )
    };
    std::fs::write(&bad, limits("{ cpu = \"2\", memory = \"4G\", pids = 512 }")).unwrap();
    let (ok, text) = check(&bad, &[]);
    assert!(ok, "{text}");
    std::fs::write(&bad, limits("{ cpu = \"2\", memory = \"4 GB\" }")).unwrap();
    let (ok, text) = check(&bad, &[]);
    assert!(!ok);
    assert!(
        text.contains("bad.toml: field `tenant[0].limits.memory`: \"4 GB\""),
        "{text}"
    );

    std::fs::write(&key, "short").unwrap();
    let (ok, text) = check(&good, &[]);
    assert!(!ok);
    assert!(
        text.contains("key") && text.contains("shorter than 16"),
        "{text}"
    );
}
