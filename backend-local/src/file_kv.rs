//! [`FileKv`]: the durable [`KvStore`] of the local backend.
//!
//! # Decisions
//! - **Memory index, disk for durability.** Every live entry is held in a [`MemoryKv`] (loaded at
//!   open); reads and `list` are served from it, so list order, cursors, limits and validation are
//!   MemoryKv's, not a second copy. Writes go to disk first and to the index once durable. Values
//!   are held in memory too — fine for credentials, keys and roles — except under the bounded
//!   prefix (the audit history): there the index keeps key, expiry, metadata and size, and a read
//!   takes the value from its file, so memory grows with the number of events, not their bytes
//!   (docs/decisions/0043-audit-events-are-bounded.md).
//! - **Layout.** `<dir>/LOCK`, and one file per key, `<dir>/<hex SHA-256 of the key>.kv` (keys may
//!   be 512 bytes, too long for a file name, and may contain `/`). Temp files are
//!   `<dir>/tmp-<hash>-<n>`.
//! - **Privacy.** The directory is created with mode 0700 (an existing one with group/other bits
//!   is tightened to 0700, with a warning); every file is created 0600.
//! - **One process.** `open` takes an exclusive lock on `<dir>/LOCK` ([`File::try_lock`]); a
//!   second opener, in this or another process, gets `Unavailable` with code `store_locked`
//!   naming the directory. The lock lasts as long as the store (and any write still running).
//! - **File format** (little-endian): magic `VKV` + version `1`, flags (bit 0: metadata present,
//!   bit 1: expiry present), expiry ms (u64), key length (u32), metadata length (u32), value length
//!   (u64), key, metadata JSON, value, then the SHA-256 of everything before it. A file whose
//!   checksum, lengths or version do not check out, or whose key does not hash to its file name
//!   (a moved file), is corrupt.
//! - **Atomic, durable writes.** Write the temp file, fsync it, rename it over the target, fsync
//!   the directory; only then update the index and acknowledge. Directory fsyncs are shared
//!   (group commit): one that starts after a writer's rename makes it durable, so concurrent
//!   writers share them; one that fails fails every writer it covered, and no later one
//!   acknowledges them (docs/decisions/0114-soak-and-directory-fsync-failures.md). An
//!   acknowledged put or delete survives `kill -9` and power loss; a crash mid-write leaves the
//!   old file intact plus a temp file that the next open removes.
//! - **Ordering.** Writes to one key (put/delete) hold a per-key lock (striped by the key's hash)
//!   across disk write and index update, so the last acknowledged write wins on disk as in memory.
//! - **Open is forgiving.** Corrupt files are skipped with a `tracing::warn` (and left in place for
//!   inspection; the next put of that key replaces it) rather than failing the open; leftover temp
//!   files are removed; expired entries are deleted.
//! - **The bounded prefix is journaled** (the audit history; docs/decisions/0110-audit-group-commit.md).
//!   Its writes are not files of their own but records appended to a journal segment,
//!   `<dir>/journal-<generation>.log` (a length, then the entry as a `.kv` file holds it, checksum
//!   included; deletions are records too). A writer appends, then waits for an `fdatasync` of
//!   the segment that started after its append: concurrent writers share one (group commit), so
//!   an event costs a write and a share of one fsync instead of a file, an fsync and a directory
//!   fsync. The wait is asynchronous — a waiting writer holds no thread, so no pool grows
//!   with the writers a slow fsync keeps waiting
//!   (docs/decisions/0126-journal-writers-wait-without-a-thread.md). Acknowledged means on disk,
//!   as for any other key. The index keeps where each
//!   record is; a read takes the value from there. Segments are closed at 4 MiB (and at every
//!   open, so that a torn record left by a crash is never followed by another); closed ones that
//!   no index entry refers to any more are deleted, oldest first (so a deletion record outlives
//!   what it deleted). At open, files of their own are loaded first and then the segments,
//!   oldest first, so the journal's later writes win; a torn or corrupt record ends its segment.
//!   Every other key (credentials, keys, roles, settings) keeps its own file, written as below.
//! - **Optional prefix bound** ([`FileKv::open_with_prefix_cap`]; `vultrino serve` bounds
//!   `audit:` by events and bytes, in two classes: [`PrefixBound`]): beyond it the greatest keys
//!   of the class are deleted from the index and then from disk; a file left behind by a crash is
//!   deleted at the next open.
//! - **Expiry is lazy.** An expired entry vanishes from reads at once and from the index when read;
//!   its file is deleted at the next open (or when the key is written or deleted).
//! - Blocking file I/O runs on the store's own threads (`store_io`: 4, and 2 more for the
//!   journal's appends and fsyncs), never on a runtime's thread, and a journaled write runs as a
//!   task of its own (`tokio::spawn`) that finishes even if its caller goes away, so `FileKv`
//!   must be used inside a tokio runtime.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use vultrino_core::ports::{
    kv_validate, Clock, KvEntry, KvStore, ListOptions, ListPage, PutOptions,
};
use vultrino_core::{Error, Result};

use crate::memory_kv::{Entry, Found, MemoryKv, PrefixBound, SegmentLoc};
use crate::store_io::{IoPool, IO_THREADS, JOURNAL_IO_THREADS};
use vultrino_core::error::Code;

const MAGIC: &[u8; 4] = b"VKV\x01";
const FLAG_METADATA: u8 = 1;
const FLAG_EXPIRY: u8 = 2;
/// In a journal record only: the key was deleted (the value is empty).
const FLAG_TOMBSTONE: u8 = 4;
/// magic 4 + flags 1 + expiry 8 + key len 4 + metadata len 4 + value len 8.
const HEADER_LEN: usize = 29;
const CHECKSUM_LEN: usize = 32;
const LOCK_FILE: &str = "LOCK";
const TMP_PREFIX: &str = "tmp-";
const SUFFIX: &str = ".kv";
const STRIPES: usize = 64;
/// Stripes of the journal's keys: more than of the files', since a writer holds its stripe
/// while it waits for its fsync, and two events sharing one cannot share that fsync.
const JOURNAL_STRIPES: usize = 1024;
const SEGMENT_PREFIX: &str = "journal-";
const SEGMENT_SUFFIX: &str = ".log";
/// A journal segment is closed (and a new one started) once it holds this many bytes.
const SEGMENT_BYTES: u64 = 4 << 20;
/// Evicted keys whose deletion records are written under their stripes at a time.
const EVICTION_BATCH: usize = 32;

/// A durable, single-process [`KvStore`] in one directory. See the module doc for the design.
pub struct FileKv {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The bounded prefix, whose values the index does not hold (read from disk).
    on_disk_prefix: Option<String>,
    mem: MemoryKv,
    /// Per-key write serialization, striped by the first byte of the key's hash: files of
    /// their own (credentials, keys, roles, settings), written on the store's I/O threads.
    stripes: Vec<Mutex<()>>,
    /// The same for the bounded prefix's keys (the journal), whose writers hold theirs across
    /// the asynchronous wait for their fsync (see [`Inner::journal_write`]).
    journal_stripes: Vec<tokio::sync::Mutex<()>>,
    tmp_counter: AtomicU64,
    dir_sync: DirSync,
    /// Tests: how many of the next directory fsyncs fail (injected).
    #[cfg(test)]
    failing_dir_syncs: AtomicU64,
    /// The store's own I/O threads (every blocking file operation runs on them).
    io: IoPool,
    /// The journal the bounded prefix's writes go to (`None` without a bound).
    journal: Option<Arc<Journal>>,
    /// Held (not read) for its exclusive lock, released when the store is dropped.
    _lock: File,
}

/// Group commit of directory fsyncs. A writer whose rename (or unlink) is done needs an fsync of
/// the directory that *starts* after it; one fsync serves every writer that asked before it
/// started, so concurrent puts share them instead of queueing one each. An fsync that fails
/// fails every writer it covered, for good: a later fsync that succeeds says nothing about
/// entries whose writeback already failed (Linux reports a writeback error once and may drop
/// the dirty state with it), so it never acknowledges them (decision 0114).
#[derive(Default)]
struct DirSync {
    state: Mutex<DirSyncState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct DirSyncState {
    /// Tickets handed out (one per request).
    asked: u64,
    /// Every ticket up to this one is covered by a completed fsync, but those in `failed`.
    synced: u64,
    /// Tickets covered by an fsync that failed: never acknowledged.
    failed: FailedRanges,
    running: bool,
}

/// Tickets covered by an fsync that failed, as `(after, up_to]` ranges in order: such a ticket
/// fails whatever a later fsync says (review of 2026-12-06, audit M2; decision 0114). Failures
/// are rare; past [`MAX_FAILED_RANGES`] the oldest two merge, which can only report a durable
/// write as failed, never the reverse.
#[derive(Default)]
struct FailedRanges(Vec<(u64, u64)>);

impl FailedRanges {
    /// The tickets in `(after, up_to]` are not durable and never will be.
    fn fail(&mut self, after: u64, up_to: u64) {
        if up_to <= after {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.1 >= after => last.1 = last.1.max(up_to),
            _ => self.0.push((after, up_to)),
        }
        if self.0.len() > MAX_FAILED_RANGES {
            let second = self.0.remove(1);
            self.0[0].1 = second.1;
        }
    }

