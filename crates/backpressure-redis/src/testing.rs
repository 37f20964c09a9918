//! A private redis-server for tests and benches (feature `testing`): started
//! on a free loopback port, killed on drop. Never a server that happens to be
//! running.

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
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
