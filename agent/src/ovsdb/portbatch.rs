//! [`PortBatcher`]: pod port creations and deletions through a [`GroupCommit`], so the port
//! changes of concurrent CNI calls pending at the same moment go to OVSDB in one transaction.
//!
//! Why: on the netdev datapath ovs-vswitchd reconfigures the whole bridge for every database
//! change it sees, and each reconfigure costs more the more ports the bridge has. One
//! transaction for many ports is one change for it, and one round trip to ovsdb-server.
//!
//! Same guarantees as [`OvsBridgeClient::ensure_port`] and [`OvsBridgeClient::delete_port`]:
//! only the batching differs. The batched path covers the common cases (a port absent from the
//! monitor cache is created, one present is deleted by its UUID); every other case, and every
//! job of a failed batch, takes the unbatched [`Ovs`] method, so a bad job fails only its caller.

use super::batch::{BatchGone, Committer, GroupCommit};
use super::datum::Uuid;
use super::error::{OvsdbError, Result};
use super::helpers::{delete_port_ops, insert_port_ops, name_is, Ovs, OvsBridgeClient, PortSpec};
use super::ops::{Operation, TransactOutcome};

/// One port change.
#[derive(Debug, Clone)]
pub enum PortJob {
    /// Create `spec` on `bridge` (absent from the cache when queued).
    Create {
        /// The bridge.
        bridge: String,
        /// The port.
        spec: PortSpec,
        /// The deadline of the caller's request ([`super::client::with_deadline`]): the batch
        /// holding this job is bounded by it, so an abandoned creation never reaches OVSDB.
        deadline: Option<tokio::time::Instant>,
    },
    /// Delete the port row `uuid` named `name`.
    Delete {
        /// The Port row.
        uuid: Uuid,
        /// Its name.
        name: String,
    },
}

/// What a [`PortJob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortDone {
    /// The port's UUID.
    Created(Uuid),
    /// Whether the port existed.
    Deleted(bool),
}

/// Commits [`PortJob`]s: a batch in one transaction, a job alone through [`Ovs`].
#[derive(Debug)]
pub struct PortCommitter {
    ovs: Ovs,
}

impl Committer for PortCommitter {
    type Job = PortJob;
    type Output = Result<PortDone>;
    type Error = OvsdbError;

    async fn commit(&self, jobs: &[PortJob]) -> Result<Vec<Result<PortDone>>> {
        let mut ops = Vec::new();
        let mut bridges: Vec<&str> = Vec::new();
        for job in jobs {
            if let PortJob::Create { bridge, .. } = job {
                if !bridges.contains(&bridge.as_str()) {
                    bridges.push(bridge);
                }
            }
        }
        for bridge in &bridges {
            ops.push(Operation::assert_rows(
                "Bridge",
                name_is(bridge),
                "name",
                true,
            ));
        }
        // Where each job's delete op is (creations are found by their row names).
        let mut deletes = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.iter().enumerate() {
            match job {
                PortJob::Create { bridge, spec, .. } => {
                    ops.extend(insert_port_ops(bridge, spec, &index.to_string()));
                    deletes.push(None);
                }
                PortJob::Delete { uuid, name } => {
                    deletes.push(Some(ops.len() + 1));
                    ops.extend(delete_port_ops(uuid, name));
                }
            }
        }
        ops.push(Operation::comment(&format!(
            "weft: {} port changes",
            jobs.len()
        )));
        // The batch is bounded by the earliest deadline of its creations; if that cuts it off,
        // each job then runs alone under its own deadline.
        let deadline = jobs
            .iter()
            .filter_map(|job| match job {
                PortJob::Create { deadline, .. } => *deadline,
                PortJob::Delete { .. } => None,
            })
            .min();
        let transact = self.ovs.client().transact(ops);
        let out = match deadline {
            Some(deadline) => super::client::with_deadline(deadline, transact).await?,
            None => transact.await?,
        };
        Ok(jobs
            .iter()
            .enumerate()
            .map(|(index, _)| outcome(&out, index, deletes[index]))
            .collect())
    }