    fn contains(&self, ticket: u64) -> bool {
        self.0
            .iter()
            .any(|&(after, up_to)| after < ticket && ticket <= up_to)
    }
}

impl DirSync {
    /// Join the next run of `fsync` (the directory's) that starts after this call, running it
    /// if none is running. An fsync error fails every writer whose ticket it covered — the one
    /// that ran it and those waiting — and no later fsync acknowledges them; a writer that
    /// asked while a failing fsync ran (not covered by it) waits for the next one.
    fn sync(&self, fsync: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.asked += 1;
        let ticket = st.asked;
        loop {
            if st.failed.contains(ticket) {
                return Err(io::Error::other("an fsync of the data directory failed"));
            }
            if st.synced >= ticket {
                return Ok(());
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.running = true;
            // Every ticket up to here was taken after its rename: this fsync covers them all.
            let covers = st.asked;
            drop(st);
            let result = fsync();
            st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.running = false;
            match &result {
                Ok(()) => st.synced = st.synced.max(covers),
                Err(_) => {
                    let after = st.synced;
                    st.failed.fail(after, covers);
                }
            }
            self.done.notify_all();
            result?;
        }
    }
}

/// The append-only journal of the bounded prefix (the audit history): its writes are records
/// appended to the current segment, `<dir>/journal-<generation, 16 hex digits>.log`, and
/// concurrent writers share one `fdatasync` of it (group commit) instead of paying for a file,
/// an fsync and a directory fsync each. A record is a little-endian u32 length and then the
/// entry exactly as a `.kv` file holds it (checksum included; flag 4 marks a deletion).
///
/// Two locks (review of cee6fee, F3), always taken in that order (with `fsyncing` between
/// them): `appending` serializes the
/// appends and is held across their I/O (a record's write, a roll's fsync and segment
/// creation), and is only ever taken on the store's I/O threads (the journal's; the others for
/// the deletion records of evictions); `state` (tickets, outcomes, the segment to fsync) is never
/// held across I/O, so the writers that take it on their runtime's thread wait for no disk.
struct Journal {
    /// Its own threads, for its appends and fsyncs: no job of the rest of the store (a record
    /// file's write and fsyncs, a read) queues in front of them (review of cee6fee, F4).
    io: IoPool,
    appending: Mutex<AppendState>,
    /// Held from an fsync of a segment to its settlement (a group fsync's, a roll's): no two
    /// fsyncs of one file run at once, and none settles between another's fsync and its
    /// settlement — Linux reports a writeback error to one fsync of a file only, so a
    /// concurrent one could report success for records the failed one lost (review of
    /// cee6fee, F2).
    fsyncing: Mutex<()>,
    state: Mutex<JournalState>,
    /// Announces every settled fsync (its outcome is in the state) to the waiting writers.
    synced: tokio::sync::Notify,
    /// Tests: holds fsyncs back while closed, and counts them.
    #[cfg(test)]
    gate: tests::Gate,
    /// Tests (review of cee6fee): holds an fsync's outcome back, between the fsync and its
    /// settlement.
    #[cfg(test)]
    settle_gate: tests::Gate,
}

/// The segment being appended to, under [`Journal::appending`].
struct AppendState {
    /// `None` until the first append after an open (an open changes nothing on disk by
    /// itself), and after a failed segment creation.
    file: Option<Arc<File>>,
    generation: u64,
    len: u64,
}

struct JournalState {
    /// The segment the next group fsync covers (the one being appended to).
    current: Option<Arc<File>>,
    /// Tickets handed out (one per appended record).
    asked: u64,
    /// Every ticket up to this one is durable, but those in `failed`.
    synced: u64,
    /// Tickets covered by an fsync that failed (or by a broken segment closed unsynced). A
    /// later fsync of a new segment moves `synced` past them, but never makes them durable: a
    /// ticket in one fails whatever `synced` says (review of 2026-12-06, audit M2).
    failed: FailedRanges,
    /// A group fsync has been started and has not settled (one at a time; a roll's own fsync
    /// of the segment it closes is apart, serialized with it by `fsyncing`).
    running: bool,
    /// A write or fsync of the current segment failed: no record appended to it afterwards is
    /// given a ticket, and the next append starts a new segment, so that no record follows a
    /// torn one and no later fsync of it acknowledges anything.
    broken: bool,
    /// Writers between their append and their index update, by segment: such a segment is
    /// not collected even if the index does not refer to it yet.
    in_flight: std::collections::BTreeMap<u64, usize>,
    /// The closed segments still on disk, oldest first.
    closed: std::collections::VecDeque<u64>,
}

/// One `fdatasync` of the journal, run on the journal's threads by the writer that found none
/// running ([`Journal::wait_durable`]). Dropped without having settled (its job panicked, or
/// never ran), it clears `running` and wakes the waiters, so that one of them starts another
/// instead of every writer waiting for good.
struct SyncJob {
    journal: Option<Arc<Journal>>,
    file: Arc<File>,
    covers: u64,
}

impl SyncJob {
    fn run(mut self) {
        if let Some(journal) = &self.journal {
            journal.run_sync(&self.file, self.covers);
        }
        // Settled: nothing for the drop to undo. (Had `run_sync` panicked, the unwind drops
        // `self` with the journal still in it, after the state lock's guard.)
        self.journal = None;
    }
}

impl Drop for SyncJob {
    /// A job that never settled (it panicked, or never ran): whether its fsync happened, or
    /// failed, is unknown, so it counts as failed — its writers are told so, rather than
    /// acknowledged by a retry that a swallowed error would make look fine (second review of
    /// cee6fee, R4) — and the next append starts a new segment.
    fn drop(&mut self) {
        if let Some(journal) = self.journal.take() {
            {
                let mut st = journal.lock();
                st.running = false;
                st.fail_segment(&self.file, self.covers);
            }
            journal.synced.notify_waiters();
        }
    }
}

/// A write of a key of the bounded prefix, as a journal record.
enum JournalWrite {
    Put(String, Entry),
    Delete(String),
}

fn segment_name(generation: u64) -> String {
    format!("{SEGMENT_PREFIX}{generation:016x}{SEGMENT_SUFFIX}")
}

fn segment_generation(name: &str) -> Option<u64> {
    let hex = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Create the (new, empty) segment `generation` and make its name durable.
fn create_segment(dir: &Path, generation: u64) -> io::Result<File> {
    let f = private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(segment_name(generation)))?;
    sync_dir(dir)?;
    Ok(f)
}

/// The greatest segment generation an open accepts (see `FileKv` opening).
const MAX_GENERATION: u64 = 1 << 62;

/// At most this many failed ranges are kept apart ([`FailedRanges`]).
const MAX_FAILED_RANGES: usize = 64;

impl JournalState {
    /// The tickets in `(after, up_to]` are not durable and never will be.
    fn fail(&mut self, after: u64, up_to: u64) {
        self.failed.fail(after, up_to);
    }

    /// What the writer of `ticket` is told, once it is known: a failure first (a later fsync
    /// of another segment moved `synced` past it without writing it), then durability.
    fn settled(&self, ticket: u64) -> Option<io::Result<()>> {
        if self.failed.contains(ticket) {
            return Some(Err(io::Error::other(
                "an earlier fsync of the journal failed",
            )));
        }
        (self.synced >= ticket).then_some(Ok(()))
    }

    /// An fsync of `file`, started for the tickets up to `covers`, failed (or its outcome is
    /// unknown). Every record appended to this segment so far was in (or after) the failed
    /// writeback, not only those the fsync was started for: none may be acknowledged by a
    /// later fsync of the same file, which would report no error (review of cee6fee, F1), so
    /// the segment is broken. Records of a segment rolled since were settled by the roll.
    fn fail_segment(&mut self, file: &File, covers: u64) {
        let after = self.synced;
        let up_to = if self.is_current(file) {
            self.broken = true;
            self.asked
        } else {
            covers
        };
        self.fail(after, up_to);
    }

