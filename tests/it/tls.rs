//! TLS to both ends, against real servers that require it: a throwaway CA, server and client
//! certificates made with the `openssl` command; MariaDB with `--ssl-*` and a user created
//! `REQUIRE X509`; SecantusDB with `--tls-*` requiring client certificates. sdl relays over TLS,
//! `sdl check` reports the encryption, and a wrong CA, a missing client certificate, a wrong host
//! name or an unusable file each fail with an error that names the setting to fix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{change_documents, run_sdl, wait_for_offset, MariaDb, Mongo, Sdl};
use mongodb::bson::doc;
use mysql_async::prelude::Queryable;
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(120);

/// A throwaway public-key infrastructure: a CA, a server certificate for 127.0.0.1 and localhost,
/// a client certificate, a server certificate for another name, and an unrelated second CA.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sdl-pki-")
            .tempdir()
            .unwrap();
        let pki = Self { dir };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        pki.leaf(
            "elsewhere",
            "ca",
            "subjectAltName=DNS:db.sdl.test\nextendedKeyUsage=serverAuth",
        );
        pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
        // MongoDB's convention: the client certificate and its key in one file.
        let pem = [pki.path("client.crt"), pki.path("client.key")]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect::<String>();
        std::fs::write(pki.path("client.pem"), pem).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `openssl` with `command`'s words as arguments, in the PKI directory.
    fn openssl(&self, command: &str) {
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN=sdl-test-{name} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign -keyout {name}.key -out {name}.crt"
        ));
    }

    /// A certificate `name` signed by `ca`, with the X.509 `extensions` (one per line).
    fn leaf(&self, name: &str, ca: &str, extensions: &str) {
        std::fs::write(self.path(&format!("{name}.ext")), extensions).unwrap();
        self.openssl(&format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=sdl-test-{name} \
             -keyout {name}.key -out {name}.csr"
        ));
        self.openssl(&format!(
            "x509 -req -in {name}.csr -days 2 -CA {ca}.crt -CAkey {ca}.key -CAcreateserial \
             -extfile {name}.ext -out {name}.crt"
        ));
    }

    /// A TOML line `key = "path"`.
    fn setting(&self, key: &str, file: &str) -> String {
        format!("{key} = \"{}\"", self.path(file).display())
    }
}

