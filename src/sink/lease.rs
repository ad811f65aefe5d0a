//! The lease of a hot standby (`[lease]`): one document per `source.name` in `relay_leases`, and
//! the fence every batch transaction carries.
//!
//! # The document
//! `{_id: source.name, epoch, holder, instance, renewals, commits, acquired_at, renewed_at}`.
//! `holder` is a random token made per process (two processes never share one, even with the
//! same `lease.instance`); `epoch` grows by one at every takeover; `renewals` by one at every
//! renewal; `commits` by one in every batch transaction of the holder.
//!
//! # Guarantees
//! - **No clocks compared across hosts.** A standby takes over only after the document's
//!   `(epoch, renewals)` has stayed the same for a whole `lease.duration` on its own monotonic
//!   clock (`crate::service`'s lease phase), then with a compare-and-set on the values it saw
//!   ([`LeaseStore::take`]): of two standbys, one wins; a leader that renewed meanwhile wins.
//! - **The fence.** Every batch transaction of a holder updates the lease document filtered on
//!   `{_id, epoch: mine, holder: mine}` as its last write before the commit
//!   ([`MongoSink::fence_in`]). Matched nothing: the
//!   transaction is aborted and the commit fails with the definite [`SinkError::LeaseLost`]:
//!   nothing of that batch is visible. Because a takeover writes the same document, a transaction
//!   of a paused or cut-off old leader either commits before the takeover (serialised before it)
//!   or conflicts with it / finds the epoch changed: it never commits after it.
//! - A paused old leader's open transaction holds locks (the offset document, its staging entry,
//!   perhaps the lease document) until MongoDB expires it (`transactionLifetimeLimitSeconds`, 60 s
//!   by default): before taking a lapsed lease, the standby ends the sessions named by the
//!   source's recent staging entries ([`LeaseStore::end_lapsed_transactions`]), so the takeover
//!   and the new leader's first commit need not wait for that.
//! - The offset of a batch written without a transaction (a single record too large for one) is
//!   moved in a small transaction with the fence, so an old leader cannot move the offset either.
//! - Every write here uses majority, journaled write concern (the client's, see `connect.rs`): a
//!   takeover survives a MongoDB failover.

use bson::{doc, Document};
use mongodb::options::ReturnDocument;
use mongodb::{ClientSession, Collection};

use super::connect::{probe, shut_down, Probe};
use super::error::{error_code, operation_error};
use super::{MongoSink, SinkError, LEASES_COLLECTION, STAGING_COLLECTION};
use crate::config::SinkConfig;

const DUPLICATE_KEY: i32 = 11000;

/// What a lease document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub epoch: i64,
    pub renewals: i64,
    /// The holder's token; `None` once released.
    pub holder: Option<String>,
    /// The holder's `lease.instance`.
    pub instance: Option<String>,
}

impl LeaseRecord {
    fn parse(d: &Document) -> Self {
        Self {
            epoch: d.get_i64("epoch").unwrap_or_default(),
            renewals: d.get_i64("renewals").unwrap_or_default(),
            holder: d.get_str("holder").ok().map(str::to_string),
            instance: d.get_str("instance").ok().map(str::to_string),
        }
    }
}

/// The lease this process holds: what every batch transaction checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub epoch: i64,
    holder: String,
    pub instance: String,
}

/// The lease document of one source, for this process (its own token).
pub struct LeaseStore {
    leases: Collection<Document>,
    staging: Collection<Document>,
    client: mongodb::Client,
    url: String,
    source_name: String,
    holder: String,
    instance: String,
}