    /// Is `file` the segment being appended to?
    fn is_current(&self, file: &File) -> bool {
        self.current
            .as_deref()
            .is_some_and(|current| std::ptr::eq(current, file))
    }
}

/// How a roll ends the segment it closes.
enum Closing {
    /// Not broken: the roll fsyncs it itself.
    Sync(Arc<File>, u64),
    /// Broken: every ticket on it not yet durable has failed already.
    Broken,
}

impl Journal {
    fn new(generation: u64, closed: Vec<u64>, io: IoPool) -> Journal {
        Journal {
            io,
            appending: Mutex::new(AppendState {
                file: None,
                generation,
                len: 0,
            }),
            fsyncing: Mutex::new(()),
            state: Mutex::new(JournalState {
                current: None,
                asked: 0,
                synced: 0,
                failed: FailedRanges::default(),
                running: false,
                broken: false,
                in_flight: Default::default(),
                closed: closed.into(),
            }),
            synced: tokio::sync::Notify::new(),
            #[cfg(test)]
            gate: tests::Gate::default(),
            #[cfg(test)]
            settle_gate: tests::Gate::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Append one record (not yet durable: pass the ticket to [`Journal::wait_durable`]).
    /// Returns the ticket, where the entry's bytes are, and whether a new segment was started
    /// (the caller then collects the old segments nothing refers to any more). Blocking: run
    /// on the journal's threads.
    fn append(&self, dir: &Path, bytes: &[u8]) -> io::Result<(u64, SegmentLoc, bool)> {
        let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("record too large"))?;
        let mut ap = self
            .appending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rolled = self.roll_if_due(dir, &mut ap)?;
        let Some(file) = ap.file.clone() else {
            return Err(io::Error::other("no journal segment"));
        };
        // Appends are serialized by `appending`, so the file's cursor is at `len` (a failed
        // write marks the segment broken and the next append starts a new one). Two writes
        // rather than a copy of the record: values may be megabytes.
        let mut out = &*file;
        let written = out
            .write_all(&len.to_le_bytes())
            .and_then(|()| out.write_all(bytes));
        let loc = SegmentLoc {
            generation: ap.generation,
            offset: ap.len + 4,
            len,
        };
        let mut st = self.lock();
        if let Err(e) = written {
            if st.is_current(&file) {
                st.broken = true;
            }
            return Err(e);
        }
        ap.len += 4 + u64::from(len);
        if st.broken {
            // An fsync of this segment failed while the record was being written: its bytes
            // may be in the failed writeback, and no later fsync of the file says otherwise.
            return Err(io::Error::other("an fsync of the journal segment failed"));
        }
        st.asked += 1;
        *st.in_flight.entry(loc.generation).or_default() += 1;
        Ok((st.asked, loc, rolled))
    }

    /// Start a new segment if there is none, if the current one is broken, or if it is full.
    /// Called with `appending` held, so no record is appended meanwhile.
    fn roll_if_due(&self, dir: &Path, ap: &mut AppendState) -> io::Result<bool> {
        let closing = {
            let mut st = self.lock();
            let Some(old) = ap.file.clone() else {
                drop(st);
                return self.start_segment(dir, ap).map(|()| false);
            };
            if st.broken {
                // Every ticket on it not yet durable fails (it may follow a torn record, or
                // be in a failed writeback).
                let (after, up_to) = (st.synced, st.asked);
                st.fail(after, up_to);
                Closing::Broken
            } else if ap.len >= SEGMENT_BYTES {
                Closing::Sync(old, st.asked)
            } else {
                return Ok(false);
            }
        };
        if let Closing::Sync(old, covers) = closing {
            // Make every record of the old segment durable first: the tickets on it are then
            // all covered, and the new segment's tickets need only the new file. If that
            // fails, the records no fsync covered cannot be made durable any more.
            let fsyncing = self.fsyncing.lock().unwrap_or_else(PoisonError::into_inner);
            let result = old.sync_data();
            {
                let mut st = self.lock();
                match &result {
                    Ok(()) => st.synced = st.synced.max(covers),
                    Err(_) => {
                        let after = st.synced;
                        st.fail(after, covers);
                    }
                }
            }
            drop(fsyncing);
            self.synced.notify_waiters();
            if let Err(e) = result {
                tracing::warn!(error = %e, "an fsync of the audit journal failed");
            }
        }
        ap.file = None;
        {
            let mut st = self.lock();
            st.current = None;
            st.broken = false;
            st.closed.push_back(ap.generation);
        }
        ap.generation += 1;
        self.start_segment(dir, ap).map(|()| true)
    }

    /// Create segment `ap.generation` and make it the current one. A generation is never used
    /// twice: a failed creation burns its number (a file it may have left is collected like
    /// a closed segment).
    fn start_segment(&self, dir: &Path, ap: &mut AppendState) -> io::Result<()> {
        match create_segment(dir, ap.generation) {
            Ok(file) => {
                let file = Arc::new(file);
                ap.file = Some(Arc::clone(&file));
                ap.len = 0;
                let mut st = self.lock();
                st.current = Some(file);
                st.broken = false;
                Ok(())
            }
            Err(e) => {
                self.lock().closed.push_back(ap.generation);
                ap.generation += 1;
                Err(e)
            }
        }
    }

    /// The writer of a record appended to segment `generation` is done (its index entry, if
    /// any, is in place).
    fn landed(&self, generation: u64) {
        let mut st = self.lock();
        if let Some(n) = st.in_flight.get_mut(&generation) {
            *n -= 1;
            if *n == 0 {
                st.in_flight.remove(&generation);
            }
        }
    }

    /// Wait until the record of `ticket` is durable: join the next `fdatasync` of the segment
    /// that starts after it was appended (one fsync serves every writer that appended before it
    /// started), starting one if none is running.
    ///
    /// The wait is asynchronous: a writer waiting for its fsync holds no thread (before, each
    /// waited on a condition variable in a blocking-pool thread, so the pool grew with the
    /// number of writers an fsync kept waiting — the soak's thread and RSS drift, issue 17).
    /// The fsync itself runs on the journal's threads as a job of its own that settles the
    /// state and wakes every waiter whatever becomes of the writer that started it, so a
    /// cancelled waiter can never leave `running` set.
    async fn wait_durable(self: &Arc<Journal>, ticket: u64) -> io::Result<()> {
        loop {
            let notified = self.synced.notified();
            let mut notified = std::pin::pin!(notified);
            let job = {
                let mut st = self.lock();
                if let Some(settled) = st.settled(ticket) {
                    return settled;
                }
                let job = if st.running {
                    None
                } else {
                    // Not rolled away (a roll settles every ticket of the segment it closes). A
                    // segment broken by a failed fsync has all its tickets settled; one broken
                    // by a failed write may still be fsynced for the records before it.
                    let Some(file) = st.current.clone() else {
                        return Err(io::Error::other("no journal segment"));
                    };
                    st.running = true;
                    // The journal and the segment only, not the store: a store dropped right
                    // after its last write releases its directory lock at once.
                    Some(SyncJob {
                        journal: Some(Arc::clone(self)),
                        file,
                        covers: st.asked,
                    })
                };
                // Registered before the lock is released: a settlement after this point
                // (made under the lock, announced after it) wakes this waiter.
                notified.as_mut().enable();
                job
            };
            // Outside the lock: a job the pool could not take is dropped, and its drop
            // takes the lock (review of cee6fee, F7).
            if let Some(job) = job {
                self.io.spawn(move || job.run());
            }
            notified.await;
        }
    }

    /// Run one `fdatasync` of `file` covering the tickets up to `covers`, record what it gave,
    /// and wake every waiter.
    fn run_sync(&self, file: &File, covers: u64) {
        #[cfg(test)]
        self.gate.pass();
        let fsyncing = self.fsyncing.lock().unwrap_or_else(PoisonError::into_inner);
        let result = file.sync_data();
        #[cfg(test)]
        let result = result.and_then(|()| self.gate.injected());
        #[cfg(test)]
        self.settle_gate.pass();
        let failed = {
            let mut st = self.lock();
            st.running = false;
            match result {
                Ok(()) => {
                    st.synced = st.synced.max(covers);
                    None
                }
                Err(e) => {
                    st.fail_segment(file, covers);
                    Some(e)
                }
            }
        };
        drop(fsyncing);
        self.synced.notify_waiters();
        // Logged once the outcome is recorded and the lock released (second review, R4).
        if let Some(e) = failed {
            tracing::warn!(error = %e, "an fsync of the audit journal failed");
        }
    }
}

impl fmt::Debug for FileKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKv")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// A job of the store's I/O threads that panicked (logged there): its result is lost.
fn task_lost() -> Error {
    tracing::error!("a file store task did not complete");
    Error::internal()
}

/// An I/O failure at open: the operator sees the directory and the OS error (never secret).
fn open_error(dir: &Path, what: &str, e: io::Error) -> Error {
    Error::unavailable(format!(
        "cannot {what} in data directory {}: {e}",
        dir.display()
    ))
    .with_code(Code::StoreIo)
}

/// An I/O failure while serving: logged for the operator (path and OS error), generic to the
/// client — 503 `store_io` with `Retry-After` (a full disk, a transient EIO: a dependency
/// failed, as a KV outage on Workers is 503 `kv_unavailable`; decision 0107), never a path.
fn io_failure(op: &str, path: &Path, e: io::Error) -> Error {
    tracing::error!(op, path = %path.display(), error = %e, "file store I/O failed");
    Error::unavailable("the credential store could not be read or written").with_code(Code::StoreIo)
}

impl FileKv {
    /// Open (creating if needed) the store in `dir`, taking its lock and loading every entry.
    ///
    /// Errors: `Unavailable`/`store_locked` if another `FileKv` holds the directory;
    /// `Unavailable`/`store_io` if the directory cannot be created, read or locked.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<FileKv> {
        Self::open_inner(dir, clock, None)
    }

    /// [`FileKv::open`], keeping the keys under the ASCII `prefix` within `bound` (keys and
    /// bytes, per class): the greatest of a class are deleted first, from memory and disk — at
    /// open if the directory holds more, and as puts go over the bound (down to 90 % of it). For
    /// `audit:` keys, which sort newest first, that drops the oldest events, so a long-running
    /// server's file count and disk use stay bounded. The values under `prefix` are not held in
    /// memory: reads take them from disk.
    pub fn open_with_prefix_cap(
        dir: &Path,
        clock: Arc<dyn Clock>,
        prefix: &str,
        bound: PrefixBound,
    ) -> Result<FileKv> {
        Self::open_inner(dir, clock, Some((prefix, bound)))
    }

    /// Whether a process holds the store in `dir` open right now (its lock is taken). Probes
    /// with a shared lock that is released at once, so it never changes the directory; a
    /// directory that has no lock file, or cannot be read, counts as not held. (Used by the CLI
    /// to tell a running server's address file from one a killed server left behind.)
    pub fn is_locked(dir: &Path) -> bool {
        match File::open(dir.join(LOCK_FILE)) {
            Ok(f) => matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    fn open_inner(
        dir: &Path,
        clock: Arc<dyn Clock>,
        cap: Option<(&str, PrefixBound)>,
    ) -> Result<FileKv> {
        create_private_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| open_error(dir, "open the lock file", e))?;
        let locked = lock.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::unavailable(format!(
                    "data directory {} is in use by another vultrino process",
                    dir.display()
                ))
                .with_code(Code::StoreLocked))
            }
            Err(TryLockError::Error(e)) => return Err(open_error(dir, "lock", e)),
        }
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            on_disk_prefix: cap.map(|(prefix, _)| prefix.to_string()),
            mem: MemoryKv::new(clock),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            journal_stripes: (0..JOURNAL_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            tmp_counter: AtomicU64::new(0),
            dir_sync: DirSync::default(),
            #[cfg(test)]
            failing_dir_syncs: AtomicU64::new(0),
            journal: None,
            io: IoPool::new(IO_THREADS)
                .map_err(|e| open_error(dir, "start the store's I/O threads", e))?,
            _lock: lock,
        };
        let segments = inner.load()?;
        if cap.is_some() {
            // A new segment after every open (made at the first append): whatever the last
            // one ends with (a torn record) is never followed by a record.
            // Generations count segments from 1: one past 2^62 is a crafted name, not history
            // (it would overflow as segments roll and reverse the replay order).
            let generation = match segments.last() {
                None => 1,
                Some(&g) if g < MAX_GENERATION => g + 1,
                Some(&g) => {
                    return Err(Error::unavailable(format!(
                        "data directory {}: journal segment {} is out of range (not written by \
                         vultrino); move it away to open the store",
                        dir.display(),
                        segment_name(g)
                    ))
                    .with_code(Code::StoreIo))
                }
            };
            let io = IoPool::new(JOURNAL_IO_THREADS)
                .map_err(|e| open_error(dir, "start the journal's I/O threads", e))?;
            inner.journal = Some(Arc::new(Journal::new(generation, segments, io)));
        }
        if let Some((prefix, bound)) = cap {
            // Set after loading, so that the bound keeps the greatest keys of the whole
            // directory, not of whatever order the directory listed them in.
            inner.mem.set_prefix_cap(prefix, bound);
            let evicted = inner.mem.trim_to_cap();
            if !evicted.is_empty() {
                tracing::info!(
                    removed = evicted.len(),
                    prefix,
                    "file store over its bound at open; removing the greatest keys"
                );
                inner.delete_evicted(evicted);
            }
        }
        if let Some(journal) = &inner.journal {
            inner.collect_segments(journal);
        }
        Ok(FileKv {
            inner: Arc::new(inner),
        })
    }

