//! A NATS JetStream cluster of `nats-server` processes on loopback ports, for one test: its
//! own store directories, killed (SIGKILL) and restarted node by node, and removed with its
//! files when dropped, also when the test panics (then the servers' logs are printed).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::{eventually, unique};

const START: Duration = Duration::from_secs(20);

struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

pub struct NatsCluster {
    pub name: String,
    dir: PathBuf,
    routes: String,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

/// `n` distinct free loopback ports (held together while chosen, so they differ).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("port").port())
        .collect()
}

impl NatsCluster {
    /// Starts `size` servers `n1`…`nN` routed to each other, and waits until they have elected
    /// a JetStream meta leader that every node knows.
    pub async fn start(size: usize) -> NatsCluster {
        let name = unique('c');
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nats-{name}"));
        let ports = free_ports(3 * size);
        let nodes: Vec<Node> = (0..size)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client_port: ports[3 * i],
                cluster_port: ports[3 * i + 1],
                monitor_port: ports[3 * i + 2],
                store: dir.join(format!("n{}", i + 1)),
                log: dir.join(format!("n{}.log", i + 1)),
                process: None,
            })
            .collect();
        let routes = nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster {
            name,
            dir,
            routes,
            nodes,
            http: ihub::http_client::client(Duration::from_secs(2)),
        };
        // From here on, dropping `cluster` removes the directory.
        std::fs::create_dir_all(&cluster.dir).expect("cluster dir");
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_for_meta_leader().await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &node.client_port.to_string()])
            .args(["-m", &node.monitor_port.to_string()])
            .arg("-sd")
            .arg(&node.store)
            .args(["-n", &node.name])
            .args(["--cluster_name", &self.name])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["--routes", &self.routes])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server on PATH (Debian: apt-get install -y nats-server)");
        node.process = Some(child);
    }

    /// Every server, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in {:?}", self.node_names()))
    }

    /// A node's `/jsz` (JetStream state as that server sees it), when it answers.
    async fn jsz(&self, i: usize) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/jsz", self.nodes[i].monitor_port);
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    /// The meta leader that every running node agrees on.
    pub async fn meta_leader(&self) -> Option<String> {
        let mut leader: Option<String> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.process.is_none() {
                continue;
            }
            let jsz = self.jsz(i).await?;
            let seen = jsz["meta_cluster"]["leader"].as_str().unwrap_or_default();
            if seen.is_empty() || leader.as_deref().is_some_and(|l| l != seen) {
                return None;
            }
            leader = Some(seen.to_string());
        }
        leader
    }

    pub async fn wait_for_meta_leader(&self) -> String {
        eventually("a JetStream meta leader every node knows", START, || {
            self.meta_leader()
        })
        .await
    }

    /// SIGKILL: the node dies with whatever it had in memory; its store stays.
    pub async fn kill(&mut self, name: &str) {
        let i = self.index(name);
        let mut child = self.nodes[i].process.take().expect("the node runs");
        child.kill().await.expect("kill nats-server");
    }

    /// Starts a killed node again on the same ports and store directory.
    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.nodes[i].process.is_none(), "{name} still runs");
        self.spawn(i);
    }

    /// Whether `name` answers its monitoring port and knows the meta leader.
    pub async fn is_up(&self, name: &str) -> bool {
        let i = self.index(name);
        self.jsz(i).await.is_some_and(|jsz| {
            !jsz["meta_cluster"]["leader"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        })
    }

    fn print_logs(&self) {
        for node in &self.nodes {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} (last 40 lines) ---", node.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.process.take() {
                let _ = child.start_kill();
                // Reap it, so that no server outlives the test (bounded: SIGKILL is prompt).
                for _ in 0..200 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
