//! A headless Chromium driven over WebDriver (W3C protocol, JSON over HTTP/1.1 to a local
//! `chromedriver`), for the console tests in `tests/console.rs`.
//!
//! The client is the harness's own HTTP client ([`crate::Client`]): chromedriver listens on
//! loopback, so no TLS and no extra dependency. [`Browser::start`] finds `chromedriver` and
//! `chromium` (env `CHROMEDRIVER` / `CHROME_BIN`, else `PATH`), starts chromedriver on a free
//! port and opens one session with a fresh profile. When they are missing it returns `None` with
//! the reason printed, so that a local run without Chromium skips; with `CI=true` it panics
//! instead, so that CI never passes by skipping. Dropping the [`Browser`] ends the session and
//! kills chromedriver (and with it the browser).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Client;

/// How long a wait for the page may take (the machine is shared; a wait returns as soon as
/// its condition holds).
pub const WAIT: Duration = Duration::from_secs(15);

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The flags Chromium runs with: headless, no sandbox (containers), nothing fetched in the
/// background, a laptop-sized window.
const CHROME_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
];

/// One chromedriver process with one browser session.
pub struct Browser {
    driver: Child,
    client: Client,
    session: String,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

/// `name` from env `var`, else the first of `candidates` found on `PATH`.
fn find_program(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| candidates.iter().map(move |c| dir.join(c)))
        .find(|p| p.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A free loopback port (bound, then released for chromedriver to take).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Browser {
    /// A browser session, or `None` (reason printed) when Chromium or chromedriver is missing
    /// outside CI. Panics in CI (`CI=true`) when the browser cannot be started.
    pub fn start() -> Option<Browser> {
        match Browser::try_start() {
            Ok(b) => Some(b),
            Err(reason) if !in_ci() => {
                eprintln!("skipping the browser test: {reason}");
                None
            }
            Err(reason) => panic!("CI=true and the browser cannot start: {reason}"),
        }
    }

    fn try_start() -> Result<Browser, String> {
        let driver_bin = find_program("CHROMEDRIVER", &["chromedriver"]).ok_or(
            "no chromedriver on PATH (apt-get install chromium-driver, or set CHROMEDRIVER)",
        )?;
        let chrome_bin = find_program(
            "CHROME_BIN",
            &["chromium", "chromium-browser", "google-chrome"],
        )
        .ok_or("no chromium on PATH (apt-get install chromium, or set CHROME_BIN)")?;
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", driver_bin.display()))?;
        let profile = tempfile::tempdir().map_err(|e| format!("profile dir: {e}"))?;
        let mut browser = Browser {
            driver,
            client: Client::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            session: String::new(),
            shots: screenshot_dir(),
            _profile: profile,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if std::net::TcpStream::connect(browser.client.addr).is_ok() {
                break;
            }
            if let Ok(Some(status)) = browser.driver.try_wait() {
                return Err(format!("chromedriver exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not listen within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let mut args: Vec<String> = CHROME_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chrome_bin, "args": args},
        }}});
        let value = browser
            .call("POST", "/session", &caps)
            .map_err(|e| format!("creating a session: {e}"))?;
        browser.session = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {value}"))?
            .to_owned();
        browser.size_viewport(1280, 800)?;
        Ok(browser)
    }

    /// Resizes the window so that the page's viewport (what screenshots show) is
    /// `width`×`height`.
    fn size_viewport(&self, width: i64, height: i64) -> Result<(), String> {
        let path = format!("/session/{}", self.session);
        let chrome = self.call(
            "POST",
            &format!("{path}/execute/sync"),
            &json!({"script": "return [outerWidth - innerWidth, outerHeight - innerHeight];", "args": []}),
        )?;
        let extra = |i: usize| chrome[i].as_i64().unwrap_or(0).max(0);
        self.call(
            "POST",
            &format!("{path}/window/rect"),
            &json!({"width": width + extra(0), "height": height + extra(1)}),
        )?;
        Ok(())
    }

    /// One WebDriver command: the `value` of the answer, or the driver's error as text.
    fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let text = body.to_string();
        let reply = self.client.request(
            method,
            path,
            &[("Content-Type", "application/json")],
            (method != "GET").then_some(text.as_bytes()),
        );
        let answer: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("{method} {path}: {e}: {}", reply.text()))?;
        if reply.status != 200 {
            return Err(format!(
                "{method} {path}: {} {}",
                reply.status, answer["value"]
            ));
        }
        Ok(answer["value"].clone())
    }

    /// A command of this session; panics on a WebDriver error.
    #[track_caller]
    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, &body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// The text content of the first element matching `css`, or `None`.
    pub fn text(&self, css: &str) -> Option<String> {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .map(str::to_owned)
    }

    /// Waits until the first element matching `css` has a text containing `needle`; its text.
    /// Panics (with the page's text) after [`WAIT`].
    #[track_caller]
    pub fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(text) = self.text(css).filter(|t| t.contains(needle)) {
                return text;
            }
            if Instant::now() > deadline {
                let page = self.text("main").unwrap_or_default();
                panic!("no {css:?} containing {needle:?} within {WAIT:?}; the page says: {page}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The WebDriver reference of the first element matching `css` (waits for it).
    #[track_caller]
    fn element(&self, css: &str) -> String {
        self.wait_for_element(css);
        let value = self.session_call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        value[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference in {value}"))
            .to_owned()
    }

    /// Waits until an element matches `css`.
    #[track_caller]
    pub fn wait_for_element(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        while self.exec(
            "return document.querySelector(arguments[0]) !== null;",
            json!([css]),
        ) != Value::Bool(true)
        {
            if Instant::now() > deadline {
                let page = self.text("main").unwrap_or_default();
                panic!("no element {css:?} within {WAIT:?}; the page says: {page}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the first element matching `css`, as a user would.
    #[track_caller]
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Replaces the value of the input matching `css` by typing `text` with the keyboard.
    #[track_caller]
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/clear"), json!({}));
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// The text of the page's open dialog (`alert`, `confirm`), waiting for it to open.
    #[track_caller]
    pub fn dialog_text(&self) -> String {
        let path = format!("/session/{}/alert/text", self.session);
        let deadline = Instant::now() + WAIT;
        loop {
            match self.call("GET", &path, &json!({})) {
                Ok(text) => return text.as_str().unwrap_or_default().to_owned(),
                Err(e) if Instant::now() > deadline => panic!("no dialog opened: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Accepts the page's open `confirm()` dialog.
    pub fn accept_dialog(&self) {
        self.session_call("POST", "/alert/accept", json!({}));
    }

    /// Saves a PNG of the viewport as `<target>/console-screenshots/<name>.png`; its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let value = self.session_call("GET", "/screenshot", json!({}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        std::fs::create_dir_all(&self.shots).expect("screenshot directory");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }
}

/// `<target>/console-screenshots`, next to the test executable's profile directory (never in
/// the source tree: docs/console/ holds copies chosen by hand).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir: &Path = exe.parent().unwrap_or(Path::new("."));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.join("console-screenshots")
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &path, &json!({}));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