    /// A read: from the index, or from disk for a value the index does not hold.
    async fn read(&self, key: &str, with_metadata: bool) -> Result<Option<KvEntry>> {
        let mut last_loc = None;
        loop {
            let loc = match self.inner.mem.find(key, with_metadata)? {
                None => return Ok(None),
                Some(Found::Resident(entry)) => return Ok(Some(entry)),
                Some(Found::OnDisk(loc)) => loc,
            };
            if loc.is_some() && loc == last_loc {
                // The same record twice: it is gone for good (corrupt or collected).
                return Ok(None);
            }
            let owned = key.to_string();
            let entry = self
                .blocking(move |inner| match loc {
                    Some(loc) => inner.read_segment(&owned, loc),
                    None => inner.read_entry(&owned),
                })
                .await?;
            match entry {
                Some(e) => {
                    return Ok(Some(KvEntry {
                        value: e.value,
                        metadata: if with_metadata { e.metadata } else { None },
                    }))
                }
                // A journal record not found may have been rewritten (and its segment
                // collected) since the index was read: look again.
                None if loc.is_some() => last_loc = loc,
                None => return Ok(None),
            }
        }
    }

    /// Entries in the memory index (live ones, and expired ones not yet read), for the tests
    /// that check it follows the live records under churn (docs/decisions/0119).
    #[doc(hidden)]
    pub fn index_len(&self) -> usize {
        self.inner.mem.len()
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A write of the bounded prefix ([`Inner::journal_write`]), as a task of its own on the
    /// current runtime: it runs to the end even if this caller is dropped (a client that went
    /// away), as a blocking-pool write always did.
    async fn journaled(&self, write: JournalWrite) -> Result<()> {
        tokio::spawn(Inner::journal_write(Arc::clone(&self.inner), write))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "file store task failed");
                Error::internal()
            })?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .io
            .run(move || f(&inner))
            .await
            .map_err(|_| task_lost())?
    }
}

#[cfg(unix)]
fn private_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = OpenOptions::new();
    o.mode(0o600);
    o
}

