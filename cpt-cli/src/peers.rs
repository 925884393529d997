//! `cpt run --devices N` and `--nodes M`: one training thread per device of this process, each a
//! peer of burn's collective engine (see `cpt_continual::distributed`), and across machines one
//! process per node meeting at node 0's orchestrator.
//!
//! Every peer builds its own replica of the stream on its device; the peer of global rank 0
//! alone writes the run directory (logs, evaluations, checkpoints, summary), and every peer
//! resumes from its checkpoints. A peer that fails ends the process at once (the others would
//! wait for it for ever); a peer lost on another machine is noticed by the collective watchdog
//! within `--peer-timeout` seconds.

use crate::run::{RunEnd, RunJob, Stream, install_signal_handlers, prepare_run_dir, train_peer};
use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use cpt_continual::ContinualModel;
use cpt_continual::distributed::PeerGroup;
use cpt_continual::distributed::collective::{LocalPeers, Topology, start_orchestrator};
use cpt_core::checkpoint::latest_checkpoint;
use cpt_core::{TaskModel, TrainBackend};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

/// Exit status when a peer was lost (died or hung) mid-run.
pub const EXIT_PEER_LOST: i32 = 4;

/// Device `index` of backend `B` (every peer of the CPU backend shares its one device).
fn device<B: Backend>(index: usize) -> B::Device {
    use burn::tensor::backend::DeviceOps;
    let mut id = B::Device::default().id();
    id.index_id = index as u16;
    <B::Device as burn::tensor::backend::Device>::from_id(id)
}

/// The step this process's peers start from: that of the run directory's newest checkpoint on
/// `--resume`, else 0.
fn start_step(job: &RunJob) -> Result<u64> {
    if !job.resume {
        return Ok(0);
    }
    let newest = latest_checkpoint(&job.out.join("checkpoints"))?;
    Ok(newest.map_or(0, |checkpoint| checkpoint.manifest.step))
}

/// Check that every peer of the run starts from the same step (two small all-reduces: the mean
/// step, then the mean squared distance to it, zero only when all agree). A node that cannot see
/// the run directory's checkpoints on `--resume` (another machine without a shared `--out`), or
/// one started without `--resume` beside resumed ones, would otherwise train out of step with
/// the others; every peer reaches the same verdict, so all stop together.
fn agree_on_start<B: Backend>(
    peer: &dyn PeerGroup<B>,
    step: u64,
    device: &B::Device,
) -> Result<()> {
    let mean_of = |value: f32| -> Result<f32> {
        let mean = peer.all_reduce_mean(Tensor::<B, 1>::from_floats([value], device))?;
        Ok(mean
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?[0])
    };
    let own = step as f32;
    let mean = mean_of(own)?;
    let spread = mean_of((own - mean).powi(2))?;
    if spread != 0.0 {
        bail!(
            "peer {} starts from step {step} but the peers' mean start is {mean}: every node must run with --resume and see the run's newest checkpoint (the same --out, on a shared disk, or a copy of node 0's checkpoints/)",
            peer.rank()
        );
    }
    Ok(())
}

/// Train `job` on its peers: see the module documentation.
pub fn execute<B, M>(
    job: RunJob,
    build: impl Fn(&B::Device) -> Result<Stream<B, M>>,
) -> Result<RunEnd>
where
    B: TrainBackend,
    M: ContinualModel<B> + Send,
    M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
{
    let p = job.parallel.clone();
    if p.node_rank >= p.nodes {
        bail!(
            "--node-rank {} is not below --nodes {}",
            p.node_rank,
            p.nodes
        );
    }
    cpt_continual::distributed::check_batch(job.config.train.batch_size, p.peers())?;
    let topology = Topology {
        devices: p.devices,
        nodes: p.nodes,
        node_rank: p.node_rank,
        coordinator: p.coordinator.clone(),
        node_address: p.node_address.clone(),
        timeout: Duration::from_secs(p.peer_timeout_secs.max(1)),
    };
    // Every replica is built (and so every input checked) before anything is written.
    let streams = (0..p.devices)
        .map(|local| build(&device::<B>(local)))
        .collect::<Result<Vec<_>>>()?;
    let columns = streams[0].columns();
    let parts = streams
        .into_iter()
        .map(|stream| stream.into_parts(&job.config))
        .collect::<Result<Vec<_>>>()?;
    if p.node_rank == 0 {
        prepare_run_dir(&job.config, &job.out, job.resume, job.force)?;
    }
    start_orchestrator(&topology)?;
    tracing::info!(
        "data parallel: {} peers ({} per node × {} nodes), global batch {} ({} per peer)",
        p.peers(),
        p.devices,
        p.nodes,
        job.config.train.batch_size,
        job.config.train.batch_size / p.peers()
    );
    let lost = Arc::new(|message: String| {
        eprintln!("error: {message}");
        std::process::exit(EXIT_PEER_LOST);
    });
    let peers = Arc::new(LocalPeers::new(topology, lost));
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers(stop.clone())?;
    let job = Arc::new(job);
    let (done, results) = mpsc::channel();
    for (local, parts) in parts.into_iter().enumerate() {
        let (job, peers, stop, done) = (job.clone(), peers.clone(), stop.clone(), done.clone());
        std::thread::Builder::new()
            .name(format!("peer-{local}"))
            .spawn(move || {
                let device = device::<B::InnerBackend>(local);
                let result = peers
                    .register::<B::InnerBackend>(local, device.clone())
                    .map_err(anyhow::Error::from)
                    .and_then(|peer| {
                        agree_on_start(&peer, start_step(&job)?, &device)?;
                        train_peer(&job, parts, Some(Box::new(peer)), stop)
                    });
                let _ = done.send((local, result));
            })
            .context("starting a peer thread")?;
    }
    drop(done);
    let mut rank_zero = None;
    for (local, result) in results {
        match result {
            Ok(ended) => {
                if local == 0 {
                    rank_zero = Some(ended);
                }
            }
            // The other peers wait for this one inside an all-reduce: end the process now.
            Err(error) => {
                eprintln!("error: peer {local}: {}", crate::chain(&error));
                std::process::exit(1);
            }
        }
    }
    let (outcome, state) = rank_zero.context("peer 0 ended without a result")?;
    if p.node_rank != 0 {
        // Only node 0 reports; the others just end with the run.
        return Ok(match outcome {
            cpt_continual::RunOutcome::Finished => RunEnd::Finished,
            cpt_continual::RunOutcome::Interrupted { .. } => RunEnd::Interrupted,
        });
    }
    job.finish(outcome, &state, &columns)
}
