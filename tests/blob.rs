//! The direct mover against a real Azurite: round trips, AMLFS metadata, hostile names,
//! conflict modes, faults and kills.

#[path = "common/azurite.rs"]
mod azurite;
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use azurite::{Azurite, listing, put, raw, stage_env};
use common::*;
use futures::StreamExt;
use stage::store::azure::{Location, credential};

/// Relative path → length and a digest, so a failed comparison prints names, not bytes.
fn digests(ws: &Workspace, rel: &str) -> BTreeMap<String, (usize, String)> {
    ws.tree(rel)
        .into_iter()
        .map(|(k, v)| (k, (v.len(), stage::digest::md5_hex(&v))))
        .collect()
}

fn modes(base: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for e in walk(base) {
        let m = std::fs::symlink_metadata(base.join(&e)).unwrap();
        out.insert(e, m.mode() & 0o7777);
    }
    out
}

fn walk(base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn chmod(ws: &Workspace, rel: &str, mode: u32) {
    std::fs::set_permissions(ws.path().join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Names that are awkward but legal, in files and directories.
fn awkward_tree(ws: &Workspace) {
    ws.write("src/plain.txt", "plain\n");
    ws.write("src/with space/it's \"quoted\".txt", "q\n");
    ws.write("src/ünï/cødé ✓.txt", "unicode\n");
    ws.write("src/empty", "");
    ws.write("src/a.txt", "sorts before a/\n");
    ws.write("src/a/b.txt", "under a\n");
    ws.write(
        "src/big.bin",
        (0..20_000_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    std::fs::create_dir_all(ws.path().join("src/empty dir")).unwrap();
    chmod(ws, "src/a", 0o750);
    chmod(ws, "src/plain.txt", 0o600);
}

#[test]
fn export_then_import_round_trips_content_names_modes_and_empty_things() {
    let az = Azurite::start();
    let ws = Workspace::new();
    awkward_tree(&ws);
    let url = az.url("round/trip");
    let o = stage_env(&ws, &["export", "src", &url]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "7 files exported");
    let o = stage_env(&ws, &["import", &url, "dst"]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "7 files imported");
    assert_eq!(digests(&ws, "dst"), digests(&ws, "src"));
    assert_eq!(modes(&ws.path().join("dst")), modes(&ws.path().join("src")));
    // Both again: nothing to move.
    let o = stage_env(&ws, &["export", "src", &url]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "0 files exported (0 B), 7 unchanged");
    let o = stage_env(&ws, &["import", &url, "dst"]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "0 files imported (0 B), 7 up to date");
    // A changed file goes again, alone.
    ws.write("src/a/b.txt", "changed\n");
    let o = stage_env(&ws, &["export", "src", &url]);
    assert_has(&o.stderr, "1 file exported");
    // No temporary names left anywhere.
    assert!(
        walk(&ws.path().join("dst"))
            .iter()
            .all(|n| !n.contains(".stage-tmp"))
    );

    // A newline cannot travel in a URL: refused and reported, never renamed on the way.
    ws.write("src/new\nline", "newline in the name\n");
    let o = stage_env(&ws, &["export", "src", &url]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "control character");
    let o = stage_env(&ws, &["export", "--max-errors", "1", "src", &url]);
    assert_exit(&o, 0);
    let o = stage_env(&ws, &["import", &url, "dst2"]);
    assert_exit(&o, 0);
    assert!(!ws.path().join("dst2/newline").exists());
    assert_eq!(ws.tree("dst2").len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_metadata_is_what_amlfs_writes_and_reads() {
    let az = Azurite::start();
    let ws = Workspace::new();
    ws.write("src/dir/f.txt", "x");
    chmod(&ws, "src/dir/f.txt", 0o640);
    chmod(&ws, "src/dir", 0o710);
    std::os::unix::fs::lchown(ws.path().join("src/dir/f.txt"), Some(1234), Some(5678)).unwrap();
    let o = stage_env(&ws, &["export", "src", &az.url("meta")]);
    assert_exit(&o, 0);
    let blobs = listing(&raw(&az, "meta")).await;
    let f = &blobs["dir/f.txt"];
    assert_eq!(f["permissions"], "0640");
    assert_eq!(f["owner"], "1234");
    assert_eq!(f["group"], "5678");
    let d = &blobs["dir"];
    assert_eq!(d["hdi_isfolder"], "true");
    assert_eq!(d["permissions"], "0710");

    // The other way: a container as AMLFS archives it.
    let c = raw(&az, "amlfs");
    c.create(None).await.unwrap();
    put(
        &c,
        "run1",
        b"",
        &[
            ("hdi_isfolder", "true"),
            ("permissions", "0700"),
            ("owner", "42"),
            ("group", "43"),
        ],
    )
    .await;
    put(
        &c,
        "run1/out.dat",
        b"data",
        &[
            ("permissions", "0604"),
            ("owner", "4242"),
            ("group", "4343"),
        ],
    )
    .await;
    put(&c, "plain.txt", b"no metadata", &[]).await;
    let o = stage_env(&ws, &["import", &az.url("amlfs"), "dst"]);
    assert_exit(&o, 0);
    let m = std::fs::metadata(ws.path().join("dst/run1/out.dat")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o604, 4242, 4343));
    let m = std::fs::metadata(ws.path().join("dst/run1")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 42, 43));
    let m = std::fs::metadata(ws.path().join("dst/plain.txt")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o644);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_blob_names_are_refused_counted_and_never_written() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let c = raw(&az, "hostile");
    c.create(None).await.unwrap();
    put(&c, "ok.txt", b"fine", &[]).await;
    for evil in ["a/../../escape.txt", "./dot.txt", "a//b.txt", "/abs.txt"] {
        put(&c, evil, b"evil", &[]).await;
    }
    let names = listing(&c).await;
    assert!(names.len() >= 4, "azurite kept only {names:?}");
    // Refused names are errors: with the default of 0 the job fails, nothing escapes.
    let o = stage_env(&ws, &["import", &az.url("hostile"), "dst"]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "refusing name");
    let o = stage_env(
        &ws,
        &["import", "--max-errors", "-1", &az.url("hostile"), "dst"],
    );
    assert_exit(&o, 0);
    assert_eq!(walk(&ws.path().join("dst")), vec!["ok.txt".to_string()]);
    assert!(!ws.path().join("escape.txt").exists());
    assert!(!Path::new("/escape.txt").exists());
}

/// AMLFS conflict modes against a changed blob, for a path that is clean, dirty or absent.
#[tokio::test(flavor = "multi_thread")]
async fn conflict_modes_against_azurite() {
    let az = Azurite::start();
    let c = raw(&az, "conflicts");
    c.create(None).await.unwrap();
    let cases = [
        // (mode, local state, expected content, exit)
        ("fail", "clean", "v1", 1),
        ("fail", "dirty", "local", 1),
        ("fail", "absent", "v2", 0),
        ("skip", "clean", "v1", 0),
        ("skip", "dirty", "local", 0),
        ("skip", "absent", "v2", 0),
        ("overwrite-if-dirty", "clean", "v1", 0),
        ("overwrite-if-dirty", "dirty", "v2", 0),
        ("overwrite-if-dirty", "absent", "v2", 0),
        ("overwrite-always", "clean", "v2", 0),
        ("overwrite-always", "dirty", "v2", 0),
        ("overwrite-always", "absent", "v2", 0),
    ];
    for (mode, local, want, code) in cases {
        let ws = Workspace::new();
        put(&c, "f.txt", b"v1", &[]).await;
        assert_exit(&stage_env(&ws, &["import", &az.url("conflicts"), "dst"]), 0);
        let f = ws.path().join("dst/f.txt");
        match local {
            "dirty" => std::fs::write(&f, "local").unwrap(),
            "absent" => std::fs::remove_file(&f).unwrap(),
            _ => {}
        }
        put(&c, "f.txt", b"v2", &[]).await;
        let o = stage_env(
            &ws,
            &["import", "--conflict", mode, &az.url("conflicts"), "dst"],
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "{mode}/{local}: {}",
            text(&o.stderr)
        );
        let got = std::fs::read_to_string(&f).unwrap_or_default();
        assert_eq!(got, want, "{mode}/{local}");
        // An unchanged blob over an untouched clean copy is never a conflict.
        if local == "clean" && code == 0 {
            let o = stage_env(
                &ws,
                &["import", "--conflict", "fail", &az.url("conflicts"), "dst"],
            );
            if want == "v2" {
                assert_exit(&o, 0);
            }
        }
    }
}

#[test]
fn a_killed_import_and_export_resume_at_file_granularity() {
    let az = Azurite::start();
    let ws = Workspace::new();
    for i in 0..300 {
        ws.write(
            &format!("src/d{}/f{i:03}", i % 7),
            format!("file {i}\n").repeat(i + 1),
        );
    }
    let url = az.url("resume");
    for point in ["export.after-intent", "export.after-copy:120"] {
        let o = azurite::stage(&ws, &["export", "--transfers", "4", "src", &url])
            .env("STAGE_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            None,
            "{point}: should be killed: {}",
            text(&o.stderr)
        );
    }
    let o = stage_env(&ws, &["export", "src", &url]);
    assert_exit(&o, 0);
    for point in [
        "import.after-intent",
        "import.after-copy:150",
        "journal.flush:2",
    ] {
        let o = azurite::stage(&ws, &["import", "--transfers", "4", &url, "dst"])
            .env("STAGE_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            None,
            "{point}: should be killed: {}",
            text(&o.stderr)
        );
    }
    // The partial copies are our own interrupted import: finished, not conflicts.
    let o = stage_env(&ws, &["import", "--conflict", "fail", &url, "dst"]);
    assert_exit(&o, 0);
    assert_eq!(digests(&ws, "dst"), digests(&ws, "src"));
    assert!(
        walk(&ws.path().join("dst"))
            .iter()
            .all(|n| !n.contains(".stage-tmp"))
    );
}

#[test]
fn a_file_over_256_mib_streams_through_in_blocks() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let big = ws.path().join("src/big.bin");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let chunk: Vec<u8> = (0..(1 << 20))
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for i in 0..257u32 {
            f.write_all(&chunk).unwrap();
            f.write_all(&i.to_le_bytes()).unwrap();
        }
    }
    let url = az.url("big");
    assert_exit(&stage_env(&ws, &["export", "src", &url]), 0);
    assert_exit(&stage_env(&ws, &["import", &url, "dst"]), 0);
    let same = std::process::Command::new("cmp")
        .arg(&big)
        .arg(ws.path().join("dst/big.bin"))
        .status()
        .unwrap();
    assert!(same.success());
}

#[test]
fn secrets_stay_out_of_state_output_and_errors() {
    let az = Azurite::start();
    let ws = Workspace::new();
    ws.write("src/f.txt", "x");
    let loc = Location::parse(&az.url("secret")).unwrap();
    let sas = credential::account_sas(credential::DEV_ACCOUNT, credential::DEV_KEY, &loc).unwrap();
    let sas = sas.secret().to_string();
    let sig = sas.split("sig=").nth(1).unwrap().to_string();
    let run = |args: &[&str]| {
        ws.cmd(args)
            .env("AZURE_STORAGE_SAS_TOKEN", &sas)
            .env("STAGE_LOG", "debug")
            .output()
            .unwrap()
    };
    let mut outputs = vec![run(&["export", "src", &az.url("secret")])];
    assert_exit(&outputs[0], 0);
    outputs.push(run(&[
        "--output",
        "json",
        "import",
        &az.url("secret"),
        "dst",
    ]));
    // A failing request quotes its URL: the signature must not come with it.
    let mut dead = Azurite::start();
    dead.stop();
    outputs.push(run(&["import", &dead.url("secret"), "dst2"]));
    assert_exit(&outputs[2], 1);
    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            let s = text(stream);
            assert!(!s.contains(&sig), "signature leaked: {s}");
            assert!(!s.contains(credential::DEV_KEY));
        }
    }
    for f in walk(&ws.state()) {
        let p = ws.state().join(&f);
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains(&sig), "signature stored in {f}");
        }
    }
}

