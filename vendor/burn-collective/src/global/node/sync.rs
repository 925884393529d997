use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
    vec,
};

use burn_communication::{CommunicationChannel, Message, Protocol, ProtocolClient};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock};

use crate::{NodeId, node::base::NodeState};

/// Handles the status of sync requests from other nodes
pub(crate) struct SyncService<P: Protocol> {
    /// Current node's state, shared with the thread that does aggregations
    node_state: Arc<RwLock<Option<NodeState>>>,
    /// The number of peers that have requested to sync with us since the last successful sync.
    syncing_peers: Mutex<Vec<NodeId>>,
    /// Notification on each incoming sync request
    sync_notif: Notify,

    _p: PhantomData<P>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SyncRequest(NodeId);

impl<P: Protocol> SyncService<P> {
    pub fn new(node_state: Arc<RwLock<Option<NodeState>>>) -> Self {
        Self {
            node_state,
            syncing_peers: Mutex::new(vec![]),
            sync_notif: Notify::new(),
            _p: PhantomData,
        }
    }

    fn add_syncing_peer(&self, peer: NodeId) {
        let mut syncing_peers = self.syncing_peers.lock().unwrap();
        syncing_peers.push(peer);
    }

    /// Sync with all peers.
    pub async fn sync(&self) {
        // we can't sync while we register
        let node_state = self.node_state.read().await;
        let node_state = node_state
            .as_ref()
            .expect("Trying to sync a node before having registered to the orchestrator");

        // this peer is syncing
        self.add_syncing_peer(node_state.node_id);
        for (id, addr) in &node_state.nodes {
            if *id == node_state.node_id {
                continue;
            }

            let mut connection = P::Client::connect(addr.clone(), "sync")
                .await
                .expect("Couldn't connect to peer for sync");
            let msg = SyncRequest(node_state.node_id);
            let sync_bytes = rmp_serde::to_vec(&msg).unwrap();
            connection
                .send(Message::new(sync_bytes.into()))
                .await
                .expect("Peer closed connection unexpectedly");
        }
        let all_node_ids = node_state.nodes.keys().cloned().collect::<Vec<_>>();
        loop {
            // cpt patch: register for the next notification *before* looking, so that a sync
            // request arriving between the look and the wait still wakes this call
            // (`notify_waiters` stores no permit).
            let mut notified = std::pin::pin!(self.sync_notif.notified());
            notified.as_mut().enable();
            if self.take_round(&all_node_ids) {
                // all nodes have synced
                return;
            }
            // Wait for the next sync to come in
            notified.await
        }
    }

    /// cpt patch: when a sync request of every node has arrived, remove one request per node
    /// and return true. The upstream code cleared a *copy* of the list, so the requests of the
    /// first round stayed for ever and every later round saw duplicates and never completed
    /// (the second global all-reduce hung). Removing one per node, rather than clearing, also
    /// keeps a request that a faster node already sent for the next round.
    fn take_round(&self, all_node_ids: &[NodeId]) -> bool {
        let mut syncing_peers = self.syncing_peers.lock().unwrap();
        if !all_node_ids.iter().all(|id| syncing_peers.contains(id)) {
            return false;
        }
        for id in all_node_ids {
            let position = syncing_peers.iter().position(|p| p == id).unwrap();
            syncing_peers.swap_remove(position);
        }
        true
    }

    pub async fn handle_sync_connection<C: CommunicationChannel>(&self, mut channel: C) {
        let msg = channel.recv().await.unwrap();
        let Some(msg) = msg else {
            return;
        };

        let msg = rmp_serde::from_slice::<SyncRequest>(&msg.data).unwrap();

        self.add_syncing_peer(msg.0);

        self.sync_notif.notify_waiters();
    }
}
