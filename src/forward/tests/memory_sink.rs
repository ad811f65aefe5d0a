//! A [`Sink`] in memory for the forwarder's invariant tests: it keeps an offset and the log of
//! committed WAL sequences, applies the same offset check as MongoDB's sink (a batch the offset
//! covers is "already applied", one that would leave a hole is refused), and injects the faults
//! it is scheduled to, one per commit attempt. It checks the forwarder's invariants as it goes and
//! records every violation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use sdl_wal::{Stored, Wal};
use tokio::sync::Notify;

use crate::event::SourceTransaction;
use crate::forward::{
    Committed, Connect, PendingBatch, Prepared, Sink, SinkFault, SinkOffset, WalBatch,
};

/// What one commit attempt does (once the schedule is used up, every attempt succeeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the commit succeeds.
    None,
    /// Fails transiently before writing anything (MongoDB unreachable).
    Transient,
    /// Fails definitely before writing anything (a rejected write).
    Definite,
    /// Fails definitely before writing anything: the lease of a hot standby is lost (MongoDB's
    /// fence found another instance leading).
    LeaseLost,
    /// Lands, then its answer is lost: the forwarder sees a transient error.
    LostAcknowledgement,
    /// Never answers, after landing (`landed`) or before writing anything: the forwarder is shut
    /// down in the middle of it.
    Hang { landed: bool },
}

#[derive(Debug, thiserror::Error)]
#[error("memory sink: {what}")]
pub struct MemoryError {
    pub what: String,
    pub transient: bool,
}

/// The error of [`Fault::LeaseLost`].
pub const LEASE_LOST: &str = "lease lost: another instance leads";

impl SinkFault for MemoryError {
    fn is_transient(&self) -> bool {
        self.transient
    }
    fn is_lease_lost(&self) -> bool {
        self.what == LEASE_LOST
    }
}

/// A batch: the WAL sequences it holds and what the forwarder reads from it.
#[derive(Debug, Clone)]
pub struct MemoryBatch {
    pub seqs: Vec<u64>,
    pub documents: usize,
    pub last_gtid: String,
    pub position_after: String,
    pub last_timestamp: u32,
}

impl WalBatch for MemoryBatch {
    fn first_seq(&self) -> u64 {
        self.seqs[0]
    }
    fn last_seq(&self) -> u64 {
        *self.seqs.last().expect("a batch holds a record")
    }
    fn last_gtid(&self) -> &str {
        &self.last_gtid
    }
    fn position_after(&self) -> &str {
        &self.position_after
    }
    fn last_timestamp(&self) -> u32 {
        self.last_timestamp
    }
}

/// The GTID prefix of a record [`Sink::prepare`] refuses (as MongoDB's sink refuses a change
/// over 16 MiB): a definite error that no retry helps.
pub const UNSENDABLE: &str = "unsendable";

#[derive(Default)]
pub struct State {
    pub offset: Option<SinkOffset>,
    /// Every WAL sequence written, in the order written; a duplicate is a violation.
    pub committed: Vec<u64>,
    pub faults: VecDeque<Fault>,
    /// Transient failures still to come from [`MemoryConnect`].
    pub connect_failures: usize,
    pub attempts: usize,
    pub already_applied: usize,
    /// A definite error was returned: nothing may be written after it.
    pub stopped_definitely: bool,
    pub pending: Vec<PendingBatch>,
    pub resolved: Vec<(String, &'static str)>,
    pub violations: Vec<String>,
    pub closed: usize,
}

/// The sink; clones share one state (a restarted forwarder meets the same "database").
#[derive(Clone)]
pub struct MemorySink {
    pub shared: Arc<Shared>,
}

pub struct Shared {
    pub state: Mutex<State>,
    /// The WAL the forwarder acknowledges in: its cursor is checked against the offset.
    pub wal: Wal<SourceTransaction>,
    /// Notified when a commit starts to hang.
    pub hung: Notify,
}

impl MemorySink {
    pub fn new(wal: Wal<SourceTransaction>, faults: impl IntoIterator<Item = Fault>) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    faults: faults.into_iter().collect(),
                    ..State::default()
                }),
                wal,
                hung: Notify::new(),
            }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("memory sink state")
    }

    /// The invariant the forwarder keeps at every moment: the WAL's acknowledged cursor is never
    /// ahead of what the sink has committed.
    pub fn check_acknowledged_not_ahead(&self) {
        let acked = self.shared.wal.acked().expect("read the WAL cursor");
        let mut state = self.state();
        let committed = state.offset.as_ref().map_or(0, |o| o.wal_seq);
        if acked > committed {
            state.violations.push(format!(
                "the WAL acknowledged {acked}, the sink committed only up to {committed}"
            ));
        }
    }

    /// Writes `batch` as MongoDB's sink does: the offset check first.
    fn apply(
        &self,
        state: &mut State,
        wal_id: &str,
        batch: &MemoryBatch,
    ) -> Result<Committed, MemoryError> {
        if state.stopped_definitely {
            state.violations.push(format!(
                "batch {}-{} written after a definite error",
                batch.first_seq(),
                batch.last_seq()
            ));
        }
        if let Some(offset) = state.offset.as_ref().filter(|o| o.wal_id == wal_id) {
            if offset.wal_seq >= batch.last_seq() {
                state.already_applied += 1;
                return Ok(Committed::AlreadyApplied);
            }
            if offset.wal_seq + 1 != batch.first_seq() {
                state.violations.push(format!(
                    "batch {}-{} does not follow the offset {}",
                    batch.first_seq(),
                    batch.last_seq(),
                    offset.wal_seq
                ));
                state.stopped_definitely = true;
                return Err(MemoryError {
                    what: "offset conflict".into(),
                    transient: false,
                });
            }
        }
        for &seq in &batch.seqs {
            if state.committed.contains(&seq) {
                state
                    .violations
                    .push(format!("WAL sequence {seq} written twice"));
            }
            state.committed.push(seq);
        }
        state.offset = Some(SinkOffset {
            wal_id: wal_id.to_string(),
            wal_seq: batch.last_seq(),
            gtid_position: batch.position_after.clone(),
        });
        Ok(Committed::Written {
            documents: batch.documents,
        })
    }
}

