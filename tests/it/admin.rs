//! The admin endpoint against a running sdl (real MariaDB and SecantusDB): routes that return row
//! contents need the token from `admin.token` in the WAL directory, which `sdl wal --config` sends;
//! health, metrics and status stay open; a dump is bounded per request (the CLI asks in pieces);
//! slow clients are disconnected after `admin.header_read_timeout`; at most
//! `admin.max_connections` are served at once; a non-loopback `admin.listen` is warned about.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::workload::Workload;
use crate::support::{free_port, run_sdl_with_output, wait_for_offset, MariaDb, Mongo, Relay, Sdl};

const TIMEOUT: Duration = Duration::from_secs(180);

/// GET `path` with an optional bearer token: (status, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::get(&format!("http://{addr}{path}"))
        .config()
        .http_status_as_error(false)
        .build();
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

/// Runs `sdl wal <args>`: (exit code, stdout, stderr).
fn sdl_wal(args: &[&str]) -> (i32, String, String) {
    run_sdl_with_output(&[&["wal"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_contents_need_the_admin_token_and_dumps_are_bounded() {
    let mut relay = Relay::builder().workload_tables().following().await;
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(12);
    workload.run(&mut conn, 40).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    wait_for_offset(&relay.mongo, &position, TIMEOUT, &relay.sdl).await;
    let records = workload.transactions;
    let addr = relay.sdl.admin_addr();

    // The token: 0600 in the WAL directory.
    let token_file = relay.sdl.wal_dir().join("admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", token_file.display());
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64, "{token}");

    // Row contents: 401 without the token (the answer says where it is), or with a wrong one.
    for path in ["/wal/show/2", "/wal/dump?from=1&to=3"] {
        for presented in [None, Some("0".repeat(64).as_str()), Some("")] {
            let (code, body) = get(&addr, path, presented);
            assert_eq!(code, 401, "{path} with {presented:?}: {body}");
            assert!(
                body.contains(&token_file.display().to_string()),
                "{path}: {body}"
            );
            assert!(!body.contains("\"documents\""), "{path}: {body}");
        }
    }
    let (code, body) = get(&addr, "/wal/show/2", Some(&token));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"documents\""), "{body}");
    let (code, body) = get(&addr, "/wal/dump?from=1&to=3", Some(&token));
    assert_eq!(code, 200, "{body}");
    // A dump is change documents, one a line: those of three records (transactions).
    assert_eq!(transactions_in(&body).len(), 3, "{body}");
    // The scheme is case-insensitive.
    let mut response = ureq::get(&format!("http://{addr}/wal/show/2"))
        .header("Authorization", format!("bearer {token}"))
        .call()
        .unwrap();
    assert!(response
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("\"documents\""));

    // Everything without row data stays open.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/status",
        "/wal/stats",
        "/wal/list?from=1&limit=5",
        "/wal/verify",
    ] {
        let (code, body) = get(&addr, path, None);
        assert_eq!(code, 200, "{path}: {body}");
    }

    // Bounded: one request covers at most 10000 records; the 400 names the limit.
    let (code, body) = get(&addr, "/wal/dump?from=1&to=10001", Some(&token));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("10000"), "{body}");
    let (code, body) = get(&addr, "/wal/dump?from=1&to=10000", Some(&token));
    assert_eq!(code, 200, "{body}");
    assert_eq!(transactions_in(&body).len() as u64, records, "{body}");
    let in_mongodb = relay.documents().await.len();
    assert_eq!(body.lines().count(), in_mongodb, "{body}");
    let (code, body) = get(&addr, "/wal/list?limit=10001", None);
    assert_eq!(code, 400, "{body}");

    // The CLI reads the token through --config, and asks for a large range in pieces.
    let config = relay.sdl.config_path.display().to_string();
    let (code, stdout, stderr) = sdl_wal(&["show", "2", "--config", &config]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("position after:"), "{stdout}");
    let (code, stdout, stderr) =
        sdl_wal(&["dump", "--from", "1", "--to", "25000", "--config", &config]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(transactions_in(&stdout).len() as u64, records, "{stdout}");
    assert_eq!(stdout.lines().count(), in_mongodb, "{stdout}");
    // ... and through --admin with the WAL directory.
    let wal_dir = relay.sdl.wal_dir().display().to_string();
    let (code, _, stderr) = sdl_wal(&["show", "2", "--dir", &wal_dir, "--admin", &addr]);
    assert_eq!(code, 0, "{stderr}");

    // Kept across restarts.
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    relay.sdl.start();
    support::wait_until("the restarted sdl's admin endpoint", TIMEOUT, || async {
        ureq::get(&format!("http://{addr}/healthz"))
            .call()
            .ok()
            .map(|_| ())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        token,
        "the token changed at restart"
    );
    let (code, _) = get(&addr, "/wal/show/2", Some(&token));
    assert_eq!(code, 200);
}

/// The distinct `meta.gtid`s of a dump's change documents, in order.
fn transactions_in(dump: &str) -> Vec<String> {
    let mut gtids: Vec<String> = Vec::new();
    for line in dump.lines() {
        let document: serde_json::Value = serde_json::from_str(line).unwrap();
        let gtid = document["meta"]["gtid"].as_str().unwrap().to_string();
        if gtids.last() != Some(&gtid) {
            gtids.push(gtid);
        }
    }
    gtids
}

/// Reads until the server closes the connection; returns how long that took, or None when it
/// stayed open for `limit`.
fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_hold_the_admin_endpoint() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let port = free_port();
    let mut sdl = Sdl::with_settings(
        &mariadb,
        &mongo,
        "current",
        &[
            // Not loopback: warned about.
            ("admin", &format!("listen = \"0.0.0.0:{port}\"")),
            ("admin", "header_read_timeout = \"3s\""),
            ("admin", "max_connections = 3"),
        ],
    );
    sdl.start();
    sdl.wait_following().await;
    assert!(
        sdl.logs().contains("WARN")
            && sdl.logs().contains(&format!(
                "admin.listen = 0.0.0.0:{port} is not a loopback address"
            )),
        "{}",
        sdl.logs()
    );
    let addr = format!("127.0.0.1:{port}");

    // max_connections idle clients hold every slot: one more is not answered ...
    let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // The listen backlog is first in, first out: these three are accepted, the next one waits.
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: sdl\r\nConnection: close\r\n\r\n")
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut answer = String::new();
    let waited = extra.read_to_string(&mut answer);
    assert!(
        waited.is_err() && answer.is_empty(),
        "a 4th connection was served while 3 idle ones held every slot: {answer}"
    );
    // ... until they close; then it is answered.
    idle.clear();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    extra.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    assert_eq!(sdl.admin_get("/healthz"), (200, "ok".to_string()));

    // Slowloris: half a request header, then silence. Disconnected after header_read_timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: sdl\r\n")
        .unwrap();
    let closed = time_until_closed(&mut slow, Duration::from_secs(15))
        .expect("a client sending half a header was not disconnected within 15 s");
    eprintln!("half-header client disconnected after {closed:?} (header_read_timeout 3s)");
    assert!(
        closed >= Duration::from_secs(2) && closed < Duration::from_secs(8),
        "disconnected after {closed:?}, header_read_timeout is 3s"
    );
    // An idle connection (nothing sent) likewise.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let closed = time_until_closed(&mut silent, Duration::from_secs(15))
        .expect("an idle client was not disconnected within 15 s");
    assert!(closed < Duration::from_secs(8), "{closed:?}");
    assert_eq!(sdl.admin_get("/healthz"), (200, "ok".to_string()));
}