#[cfg(not(unix))]
fn private_options() -> OpenOptions {
    OpenOptions::new()
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| open_error(dir, "create the directory", e))?;
    let mode = fs::metadata(dir)
        .map_err(|e| open_error(dir, "inspect the directory", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory was accessible to others; setting it to 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| open_error(dir, "restrict the directory to 0700", e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| open_error(dir, "create the directory", e))
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The journal stripe of a key, by its hash.
fn journal_stripe(hash: &[u8; 32]) -> usize {
    usize::from(u16::from_le_bytes([hash[0], hash[1]])) % JOURNAL_STRIPES
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Serialize an entry (see the module doc for the format).
fn encode(key: &str, entry: &Entry) -> Result<Vec<u8>> {
    encode_with(key, entry, 0)
}

/// A journal record that deletes `key`.
fn encode_tombstone(key: &str) -> Result<Vec<u8>> {
    encode_with(key, &Entry::new(Bytes::new(), None, None), FLAG_TOMBSTONE)
}

fn encode_with(key: &str, entry: &Entry, extra_flags: u8) -> Result<Vec<u8>> {
    let metadata = match &entry.metadata {
        Some(m) => serde_json::to_vec(m).map_err(|_| Error::internal())?,
        None => Vec::new(),
    };
    let mut flags = extra_flags;
    if entry.metadata.is_some() {
        flags |= FLAG_METADATA;
    }
    if entry.expires_at_ms.is_some() {
        flags |= FLAG_EXPIRY;
    }
    // Lengths are bounded by kv_validate (512 B, 1 KiB, 25 MiB), so the casts cannot truncate.
    let mut out = Vec::with_capacity(
        HEADER_LEN + key.len() + metadata.len() + entry.value.len() + CHECKSUM_LEN,
    );
    out.extend_from_slice(MAGIC);
    out.push(flags);
    out.extend_from_slice(&entry.expires_at_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entry.value.len() as u64).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&metadata);
    out.extend_from_slice(&entry.value);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// Parse a file; `Err` says why it is corrupt (never its content).
fn decode(bytes: &[u8]) -> std::result::Result<(String, Entry), &'static str> {
    match decode_record(bytes)? {
        (key, Some(entry)) => Ok((key, entry)),
        (_, None) => Err("a deletion record outside the journal"),
    }
}

/// Parse a file or journal record: the key and its entry, or `None` for a deletion.
fn decode_record(bytes: &[u8]) -> std::result::Result<(String, Option<Entry>), &'static str> {
    let body_len = bytes.len().checked_sub(CHECKSUM_LEN).ok_or("truncated")?;
    let (body, checksum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != checksum {
        return Err("checksum mismatch (torn or corrupt file)");
    }
    let header = body.get(..HEADER_LEN).ok_or("truncated header")?;
    if &header[..4] != MAGIC {
        return Err("unknown magic or version");
    }
    let flags = header[4];
    let u64_at = |i: usize| {
        header
            .get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let u32_at = |i: usize| {
        header
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let expires = u64_at(5).ok_or("truncated header")?;
    let key_len = u32_at(13).ok_or("truncated header")? as usize;
    let meta_len = u32_at(17).ok_or("truncated header")? as usize;
    let value_len =
        usize::try_from(u64_at(21).ok_or("truncated header")?).map_err(|_| "bad length")?;
    let rest = &body[HEADER_LEN..];
    let total = key_len
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(value_len))
        .ok_or("bad length")?;
    if total != rest.len() {
        return Err("lengths do not match the file size");
    }
    let (key, rest) = rest.split_at(key_len);
    let (meta, value) = rest.split_at(meta_len);
    let key = std::str::from_utf8(key)
        .map_err(|_| "key is not UTF-8")?
        .to_string();
    kv_validate::key(&key).map_err(|_| "invalid key")?;
    let metadata = if flags & FLAG_METADATA != 0 {
        Some(serde_json::from_slice(meta).map_err(|_| "metadata is not JSON")?)
    } else {
        None
    };
    if flags & FLAG_TOMBSTONE != 0 {
        return Ok((key, None));
    }
    let entry = Entry::new(
        Bytes::copy_from_slice(value),
        metadata,
        (flags & FLAG_EXPIRY != 0).then_some(expires),
    );
    Ok((key, Some(entry)))
}

impl Inner {
    fn file_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", hex(hash)))
    }

    /// The entry as the index keeps it: without its value under the bounded prefix.
    fn for_index(&self, key: &str, entry: Entry) -> Entry {
        match &self.on_disk_prefix {
            Some(p) if key.starts_with(p.as_str()) => entry.on_disk(),
            _ => entry,
        }
    }

    /// Read `key`'s entry from its file: `None` if there is none (deleted or evicted since the
    /// index was read), if it has expired, or if it is corrupt (logged) — a file's checksum and
    /// key are checked as at open.
    fn read_entry(&self, key: &str) -> Result<Option<Entry>> {
        let path = self.file_path(&key_hash(key));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_failure("get", &path, e)),
        };
        match decode(&bytes) {
            Ok((k, entry)) if k == key => Ok(entry.is_live(self.mem.now_ms()).then_some(entry)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "an entry file's key does not match its name");
                Ok(None)
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = why, "a corrupt entry file");
                Ok(None)
            }
        }
    }

    fn stripe(&self, hash: &[u8; 32]) -> std::sync::MutexGuard<'_, ()> {
        self.stripes[usize::from(hash[0]) % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Load every valid entry into the index (files of their own, then the journal segments,
    /// oldest first); drop temp and expired files, skip corrupt ones. Returns the generations
    /// of the journal segments found, oldest first.
    fn load(&self) -> Result<Vec<u64>> {
        let now = self.mem.now_ms();
        let mut removed_any = false;
        let mut segments = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| open_error(&self.dir, "list", e))?;
        for dirent in entries {
            let dirent = dirent.map_err(|e| open_error(&self.dir, "list", e))?;
            let path = dirent.path();
            let Some(name) = dirent.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %path.display(), "ignoring a file with a non-UTF-8 name");
                continue;
            };
            if name == LOCK_FILE {
                continue;
            }
            if let Some(generation) = segment_generation(&name) {
                segments.push(generation);
                continue;
            }
            if name.starts_with(TMP_PREFIX) {
                match fs::remove_file(&path) {
                    Ok(()) => removed_any = true,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover temp file")
                    }
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                tracing::warn!(path = %path.display(), "ignoring an unknown file in the data directory");
                continue;
            };
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable entry file");
                    continue;
                }
            };
            let (key, entry) = match decode(&bytes) {
                Ok(parsed) => parsed,
                Err(why) => {
                    tracing::warn!(path = %path.display(), reason = why, "skipping a corrupt entry file");
                    continue;
                }
            };
            if hex(&key_hash(&key)) != stem {
                tracing::warn!(path = %path.display(), "skipping an entry file whose key does not match its name");
                continue;
            }
            if !entry.is_live(now) {
                match fs::remove_file(&path) {
                    Ok(()) => removed_any = true,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove an expired entry file")
                    }
                }
                continue;
            }
            let entry = self.for_index(&key, entry);
            self.mem.insert(key, entry);
        }
        segments.sort_unstable();
        for &generation in &segments {
            removed_any |= self.replay_segment(generation, now);
        }
        if removed_any {
            sync_dir(&self.dir).map_err(|e| open_error(&self.dir, "sync", e))?;
        }
        Ok(segments)
    }

    /// Make every rename/unlink done before this call durable: join the next directory fsync
    /// that starts after it (see [`DirSync`]).
    fn sync_dir_grouped(&self) -> io::Result<()> {
        self.dir_sync.sync(|| {
            #[cfg(test)]
            if self
                .failing_dir_syncs
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(io::Error::other("injected directory fsync failure"));
            }
            sync_dir(&self.dir)
        })
    }

    /// The journal, when `key` is under the bounded prefix (whose writes go to the journal).
    fn journal_for(&self, key: &str) -> Option<&Journal> {
        match (&self.on_disk_prefix, &self.journal) {
            (Some(p), Some(j)) if key.starts_with(p.as_str()) => Some(j),
            _ => None,
        }
    }

    /// The bytes of a journal record for `write`, and what to do once it is durable.
    fn journal_record(write: &JournalWrite) -> Result<Vec<u8>> {
        match write {
            JournalWrite::Put(key, entry) => encode(key, entry),
            JournalWrite::Delete(key) => encode_tombstone(key),
        }
    }

    /// A journaled write made durable: publish it in the index (under the key's stripe, so
    /// the index follows the journal's order). Returns the keys the prefix bound evicted, and
    /// the file of its own the key had before the journal existed, now superseded (to remove
    /// on the store's I/O threads: this runs on the writer's runtime).
    fn journal_publish(
        &self,
        write: JournalWrite,
        loc: SegmentLoc,
    ) -> (Vec<String>, Option<PathBuf>) {
        let key = match &write {
            JournalWrite::Put(key, _) | JournalWrite::Delete(key) => key,
        };
        let superseded = self
            .mem
            .in_own_file(key)
            .then(|| self.file_path(&key_hash(key)));
        let evicted = match write {
            JournalWrite::Put(key, entry) => self.mem.insert(key, entry.in_segment(loc)),
            JournalWrite::Delete(key) => {
                self.mem.remove(&key);
                Vec::new()
            }
        };
        (evicted, superseded)
    }

    /// Durably write a key of the bounded prefix: append its record (a value, or a deletion
    /// record) to the journal, wait — without holding a thread — for an fsync that covers it,
    /// then publish it in the index. The key's stripe lock is held from the append to the
    /// index update, so two writes of one key reach the index in the journal's order.
    ///
    /// Run as a task of its own ([`FileKv::journaled`]): once started it finishes even if the
    /// caller stops waiting, as a blocking-pool write did, so an appended record is never left
    /// out of the index (nor its segment pinned as in flight).
    async fn journal_write(inner: Arc<Inner>, write: JournalWrite) -> Result<()> {
        let Some(journal) = inner.journal.as_ref() else {
            return Err(Error::internal());
        };
        let record = Inner::journal_record(&write)?;
        let key = match &write {
            JournalWrite::Put(key, _) | JournalWrite::Delete(key) => key.clone(),
        };
        let hash = key_hash(&key);
        let guard = inner.journal_stripes[journal_stripe(&hash)].lock().await;
        let appended = {
            // The store, not only its journal: a store whose last handle goes while this
            // append waits in the queue keeps its directory lock until the append is done, so
            // the directory is never reopened with an old journal still writing into it
            // (second review of cee6fee, R1).
            let store = Arc::clone(&inner);
            journal
                .io
                .run(move || match store.journal.as_ref() {
                    Some(journal) => journal.append(&store.dir, &record),
                    None => Err(io::Error::other("no journal")),
                })
                .await
                .map_err(|_| task_lost())?
        };
        let (ticket, loc, rolled) =
            appended.map_err(|e| io_failure("journal append", &inner.dir, e))?;
        let synced = journal.wait_durable(ticket).await;
        let (evicted, superseded) = match synced {
            Ok(()) => inner.journal_publish(write, loc),
            Err(_) => (Vec::new(), None),
        };
        if let Some(path) = superseded {
            // Before the writer counts as landed (its segment is not collected until then,
            // so the file never outlives the record that supersedes it: second review, R5),
            // on the I/O threads. Best effort: a file left behind is superseded at the next
            // open too (the journal is replayed after the files of their own).
            let _ = inner.io.run(move || fs::remove_file(path)).await;
        }
        journal.landed(loc.generation);
        drop(guard);
        synced.map_err(|e| io_failure("journal sync", &inner.dir, e))?;
        if evicted.is_empty() && !rolled {
            return Ok(());
        }
        // The evicted keys' deletion records, a few keys at a time, each batch under its keys'
        // stripes taken in order (so two writers evicting never wait on each other in a
        // cycle): a put that brings one back waits, and the deletion skips a key that is back.
        // A few at a time so that a large eviction (thousands of keys) never holds most
        // stripes, and so every other audit write, for its whole length (review of cee6fee, F5).
        let mut evicted = evicted;
        while !evicted.is_empty() {
            let batch: Vec<String> = evicted.drain(..EVICTION_BATCH.min(evicted.len())).collect();
            let mut stripes: Vec<usize> = batch
                .iter()
                .map(|key| journal_stripe(&key_hash(key)))
                .collect();
            stripes.sort_unstable();
            stripes.dedup();
            let mut guards = Vec::with_capacity(stripes.len());
            for i in stripes {
                guards.push(inner.journal_stripes[i].lock().await);
            }
            let job = Arc::clone(&inner);
            let done = inner.io.run(move || job.delete_evicted(batch)).await;
            drop(guards);
            if done.is_err() {
                // Logged by the pool; the keys left come back at the next open, and the bound
                // evicts them again. The writer's own event is durable: not its failure.
                tracing::error!("a clean-up after an audit eviction did not complete");
            }
        }
        if rolled {
            let job = Arc::clone(&inner);
            inner
                .io
                .run(move || {
                    if let Some(journal) = job.journal.as_ref() {
                        job.collect_segments(journal);
                    }
                })
                .await
                .map_err(|_| task_lost())?;
        }
        Ok(())
    }

    /// Delete the closed segments, oldest first, that no index entry and no writer in flight
    /// refers to. Oldest first and in order, so that a deletion record is never lost while an
    /// older record it deleted is still on disk.
    fn collect_segments(&self, journal: &Journal) {
        // Which segments are closed and which are in flight, in one look (second review, R2):
        // a segment closed by a roll after this look may hold records whose writers have not
        // counted as in flight yet; it is left for the next collection.
        let (in_flight, closed): (Vec<u64>, Vec<u64>) = {
            let st = journal.lock();
            (
                st.in_flight.keys().copied().collect(),
                st.closed.iter().copied().collect(),
            )
        };
        // After the in-flight snapshot: a writer no longer in flight has its entry indexed.
        let used = self.mem.segments_in_use();
        let mut removed_any = false;
        loop {
            let mut st = journal.lock();
            let Some(&oldest) = st.closed.front() else {
                break;
            };
            if used.contains(&oldest) || in_flight.contains(&oldest) || !closed.contains(&oldest) {
                break;
            }
            st.closed.pop_front();
            drop(st);
            let path = self.dir.join(segment_name(oldest));
            match fs::remove_file(&path) {
                Ok(()) => removed_any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a journal segment");
                    break;
                }
            }
        }
        if removed_any {
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the data directory");
            }
        }
    }

    /// Read `key`'s entry from its journal record at `loc`: `None` if the segment is gone (the
    /// key was evicted or rewritten since the index was read), expired or corrupt (logged).
    fn read_segment(&self, key: &str, loc: SegmentLoc) -> Result<Option<Entry>> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let path = self.dir.join(segment_name(loc.generation));
        let mut buf = vec![0; loc.len as usize];
        let read = File::open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(loc.offset))?;
            f.read_exact(&mut buf)
        });
        match read {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_failure("get", &path, e)),
        }
        match decode_record(&buf) {
            Ok((k, Some(entry))) if k == key => {
                Ok(entry.is_live(self.mem.now_ms()).then_some(entry))
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "a journal record is not the one indexed");
                Ok(None)
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = why, "a corrupt journal record");
                Ok(None)
            }
        }
    }

    /// Replay journal segment `generation` into the index, in order. A torn or corrupt record
    /// ends the segment (a crash mid-append leaves one at its end; nothing was acknowledged
    /// after it, since a broken segment is never appended to again).
    fn replay_segment(&self, generation: u64, now: u64) -> bool {
        let path = self.dir.join(segment_name(generation));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable journal segment");
                return false;
            }
        };
        let mut removed_any = false;
        let mut pos = 0usize;
        while let Some(len_bytes) = bytes.get(pos..pos + 4) {
            let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            let start = pos + 4;
            let Some(record) = start
                .checked_add(len as usize)
                .and_then(|end| bytes.get(start..end))
            else {
                tracing::info!(path = %path.display(), "a journal segment ends with a torn record (ignored)");
                break;
            };
            let decoded = match decode_record(record) {
                Ok(d) => d,
                Err(why) => {
                    tracing::warn!(path = %path.display(), reason = why, "a corrupt journal record ends its segment");
                    break;
                }
            };
            let (key, entry) = decoded;
            pos = start + len as usize;
            // The journal holds the bounded prefix only (audit events): a record of any other
            // key is not one this store wrote, and must not delete or replace a credential,
            // key or role (review of 2026-12-06, audit L3). (A store opened without its bound,
            // `FileKv::open`, tests only, takes the journal as it is.)
            if matches!(&self.on_disk_prefix, Some(p) if !key.starts_with(p.as_str())) {
                tracing::warn!(path = %path.display(), "a journal record outside the journaled prefix is ignored");
                continue;
            }
            if self.mem.in_own_file(&key) {
                // Superseded by the journal (written before it existed, or deleted).
                if fs::remove_file(self.file_path(&key_hash(&key))).is_ok() {
                    removed_any = true;
                }
            }
            match entry {
                Some(entry) if entry.is_live(now) => {
                    let loc = SegmentLoc {
                        generation,
                        offset: start as u64,
                        len,
                    };
                    let entry = match &self.on_disk_prefix {
                        Some(p) if key.starts_with(p.as_str()) => entry.in_segment(loc),
                        _ => entry,
                    };
                    self.mem.insert(key, entry);
                }
                _ => self.mem.remove(&key),
            }
        }
        removed_any
    }

    /// Durably write `entry` under `key`, then publish it in the index.
    fn persist(&self, key: String, entry: Entry) -> Result<()> {
        let bytes = encode(&key, &entry)?;
        let hash = key_hash(&key);
        let target = self.file_path(&hash);
        let _guard = self.stripe(&hash);
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}-{n}", hex(&hash)));
        let written = (|| {
            let mut f = private_options().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)?;
            self.sync_dir_grouped()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_failure("put", &target, e));
        }
        let entry = self.for_index(&key, entry);
        let evicted = self.mem.insert(key, entry);
        drop(_guard);
        if !evicted.is_empty() {
            self.delete_evicted(evicted);
        }
        Ok(())
    }

    /// Delete the files of keys the prefix bound evicted from the index (best effort: a file
    /// left behind by a crash or an I/O error is evicted again at the next open), each only if
    /// no put has brought it back meanwhile. The caller holds the keys' journal stripes (see
    /// [`Inner::journal_write`]) or has the store to itself (at open): the keys are all under
    /// the bounded prefix, whose writes take those stripes.
    fn delete_evicted(&self, keys: Vec<String>) {
        let mut removed_any = false;
        for key in keys {
            let hash = key_hash(&key);
            let path = self.file_path(&hash);
            if self.mem.contains(&key) {
                continue;
            }
            if let Some(journal) = self.journal_for(&key) {
                // A deletion record, so that the next open does not bring the event back
                // (made durable by the next journal fsync; not waited for: best effort).
                let appended = encode_tombstone(&key)
                    .ok()
                    .map(|r| journal.append(&self.dir, &r));
                match appended {
                    Some(Ok((_, loc, _))) => journal.landed(loc.generation),
                    Some(Err(e)) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot journal an eviction")
                    }
                    None => {}
                }
            }
            match fs::remove_file(&path) {
                Ok(()) => removed_any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an evicted entry file")
                }
            }
        }
        if removed_any {
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the data directory");
            }
        }
    }

    /// Durably delete `key`'s file, then drop it from the index.
    fn remove(&self, key: &str) -> Result<()> {
        let hash = key_hash(key);
        let target = self.file_path(&hash);
        let _guard = self.stripe(&hash);
        match fs::remove_file(&target) {
            Ok(()) => self
                .sync_dir_grouped()
                .map_err(|e| io_failure("delete", &target, e))?,
            // Gone from disk while the index still holds it: an earlier delete unlinked the
            // file but its directory fsync failed (that delete was answered 503). Its unlink is
            // not known durable, so this retry makes it so before it is acknowledged — else a
            // retried revocation would be acknowledged with no fsync, and after a crash the
            // record could come back with its in-memory revocation marker gone (review of
            // 2026-12-07, finding 1).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.mem.contains(key) {
                    self.sync_dir_grouped()
                        .map_err(|e| io_failure("delete", &target, e))?;
                }
            }
            Err(e) => return Err(io_failure("delete", &target, e)),
        }
        self.mem.remove(key);
        Ok(())
    }
}

