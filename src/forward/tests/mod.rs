//! The forwarder's guarantees, tested in process against a sink in memory ([`memory_sink`]) and a
//! real sled WAL in a temporary directory: no server, virtual time (the breaker's backoff passes
//! at once). Each test names the guarantee of `crate::forward` it checks; `forwarder_invariants_*`
//! drives generated transactions through random fault schedules and checks them all after every
//! run (as Vector's disk buffer tests its invariants against a model).

mod memory_sink;

use std::time::Duration;

use proptest::prelude::*;
use sdl_wal::Wal;
use tokio::sync::watch;

use super::breaker::BreakerStatus;
use super::{run, Forwarder, PendingBatch, STAGING_COMMITTED, STAGING_NOT_APPLIED};
use crate::config::SinkConfig;
use crate::event::{Change, SourceTransaction, StatementChange};
use crate::telemetry::ForwardStatus;
use memory_sink::{Fault, MemoryConnect, MemoryError, MemorySink, LEASE_LOST, UNSENDABLE};

/// `changes[i]` changes in the transaction at WAL sequence `i + 1`; the one at `unsendable` (a
/// WAL sequence) is refused by the sink's `prepare` as a change over 16 MiB would be.
fn transactions(changes: &[usize], unsendable: Option<u64>) -> Vec<SourceTransaction> {
    changes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let seq = i as u64 + 1;
            let prefix = if Some(seq) == unsendable {
                UNSENDABLE
            } else {
                "0-1"
            };
            SourceTransaction {
                gtid: format!("{prefix}-{seq}"),
                timestamp: 1_700_000_000,
                position_after: format!("0-1-{seq}"),
                first_change: 0,
                ends_transaction: true,
                changes: (0..n)
                    .map(|k| {
                        Change::Statement(StatementChange {
                            database: "app".into(),
                            statement: format!("-- {seq}.{k}"),
                            file: "bin.000001".into(),
                            pos: seq * 100 + k as u64,
                        })
                    })
                    .collect(),
            }
        })
        .collect()
}

fn sink_config(max_documents: usize) -> SinkConfig {
    let mut cfg: SinkConfig =
        toml::from_str("url = \"mongodb://memory.invalid\"").expect("a sink config");
    cfg.batch_max_documents = max_documents;
    cfg.batch_max_bytes = 1 << 20;
    cfg.breaker_failures = 3;
    cfg.retry_max_delay = Duration::from_secs(1);
    cfg
}

/// A WAL in a temporary directory holding `records`, sequences 1..=n.
fn wal_with(records: &[SourceTransaction]) -> (tempfile::TempDir, Wal<SourceTransaction>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let wal = Wal::open(dir.path().join("wal")).expect("open the WAL");
    wal.append(records, b"position").expect("append");
    (dir, wal)
}

/// How one run of the forwarder ended.
#[derive(Debug)]
enum Ended {
    /// Returned by itself: `Ok` (the WAL drained) or the error it stopped with.
    Returned(Result<(), String>),
    /// A commit hung and the forwarder was shut down in the middle of it (and returned `Ok`).
    ShutDownMidCommit,
}