    /// A port created for a caller that left (its ADD was abandoned) is deleted again, on the
    /// same connection, so after the creation.
    async fn orphaned(&self, job: &PortJob, output: Result<PortDone>) {
        if let (PortJob::Create { spec, .. }, Ok(PortDone::Created(uuid))) = (job, output) {
            let ops = delete_port_ops(&uuid, &spec.name);
            match self.ovs.client().transact(ops.into()).await {
                Ok(_) => {
                    tracing::info!(port = %spec.name, "port created for an abandoned add deleted")
                }
                Err(error) => {
                    tracing::warn!(port = %spec.name, %error, "cannot delete the port created for an abandoned add; a del or the next start removes it")
                }
            }
        }
    }

    async fn alone(&self, job: PortJob) -> Result<PortDone> {
        match job {
            PortJob::Create {
                bridge,
                spec,
                deadline,
            } => {
                let ensure = self.ovs.ensure_port(&bridge, &spec);
                match deadline {
                    Some(deadline) => super::client::with_deadline(deadline, ensure).await,
                    None => ensure.await,
                }
                .map(PortDone::Created)
            }
            PortJob::Delete { name, .. } => {
                self.ovs.delete_port(&name).await.map(PortDone::Deleted)
            }
        }
    }
}

fn outcome(out: &TransactOutcome, index: usize, delete_op: Option<usize>) -> Result<PortDone> {
    match delete_op {
        Some(op) => Ok(PortDone::Deleted(
            out.results.get(op).map(|r| r.count()) == Some(1),
        )),
        None => out
            .named_uuids
            .get(&format!("port{index}"))
            .cloned()
            .map(PortDone::Created)
            .ok_or_else(|| OvsdbError::Protocol {
                reason: "insert of port returned no uuid".to_owned(),
            }),
    }
}

/// Pod port creation and deletion with group commit (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct PortBatcher {
    group: GroupCommit<PortCommitter>,
}

impl PortBatcher {
    /// Batches port changes over `ovs`.
    pub fn new(ovs: Ovs) -> Self {
        PortBatcher {
            group: GroupCommit::new(PortCommitter { ovs }),
        }
    }

    fn ovs(&self) -> &Ovs {
        &self.group.committer().ovs
    }

    /// Transactions the batcher sent for batches (jobs that ran alone not counted).
    pub fn batches(&self) -> u64 {
        self.group.batches()
    }

    /// [`OvsBridgeClient::ensure_port`], batched when the port is not in the cache.
    pub async fn ensure_port(&self, bridge: &str, spec: &PortSpec) -> Result<Uuid> {
        let cached = self
            .ovs()
            .client()
            .read_cache(|cache| cache.by_name("Port", &spec.name).is_some());
        if cached {
            return self.ovs().ensure_port(bridge, spec).await;
        }
        let job = PortJob::Create {
            bridge: bridge.to_owned(),
            spec: spec.clone(),
            deadline: super::client::current_deadline(),
        };
        match self.group.submit(job).await.map_err(gone)?? {
            PortDone::Created(uuid) => Ok(uuid),
            PortDone::Deleted(_) => Err(unexpected()),
        }
    }

    /// [`OvsBridgeClient::delete_port`], batched when the port is in the cache.
    pub async fn delete_port(&self, name: &str) -> Result<bool> {
        let cached = self
            .ovs()
            .client()
            .read_cache(|cache| cache.by_name("Port", name).map(|(uuid, _)| uuid.clone()));
        let Some(uuid) = cached else {
            return self.ovs().delete_port(name).await;
        };
        let job = PortJob::Delete {
            uuid,
            name: name.to_owned(),
        };
        match self.group.submit(job).await.map_err(gone)?? {
            // The cache was behind: the row is gone or was replaced; ask the server.
            PortDone::Deleted(false) => self.ovs().delete_port(name).await,
            PortDone::Deleted(true) => Ok(true),
            PortDone::Created(_) => Err(unexpected()),
        }
    }
}

fn gone(_: BatchGone) -> OvsdbError {
    OvsdbError::Closed
}

fn unexpected() -> OvsdbError {
    OvsdbError::Protocol {
        reason: "port batch answered another kind of change".to_owned(),
    }
}