/// `sdl check` on `config`: (exit code, the table on stdout, stderr).
fn sdl_check(config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(table: &'a str, check: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{table}"))
}

/// `sdl run` on a config expected to fail at start: its exit code and error output.
fn run_failing(sdl: &Sdl) -> (Option<i32>, String) {
    let (code, stderr) = run_sdl(&["run", "--config", &sdl.config_path.display().to_string()]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (code, stderr)
}

/// sdl (over TLS, as configured) relays three inserts into `app.t`, then stops cleanly.
async fn relays_three_inserts(
    sdl: &mut Sdl,
    root: &mut mysql_async::Conn,
    mariadb: &MariaDb,
    mongo: &Mongo,
) {
    sdl.start();
    sdl.wait_following().await;
    for id in 1..=3 {
        root.query_drop(format!("INSERT INTO app.t VALUES ({id})"))
            .await
            .unwrap();
    }
    wait_for_offset(mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, sdl).await;
    assert_eq!(count_documents(mongo, "t").await, 3);
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}

async fn count_documents(mongo: &Mongo, table: &str) -> usize {
    change_documents(mongo)
        .await
        .iter()
        .filter(|d| d.get_document("meta").unwrap().get_str("tbl").ok() == Some(table))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_over_tls_with_a_client_certificate() {
    let pki = Pki::generate();
    let ssl = [
        format!("--ssl-ca={}", pki.path("ca.crt").display()),
        format!("--ssl-cert={}", pki.path("server.crt").display()),
        format!("--ssl-key={}", pki.path("server.key").display()),
    ];
    let ssl: Vec<&str> = ssl.iter().map(String::as_str).collect();
    let (mariadb, mongo) = tokio::join!(MariaDb::start_with(&ssl), Mongo::start());
    let mut root = mariadb.root_conn().await;
    root.query_drop("ALTER USER 'sdl'@'%' REQUIRE X509")
        .await
        .unwrap();
    root.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // Without TLS and a client certificate the sdl user cannot log in: sdl's logins below are
    // encrypted and present the certificate.
    let plain = mysql_async::Conn::from_url(mariadb.sdl_url().as_str()).await;
    assert!(
        plain
            .as_ref()
            .is_err_and(|e| e.to_string().contains("Access denied")),
        "a plain login as sdl must be refused: {plain:?}"
    );

    let ca = pki.setting("tls_ca_file", "ca.crt");
    let cert = pki.setting("tls_cert_file", "client.crt");
    let key = pki.setting("tls_key_file", "client.key");
    let tls = |extra: &[(&'static str, String)]| {
        let mut settings = vec![
            ("source", "tls = \"on\"".to_string()),
            ("source", ca.clone()),
            ("source", cert.clone()),
            ("source", key.clone()),
        ];
        settings.extend(extra.iter().cloned());
        let settings: Vec<(&str, &str)> = settings.iter().map(|(s, l)| (*s, l.as_str())).collect();
        Sdl::with_settings(&mariadb, &mongo, "current", &settings)
    };

    let mut sdl = tls(&[]);
    let (code, table, stderr) = sdl_check(&sdl.config_path);
    assert_eq!(code, Some(0), "{table}\n{stderr}");
    let encryption = line(&table, "source: encryption");
    assert!(
        encryption.starts_with("PASS")
            && encryption.contains("TLS (TLSv1.")
            && encryption.contains("for the host in source.url, client certificate presented"),
        "{table}"
    );

    relays_three_inserts(&mut sdl, &mut root, &mariadb, &mongo).await;

    // A CA that did not sign the server's certificate: refused at start, exit code 1.
    let wrong_ca = tls(&[("source", pki.setting("tls_ca_file", "other-ca.crt"))]);
    let (code, stderr) = run_failing(&wrong_ca);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS to the source database")
            && stderr.contains("UnknownIssuer")
            && stderr.contains("source.tls_ca_file holds the CA"),
        "{stderr}"
    );

    // TLS without the client certificate the user requires: the login is refused.
    let no_cert = tls(&[]);
    let config = std::fs::read_to_string(&no_cert.config_path).unwrap();
    let config = config
        .replace(&format!("{cert}\n"), "")
        .replace(&format!("{key}\n"), "");
    std::fs::write(&no_cert.config_path, config).unwrap();
    let (code, stderr) = run_failing(&no_cert);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("refused the login") && stderr.contains("REQUIRE X509"),
        "{stderr}"
    );

    // The server now presents a certificate for another name (same CA): the host name check
    // refuses it; naming the certificate's name explicitly accepts it.
    std::fs::copy(pki.path("elsewhere.crt"), pki.path("server.crt")).unwrap();
    std::fs::copy(pki.path("elsewhere.key"), pki.path("server.key")).unwrap();
    root.query_drop("FLUSH SSL").await.unwrap();
    let (code, table, _) = sdl_check(&sdl.config_path);
    assert_eq!(code, Some(1), "{table}");
    let login = line(&table, "source: reachable, login");
    assert!(
        login.starts_with("FAIL") && login.contains("not valid for name"),
        "{table}"
    );
    let renamed = tls(&[("source", "tls_server_name = \"db.sdl.test\"".to_string())]);
    let (code, table, stderr) = sdl_check(&renamed.config_path);
    assert_eq!(code, Some(0), "{table}\n{stderr}");
    assert!(
        line(&table, "source: encryption").contains("for the name db.sdl.test"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_over_tls_with_a_client_certificate() {
    let pki = Pki::generate();
    let [ca, cert, key, client] =
        ["ca.crt", "server.crt", "server.key", "client.pem"].map(|f| pki.path(f));
    let (mariadb, mongo) = tokio::join!(
        MariaDb::start(),
        Mongo::start_tls(&ca, &cert, &key, &client)
    );
    // The server talks to nobody without TLS and a client certificate.
    for options in [
        "".to_string(),
        format!("&tls=true&tlsCAFile={}", pki.path("ca.crt").display()),
    ] {
        let uri = format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=2000{options}",
            mongo.port()
        );
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let ping = client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await;
        assert!(ping.is_err(), "{uri} must be refused");
    }
    let mut root = mariadb.root_conn().await;
    root.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .unwrap();

    let url = format!("url = \"{}\"", mongo.uri_without_tls());
    let tls = |ca: &str, cert_key: Option<&str>| {
        let mut settings = vec![
            url.clone(),
            "tls = \"on\"".to_string(),
            pki.setting("tls_ca_file", ca),
            "connect_timeout = \"3s\"".to_string(),
        ];
        settings.extend(cert_key.map(|f| pki.setting("tls_cert_key_file", f)));
        let settings: Vec<(&str, &str)> = settings.iter().map(|l| ("sink", l.as_str())).collect();
        Sdl::with_settings(&mariadb, &mongo, "current", &settings)
    };

    let mut sdl = tls("ca.crt", Some("client.pem"));
    let (code, table, stderr) = sdl_check(&sdl.config_path);
    assert_eq!(code, Some(0), "{table}\n{stderr}");
    let encryption = line(&table, "sink: encryption");
    assert!(
        encryption.starts_with("PASS")
            && encryption.contains("TLS, server certificate verified against")
            && encryption.contains("client certificate presented"),
        "{table}"
    );

    relays_three_inserts(&mut sdl, &mut root, &mariadb, &mongo).await;

    // A CA that did not sign the server's certificate.
    let (code, stderr) = run_failing(&tls("other-ca.crt", Some("client.pem")));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS to MongoDB") && stderr.contains("sink.tls_ca_file holds the CA"),
        "{stderr}"
    );
    // (The harness writes client.pem readable by everyone: sdl says so.)
    assert!(
        stderr.contains("holds a private key and is readable by every user"),
        "{stderr}"
    );
    // No client certificate, which the server requires.
    let (code, stderr) = run_failing(&tls("ca.crt", None));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("sink.tls_cert_key_file"), "{stderr}");
}

#[test]
fn unusable_tls_files_are_configuration_errors() {
    let pki = Pki::generate();
    std::fs::write(pki.path("not-pem.crt"), "just some text\n").unwrap();
    let config = |source: &str, sink: &str| {
        let path = pki.path("sdl.toml");
        std::fs::write(
            &path,
            format!(
                "[source]\nurl = \"mysql://sdl:pw@127.0.0.1:1\"\nserver_id = 4242\n{source}\n\
                 [wal]\ndir = \"{}\"\n\
                 [sink]\nurl = \"mongodb://127.0.0.1:1/\"\n{sink}\n",
                pki.path("wal").display()
            ),
        )
        .unwrap();
        let (code, _, stderr) = sdl_check(&path);
        assert_eq!(code, Some(2), "{source} {sink}: {stderr}");
        stderr
    };
    let on = "tls = \"on\"\n";
    let cases = [
        (
            config(&format!("{on}tls_ca_file = \"/nonexistent/ca.crt\""), ""),
            ["`source.tls_ca_file`", "cannot read /nonexistent/ca.crt"],
        ),
        (
            config(
                &format!("{on}{}", pki.setting("tls_ca_file", "not-pem.crt")),
                "",
            ),
            ["`source.tls_ca_file`", "holds no PEM certificate"],
        ),
        (
            config(
                &format!(
                    "{on}{}\n{}",
                    pki.setting("tls_cert_file", "client.crt"),
                    pki.setting("tls_key_file", "server.key")
                ),
                "",
            ),
            ["`source.tls_key_file`", "does not fit the certificate"],
        ),
        (
            config(&pki.setting("tls_ca_file", "ca.crt"), ""),
            ["`source.tls_ca_file`", "source.tls is \"off\""],
        ),
        (
            config(
                "",
                &format!("{on}{}", pki.setting("tls_cert_key_file", "client.crt")),
            ),
            ["`sink.tls_cert_key_file`", "holds no PEM private key"],
        ),
    ];
    for (stderr, expected) in cases {
        for text in expected {
            assert!(stderr.contains(text), "expected `{text}` in: {stderr}");
        }
    }
}
