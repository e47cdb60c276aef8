//! The master key in the OS keychain (`--master-key-source keychain`), against a REAL Secret
//! Service: each test starts its own private D-Bus session bus (`dbus-daemon`) and
//! `gnome-keyring-daemon` (secrets component, its login keyring unlocked with a password on
//! stdin) in a temporary HOME, and stops both when it ends (a Drop guard). `secret-tool`
//! (libsecret) plays the user who looks at or changes the entry outside Vultrino.
//!
//! Missing programs are a FAILURE naming scripts/install-prereqs.sh, never a skip.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{expect_for, vultrino_cmd, Client, Server, ServerOptions};
use tokio::io::AsyncWriteExt;

/// A private Secret Service: a session bus and gnome-keyring on it, in a temporary HOME.
struct SecretService {
    root: tempfile::TempDir,
    address: String,
    bus: Child,
    keyring: Option<Child>,
}

/// Fail (not skip) when a program the suite needs is missing.
fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed (Debian package {package}): the keychain tests need a real \
         Secret Service; run scripts/install-prereqs.sh (group apt)"
    );
}

impl SecretService {
    /// A session bus with gnome-keyring's Secret Service on it, its login keyring unlocked.
    fn start() -> SecretService {
        let mut s = SecretService::bus_only();
        require("gnome-keyring-daemon", "gnome-keyring");
        let mut keyring = StdCommand::new("gnome-keyring-daemon")
            .args(["--foreground", "--components=secrets", "--unlock"])
            .envs(s.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        // The login keyring's password, on stdin (created with it on first use).
        let mut stdin = keyring.stdin.take().unwrap();
        stdin.write_all(b"keychain-test-login").unwrap();
        drop(stdin);
        s.keyring = Some(keyring);
        // Ready once the service owns its name and has a default collection.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = StdCommand::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.secrets",
                    "/org/freedesktop/secrets",
                    "org.freedesktop.Secret.Service.ReadAlias",
                    "string:default",
                ])
                .envs(s.env())
                .output()
                .expect("run dbus-send");
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && text.contains("/collection/") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon did not offer a default collection within 20 s: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// A session bus with no Secret Service on it (and nothing it could start: no service
    /// directories).
    fn bus_only() -> SecretService {
        require("dbus-daemon", "dbus-daemon");
        require("dbus-send", "dbus-bin");
        require("secret-tool", "libsecret-tools");
        let root = tempfile::tempdir().unwrap();
        for d in ["home", "run", "data", "config", "cache"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let conf = root.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                root.path().display()
            ),
        )
        .unwrap();
        let mut bus = StdCommand::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let s = SecretService {
            root,
            address: address.trim().to_string(),
            bus,
            keyring: None,
        };
        // Asserted once the guard holds the bus: a failure stops it too.
        assert!(
            s.address.starts_with("unix:"),
            "dbus-daemon printed {:?}",
            s.address
        );
        s
    }

    /// The environment every program of the test runs with.
    fn env(&self) -> Vec<(String, String)> {
        let p = |d: &str| self.root.path().join(d).display().to_string();
        vec![
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.address.clone()),
            ("HOME".into(), p("home")),
            ("XDG_RUNTIME_DIR".into(), p("run")),
            ("XDG_DATA_HOME".into(), p("data")),
            ("XDG_CONFIG_HOME".into(), p("config")),
            ("XDG_CACHE_HOME".into(), p("cache")),
        ]
    }

    /// `secret-tool ARGS` with `stdin`: (success, stdout).
    fn secret_tool(&self, args: &[&str], stdin: &str) -> (bool, String) {
        let mut child = StdCommand::new("secret-tool")
            .args(args)
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        )
    }

    /// The key stored for `data_dir`, as another program (libsecret) finds it.
    fn lookup(&self, data_dir: &Path) -> Option<String> {
        let account = account(data_dir);
        let (ok, out) =
            self.secret_tool(&["lookup", "service", "vultrino", "username", &account], "");
        (ok && !out.is_empty()).then_some(out)
    }

    /// Replace the entry of `data_dir` from outside Vultrino.
    fn replace(&self, data_dir: &Path, value: &str) {
        let account = account(data_dir);
        self.secret_tool(&["clear", "service", "vultrino", "username", &account], "");
        let (ok, _) = self.secret_tool(
            &[
                "store",
                "--label",
                "changed outside Vultrino",
                "service",
                "vultrino",
                "username",
                &account,
            ],
            value,
        );
        assert!(ok, "secret-tool store");
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        if let Some(k) = &mut self.keyring {
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// The entry's account: the data directory's canonical path.
fn account(data_dir: &Path) -> String {
    std::fs::canonicalize(data_dir)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// Run `vultrino --data-dir DIR ARGS` with `env` and `stdin`: (success, stdout, stderr).
async fn run(
    dir: &Path,
    env: &[(String, String)],
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let mut cmd = vultrino_cmd(Some(dir));
    cmd.args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    match input.write_all(stdin.as_bytes()).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("vultrino did not finish within 120 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// `env` plus `VULTRINO_MASTER_KEY_SOURCE=keychain`.
fn keychain(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("VULTRINO_MASTER_KEY_SOURCE".into(), "keychain".into()));
    env
}

const SECRET: &str = "keychain-cred-secret-5521";

/// A file store in `dir` holding the credential `local` (secret [`SECRET`], for 127.0.0.1), made
/// with a key file, as before the move. Returns the key file's text.
async fn store_with_a_credential(dir: &Path, env: &[(String, String)]) -> String {
    let (ok, _, err) = run(
        dir,
        env,
        &["credential", "add", "local", "--host", "127.0.0.1"],
        &format!("{SECRET}\n"),
    )
    .await;
    assert!(ok, "{err}");
    std::fs::read_to_string(dir.join("master.key")).unwrap()
}

/// `vultrino request local GET <upstream>` opening the store in the process: the credential is
/// decrypted (the upstream saw the secret) or the command failed (stderr returned).
async fn decrypts(dir: &Path, env: &[(String, String)], up: &Upstream) -> Result<(), String> {
    let url = up.url("/echo");
    let (ok, out, err) = run(
        dir,
        env,
        &[
            "request",
            "local",
            "GET",
            &url,
            "--allow-loopback-upstreams",
        ],
        "",
    )
    .await;
    if !ok {
        return Err(err);
    }
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 200, "{out}");
    assert_eq!(
        up.seen().pop().unwrap().headers["authorization"],
        format!("Bearer {SECRET}")
    );
    Ok(())
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n != "LOCK") {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Store → file gone → serve and restart → decrypt: the key moves into the keychain, the key file
/// is wiped and deleted, and a server started (twice) with the keychain source decrypts the
/// credential made before the move.
#[tokio::test]
async fn a_key_moved_to_the_keychain_decrypts_after_restarts_and_the_file_is_gone() {
    let ss = SecretService::start();
    let env = ss.env();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Upstream::start().await;
    let key = store_with_a_credential(&dir, &env).await;

    let (ok, _, err) = run(&dir, &env, &["master-key", "to-keychain"], "").await;
    assert!(ok, "{err}");
    assert!(err.contains("--master-key-source keychain"), "{err}");
    assert!(!dir.join("master.key").exists(), "the key file is deleted");
    assert_eq!(
        ss.lookup(&dir).as_deref(),
        Some(key.trim()),
        "the entry (service vultrino, account the data directory) holds the key"
    );
    // Run again: nothing left to move, and the entry stays.
    let (ok, _, err) = run(&dir, &env, &["master-key", "to-keychain"], "").await;
    assert!(!ok);
    assert!(err.contains("no master key file"), "{err}");
    assert_eq!(ss.lookup(&dir).as_deref(), Some(key.trim()));
    // A move interrupted while the file was being overwritten leaves a file of zeros: a rerun
    // says the key is already in the keychain (review 2026-12-06, finding 6), and changes nothing.
    std::fs::write(dir.join("master.key"), vec![0u8; key.trim().len()]).unwrap();
    let (ok, _, err) = run(&dir, &env, &["master-key", "to-keychain"], "").await;
    assert!(!ok);
    assert!(
        err.contains("already holds a master key") && err.contains("interrupted"),
        "{err}"
    );
    assert_eq!(ss.lookup(&dir).as_deref(), Some(key.trim()));
    std::fs::remove_file(dir.join("master.key")).unwrap();

    // Served from the keychain, started twice: the credential made before still decrypts.
    for _ in 0..2 {
        let server = Server::start_local(ServerOptions {
            data_dir: Some(dir.clone()),
            extra_env: keychain(&env),
            ..ServerOptions::default()
        })
        .await;
        let client = Client::new(server.target());
        let token = client.login().await;
        let r = client
            .send(
                "POST",
                "/v1/execute",
                Some(&token),
                Some(&json!({"credential": "local", "method": "GET", "url": up.url("/echo")})),
            )
            .await;
        expect_for("execute with the key from the keychain", &r, 200, None);
        assert_eq!(
            up.seen().pop().unwrap().headers["authorization"],
            format!("Bearer {SECRET}")
        );
        assert!(!r.text.contains(SECRET), "scrubbed: {}", r.text);
        server.stop().await;
        assert!(!dir.join("master.key").exists(), "no key file reappears");
    }
    // A management command opening the store in its own process, too.
    decrypts(&dir, &keychain(&env), &up).await.unwrap();

    // Without the setting the key file is looked for: the new key made for it does not open the
    // store, is removed again, and the error names the setting.
    let (ok, _, err) = run(&dir, &env, &["credential", "list"], "").await;
    assert!(!ok);
    assert!(err.contains("--master-key-source keychain"), "{err}");
    assert!(
        !dir.join("master.key").exists(),
        "the useless new key file is removed"
    );
    decrypts(&dir, &keychain(&env), &up).await.unwrap();
}

/// The entry of another data directory is never used, and a tampered entry is refused with a
/// clear error, changing nothing: with the right key back, everything decrypts.
#[tokio::test]
async fn a_wrong_entry_is_refused_clearly_and_loses_nothing() {
    let ss = SecretService::start();
    let env = ss.env();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Upstream::start().await;
    let key = store_with_a_credential(&dir, &env).await;
    let (ok, _, err) = run(&dir, &env, &["master-key", "to-keychain"], "").await;
    assert!(ok, "{err}");

    // A copy of the store at another path has no entry: refused, and nothing is created for it.
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for (path, bytes) in snapshot(&dir) {
        let to = copy.join(path.strip_prefix(&dir).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    let (ok, _, err) = run(&copy, &keychain(&env), &["credential", "list"], "").await;
    assert!(!ok);
    assert!(err.contains("holds no master key"), "{err}");
    assert!(err.contains(&account(&copy)), "the entry is named: {err}");
    assert!(ss.lookup(&copy).is_none(), "no entry was made for the copy");
    assert!(
        !copy.join("master.key").exists(),
        "no fallback to a key file"
    );

    // Tampered: another key in the entry. Refused at start, saying where the key came from.
    let before = snapshot(&dir);
    ss.replace(
        &dir,
        "0000000000000000000000000000000000000000000000000000000000000000",
    );
    let (ok, _, err) = run(&dir, &keychain(&env), &["credential", "list"], "").await;
    assert!(!ok);
    assert!(err.contains("does not match"), "{err}");
    assert!(err.contains("OS keychain entry"), "{err}");
    assert!(!err.contains(key.trim()), "no key in messages: {err}");
    let (ok, _, err) = run(&dir, &keychain(&env), &["rotate-master-key"], "").await;
    assert!(!ok, "a rotation with the wrong key is refused: {err}");
    assert_eq!(snapshot(&dir), before, "the store is untouched");
    // A tampered entry is not overwritten by a key file either.
    std::fs::write(dir.join("master.key"), &key).unwrap();
    let (ok, _, err) = run(&dir, &env, &["master-key", "to-keychain"], "").await;
    assert!(!ok);
    assert!(
        err.contains("already holds a different master key"),
        "{err}"
    );
    assert!(
        dir.join("master.key").exists(),
        "the key file is kept when the move is refused"
    );
    std::fs::remove_file(dir.join("master.key")).unwrap();

    // The right key back (e.g. from a backup): everything decrypts.
    ss.replace(&dir, key.trim());
    decrypts(&dir, &keychain(&env), &up).await.unwrap();
}

/// No Secret Service (no bus at all, or a bus nobody serves secrets on): a clear error naming
/// the fix, a non-zero exit, no panic, and the key file is not touched.
#[tokio::test]
async fn without_a_secret_service_the_error_names_the_fix() {
    let bus = SecretService::bus_only();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key = store_with_a_credential(&dir, &bus.env()).await;
    let mut no_bus = bus.env();
    no_bus[0].1 = format!("unix:path={}/no-bus-here", tmp.path().display());

    for env in [no_bus, bus.env()] {
        for args in [
            &["credential", "list"][..],
            &["master-key", "to-keychain"][..],
        ] {
            let (ok, _, err) = run(&dir, &keychain(&env), args, "").await;
            assert!(!ok, "{args:?}");
            assert!(
                err.contains("no OS keychain service reachable (Secret Service over D-Bus)"),
                "{args:?}: {err}"
            );
            assert!(err.contains("--master-key-source file"), "{err}");
            assert_eq!(
                std::fs::read_to_string(dir.join("master.key")).unwrap(),
                key,
                "the key file is untouched"
            );
        }
        // `serve` too, before it listens.
        let (ok, out, err) = run(
            &dir,
            &keychain(&env),
            &["serve", "--listen", "127.0.0.1:0"],
            "",
        )
        .await;
        assert!(!ok);
        assert!(!out.contains("listening"), "{out}");
        assert!(err.contains("no OS keychain service reachable"), "{err}");
    }
}

/// `rotate-master-key` with the key in the keychain: the entry takes the new key, the pending
/// `next:` entry is gone, the credential decrypts, and the old key opens nothing any more.
#[tokio::test]
async fn rotating_a_key_kept_in_the_keychain_replaces_the_entry() {
    let ss = SecretService::start();
    let env = ss.env();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Upstream::start().await;
    let old = store_with_a_credential(&dir, &env).await;
    let (ok, _, err) = run(&dir, &env, &["master-key", "to-keychain"], "").await;
    assert!(ok, "{err}");

    let (ok, _, err) = run(&dir, &keychain(&env), &["rotate-master-key"], "").await;
    assert!(ok, "{err}");
    assert!(err.contains("OS keychain entry"), "{err}");
    let new = ss.lookup(&dir).expect("the entry is kept");
    assert_ne!(new.trim(), old.trim(), "a new key");
    let (_, pending) = ss.secret_tool(
        &[
            "lookup",
            "service",
            "vultrino",
            "username",
            &format!("next:{}", account(&dir)),
        ],
        "",
    );
    assert!(
        pending.is_empty(),
        "the rotation's pending entry is deleted"
    );
    assert!(!dir.join("master.key").exists());
    decrypts(&dir, &keychain(&env), &up).await.unwrap();
    // The old key opens nothing.
    let mut with_old = env.clone();
    with_old.push(("VULTRINO_MASTER_KEY_SOURCE".into(), "env".into()));
    with_old.push(("VULTRINO_MASTER_KEY".into(), old.trim().into()));
    let err = decrypts(&dir, &with_old, &up).await.unwrap_err();
    assert!(err.contains("does not match"), "{err}");

    // A rotation interrupted after it stored its new key (and maybe re-encrypted some records)
    // is finished by running it again, with that key.
    let next_account = format!("next:{}", account(&dir));
    let chosen = "2222222222222222222222222222222222222222222222222222222222222222";
    let (ok, _) = ss.secret_tool(
        &[
            "store",
            "--label",
            "pending rotation",
            "service",
            "vultrino",
            "username",
            &next_account,
        ],
        chosen,
    );
    assert!(ok);
    let (ok, _, err) = run(&dir, &keychain(&env), &["rotate-master-key"], "").await;
    assert!(ok, "{err}");
    assert_eq!(
        ss.lookup(&dir).as_deref(),
        Some(chosen),
        "the pending key is the new one"
    );
    let (_, pending) = ss.secret_tool(
        &["lookup", "service", "vultrino", "username", &next_account],
        "",
    );
    assert!(
        pending.is_empty(),
        "the rotation's pending entry is deleted"
    );
    decrypts(&dir, &keychain(&env), &up).await.unwrap();
}

/// A first `serve` of a new data directory with the keychain source keeps the new key there
/// only (no key file), and the next start finds it.
#[tokio::test]
async fn a_first_run_with_the_keychain_source_writes_no_key_file() {
    let ss = SecretService::start();
    let env = ss.env();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Upstream::start().await;
    for _ in 0..2 {
        let server = Server::start_local(ServerOptions {
            data_dir: Some(dir.clone()),
            extra_env: keychain(&env),
            ..ServerOptions::default()
        })
        .await;
        server.stop().await;
    }
    assert!(!dir.join("master.key").exists(), "no key file");
    assert!(ss.lookup(&dir).is_some(), "the key is in the entry");
    // The store made with it takes a credential and decrypts it.
    let (ok, _, err) = run(
        &dir,
        &keychain(&env),
        &["credential", "add", "local", "--host", "127.0.0.1"],
        &format!("{SECRET}\n"),
    )
    .await;
    assert!(ok, "{err}");
    decrypts(&dir, &keychain(&env), &up).await.unwrap();
}

/// An explicit source is strict and needs no keychain: `env` without the variable is an error
/// (no key file is made), and `file` uses the file even when the variable is set.
#[tokio::test]
async fn an_explicit_source_never_falls_back_to_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Upstream::start().await;
    let env: Vec<(String, String)> = vec![];
    let key = store_with_a_credential(&dir, &env).await;
    std::fs::rename(dir.join("master.key"), tmp.path().join("saved.key")).unwrap();
    let source_env = vec![("VULTRINO_MASTER_KEY_SOURCE".to_string(), "env".to_string())];
    let (ok, _, err) = run(&dir, &source_env, &["credential", "list"], "").await;
    assert!(!ok);
    assert!(err.contains("VULTRINO_MASTER_KEY"), "{err}");
    assert!(!dir.join("master.key").exists(), "no key file is made");
    // With the variable: it is used.
    let mut with_key = source_env.clone();
    with_key.push(("VULTRINO_MASTER_KEY".into(), key.trim().into()));
    decrypts(&dir, &with_key, &up).await.unwrap();
    // `file`: the file wins over a (wrong) variable.
    std::fs::rename(tmp.path().join("saved.key"), dir.join("master.key")).unwrap();
    let file_env = vec![
        ("VULTRINO_MASTER_KEY_SOURCE".to_string(), "file".to_string()),
        (
            "VULTRINO_MASTER_KEY".to_string(),
            "1111111111111111111111111111111111111111111111111111111111111111".to_string(),
        ),
    ];
    decrypts(&dir, &file_env, &up).await.unwrap();
    // And unset, as always, the variable wins: the wrong one is refused.
    let err = decrypts(&dir, &file_env[1..], &up).await.unwrap_err();
    assert!(err.contains("does not match"), "{err}");
}
