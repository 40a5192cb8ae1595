//! Real backups: `examples/restic.toml` run through opsdeck with Debian's
//! restic (`make setup` installs it) against a local repository.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::*;

/// `examples/restic.toml` pointed at a repository, password file and cache
/// under `dir` (the example names fixed paths under /srv and /etc), its
/// script read from examples/scripts/.
fn restic_config(dir: &Path) -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(examples.join("restic.toml")).expect("examples/restic.toml");
    let password = dir.join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    text.replace(
        "\"/srv/backup/restic-repo\"",
        &format!("\"{}\"", dir.join("repo").display()),
    )
    .replace(
        "RESTIC_PASSWORD_FILE = \"/etc/opsdeck/restic-password\"",
        &format!(
            "RESTIC_PASSWORD_FILE = \"{}\", RESTIC_CACHE_DIR = \"{}\"",
            password.display(),
            dir.join("cache").display()
        ),
    )
    .replace(
        "script_file = \"scripts/",
        &format!("script_file = \"{}/scripts/", examples.display()),
    )
}

/// `n` random bytes into `path`.
fn random_file(path: &Path, n: u64) {
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(n)
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Every file under `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn restic_backs_up_with_its_own_progress_warns_of_a_missing_path_and_restores_byte_for_byte()
{
    let work = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .config(&restic_config(work.path()))
        .start()
        .await;
    let admin = app.admin_bearer().await;

    // What to back up: large enough for restic to report progress while it
    // runs (it writes a status line four times a second here; 120 MiB took
    // under a second on a quiet machine, reporting only 0 and 100), and a
    // few small files, one in a subfolder, one with a space in its name.
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub dir")).unwrap();
    for i in 0..4 {
        random_file(&src.join(format!("big-{i}.bin")), 100 << 20);
    }
    for i in 0..20 {
        random_file(
            &src.join("sub dir").join(format!("small {i}.txt")),
            4096 + i,
        );
    }
    let src_text = src.to_str().unwrap();

    // The repository is made by its template; the backup queues behind it
    // on the same target, so its event stream opens before it starts.
    let init = admin
        .launch_ok("restic-init", "backup-host", json!({}))
        .await;
    let backup = admin
        .launch_ok("restic-backup", "backup-host", json!({"path": src_text}))
        .await;
    let (status, sse) = Sse::open(&admin, &format!("/api/jobs/{backup}/events"), None).await;
    assert_eq!(status, 200);
    let mut sse = sse.unwrap();
    let mut percents = Vec::new();
    while let Some(ev) = sse.next().await {
        match ev.event.as_str() {
            "progress" => {
                if let Some(p) = ev.json()["percent"].as_f64() {
                    percents.push(p);
                }
            }
            "end" => break,
            _ => {}
        }
    }
    let init = admin.wait_finished(init, 60).await;
    assert_eq!(init["state"], "succeeded", "{init}");
    let done = admin.wait_finished(backup, 120).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["warnings"], false, "{done}");
    // N.B.: not monotonic: restic 0.14 reports 0 again now and then while
    // its scanner is still counting the totals; and on a fast machine it
    // may report only one value between 0 and 100 (4 status lines a second).
    assert!(
        percents.iter().any(|p| *p > 0.0 && *p < 100.0),
        "a real percentage arrives before the end: {percents:?}"
    );
    assert_eq!(percents.last(), Some(&100.0), "{percents:?}");
    assert_eq!(done["progress"]["percent"], 100.0, "{done}");

    // A second source that does not exist: the rest is backed up, and the
    // job says so with warnings (exit code 3).
    let missing = work.path().join("not-there");
    let partial = admin
        .launch_ok(
            "restic-backup",
            "backup-host",
            json!({"path": src_text, "also": missing.to_str().unwrap()}),
        )
        .await;
    let partial_job = admin.wait_finished(partial, 120).await;
    assert_eq!(partial_job["state"], "succeeded", "{partial_job}");
    assert_eq!(partial_job["warnings"], true, "{partial_job}");
    assert_eq!(partial_job["exit_code"], 3, "{partial_job}");
    let stderr = texts(&admin.all_lines(partial).await, "stderr");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("not-there") && l.contains("does not exist")),
        "{stderr:?}"
    );

    let list = admin
        .launch_ok("restic-snapshots", "backup-host", json!({}))
        .await;
    assert_eq!(admin.wait_finished(list, 60).await["state"], "succeeded");
    let out = texts(&admin.all_lines(list).await, "stdout");
    assert!(out.iter().any(|l| l == "2 snapshots"), "{out:?}");

    // The example's status probe, run after each of these jobs, finds the
    // repository and its latest snapshot.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, targets) = admin.get_json("/api/targets").await;
        let status = targets[0]["status"].clone();
        let message = status["message"].as_str().unwrap_or_default();
        if status["state"] == "up" && message.starts_with("latest snapshot: ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the probe did not find a snapshot: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Restore the latest snapshot: every file back, byte for byte.
    let into = work.path().join("restored");
    let restore = admin
        .launch_ok(
            "restic-restore",
            "backup-host",
            json!({"snapshot": "latest", "into": into.to_str().unwrap()}),
        )
        .await;
    let restored = admin.wait_finished(restore, 120).await;
    assert_eq!(restored["state"], "succeeded", "{restored}");
    // restic restores each file under its full path below the target.
    let back = into.join(src.strip_prefix("/").unwrap());
    let files = files_under(&src);
    assert_eq!(files.len(), 24);
    assert_eq!(files_under(&back), files);
    for f in &files {
        assert!(
            std::fs::read(src.join(f)).unwrap() == std::fs::read(back.join(f)).unwrap(),
            "{} differs after the restore",
            f.display()
        );
    }

    // Forget keeps one snapshot a day: both were taken today.
    let forget = admin
        .launch_ok("restic-forget", "backup-host", json!({"daily": 1}))
        .await;
    let forgot = admin.wait_finished(forget, 120).await;
    assert_eq!(forgot["state"], "succeeded", "{forgot}");
    let list = admin
        .launch_ok("restic-snapshots", "backup-host", json!({}))
        .await;
    assert_eq!(admin.wait_finished(list, 60).await["state"], "succeeded");
    let out = texts(&admin.all_lines(list).await, "stdout");
    assert!(out.iter().any(|l| l == "1 snapshots"), "{out:?}");
}