#[async_trait::async_trait]
impl KvStore for FileKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.read(key, false).await?.map(|e| e.value))
    }

    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.read(key, true).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        let entry = self.inner.mem.prepare_put(key, value, options)?;
        let key = key.to_string();
        if self.inner.journal_for(&key).is_some() {
            return self.journaled(JournalWrite::Put(key, entry)).await;
        }
        self.blocking(move |inner| inner.persist(key, entry)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        kv_validate::key(key)?;
        let key = key.to_string();
        if self.inner.journal_for(&key).is_some() {
            return self.journaled(JournalWrite::Delete(key)).await;
        }
        self.blocking(move |inner| inner.remove(&key)).await
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        self.inner.mem.list(options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gate the journal's fsyncs pass through (tests only): closed, they wait at it.
    #[derive(Default)]
    pub(super) struct Gate {
        closed: Mutex<bool>,
        opened: std::sync::Condvar,
        /// fsyncs that reached the gate.
        pub(super) arrived: AtomicU64,
        /// Review of cee6fee: how many of the next journal fsyncs fail (injected).
        pub(super) failing: AtomicU64,
        /// Review of cee6fee, F6: how many of the next journal fsyncs panic (injected).
        pub(super) panicking: AtomicU64,
    }

    impl Gate {
        pub(super) fn pass(&self) {
            self.arrived.fetch_add(1, Ordering::SeqCst);
            let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
            while *closed {
                closed = self
                    .opened
                    .wait(closed)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }

        /// Review of cee6fee: an injected fsync failure, or panic, if one is due.
        pub(super) fn injected(&self) -> io::Result<()> {
            if self
                .panicking
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("injected journal fsync panic");
            }
            match self
                .failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            {
                Ok(_) => Err(io::Error::other("injected journal fsync failure")),
                Err(_) => Ok(()),
            }
        }

        fn set(&self, closed: bool) {
            *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = closed;
            self.opened.notify_all();
        }
    }

    /// Polls `done` until it holds, for at most 20 s (a liveness bound, not a timing).
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    /// Writers waiting for their journal fsync hold no thread (issue 17, the soak's thread and
    /// RSS drift: each used to wait in a thread of its own, so the threads grew with the
    /// writers one slow fsync kept waiting, and a bounded set could not even append meanwhile).
    /// With the first fsync held back on one of the store's I/O threads, twenty more audit
    /// writes all append on the others; none is acknowledged before its fsync; once the fsync
    /// is let go, one more fsync covers all twenty, and every write reads back after a reopen.
    #[test]
    fn writers_waiting_for_an_fsync_hold_no_thread() {
        use crate::memory_kv::Bound;
        use vultrino_core::ports::{KvStore as _, ManualClock, PutOptions};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000_000));
            let bound = PrefixBound::single(Bound {
                keys: 1000,
                bytes: usize::MAX,
            });
            let open = || {
                FileKv::open_with_prefix_cap(dir.path(), clock.clone(), "audit:", bound)
                    .expect("open")
            };
            let store = Arc::new(open());
            let journal = store.inner.journal.clone().expect("journal");
            // Opened again however the test ends: the runtime's drop waits for the held fsync.
            struct Opens(Arc<Journal>);
            impl Drop for Opens {
                fn drop(&mut self) {
                    self.0.gate.set(false);
                }
            }
            let _opens = Opens(journal.clone());
            journal.gate.set(true);
            // 21 keys on distinct stripes (two writes sharing one are ordered, by design).
            let mut keys: Vec<String> = Vec::new();
            let mut taken = std::collections::HashSet::new();
            for n in 0.. {
                let key = format!("audit:{n:04}");
                if taken.insert(journal_stripe(&key_hash(&key))) {
                    keys.push(key);
                }
                if keys.len() == 21 {
                    break;
                }
            }
            let put = |i: usize| {
                let store = store.clone();
                let key = keys[i].clone();
                tokio::spawn(async move {
                    store
                        .put(
                            &key,
                            Bytes::from(format!("event {i}")),
                            PutOptions::default(),
                        )
                        .await
                })
            };
            let first = put(0);
            eventually("the first fsync is running", || {
                journal.gate.arrived.load(Ordering::SeqCst) == 1
            })
            .await;
            let rest: Vec<_> = (1..=20).map(put).collect();
            eventually("twenty writers appended while an fsync was held", || {
                journal.lock().asked == 21
            })
            .await;
            assert!(!first.is_finished(), "acknowledged before its fsync");
            assert!(rest.iter().all(|w| !w.is_finished()));
            journal.gate.set(false);
            first.await.expect("task").expect("first write");
            for w in rest {
                w.await.expect("task").expect("write");
            }
            assert_eq!(
                journal.gate.arrived.load(Ordering::SeqCst),
                2,
                "one fsync for the first write, one for the twenty"
            );
            drop(_opens);
            drop(journal);
            drop(store);
            let store = open();
            for (i, key) in keys.iter().enumerate() {
                assert_eq!(
                    store.get(key).await.expect("get"),
                    Some(Bytes::from(format!("event {i}")))
                );
            }
        });
    }

    // ---- Review of cee6fee (2026-12-07): a test per finding. ----

    /// An audit store with a journal, for the tests of the reviews of cee6fee (the directory lives as long as the
    /// returned guard).
    fn journal_store() -> (tempfile::TempDir, Arc<FileKv>, Arc<Journal>) {
        use crate::memory_kv::Bound;
        use vultrino_core::ports::ManualClock;
        let dir = tempfile::tempdir().expect("temp dir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000_000));
        let bound = PrefixBound::single(Bound {
            keys: 1000,
            bytes: usize::MAX,
        });
        let store = Arc::new(
            FileKv::open_with_prefix_cap(dir.path(), clock, "audit:", bound).expect("open"),
        );
        let journal = store.inner.journal.clone().expect("journal");
        (dir, store, journal)
    }

    /// `n` audit keys on distinct journal stripes.
    fn keys_on_distinct_stripes(n: usize) -> Vec<String> {
        let mut keys = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for i in 0.. {
            let key = format!("audit:{i:04}");
            if taken.insert(journal_stripe(&key_hash(&key))) {
                keys.push(key);
            }
            if keys.len() == n {
                break;
            }
        }
        keys
    }

    fn spawn_put(
        store: &Arc<FileKv>,
        key: &str,
        value: Bytes,
    ) -> tokio::task::JoinHandle<Result<()>> {
        use vultrino_core::ports::KvStore as _;
        let store = store.clone();
        let key = key.to_string();
        tokio::spawn(async move { store.put(&key, value, PutOptions::default()).await })
    }

    /// A journaled store whose first audit write (`a`, of `keys[0]`) waits at its fsync, held
    /// by the gate; `keys` are `n` keys on distinct stripes.
    async fn first_write_held_at_its_fsync(
        n: usize,
    ) -> (
        tempfile::TempDir,
        Arc<FileKv>,
        Arc<Journal>,
        Vec<String>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (dir, store, journal) = journal_store();
        let keys = keys_on_distinct_stripes(n);
        journal.gate.set(true);
        let a = spawn_put(&store, &keys[0], Bytes::from_static(b"a"));
        eventually("A's fsync is held", || {
            journal.gate.arrived.load(Ordering::SeqCst) == 1
        })
        .await;
        (dir, store, journal, keys, a)
    }

    /// Opens both gates however the test ends (the runtime's drop would wait for a held job).
    struct GatesOpenOnDrop(Arc<Journal>);
    impl Drop for GatesOpenOnDrop {
        fn drop(&mut self) {
            self.0.gate.set(false);
            self.0.settle_gate.set(false);
        }
    }

    /// Review of cee6fee, F1. A failed journal fsync fails only the tickets it was *started* for; a record
    /// appended to the same segment while it ran (its pages were part of that failed
    /// writeback) waits, then starts another fsync of the same, broken segment — which returns
    /// Ok (Linux reports a writeback error once per file description, and may have dropped
    /// the dirty pages) — and is acknowledged. Decision 0114: a failed fsync says nothing
    /// good about the segment any more; its unsynced records must fail.
    #[tokio::test]
    async fn a_record_appended_while_an_fsync_fails_is_never_acknowledged() {
        let (_dir, store, journal, keys, a) = first_write_held_at_its_fsync(2).await;
        let _opens = GatesOpenOnDrop(journal.clone());
        // B is appended to the segment before the fsync runs (so its bytes are in that
        // fsync's writeback), after it was started (so not in its `covers`).
        let b = spawn_put(&store, &keys[1], Bytes::from_static(b"b"));
        eventually("B appended", || journal.lock().asked == 2).await;
        journal.gate.failing.store(1, Ordering::SeqCst);
        journal.gate.set(false);
        assert!(a.await.expect("task").is_err(), "A's fsync failed");
        let b = b.await.expect("task");
        assert!(
            b.is_err(),
            "B was appended to a segment whose fsync then failed, and was acknowledged by a \
             second fsync of that broken segment"
        );
    }

    /// Review of cee6fee, F2. A segment roll (4 MiB) fsyncs the old segment itself while a
    /// group fsync of the same file may be under way. If the group fsync gets the writeback
    /// error and the roll's fsync then returns Ok (the error is reported to one fsync of a
    /// file only) and settles first, the group fsync's failure must still fail its writers.
    /// (Now the roll's fsync waits for the group fsync's settlement; C's roll is started
    /// while A's failed fsync is held before its settlement, and may reach its own fsync.)
    #[tokio::test]
    async fn a_failed_group_fsync_is_not_covered_by_a_roll_fsync_of_the_same_file() {
        let (_dir, store, journal) = journal_store();
        let _opens = GatesOpenOnDrop(journal.clone());
        let keys = keys_on_distinct_stripes(3);
        // A's fsync fails, and its outcome is held until the roll is done.
        journal.gate.failing.store(1, Ordering::SeqCst);
        journal.settle_gate.set(true);
        let a = spawn_put(&store, &keys[0], Bytes::from_static(b"a"));
        eventually("A's fsync failed, outcome held", || {
            journal.settle_gate.arrived.load(Ordering::SeqCst) == 1
        })
        .await;
        // B fills the segment; C's append rolls it (and fsyncs it, successfully).
        let b = spawn_put(&store, &keys[1], Bytes::from(vec![b'b'; 4 << 20]));
        eventually("B appended", || journal.lock().asked == 2).await;
        let c = spawn_put(&store, &keys[2], Bytes::from_static(b"c"));
        // Time for C's append to start its roll (not a measurement: A must fail whether or
        // not it got there).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        journal.settle_gate.set(false);
        let (a, b, c) = tokio::join!(a, b, c);
        let _ = (b, c);
        assert!(
            a.expect("task").is_err(),
            "A's only fsync failed, yet A was acknowledged (the roll's later fsync of the same \
             file descriptor returned Ok)"
        );
    }

    /// Review of cee6fee, F3: an append holds the journal's append lock across its I/O (a
    /// roll's fsync of the old segment and creation of the new one with its directory fsync,
    /// the write of a record of up to 25 MiB). Writers woken meanwhile — their fsync settled —
    /// and new writers must not block their runtime's thread on it: `vultrino serve` runs one
    /// current-thread runtime per core, and every connection on it would stall for the disk.
    /// Simulated: the append lock held 600 ms while a waiting writer's fsync settles and
    /// another writer starts.
    #[tokio::test]
    async fn a_slow_append_never_blocks_a_writers_runtime() {
        let (_dir, store, journal, keys, a) = first_write_held_at_its_fsync(2).await;
        let _opens = GatesOpenOnDrop(journal.clone());
        // Let A reach its `notified().await`.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut worst = std::time::Duration::ZERO;
                let mut last = std::time::Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    worst = worst.max(last.elapsed());
                    last = std::time::Instant::now();
                }
                worst
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn({
            let journal = journal.clone();
            move || {
                let ap = journal
                    .appending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let _ = held_tx.send(());
                std::thread::sleep(std::time::Duration::from_millis(600));
                drop(ap);
            }
        });
        held_rx.recv().expect("append lock held");
        // A's fsync settles (A is woken, publishes, lands), and B starts, while it is held.
        journal.gate.set(false);
        let b = spawn_put(&store, &keys[1], Bytes::from_static(b"b"));
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        holder.join().expect("holder");
        stop.store(true, Ordering::SeqCst);
        let worst = ticker.await.expect("ticker");
        a.await.expect("task").expect("A");
        b.await.expect("task").expect("B");
        assert!(
            worst < std::time::Duration::from_millis(300),
            "the runtime thread was blocked {worst:?} by an append in progress"
        );
    }

    /// Review of cee6fee, F4: the journal's appends and fsyncs never queue behind the rest of
    /// the store's I/O (record-file writes each holding a thread across a file fsync and a
    /// directory fsync, reads of audit values): with every one of the store's other I/O
    /// threads held by a slow job, an audit write still completes.
    #[tokio::test]
    async fn an_audit_write_never_queues_behind_the_stores_other_io() {
        let (_dir, store, journal) = journal_store();
        let _opens = GatesOpenOnDrop(journal.clone());
        let keys = keys_on_distinct_stripes(1);
        // Four slow jobs (stand-ins for four credential writes on a slow disk).
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let started = Arc::new(AtomicU64::new(0));
        for _ in 0..IO_THREADS {
            let held = held.clone();
            let started = started.clone();
            store.inner.io.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .recv_timeout(std::time::Duration::from_secs(10));
            });
        }
        eventually("four slow jobs running", || {
            started.load(Ordering::SeqCst) == IO_THREADS as u64
        })
        .await;
        let a = spawn_put(&store, &keys[0], Bytes::from_static(b"a"));
        let done = tokio::time::timeout(std::time::Duration::from_secs(3), a).await;
        for _ in 0..IO_THREADS {
            let _ = release.send(());
        }
        assert!(
            done.is_ok(),
            "an audit write waited > 3 s behind four slow I/O jobs"
        );
    }

    /// Review of cee6fee, F6 and R4: an fsync job that panics (a bug, a tracing layer) never
    /// leaves the journal marked as syncing for good — its writer (and every later one) would
    /// wait forever, with no error — and never lets a retry acknowledge what it may have
    /// lost: its writer is told the write failed; the next writers start a new segment and
    /// succeed.
    #[tokio::test]
    async fn a_panicking_fsync_job_fails_its_writers_and_the_journal_goes_on() {
        let (_dir, store, journal) = journal_store();
        journal.gate.panicking.store(1, Ordering::SeqCst);
        let keys = keys_on_distinct_stripes(2);
        let a = spawn_put(&store, &keys[0], Bytes::from_static(b"a"));
        let done = tokio::time::timeout(std::time::Duration::from_secs(20), a).await;
        assert_eq!(
            journal.gate.panicking.load(Ordering::SeqCst),
            0,
            "the panic ran"
        );
        let a = done.expect("the writer was answered").expect("task");
        assert_eq!(
            a.expect_err("not acknowledged: the fsync's outcome is unknown")
                .code(),
            Code::StoreIo
        );
        spawn_put(&store, &keys[1], Bytes::from_static(b"b"))
            .await
            .expect("task")
            .expect("later writers succeed");
    }

    /// Second review of cee6fee, R1: every job that writes into the data directory holds the
    /// store (`Arc<Inner>`, hence its directory lock) until it has run. A journaled write whose task is dropped (its runtime shut
    /// down: a CLI, an embedder, `serve` at exit) while its append waits for the append lock
    /// (a roll's two fsyncs, a large record) leaves the job queued with the lock released:
    /// the directory can be opened again in the process while the old journal still creates
    /// segments and appends records in it (here: the same generation as the new store's first
    /// segment, whose creation then fails).
    #[test]
    fn a_pending_journal_append_keeps_the_directory_locked() {
        use crate::memory_kv::Bound;
        use vultrino_core::ports::{KvStore as _, ManualClock};
        let dir = tempfile::tempdir().expect("temp dir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000_000));
        let bound = PrefixBound::single(Bound {
            keys: 1000,
            bytes: usize::MAX,
        });
        let open = || FileKv::open_with_prefix_cap(dir.path(), clock.clone(), "audit:", bound);
        let store = Arc::new(open().expect("open"));
        let journal = store.inner.journal.clone().expect("journal");
        // A slow append (a roll) holds the append lock.
        let held = journal
            .appending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let writer = store.clone();
            tokio::spawn(async move {
                writer
                    .put(
                        "audit:0001",
                        Bytes::from_static(b"a"),
                        PutOptions::default(),
                    )
                    .await
            });
            // The append job is queued or on a journal thread, waiting for the lock: the
            // write's task has handed it its own reference to the store (the store's, the
            // task's and the job's).
            eventually("the append job is pending", || {
                Arc::strong_count(&store.inner) >= 3
            })
            .await;
        });
        drop(rt);
        drop(store);
        let locked = FileKv::is_locked(dir.path());
        let reopened = open();
        drop(held);
        if let Ok(again) = &reopened {
            // What follows: the old journal creates segment 1 and appends to it; the new
            // store's first audit write then finds its first segment taken.
            for _ in 0..200 {
                if dir.path().join(segment_name(1)).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let put = rt.block_on(again.put(
                "audit:0002",
                Bytes::from_static(b"b"),
                PutOptions::default(),
            ));
            eprintln!("R1: the reopened store's first audit write: {put:?}");
        }
        assert!(
            locked && reopened.is_err(),
            "the directory was unlocked (and opened again) while an append job of the \
             dropped store was still to write into it"
        );
    }

    fn entry() -> Entry {
        Entry::new(
            Bytes::from_static(b"\x00value\xff"),
            Some(serde_json::json!({"a": [1, "é"]})),
            Some(1_700_000_060_000),
        )
    }

    /// A journal record of a key outside the journaled prefix (written by hand into the data
    /// directory) neither deletes nor replaces a credential, key or role; a segment name out
    /// of range refuses the open instead of wrapping the generations (review of 2026-12-06,
    /// audit L3).
    #[tokio::test]
    async fn a_crafted_journal_record_cannot_touch_a_record_outside_the_audit_prefix() {
        use crate::memory_kv::Bound;
        use vultrino_core::ports::{KvStore as _, ManualClock, PutOptions};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000_000));
        let bound = || {
            PrefixBound::single(Bound {
                keys: 1000,
                bytes: usize::MAX,
            })
        };
        let open = || FileKv::open_with_prefix_cap(&path, clock.clone(), "audit:", bound());
        let store = open().expect("open");
        store
            .put(
                "key:k1",
                Bytes::from_static(b"record"),
                PutOptions::default(),
            )
            .await
            .expect("put");
        drop(store);
        let mut segment = Vec::new();
        for record in [
            encode_tombstone("key:k1").expect("tombstone"),
            encode(
                "role:forged",
                &Entry::new(Bytes::from_static(b"x"), None, None),
            )
            .expect("record"),
        ] {
            segment.extend_from_slice(&u32::try_from(record.len()).expect("len").to_le_bytes());
            segment.extend_from_slice(&record);
        }
        fs::write(path.join(segment_name(7)), &segment).expect("write segment");
        let store = open().expect("reopen");
        assert_eq!(
            store.get("key:k1").await.expect("get").as_deref(),
            Some(&b"record"[..])
        );
        assert!(store.get("role:forged").await.expect("get").is_none());
        drop(store);
        fs::write(path.join(segment_name(u64::MAX)), b"").expect("write segment");
        let refused = open().expect_err("refused");
        assert_eq!(refused.code(), Code::StoreIo);
    }

    /// A record whose fsync failed is never acknowledged, even after a later fsync of a new
    /// segment moved the durable mark past its ticket (review of 2026-12-06, audit M2): writer
    /// 1 appended, writer 2's fsync covering it failed, writer 3's fsync on the next segment
    /// succeeded — writer 1 is told its write failed.
    #[test]
    fn a_failed_fsync_is_never_covered_by_a_later_one() {
        let journal = Journal::new(0, Vec::new(), IoPool::new(1).expect("pool"));
        let mut st = journal.lock();
        st.asked = 2;
        let synced = st.synced;
        st.fail(synced, 2);
        st.asked = 3;
        st.synced = 3;
        assert!(matches!(st.settled(1), Some(Err(_))));
        assert!(matches!(st.settled(2), Some(Err(_))));
        assert!(matches!(st.settled(3), Some(Ok(()))));
        assert!(st.settled(4).is_none(), "not yet known");
        // Many failures: the ranges stay bounded, and no failed ticket becomes durable.
        for n in 0..200u64 {
            let base = 10 + n * 10;
            st.fail(base, base + 5);
        }
        assert!(st.failed.0.len() <= MAX_FAILED_RANGES);
        st.synced = 10_000;
        for n in 0..200u64 {
            let base = 10 + n * 10;
            assert!(matches!(st.settled(base + 3), Some(Err(_))), "{base}");
        }
        // (Merging the oldest ranges may report ticket 3, durable, as failed: the safe side.)
    }

    /// A delete whose directory fsync failed (503, the file already unlinked) is acknowledged
    /// only once an fsync after it succeeds: its retry finds no file but still syncs the
    /// directory (review of 2026-12-07, finding 1: the retry used to be acknowledged with no
    /// fsync at all, so a revoked key's record could come back after a crash).
    #[tokio::test]
    async fn a_retried_delete_is_acknowledged_only_after_a_directory_fsync() {
        use vultrino_core::ports::{KvStore as _, ManualClock, PutOptions};
        let dir = tempfile::tempdir().expect("temp dir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_800_000_000_000));
        let store = FileKv::open(dir.path(), clock).expect("open");
        store
            .put(
                "key:k1",
                Bytes::from_static(b"record"),
                PutOptions::default(),
            )
            .await
            .expect("put");
        store.inner.failing_dir_syncs.store(2, Ordering::SeqCst);
        let first = store.delete("key:k1").await.expect_err("the fsync failed");
        assert_eq!(first.code(), Code::StoreIo);
        let retry = store.delete("key:k1").await;
        assert!(
            retry.is_err(),
            "the retry ran a directory fsync of its own (which failed too)"
        );
        store
            .delete("key:k1")
            .await
            .expect("a retry after the fault is acknowledged");
        assert_eq!(store.inner.failing_dir_syncs.load(Ordering::SeqCst), 0);
        assert!(store.get("key:k1").await.expect("get").is_none());
        // A delete of a key that is not there is acknowledged without an fsync.
        store.inner.failing_dir_syncs.store(1, Ordering::SeqCst);
        store.delete("key:never").await.expect("nothing to delete");
    }

    /// A directory fsync that fails fails every writer it covered, not only the one that ran
    /// it, and a later fsync that succeeds acknowledges none of them (decision 0114): writer 1's
    /// fsync runs (and succeeds) while writers 2 and 3 ask; the next fsync, covering both,
    /// fails — writers 2 and 3 are both told their write failed (before the fix, the one that
    /// had not run it ran a third fsync, which succeeded, and was acknowledged), and a writer
    /// asking after the failure (a retry) is acknowledged by its own fsync.
    #[test]
    fn a_failed_directory_fsync_fails_every_writer_it_covered() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::mpsc;
        let sync = Arc::new(DirSync::default());
        // The injected fsync: the first blocks until released (and succeeds), the second
        // fails, every later one succeeds (a later success proves nothing about what the
        // failed one covered).
        let runs = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let fsync = {
            let runs = runs.clone();
            move || -> io::Result<()> {
                match runs.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        started_tx.send(()).expect("test alive");
                        release_rx
                            .lock()
                            .expect("release lock")
                            .recv()
                            .expect("released");
                        Ok(())
                    }
                    1 => Err(io::Error::other("injected directory fsync failure")),
                    _ => Ok(()),
                }
            }
        };
        let writer = |sync: Arc<DirSync>, fsync: _| std::thread::spawn(move || sync.sync(fsync));
        let first = writer(sync.clone(), fsync.clone());
        started_rx.recv().expect("the first fsync started");
        let second = writer(sync.clone(), fsync.clone());
        let third = writer(sync.clone(), fsync.clone());
        // Both waiters have their tickets (taken while the first fsync runs) before it ends.
        while sync.state.lock().expect("state").asked < 3 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        release_tx.send(()).expect("release");
        assert!(first.join().expect("writer 1").is_ok());
        assert!(second.join().expect("writer 2").is_err(), "writer 2");
        assert!(third.join().expect("writer 3").is_err(), "writer 3");
        // A retry (a new rename, a new ticket) is acknowledged by an fsync that succeeds, and
        // that success does not acknowledge the failed tickets.
        assert!(sync.sync(fsync).is_ok(), "a later writer");
        let st = sync.state.lock().expect("state");
        assert!(st.synced >= 4 && st.failed.contains(2) && st.failed.contains(3));
        assert!(!st.failed.contains(1) && !st.failed.contains(4));
    }

    #[test]
    fn encoded_entries_decode_to_themselves() {
        let bytes = encode("cred:github", &entry()).ok();
        let decoded = bytes.as_deref().map(decode);
        assert_eq!(decoded, Some(Ok(("cred:github".to_string(), entry()))));
    }

    #[test]
    fn any_flipped_byte_or_truncation_is_detected() {
        let bytes = encode("k", &entry()).unwrap_or_default();
        assert!(!bytes.is_empty());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flipped byte {i} not detected");
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncation to {len} not detected"
            );
        }
    }
}