/// Runs a forwarder over `wal` into `sink` until it returns, or until a commit hangs (then shuts
/// it down). The ingester is gone (its channel closed): the forwarder drains the WAL and stops.
/// A watcher checks whenever the forwarder waits that the WAL's acknowledged cursor is never
/// ahead of the sink's offset.
async fn run_once(sink: &MemorySink, wal: &Wal<SourceTransaction>, cfg: &SinkConfig) -> Ended {
    let (_, appended) = watch::channel(wal.last_seq().unwrap());
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (breaker, _) = watch::channel(BreakerStatus::default());
    let (status, _) = watch::channel(ForwardStatus::default());
    let forwarder = tokio::spawn(run(Forwarder {
        sink: None,
        connect: MemoryConnect(sink.clone()),
        source_name: "memory".into(),
        wal: wal.clone(),
        cfg: cfg.clone(),
        appended,
        shutdown,
        breaker,
        status,
    }));
    let watcher_sink = sink.clone();
    let watcher = tokio::spawn(async move {
        // Under virtual time the clock moves only when every task waits: the watcher's 1 ms
        // sleep ends at each such point, so it checks between any two steps of the forwarder.
        loop {
            watcher_sink.check_acknowledged_not_ahead();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut forwarder = forwarder;
    let ended = tokio::select! {
        result = &mut forwarder => Ended::Returned(result.expect("forwarder panicked").map_err(|e| e.to_string())),
        _ = sink.shared.hung.notified() => {
            shutdown_tx.send_replace(true);
            let result = tokio::time::timeout(Duration::from_secs(60), forwarder)
                .await
                .expect("the forwarder stops on shutdown although a commit hangs")
                .expect("forwarder panicked");
            assert!(result.is_ok(), "shutdown mid-commit is a clean stop: {result:?}");
            Ended::ShutDownMidCommit
        }
    };
    watcher.abort();
    sink.check_acknowledged_not_ahead();
    ended
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// Asserts what holds after every run, whatever the faults: no violation seen by the sink, the
/// committed sequences are exactly 1..=k once each in order, and the WAL's cursor is at most k.
fn assert_consistent(sink: &MemorySink, wal: &Wal<SourceTransaction>) -> u64 {
    let state = sink.state();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    let k = state.committed.len() as u64;
    assert_eq!(
        state.committed,
        (1..=k).collect::<Vec<_>>(),
        "every WAL record committed exactly once, in order"
    );
    assert_eq!(state.offset.as_ref().map_or(0, |o| o.wal_seq), k);
    assert!(
        wal.acked().unwrap() <= k,
        "acknowledged ahead of the commits"
    );
    k
}

#[test]
fn a_clean_run_commits_every_record_once_and_acknowledges_all() {
    let records = transactions(&[1, 3, 2, 5, 1, 1], None);
    let (_dir, wal) = wal_with(&records);
    let sink = MemorySink::new(wal.clone(), []);
    let ended = runtime().block_on(run_once(&sink, &wal, &sink_config(4)));
    assert!(matches!(ended, Ended::Returned(Ok(()))), "{ended:?}");
    assert_eq!(assert_consistent(&sink, &wal), 6);
    assert_eq!(
        wal.acked().unwrap(),
        6,
        "all acknowledged after the last commit"
    );
    assert_eq!(sink.state().closed, 1, "the sink is closed on the way out");
}

#[test]
fn transient_failures_are_retried_with_the_same_batch_and_nothing_is_skipped() {
    let records = transactions(&[2; 5], None);
    let (_dir, wal) = wal_with(&records);
    let faults = [Fault::Transient; 7];
    let sink = MemorySink::new(wal.clone(), faults);
    sink.state().connect_failures = 2;
    let metrics = crate::telemetry::metrics();
    let restarts = metrics.stage_restarts(crate::telemetry::Stage::Forwarder);
    let ended = runtime().block_on(run_once(&sink, &wal, &sink_config(2)));
    assert!(matches!(ended, Ended::Returned(Ok(()))), "{ended:?}");
    assert_eq!(assert_consistent(&sink, &wal), 5);
    assert_eq!(sink.state().attempts, 5 + 7);
    // Seven failures in a row open the breaker (threshold 3); the success that closes it is a
    // restart of the forwarder, published by the forwarder (other tests may add theirs).
    assert!(metrics.stage_restarts(crate::telemetry::Stage::Forwarder) > restarts);
}

#[test]
fn a_definite_error_stops_after_the_last_commit_with_nothing_acknowledged_past_it() {
    let records = transactions(&[1; 6], None);
    let (_dir, wal) = wal_with(&records);
    // Batches of one record: two commit, the third is rejected.
    let sink = MemorySink::new(wal.clone(), [Fault::None, Fault::None, Fault::Definite]);
    let ended = runtime().block_on(run_once(&sink, &wal, &sink_config(1)));
    let Ended::Returned(Err(message)) = ended else {
        panic!("not stopped by the definite error: {ended:?}")
    };
    assert_eq!(message, "memory sink: rejected");
    assert_eq!(assert_consistent(&sink, &wal), 2);
    assert_eq!(
        wal.acked().unwrap(),
        2,
        "the last commit is acknowledged, nothing past it"
    );
    assert_eq!(
        sink.state().attempts,
        3,
        "a definite error is never retried"
    );
}

#[test]
fn a_lost_lease_stops_the_forwarder_without_acknowledging_the_refused_batch() {
    let records = transactions(&[1; 5], None);
    let (_dir, wal) = wal_with(&records);
    // Batches of one record: two commit, then the sink's fence finds another instance leading.
    let sink = MemorySink::new(wal.clone(), [Fault::None, Fault::None, Fault::LeaseLost]);
    let ended = runtime().block_on(run_once(&sink, &wal, &sink_config(1)));
    let Ended::Returned(Err(message)) = ended else {
        panic!("not stopped by the lost lease: {ended:?}")
    };
    assert_eq!(message, format!("memory sink: {LEASE_LOST}"));
    assert_eq!(assert_consistent(&sink, &wal), 2);
    assert_eq!(
        wal.acked().unwrap(),
        2,
        "nothing acknowledged past the last commit"
    );
    assert_eq!(sink.state().attempts, 3, "a lost lease is never retried");
    // The service tells it apart from other definite errors (exit 6, not 1).
    let lost = super::ForwardError::from(MemoryError {
        what: LEASE_LOST.into(),
        transient: false,
    });
    assert!(lost.is_lease_lost() && !lost.is_transient());
    let rejected = super::ForwardError::from(MemoryError {
        what: "rejected".into(),
        transient: false,
    });
    assert!(!rejected.is_lease_lost());
}

#[test]
fn a_record_that_can_never_be_sent_stops_after_everything_before_it_is_committed() {
    let records = transactions(&[2, 1, 1, 3, 1], Some(4));
    let (_dir, wal) = wal_with(&records);
    let sink = MemorySink::new(wal.clone(), []);
    let ended = runtime().block_on(run_once(&sink, &wal, &sink_config(100)));
    let Ended::Returned(Err(message)) = ended else {
        panic!("not stopped by the unsendable record: {ended:?}")
    };
    assert_eq!(message, "memory sink: WAL sequence 4 can never be sent");
    assert_eq!(assert_consistent(&sink, &wal), 3);
    assert_eq!(wal.acked().unwrap(), 3);
}

#[test]
fn a_commit_whose_answer_is_lost_is_replayed_and_recognised_by_the_offset() {
    let records = transactions(&[1, 1, 1], None);
    let (_dir, wal) = wal_with(&records);
    let sink = MemorySink::new(wal.clone(), [Fault::LostAcknowledgement; 2]);
    let ended = runtime().block_on(run_once(&sink, &wal, &sink_config(1)));
    assert!(matches!(ended, Ended::Returned(Ok(()))), "{ended:?}");
    assert_eq!(assert_consistent(&sink, &wal), 3);
    assert_eq!(wal.acked().unwrap(), 3);
    // The first batch landed, its answer was lost, and the replay found it under the offset
    // (the second replay's answer was lost too).
    assert_eq!(sink.state().already_applied, 2);
}

#[test]
fn shutdown_mid_commit_leaves_a_consistent_state_and_a_restart_finishes_without_duplicates() {
    for landed in [false, true] {
        let records = transactions(&[1; 5], None);
        let (_dir, wal) = wal_with(&records);
        let sink = MemorySink::new(
            wal.clone(),
            [Fault::None, Fault::None, Fault::Hang { landed }],
        );
        let cfg = sink_config(1);
        let ended = runtime().block_on(run_once(&sink, &wal, &cfg));
        assert!(matches!(ended, Ended::ShutDownMidCommit), "{ended:?}");
        let committed = assert_consistent(&sink, &wal);
        assert_eq!(committed, if landed { 3 } else { 2 });
        assert_eq!(
            wal.acked().unwrap(),
            2,
            "the batch in flight is not acknowledged"
        );
        // A new run (a restart) catches the cursor up to the offset and forwards the rest once.
        let ended = runtime().block_on(run_once(&sink, &wal, &cfg));
        assert!(matches!(ended, Ended::Returned(Ok(()))), "{ended:?}");
        assert_eq!(assert_consistent(&sink, &wal), 5);
        assert_eq!(wal.acked().unwrap(), 5);
        assert_eq!(sink.state().already_applied, 0, "landed={landed}");
    }
}

#[test]
fn staging_entries_left_pending_are_reconciled_against_the_offset_and_the_wal() {
    let records = transactions(&[1; 4], None);
    let (_dir, wal) = wal_with(&records);
    let sink = MemorySink::new(wal.clone(), []);
    let pending = |id: &str, first_seq, last_seq, wal_id: &str| PendingBatch {
        id: id.into(),
        wal_id: wal_id.into(),
        first_seq,
        last_seq,
        first_gtid: format!("0-1-{first_seq}"),
        last_gtid: format!("0-1-{last_seq}"),
        count: 1,
        session: None,
        legacy_ids: false,
    };
    {
        let mut state = sink.state();
        // Batch 1-2 landed before the restart (the offset covers it); 3-3 never did.
        state.offset = Some(super::SinkOffset {
            wal_id: wal.id(),
            wal_seq: 2,
            gtid_position: "0-1-2".into(),
        });
        state.committed = vec![1, 2];
        state.pending = vec![
            pending("covered", 1, 2, &wal.id()),
            pending("in-flight", 3, 3, &wal.id()),
            pending("other-wal", 1, 9, "another-wal"),
        ];
    }
    let ended = runtime().block_on(run_once(&sink, &wal, &sink_config(1)));
    assert!(matches!(ended, Ended::Returned(Ok(()))), "{ended:?}");
    assert_eq!(assert_consistent(&sink, &wal), 4);
    let state = sink.state();
    assert_eq!(
        state.resolved,
        [
            ("covered".to_string(), STAGING_COMMITTED),
            ("in-flight".to_string(), STAGING_NOT_APPLIED),
            ("other-wal".to_string(), STAGING_NOT_APPLIED),
        ]
    );
    assert!(state.pending.is_empty());
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        3 => Just(Fault::Transient),
        2 => Just(Fault::LostAcknowledgement),
        1 => Just(Fault::Definite),
        1 => any::<bool>().prop_map(|landed| Fault::Hang { landed }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The model: whatever the transactions, batch bounds and faults, the sink ends up holding
    /// WAL records 1..=k exactly once and in order, the WAL's cursor never passes the sink's
    /// offset (checked after every step), nothing is written after a definite error, and k is
    /// what the faults allow: every record without a definite error, every record before an
    /// unsendable one, and a prefix when a commit was rejected.
    #[test]
    fn forwarder_invariants_hold_under_random_faults(
        changes in prop::collection::vec(1usize..5, 1..14),
        unsendable in prop::option::of(1u64..14),
        max_documents in 1usize..8,
        faults in prop::collection::vec(fault(), 0..12),
    ) {
        let unsendable = unsendable.filter(|&s| s <= changes.len() as u64);
        let records = transactions(&changes, unsendable);
        let n = records.len() as u64;
        let (_dir, wal) = wal_with(&records);
        let rejected = faults.contains(&Fault::Definite);
        let sink = MemorySink::new(wal.clone(), faults);
        let cfg = sink_config(max_documents);
        let mut restarts = 0;
        let ended = loop {
            match runtime().block_on(run_once(&sink, &wal, &cfg)) {
                Ended::ShutDownMidCommit => {
                    assert_consistent(&sink, &wal);
                    restarts += 1;
                    prop_assert!(restarts <= 12);
                }
                Ended::Returned(result) => break result,
            }
        };
        let committed = assert_consistent(&sink, &wal);
        if ended.is_ok() {
            prop_assert_eq!(wal.acked().unwrap(), committed, "a drained forwarder acknowledged its last commit");
        }
        let state = sink.state();
        match (&ended, unsendable) {
            (Ok(()), None) => prop_assert_eq!(committed, n),
            (Ok(()), Some(_)) => prop_assert!(false, "ran past an unsendable record"),
            (Err(e), _) if e == "memory sink: rejected" => {
                prop_assert!(rejected && state.stopped_definitely);
                prop_assert!(committed < unsendable.unwrap_or(n + 1));
            }
            (Err(e), Some(at)) => {
                prop_assert_eq!(e, &format!("memory sink: WAL sequence {at} can never be sent"));
                prop_assert_eq!(committed, at - 1, "everything before the unsendable record is committed");
            }
            (Err(e), None) => prop_assert!(false, "unexpected error: {}", e),
        }
    }
}