/// A TCP proxy in front of Azurite that answers some connections with 503 and cuts others
/// mid-response: the faults a real network and a throttled account produce.
struct FaultyProxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub faults: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyProxy {
    fn start(upstream: u16) -> FaultyProxy {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let faults = std::sync::Arc::new(AtomicUsize::new(0));
        let (s, f) = (stop.clone(), faults.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) {
                let Ok((mut client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                n += 1;
                let f = f.clone();
                std::thread::spawn(move || {
                    if n % 4 == 1 {
                        // Throttled: read the request head, answer 503, close.
                        let mut buf = [0u8; 4096];
                        let _ = client.read(&mut buf);
                        let _ = client.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        f.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut u2);
                        let _ = u2.shutdown(Shutdown::Write);
                    });
                    // Every fourth connection is cut after a few kilobytes of response.
                    let limit = if n % 4 == 3 { 6_000 } else { u64::MAX };
                    let copied =
                        std::io::copy(&mut (&mut up).take(limit), &mut client).unwrap_or(0);
                    if copied >= limit {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = up.shutdown(Shutdown::Both);
                });
            }
        });
        FaultyProxy { port, stop, faults }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1/{path}", self.port)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn throttling_and_cut_connections_are_retried_with_nothing_lost_or_corrupt() {
    let az = Azurite::start();
    let proxy = FaultyProxy::start(az.port);
    let ws = Workspace::new();
    for i in 0..120 {
        ws.write(&format!("src/f{i:03}"), format!("{i} ").repeat(2_000 + i));
    }
    ws.write(
        "src/large.bin",
        (0..12_000_000u32)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<_>>(),
    );
    let o = stage_env(
        &ws,
        &["export", "--transfers", "8", "src", &proxy.url("faulty")],
    );
    assert_exit(&o, 0);
    assert_has(&o.stderr, "121 files exported");
    let o = stage_env(
        &ws,
        &["import", "--transfers", "8", &proxy.url("faulty"), "dst"],
    );
    assert_exit(&o, 0);
    assert_eq!(digests(&ws, "dst"), digests(&ws, "src"));
    // Straight from Azurite too: what the proxy let through was stored whole.
    let o = stage_env(&ws, &["import", &az.url("faulty"), "dst2"]);
    assert_exit(&o, 0);
    assert_eq!(digests(&ws, "dst2"), digests(&ws, "src"));
    let faults = proxy.faults.load(std::sync::atomic::Ordering::Relaxed);
    assert!(faults >= 4, "the proxy injected only {faults} faults");
}

