//! A real session cluster: a JobManager and TaskManagers as separate
//! `sluice` processes on 127.0.0.1, talking QUIC with mutual TLS, driven
//! through the REST API and the CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_test_programs::wordcount::{generate_text, read_output, reference_counts};

const DEADLINE: Duration = Duration::from_secs(120);

/// A child process killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(args: &[&str], log: PathBuf, cwd: &Path) -> Proc {
        Self::start_env(args, log, cwd, &[])
    }

    fn start_env(args: &[&str], log: PathBuf, cwd: &Path, env: &[(String, String)]) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("SLUICE_LOG", "info")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start sluice");
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Polls `f` until it returns `Some`, failing with `what` and the logs
/// after the deadline.
fn wait_for<T>(what: &str, logs: &dyn Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    jm: Proc,
    tms: Vec<Option<Proc>>,
    rest: String,
    rpc: String,
    token: String,
    /// The admin token the JobManager made at its first start.
    admin: String,
    /// A client sending the admin token.
    http: reqwest::blocking::Client,
    /// Environment of every server process.
    env: Vec<(String, String)>,
}

impl Cluster {
    fn start(tms: usize, slots: u32, jm_args: &[&str]) -> Cluster {
        Self::start_env(tms, slots, jm_args, Vec::new())
    }

    fn start_env(tms: usize, slots: u32, jm_args: &[&str], env: Vec<(String, String)>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = vec![
            "jobmanager",
            "--rest-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
            "--data-dir",
            "jm",
        ];
        args.extend_from_slice(jm_args);
        // The default tenant may use the test's directory; without a root
        // it would be confined to `jm/files/default`.
        let tenants = dir.path().join("jm/tenants");
        std::fs::create_dir_all(&tenants).expect("mkdir");
        std::fs::write(
            tenants.join("default.toml"),
            format!(
                "name = \"default\"\npolicy = \"standard\"\nfile_roots = [{:?}]\n",
                dir.path().display().to_string()
            ),
        )
        .expect("write the default tenant");
        let jm = Proc::start_env(&args, dir.path().join("jm.log"), dir.path(), &env);
        let endpoints = dir.path().join("jm/endpoints.json");
        let e: Value = wait_for("the JobManager to listen", &|| jm.log(), || {
            serde_json::from_slice(&std::fs::read(&endpoints).ok()?).ok()
        });
        let admin = admin_token(&dir.path().join("jm/credentials"));
        let mut cluster = Cluster {
            jm,
            tms: Vec::new(),
            rest: format!("http://{}", e["rest"].as_str().expect("rest")),
            rpc: e["rpc"].as_str().expect("rpc").to_owned(),
            token: e["token"].as_str().expect("token").to_owned(),
            http: client_with(Some(&admin)),
            admin,
            dir,
            env,
        };
        for _ in 0..tms {
            cluster.add_tm(slots);
        }
        cluster.wait_for_tms(tms);
        cluster
    }

    fn add_tm(&mut self, slots: u32) {
        let token = self.token.clone();
        self.add_tm_with(slots, &token);
    }

    /// Starts a TaskManager that joins with `token`.
    fn add_tm_with(&mut self, slots: u32, token: &str) {
        let n = self.tms.len();
        let data = format!("tm{n}");
        let slots = slots.to_string();
        let tm = Proc::start_env(
            &[
                "taskmanager",
                "--jobmanager",
                &self.rpc,
                "--token",
                token,
                "--slots",
                &slots,
                "--data-dir",
                &data,
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            self.dir.path().join(format!("tm{n}.log")),
            self.dir.path(),
            &self.env,
        );
        self.tms.push(Some(tm));
    }

    fn logs(&self) -> String {
        let mut s = format!("--- jobmanager\n{}", self.jm.log());
        for (i, tm) in self.tms.iter().enumerate() {
            if let Some(tm) = tm {
                s += &format!("--- taskmanager {i}\n{}", tm.log());
            }
        }
        s
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(&self.http, path)
    }

    /// `GET path` with `http`'s token.
    fn get_as(&self, http: &reqwest::blocking::Client, path: &str) -> (u16, Value) {
        let resp = http
            .get(format!("{}{path}", self.rest))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn wait_for_tms(&self, n: usize) {
        wait_for(&format!("{n} TaskManagers"), &|| self.logs(), || {
            (self.get("/taskmanagers").1["taskmanagers"]
                .as_array()?
                .len()
                == n)
                .then_some(())
        });
    }

    fn upload(&self, wasm: &Path) -> (u16, Value) {
        self.upload_as(&self.http, wasm)
    }

    /// Uploads `wasm` with `http`'s token.
    fn upload_as(&self, http: &reqwest::blocking::Client, wasm: &Path) -> (u16, Value) {
        let name = wasm.file_name().expect("a file").to_string_lossy();
        let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(wasm).expect("wasm"))
            .file_name(name.into_owned());
        let form = reqwest::blocking::multipart::Form::new().part("jarfile", part);
        let resp = http
            .post(format!("{}/jars/upload", self.rest))
            .multipart(form)
            .send()
            .expect("upload");
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    }

    /// Uploads the word-count component; its id.
    fn upload_wordcount(&self) -> String {
        self.upload_app(sluice_test_programs::WORDCOUNT)
    }

    /// Uploads a component; its id.
    fn upload_app(&self, wasm: &str) -> String {
        let (status, up) = self.upload(Path::new(wasm));
        assert_eq!(status, 200, "{up}");
        up["filename"]
            .as_str()
            .and_then(|f| f.rsplit('/').next())
            .expect("the upload answer names the stored file")
            .to_owned()
    }

    /// Runs an uploaded component; the job id.
    fn run_ok(&self, jar: &str, body: Value) -> String {
        let (status, run) = self.run(jar, body);
        assert_eq!(status, 200, "{run}");
        run["jobid"].as_str().expect("jobid").to_owned()
    }

    /// Starts word count at parallelism 4, checkpointing as asked.
    fn start_wordcount(&self, input: &Path, out: &Path, checkpoint_ms: Option<u64>) -> String {
        let jar = self.upload_wordcount();
        let mut body = json!({
            "parallelism": 4,
            "programArgsList": [format!("input={}", input.display()), format!("output={}", out.display())],
        });
        if let Some(ms) = checkpoint_ms {
            body["checkpointInterval"] = json!(ms);
        }
        self.run_ok(&jar, body)
    }

    /// Starts the exactly-once checker at parallelism 2, checkpointing every
    /// `interval_ms`, writing under `out/`; the job id and the output
    /// directory.
    fn start_checker(
        &self,
        interval_ms: u64,
        records: u64,
        keys: u64,
        rate: u64,
    ) -> (String, PathBuf) {
        let out_dir = self.dir.path().join("out");
        let jar = self.upload_app(sluice_test_programs::EXACTLY_ONCE);
        let job = self.run_ok(
            &jar,
            json!({
                "parallelism": 2,
                "checkpointInterval": interval_ms,
                "programArgsList": [
                    format!("records={records}"),
                    format!("keys={keys}"),
                    format!("rate={rate}"),
                    format!("output={}", out_dir.display()),
                ],
            }),
        );
        (job, out_dir)
    }

    /// Cancels a job through REST and waits until it is CANCELED.
    fn cancel(&self, job: &str) {
        self.cancel_with(&self.http, job);
    }

    /// Cancels a tenant's job with its token and waits until it is CANCELED.
    fn cancel_as(&self, t: &TenantClient, job: &str) {
        self.cancel_with(&t.http, job);
    }

    fn cancel_with(&self, http: &reqwest::blocking::Client, job: &str) {
        let cancel = http
            .patch(format!("{}/jobs/{job}?mode=cancel", self.rest))
            .send()
            .expect("cancel");
        assert_eq!(cancel.status().as_u16(), 202);
        self.wait_for_state(job, &["CANCELED"]);
    }

    fn run(&self, jar: &str, body: Value) -> (u16, Value) {
        self.run_as(&self.http, jar, body)
    }

    /// Runs an uploaded component with `http`'s token.
    fn run_as(&self, http: &reqwest::blocking::Client, jar: &str, body: Value) -> (u16, Value) {
        let resp = http
            .post(format!("{}/v1/jars/{jar}/run", self.rest))
            .json(&body)
            .send()
            .expect("run");
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    }

    fn wait_for_state(&self, job: &str, states: &[&str]) -> Value {
        wait_for(
            &format!("job {job} to reach {states:?}"),
            &|| self.logs(),
            || {
                let (_, d) = self.get(&format!("/jobs/{job}"));
                states
                    .contains(&d["state"].as_str().unwrap_or(""))
                    .then_some(d)
            },
        )
    }

    fn sluice(&self, args: &[&str]) -> Output {
        self.sluice_as(&self.admin, args)
    }

    /// Runs the `sluice` client with `token`.
    fn sluice_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(self.dir.path())
            .env("SLUICE_JOBMANAGER", &self.rest)
            .env("SLUICE_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run sluice")
    }
}

/// The admin token from a JobManager's credentials file.
fn admin_token(credentials: &Path) -> String {
    let text = std::fs::read_to_string(credentials).expect("the JobManager wrote its credentials");
    text.lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a token line")
        .to_owned()
}

/// A blocking HTTP client that sends `token`, if any.
fn client_with(token: Option<&str>) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("a header value"),
        );
    }
    reqwest::blocking::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_input(dir: &Path, bytes: usize) -> (PathBuf, std::collections::HashMap<String, u64>) {
    let text = generate_text(bytes);
    let path = dir.join("input.txt");
    std::fs::write(&path, &text).expect("input");
    (path, reference_counts(&text))
}

