//! Shipping: the site a release binary carries (hashed names, encodings,
//! caching), `--version`, `opsdeck backup` while a job logs, and upgrading
//! a database written by an earlier release.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A small site as cargo-leptos lays it out: `pkg/` and `public/` files.
fn write_site(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "pkg/opsdeck.js",
            "export default function init() {}\n"
                .repeat(40)
                .into_bytes(),
        ),
        ("pkg/opsdeck.wasm", {
            let mut w = b"\0asm\x01\0\0\0".to_vec();
            w.extend((0..20_000u32).map(|i| (i % 7) as u8));
            w
        }),
        (
            "pkg/opsdeck.css",
            "body { font-family: system-ui; }\n".repeat(40).into_bytes(),
        ),
        ("favicon.ico", vec![0, 0, 1, 0, 1, 0]),
        (
            "xterm-lazy.mjs",
            "export async function loadXterm() {}\n"
                .repeat(20)
                .into_bytes(),
        ),
        (
            "vendor/xterm/xterm.mjs",
            "export class Terminal {}\n".repeat(40).into_bytes(),
        ),
    ];
    for (path, body) in &files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    files
}

fn find<'a>(html: &'a str, prefix: &str, suffix: &str) -> &'a str {
    let start = html
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix}…{suffix} in the page:\n{html}"));
    let after = start + prefix.len();
    let end = html[after..].find(suffix).unwrap() + after + suffix.len();
    &html[start..end]
}