#[test]
fn blob_service_lost_mid_export_then_a_rerun_restores_everything() {
    let mut az = Azurite::start();
    let ws = Workspace::new();
    for i in 0..1500 {
        ws.write(
            &format!("src/d{}/f{i:04}", i % 10),
            format!("{i}\n").repeat(50),
        );
    }
    let url = az.url("lost");
    let mut child = azurite::stage(&ws, &["export", "--transfers", "4", "src", &url])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    // In-memory Azurite: everything stored so far is gone with it.
    az.restart();
    let first = child.wait().unwrap();
    assert!(first.code().is_some(), "export must end on its own");
    // Whatever the first run concluded, the next one finds the container's real state.
    let o = stage_env(&ws, &["export", "--max-errors", "-1", "src", &url]);
    assert_exit(&o, 0);
    let o = stage_env(&ws, &["import", &url, "dst"]);
    assert_exit(&o, 0);
    assert_eq!(digests(&ws, "dst"), digests(&ws, "src"));
}

#[test]
fn the_genomics_pipeline_stages_through_azurite_with_the_direct_mover() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let p = ws.genomics();
    let url = az.url("genomics");
    // The inputs go into the container first, as a user would upload them.
    assert_exit(
        &stage_env(&ws, &["export", "pipelines/data/genomics", &url]),
        0,
    );
    let text_in = std::fs::read_to_string(&p).unwrap();
    let yaml = text_in
        .replace("container: data/genomics ", &format!("container: {url} "))
        .replace(
            "conflict: overwrite-if-dirty",
            "conflict: overwrite-if-dirty\n      mover: direct",
        )
        .replace(
            "outputs_of: [qc, merge]",
            "outputs_of: [qc, merge]\n      mover: direct",
        );
    assert_ne!(yaml, text_in);
    std::fs::write(&p, yaml).unwrap();
    let pipeline = p.to_str().unwrap();
    let o = stage_env(&ws, &["run", pipeline]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "5 files imported");
    // The results are in the container: fetch them back and compare with the golden run.
    assert_exit(
        &stage_env(&ws, &["import", &az.url("genomics/results"), "fetched"]),
        0,
    );
    let golden = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/genomics-summary.tsv"
    ))
    .unwrap();
    let summary = std::fs::read(ws.path().join("fetched/summary.tsv")).unwrap();
    assert_eq!(text(&summary), text(&golden));
    assert_eq!(ws.tree("fetched").len(), 5);
    let o = stage_env(&ws, &["run", pipeline]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "nothing to do");
}

