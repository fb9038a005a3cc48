//! `nefeled --check-config`: validates the file, the flags and the key files
//! (which must be private), and exits; and the key tools (`--hash-token`,
//! `--new-authority`, `--issue-node-keys`).

#![cfg(not(madsim))]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn nefeled(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nefeled"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
    chmod(&key, 0o600);
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "listen = \"127.0.0.1:7600\"\ncluster_key_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    chmod(&good, 0o644);
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
    chmod(&bad, 0o644);
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

#[test]
fn secret_files_readable_by_others_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    chmod(&key, 0o644);
    let config = dir.path().join("nefeled.toml");
    let base = format!("cluster_key_file = \"{}\"\n", key.display());
    std::fs::write(&config, &base).unwrap();
    chmod(&config, 0o644);
    let (ok, text) = check(&config, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "{} (the cluster key) is accessible to group or others (mode 0644)",
            key.display()
        )),
        "{text}"
    );
    chmod(&key, 0o600);
    assert!(check(&config, &[]).0);

    // Tokens in clear: the config itself must be private; hashed tokens need not be.
    let tenant =
        |token: &str| format!("{base}[[tenant]]\nname = \"a\"\nid = 1\ntokens = [\"{token}\"]\n");
    std::fs::write(&config, tenant("in-clear")).unwrap();
    chmod(&config, 0o644);
    let (ok, text) = check(&config, &[]);
    assert!(!ok);
    assert!(
        text.contains(&config.display().to_string()) && text.contains("--hash-token"),
        "{text}"
    );
    chmod(&config, 0o600);
    assert!(check(&config, &[]).0);
    let (ok, hashed, err) = nefeled(&["--hash-token"], "in-clear\n");
    assert!(ok, "{err}");
    assert!(
        hashed.starts_with("sha256:") && hashed.trim().len() == 7 + 64,
        "{hashed}"
    );
    std::fs::write(&config, tenant(hashed.trim())).unwrap();
    chmod(&config, 0o644);
    let (ok, text) = check(&config, &[]);
    assert!(ok, "{text}");
    // Nobody but its owner may write the configuration, whatever it holds.
    chmod(&config, 0o664);
    let (ok, text) = check(&config, &[]);
    assert!(
        !ok && text.contains("writable by group or others"),
        "{text}"
    );
}

#[test]
fn node_keys_are_issued_private_and_checked_against_the_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (ok, _, err) = nefeled(&["--new-authority", &path("authority")], "");
    assert!(ok, "{err}");
    let (ok, _, err) = nefeled(
        &[
            "--issue-node-keys",
            "3",
            "--authority",
            &path("authority"),
            "--out",
            &path("n3.keys"),
        ],
        "",
    );
    assert!(ok, "{err}");
    for file in ["authority", "n3.keys"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // Never overwrites.
    let (ok, _, err) = nefeled(&["--new-authority", &path("authority")], "");
    assert!(!ok && err.contains("authority"), "{err}");

    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    chmod(&key, 0o600);
    let config = dir.path().join("nefeled.toml");
    let write = |node: u32| {
        std::fs::write(
            &config,
            format!(
                "node_id = {node}\ncluster_key_file = \"{}\"\nnode_keys_file = \"{}\"\n",
                key.display(),
                path("n3.keys")
            ),
        )
        .unwrap();
        chmod(&config, 0o644);
    };
    write(3);
    let (ok, text) = check(&config, &[]);
    assert!(ok, "{text}");
    write(4);
    let (ok, text) = check(&config, &[]);
    assert!(
        !ok && text.contains("n3.keys") && text.contains("n3's"),
        "{text}"
    );
    write(3);
    chmod(&dir.path().join("n3.keys"), 0o640);
    let (ok, text) = check(&config, &[]);
    assert!(
        !ok && text.contains("n3.keys (the node keys) is accessible"),
        "{text}"
    );
}
