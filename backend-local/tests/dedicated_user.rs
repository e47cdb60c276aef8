//! `vultrino serve` run as a dedicated OS user (what `deploy/vultrino.service` sets up with
//! systemd, docs/security.md): another user — the one an agent runs as — cannot read the master
//! key or the store, and the management CLI is useless to it, while the server answers it and
//! `vultrino mcp` works through the server.
//!
//! Proved without systemd: as root, the server runs under a numeric uid of its own
//! (`setpriv --reuid/--regid --clear-groups`, no /etc/passwd entry needed) with the unit's umask,
//! on a data directory owned by that uid with the unit's mode; a third uid plays the agent.
//! Nothing is left behind: no user is created, the server is stopped and the files are removed.
//! Needs root (scripts/test.sh runs as root) and talks only to 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::vultrino_bin;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const UNIT: &str = include_str!("../../deploy/vultrino.service");

/// The value of `key=` in the unit's `[Service]` section (the last one, as systemd reads it).
fn unit_setting(key: &str) -> Option<String> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .next_back()
}

fn octal(v: &str) -> u32 {
    u32::from_str_radix(v, 8).unwrap()
}

/// The effective uid of this process.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Two uids with no /etc/passwd entry and no process: one for the server, one for the agent.
fn two_unused_uids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut taken: std::collections::HashSet<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(m) = entry.metadata() {
            taken.insert(m.uid());
        }
    }
    let mut free = (64_000..65_000).filter(|u| !taken.contains(u));
    (free.next().unwrap(), free.next().unwrap())
}