/// A blob whose bytes no longer match the checksum recorded with it (storage rot, or a tool
/// that rewrote the content and kept the metadata) is refused and never written under its
/// name: stage's CRC for a blob read in one GET and for one read in ranges, and Content-MD5
/// for blobs other tools wrote.
#[tokio::test(flavor = "multi_thread")]
async fn content_that_does_not_match_its_recorded_checksum_is_refused() {
    use azure_storage_blob::models::BlobClientSetPropertiesOptions;
    use stage::store::checksum::{Hasher, Sum};
    let crc = |data: &[u8]| {
        let mut h = Hasher::crc64();
        h.update(data);
        match h.finish() {
            Some(Sum::Crc64(v)) => Sum::crc64_hex(v),
            other => panic!("not a CRC: {other:?}"),
        }
    };
    let az = Azurite::start();
    let ws = Workspace::new();
    let c = raw(&az, "rot");
    c.create(None).await.unwrap();
    put(&c, "good", b"good", &[("stage_crc64", &crc(b"good"))]).await;
    put(&c, "small", b"rotten", &[("stage_crc64", &crc(b"intact"))]).await;
    // Larger than one ranged GET (64 MiB): one flipped bit in the second range.
    let intact: Vec<u8> = (0..65u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut rotten = intact.clone();
    rotten[66_000_000] ^= 1;
    put(&c, "large", &rotten, &[("stage_crc64", &crc(&intact))]).await;
    drop((intact, rotten));
    put(&c, "md5", b"changed", &[]).await;
    c.blob_client("md5")
        .set_properties(Some(BlobClientSetPropertiesOptions {
            blob_content_md5: Some(<md5::Md5 as md5::Digest>::digest(b"original").to_vec()),
            ..Default::default()
        }))
        .await
        .unwrap();

    let o = stage_env(
        &ws,
        &["import", "--max-errors", "-1", &az.url("rot"), "dst"],
    );
    assert_exit(&o, 0);
    for (name, check) in [("small", "CRC64"), ("large", "CRC64"), ("md5", "MD5")] {
        let line = String::from_utf8_lossy(&o.stderr)
            .lines()
            .find(|l| l.contains(name) && l.contains("does not match") && l.contains("damaged"))
            .map(str::to_string);
        assert!(
            line.as_deref().is_some_and(|l| l.contains(check)),
            "no {check} failure reported for {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(walk(&ws.path().join("dst")), vec!["good".to_string()]);
}

/// A blob rewritten between listing and reading is not read: the read asks for the listed
/// version, so new content is never written under the old version's ETag and checksum (or
/// mixed across the ranges of a large blob). The file is reported and the next listing
/// brings the new version.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_rewritten_after_listing_is_not_read_as_the_listed_version() {
    use stage::store::{AzureStore, BlobStore};
    let az = Azurite::start();
    let c = raw(&az, "moving");
    c.create(None).await.unwrap();
    put(&c, "f", b"first", &[]).await;
    let url = az.url("moving");
    let loc = Location::parse(&url).unwrap();
    let sas = credential::account_sas(credential::DEV_ACCOUNT, credential::DEV_KEY, &loc).unwrap();
    let store = AzureStore::new(loc, credential::Credential::Sas(sas)).unwrap();
    let listed = match store.list("").next().await.unwrap().unwrap() {
        stage::store::Listing::Entry(e) => e,
        other => panic!("{other:?}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let (n, _) = store.download(&listed, &dest).await.unwrap();
    assert_eq!(n, 5);

    put(&c, "f", b"other", &[]).await;
    let err = store.download(&listed, &dest).await.unwrap_err();
    assert!(
        err.to_string().contains("changed since it was listed"),
        "{err}"
    );
    let relisted = match store.list("").next().await.unwrap().unwrap() {
        stage::store::Listing::Entry(e) => e,
        other => panic!("{other:?}"),
    };
    store.download(&relisted, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"other");
}

/// A service that accepts connections and closes them unanswered fails the export after the
/// SDK's retries of the first request (five connections), with the cause in one line naming
/// the URL once, instead of five more rounds of our own whole-file retries on top (25).
#[test]
fn an_unanswering_service_fails_the_export_after_one_round_of_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(stream);
        }
    });
    let ws = Workspace::new();
    ws.write("src/a", "a");
    let url = format!("http://127.0.0.1:{port}/devstoreaccount1/cont");
    let o = stage_env(&ws, &["export", "src", &url]);
    assert_exit(&o, 1);
    let err = text(&o.stderr);
    // Closed before or after the request was written: the kernel's word for it depends on
    // timing (a loaded machine sees the reset more often).
    assert!(
        err.contains("connection closed") || err.contains("Connection reset by peer"),
        "{err}"
    );
    assert_eq!(err.matches(&url).count(), 1, "{err}");
    assert!(!err.contains("retry policy expired"), "{err}");
    let n = connections.load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..=5).contains(&n), "{n} connections");
}

/// With `--max-errors 0` an import starts no transfer after its first error, however large its
/// batch (10,000 entries are decided before copying starts); the files it did not attempt are
/// not lost: the next run takes them up.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_starts_nothing_more_once_over_its_error_limit() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let c = raw(&az, "limit");
    c.create(None).await.unwrap();
    for i in 0..200 {
        put(
            &c,
            &format!("f{i:03}"),
            b"rotten",
            &[("stage_crc64", "0123456789abcdef")],
        )
        .await;
    }
    let o = stage_env(
        &ws,
        &["import", "--transfers", "4", &az.url("limit"), "dst"],
    );
    assert_exit(&o, 1);
    let attempted = text(&o.stderr)
        .lines()
        .filter(|l| l.contains("does not match"))
        .count();
    assert!(
        (1..=4).contains(&attempted),
        "{attempted} files failed, not just those in flight at the first error:\n{}",
        text(&o.stderr)
    );
    let o = stage_env(
        &ws,
        &["import", "--max-errors", "-1", &az.url("limit"), "dst"],
    );
    assert_has(&o.stderr, "200 errors");
}
