//! `ihub` as a separate process, as operators run it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub struct Ihub {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    pub log: std::path::PathBuf,
}

fn command(args: &[&str], env: &[(String, String)]) -> (Command, std::path::PathBuf) {
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "ihub-{}-{}.log",
        args.join("-").replace('/', "_"),
        uuid::Uuid::new_v4().simple()
    ));
    let mut command = Command::new(env!("CARGO_BIN_EXE_ihub"));
    // Only what the test gives (its RUST_LOG wins): the parent's environment must not leak
    // secrets or URLs in.
    command
        .args(args)
        .env_clear()
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true);
    (command, log)
}

impl Ihub {
    /// Starts `ihub <args>` with `env` added to this process's environment.
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Ihub {
        let (mut command, log) = command(args, env);
        let mut child = command.spawn().expect("spawn ihub");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Ihub { child, stdout, log }
    }

    /// Runs `ihub <args>` to completion: (success, stdout).
    pub async fn run(args: &[&str], env: &[(String, String)]) -> (bool, String) {
        let (ok, stdout, stderr) = Self::run_full(args, env).await;
        if !ok {
            eprintln!("{stderr}");
        }
        (ok, stdout)
    }

    /// Runs `ihub <args>` to completion: (success, stdout, stderr).
    pub async fn run_full(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
        // `output()` captures stderr itself.
        let (mut command, _log) = command(args, env);
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .expect("ihub finishes")
            .expect("ihub runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    }

    /// Reads stdout until a line contains `needle`; returns that line.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "ihub never printed {needle:?}; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL: the process dies with whatever it had in hand.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then waits for a graceful exit; returns whether it exited successfully.
    pub async fn terminate(mut self) -> bool {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("ihub stops within 20 s of SIGTERM")
            .expect("wait");
        status.success()
    }
}
