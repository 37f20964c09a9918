//! Private redis-servers for tests and benches (feature `testing`): one
//! server, or a 6-node cluster, started on free loopback ports and killed on
//! drop. Never a server that happens to be running.

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A redis-server child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// The loopback port it listens on.
    pub port: u16,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl RedisServer {
    /// Starts a server on a free port and waits until it reports it accepts
    /// connections.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (e.g. to restart one that was killed).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[String]) -> Self {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps.sh installs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        let server = RedisServer { child: Some(child), port };
        // Wait for the server to say it is ready (no polling, no sleep); if
        // it dies instead, its stdout closes and the wait ends.
        let mut lines = BufReader::new(stdout).lines();
        let ready =
            lines.by_ref().map_while(Result::ok).any(|l| l.contains("Ready to accept connections"));
        assert!(ready, "redis-server did not start on port {port}");
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "redis-server is not listening on {port}"
        );
        server
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and nothing
    /// answers, as with a Redis that hangs rather than refuses.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running server");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the server (as an outage would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        self.kill();
    }
}

/// A Redis Cluster of private redis-servers on loopback: 3 masters, each
/// with one replica, made with `redis-cli --cluster create`. A master that
/// dies is replaced by its replica within about a second
/// (`cluster-node-timeout` 500 ms), and the other masters' slots keep
/// working meanwhile (`cluster-require-full-coverage no`). Killed, and its
/// directory removed, on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts the six servers, joins them, and waits until every node says
    /// the cluster is ok.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "backpressure-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let port = free_port();
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "500",
                    "--cluster-port",
                    &free_port().to_string(),
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-replica-validity-factor",
                    "0",
                    "--dir",
                    dir.to_str().expect("a UTF-8 temp dir"),
                ]
                .map(str::to_owned);
                RedisServer::start_with(port, &extra)
            })
            .collect();
        let addresses: Vec<String> =
            nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed with redis-server");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, dir };
        cluster.wait_until_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node still running.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(RedisServer::url).collect()
    }

    /// Waits until every running node reports `cluster_state:ok` and its
    /// slots all served.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                let info = cli(node.port, &["cluster", "info"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok on {}: {info}", node.port);
                // Real time, on purpose: this waits for six redis-server
                // processes to agree, which no paused clock can hurry, and
                // they expose no event to wait on but `cluster info`.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the master that owns `key`'s slot (as a crash would); returns
    /// its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let any = self.nodes.iter().find(|n| n.child.is_some()).expect("a running node").port;
        let slot: u16 = cli(any, &["cluster", "keyslot", key]).trim().parse().expect("a slot");
        let nodes = cli(any, &["cluster", "nodes"]);
        let port = nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find(|l| {
                l.split_whitespace().skip(8).any(|range| {
                    let mut ends = range.split('-').map(|x| x.parse::<u16>().unwrap_or(u16::MAX));
                    let lo = ends.next().unwrap_or(u16::MAX);
                    let hi = ends.next().unwrap_or(lo);
                    (lo..=hi).contains(&slot)
                })
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|addr| addr.split(['@', ':']).nth(1))
            .and_then(|p| p.parse().ok())
            .expect("the master of the key's slot");
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node we started");
        node.kill();
        port
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p <port> <args>`'s output.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed with redis-server");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
