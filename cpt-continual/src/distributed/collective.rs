//! [`PeerGroup`] on burn 0.21's collective engine (`burn-collective`): peers are threads of one
//! process (one per device) and, across machines, processes that meet at a global orchestrator
//! which node rank 0 runs.
//!
//! burn's all-reduce blocks until every peer has called it, and has no timeout: a peer that
//! died would hang the others for ever. A watchdog therefore times every collective call and,
//! past the limit, hands a message to the caller's `on_lost` (the CLI prints it and exits), so a
//! lost peer ends the run within a bounded time; its last checkpoint is complete by
//! construction, and `--resume` restarts every rank from it.

use super::PeerGroup;
use crate::error::{ContinualError, Result};
use ::burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where this process stands among the peers of a run.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Peers (devices) in this process.
    pub devices: usize,
    /// Processes (machines) in the run.
    pub nodes: usize,
    /// This process's index among them; node 0 runs the orchestrator.
    pub node_rank: usize,
    /// `HOST:PORT` of the orchestrator (multi-node runs).
    pub coordinator: Option<String>,
    /// `HOST:PORT` where this node serves its tensors to the others (multi-node runs; default:
    /// the coordinator's host, port + 1 + node rank).
    pub node_address: Option<String>,
    /// A collective call that waits longer than this means a peer is gone.
    pub timeout: Duration,
}

impl Topology {
    /// One process with `devices` peers.
    pub fn local(devices: usize, timeout: Duration) -> Self {
        Self {
            devices,
            nodes: 1,
            node_rank: 0,
            coordinator: None,
            node_address: None,
            timeout,
        }
    }

    /// Peers over all processes.
    pub fn size(&self) -> usize {
        self.devices * self.nodes
    }

    /// The global rank of local peer `local`.
    pub fn rank(&self, local: usize) -> usize {
        self.node_rank * self.devices + local
    }

    fn coordinator(&self) -> Result<&str> {
        self.coordinator.as_deref().ok_or_else(|| {
            ContinualError::invalid("--coordinator", "a multi-node run needs HOST:PORT")
        })
    }

    fn config(&self) -> Result<CollectiveConfig> {
        let config = CollectiveConfig::default().with_num_devices(self.devices);
        if self.nodes == 1 {
            return Ok(config);
        }
        let coordinator = self.coordinator()?;
        let (host, port) = host_port(coordinator, "--coordinator")?;
        let node = match &self.node_address {
            Some(address) => address.clone(),
            None => format!("{host}:{}", port + 1 + self.node_rank as u16),
        };
        let (_, data_port) = host_port(&node, "--node-address")?;
        let address = |hostport: &str| {
            burn_communication::Address::from_str(&format!("ws://{hostport}"))
                .map_err(|e| ContinualError::invalid("--coordinator", &e))
        };
        Ok(config
            .with_global_all_reduce_strategy(AllReduceStrategy::Centralized)
            .with_num_nodes(self.nodes as u32)
            .with_global_address(address(coordinator)?)
            .with_node_address(address(&node)?)
            .with_data_service_port(data_port))
    }
}

fn host_port(value: &str, key: &str) -> Result<(String, u16)> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| ContinualError::invalid(key, &format!("`{value}` is not HOST:PORT")))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| ContinualError::invalid(key, &format!("`{port}` is not a port number")))?;
    Ok((host.to_string(), port))
}

/// On node 0 of a multi-node run, start the global orchestrator on the coordinator's port, in a
/// background thread of this process; elsewhere do nothing.
pub fn start_orchestrator(topology: &Topology) -> Result<()> {
    if topology.nodes == 1 || topology.node_rank != 0 {
        return Ok(());
    }
    let (_, port) = host_port(topology.coordinator()?, "--coordinator")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| ContinualError::Collective(format!("cannot start the orchestrator: {e}")))?;
    std::thread::spawn(move || {
        runtime.block_on(::burn_collective::start_global_orchestrator(port));
    });
    Ok(())
}

/// Times collective calls and reports one that waits too long.
struct Watchdog {
    /// When each waiting peer entered its current call.
    waiting: Mutex<BTreeMap<usize, (Instant, Duration)>>,
}