#[test]
fn wordcount_at_parallelism_4_across_two_taskmanagers_via_rest_and_cli() {
    let cluster = Cluster::start(2, 2, &[]);
    let (input, expected) = write_input(cluster.dir.path(), 4 << 20);

    // Through REST, as a Flink client would.
    let jar = cluster.upload_wordcount();
    // Stored under its content hash, not the client's file name.
    assert!(jar.len() == 64 + 5 && jar.ends_with(".wasm"), "{jar}");
    let out_rest = cluster.dir.path().join("out-rest");
    let (status, run) = cluster.run(
        &jar,
        json!({
            "parallelism": 4,
            "programArgsList": [
                format!("input={}", input.display()),
                format!("output={}", out_rest.display()),
            ],
        }),
    );
    assert_eq!(status, 200, "{run}");
    let job = run["jobid"].as_str().expect("jobid").to_owned();
    assert_eq!(job.len(), 32);
    assert!(
        job.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let detail = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(detail["state"], "FINISHED", "{detail}\n{}", cluster.logs());
    // The job ran on both TaskManagers.
    assert_eq!(
        detail["taskmanagers"].as_array().map(Vec::len),
        Some(2),
        "{detail}"
    );
    let (counts, parts) = read_output(&out_rest);
    assert_eq!(parts, 4);
    assert_eq!(counts, expected);
    let words: u64 = expected.values().sum();
    let count_in = detail["vertices"][1]["metrics"]["read-records"].as_u64();
    assert_eq!(count_in, Some(words), "{detail}");

    // Through the CLI, from the file.
    let out_cli = cluster.dir.path().join("out-cli");
    let input_arg = format!("input={}", input.display());
    let output_arg = format!("output={}", out_cli.display());
    let out = cluster.sluice(&[
        "submit",
        sluice_test_programs::WORDCOUNT,
        "-p",
        "4",
        "--arg",
        &input_arg,
        "--arg",
        &output_arg,
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        cluster.logs()
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FINISHED"), "{stdout}");
    let (counts, parts) = read_output(&out_cli);
    assert_eq!(parts, 4);
    assert_eq!(counts, expected);

    // Both jobs are listed, by the CLI and in Flink's overview shape.
    let list = cluster.sluice(&["list"]);
    let listed = text(&list.stdout);
    assert!(
        listed.contains(&job) && listed.matches("FINISHED").count() == 2,
        "{listed}"
    );
    let (_, overview) = cluster.get("/v1/jobs/overview");
    assert_eq!(overview["jobs"].as_array().map(Vec::len), Some(2));
    let (_, ov) = cluster.get("/overview");
    assert_eq!(
        (ov["taskmanagers"].as_u64(), ov["slots-total"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(ov["jobs-finished"].as_u64(), Some(2));
    // Every slot is free again.
    assert_eq!(ov["slots-available"].as_u64(), Some(4));
    let tms = cluster.sluice(&["taskmanagers", "--json"]);
    let tms: Value = serde_json::from_slice(&tms.stdout).expect("json");
    assert_eq!(tms["taskmanagers"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_killed_taskmanager_is_detected_and_the_job_restarts_on_the_survivor() {
    let mut cluster = Cluster::start(
        2,
        4,
        &[
            "--restart-strategy",
            "fixed-delay",
            "--restart-delay",
            "200ms",
        ],
    );
    let (input, expected) = write_input(cluster.dir.path(), 48 << 20);
    let out_dir = cluster.dir.path().join("out");
    let job = cluster.start_wordcount(&input, &out_dir, None);
    // Wait until both TaskManagers run tasks of the job, then kill one.
    let detail = wait_for(
        "the job to run on both TaskManagers",
        &|| cluster.logs(),
        || {
            let (_, d) = cluster.get(&format!("/jobs/{job}"));
            let running = d["status-counts"]["RUNNING"].as_u64() == Some(8);
            (running && d["taskmanagers"].as_array()?.len() == 2).then_some(d)
        },
    );
    assert_eq!(detail["attempt"], 0);
    let mut victim = cluster.tms[0].take().expect("tm0");
    victim.child.kill().expect("kill -9");
    let _ = victim.child.wait();
    let detail = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(detail["state"], "FINISHED", "{detail}\n{}", cluster.logs());
    assert!(detail["attempt"].as_u64() >= Some(1), "{detail}");
    let (_, exceptions) = cluster.get(&format!("/jobs/{job}/exceptions"));
    let first = &exceptions["exceptionHistory"]["entries"]
        .as_array()
        .expect("entries")
        .last()
        .cloned()
        .expect("one failure");
    let msg = first["stacktrace"].as_str().unwrap_or("");
    assert!(
        msg.contains("was lost") || msg.contains("stopped"),
        "{exceptions}"
    );
    // Killed, it sent nothing: the JobManager says it went silent.
    if msg.contains("was lost") {
        assert!(
            msg.contains("went silent for the peer timeout"),
            "{exceptions}"
        );
    }
    let (counts, parts) = read_output(&out_dir);
    assert_eq!(parts, 4);
    assert_eq!(counts, expected);
    cluster.wait_for_tms(1);
}

#[test]
fn a_taskmanager_with_a_certificate_from_another_ca_is_refused() {
    let cluster = Cluster::start(0, 2, &[]);
    let other = Cluster::start(0, 2, &[]);
    // A TaskManager that joined the other cluster holds a certificate from
    // the other cluster's CA.
    let dir = other.dir.path().join("foreign");
    let foreign = Proc::start(
        &[
            "taskmanager",
            "--jobmanager",
            &other.rpc,
            "--token",
            &other.token,
            "--data-dir",
            "foreign",
            "--metrics-addr",
            "off",
        ],
        other.dir.path().join("foreign.log"),
        other.dir.path(),
    );
    other.wait_for_tms(1);
    drop(foreign);
    assert!(dir.join("tls/cert.pem").exists());
    // With that certificate it cannot register with the first cluster...
    let dir_arg = dir.display().to_string();
    let refused = Proc::start(
        &[
            "taskmanager",
            "--jobmanager",
            &cluster.rpc,
            "--data-dir",
            &dir_arg,
            "--metrics-addr",
            "off",
        ],
        cluster.dir.path().join("refused.log"),
        cluster.dir.path(),
    );
    wait_for(
        "the refusal to be logged",
        &|| refused.log() + &cluster.logs(),
        || {
            let log = cluster.jm.log();
            log.contains("refused a cluster connection").then_some(())
        },
    );
    assert!(
        refused.log().contains("cannot connect to the JobManager"),
        "{}",
        refused.log()
    );
    let (_, tms) = cluster.get("/taskmanagers");
    assert_eq!(
        tms["taskmanagers"].as_array().map(Vec::len),
        Some(0),
        "{tms}"
    );
    // ...and the other cluster's token cannot get it one (the CA
    // fingerprint in the token does not match).
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "taskmanager",
            "--jobmanager",
            &cluster.rpc,
            "--token",
            &other.token,
            "--metrics-addr",
            "off",
            "--data-dir",
        ])
        .arg(cluster.dir.path().join("joiner"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot join the cluster"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn rest_errors_are_flink_shaped_with_the_right_status() {
    let cluster = Cluster::start(1, 1, &[]);
    let errors = |v: &Value| v["errors"].as_array().map(|e| e.len()).unwrap_or(0);
    for prefix in ["", "/v1"] {
        let (status, body) = cluster.get(&format!("{prefix}/jobs/abc"));
        assert_eq!(status, 400, "{body}");
        assert_eq!(errors(&body), 1);
        let (status, body) =
            cluster.get(&format!("{prefix}/jobs/00000000000000000000000000000000"));
        assert_eq!(status, 404, "{body}");
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap_or("")
                .contains("not found"),
            "{body}"
        );
        let (status, _) = cluster.get(&format!("{prefix}/nonexistent"));
        assert_eq!(status, 404);
    }
    let patch = |q: &str| {
        let r = cluster
            .http
            .patch(format!("{}/v1/jobs/{q}", cluster.rest))
            .send()
            .expect("patch");
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    assert_eq!(patch("00000000000000000000000000000000?mode=cancel").0, 404);
    assert_eq!(patch("XYZ?mode=cancel").0, 400);
    assert_eq!(patch("00000000000000000000000000000000?mode=bogus").0, 400);
    // Not a component.
    let junk = cluster.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x0d\0\x01\0garbage").expect("write");
    let (status, body) = cluster.upload(&junk);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap_or("")
            .contains("not a valid Sluice application"),
        "{body}"
    );
    // Unknown jar, bad arguments, a plan that fails validation.
    assert_eq!(cluster.run("nope.wasm", json!({})).0, 404);
    let jar = cluster.upload_wordcount();
    let (status, body) = cluster.run(&jar, json!({"programArgsList": ["no-equals-sign"]}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = cluster.run(&jar, json!({"programArgsList": []}));
    assert_eq!(status, 400, "{body}");
    let (_, jars) = cluster.get("/jars");
    assert_eq!(jars["files"].as_array().map(Vec::len), Some(1), "{jars}");
    assert_eq!(jars["files"][0]["name"], "wordcount.wasm");
    let del = cluster
        .http
        .delete(format!("{}/jars/{jar}", cluster.rest))
        .send()
        .expect("delete");
    assert_eq!(del.status().as_u16(), 200);
    let del = cluster
        .http
        .delete(format!("{}/jars/{jar}", cluster.rest))
        .send()
        .expect("delete");
    assert_eq!(del.status().as_u16(), 404);
    // A job that needs more slots than the cluster has waits, then fails
    // with a reason; meanwhile it can be listed and cancelled.
    let jar = cluster.upload_wordcount();
    let input = cluster.dir.path().join("in.txt");
    std::fs::write(&input, "a b c").expect("write");
    let (status, run) = cluster.run(
        &jar,
        json!({"parallelism": 3, "programArgsList": [format!("input={}", input.display()), format!("output={}", cluster.dir.path().join("o").display())]}),
    );
    assert_eq!(status, 200, "{run}");
    let job = run["jobid"].as_str().expect("jobid");
    let (_, d) = cluster.get(&format!("/jobs/{job}"));
    assert_eq!(d["state"], "CREATED");
    assert!(
        d["waiting-for"]
            .as_str()
            .is_some_and(|w| w.contains("the cluster's capacity: 3 slots needed")),
        "{d}"
    );
    assert_eq!(patch(&format!("{job}?mode=cancel")).0, 202);
    let d = cluster.wait_for_state(job, &["CANCELED"]);
    assert_eq!(d["state"], "CANCELED");
}

#[test]
fn a_job_that_cannot_get_slots_fails_with_a_reason() {
    let cluster = Cluster::start(1, 1, &["--slot-timeout", "1s"]);
    let input = cluster.dir.path().join("in.txt");
    std::fs::write(&input, "a b c").expect("write");
    let input_arg = format!("input={}", input.display());
    let output_arg = format!("output={}", cluster.dir.path().join("o").display());
    let out = cluster.sluice(&[
        "submit",
        sluice_test_programs::WORDCOUNT,
        "-p",
        "2",
        "--arg",
        &input_arg,
        "--arg",
        &output_arg,
        "--wait",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("could not get 2 slots") && stderr.contains("1 of 1 slots are free"),
        "{stderr}"
    );
}

/// A tool from outside the project (Debian's `prometheus`, Flink's CLI):
/// from `env` or the PATH. `scripts/test.sh` installs both; on CI a missing
/// tool fails the test, elsewhere the test says it skipped.
fn external_tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{name}` is not installed (set {env} or put it on the PATH; scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: `{name}` is not installed; scripts/test.sh installs it");
    }
    found
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            continue;
        }
        let wanted = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if wanted {
            *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    sum
}

impl Cluster {
    /// The `/metrics` URL of TaskManager `n`.
    fn tm_metrics(&self, n: usize) -> String {
        let file = self.dir.path().join(format!("tm{n}/endpoints.json"));
        let e: Value = wait_for("a TaskManager's endpoints", &|| self.logs(), || {
            serde_json::from_slice(&std::fs::read(&file).ok()?).ok()
        });
        format!("http://{}/metrics", e["metrics"].as_str().expect("metrics"))
    }

    fn text(&self, url: &str) -> String {
        let resp = self.http.get(url).send().expect("GET");
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        resp.text().expect("text")
    }

    /// The sum of a metric over every TaskManager.
    fn tm_metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        (0..self.tms.len())
            .map(|n| metric_sum(&self.text(&self.tm_metrics(n)), name, labels).unwrap_or(0.0))
            .sum()
    }

    /// Starts the join example with inputs too large to finish: a job that
    /// runs until it is cancelled.
    fn start_endless_job(&self) -> String {
        let jar = self.upload_app(sluice_test_programs::JOIN);
        let out = self.dir.path().join("endless-out");
        let job = self.run_ok(
            &jar,
            json!({
                "parallelism": 2,
                "programArgsList": ["left=1000000000000000", "right=1000000000000000", format!("output={}", out.display())],
            }),
        );
        self.wait_for_state(&job, &["RUNNING"]);
        job
    }
}

#[test]
fn metrics_count_each_subtask_and_prometheus_scrapes_them() {
    let cluster = Cluster::start(2, 2, &[]);
    let (input, expected) = write_input(cluster.dir.path(), 1 << 20);
    let words: u64 = expected.values().sum();
    let job = cluster.start_wordcount(&input, &cluster.dir.path().join("out"), None);
    let d = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(d["state"], "FINISHED", "{d}");

    // Per operator and subtask, over both TaskManagers: exact record counts.
    let of_job = |op: &'static str| {
        [
            ("tenant", "default"),
            ("job_id", job.as_str()),
            ("operator_name", op),
        ]
    };
    let count_in = cluster.tm_metric("sluice_operator_records_in_total", &of_job("count"));
    assert_eq!(count_in, words as f64);
    let write_in = cluster.tm_metric("sluice_operator_records_in_total", &of_job("write"));
    assert_eq!(write_in, expected.len() as f64);
    for subtask in ["0", "1", "2", "3"] {
        let labels = [
            ("job_id", job.as_str()),
            ("operator_name", "count"),
            ("subtask_index", subtask),
        ];
        assert!(cluster.tm_metric("sluice_operator_records_in_total", &labels) > 0.0);
    }
    let job_only = [("job_id", job.as_str())];
    // The source read the whole file; the words crossed the shuffle.
    let bytes_in = cluster.tm_metric("sluice_task_bytes_in_total", &job_only);
    assert!(bytes_in > (1 << 20) as f64, "{bytes_in}");
    assert!(cluster.tm_metric("sluice_task_bytes_out_total", &job_only) > 0.0);
    let fuel = cluster.tm_metric("sluice_task_fuel_consumed_total", &job_only);
    assert!(fuel > 0.0);
    // The only job so far: its tenant's bill is exactly its fuel.
    assert_eq!(
        cluster.tm_metric(
            "sluice_tenant_fuel_consumed_total",
            &[("tenant", "default")]
        ),
        fuel
    );
    let tm0 = cluster.text(&cluster.tm_metrics(0));
    assert!(tm0.contains("sluice_task_backpressured_milliseconds_total{"));
    assert_eq!(
        metric_sum(&tm0, "sluice_taskmanager_slots_total", &[]),
        Some(2.0)
    );
    assert!(metric_sum(&tm0, "sluice_process_resident_memory_bytes", &[]) > Some(0.0));

    // While a job runs, its instances and slots show; after cancel they go.
    let endless = cluster.start_endless_job();
    wait_for("live instances", &|| cluster.logs(), || {
        let instances = cluster.tm_metric("sluice_taskmanager_guest_instances", &[]);
        let memory = cluster.tm_metric("sluice_taskmanager_guest_memory_bytes", &[]);
        let used = cluster.tm_metric("sluice_taskmanager_slots_used", &[]);
        (instances == 2.0 && memory > 0.0 && used == 2.0).then_some(())
    });
    let jm = cluster.text(&format!("{}/metrics", cluster.rest));
    assert_eq!(
        metric_sum(&jm, "sluice_jobmanager_taskmanagers", &[]),
        Some(2.0)
    );
    assert_eq!(
        metric_sum(&jm, "sluice_jobmanager_slots_total", &[]),
        Some(4.0)
    );
    assert_eq!(
        metric_sum(&jm, "sluice_jobmanager_jobs", &[("status", "FINISHED")]),
        Some(1.0)
    );

    if let Some(prometheus) = external_tool("prometheus", "SLUICE_PROMETHEUS") {
        scrape_with_prometheus(&cluster, &prometheus, &job, words);
    }

    cluster.cancel(&endless);
    wait_for("instances to go", &|| cluster.logs(), || {
        let instances = cluster.tm_metric("sluice_taskmanager_guest_instances", &[]);
        let memory = cluster.tm_metric("sluice_taskmanager_guest_memory_bytes", &[]);
        let used = cluster.tm_metric("sluice_taskmanager_slots_used", &[]);
        (instances == 0.0 && memory == 0.0 && used == 0.0).then_some(())
    });
}

/// A real Prometheus scrapes the JobManager and both TaskManagers and
/// answers a query with the exact count.
fn scrape_with_prometheus(cluster: &Cluster, prometheus: &Path, job: &str, words: u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let target = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned()
    };
    let jobmanager = [target(&cluster.rest)];
    let taskmanagers = [
        target(&cluster.tm_metrics(0)),
        target(&cluster.tm_metrics(1)),
    ];
    let dir = cluster.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).expect("dir");
    // The JobManager's metrics are an admin's: Prometheus sends its token.
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice-jobmanager\n    authorization:\n      credentials: {}\n    static_configs:\n      - targets: {jobmanager:?}\n  - job_name: sluice-taskmanagers\n    static_configs:\n      - targets: {taskmanagers:?}\n",
        cluster.admin
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    let listen = format!("--web.listen-address=127.0.0.1:{port}");
    let file = std::fs::File::create(dir.join("log")).expect("log");
    let child = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(&listen)
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("start prometheus");
    let prom = Proc {
        child,
        log: dir.join("log"),
    };
    let query = |q: &str| -> Option<Value> {
        let v: Value = cluster
            .http
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .ok()?
            .json()
            .ok()?;
        v["data"]["result"]
            .as_array()?
            .first()
            .map(|r| r["value"][1].clone())
    };
    let logs = || prom.log() + &cluster.logs();
    wait_for("Prometheus to see all three targets up", &logs, || {
        (query("sum(up)")? == json!("3")).then_some(())
    });
    let q = format!(
        "sum(sluice_operator_records_in_total{{job_id=\"{job}\",operator_name=\"count\"}})"
    );
    wait_for("Prometheus to have the count", &logs, || {
        (query(&q)? == json!(words.to_string())).then_some(())
    });
    let q = "sum(sluice_jobmanager_slots_total)";
    wait_for("Prometheus to have the JobManager's slots", &logs, || {
        (query(q)? == json!("4")).then_some(())
    });
}

#[test]
fn flinks_own_cli_lists_and_cancels_a_sluice_job() {
    let Some(flink) = external_tool("flink", "SLUICE_FLINK") else {
        return;
    };
    let cluster = Cluster::start(1, 2, &[]);
    let job = cluster.start_endless_job();
    let address = cluster.rest.trim_start_matches("http://").to_owned();
    let flink_cli = |args: &[&str]| {
        let out = Command::new(&flink)
            .args(args)
            .env(
                "FLINK_REST_CLIENT_HEADERS",
                format!("Authorization:Bearer {}", cluster.admin),
            )
            .stdin(Stdio::null())
            .output()
            .expect("run flink");
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success(), "flink {args:?}: {all}");
        all
    };
    let listed = flink_cli(&["list", "-m", &address]);
    let line = listed
        .lines()
        .find(|l| l.contains(&job))
        .unwrap_or_else(|| panic!("the job is not listed:\n{listed}"));
    assert!(line.contains("(RUNNING)"), "{line}");
    assert!(line.contains(": join left="), "{line}");
    let cancelled = flink_cli(&["cancel", "-m", &address, &job]);
    assert!(
        cancelled.contains(&format!("Cancelled job {job}")),
        "{cancelled}"
    );
    let d = cluster.wait_for_state(&job, &["CANCELED"]);
    assert_eq!(d["state"], "CANCELED");
    let listed = flink_cli(&["list", "-m", &address]);
    assert!(listed.contains("No running jobs"), "{listed}");
}

/// Files under `job_dir` that belong to checkpoints with ids up to `upto`
/// which never completed (no `_metadata`).
fn stray_snapshots(job_dir: &Path, upto: u64) -> Vec<PathBuf> {
    let mut stray = Vec::new();
    for chk in std::fs::read_dir(job_dir).into_iter().flatten().flatten() {
        let id = chk
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("chk-"))
            .and_then(|n| n.parse::<u64>().ok());
        if id.is_none_or(|id| id > upto) || chk.path().join("_metadata").exists() {
            continue;
        }
        for f in std::fs::read_dir(chk.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            stray.push(f.path());
        }
    }
    stray
}

#[test]
fn snapshots_stored_after_their_checkpoint_failed_are_deleted() {
    // Every checkpoint expires 1 ms after its trigger, so snapshot uploads
    // keep landing after the JobManager deleted their checkpoint's directory.
    let cluster = Cluster::start(
        2,
        2,
        &[
            "--checkpoint-timeout",
            "1ms",
            "--checkpoint-tolerable-failures",
            "1000000",
        ],
    );
    let (job, _) = cluster.start_checker(20, 1_000_000_000, 10, 20_000);
    let failed = wait_for("100 failed checkpoints", &|| cluster.logs(), || {
        let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
        if c["counts"]["failed"].as_u64()? < 100 {
            return None;
        }
        c["latest"]["failed"]["id"].as_u64()
    });
    // Every snapshot of those failed checkpoints goes, the late ones too.
    let job_dir = cluster.dir.path().join("jm/checkpoints/default").join(&job);
    wait_for(
        "the failed checkpoints' snapshots to be deleted",
        &|| {
            format!(
                "{:?}\n{}",
                stray_snapshots(&job_dir, failed),
                cluster.logs()
            )
        },
        || stray_snapshots(&job_dir, failed).is_empty().then_some(()),
    );
    let (_, d) = cluster.get(&format!("/jobs/{job}"));
    assert_eq!(d["state"], "RUNNING", "{d}");
    cluster.cancel(&job);
}

#[test]
fn with_checkpoints_a_killed_taskmanagers_job_resumes_from_the_latest_and_counts_exactly() {
    let mut cluster = Cluster::start(
        2,
        4,
        &[
            "--restart-strategy",
            "fixed-delay",
            "--restart-delay",
            "200ms",
        ],
    );
    let (input, expected) = write_input(cluster.dir.path(), 48 << 20);
    let out_dir = cluster.dir.path().join("out");
    let job = cluster.start_wordcount(&input, &out_dir, Some(300));
    // Wait for a completed checkpoint while the job runs on both TaskManagers.
    let first = wait_for("a completed checkpoint", &|| cluster.logs(), || {
        let (_, d) = cluster.get(&format!("/jobs/{job}"));
        let running = d["status-counts"]["RUNNING"].as_u64() == Some(8)
            && d["taskmanagers"].as_array()?.len() == 2;
        let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
        (running && c["counts"]["completed"].as_u64()? >= 1).then_some(c)
    });
    let latest = &first["latest"]["completed"];
    assert_eq!(latest["status"], "COMPLETED", "{first}");
    assert_eq!(latest["num_acknowledged_subtasks"], 8, "{first}");
    let checkpoints = cluster.dir.path().join("jm/checkpoints/default").join(&job);
    let chk = checkpoints.join(format!("chk-{}", latest["id"]));
    assert!(chk.join("_metadata").exists(), "{}", chk.display());
    let mut victim = cluster.tms[0].take().expect("tm0");
    victim.child.kill().expect("kill -9");
    let _ = victim.child.wait();
    let detail = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(detail["state"], "FINISHED", "{detail}\n{}", cluster.logs());
    assert!(detail["attempt"].as_u64() >= Some(1), "{detail}");
    let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
    assert!(c["counts"]["restored"].as_u64() >= Some(1), "{c}");
    let restored = c["latest"]["restored"]["id"].as_u64().expect("restored id");
    assert!(restored >= latest["id"].as_u64().expect("id"), "{c}");
    // The new run did not start over: it counted fewer words than there are.
    let words: u64 = expected.values().sum();
    let recounted = detail["vertices"][1]["metrics"]["read-records"]
        .as_u64()
        .expect("counts");
    assert!(recounted < words, "{recounted} of {words}: {detail}");
    // Exactly the counts of a run without failure.
    let (counts, parts) = read_output(&out_dir);
    assert_eq!(parts, 4);
    assert_eq!(counts, expected);
    // A finished job's checkpoints are deleted, and the job-result store
    // says so.
    wait_for("the checkpoints to be deleted", &|| cluster.logs(), || {
        (!checkpoints.exists()).then_some(())
    });
    let record = cluster
        .dir
        .path()
        .join(format!("jm/job-results/{job}.json"));
    let r: Value = wait_for("the cleanup to be recorded", &|| cluster.logs(), || {
        let r: Value = serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
        (r["cleaned"] == true).then_some(r)
    });
    assert_eq!(r["state"], "FINISHED", "{r}");
}

/// What the checker job published and concluded.
struct CheckerRun {
    /// How many times each index was published.
    published: std::collections::HashMap<u64, u32>,
    /// Per key: seen, gaps, duplicates (the state's view at the end).
    summaries: Vec<(String, u64, u64, u64)>,
    /// The job's checkpoint settings, from the REST API.
    config: Value,
}

const CHECKER_RECORDS: u64 = 2_000_000;
const CHECKER_KEYS: u64 = 100;

/// Runs the exactly-once checker at p2, checkpointing every 300 ms, on a
/// JobManager (with `jm_args`) and two TaskManagers, killing a TaskManager
/// with `kill -9` `kills` times (each time after a checkpoint completed since
/// the last restore, then starting a fresh TaskManager), and reads what the
/// job published.
fn run_checker_with_kills(jm_args: &[&str], kills: u64) -> CheckerRun {
    let mut args = vec![
        "--restart-strategy",
        "fixed-delay",
        "--restart-attempts",
        "10",
        "--restart-delay",
        "200ms",
    ];
    args.extend_from_slice(jm_args);
    let mut cluster = Cluster::start(2, 2, &args);
    // 2 x 100,000 records/s: about ten seconds of work.
    let (job, out_dir) = cluster.start_checker(300, CHECKER_RECORDS, CHECKER_KEYS, 100_000);
    let mut completed_before = 0;
    for kill in 0..kills {
        // Running on two TaskManagers, with a checkpoint completed since
        // the last restore.
        let completed = wait_for(
            "a running job with a fresh checkpoint",
            &|| cluster.logs(),
            || {
                let (_, d) = cluster.get(&format!("/jobs/{job}"));
                let running = d["state"] == "RUNNING"
                    && d["status-counts"]["RUNNING"].as_u64() == Some(4)
                    && d["taskmanagers"].as_array()?.len() == 2
                    && d["attempt"].as_u64() == Some(kill);
                let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
                let completed = c["counts"]["completed"].as_u64()?;
                (running && completed > completed_before).then_some(completed)
            },
        );
        completed_before = completed;
        let victim = cluster
            .tms
            .iter()
            .position(Option::is_some)
            .expect("a live TaskManager");
        let mut tm = cluster.tms[victim].take().expect("live");
        tm.child.kill().expect("kill -9");
        let _ = tm.child.wait();
        cluster.add_tm(2);
    }
    let d = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(d["state"], "FINISHED", "{d}\n{}", cluster.logs());
    assert_eq!(d["attempt"], kills, "{d}");
    let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
    assert_eq!(c["counts"]["restored"], kills, "{c}");

    let (lines, _) = sluice_test_programs::wordcount::output_lines(&out_dir);
    let mut run = CheckerRun {
        published: std::collections::HashMap::new(),
        summaries: Vec::new(),
        config: cluster.get(&format!("/jobs/{job}/checkpoints/config")).1,
    };
    for line in &lines {
        if let Some(summary) = line.strip_prefix('#') {
            let f: Vec<&str> = summary.split('\t').collect();
            let n = |i: usize| f[i].parse::<u64>().expect("number");
            run.summaries.push((f[0].to_owned(), n(1), n(2), n(3)));
            continue;
        }
        let (key, index) = line.split_once('\t').expect("KEY<TAB>INDEX");
        let index: u64 = index.parse().expect("index");
        assert_eq!(key, format!("k{}", index % CHECKER_KEYS), "{line}");
        *run.published.entry(index).or_default() += 1;
    }
    run.summaries.sort();
    assert_eq!(run.summaries.len() as u64, CHECKER_KEYS);
    run
}

#[test]
fn exactly_once_through_repeated_taskmanager_kills() {
    let run = run_checker_with_kills(&[], 3);
    assert_eq!(run.config["mode"], "exactly_once", "{}", run.config);
    // The committed output: every index exactly once...
    assert_eq!(
        run.published.len() as u64,
        CHECKER_RECORDS,
        "indices were lost"
    );
    if let Some((index, n)) = run.published.iter().find(|(_, n)| **n != 1) {
        panic!("index {index} was published {n} times");
    }
    // ...and every key's state saw its whole sequence, no gap, no duplicate.
    for (key, seen, gaps, duplicates) in &run.summaries {
        assert_eq!(
            (*seen, *gaps, *duplicates),
            (CHECKER_RECORDS / CHECKER_KEYS, 0, 0),
            "{key}"
        );
    }
}

#[test]
fn at_least_once_mode_loses_nothing_through_a_taskmanager_kill() {
    let run = run_checker_with_kills(&["--checkpointing-mode", "at-least-once"], 1);
    assert_eq!(run.config["mode"], "at_least_once", "{}", run.config);
    // Without alignment records may be repeated after a restore, never lost.
    assert_eq!(
        run.published.len() as u64,
        CHECKER_RECORDS,
        "indices were lost"
    );
    for (key, seen, gaps, duplicates) in &run.summaries {
        assert_eq!(*gaps, 0, "{key}");
        assert_eq!(*seen, CHECKER_RECORDS / CHECKER_KEYS + duplicates, "{key}");
    }
}

#[test]
fn a_savepoint_taken_at_parallelism_2_restores_at_4_with_the_same_totals() {
    savepoint_at_2_restores_at_4(
        sluice_test_programs::WORDCOUNT,
        sluice_test_programs::WORDCOUNT,
    );
}

/// `examples/go/NAME` built with `sluice build` into `dir`; `None` (the
/// test skips) without Go, which on CI fails instead.
fn go_example(name: &str, dir: &Path) -> Option<String> {
    let go = external_tool("go", "SLUICE_GO")?;
    let wasm = dir.join(format!("{name}-go.wasm"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("build")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/go")
                .join(name),
        )
        .arg("-o")
        .arg(&wasm)
        .env("SLUICE_GO", &go)
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("sluice build");
    assert!(out.status.success(), "{}", text(&out.stderr));
    Some(wasm.to_str().expect("utf-8 path").to_owned())
}

#[test]
fn a_go_wordcount_savepoint_restores_into_rust_wordcount_at_another_parallelism() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(wasm) = go_example("wordcount", dir.path()) else {
        return;
    };
    // Keyed state written by the Go SDK, read by the Rust SDK, its key
    // groups spread over twice the subtasks.
    savepoint_at_2_restores_at_4(&wasm, sluice_test_programs::WORDCOUNT);
}

#[test]
fn a_job_on_the_session_cluster_feeds_a_go_splitter_into_a_linked_rust_counter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(go_wasm) = go_example("wordcount", dir.path()) else {
        return;
    };
    let cluster = Cluster::start(2, 2, &[]);
    let (input, expected) = write_input(cluster.dir.path(), 2 << 20);
    let input_arg = format!("input={}", input.display());
    let output = cluster.dir.path().join("out-mixed");
    let output_arg = format!("output={}", output.display());
    let link = format!("rust={}", sluice_test_programs::WORDCOUNT);
    let out = cluster.sluice(&[
        "submit",
        &go_wasm,
        "--with",
        &link,
        "-p",
        "3",
        "--arg",
        &input_arg,
        "--arg",
        &output_arg,
        "--arg",
        "count=rust/count",
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        cluster.logs()
    );
    let (counts, parts) = read_output(&output);
    assert_eq!(parts, 3);
    // Exact: the TaskManagers resolved `rust/count` in the linked component
    // (a task that cannot fails the job, and without the link the plan is
    // refused, below).
    assert_eq!(counts, expected);
    assert!(
        text(&out.stdout).contains("linked as rust: application "),
        "{}",
        text(&out.stdout)
    );

    // A tenant links only its own applications; a name the plan does not
    // know, or a malformed one, is refused with the reason.
    let acme = cluster.new_tenant("acme", "standard");
    let globex = cluster.new_tenant("globex", "standard");
    let theirs = cluster.upload_as_ok(&globex, sluice_test_programs::WORDCOUNT);
    let mine = cluster.upload_as_ok(&acme, &go_wasm);
    let body = |links: Value, count: &str| {
        json!({
            "parallelism": 1,
            "programArgsList": [input_arg, format!("output={}", cluster.dir.path().join("out-acme").display()), format!("count={count}")],
            "links": links,
        })
    };
    let (status, answer) = cluster.run_as(
        &acme.http,
        &mine,
        body(json!({"rust": theirs}), "rust/count"),
    );
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = cluster.run_as(&acme.http, &mine, body(json!({}), "rust/count"));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("no component is linked to the job as `rust`"),
        "{answer}"
    );
    let (status, answer) = cluster.run_as(&acme.http, &mine, body(json!({"ru st": mine}), "count"));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("not a link name"), "{answer}");
    let rust = cluster.upload_as_ok(&acme, sluice_test_programs::WORDCOUNT);
    for (links, count, why) in [
        (
            json!({"rust": mine}),
            "rust/count",
            "is the job's own application",
        ),
        (
            json!({"a": rust, "b": rust}),
            "a/count",
            "linked as `b` is also linked as `a`",
        ),
        (
            json!({"rust": rust}),
            "count",
            "linked to the job as `rust`, but the plan runs none of its operators",
        ),
    ] {
        let (status, answer) = cluster.run_as(&acme.http, &mine, body(links, count));
        assert_eq!(status, 400, "{answer}");
        assert!(answer.to_string().contains(why), "{why}: {answer}");
    }
    let many: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("l{i}"), json!(mine))).collect();
    let (status, answer) = cluster.run_as(&acme.http, &mine, body(Value::Object(many), "count"));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("at most 8"), "{answer}");
}

#[test]
fn go_wordcount_on_the_session_cluster_counts_what_rust_wordcount_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(go_wasm) = go_example("wordcount", dir.path()) else {
        return;
    };
    let cluster = Cluster::start(2, 2, &[]);
    let (input, expected) = write_input(cluster.dir.path(), 4 << 20);
    let input_arg = format!("input={}", input.display());
    let mut by_language = Vec::new();
    for (language, wasm) in [
        ("go", go_wasm.as_str()),
        ("rust", sluice_test_programs::WORDCOUNT),
    ] {
        let output = cluster.dir.path().join(format!("out-{language}"));
        let output_arg = format!("output={}", output.display());
        let out = cluster.sluice(&[
            "submit",
            wasm,
            "-p",
            "4",
            "--arg",
            &input_arg,
            "--arg",
            &output_arg,
            "--wait",
        ]);
        assert!(
            out.status.success(),
            "{language}: {}\n{}",
            text(&out.stderr),
            cluster.logs()
        );
        assert!(
            text(&out.stdout).contains("FINISHED"),
            "{}",
            text(&out.stdout)
        );
        let (counts, parts) = read_output(&output);
        assert_eq!(parts, 4, "{language}");
        assert_eq!(counts, expected, "{language}");
        // Which words each subtask wrote (`part-SUBTASK-N`).
        let mut per_subtask = std::collections::BTreeMap::<String, Vec<String>>::new();
        for e in std::fs::read_dir(&output).expect("output").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let subtask = name.split('-').nth(1).unwrap_or_default().to_owned();
            let part = std::fs::read_to_string(e.path()).expect("part");
            per_subtask
                .entry(subtask)
                .or_default()
                .extend(part.lines().map(str::to_owned));
        }
        per_subtask.values_mut().for_each(|lines| lines.sort());
        by_language.push(per_subtask);
    }
    assert_eq!(
        by_language[0], by_language[1],
        "the same words on the same subtasks"
    );
}

/// Runs `first` (a wordcount) at parallelism 2, stops it with a savepoint
/// mid-input, and resumes from it with `second` at parallelism 4: the
/// totals must be exact.
fn savepoint_at_2_restores_at_4(first_wasm: &str, second_wasm: &str) {
    let cluster = Cluster::start(2, 2, &[]);
    let (input, expected) = write_input(cluster.dir.path(), 48 << 20);
    let words: u64 = expected.values().sum();
    let input_arg = format!("input={}", input.display());
    let submit = |wasm: &str, p: &str, out: &str, extra: &[&str]| {
        let output_arg = format!("output={}", cluster.dir.path().join(out).display());
        let mut args = vec![
            "submit",
            wasm,
            "-p",
            p,
            "--arg",
            &input_arg,
            "--arg",
            &output_arg,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = cluster.sluice(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("json")
    };
    let first = submit(first_wasm, "2", "out1", &[]);
    let job = first["jobid"].as_str().expect("jobid").to_owned();
    wait_for("the job to run", &|| cluster.logs(), || {
        let (_, d) = cluster.get(&format!("/jobs/{job}"));
        (d["status-counts"]["RUNNING"].as_u64() == Some(4)).then_some(())
    });
    let out = cluster.sluice(&["stop", &job, "--savepoint", "--json"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        cluster.logs()
    );
    let stopped: Value = serde_json::from_slice(&out.stdout).expect("json");
    let location = stopped["location"].as_str().expect("location").to_owned();
    let d = cluster.wait_for_state(&job, &["CANCELED", "FAILED", "FINISHED"]);
    assert_eq!(d["state"], "CANCELED", "{d}");
    let relative = location
        .split(&format!("/{job}/"))
        .nth(1)
        .expect("the savepoint is under the job's directory");
    let savepoint_dir = cluster
        .dir
        .path()
        .join("jm/checkpoints/default")
        .join(&job)
        .join(relative);
    // The job ended, its savepoint stays.
    assert!(savepoint_dir.join("_metadata").exists(), "{location}");

    let second = submit(
        second_wasm,
        "4",
        "out2",
        &[
            "--from-savepoint",
            &location,
            "--checkpoint-interval",
            "500ms",
            "--wait",
        ],
    );
    assert_eq!(second["state"], "FINISHED", "{second}\n{}", cluster.logs());
    let job2 = second["jid"].as_str().expect("jid").to_owned();
    let (_, c) = cluster.get(&format!("/jobs/{job2}/checkpoints"));
    assert_eq!(c["counts"]["restored"], 1, "{c}");
    let (_, config) = cluster.get(&format!("/jobs/{job2}/checkpoints/config"));
    assert_eq!(config["interval"], 500, "{config}");
    assert_eq!(config["mode"], "exactly_once", "{config}");
    let (_, config) = cluster.get(&format!("/jobs/{job}/checkpoints/config"));
    assert_eq!(
        config["interval"],
        i64::MAX,
        "no periodic checkpoints: {config}"
    );
    let (_, d) = cluster.get(&format!("/jobs/{job2}"));
    let recounted = d["vertices"][1]["metrics"]["read-records"]
        .as_u64()
        .expect("counts");
    assert!(recounted < words, "the second job started over: {d}");
    let (counts, parts) = read_output(&cluster.dir.path().join("out2"));
    assert_eq!(parts, 4);
    assert_eq!(counts, expected);
    assert!(savepoint_dir.join("_metadata").exists());

    // A savepoint path that is not one is refused with the reason.
    let out = cluster.sluice(&[
        "submit",
        sluice_test_programs::WORDCOUNT,
        "--arg",
        &input_arg,
        "--arg",
        "output=/tmp/never",
        "--from-savepoint",
        "no/such/savepoint",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot read savepoint `no/such/savepoint`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_corrupt_checkpoint_falls_back_to_the_previous_one() {
    let mut cluster = Cluster::start(
        2,
        4,
        &[
            "--restart-strategy",
            "fixed-delay",
            "--restart-attempts",
            "5",
            "--restart-delay",
            "200ms",
        ],
    );
    let (input, expected) = write_input(cluster.dir.path(), 48 << 20);
    let out_dir = cluster.dir.path().join("out");
    let job = cluster.start_wordcount(&input, &out_dir, Some(200));
    wait_for("two completed checkpoints", &|| cluster.logs(), || {
        let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
        (c["counts"]["completed"].as_u64()? >= 2).then_some(())
    });
    let mut victim = cluster.tms[0].take().expect("tm0");
    victim.child.kill().expect("kill -9");
    let _ = victim.child.wait();
    // With a TaskManager gone no checkpoint can complete any more: damage
    // the newest one before the loss is noticed.
    let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
    let newest = c["latest"]["completed"]["id"].as_u64().expect("newest");
    let chk = cluster
        .dir
        .path()
        .join("jm/checkpoints/default")
        .join(&job)
        .join(format!("chk-{newest}"));
    let mut damaged = 0;
    for e in std::fs::read_dir(&chk).expect("checkpoint dir") {
        let path = e.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("task-"))
        {
            std::fs::write(&path, b"not a snapshot").expect("damage");
            damaged += 1;
        }
    }
    assert_eq!(damaged, 8);
    let d = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(d["state"], "FINISHED", "{d}\n{}", cluster.logs());
    let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
    let restored = c["latest"]["restored"]["id"].as_u64().expect("restored");
    assert!(
        restored < newest,
        "restored {restored}, damaged {newest}: {c}"
    );
    let (_, ex) = cluster.get(&format!("/jobs/{job}/exceptions"));
    assert!(
        ex.to_string().contains("does not match its checksum"),
        "{ex}"
    );
    let (counts, _) = read_output(&out_dir);
    assert_eq!(counts, expected);
}

#[test]
fn checkpoints_to_s3_fail_while_it_is_down_and_the_job_runs_on_and_recovers() {
    let Some(bin) = sluice_test_programs::moto::find() else {
        return;
    };
    let mut moto = sluice_test_programs::moto::Moto::start(bin, "ckpt");
    let env = vec![
        ("SLUICE_S3_ENDPOINT".to_owned(), moto.endpoint()),
        ("SLUICE_S3_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
    ];
    let cluster = Cluster::start_env(
        2,
        2,
        &[
            "--checkpoint-dir",
            "s3://ckpt/sluice",
            "--checkpoint-tolerable-failures",
            "1000",
            "--checkpoint-timeout",
            "5s",
        ],
        env,
    );
    let (job, out_dir) = cluster.start_checker(200, 1_000_000, 10, 50_000);
    let counts = |c: &Value, what: &str| c["counts"][what].as_u64().unwrap_or(0);
    let checkpoints = || cluster.get(&format!("/jobs/{job}/checkpoints")).1;
    wait_for("a checkpoint in S3", &|| cluster.logs(), || {
        (counts(&checkpoints(), "completed") >= 1).then_some(())
    });
    // The store goes away: checkpoints fail, the job keeps running.
    moto.stop();
    let failed_before = counts(&checkpoints(), "failed");
    let down = wait_for("failed checkpoints", &|| cluster.logs(), || {
        let c = checkpoints();
        (counts(&c, "failed") >= failed_before + 2).then_some(c)
    });
    let (_, d) = cluster.get(&format!("/jobs/{job}"));
    assert_eq!(d["state"], "RUNNING", "{d}");
    assert_eq!(
        d["attempt"], 0,
        "a storage outage must not restart the job: {d}"
    );
    // It comes back: checkpoints complete again.
    moto.restart("ckpt");
    let completed_down = counts(&down, "completed");
    wait_for("a checkpoint after the outage", &|| cluster.logs(), || {
        (counts(&checkpoints(), "completed") > completed_down).then_some(())
    });
    let d = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(d["state"], "FINISHED", "{d}\n{}", cluster.logs());
    assert_eq!(d["attempt"], 0, "{d}");
    let (lines, _) = sluice_test_programs::wordcount::output_lines(&out_dir);
    assert_eq!(
        lines.iter().filter(|l| !l.starts_with('#')).count(),
        1_000_000
    );
}

#[test]
fn a_restarted_jobmanager_finishes_the_cleanups_its_predecessor_left() {
    // What a JobManager that died mid-cleanup leaves: a cancelled job whose
    // checkpoints are not deleted yet (one is a savepoint, to keep) and
    // whose cost is recorded, a finished one of another tenant's, and a job
    // that was still running.
    let dir = tempfile::tempdir().expect("tempdir");
    let jm = dir.path().join("jm");
    let checkpoints = jm.join("checkpoints");
    let storage = format!("file://{}", checkpoints.display());
    let (cancelled, running, other) = ("11".repeat(16), "22".repeat(16), "33".repeat(16));
    for (job, chk) in [(&cancelled, 3), (&cancelled, 5), (&running, 1)] {
        let d = checkpoints.join(job).join(format!("chk-{chk}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("task-0-0"), b"snapshot").expect("write");
    }
    std::fs::create_dir_all(jm.join("job-results")).expect("mkdir");
    let cost = |fuel: u64| json!({"fuel": fuel, "cpu_ns": 2_500_000_000u64, "records_in": 70, "records_out": 50});
    for (job, owner, state, keep, spent) in [
        (&cancelled, None, "CANCELED", vec![5], cost(1_000)),
        (&running, None, "RUNNING", vec![], Value::Null),
        (&other, Some("acme"), "FINISHED", vec![], cost(9_000)),
    ] {
        let mut record = json!({
            "job": job, "state": state, "storage": storage, "keep": keep,
            "retained": false, "cleaned": owner.is_some(), "spent": spent,
        });
        if let Some(owner) = owner {
            record["owner"] = json!(owner);
        }
        std::fs::write(
            jm.join(format!("job-results/{job}.json")),
            record.to_string(),
        )
        .expect("write");
    }
    let proc = Proc::start(
        &[
            "jobmanager",
            "--rest-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
            "--data-dir",
            "jm",
        ],
        dir.path().join("jm.log"),
        dir.path(),
    );
    let read = |job: &str| -> Option<Value> {
        serde_json::from_slice(&std::fs::read(jm.join(format!("job-results/{job}.json"))).ok()?)
            .ok()
    };
    wait_for("both records to be settled", &|| proc.log(), || {
        (read(&cancelled)?["cleaned"] == true && read(&running)?["cleaned"] == true).then_some(())
    });
    assert!(!checkpoints.join(&cancelled).join("chk-3").exists());
    assert!(
        checkpoints.join(&cancelled).join("chk-5/task-0-0").exists(),
        "the savepoint stays"
    );
    let r = read(&running).expect("record");
    assert_eq!(
        (r["state"].as_str(), r["retained"].as_bool()),
        (Some("FAILED"), Some(true))
    );
    assert!(
        checkpoints.join(&running).join("chk-1/task-0-0").exists(),
        "kept for a restore"
    );

    // What the earlier JobManager's jobs cost stays on each tenant's bill.
    let endpoints: Value = wait_for("the endpoints file", &|| proc.log(), || {
        serde_json::from_slice(&std::fs::read(jm.join("endpoints.json")).ok()?).ok()
    });
    let admin = client_with(Some(&admin_token(&jm.join("credentials"))));
    let rest = endpoints["rest"].as_str().expect("rest");
    let usage: Value = admin
        .get(format!("http://{rest}/v1/tenants/me/usage"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("usage");
    assert_eq!(usage["tenant"], "default", "{usage}");
    assert_eq!(
        usage["total"],
        json!({"records-in": 70, "records-out": 50, "fuel": 1_000, "cpu-seconds": 2.5,
               "checkpoint-bytes": 0}),
        "only the default tenant's recorded job: {usage}"
    );
    assert!(
        proc.log()
            .contains("was running when the JobManager stopped"),
        "{}",
        proc.log()
    );
}

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped; `None` when
/// this process may not mount (no CAP_SYS_ADMIN).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_checkpoints_but_not_the_job_until_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One page: no snapshot of 1,000 keys' state fits.
    let Some(disk) = Tmpfs::mount(&dir.path().join("ckpt"), "4k") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test mounts a tmpfs and needs CAP_SYS_ADMIN"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    let storage = format!("file://{}", disk.0.display());
    let cluster = Cluster::start(
        2,
        2,
        &[
            "--checkpoint-dir",
            &storage,
            "--checkpoint-tolerable-failures",
            "1000",
        ],
    );
    let (job, out_dir) = cluster.start_checker(200, 1_000_000, 1000, 50_000);
    let counts = |what: &str| {
        cluster.get(&format!("/jobs/{job}/checkpoints")).1["counts"][what]
            .as_u64()
            .unwrap_or(0)
    };
    wait_for(
        "checkpoints failing on the full disk",
        &|| cluster.logs(),
        || (counts("failed") >= 2).then_some(()),
    );
    assert_eq!(counts("completed"), 0);
    let (_, d) = cluster.get(&format!("/jobs/{job}"));
    assert_eq!(
        (d["state"].as_str(), d["attempt"].as_u64()),
        (Some("RUNNING"), Some(0)),
        "{d}"
    );
    let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
    let why = c["latest"]["failed"]["failure_message"]
        .as_str()
        .unwrap_or("");
    assert!(
        why.contains("No space left") || why.contains("space"),
        "{c}"
    );
    // Space comes back: checkpoints complete again and the job finishes.
    disk.resize("64m");
    wait_for("a checkpoint on the roomy disk", &|| cluster.logs(), || {
        (counts("completed") >= 1).then_some(())
    });
    let d = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(
        (d["state"].as_str(), d["attempt"].as_u64()),
        (Some("FINISHED"), Some(0)),
        "{d}"
    );
    let (lines, _) = sluice_test_programs::wordcount::output_lines(&out_dir);
    assert_eq!(
        lines.iter().filter(|l| !l.starts_with('#')).count(),
        1_000_000
    );
}

/// Published checker lines (`part-*` files only) of `dirs` together.
fn published_lines(dirs: &[&Path]) -> Vec<String> {
    let mut lines = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).expect("output dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("part-") {
                let text = std::fs::read_to_string(entry.path()).expect("utf-8 output");
                lines.extend(text.lines().map(str::to_owned));
            }
        }
    }
    lines
}

/// Checks the checker's published output: every index of `0..records`
/// exactly once, and every key's state saw its whole sequence.
fn assert_exactly_once(lines: &[String], records: u64, keys: u64, what: &str) {
    let mut published: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut summaries = 0;
    for line in lines {
        if let Some(summary) = line.strip_prefix('#') {
            let f: Vec<&str> = summary.split('\t').collect();
            let n = |i: usize| f[i].parse::<u64>().expect("number");
            assert_eq!((n(1), n(2), n(3)), (records / keys, 0, 0), "{what}: {line}");
            summaries += 1;
            continue;
        }
        let (_, index) = line.split_once('\t').expect("KEY<TAB>INDEX");
        *published.entry(index.parse().expect("index")).or_default() += 1;
    }
    assert_eq!(summaries, keys, "{what}: every key ends with its summary");
    assert_eq!(published.len() as u64, records, "{what}: indices were lost");
    if let Some((index, n)) = published.iter().find(|(_, n)| **n != 1) {
        panic!("{what}: index {index} was published {n} times");
    }
}

/// How the job that starts from the savepoint runs.
#[derive(Clone, Copy, Debug)]
enum Resume {
    /// Submitted to the cluster at this parallelism.
    Cluster(u32),
    /// `sluice run` on the mini-cluster at this parallelism.
    Local(u32),
}

/// Runs the exactly-once checker at parallelism 2, savepoints it — with
/// `stop`, stops it with the savepoint (`sluice stop`), else takes one
/// (`sluice savepoint`), lets it publish more, and cancels it — then
/// resumes from the savepoint as `resume` says, into the same output
/// directory or a new one, and checks that the two jobs together
/// published every record exactly once.
fn checker_through_a_savepoint(
    cluster: &Cluster,
    tag: &str,
    stop: bool,
    resume: Resume,
    same_dir: bool,
) {
    const RECORDS: u64 = 150_000;
    const KEYS: u64 = 100;
    let what = format!("{tag}: stop={stop} resume={resume:?} same_dir={same_dir}");
    let out1 = cluster.dir.path().join(format!("{tag}-out1"));
    let out2 = if same_dir {
        out1.clone()
    } else {
        cluster.dir.path().join(format!("{tag}-out2"))
    };
    let args = |out: &Path| {
        vec![
            format!("records={RECORDS}"),
            format!("keys={KEYS}"),
            "rate=7500".to_owned(),
            format!("output={}", out.display()),
        ]
    };
    let mut submit: Vec<String> = [
        "submit",
        sluice_test_programs::EXACTLY_ONCE,
        "-p",
        "2",
        "--checkpoint-interval",
        "300ms",
    ]
    .map(str::to_owned)
    .to_vec();
    for a in args(&out1) {
        submit.extend(["--arg".to_owned(), a]);
    }
    let submit: Vec<&str> = submit.iter().map(String::as_str).collect();
    let out = cluster.sluice(&submit);
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    let job = text(&out.stdout).trim().to_owned();
    let completed = |min: u64| {
        wait_for(
            &format!("{what}: {min} checkpoints"),
            &|| cluster.logs(),
            || {
                let (_, c) = cluster.get(&format!("/jobs/{job}/checkpoints"));
                let n = c["counts"]["completed"].as_u64()?;
                (n >= min).then_some(n)
            },
        )
    };
    let before = completed(1);
    let out = if stop {
        // A Flink habit: the flag before the job id.
        cluster.sluice(&["stop", "--savepoint", &job, "--json"])
    } else {
        cluster.sluice(&["savepoint", &job, "--json"])
    };
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stderr),
        cluster.logs()
    );
    let location = serde_json::from_slice::<Value>(&out.stdout).expect("json")["location"]
        .as_str()
        .expect("location")
        .to_owned();
    if stop {
        cluster.wait_for_state(&job, &["CANCELED"]);
    } else {
        // The job runs on and publishes past its savepoint before it goes.
        completed(before + 3);
        let out = cluster.sluice(&["cancel", &job]);
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        cluster.wait_for_state(&job, &["CANCELED"]);
    }
    let (command, p) = match resume {
        Resume::Cluster(p) => ("submit", p),
        Resume::Local(p) => ("run", p),
    };
    let p = p.to_string();
    let mut again: Vec<String> = [
        command,
        sluice_test_programs::EXACTLY_ONCE,
        "-p",
        &p,
        "--from-savepoint",
        &location,
    ]
    .map(str::to_owned)
    .to_vec();
    if matches!(resume, Resume::Cluster(_)) {
        again.extend(["--wait", "--checkpoint-interval", "300ms"].map(str::to_owned));
    }
    for a in args(&out2) {
        again.extend(["--arg".to_owned(), a]);
    }
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let out = cluster.sluice(&again);
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stderr),
        cluster.logs()
    );
    let dirs: Vec<&Path> = if same_dir {
        vec![&out1]
    } else {
        vec![&out1, &out2]
    };
    assert_exactly_once(&published_lines(&dirs), RECORDS, KEYS, &what);
}

#[test]
fn a_savepoint_then_cancel_resumes_into_its_directory_with_every_record_once() {
    let cluster = Cluster::start(2, 2, &[]);
    // At another parallelism on the cluster, and at the same one locally.
    checker_through_a_savepoint(&cluster, "p4", false, Resume::Cluster(4), true);
    checker_through_a_savepoint(&cluster, "local", false, Resume::Local(2), true);
}

#[test]
fn stop_with_savepoint_resumes_into_a_new_directory_or_its_own_with_every_record_once() {
    let cluster = Cluster::start(2, 2, &[]);
    checker_through_a_savepoint(&cluster, "new-dir", true, Resume::Cluster(2), false);
    checker_through_a_savepoint(&cluster, "p1", true, Resume::Cluster(1), true);
}

/// A policies directory whose `standard` policy has `max_call_ms` and no
/// fuel, under `dir`.
fn deadline_policy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/standard.toml"),
    )
    .expect("standard policy")
    .replace("fuel_per_call = 2_000_000_000", "")
    .replace("# max_call_ms = 10_000", "max_call_ms = 50");
    let policies = dir.join("deadline-policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("standard.toml"), text).expect("policy");
    policies
}

#[test]
fn permanent_errors_are_refused_at_submission_or_fail_the_job_without_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = deadline_policy(dir.path());
    let policy_arg = policy.display().to_string();
    let cluster = Cluster::start(
        1,
        2,
        &[
            "--policies-dir",
            &policy_arg,
            "--restart-attempts",
            "2",
            "--restart-delay",
            "50ms",
        ],
    );
    let d = cluster.dir.path();
    let submit = |args: &[&str]| {
        let mut all = vec!["submit", sluice_test_programs::WORDCOUNT];
        all.extend_from_slice(args);
        cluster.sluice(&all)
    };
    // A missing input, named as the user typed it but normalised.
    let missing = format!(
        "input={}/../{}/nonexistent.txt",
        d.display(),
        d.file_name().expect("name").to_string_lossy()
    );
    let out = submit(&["--arg", &missing, "--arg", "output=/tmp/never"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "input `{}/nonexistent.txt` does not exist",
            d.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("does not exist").count(), 1, "{stderr}");
    assert!(
        !stderr.contains("context") && !stderr.contains("service"),
        "{stderr}"
    );
    // An output that is a file.
    let input = d.join("in.txt");
    std::fs::write(&input, "a b\n").expect("input");
    let input_arg = format!("input={}", input.display());
    let file_out = format!("output={}", input.display());
    let out = submit(&["--arg", &input_arg, "--arg", &file_out]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is a file"),
        "{}",
        text(&out.stderr)
    );
    let (_, jobs) = cluster.get("/jobs/overview");
    assert_eq!(
        jobs["jobs"].as_array().map(Vec::len),
        Some(0),
        "nothing ran: {jobs}"
    );

    // A guest that panics would panic again: no restart, and --wait ends.
    let out = cluster.sluice(&[
        "submit",
        sluice_test_programs::ADVERSARIAL,
        "--arg",
        "mode=panic",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: gen -> panic -> sink (1/1): operator `panic`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not restarted: the failure would happen again"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour off a terminal: {stderr}"
    );
    let job = text(&out.stdout).lines().last().expect("job id").to_owned();
    let (_, detail) = cluster.get(&format!("/jobs/{job}"));
    assert_eq!(
        (detail["state"].as_str(), detail["attempt"].as_u64()),
        (Some("FAILED"), Some(0))
    );
    let (_, exceptions) = cluster.get(&format!("/jobs/{job}/exceptions"));
    assert_eq!(
        exceptions["exceptionHistory"]["entries"][0]["failureLabels"]["kind"], "non-recoverable",
        "{exceptions}"
    );

    // A time limit may not be hit again: restarted, until the strategy gives up.
    let out = cluster.sluice(&[
        "submit",
        sluice_test_programs::ADVERSARIAL,
        "--arg",
        "mode=spin",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("exceeded its time limit (50 ms"),
        "{stderr}"
    );
    assert!(stderr.contains("allows 2 restarts"), "{stderr}");
    let job = text(&out.stdout).lines().last().expect("job id").to_owned();
    let info = cluster.sluice(&["info", &job]);
    let info = text(&info.stdout);
    assert!(info.contains("2 restarts"), "{info}");
    assert_eq!(
        info.matches("exceeded its time limit").count(),
        3,
        "one per run: {info}"
    );
    assert!(info.contains("not restarted:"), "{info}");
    // The servers said what happened, one line each, with the job's id.
    let jm_log = cluster.jm.log();
    for line in [
        "job submitted",
        "job restarts after a failure",
        "job failed",
        "not restarted",
    ] {
        assert!(
            jm_log.lines().any(|l| l.contains(line) && l.contains(&job)),
            "{line}:\n{jm_log}"
        );
    }
    let tm_log = cluster.tms[0].as_ref().expect("running").log();
    assert!(
        tm_log
            .lines()
            .any(|l| l.contains("deploying") && l.contains(&job)),
        "{tm_log}"
    );
}

#[test]
fn the_cli_takes_host_port_bare_ids_and_long_names_and_says_when_a_job_already_ended() {
    let cluster = Cluster::start(1, 2, &[]);
    let address = cluster.rest.trim_start_matches("http://").to_owned();
    let sluice = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(cluster.dir.path())
            .env_remove("SLUICE_JOBMANAGER")
            // The admin's token from the file the JobManager wrote.
            .env("SLUICE_CREDENTIALS", "jm/credentials")
            .stdin(Stdio::null())
            .output()
            .expect("run sluice");
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        out
    };
    // HOST:PORT, Flink's -m, and the id `upload` prints with or without `.wasm`.
    let out = sluice(&["upload", "-m", &address, sluice_test_programs::WORDCOUNT]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    let bare = id.strip_suffix(".wasm").expect("HASH.wasm").to_owned();
    let jars = sluice(&["jars", "--jobmanager", &address]);
    let jars = text(&jars.stdout);
    assert!(
        jars.contains(&id) && jars.contains("wordcount.wasm"),
        "{jars}"
    );
    let input = cluster.dir.path().join("in.txt");
    std::fs::write(&input, "a b a\n").expect("input");
    let input_arg = format!("input={}", input.display());
    let mut jobs = Vec::new();
    for (i, app) in [&id, &bare].into_iter().enumerate() {
        let output_arg = format!(
            "output={}",
            cluster.dir.path().join(format!("o{i}")).display()
        );
        let out = sluice(&[
            "submit",
            "-m",
            &address,
            app,
            "--arg",
            &input_arg,
            "--arg",
            &output_arg,
            "--wait",
        ]);
        assert!(out.status.success(), "{app}: {}", text(&out.stderr));
        jobs.push(text(&out.stdout).lines().last().expect("job id").to_owned());
    }
    // A name of over 64 KiB (every argument is in it) is cut for display.
    let long: Vec<String> = (0..20_000).map(|i| format!("k{i}=v")).collect();
    let mut program = vec![
        input_arg.clone(),
        format!("output={}", cluster.dir.path().join("o-long").display()),
    ];
    program.extend(long);
    let jar = cluster.upload_wordcount();
    let long_job = cluster.run_ok(&jar, json!({ "programArgsList": program }));
    cluster.wait_for_state(&long_job, &["FINISHED"]);
    let list = sluice(&["list", "-m", &address]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed = text(&list.stdout);
    assert!(listed.lines().all(|l| l.chars().count() < 250), "{listed}");
    // Newest first.
    let order: Vec<usize> = [&long_job, &jobs[1], &jobs[0]]
        .iter()
        .map(|j| listed.find(j.as_str()).expect("listed"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{listed}");
    assert!(
        listed.contains("STARTED") && listed.contains("DURATION"),
        "{listed}"
    );
    // Cancelling a finished job says so, and fails.
    let out = sluice(&["cancel", "-m", &address, &jobs[0]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already ended (FINISHED)"),
        "{}",
        text(&out.stderr)
    );
    // A bad address is refused with the reason.
    let out = sluice(&["list", "-m", "not a host"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn ended_jobs_beyond_the_job_store_leave_memory_and_stay_answerable() {
    let cluster = Cluster::start(1, 1, &["--jobstore-max-capacity", "2"]);
    let input = cluster.dir.path().join("in.txt");
    std::fs::write(&input, "a b\n").expect("input");
    let jar = cluster.upload_wordcount();
    let mut jobs = Vec::new();
    for i in 0..4 {
        let job = cluster.run_ok(
            &jar,
            json!({"programArgsList": [
                format!("input={}", input.display()),
                format!("output={}", cluster.dir.path().join(format!("o{i}")).display()),
            ]}),
        );
        cluster.wait_for_state(&job, &["FINISHED"]);
        jobs.push(job);
    }
    let held = wait_for("the job store to drop old jobs", &|| cluster.logs(), || {
        let (_, overview) = cluster.get("/jobs/overview");
        let held: Vec<String> = overview["jobs"]
            .as_array()?
            .iter()
            .filter_map(|j| j["jid"].as_str().map(str::to_owned))
            .collect();
        (held.len() == 2).then_some(held)
    });
    assert!(
        held.contains(&jobs[3]) && held.contains(&jobs[2]),
        "{held:?}"
    );
    // The first job left memory; its details are still answered.
    for path in ["", "/exceptions", "/checkpoints", "/checkpoints/config"] {
        let (status, body) = cluster.get(&format!("/jobs/{}{path}", jobs[0]));
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, d) = cluster.get(&format!("/jobs/{}", jobs[0]));
    assert_eq!(d["state"], "FINISHED", "{d}");
    let cancel = cluster
        .http
        .patch(format!("{}/jobs/{}?mode=cancel", cluster.rest, jobs[0]))
        .send()
        .expect("patch");
    assert_eq!(cancel.status().as_u16(), 409);
    let (status, _) = cluster.get("/jobs/0123456789abcdef0123456789abcdef");
    assert_eq!(status, 404);
}

/// A tenant made through the admin CLI, with its token.
struct TenantClient {
    token: String,
    http: reqwest::blocking::Client,
}

impl Cluster {
    /// Creates a tenant on `policy` and a token for it, as an admin would.
    /// Creates a tenant that may use the test's directory, and its token.
    fn new_tenant(&self, name: &str, policy: &str) -> TenantClient {
        let root = self.dir.path().display().to_string();
        self.new_tenant_with(name, &["--policy", policy, "--file-root", &root])
    }

    /// Creates a tenant with `sluice tenant create NAME ARGS...`, and its token.
    fn new_tenant_with(&self, name: &str, args: &[&str]) -> TenantClient {
        let out = self.sluice(&[&["tenant", "create", name][..], args].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("created tenant {name}")));
        let out = self.sluice(&["token", "create", name]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let token = text(&out.stdout).trim().to_owned();
        assert!(token.starts_with("sluice_"), "{token}");
        assert!(text(&out.stderr).contains("shown once"));
        TenantClient {
            http: client_with(Some(&token)),
            token,
        }
    }

    /// Uploads a component as `t`; its id.
    fn upload_as_ok(&self, t: &TenantClient, wasm: &str) -> String {
        let (status, up) = self.upload_as(&t.http, Path::new(wasm));
        assert_eq!(status, 200, "{up}");
        up["filename"]
            .as_str()
            .and_then(|f| f.rsplit('/').next())
            .expect("a stored file")
            .to_owned()
    }

    /// Starts an endless join job as `t` writing under `out`; its id.
    fn start_endless_as(&self, t: &TenantClient, out: &Path) -> String {
        let jar = self.upload_as_ok(t, sluice_test_programs::JOIN);
        let (status, run) = self.run_as(
            &t.http,
            &jar,
            json!({
                "parallelism": 1,
                "programArgsList": ["left=1000000000000000", "right=1000000000000000", format!("output={}", out.display())],
            }),
        );
        assert_eq!(status, 200, "{run}");
        let job = run["jobid"].as_str().expect("jobid").to_owned();
        wait_for(&format!("job {job} to run"), &|| self.logs(), || {
            let (_, d) = self.get_as(&t.http, &format!("/jobs/{job}"));
            (d["state"] == "RUNNING").then_some(())
        });
        job
    }

    /// Any request as `http`: its status and body.
    fn call(
        &self,
        http: &reqwest::blocking::Client,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = http.request(method, format!("{}{path}", self.rest));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().expect("request");
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    }
}

fn job_ids(v: &Value, key: &str, field: &str) -> Vec<String> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j[field].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn two_tenants_see_and_touch_only_their_own_jobs_jars_and_savepoints() {
    let cluster = Cluster::start(1, 4, &[]);
    let d = cluster.dir.path().to_owned();
    let acme = cluster.new_tenant("acme", "standard");
    let beta = cluster.new_tenant("beta", "standard");
    let a_job = cluster.start_endless_as(&acme, &d.join("acme-out"));
    let b_job = cluster.start_endless_as(&beta, &d.join("beta-out"));
    let b_jar = cluster.upload_as_ok(&beta, sluice_test_programs::WORDCOUNT);

    // Lists are per tenant; the admin sees both, with their owners.
    for (t, mine, theirs) in [(&acme, &a_job, &b_job), (&beta, &b_job, &a_job)] {
        let (_, jobs) = cluster.get_as(&t.http, "/jobs");
        assert_eq!(
            job_ids(&jobs, "jobs", "id"),
            std::slice::from_ref(mine),
            "{jobs}"
        );
        let (_, overview) = cluster.get_as(&t.http, "/jobs/overview");
        assert_eq!(
            job_ids(&overview, "jobs", "jid"),
            std::slice::from_ref(mine)
        );
        let (_, o) = cluster.get_as(&t.http, "/overview");
        assert_eq!(o["jobs-running"], 1, "{o}");
        let listed = cluster.sluice_as(&t.token, &["list"]);
        let listed = text(&listed.stdout);
        assert!(
            listed.contains(mine.as_str()) && !listed.contains(theirs.as_str()),
            "{listed}"
        );
    }
    let (_, all) = cluster.get("/jobs/overview");
    let owners: Vec<&str> = all["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["tenant"].as_str())
        .collect();
    assert!(
        owners.contains(&"acme") && owners.contains(&"beta"),
        "{all}"
    );
    // The same bytes uploaded by both are two jars; beta's wordcount is not acme's.
    let (_, a_jars) = cluster.get_as(&acme.http, "/jars");
    assert_eq!(
        a_jars["files"].as_array().expect("files").len(),
        1,
        "{a_jars}"
    );
    let (_, admin_jars) = cluster.get("/jars");
    assert_eq!(
        admin_jars["files"].as_array().expect("files").len(),
        3,
        "{admin_jars}"
    );

    // Every id-taking endpoint answers beta's ids to acme exactly as ids
    // that do not exist.
    let trigger = wait_for("beta's job to take a savepoint", &|| cluster.logs(), || {
        let (status, sp) = cluster.call(
            &beta.http,
            "POST",
            &format!("/jobs/{b_job}/savepoints"),
            Some(json!({})),
        );
        // 409 until every task runs.
        (status == 200)
            .then(|| sp["request-id"].as_str().map(str::to_owned))
            .flatten()
    });
    let location = wait_for("beta's savepoint", &|| cluster.logs(), || {
        let (_, s) = cluster.get_as(&beta.http, &format!("/jobs/{b_job}/savepoints/{trigger}"));
        s["operation"]["location"].as_str().map(str::to_owned)
    });
    let random_job = "0123456789abcdef0123456789abcdef";
    let random_jar = format!("{}.wasm", "ab".repeat(32));
    let probes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/jobs/{job}".into(), None),
        ("GET", "/v1/jobs/{job}/exceptions".into(), None),
        ("GET", "/jobs/{job}/checkpoints".into(), None),
        ("GET", "/jobs/{job}/checkpoints/config".into(), None),
        ("GET", format!("/jobs/{{job}}/savepoints/{trigger}"), None),
        ("PATCH", "/jobs/{job}?mode=cancel".into(), None),
        ("POST", "/jobs/{job}/savepoints".into(), Some(json!({}))),
        ("POST", "/jobs/{job}/stop".into(), Some(json!({}))),
        (
            "POST",
            "/jars/{jar}/run".into(),
            Some(json!({"parallelism": 1})),
        ),
        ("DELETE", "/jars/{jar}".into(), None),
    ];
    for (method, path, body) in probes {
        let with = |job: &str, jar: &str| path.replace("{job}", job).replace("{jar}", jar);
        let (s1, b1) = cluster.call(&acme.http, method, &with(&b_job, &b_jar), body.clone());
        let (s2, b2) = cluster.call(
            &acme.http,
            method,
            &with(random_job, &random_jar),
            body.clone(),
        );
        assert_eq!(s1, 404, "{method} {path}: {b1}");
        assert_eq!(s1, s2, "{method} {path}");
        let normalised = b1
            .to_string()
            .replace(&b_job, random_job)
            .replace(&b_jar, &random_jar);
        assert_eq!(normalised, b2.to_string(), "{method} {path}");
    }
    let info = cluster.sluice_as(&acme.token, &["info", &b_job]);
    assert_eq!(info.status.code(), Some(1));
    assert!(text(&info.stderr).contains("404"), "{}", text(&info.stderr));
    // Nothing of beta's moved.
    let (_, bd) = cluster.get_as(&beta.http, &format!("/jobs/{b_job}"));
    assert_eq!(bd["state"], "RUNNING", "{bd}");

    // Acme cannot restore beta's savepoint, nor reach out of its prefix.
    let a_jar = cluster.upload_as_ok(&acme, sluice_test_programs::JOIN);
    let acme_root = format!("file://{}/jm/checkpoints/acme", d.display());
    let beta_relative = location
        .split("/beta/")
        .nth(1)
        .expect("beta's prefix")
        .to_owned();
    for (path, status) in [
        (location.clone(), 403),
        (location.trim_start_matches("file://").to_owned(), 403),
        (format!("{acme_root}/../beta/{beta_relative}"), 400),
        (format!("{acme_root}/%2e%2e/beta/{beta_relative}"), 400),
        (format!("../beta/{beta_relative}"), 400),
    ] {
        let (s, b) = cluster.run_as(&acme.http, &a_jar, json!({"parallelism": 1, "savepointPath": path, "programArgsList": ["left=1", "right=1", format!("output={}", d.join("restored").display())]}));
        assert_eq!(s, status, "{path}: {b}");
    }
    assert!(!d.join("restored").exists(), "nothing ran");
    // Beta restores its own.
    let b_join = cluster.upload_as_ok(&beta, sluice_test_programs::JOIN);
    let (s, b) = cluster.run_as(&beta.http, &b_join, json!({"parallelism": 1, "savepointPath": location, "allowNonRestoredState": true, "programArgsList": ["left=1", "right=1", format!("output={}", d.join("beta-restored").display())]}));
    assert_eq!(s, 200, "{b}");

    // Deleting beta's copy of the join app leaves acme's.
    let (s, _) = cluster.call(&beta.http, "DELETE", &format!("/jars/{a_jar}"), None);
    assert_eq!(s, 200);
    let (_, a_jars) = cluster.get_as(&acme.http, "/jars");
    assert_eq!(
        job_ids(&a_jars, "files", "id"),
        std::slice::from_ref(&a_jar)
    );

    // Cluster-wide views are an admin's.
    for path in ["/taskmanagers", "/metrics", "/tenants", "/tokens"] {
        let (s, b) = cluster.get_as(&acme.http, path);
        assert_eq!(s, 403, "{path}: {b}");
    }
    let (s, usage) = cluster.get_as(&acme.http, "/tenants/me/usage");
    assert_eq!(s, 200);
    assert_eq!(usage["tenant"], "acme");
    let jobs_quota = usage["quotas"]
        .as_array()
        .expect("quotas")
        .iter()
        .find(|q| q["quota"] == "max_jobs")
        .expect("max_jobs")
        .clone();
    assert_eq!(jobs_quota["used"], 1, "{usage}");

    // Flink's own CLI, with acme's token in its header variable.
    if let Some(flink) = external_tool("flink", "SLUICE_FLINK") {
        let address = cluster.rest.trim_start_matches("http://").to_owned();
        let flink_cli = |args: &[&str]| {
            let out = Command::new(&flink)
                .args(args)
                .env(
                    "FLINK_REST_CLIENT_HEADERS",
                    format!("Authorization:Bearer {}", acme.token),
                )
                .stdin(Stdio::null())
                .output()
                .expect("run flink");
            (out.status.success(), text(&out.stdout) + &text(&out.stderr))
        };
        let (ok, listed) = flink_cli(&["list", "-m", &address]);
        assert!(ok, "{listed}");
        assert!(
            listed.contains(&a_job) && !listed.contains(&b_job),
            "{listed}"
        );
        let (ok, out) = flink_cli(&["cancel", "-m", &address, &b_job]);
        assert!(!ok, "{out}");
        let (ok, out) = flink_cli(&["cancel", "-m", &address, &a_job]);
        assert!(ok, "{out}");
        cluster.wait_for_state(&a_job, &["CANCELED"]);
        let (_, bd) = cluster.get_as(&beta.http, &format!("/jobs/{b_job}"));
        assert_eq!(bd["state"], "RUNNING", "{bd}");
    }

    // No token, a bad one, a revoked one: 401; a burst is throttled.
    let anonymous = client_with(None);
    let (s, b) = cluster.get_as(&anonymous, "/jobs");
    assert_eq!(s, 401, "{b}");
    assert!(
        b["errors"][0]
            .as_str()
            .expect("errors")
            .contains("Authorization: Bearer"),
        "{b}"
    );
    let list = cluster.sluice_as("sluice_0000000000000000_0000", &["list"]);
    assert_eq!(list.status.code(), Some(1));
    assert!(text(&list.stderr).contains("401"), "{}", text(&list.stderr));
    let out = cluster.sluice(&["token", "list", "--json"]);
    let tokens: Value = serde_json::from_slice(&out.stdout).expect("json");
    let beta_id = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["tenant"] == "beta")
        .expect("beta's")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        cluster
            .sluice(&["token", "revoke", &beta_id])
            .status
            .success()
    );
    let (s, _) = cluster.get_as(&beta.http, "/jobs");
    assert_eq!(s, 401);
    let bad = client_with(Some(&format!(
        "sluice_{}_{}",
        "1".repeat(16),
        "2".repeat(64)
    )));
    let statuses: Vec<u16> = (0..40).map(|_| cluster.get_as(&bad, "/jobs").0).collect();
    assert_eq!(statuses[0], 401);
    assert_eq!(*statuses.last().expect("some"), 429, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429));
    let (s, _) = cluster.get_as(&acme.http, "/jobs");
    assert_eq!(s, 200, "a good token is never throttled");

    // The audit log: one line per change and per refusal, never a secret.
    let audit = std::fs::read_to_string(d.join("jm/audit.log")).expect("audit log");
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let has = |tenant: &str, action: &str, result: u16| {
        lines
            .iter()
            .any(|l| l["tenant"] == tenant && l["action"] == action && l["result"] == result)
    };
    assert!(has("default", "create-tenant", 200), "{audit}");
    assert!(has("default", "create-token", 200), "{audit}");
    assert!(has("default", "revoke-token", 200), "{audit}");
    assert!(has("acme", "upload", 200), "{audit}");
    assert!(has("acme", "run", 403), "{audit}");
    assert!(has("acme", "cancel", 404), "{audit}");
    assert!(has("beta", "savepoint", 200), "{audit}");
    assert!(has("unauthenticated", "read", 401), "{audit}");
    assert!(has("unauthenticated", "read", 429), "{audit}");
    for secret in [&cluster.admin, &acme.token, &beta.token] {
        assert!(!audit.contains(secret.as_str()), "a token in the audit log");
    }
    assert!(lines.iter().all(|l| {
        l["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:"))
    }));
}

#[test]
fn a_tenant_without_file_roots_reaches_only_its_own_directory() {
    let cluster = Cluster::start(1, 2, &[]);
    let d = cluster.dir.path().to_owned();
    let gamma = cluster.new_tenant_with("gamma", &["--policy", "standard"]);
    let own = d.join("jm/files/gamma");
    std::fs::create_dir_all(&own).expect("mkdir");
    let (_, expected) = write_input(&own, 4096);
    std::fs::write(d.join("secret.txt"), "secret words\n").expect("write");
    let jar = cluster.upload_as_ok(&gamma, sluice_test_programs::WORDCOUNT);
    let run = |input: &str, output: &str| {
        cluster.run_as(
            &gamma.http,
            &jar,
            json!({"parallelism": 1, "programArgsList": [format!("input={input}"), format!("output={output}")]}),
        )
    };
    let secret = d.join("secret.txt").display().to_string();
    let escaped_out = d.join("escaped").display().to_string();
    let outside = "is outside the file roots this job may use";
    for (input, output, why) in [
        ("/etc/passwd", "counts", outside),
        (secret.as_str(), "counts", outside),
        ("../../../secret.txt", "counts", outside),
        (
            &format!("{}/../../../secret.txt", own.display()),
            "counts",
            outside,
        ),
        (
            "%2e%2e/%2e%2e/%2e%2e/secret.txt",
            "counts",
            "does not exist",
        ),
        ("..%2f..%2f..%2fsecret.txt", "counts", "does not exist"),
        ("input.txt", escaped_out.as_str(), outside),
        ("input.txt", "../../../escaped", outside),
        ("input.txt", "/tmp", outside),
    ] {
        let (status, body) = run(input, output);
        assert_eq!(status, 400, "{input} -> {output}: {body}");
        let msg = body["errors"][0].as_str().expect("an error");
        assert!(msg.contains(why), "{input} -> {output}: {msg}");
        if why == outside {
            assert!(
                msg.contains(&own.display().to_string()),
                "names the root: {msg}"
            );
        }
    }
    assert!(!d.join("escaped").exists() && !own.join("counts").exists());
    let (_, jobs) = cluster.get_as(&gamma.http, "/jobs");
    assert_eq!(
        jobs["jobs"].as_array().map(Vec::len),
        Some(0),
        "nothing ran: {jobs}"
    );

    // Relative paths resolve in the tenant's own directory.
    let (status, body) = run("input.txt", "counts");
    assert_eq!(status, 200, "{body}");
    let job = body["jobid"].as_str().expect("jobid").to_owned();
    let detail = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
    assert_eq!(detail["state"], "FINISHED", "{detail}");
    assert_eq!(
        detail["policy"]["quotas"]["file_roots"],
        json!([own.display().to_string()]),
        "{detail}"
    );
    let (counts, _) = read_output(&own.join("counts"));
    assert_eq!(counts, expected);

    // What the job cost, as the tenant sees it: per job and in total.
    let usage = wait_for("the job's final figures", &|| cluster.logs(), || {
        let (_, u) = cluster.get_as(&gamma.http, "/tenants/me/usage");
        (u["jobs"][0]["records-out"].as_u64() == Some(expected.len() as u64)
            && u["jobs"][0]["fuel"].as_u64() > Some(0))
        .then_some(u)
    });
    let (job_usage, total) = (&usage["jobs"][0], &usage["total"]);
    assert_eq!(job_usage["jid"], job.as_str(), "{usage}");
    assert!(job_usage["cpu-seconds"].as_f64() > Some(0.0), "{usage}");
    for key in ["fuel", "cpu-seconds", "records-in", "records-out"] {
        assert_eq!(total[key], job_usage[key], "{key}: {usage}");
    }
    assert!(job_usage["records-in"].as_u64() >= Some(1), "{usage}");
    let out = cluster.sluice_as(&gamma.token, &["usage"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("total: {}", job_usage["records-in"]))
            && shown.contains(&format!("{} out", expected.len()))
            && shown.contains(&job[..8]),
        "{shown}"
    );
    // Its component was compiled once, at upload, and billed to it.
    assert_eq!(usage["compile"]["compilations"], 1, "{usage}");
    assert!(
        shown.contains("compiling on the JobManager: 1 components (0 refused)"),
        "{shown}"
    );

    // A tenant's roots are listed for the admin; a relative or `..` root is refused.
    let (_, tenants) = cluster.get("/tenants");
    let acme = tenants["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["name"] == "default")
        .expect("default")
        .clone();
    assert_eq!(
        acme["file-roots"],
        json!([d.display().to_string()]),
        "{tenants}"
    );
    for root in ["relative/dir", "/data/../etc"] {
        let (s, b) = cluster.call(
            &cluster.http,
            "POST",
            "/tenants",
            Some(json!({"name": "delta", "policy": "standard", "file-roots": [root]})),
        );
        assert_eq!(s, 400, "{root}: {b}");
        assert!(
            b["errors"][0]
                .as_str()
                .expect("error")
                .contains("must be an absolute path"),
            "{b}"
        );
    }
}

/// The status every REST endpoint answers to each kind of caller, as
/// documented (README, "A cluster for several teams"): no token, another
/// tenant's token, the owner's token, an admin's. Ids in a row name the
/// owner's objects; a row's own and admin calls that change state act on
/// fresh objects, so every cell is measured on an object in the same state.
const ACCESS_TABLE: &str = "\
| endpoint | no token | other tenant | owner | admin |
|---|---|---|---|---|
| GET /overview | 401 | 200 | 200 | 200 |
| GET /config | 401 | 200 | 200 | 200 |
| GET /jobs | 401 | 200 | 200 | 200 |
| GET /jobs/overview | 401 | 200 | 200 | 200 |
| GET /jobs/:id | 401 | 404 | 200 | 200 |
| GET /jobs/:id/exceptions | 401 | 404 | 200 | 200 |
| GET /jobs/:id/checkpoints | 401 | 404 | 200 | 200 |
| GET /jobs/:id/checkpoints/config | 401 | 404 | 200 | 200 |
| POST /jobs/:id/savepoints | 401 | 404 | 200 | 200 |
| GET /jobs/:id/savepoints/:trigger | 401 | 404 | 200 | 200 |
| POST /jobs/:id/stop | 401 | 404 | 200 | 200 |
| PATCH /jobs/:id?mode=cancel | 401 | 404 | 202 | 202 |
| GET /jars | 401 | 200 | 200 | 200 |
| POST /jars/upload | 401 | 200 | 200 | 200 |
| POST /jars/:id/run | 401 | 404 | 200 | 200 |
| DELETE /jars/:id | 401 | 404 | 200 | 200 |
| GET /tenants/me/usage | 401 | 200 | 200 | 200 |
| GET /tenants/:name/usage | 401 | 403 | 200 | 200 |
| GET /tenants | 401 | 403 | 403 | 200 |
| POST /tenants | 401 | 403 | 403 | 200 |
| POST /tenants/reload | 401 | 403 | 403 | 200 |
| GET /tokens | 401 | 403 | 403 | 200 |
| POST /tokens | 401 | 403 | 403 | 200 |
| DELETE /tokens/:id | 401 | 403 | 403 | 200 |
| GET /taskmanagers | 401 | 403 | 403 | 200 |
| GET /taskmanagers/:id | 401 | 403 | 403 | 200 |
| GET /metrics | 401 | 403 | 403 | 200 |
| GET /certificates | 401 | 403 | 403 | 200 |
| DELETE /certificates/:id | 401 | 403 | 403 | 200 |
";

#[test]
fn every_endpoint_answers_each_kind_of_caller_as_documented() {
    let mut cluster = Cluster::start(2, 4, &[]);
    // The second TaskManager leaves before any job runs: its certificate
    // is the one the admin removes, so no job loses its slots.
    cluster.tms[1] = None;
    cluster.wait_for_tms(1);
    let (_, live) = cluster.get("/taskmanagers");
    let live_cert = live["taskmanagers"][0]["certificate"]
        .as_str()
        .expect("a certificate")
        .to_owned();
    let (_, certs) = cluster.get("/certificates");
    let gone_cert = certs["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .find(|c| *c != live_cert)
        .expect("the departed TaskManager's certificate")
        .to_owned();
    let cluster = cluster;
    let d = cluster.dir.path().to_owned();
    let acme = cluster.new_tenant("acme", "standard");
    let beta = cluster.new_tenant("beta", "standard");
    std::fs::write(d.join("in.txt"), "a b c\n").expect("write");
    let job = cluster.start_endless_as(&acme, &d.join("main-out"));
    let jar = cluster.upload_as_ok(&acme, sluice_test_programs::WORDCOUNT);
    let trigger = wait_for("a savepoint of acme's job", &|| cluster.logs(), || {
        let (s, b) = cluster.call(&acme.http, "POST", &format!("/jobs/{job}/savepoints"), None);
        (s == 200)
            .then(|| b["request-id"].as_str().map(str::to_owned))
            .flatten()
    });
    let (_, tms) = cluster.get("/taskmanagers");
    let tm = tms["taskmanagers"][0]["id"]
        .as_str()
        .expect("a TaskManager")
        .to_owned();
    let fresh = std::cell::Cell::new(0);
    let next = || {
        fresh.set(fresh.get() + 1);
        fresh.get()
    };
    let fresh_job = || cluster.start_endless_as(&acme, &d.join(format!("out-{}", next())));
    let fresh_token = || {
        let (s, b) = cluster.call(
            &cluster.http,
            "POST",
            "/tokens",
            Some(json!({"tenant": "acme"})),
        );
        assert_eq!(s, 200, "{b}");
        b["record"]["id"].as_str().expect("id").to_owned()
    };
    // Each unauthenticated call comes from its own loopback address, so the
    // throttle on failed authentications does not answer for the others.
    let anonymous = |row: usize| {
        reqwest::blocking::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 1, row as u8 + 1]))
            .build()
            .expect("client")
    };
    type Target<'a> = Box<dyn Fn(usize) -> (String, Option<Value>) + 'a>;
    let same = |path: String| -> Target<'_> { Box::new(move |_| (path.clone(), None)) };
    let rows: Vec<(&str, &str, Target<'_>)> = vec![
        ("GET", "/overview", same("/overview".into())),
        ("GET", "/config", same("/config".into())),
        ("GET", "/jobs", same("/jobs".into())),
        ("GET", "/jobs/overview", same("/jobs/overview".into())),
        ("GET", "/jobs/:id", same(format!("/jobs/{job}"))),
        (
            "GET",
            "/jobs/:id/exceptions",
            same(format!("/jobs/{job}/exceptions")),
        ),
        (
            "GET",
            "/jobs/:id/checkpoints",
            same(format!("/jobs/{job}/checkpoints")),
        ),
        (
            "GET",
            "/jobs/:id/checkpoints/config",
            same(format!("/jobs/{job}/checkpoints/config")),
        ),
        (
            "POST",
            "/jobs/:id/savepoints",
            same(format!("/jobs/{job}/savepoints")),
        ),
        (
            "GET",
            "/jobs/:id/savepoints/:trigger",
            same(format!("/jobs/{job}/savepoints/{trigger}")),
        ),
        (
            "POST",
            "/jobs/:id/stop",
            Box::new(|col| {
                let j = if col >= 2 { fresh_job() } else { job.clone() };
                (format!("/jobs/{j}/stop"), Some(json!({})))
            }),
        ),
        (
            "PATCH",
            "/jobs/:id?mode=cancel",
            Box::new(|col| {
                let j = if col >= 2 { fresh_job() } else { job.clone() };
                (format!("/jobs/{j}?mode=cancel"), None)
            }),
        ),
        ("GET", "/jars", same("/jars".into())),
        ("POST", "/jars/upload", same("/jars/upload".into())),
        (
            "POST",
            "/jars/:id/run",
            Box::new(|_| {
                let args = json!({"parallelism": 1, "programArgsList": ["input=in.txt", format!("output=run-{}", next())]});
                (format!("/jars/{jar}/run"), Some(args))
            }),
        ),
        (
            "DELETE",
            "/jars/:id",
            Box::new(|col| {
                let j = if col >= 2 {
                    cluster.upload_as_ok(&acme, sluice_test_programs::EXACTLY_ONCE)
                } else {
                    jar.clone()
                };
                (format!("/jars/{j}"), None)
            }),
        ),
        ("GET", "/tenants/me/usage", same("/tenants/me/usage".into())),
        (
            "GET",
            "/tenants/:name/usage",
            same("/tenants/acme/usage".into()),
        ),
        ("GET", "/tenants", same("/tenants".into())),
        (
            "POST",
            "/tenants",
            Box::new(|_| {
                (
                    "/tenants".into(),
                    Some(json!({"name": format!("t{}", next()), "policy": "standard"})),
                )
            }),
        ),
        ("POST", "/tenants/reload", same("/tenants/reload".into())),
        ("GET", "/tokens", same("/tokens".into())),
        (
            "POST",
            "/tokens",
            Box::new(|_| ("/tokens".into(), Some(json!({"tenant": "acme"})))),
        ),
        (
            "DELETE",
            "/tokens/:id",
            Box::new(|_| (format!("/tokens/{}", fresh_token()), None)),
        ),
        ("GET", "/taskmanagers", same("/taskmanagers".into())),
        (
            "GET",
            "/taskmanagers/:id",
            same(format!("/taskmanagers/{tm}")),
        ),
        ("GET", "/metrics", same("/metrics".into())),
        ("GET", "/certificates", same("/certificates".into())),
        (
            "DELETE",
            "/certificates/:id",
            same(format!("/certificates/{gone_cert}")),
        ),
    ];
    let mut table = String::from(
        "| endpoint | no token | other tenant | owner | admin |\n|---|---|---|---|---|\n",
    );
    for (row, (method, label, target)) in rows.iter().enumerate() {
        let mut cells = Vec::new();
        for col in 0..4 {
            let client = match col {
                0 => anonymous(row),
                1 => beta.http.clone(),
                2 => acme.http.clone(),
                _ => cluster.http.clone(),
            };
            let (path, body) = target(col);
            let status = if *label == "/jars/upload" {
                cluster
                    .upload_as(&client, Path::new(sluice_test_programs::JOIN))
                    .0
            } else if *label == "/jobs/:id/stop" && col >= 2 {
                // A stop needs every task running: 409 until then.
                wait_for("a stop", &|| cluster.logs(), || {
                    let s = cluster.call(&client, method, &path, body.clone()).0;
                    (s != 409).then_some(s)
                })
            } else {
                cluster.call(&client, method, &path, body).0
            };
            cells.push(status.to_string());
        }
        table += &format!("| {method} {label} | {} |\n", cells.join(" | "));
    }
    println!("{table}");
    assert_eq!(table, ACCESS_TABLE, "measured:\n{table}");
    // Nothing the other tenant or the anonymous callers did moved acme's job.
    let (_, detail) = cluster.get_as(&acme.http, &format!("/jobs/{job}"));
    assert_eq!(detail["state"], "RUNNING", "{detail}");
}

/// `sluice token create --taskmanager [ARGS]`: the token and its id.
fn join_token(cluster: &Cluster, args: &[&str]) -> (String, String) {
    let out = cluster.sluice(&[&["token", "create", "--taskmanager"][..], args].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("sluice1-"), "{token}");
    let stderr = text(&out.stderr);
    let id = stderr
        .split_whitespace()
        .nth(1)
        .expect("the token's id")
        .to_owned();
    assert!(
        id.starts_with("tm-") && stderr.contains("shown once"),
        "{stderr}"
    );
    (token, id)
}

#[test]
fn join_tokens_expire_and_are_revoked_and_a_removed_certificate_is_refused() {
    let mut cluster = Cluster::start(2, 2, &[]);
    let d = cluster.dir.path().to_owned();
    let (_, certs) = cluster.get("/certificates");
    let certs = certs["certificates"]
        .as_array()
        .expect("certificates")
        .clone();
    assert_eq!(certs.len(), 2, "{certs:?}");
    assert!(
        certs
            .iter()
            .all(|c| c["token"] == "tm-initial" && c["removed_ms"].is_null()),
        "{certs:?}"
    );
    let (_, tokens) = cluster.get("/tokens");
    let initial = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["id"] == "tm-initial")
        .expect("the first start's join token")
        .clone();
    assert_eq!(initial["joins"], 2, "{initial}");
    assert!(
        initial["expires"].as_u64() > initial["created"].as_u64(),
        "{initial}"
    );

    // An expired token and a revoked one: a new TaskManager cannot join.
    let (expired, expired_id) = join_token(&cluster, &["--ttl", "1s"]);
    let (_, tokens) = cluster.get("/tokens");
    let expires = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["id"] == expired_id.as_str())
        .and_then(|t| t["expires"].as_u64())
        .expect("an expiry");
    wait_for("the token to expire", &|| cluster.logs(), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        (now > expires).then_some(())
    });
    let (revoked, revoked_id) = join_token(&cluster, &[]);
    assert!(
        cluster
            .sluice(&["token", "revoke", &revoked_id])
            .status
            .success()
    );
    let ca = expired
        .rsplit('-')
        .next()
        .expect("the CA fingerprint")
        .to_owned();
    for (n, (token, why)) in [
        (expired, "expired"),
        (revoked, "was revoked"),
        (
            format!("sluice1-{}-{ca}", "00".repeat(16)),
            "the join token is not this cluster's",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let data = format!("refused{n}");
        let mut tm = Proc::start_env(
            &[
                "taskmanager",
                "--jobmanager",
                &cluster.rpc,
                "--token",
                &token,
                "--data-dir",
                &data,
                "--metrics-addr",
                "off",
            ],
            d.join(format!("{data}.log")),
            &d,
            &[],
        );
        let log_path = d.join(format!("{data}.log"));
        let status = wait_for(
            "a refused TaskManager to stop",
            &|| std::fs::read_to_string(&log_path).unwrap_or_default(),
            || tm.child.try_wait().expect("wait"),
        );
        assert!(!status.success());
        let log = tm.log();
        assert!(log.contains(why), "{why}: {log}");
        assert!(!d.join(format!("refused{n}/tls/cert.pem")).exists());
    }

    // A fresh token lets a third one join.
    let (good, good_id) = join_token(&cluster, &["--ttl", "1h"]);
    cluster.add_tm_with(1, &good);
    cluster.wait_for_tms(3);
    let (_, certs) = cluster.get("/certificates");
    assert!(
        certs["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .any(|c| c["token"] == good_id.as_str()),
        "{certs}"
    );

    // Removing a certificate disconnects its TaskManager, which is refused
    // when it tries again and stops with the reason.
    let (_, tms) = cluster.get("/taskmanagers");
    let newest = tms["taskmanagers"]
        .as_array()
        .expect("taskmanagers")
        .iter()
        .find(|t| t["slotsNumber"] == 1)
        .expect("the third TaskManager")
        .clone();
    let certificate = newest["certificate"]
        .as_str()
        .expect("its certificate")
        .to_owned();
    let out = cluster.sluice(&["certificate", "remove", &certificate]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.wait_for_tms(2);
    let tm = cluster.tms[2].as_mut().expect("the third TaskManager");
    let status = wait_for("the removed TaskManager to stop", &|| String::new(), || {
        tm.child.try_wait().expect("wait")
    });
    assert!(!status.success());
    let log = cluster.tms[2].as_ref().expect("its log").log();
    assert!(
        log.contains(&format!("certificate `{certificate}` was removed")),
        "{log}"
    );
    let out = cluster.sluice(&["certificate", "list"]);
    let listed = text(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&certificate) && l.contains("removed")),
        "{listed}"
    );
    let audit = std::fs::read_to_string(d.join("jm/audit.log")).expect("audit log");
    assert!(
        audit.contains("\"action\":\"remove-certificate\""),
        "{audit}"
    );
}

/// A policies directory with a `tight` policy for the quota test.
fn tight_policies(dir: &Path, join_bytes: u64) -> PathBuf {
    let standard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/standard.toml"),
    )
    .expect("standard policy");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("standard.toml"), &standard).expect("write");
    let base: String = standard
        .lines()
        .filter(|l| !l.starts_with("max_") || l.starts_with("max_parallelism"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("name = \"standard\"", "name = \"tight\"")
        .replace("memory_mib = 256", "memory_mib = 32");
    let tight = format!("{base}max_jobs = 1\nmax_slots = 2\nmax_jars = 1\nmax_memory_mib = 1024\n");
    std::fs::write(policies.join("tight.toml"), tight).expect("write");
    let bytes = format!(
        "{}max_jar_bytes = {}\nmax_memory_mib = 32\nmax_concurrent_uploads = 1\n",
        base.replace("name = \"tight\"", "name = \"bytes\""),
        join_bytes + 10
    );
    std::fs::write(policies.join("bytes.toml"), bytes).expect("write");
    let upload = format!(
        "{}max_upload_bytes = 1000\n",
        base.replace("name = \"tight\"", "name = \"upload\"")
    );
    std::fs::write(policies.join("upload.toml"), upload).expect("write");
    let state = format!(
        "{}max_checkpoint_bytes_per_job = 1\n",
        base.replace("name = \"tight\"", "name = \"state\"")
    );
    std::fs::write(policies.join("state.toml"), state).expect("write");
    policies
}

#[test]
fn every_quota_is_enforced_with_a_message_naming_it_and_reloads_keep_a_good_config() {
    let join_bytes = std::fs::metadata(sluice_test_programs::JOIN)
        .expect("join")
        .len();
    let scratch = tempfile::tempdir().expect("tempdir");
    let policies = tight_policies(scratch.path(), join_bytes);
    let policies_arg = policies.display().to_string();
    let cluster = Cluster::start(1, 4, &["--policies-dir", &policies_arg]);
    let d = cluster.dir.path().to_owned();
    let out = d.join("out").display().to_string();
    let endless = json!({"parallelism": 1, "programArgsList": ["left=1000000000000000", "right=1000000000000000", format!("output={out}")]});
    let refused = |(status, body): (u16, Value), code: u16, quota: &str, tail: &str| {
        assert_eq!(status, code, "{body}");
        let msg = body["errors"][0].as_str().expect("an error").to_owned();
        assert!(msg.contains(&format!("exceeded quota `{quota}`")), "{msg}");
        assert!(msg.ends_with(tail), "{msg}");
    };

    // Counts and sums: jars, slots, jobs.
    let tight = cluster.new_tenant("tight", "tight");
    let jar = cluster.upload_as_ok(&tight, sluice_test_programs::JOIN);
    refused(
        cluster.upload_as(&tight.http, Path::new(sluice_test_programs::WORDCOUNT)),
        403,
        "max_jars",
        "requested 1, used 1, limited 1",
    );
    let mut wide = endless.clone();
    wide["parallelism"] = json!(3);
    refused(
        cluster.run_as(&tight.http, &jar, wide),
        403,
        "max_slots",
        "requested 3, used 0, limited 2",
    );
    let (s, first) = cluster.run_as(&tight.http, &jar, endless.clone());
    assert_eq!(s, 200, "{first}");
    let mut other = endless.clone();
    other["programArgsList"][2] = json!(format!("output={out}2"));
    refused(
        cluster.run_as(&tight.http, &jar, other.clone()),
        403,
        "max_jobs",
        "requested 1, used 1, limited 1",
    );
    // An ended job frees its quota.
    let job = first["jobid"].as_str().expect("jobid").to_owned();
    let (s, _) = cluster.call(
        &tight.http,
        "PATCH",
        &format!("/jobs/{job}?mode=cancel"),
        None,
    );
    assert_eq!(s, 202);
    wait_for("the job's quota to be released", &|| cluster.logs(), || {
        (cluster.run_as(&tight.http, &jar, other.clone()).0 == 200).then_some(())
    });

    // Bytes: stored jars and guest memory.
    let bytes = cluster.new_tenant("bytes", "bytes");
    let jar = cluster.upload_as_ok(&bytes, sluice_test_programs::JOIN);
    let (status, body) = cluster.upload_as(&bytes.http, Path::new(sluice_test_programs::WORDCOUNT));
    refused(
        (status, body),
        403,
        "max_jar_bytes",
        &format!("used {join_bytes}, limited {}", join_bytes + 10),
    );
    let (s, b) = cluster.run_as(&bytes.http, &jar, endless.clone());
    assert_eq!(s, 403, "{b}");
    let msg = b["errors"][0].as_str().expect("an error");
    assert!(
        msg.contains("exceeded quota `max_memory_mib` of policy `bytes`")
            && msg.ends_with("used 0, limited 32"),
        "{msg}"
    );

    // Uploads at once: while one streams, a second is refused (429).
    let slow = cluster.new_tenant("slow", "bytes");
    let (reader, mut writer) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let first = {
        let http = slow.http.clone();
        let url = format!("{}/jars/upload", cluster.rest);
        std::thread::spawn(move || {
            let part = reqwest::blocking::multipart::Part::reader(reader).file_name("slow.wasm");
            let form = reqwest::blocking::multipart::Form::new().part("jarfile", part);
            http.post(url)
                .multipart(form)
                .send()
                .map(|r| r.status().as_u16())
        })
    };
    // reqwest fills 8 KiB buffers before it sends: give it a few.
    let mut start = b"\0asm".to_vec();
    start.resize(64 << 10, 0);
    std::io::Write::write_all(&mut writer, &start).expect("write");
    let uploads_used = |n: u64| {
        let (_, u) = cluster.get_as(&slow.http, "/tenants/me/usage");
        u["quotas"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|q| q["quota"] == "max_concurrent_uploads" && q["used"] == n)
            .then_some(())
    };
    wait_for("the first upload to stream", &|| cluster.logs(), || {
        uploads_used(1)
    });
    refused(
        cluster.upload_as(&slow.http, Path::new(sluice_test_programs::JOIN)),
        429,
        "max_concurrent_uploads",
        "requested 1, used 1, limited 1",
    );
    drop(writer);
    let status = first
        .join()
        .expect("the uploading thread")
        .expect("an answer to the first upload");
    assert_eq!(status, 400, "zeros are no component");
    wait_for(
        "the upload's quota to be released",
        &|| cluster.logs(),
        || uploads_used(0),
    );

    // Checkpoint state: a checkpoint over the quota is declined, more often
    // than failures are tolerated, and the job runs on.
    let state = cluster.new_tenant("state", "state");
    let jar = cluster.upload_as_ok(&state, sluice_test_programs::JOIN);
    let mut body = endless.clone();
    body["checkpointInterval"] = json!(50);
    body["programArgsList"][2] = json!(format!("output={}", d.join("state-out").display()));
    let (s, run) = cluster.run_as(&state.http, &jar, body);
    assert_eq!(s, 200, "{run}");
    let job = run["jobid"].as_str().expect("jobid").to_owned();
    let checkpoints = wait_for("checkpoints declined", &|| cluster.logs(), || {
        let (_, c) = cluster.get_as(&state.http, &format!("/jobs/{job}/checkpoints"));
        (c["counts"]["failed"].as_u64() >= Some(5)).then_some(c)
    });
    let why = checkpoints["latest"]["failed"]["failure_message"]
        .as_str()
        .expect("a failure message");
    assert!(
        why.contains("declined, the job runs on without it")
            && why.contains("exceeded quota `max_checkpoint_bytes_per_job` of policy `state`")
            && why.ends_with("used 0, limited 1"),
        "{why}"
    );
    assert_eq!(checkpoints["counts"]["completed"], 0, "{checkpoints}");
    let (_, detail) = cluster.get_as(&state.http, &format!("/jobs/{job}"));
    assert_eq!(detail["state"], "RUNNING", "{detail}");
    assert_eq!(detail["attempt"], 0, "never restarted: {detail}");
    cluster.cancel_as(&state, &job);

    // One upload's size, refused while it streams (413), and nothing kept.
    let upload = cluster.new_tenant("upload", "upload");
    let (status, body) = cluster.upload_as(&upload.http, Path::new(sluice_test_programs::JOIN));
    assert_eq!(status, 413, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .expect("error")
            .contains("exceeded quota `max_upload_bytes` of policy `upload`"),
        "{body}"
    );
    let left: Vec<_> = std::fs::read_dir(d.join("jm/jars/upload"))
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (_, usage) = cluster.get_as(&upload.http, "/tenants/me/usage");
    assert!(
        usage["quotas"]
            .as_array()
            .expect("quotas")
            .iter()
            .all(|q| q["used"] == 0),
        "{usage}"
    );

    // A reload with a broken file keeps the configuration in force.
    let broken = policies.join("upload.toml");
    std::fs::write(
        &broken,
        "name = \"upload\"\n[limits]\nmemory_mib = \"lots\"\n",
    )
    .expect("write");
    let out = cluster.sluice(&["tenant", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("upload.toml")
            && err.contains("line 3")
            && err.contains("previous configuration stays"),
        "{err}"
    );
    let (status, _) = cluster.upload_as(&upload.http, Path::new(sluice_test_programs::JOIN));
    assert_eq!(status, 413, "the old limit still holds");
    // A good one takes effect for new requests.
    std::fs::write(
        &broken,
        std::fs::read_to_string(policies.join("tight.toml"))
            .expect("read")
            .replace("name = \"tight\"", "name = \"upload\""),
    )
    .expect("write");
    assert!(cluster.sluice(&["tenant", "reload"]).status.success());
    let (status, body) = cluster.upload_as(&upload.http, Path::new(sluice_test_programs::JOIN));
    assert_eq!(status, 200, "{body}");
    // SIGHUP reloads too.
    std::fs::write(
        d.join("jm/tenants/late.toml"),
        "name = \"late\"\npolicy = \"standard\"\n",
    )
    .expect("write");
    let pid = cluster.jm.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    wait_for("the SIGHUP reload", &|| cluster.logs(), || {
        let (_, t) = cluster.get("/tenants");
        t["tenants"]
            .as_array()?
            .iter()
            .any(|t| t["name"] == "late")
            .then_some(())
    });
}

#[test]
fn a_job_cancelled_while_its_tasks_deploy_ends_cancelled() {
    // A policy no TaskManager has an engine for yet: deploying compiles
    // the component, and the cancel arrives meanwhile.
    let cluster = Cluster::start(1, 2, &[]);
    let policies = cluster.dir.path().join("jm/policies");
    let fresh = std::fs::read_to_string(policies.join("standard.toml"))
        .expect("the bundled policy")
        .replace("name = \"standard\"", "name = \"fresh\"")
        .replace("memory_mib = 256", "memory_mib = 128");
    std::fs::write(policies.join("fresh.toml"), fresh).expect("write");
    assert!(cluster.sluice(&["tenant", "reload"]).status.success());
    let t = cluster.new_tenant("fresh", "fresh");
    let jar = cluster.upload_as_ok(&t, sluice_test_programs::JOIN);
    let out = cluster.dir.path().join("out");
    let (s, run) = cluster.run_as(
        &t.http,
        &jar,
        json!({"parallelism": 1, "programArgsList": ["left=1000000000000000", "right=1000000000000000", format!("output={}", out.display())]}),
    );
    assert_eq!(s, 200, "{run}");
    let job = run["jobid"].as_str().expect("jobid").to_owned();
    wait_for("the deployment to start", &|| cluster.logs(), || {
        cluster
            .logs()
            .contains(&format!("job={job} attempt=0"))
            .then_some(())
    });
    let (s, _) = cluster.call(&t.http, "PATCH", &format!("/jobs/{job}?mode=cancel"), None);
    assert_eq!(s, 202);
    let d = cluster.wait_for_state(&job, &["CANCELED", "FAILED", "FINISHED"]);
    assert_eq!(d["state"], "CANCELED", "{d}");
}

/// A policy for a hostile tenant: the standard limits with a tight output
/// cap and per-TaskManager caps, and room in memory for the output flood.
fn hostile_policies(dir: &Path) -> PathBuf {
    let standard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/standard.toml"),
    )
    .expect("standard policy");
    let hostile = standard
        .replace("name = \"standard\"", "name = \"hostile\"")
        .replace("memory_mib = 256", "memory_mib = 512")
        .replace(
            "max_output_bytes_per_call = 67_108_864",
            "max_output_bytes_per_call = 8_388_608",
        )
        .replace(
            "max_memory_mib_per_taskmanager = 8192",
            "max_memory_mib_per_taskmanager = 1024",
        )
        .replace(
            "max_instances_per_taskmanager = 64",
            "max_instances_per_taskmanager = 2",
        )
        .replace("# max_call_ms = 10_000", "max_call_ms = 10_000");
    assert_ne!(hostile, standard);
    let policies = dir.join("hostile-policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::write(policies.join("standard.toml"), standard).expect("policy");
    std::fs::write(policies.join("hostile.toml"), hostile).expect("policy");
    policies
}

#[test]
fn a_hostile_tenant_fails_alone_while_its_neighbour_counts_exactly() {
    use sluice_test_programs::hostile;
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = hostile_policies(dir.path());
    let policies_arg = policies.display().to_string();
    let cluster = Cluster::start(
        1,
        6,
        &[
            "--policies-dir",
            &policies_arg,
            "--compile-timeout",
            "2s",
            // A job that fails ends FAILED at once, whatever the cause.
            "--restart-strategy",
            "none",
        ],
    );
    let d = cluster.dir.path().to_owned();
    let acme = cluster.new_tenant("acme", "standard");
    let mallory = cluster.new_tenant("mallory", "hostile");
    let tm_id = || {
        let (_, tms) = cluster.get("/taskmanagers");
        tms["taskmanagers"]
            .as_array()
            .map(|a| a.iter().map(|t| t["id"].to_string()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let tm_before = tm_id();
    assert_eq!(tm_before.len(), 1, "{tm_before:?}");
    let rss = || cluster.tm_metric("sluice_process_resident_memory_bytes", &[]);

    // Tenant A counts words, one job after another, for as long as B
    // misbehaves beside it; every run's counts must be exact.
    let (input, expected) = write_input(&d, 4 << 20);
    let wordcount = cluster.upload_as_ok(&acme, sluice_test_programs::WORDCOUNT);
    let hostile_done = std::sync::atomic::AtomicBool::new(false);
    // Set when the hostile part ends, however it ends (a failed assertion
    // too), so that A's loop stops and the test reports.
    struct Done<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let acme_runs = |n: &mut u32| {
        while !hostile_done.load(std::sync::atomic::Ordering::SeqCst) {
            let out = d.join(format!("acme-out-{n}"));
            let (status, run) = cluster.run_as(
                &acme.http,
                &wordcount,
                json!({
                    "parallelism": 2,
                    "programArgsList": [
                        format!("input={}", input.display()),
                        format!("output={}", out.display()),
                    ],
                }),
            );
            assert_eq!(status, 200, "{run}");
            let job = run["jobid"].as_str().expect("jobid").to_owned();
            let detail = cluster.wait_for_state(&job, &["FINISHED", "FAILED", "CANCELED"]);
            assert_eq!(detail["state"], "FINISHED", "{detail}\n{}", cluster.logs());
            let (counts, _) = read_output(&out);
            assert_eq!(counts, expected, "acme's run {n}");
            *n += 1;
        }
    };
    let mut acme_count = 0;
    let rss_before = std::thread::scope(|scope| {
        let acme_thread = scope.spawn(|| acme_runs(&mut acme_count));
        let done = Done(&hostile_done);

        // At upload: refused with the reason, before anything runs.
        let write = |name: &str, bytes: &[u8]| {
            let path = d.join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let wordcount_bytes = std::fs::read(sluice_test_programs::WORDCOUNT).expect("wordcount");
        for (what, path, says) in [
            (
                "a forbidden import",
                PathBuf::from(sluice_test_programs::FORBIDDEN_IMPORT),
                "outside the sandbox",
            ),
            (
                "junk",
                write("junk.wasm", b"this is not wasm at all"),
                "magic bytes",
            ),
            (
                "a truncated component",
                write(
                    "truncated.wasm",
                    &wordcount_bytes[..wordcount_bytes.len() / 2],
                ),
                "not a valid WebAssembly component",
            ),
            (
                "a core module",
                write("core.wasm", &hostile::core_module()),
                "core WebAssembly module",
            ),
            (
                "the wrong world",
                write("empty.wasm", &hostile::empty_component()),
                "does not implement the Sluice contract",
            ),
            (
                "a huge initial memory",
                write("memory.wasm", &hostile::huge_initial_memory()),
                "over the policy's `memory_mib` of 512",
            ),
            (
                "a table bomb",
                write("table.wasm", &hostile::table_bomb()),
                "a table starts with 10000000 elements",
            ),
            (
                "a compile bomb",
                write("bomb.wasm", &hostile::compile_bomb(40_000)),
                "the compile time limit",
            ),
        ] {
            let (status, body) = cluster.upload_as(&mallory.http, &path);
            assert_eq!(status, 400, "{what}: {body}");
            assert!(body.to_string().contains(says), "{what}: {body}");
        }

        // At submission: plans that spin or are absurd.
        let adversarial = cluster.upload_as_ok(&mallory, sluice_test_programs::ADVERSARIAL);
        let submit = |args: Vec<String>, parallelism: u64| {
            cluster.run_as(
                &mallory.http,
                &adversarial,
                json!({ "parallelism": parallelism, "programArgsList": args }),
            )
        };
        for (what, args, parallelism, says) in [
            (
                "a spinning plan",
                vec!["mode=plan-spin".to_owned()],
                1,
                "ran out of fuel",
            ),
            (
                "16 000 nodes",
                vec!["mode=wide-plan".to_owned()],
                1,
                "max_plan_nodes",
            ),
            (
                "100 000 edges",
                vec!["mode=dense-plan".to_owned()],
                1,
                "max_plan_edges",
            ),
            (
                "parallelism 1 000 000",
                vec!["mode=pass".to_owned()],
                1_000_000,
                "max_parallelism",
            ),
        ] {
            let (status, body) = submit(args, parallelism);
            assert!((400..500).contains(&status), "{what}: {status} {body}");
            assert!(body.to_string().contains(says), "{what}: {body}");
        }
        // A 100 MB configuration: refused (413) once past the body limit; the
        // JobManager may close the connection before the client has written
        // it all, which the client sees as a failed write. No job either way.
        let jobs = || {
            cluster.get_as(&mallory.http, "/jobs/overview").1["jobs"]
                .as_array()
                .map_or(0, Vec::len)
        };
        let before = jobs();
        let huge = json!({ "programArgsList": [format!("name={}", "x".repeat(100 << 20))] });
        match mallory
            .http
            .post(format!("{}/jars/{adversarial}/run", cluster.rest))
            .json(&huge)
            .send()
        {
            Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
            Err(e) => assert!(e.is_request(), "{e}"),
        }
        assert_eq!(jobs(), before, "the huge configuration ran nothing");

        // At run time: each job fails alone, with its cause named.
        let fails_with = |args: Vec<String>, parallelism: u64, says: &str| {
            let mode = args.join(" ");
            let (status, run) = submit(args, parallelism);
            assert_eq!(status, 200, "{mode}: {run}");
            let job = run["jobid"].as_str().expect("jobid").to_owned();
            let detail = wait_for(&format!("{mode} to end"), &|| cluster.logs(), || {
                let (_, d) = cluster.get_as(&mallory.http, &format!("/jobs/{job}"));
                matches!(
                    d["state"].as_str(),
                    Some("FAILED" | "FINISHED" | "CANCELED")
                )
                .then_some(d)
            });
            assert_eq!(detail["state"], "FAILED", "{mode}: {detail}");
            let (_, exceptions) = cluster.get_as(&mallory.http, &format!("/jobs/{job}/exceptions"));
            let cause = exceptions["exceptionHistory"]["entries"][0]["stacktrace"]
                .as_str()
                .unwrap_or_default();
            assert!(cause.contains(says), "{mode}: {exceptions}");
        };
        let fails = |mode: &str, says: &str| fails_with(vec![format!("mode={mode}")], 1, says);
        // The TaskManager's memory with A's jobs running, before B's.
        let rss_before = rss();
        fails("spin", "ran out of fuel");
        fails("grow-then-spin", "ran out of fuel");
        fails("bomb", "exceeded its memory limit (512 MiB");
        fails("deep", "overflowed the stack");
        fails("panic", "panicked: operator gave up on record");
        // One record in, 70 000 records of 1 KiB out, in one call.
        fails_with(
            vec!["mode=flood-output".to_owned(), "count=1".to_owned()],
            1,
            "over its output limit (8388608 bytes per call",
        );
        fails("log-flood", "broke a host-call limit");
        fails(
            "metric-flood",
            "a metric name of 16777216 bytes is over the limit",
        );
        fails("fresh-metrics", "more than 1000 distinct counter names");
        // Asleep in WASI (no wasm running for an epoch tick to stop): the
        // call's deadline still ends it...
        fails_with(
            vec!["mode=sleep".to_owned(), "count=1".to_owned()],
            1,
            "exceeded its time limit (10000 ms per call",
        );
        // ... and so does a cancel, well before the deadline (without which
        // the job would end FAILED by the deadline, or stay CANCELLING).
        let (status, run) = submit(vec!["mode=sleep".to_owned(), "count=1".to_owned()], 1);
        assert_eq!(status, 200, "{run}");
        let sleeper = run["jobid"].as_str().expect("jobid").to_owned();
        wait_for("the sleeping job's instance", &|| cluster.logs(), || {
            (cluster.tm_metric("sluice_tenant_guest_instances", &[("tenant", "mallory")]) == 1.0)
                .then_some(())
        });
        let cancel = mallory
            .http
            .patch(format!("{}/jobs/{sleeper}?mode=cancel", cluster.rest))
            .send()
            .expect("cancel");
        assert_eq!(cancel.status().as_u16(), 202);
        let detail = wait_for("the sleeping job to end", &|| cluster.logs(), || {
            let (_, d) = cluster.get_as(&mallory.http, &format!("/jobs/{sleeper}"));
            matches!(
                d["state"].as_str(),
                Some("FAILED" | "FINISHED" | "CANCELED")
            )
            .then_some(d)
        });
        assert_eq!(detail["state"], "CANCELED", "{detail}");
        // Over the tenant's instances on the TaskManager (2): the job fails,
        // naming the cap.
        fails_with(
            vec!["mode=pass".to_owned(), "count=1000000000000".to_owned()],
            3,
            "max_instances_per_taskmanager",
        );
        // A slow operator within its limits (about half a second per call) runs to its end.
        let (status, run) = submit(vec!["mode=busy".to_owned(), "count=3000".to_owned()], 1);
        assert_eq!(status, 200, "{run}");
        let slow = run["jobid"].as_str().expect("jobid").to_owned();
        let detail = wait_for("the slow job to end", &|| cluster.logs(), || {
            let (_, d) = cluster.get_as(&mallory.http, &format!("/jobs/{slow}"));
            matches!(
                d["state"].as_str(),
                Some("FAILED" | "FINISHED" | "CANCELED")
            )
            .then_some(d)
        });
        assert_eq!(detail["state"], "FINISHED", "{detail}");

        // B's next job runs.
        let (status, run) = submit(vec!["mode=pass".to_owned()], 1);
        assert_eq!(status, 200, "{run}");
        let again = run["jobid"].as_str().expect("jobid").to_owned();
        let detail = cluster.wait_for_state(&again, &["FINISHED", "FAILED", "CANCELED"]);
        assert_eq!(detail["state"], "FINISHED", "{detail}");
        drop(done);
        acme_thread.join().expect("acme's runs");
        rss_before
    });
    // A counted exactly all along, on the same TaskManager.
    assert!(
        acme_count >= 2,
        "acme ran {acme_count} jobs beside the hostile ones"
    );
    assert_eq!(tm_id(), tm_before, "the TaskManager never left");
    // Each tenant's share of the TaskManager, in Prometheus and in its usage.
    let of = |name: &str, tenant: &str| cluster.tm_metric(name, &[("tenant", tenant)]);
    assert!(of("sluice_tenant_cpu_milliseconds_total", "acme") > 0.0);
    assert!(of("sluice_tenant_cpu_milliseconds_total", "mallory") > 0.0);
    assert_eq!(of("sluice_tenant_cpu_shares", "mallory"), 100.0);
    // Nobody else is busy now: all of the TaskManager's cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        of("sluice_tenant_cpu_entitled_cores", "mallory"),
        cores as f64
    );
    assert_eq!(of("sluice_tenant_guest_instances_limit", "mallory"), 2.0);
    assert_eq!(
        of("sluice_tenant_guest_memory_limit_bytes", "mallory"),
        f64::from(1024u32 << 20)
    );
    assert_eq!(
        of("sluice_tenant_guest_instances", "mallory"),
        0.0,
        "all given back"
    );
    let share = wait_for("mallory's share in its usage", &|| cluster.logs(), || {
        let (_, usage) = cluster.get_as(&mallory.http, "/tenants/me/usage");
        let tm = usage["taskmanagers"][0].clone();
        (tm["cpu_seconds"].as_f64() > Some(0.0)).then_some(tm)
    });
    assert_eq!(
        (
            share["cpu_shares"].as_u64(),
            share["instances_limit"].as_u64(),
            share["memory_limit_bytes"].as_u64()
        ),
        (Some(100), Some(2), Some(1 << 30)),
        "{share}"
    );
    // Compiling was billed to whom it was for: mallory's compile bomb ran
    // to the limit on the JobManager, acme's wordcount was compiled by the
    // TaskManager at its first deployment.
    let (_, usage) = cluster.get_as(&mallory.http, "/tenants/me/usage");
    let compile = &usage["compile"];
    assert!(compile["refused"].as_u64() >= Some(1), "{usage}");
    assert!(
        compile["cpu_seconds"].as_f64() >= Some(1.0),
        "the bomb compiled for its 2 s: {usage}"
    );
    assert!(
        cluster.tm_metric(
            "sluice_tenant_compilations_total",
            &[("tenant", "acme"), ("outcome", "compiled")]
        ) >= 1.0
    );
    let (_, usage) = cluster.get_as(&acme.http, "/tenants/me/usage");
    assert!(
        usage["taskmanagers"][0]["compilations"].as_u64() >= Some(1),
        "{usage}"
    );
    assert!(
        usage["taskmanagers"][0]["compile_cpu_seconds"].as_f64() > Some(0.0),
        "{usage}"
    );
    let rss_after = rss();
    eprintln!(
        "TaskManager resident memory: {} MiB with acme's jobs running, {} MiB after the hostile ones (acme ran {acme_count})",
        rss_before as u64 >> 20,
        rss_after as u64 >> 20
    );
    assert!(
        rss_after < rss_before + f64::from(96u32 << 20),
        "memory came back: {rss_before} -> {rss_after}"
    );
}