impl Sink for MemorySink {
    type Batch = MemoryBatch;
    type Staged = ();
    type Error = MemoryError;

    fn source_name(&self) -> &str {
        "memory"
    }

    /// One document per change; a record's "bytes" are 100 per change.
    fn prepare(
        _source: &str,
        records: &[Stored<SourceTransaction>],
        max_documents: usize,
        max_bytes: usize,
    ) -> Prepared<MemoryBatch, MemoryError> {
        let mut batch: Option<MemoryBatch> = None;
        let mut bytes = 0;
        for stored in records {
            if stored.record.gtid.starts_with(UNSENDABLE) {
                let e = MemoryError {
                    what: format!("WAL sequence {} can never be sent", stored.seq),
                    transient: false,
                };
                return match batch {
                    Some(b) => Prepared::BatchThenStop(b, e),
                    None => Prepared::Stop(e),
                };
            }
            let documents = stored.record.changes.len();
            let size = documents * 100;
            if let Some(b) = &batch {
                if b.documents + documents > max_documents || bytes + size > max_bytes {
                    break;
                }
            }
            let b = batch.get_or_insert_with(|| MemoryBatch {
                seqs: Vec::new(),
                documents: 0,
                last_gtid: String::new(),
                position_after: String::new(),
                last_timestamp: 0,
            });
            b.seqs.push(stored.seq);
            b.documents += documents;
            b.last_gtid = stored.record.gtid.clone();
            b.position_after = stored.record.position_after.clone();
            b.last_timestamp = stored.record.timestamp;
            bytes += size;
        }
        Prepared::Batch(batch.expect("prepare() needs at least one record"))
    }

    async fn offset(&self) -> Result<Option<SinkOffset>, MemoryError> {
        Ok(self.state().offset.clone())
    }

    async fn commit(
        &self,
        wal_id: &str,
        batch: &MemoryBatch,
        _staged: Option<()>,
        _next: Option<&MemoryBatch>,
    ) -> Result<(Committed, Option<()>), MemoryError> {
        self.check_acknowledged_not_ahead();
        {
            let mut state = self.state();
            state.attempts += 1;
            match state.faults.pop_front() {
                None | Some(Fault::None) => {
                    return self.apply(&mut state, wal_id, batch).map(|c| (c, None))
                }
                Some(Fault::Transient) => {
                    return Err(MemoryError {
                        what: "unreachable".into(),
                        transient: true,
                    })
                }
                Some(Fault::Definite) => {
                    state.stopped_definitely = true;
                    return Err(MemoryError {
                        what: "rejected".into(),
                        transient: false,
                    });
                }
                Some(Fault::LeaseLost) => {
                    state.stopped_definitely = true;
                    return Err(MemoryError {
                        what: LEASE_LOST.into(),
                        transient: false,
                    });
                }
                Some(Fault::LostAcknowledgement) => {
                    self.apply(&mut state, wal_id, batch)?;
                    return Err(MemoryError {
                        what: "the answer to the commit was lost".into(),
                        transient: true,
                    });
                }
                Some(Fault::Hang { landed }) => {
                    if landed {
                        self.apply(&mut state, wal_id, batch)?;
                    }
                }
            }
        }
        // Hangs: the forwarder is shut down in the middle of this commit.
        self.shared.hung.notify_one();
        std::future::pending().await
    }

    async fn pending_batches(&self) -> Result<Vec<PendingBatch>, MemoryError> {
        Ok(self.state().pending.clone())
    }

    async fn end_pending_transaction(&self, _pending: &PendingBatch) {}

    async fn resolve_pending(
        &self,
        id: &str,
        status: &'static str,
        _note: &str,
    ) -> Result<(), MemoryError> {
        let mut state = self.state();
        state.pending.retain(|p| p.id != id);
        state.resolved.push((id.to_string(), status));
        Ok(())
    }

    async fn remove_legacy_copies(
        &self,
        _batch: &MemoryBatch,
    ) -> Result<(usize, usize), MemoryError> {
        Ok((0, 0))
    }

    async fn close(self) {
        self.state().closed += 1;
    }
}

/// Hands out the shared sink, after its scheduled transient failures.
pub struct MemoryConnect(pub MemorySink);

impl Connect<MemorySink> for MemoryConnect {
    async fn connect(&mut self) -> Result<MemorySink, MemoryError> {
        let mut state = self.0.state();
        if state.connect_failures > 0 {
            state.connect_failures -= 1;
            return Err(MemoryError {
                what: "cannot connect".into(),
                transient: true,
            });
        }
        drop(state);
        Ok(self.0.clone())
    }
}
