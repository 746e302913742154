//! A real `nats-server` with JetStream for the fleet tests: on a free loopback port (of the host,
//! or of a namespace a test made), its store in a temp dir, killed and restarted on demand, and
//! killed when the test ends; and a cluster of three of them.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::netns::{thread_in, Netns};

pub struct NatsServer {
    child: Option<Child>,
    conf: PathBuf,
    netns: Option<String>,
    env: Vec<(String, String)>,
    pub port: u16,
    /// Its monitoring endpoint's port (`/connz`).
    monitor_port: u16,
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl NatsServer {
    /// Starts `nats-server` with JetStream under `dir`, plus `extra` server config (accounts,
    /// cluster) and `env` (the passwords accounts refer to), in `netns` if given; returns once
    /// it is ready.
    pub fn start(
        dir: &Path,
        extra: &str,
        env: &[(&str, &str)],
        netns: Option<&Netns>,
    ) -> NatsServer {
        std::fs::create_dir_all(dir).expect("server dir");
        let (port, monitor_port) = (free_port(), free_port());
        let conf = dir.join("server.conf");
        let text = format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
             jetstream {{ store_dir: {:?} }}\n{extra}\n",
            dir.join("js")
        );
        std::fs::write(&conf, text).expect("server config");
        let mut server = NatsServer {
            child: None,
            conf,
            netns: netns.map(|ns| ns.name().to_string()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port,
            monitor_port,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The names of the clients connected to it now, as they gave them (`/connz`).
    pub fn client_names(&self) -> Vec<String> {
        let addr = format!("127.0.0.1:{}", self.monitor_port);
        let get = move || crate::http::request(&addr, "GET", "/connz?limit=1024", None, b"");
        let answer = match &self.netns {
            Some(ns) => thread_in(ns, get).join().expect("connz thread"),
            None => get(),
        }
        .expect("nats-server's /connz");
        answer.json()["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    }

    /// SIGKILL: no goodbye to clients, no flush (a crash or a power cut of the broker).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store; waits until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nats-server"]);
                c
            }
            None => Command::new("nats-server"),
        };
        let mut child = command
            .arg("-c")
            .arg(&self.conf)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The receiver goes once the server is ready; keep draining the pipe anyway.
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let ready = line.contains("Server is ready");
                    log.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => panic!("nats-server did not get ready: {log:#?}"),
            }
        }
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three `nats-server` nodes clustered on loopback (in `netns` if given), JetStream on each.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the nodes `n0`..`n2` under `dir`; returns once each is ready (the JetStream leader
    /// may be elected later: retry the first request).
    pub fn start(dir: &Path, netns: Option<&Netns>) -> NatsCluster {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = (0..3)
            .map(|i| {
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, port)| format!("nats-route://127.0.0.1:{port}"))
                    .collect();
                let extra = format!(
                    "server_name: n{i}\ncluster {{ name: vigil, listen: 127.0.0.1:{}, routes: [{}] }}",
                    routes[i],
                    others.join(", ")
                );
                NatsServer::start(&dir.join(format!("n{i}")), &extra, &[], netns)
            })
            .collect();
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated, as `[fleet] url` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