/// A random token naming this process as a holder.
fn new_holder_token() -> String {
    let mut bytes = [0u8; 16];
    // The OS's random source; if it fails, the time and pid still differ between processes.
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..8].copy_from_slice(&(now as u64).to_be_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LeaseStore {
    /// Connects; refuses a MongoDB without transactions (a standalone server), since the fence is
    /// a write inside every batch's transaction.
    pub async fn connect(
        cfg: &SinkConfig,
        source_name: &str,
        instance: &str,
    ) -> Result<Self, SinkError> {
        let Probe {
            client,
            url,
            supports_transactions,
            ..
        } = probe(cfg).await?;
        if !supports_transactions {
            shut_down(client).await;
            return Err(SinkError::LeaseNeedsTransactions { url });
        }
        Ok(Self {
            leases: client.database(&cfg.database).collection(LEASES_COLLECTION),
            staging: client
                .database(&cfg.database)
                .collection(STAGING_COLLECTION),
            client,
            url,
            source_name: source_name.to_string(),
            holder: new_holder_token(),
            instance: instance.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The fence of `record` when it names this process as its holder.
    pub fn held_by_me(&self, record: &LeaseRecord) -> Option<Fence> {
        (record.holder.as_deref() == Some(self.holder.as_str())).then(|| self.fence(record.epoch))
    }

    /// Reads the lease document (`None`: no instance ever held it).
    pub async fn read(&self) -> Result<Option<LeaseRecord>, SinkError> {
        let found = self
            .leases
            .find_one(doc! { "_id": &self.source_name })
            .await
            .map_err(|e| operation_error("read lease", &e))?;
        Ok(found.as_ref().map(LeaseRecord::parse))
    }

    /// The fields of a lease this process holds from now at `epoch`.
    fn held_from(&self, epoch: i64, now: bson::DateTime) -> Document {
        doc! {
            "epoch": epoch,
            "holder": &self.holder,
            "instance": &self.instance,
            "renewals": 0_i64,
            "commits": 0_i64,
            "acquired_at": now,
            "renewed_at": now,
        }
    }

    /// Takes the lease if it is still as `seen` (compare-and-set on its epoch and renewals), with
    /// the next epoch; with no document, creates it at epoch 1. `None`: someone else moved first.
    pub async fn take(&self, seen: Option<&LeaseRecord>) -> Result<Option<Fence>, SinkError> {
        let now = bson::DateTime::now();
        let Some(seen) = seen else {
            let mut lease = doc! { "_id": &self.source_name };
            lease.extend(self.held_from(1, now));
            let created = self.leases.insert_one(lease).await;
            return match created {
                Ok(_) => Ok(Some(self.fence(1))),
                Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => Ok(None),
                Err(e) => Err(operation_error("create lease", &e)),
            };
        };
        let epoch = seen.epoch + 1;
        let taken = self
            .leases
            .find_one_and_update(
                doc! { "_id": &self.source_name, "epoch": seen.epoch, "renewals": seen.renewals },
                doc! { "$set": self.held_from(epoch, now) },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| operation_error("take lease", &e))?;
        Ok(taken.map(|_| self.fence(epoch)))
    }

    fn fence(&self, epoch: i64) -> Fence {
        Fence {
            epoch,
            holder: self.holder.clone(),
            instance: self.instance.clone(),
        }
    }

    /// Before taking a lapsed lease: ends the sessions the old leader's transactions may still be
    /// open in, so that their locks (the offset document, staging entries) go now rather than
    /// when MongoDB expires them. Those are the sessions named by this source's most recent
    /// staging entries, whatever their state: a pending batch's, and one an old leader reused for
    /// a retry after its entry was settled (the driver pools sessions, so they are few). This
    /// instance has used none of them yet. Best effort (logged): such a transaction otherwise
    /// expires by itself.
    pub async fn end_lapsed_transactions(&self) {
        use futures_util::TryStreamExt;
        const RECENT_ENTRIES: i64 = 256;
        let found: Result<Vec<Document>, _> = async {
            self.staging
                .find(doc! { "source": &self.source_name, "lsid": { "$exists": true } })
                .sort(doc! { "createdAt": -1 })
                .limit(RECENT_ENTRIES)
                .projection(doc! { "lsid": 1 })
                .await?
                .try_collect()
                .await
        }
        .await;
        let mut sessions: Vec<Document> = Vec::new();
        match found {
            Ok(found) => {
                for lsid in found.iter().filter_map(|d| d.get_document("lsid").ok()) {
                    if !sessions.contains(lsid) {
                        sessions.push(lsid.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target: "sdl::sink", error = %crate::redact::redact_error(&e.to_string()), "lease: could not read the lapsed leader's staging entries; its open transactions expire by themselves");
                return;
            }
        }
        if sessions.is_empty() {
            return;
        }
        let ended = self
            .client
            .database("admin")
            .run_command(doc! { "killSessions": sessions.clone() })
            .await;
        match ended {
            Ok(_) => {
                tracing::info!(target: "sdl::sink", sessions = sessions.len(), "lease: ended the sessions the lapsed leader's transactions may still be open in")
            }
            Err(e) => {
                tracing::warn!(target: "sdl::sink", error = %crate::redact::redact_error(&e.to_string()), "lease: could not end the lapsed leader's sessions; its open transactions expire by themselves")
            }
        }
    }

    /// Renews the lease; [`SinkError::LeaseLost`] when another instance holds it now.
    pub async fn renew(&self, fence: &Fence) -> Result<(), SinkError> {
        let renewed = self
            .leases
            .update_one(
                fence_filter(&self.source_name, fence),
                doc! { "$inc": { "renewals": 1_i64 }, "$set": { "renewed_at": bson::DateTime::now() } },
            )
            .await
            .map_err(|e| operation_error("renew lease", &e))?;
        if renewed.matched_count == 0 {
            return Err(self.lost(fence, "renewing it").await);
        }
        Ok(())
    }

    /// Gives the lease up (a clean stop), so that a standby takes over at once. Best effort: a
    /// lease not released lapses after `lease.duration`.
    pub async fn release(&self, fence: &Fence) -> Result<(), SinkError> {
        self.leases
            .update_one(
                fence_filter(&self.source_name, fence),
                doc! { "$set": { "holder": bson::Bson::Null, "released_at": bson::DateTime::now() } },
            )
            .await
            .map_err(|e| operation_error("release lease", &e))?;
        Ok(())
    }

    async fn lost(&self, fence: &Fence, while_doing: &str) -> SinkError {
        lease_lost(&self.leases, &self.source_name, fence, while_doing).await
    }

    /// Closes the client (see `connect::shut_down`).
    pub async fn close(self) {
        shut_down(self.client).await;
    }
}

fn fence_filter(source_name: &str, fence: &Fence) -> Document {
    doc! { "_id": source_name, "epoch": fence.epoch, "holder": &fence.holder }
}

/// The [`SinkError::LeaseLost`] for `fence`, naming who holds the lease now (when readable).
async fn lease_lost(
    leases: &Collection<Document>,
    source_name: &str,
    fence: &Fence,
    while_doing: &str,
) -> SinkError {
    let now = match leases.find_one(doc! { "_id": source_name }).await {
        Ok(Some(d)) => {
            let record = LeaseRecord::parse(&d);
            format!(
                "the lease is at epoch {} held by `{}`",
                record.epoch,
                record
                    .instance
                    .as_deref()
                    .filter(|_| record.holder.is_some())
                    .unwrap_or("nobody (released)")
            )
        }
        Ok(None) => "the lease document is gone".to_string(),
        Err(e) => format!("the lease document could not be read: {e}"),
    };
    SinkError::LeaseLost {
        source_name: source_name.to_string(),
        epoch: fence.epoch,
        instance: fence.instance.clone(),
        detail: format!("found taken while {while_doing}: {now}"),
    }
}

impl MongoSink {
    /// Every batch transaction from now on checks `fence` (`[lease]`); `None`: no lease.
    pub fn set_fence(&mut self, fence: Option<Fence>) {
        self.fence = fence;
    }

    /// The fence inside the transaction of `session`: `Ok(true)` when this process still holds
    /// the lease (the document's `commits` counts the batch), `Ok(false)` when it does not. No
    /// fence: `Ok(true)`.
    pub(super) async fn fence_in(
        &self,
        session: &mut ClientSession,
    ) -> Result<bool, mongodb::error::Error> {
        let Some(fence) = &self.fence else {
            return Ok(true);
        };
        let updated = self
            .leases
            .update_one(
                fence_filter(&self.source_name, fence),
                doc! { "$inc": { "commits": 1_i64 } },
            )
            .session(session)
            .await?;
        Ok(updated.matched_count == 1)
    }

    /// The error of a commit whose fence found the lease taken.
    pub(super) async fn lease_lost(&self) -> SinkError {
        let fence = self.fence.as_ref().expect("a fence was checked");
        lease_lost(&self.leases, &self.source_name, fence, "committing a batch").await
    }

    /// Outside a transaction: whether this process still holds the lease (no fence: true). Used
    /// before the idempotent inserts of a batch written without a transaction.
    pub(super) async fn still_holds_lease(&self) -> Result<(), SinkError> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let found = self
            .leases
            .find_one(fence_filter(&self.source_name, fence))
            .await
            .map_err(|e| operation_error("read lease", &e))?;
        match found {
            Some(_) => Ok(()),
            None => Err(self.lease_lost().await),
        }
    }

    pub(super) fn has_fence(&self) -> bool {
        self.fence.is_some()
    }
}