impl Watchdog {
    fn start(on_lost: Arc<dyn Fn(String) + Send + Sync>) -> Arc<Self> {
        let watchdog = Arc::new(Self {
            waiting: Mutex::new(BTreeMap::new()),
        });
        let watched = Arc::downgrade(&watchdog);
        std::thread::spawn(move || {
            while let Some(watchdog) = watched.upgrade() {
                let late = {
                    let waiting = watchdog.waiting.lock().expect("watchdog lock");
                    waiting
                        .iter()
                        .find(|(_, (since, limit))| since.elapsed() > *limit)
                        .map(|(rank, (_, limit))| (*rank, *limit))
                };
                if let Some((rank, limit)) = late {
                    on_lost(format!(
                        "peer {rank} waited over {} s for the other peers: one of them died or hung. The last complete checkpoint is intact; restart every rank with --resume",
                        limit.as_secs()
                    ));
                    return;
                }
                drop(watchdog);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        watchdog
    }

    fn call<T>(&self, rank: usize, limit: Duration, f: impl FnOnce() -> T) -> T {
        self.waiting
            .lock()
            .expect("watchdog lock")
            .insert(rank, (Instant::now(), limit));
        let out = f();
        self.waiting.lock().expect("watchdog lock").remove(&rank);
        out
    }
}

/// A peer registered with burn's collective engine.
pub struct CollectivePeer<B: Backend> {
    id: PeerId,
    rank: usize,
    size: usize,
    timeout: Duration,
    watchdog: Arc<Watchdog>,
    backend: std::marker::PhantomData<B>,
}

/// The peers of this process, sharing one watchdog.
pub struct LocalPeers {
    topology: Topology,
    watchdog: Arc<Watchdog>,
}

impl LocalPeers {
    /// This process's peers under `topology`; `on_lost` receives the message when a collective
    /// call outlives `topology.timeout` (it should end the process).
    pub fn new(topology: Topology, on_lost: Arc<dyn Fn(String) + Send + Sync>) -> Self {
        Self {
            watchdog: Watchdog::start(on_lost),
            topology,
        }
    }

    /// Register local peer `local` on `device`, from its own thread. Waits for every peer of
    /// the run (allowing ten timeouts, so that processes may start a little apart).
    pub fn register<B: Backend>(
        &self,
        local: usize,
        device: B::Device,
    ) -> Result<CollectivePeer<B>> {
        let t = &self.topology;
        let config = t.config()?;
        let rank = t.rank(local);
        let id = PeerId::from(local as u32);
        self.watchdog
            .call(rank, t.timeout * 10, || {
                ::burn_collective::register::<B>(id, device, config)
            })
            .map_err(|e| collective_error("register", e))?;
        Ok(CollectivePeer {
            id,
            rank,
            size: t.size(),
            timeout: t.timeout,
            watchdog: self.watchdog.clone(),
            backend: std::marker::PhantomData,
        })
    }
}

fn collective_error(what: &str, e: ::burn_collective::CollectiveError) -> ContinualError {
    ContinualError::Collective(match e {
        // burn's local server is a task that panics when a download from another node finds
        // the connection closed: a node died.
        ::burn_collective::CollectiveError::LocalServerMissing => format!(
            "{what} failed: the collective engine stopped, a peer on another node was lost. The last complete checkpoint is intact; restart every node with --resume"
        ),
        e => format!("{what} failed: {e:?}"),
    })
}

impl<B: Backend> PeerGroup<B> for CollectivePeer<B> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_mean(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let primitive = values.into_primitive().tensor();
        let id = self.id;
        let reduced = self
            .watchdog
            .call(self.rank, self.timeout, || {
                ::burn_collective::all_reduce::<B>(id, primitive, ReduceOperation::Mean)
            })
            .map_err(|e| collective_error("all-reduce", e))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
    }

    fn finish(&self) -> Result<()> {
        let id = self.id;
        self.watchdog
            .call(self.rank, self.timeout, || {
                ::burn_collective::finish_collective::<B>(id)
            })
            .map_err(|e| collective_error("finish", e))
    }
}