/// Whether every other user may pass through `dir` and each of its ancestors.
fn traversable_by_all(dir: &Path) -> bool {
    dir.ancestors()
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A scratch directory the two uids can reach: the system temp dir when everybody may traverse it
/// (scripts/test.sh's per-run TMPDIR is private to root), else /tmp. Removed on drop.
fn scratch() -> tempfile::TempDir {
    let dir = [std::env::temp_dir(), PathBuf::from("/tmp")]
        .into_iter()
        .find(|d| traversable_by_all(d))
        .expect("no temp dir every user may traverse");
    let t = tempfile::Builder::new()
        .prefix("vultrino-dedicated-")
        .tempdir_in(dir)
        .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// The binary, where the two uids may run it (a copy in `scratch` when its folder is private).
fn reachable_binary(scratch: &Path) -> PathBuf {
    let bin = PathBuf::from(vultrino_bin());
    let runnable = traversable_by_all(bin.parent().unwrap())
        && std::fs::metadata(&bin).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if runnable {
        return bin;
    }
    let copy = scratch.join("vultrino");
    std::fs::copy(&bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// `args` run as `uid` (its own group, no supplementary groups), with `umask` and an environment
/// holding nothing but `env`.
fn as_user(uid: u32, umask: u32, args: &[&str], env: &[(&str, &str)]) -> Command {
    let id = uid.to_string();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
        .args([
            "/bin/sh",
            "-c",
            &format!("umask {umask:04o} && exec \"$0\" \"$@\""),
        ])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command, stdin: Option<&str>) -> (bool, String, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut input = child.stdin.take().unwrap();
        input.write_all(text.as_bytes()).await.unwrap();
        drop(input);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_unit_runs_serve_as_its_own_user_with_a_private_state_directory() {
    assert_eq!(unit_setting("DynamicUser").as_deref(), Some("yes"));
    assert_eq!(unit_setting("StateDirectory").as_deref(), Some("vultrino"));
    assert_eq!(unit_setting("StateDirectoryMode").as_deref(), Some("0700"));
    assert_eq!(unit_setting("UMask").as_deref(), Some("0077"));
    assert_eq!(unit_setting("NoNewPrivileges").as_deref(), Some("yes"));
    assert_eq!(unit_setting("ProtectSystem").as_deref(), Some("strict"));
    assert_eq!(unit_setting("PrivateTmp").as_deref(), Some("yes"));
    let exec = unit_setting("ExecStart").unwrap();
    assert!(
        exec.contains(" serve") && exec.contains("--listen 127.0.0.1:"),
        "{exec}"
    );
    assert_eq!(
        unit_setting("Environment").as_deref(),
        Some("VULTRINO_DATA_DIR=%S/vultrino"),
        "the data directory is the state directory"
    );
}

#[tokio::test]
async fn a_server_run_as_its_own_user_keeps_its_store_from_the_agent_s_user() {
    assert_eq!(
        euid(),
        0,
        "this test runs the server and the agent as two other uids: run it as root (scripts/test.sh does)"
    );
    let (server_uid, agent_uid) = two_unused_uids();
    let umask = octal(&unit_setting("UMask").unwrap());
    let dir_mode = octal(&unit_setting("StateDirectoryMode").unwrap());
    let scratch = scratch();
    let bin = reachable_binary(scratch.path());
    let bin = bin.to_str().unwrap();
    // What systemd's StateDirectory= makes: a directory owned by the service's user, 0700.
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(server_uid), Some(server_uid)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    let data_s = data.to_str().unwrap();

    // The server, as its own user, with a zero-config first run (master key, admin password).
    let mut serve = as_user(
        server_uid,
        umask,
        &[bin, "serve", "--listen", "127.0.0.1:0"],
        &[("VULTRINO_DATA_DIR", data_s)],
    );
    serve.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut server = serve.spawn().unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(rest) = line.strip_prefix("Vultrino listening on ") {
                return rest.to_string();
            }
        }
        panic!("serve exited: {printed}");
    })
    .await
    .unwrap();
    let password = printed
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains(' ') && !l.ends_with(':'))
        .expect("the first-run password is printed")
        .to_string();

    // Everything the server wrote is its user's alone.
    for name in ["master.key", "admin.hash", "store"] {
        let m = std::fs::metadata(data.join(name)).unwrap();
        assert_eq!(m.uid(), server_uid, "{name} belongs to the server's user");
        assert_eq!(
            m.permissions().mode() & 0o077,
            0,
            "{name} is private to the server's user"
        );
    }

    // The agent's user can read neither the master key nor the store.
    let key_file = data.join("master.key");
    for args in [
        vec!["/bin/cat", key_file.to_str().unwrap()],
        vec!["/bin/ls", data_s],
        vec!["/bin/ls", data.join("store").to_str().unwrap()],
    ] {
        let (ok, out, err) = run(as_user(agent_uid, umask, &args, &[]), None).await;
        assert!(!ok, "{args:?} as the agent's user succeeded: {out}");
        assert!(err.contains("Permission denied"), "{args:?}: {err}");
    }
    // The management CLI cannot open the store, and says why and what to do instead (log in to
    // the server).
    for args in [
        vec![bin, "credential", "list"],
        vec![bin, "key", "create", "mine", "--role", "admin"],
    ] {
        let (ok, out, err) = run(
            as_user(agent_uid, umask, &args, &[("VULTRINO_DATA_DIR", data_s)]),
            None,
        )
        .await;
        assert!(!ok, "{args:?} as the agent's user succeeded: {out}");
        assert!(out.is_empty(), "{out}");
        for part in [
            data_s,
            "may not read",
            "vultrino serve",
            "HTTP API",
            "vultrino login",
        ] {
            assert!(err.contains(part), "{part:?} not in: {err}");
        }
    }

    // The server answers, and the agent works through it with its own key: an admin makes one
    // over HTTP, and `vultrino mcp` run as the agent's user forwards to the server.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let login: serde_json::Value = http
        .post(format!("{base}/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let created: serde_json::Value = http
        .post(format!("{base}/v1/keys"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "agent", "role": "executor"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent_key = created["key"].as_str().unwrap();

    // Pointed at the server, the CLI authenticates to it: without a session of the admin it
    // gets nothing, and with the agent's own key only what the key's role allows — possession of
    // the binary grants nothing.
    let admin_key = vec![
        bin, "key", "create", "mine", "--role", "admin", "--server", &base,
    ];
    let (ok, out, err) = run(as_user(agent_uid, umask, &admin_key, &[]), None).await;
    assert!(!ok, "{out}");
    assert!(err.contains("vultrino login"), "{err}");
    let (ok, out, err) = run(
        as_user(
            agent_uid,
            umask,
            &admin_key,
            &[("VULTRINO_API_KEY", agent_key)],
        ),
        None,
    )
    .await;
    assert!(!ok, "{out}");
    assert!(err.contains("403"), "{err}");
    let keys: serde_json::Value = http
        .get(format!("{base}/v1/keys"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
    let (ok, out, err) = run(
        as_user(
            agent_uid,
            umask,
            &[bin, "mcp", "--server", &base],
            &[("VULTRINO_API_KEY", agent_key)],
        ),
        Some(ping),
    )
    .await;
    assert!(ok, "{err}");
    let reply: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(reply["id"], 1, "{out}");
    assert_eq!(reply["result"], serde_json::json!({}), "{out}");

    // Stop the server (SIGTERM: a graceful stop), then the scratch folder goes with `scratch`.
    let pid = server.id().unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let stopped = tokio::time::timeout(Duration::from_secs(20), server.wait()).await;
    if stopped.is_err() {
        let _ = server.kill().await;
    }
}