fn brotli_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Checks the site served at `base` against `files`: the page links hashed
/// names; each encoding decodes to the file; caching and revalidation.
async fn check_site(base: &str, files: &[(&'static str, Vec<u8>)]) {
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let preload = find(&html, "rel=\"modulepreload\" href=\"", ".js");
    let js = preload[preload.find("/pkg/").unwrap()..].to_string();
    let hash = js
        .strip_prefix("/pkg/opsdeck.")
        .and_then(|s| s.strip_suffix(".js"))
        .unwrap();
    assert_eq!(hash.len(), 16, "{js}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{js}");
    let wasm = format!("/pkg/opsdeck.{hash}.wasm");
    let css = format!("/pkg/opsdeck.{hash}.css");
    assert!(html.contains(&wasm), "the page preloads {wasm}");
    assert!(
        html.contains(&format!("href=\"{css}\"")),
        "the page links {css}"
    );
    // The import map names the hashed shim; the inline scripts carry the nonce.
    let shim = find(&html, "/xterm-lazy.", ".mjs").to_string();
    assert_ne!(shim, "/xterm-lazy.mjs");
    let nonce = find(&csp, "'nonce-", "'");
    let nonce = &nonce[7..nonce.len() - 1];
    assert!(html.contains(&format!("nonce=\"{nonce}\"")), "{html}");

    let body = |name: &str| files.iter().find(|(p, _)| *p == name).unwrap().1.clone();
    for (url, file) in [
        (&js, "pkg/opsdeck.js"),
        (&wasm, "pkg/opsdeck.wasm"),
        (&css, "pkg/opsdeck.css"),
        (&shim, "xterm-lazy.mjs"),
    ] {
        for accept in ["gzip, deflate, br", "gzip", "identity", ""] {
            let mut req = http.get(format!("{base}{url}"));
            if !accept.is_empty() {
                req = req.header("accept-encoding", accept);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200, "{url}");
            let h = res.headers().clone();
            assert_eq!(
                h["cache-control"], "public, max-age=31536000, immutable",
                "{url}"
            );
            assert_eq!(h["vary"], "accept-encoding", "{url}");
            let encoding = h
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_string());
            let raw = res.bytes().await.unwrap().to_vec();
            let decoded = match (accept, encoding.as_deref()) {
                ("gzip, deflate, br", Some("br")) => brotli_decode(&raw),
                ("gzip", Some("gzip")) => gzip_decode(&raw),
                ("identity" | "", None) => raw.clone(),
                (a, e) => panic!("{url}: accept-encoding `{a}` got content-encoding {e:?}"),
            };
            assert_eq!(decoded, body(file), "{url} ({accept})");
            if encoding.is_some() {
                assert!(raw.len() < decoded.len(), "{url}: compressed is smaller");
            }
        }
    }
    let ct = |url: String| {
        let http = http.clone();
        async move {
            http.get(url).send().await.unwrap().headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(ct(format!("{base}{wasm}")).await, "application/wasm");
    assert!(ct(format!("{base}{js}"))
        .await
        .starts_with("text/javascript"));
    assert!(ct(format!("{base}{css}")).await.starts_with("text/css"));

    // Plain names (what files refer to among themselves) are revalidated.
    let res = http
        .get(format!("{base}/vendor/xterm/xterm.mjs"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let etag = res.headers()["etag"].clone();
    assert_eq!(
        res.bytes().await.unwrap().to_vec(),
        body("vendor/xterm/xterm.mjs")
    );
    let again = http
        .get(format!("{base}/vendor/xterm/xterm.mjs"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let head = http.head(format!("{base}{wasm}")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        body("pkg/opsdeck.wasm").len().to_string()
    );

    // Anything else is still the app's own not-found page, and pages are
    // never stored.
    let missing = http
        .get(format!("{base}/pkg/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn ship_a_site_directory_is_served_with_hashed_names_precompressed_and_cached() {
    let site = tempfile::tempdir().unwrap();
    let files = write_site(site.path());
    let app = TestApp::builder()
        .config(&format!(
            "[server]\nsite_root = \"{}\"\n",
            site.path().display()
        ))
        .start()
        .await;
    check_site(&format!("http://{}", app.addr), &files).await;
}

/// Runs the binary at `exe` in `cwd`; waits for /healthz.
fn spawn_serving(exe: &Path, cwd: &Path, database_url: &str) -> (Child, String) {
    let port = free_port();
    let child = Command::new(exe)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("DATABASE_URL", database_url)
        .env("OPSDECK_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cwd.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the packed binary did not start: {}",
            std::fs::read_to_string(cwd.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, base)
}

#[tokio::test]
async fn ship_a_packed_binary_serves_the_site_it_carries_from_any_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    let files = write_site(&site);
    let exe = tmp.path().join("bin/opsdeck");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let out = Command::new(opsdeck_bin())
        .args(["embed-site", "--site"])
        .arg(&site)
        .arg("--out")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Packing with the packed binary replaces its site, never stacks a
    // second one: the same site packs to the same bytes.
    let repacked = tmp.path().join("bin/opsdeck-again");
    let out = Command::new(&exe)
        .args(["embed-site", "--site"])
        .arg(&site)
        .arg("--out")
        .arg(&repacked)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&exe).unwrap() == std::fs::read(&repacked).unwrap());
    let size = std::fs::metadata(&exe).unwrap().len();
    assert!(size > std::fs::metadata(opsdeck_bin()).unwrap().len());
    // The site is gone from disk: only the binary has it now.
    std::fs::remove_dir_all(&site).unwrap();

    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let (mut child, base) = spawn_serving(
        &exe,
        &elsewhere,
        &format!("sqlite://{}/db/opsdeck.db", elsewhere.display()),
    );
    check_site(&base, &files).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // A directory without the site's wasm is refused with a sentence.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(opsdeck_bin())
        .args(["embed-site", "--site"])
        .arg(&empty)
        .arg("--out")
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no pkg/opsdeck.wasm"), "{err}");
}

#[test]
fn ship_version_names_the_release_and_the_commit() {
    let out = Command::new(opsdeck_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected_commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        text.trim(),
        format!(
            "opsdeck {} (commit {expected_commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// A template that logs a numbered line every millisecond or so, for long.
/// N.B.: one node id for the server and the one serving the restored
/// copy (on another port), so the copy's start-up recovery takes the job
/// the backup caught running as its own (docs/cluster.md).
const LOGGER: &str = r#"
[cluster]
node = "backup-test"

[[targets]]
id = "t1"
kind = "local"

[[templates]]
id = "logger"
script = 'i=1; while [ $i -le 200000 ]; do echo "line $i"; i=$((i+1)); [ $((i % 50)) = 0 ] && sleep 0.01; done'
"#;

#[tokio::test]
async fn ship_a_backup_taken_while_a_job_logs_restores_every_line_committed_before_it() {
    let app = TestApp::builder().config(LOGGER).start().await;
    let admin = app.admin_bearer().await;
    let url = app.state.config.server.database_url.clone();
    let backups = tempfile::tempdir().unwrap();
    let out = backups.path().join("backup.db");
    if on_postgres() {
        let res = Command::new(opsdeck_bin())
            .arg("backup")
            .arg(&out)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(2));
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains("pg_dump"), "{err}");
        return;
    }
    let id = admin.launch_ok("logger", "t1", serde_json::json!({})).await;
    // Wait until a good part of the log is in.
    let count = format!("SELECT COUNT(*) FROM job_logs WHERE job_id = {id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = query_column(&url, &count).await[0].parse().unwrap();
        if n >= 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "the job logged only {n} lines");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every line committed before the backup begins.
    let before: i64 = query_column(
        &url,
        &format!("SELECT MAX(seq) FROM job_logs WHERE job_id = {id}"),
    )
    .await[0]
        .parse()
        .unwrap();
    let res = Command::new(opsdeck_bin())
        .arg("backup")
        .arg(&out)
        .env("DATABASE_URL", &url)
        .env_remove("OPSDECK_CONFIG")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    // The job was still writing: the copy holds it running, and the live
    // log went on past the copy.
    let copy = format!("sqlite://{}", out.display());
    assert_eq!(
        query_column(&copy, &format!("SELECT state FROM jobs WHERE id = {id}")).await,
        ["running"]
    );
    let in_copy: i64 = query_column(
        &copy,
        &format!("SELECT MAX(seq) FROM job_logs WHERE job_id = {id}"),
    )
    .await[0]
        .parse()
        .unwrap();
    assert!(
        in_copy >= before,
        "the copy has {in_copy} lines, {before} were committed before it"
    );
    admin
        .post_json(&format!("/api/jobs/{id}/cancel"), serde_json::json!({}))
        .await;
    admin.wait_finished(id, 30).await;
    let live_max: i64 = query_column(
        &url,
        &format!("SELECT MAX(seq) FROM job_logs WHERE job_id = {id}"),
    )
    .await[0]
        .parse()
        .unwrap();
    assert!(live_max > in_copy, "the job logged on after the backup");
    // Every line committed before the backup began is in the copy, as it is
    // in the live database.
    let rows = format!(
        "SELECT seq || ' ' || text FROM job_logs WHERE job_id = {id} AND seq <= {before} ORDER BY seq"
    );
    let live_rows = query_column(&url, &rows).await;
    assert_eq!(
        live_rows.len() as i64,
        before,
        "the live log numbers its lines 1.."
    );
    assert!(
        query_column(&copy, &rows).await == live_rows,
        "the copy differs from the live log"
    );
    // A backup never overwrites.
    let again = Command::new(opsdeck_bin())
        .arg("backup")
        .arg(&out)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");

    app.stop().await;

    // Restored: a server on a copy of the backup serves the job and every
    // line up to the backup, numbered without a gap, as they were.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored = restored_dir.path().join("restored.db");
    std::fs::copy(&out, &restored).unwrap();
    let app = TestApp::builder()
        .config(LOGGER)
        .database_url(&format!("sqlite://{}", restored.display()))
        .start()
        .await;
    let admin = app.admin_bearer().await;
    let job = admin.job(id).await;
    assert_eq!(
        job["state"], "failed",
        "recovery ends the job the copy held running: {job}"
    );
    let lines = admin.all_lines(id).await;
    let served: Vec<String> = lines
        .iter()
        .filter(|l| l["seq"].as_i64().unwrap() <= before)
        .map(|l| format!("{} {}", l["seq"], l["text"].as_str().unwrap()))
        .collect();
    assert!(
        served == live_rows,
        "the restored server serves the lines as they were"
    );
    let stdout = texts(&lines, "stdout");
    for (i, text) in stdout.iter().enumerate() {
        assert_eq!(text, &format!("line {}", i + 1));
    }
}

/// The database a 0.1.0 server left behind (written by the release before
/// this one's changes; see server/tests/fixtures/README.md).
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every fixture database: `opsdeck-VERSION.db`, one per release.
fn fixtures() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn ship_a_database_of_every_earlier_release_migrates_and_serves_its_old_jobs_and_logs() {
    let all = fixtures();
    assert!(
        all.iter().any(|p| p.ends_with("opsdeck-0.1.0.db")),
        "the 0.1.0 fixture is committed: {all:?}"
    );
    let config = std::fs::read_to_string(fixture("upgrade.toml")).unwrap();
    for original in all {
        let version = original
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("opsdeck-")
            .to_string();
        // A copy: migrating changes the file, and the fixture must stay as
        // that release left it.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("opsdeck.db");
        std::fs::copy(&original, &db).unwrap();
        let url = format!("sqlite://{}", db.display());
        let app = TestApp::builder()
            .config(&config)
            .database_url(&url)
            .start()
            .await;

        // Migrated to this release's schema.
        let applied = query_column(&url, "SELECT COUNT(*) FROM seaql_migrations").await;
        assert_eq!(
            applied,
            [
                <migration::Migrator as migration::MigratorTrait>::migrations()
                    .len()
                    .to_string()
            ],
            "{version}: every migration applied"
        );

        // Its users are still there: the admin signs in with the password
        // the fixture was written with, and alice with hers.
        let admin = app.login("admin", "fixture-admin-password").await;
        let alice = app.login("alice", "alice-password-1").await;
        let (status, list) = alice.get_json("/api/jobs").await;
        assert_eq!(status, 200, "{list}");

        let (status, list) = admin.get_json("/api/jobs").await;
        assert_eq!(status, 200, "{version}: {list}");
        let jobs = list["jobs"].as_array().unwrap_or_else(|| panic!("{list}"));
        let by_template = |t: &str| {
            jobs.iter()
                .find(|j| j["template"] == t)
                .unwrap_or_else(|| panic!("{version}: no {t} job in {list}"))["id"]
                .as_i64()
                .unwrap()
        };

        let hello = admin.job(by_template("hello")).await;
        assert_eq!(hello["state"], "succeeded", "{version}: {hello}");
        assert_eq!(hello["target"], "t1");
        let lines = admin.all_lines(by_template("hello")).await;
        assert_eq!(texts(&lines, "stdout"), [format!("hello from {version}")]);

        let lines = admin.all_lines(by_template("interleave")).await;
        assert_eq!(texts(&lines, "stdout"), ["out 1", "out 2", "out 3"]);
        assert_eq!(texts(&lines, "stderr"), ["err 1", "err 2", "err 3"]);
        let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{version}: {seqs:?}");

        let failed = admin.job(by_template("exit")).await;
        assert_eq!(failed["state"], "failed", "{version}: {failed}");
        assert_eq!(failed["exit_code"], 2, "{version}: {failed}");
        let lines = admin.all_lines(by_template("exit")).await;
        assert_eq!(texts(&lines, "stderr"), ["something went wrong"]);

        // And it goes on working: a new job runs and is numbered after them.
        let id = admin
            .launch_ok("hello", "t1", serde_json::json!({"who": "the upgrade"}))
            .await;
        let job = admin.wait_finished(id, 30).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert!(jobs.iter().all(|j| j["id"].as_i64().unwrap() < id));
        assert_eq!(
            texts(&admin.all_lines(id).await, "stdout"),
            ["hello from the upgrade"]
        );
        app.stop().await;
    }
}
