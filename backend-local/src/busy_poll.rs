//! Busy polling: a worker thread that has just seen request activity keeps polling its sockets
//! for a short window instead of going to sleep at once.
//!
//! Why: an idle thread sleeps in `epoll_wait`, and once nothing else runs on its CPU the CPU
//! halts. The next packet must then wake it — on a virtual machine an inter-processor interrupt
//! and a VM exit, the hypervisor scheduling the virtual CPU back in, cold caches — and a proxied
//! request pays that twice: for the upstream's answer and for the client's next request. On the
//! development VM (a KVM guest whose kernel does not poll before halting) this, not Vultrino's own
//! work, was most of the latency added at one connection. The decision, the window and the
//! alternatives: docs/decisions/0035-busy-polling.md; the measurements: benches/README.md, "Where
//! the added latency went, and busy polling".
//!
//! How: each worker runtime runs one poller task. A request starting or ending on the thread
//! ([`request`] and its guard) arms it; while the last of those is less than the window old and
//! at most one request is in progress on the thread, the poller yields to the runtime in a
//! loop, which makes the runtime check its sockets without blocking and run whatever became
//! ready. Each round it also yields the CPU to the operating
//! system, so that another runnable thread queued on the same CPU goes first. Threads queued on
//! other CPUs do not benefit, and on a VM whose vCPUs share host cores the spinning vCPU still
//! uses host CPU. After the window the thread sleeps as usual; an idle server does not spin at
//! all. With several requests in progress the thread does not spin either: its
//! next event is near and its CPU busy, so there is no halted CPU to avoid, only CPU to take from
//! other work (spinning regardless of load cost throughput at 16 connections; with this limit it
//! made no difference there, see the record).
//!
//! Cost: at most about two windows of CPU per request (one after it starts, one after it ends),
//! only when the thread has nothing else to do — and partly paid back, since a wake-up from a
//! halted vCPU costs CPU too (sparse requests measured no difference in server CPU per request).
//! `--busy-poll-us 0` turns it off; the default window is half of the one Linux's own guest
//! halt-polling (`haltpoll`) uses by default for the same trade-off.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The default window, in microseconds: long enough to cover a same-host round trip on a
/// virtual machine, short enough to cost little (docs/decisions/0035-busy-polling.md; the round
/// trip and the other windows tried are measured in benches/README.md).
pub const DEFAULT_WINDOW_US: u64 = 100;

/// The poller spins only while at most this many requests are in progress on its thread. With
/// more, the thread's next event is near and its CPU busy anyway, so spinning would only take CPU
/// from other work (docs/decisions/0035-busy-polling.md).
const MAX_IN_FLIGHT: u32 = 1;

struct State {
    enabled: Cell<bool>,
    last: Cell<Instant>,
    /// Requests in progress on this thread.
    in_flight: Cell<u32>,
    wake: Arc<Notify>,
    /// Poller rounds so far (tests only).
    #[cfg(test)]
    rounds: Cell<u64>,
}

thread_local! {
    static STATE: State = State {
        enabled: Cell::new(false),
        last: Cell::new(Instant::now()),
        in_flight: Cell::new(0),
        wake: Arc::new(Notify::new()),
        #[cfg(test)]
        rounds: Cell::new(0),
    };
}

/// A request in progress on this thread; see [`request`].
#[must_use = "the request counts as in progress until this guard is dropped"]
pub struct RequestGuard {
    counted: bool,
}

/// Record that a request starts on this thread; dropping the guard records that it ended (also
/// when the request future is dropped early, e.g. because the client went away). Both arm the
/// poller, if this thread runs one; otherwise this does nothing (one thread-local read).
pub fn request() -> RequestGuard {
    let counted = STATE.with(|s| {
        if !s.enabled.get() {
            return false;
        }
        s.in_flight.set(s.in_flight.get().saturating_add(1));
        s.arm();
        true
    });
    RequestGuard { counted }
}

impl State {
    /// Restart the window from now and wake the poller.
    fn arm(&self) {
        self.last.set(Instant::now());
        self.wake.notify_one();
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.counted {
            STATE.with(|s| {
                s.in_flight.set(s.in_flight.get().saturating_sub(1));
                s.arm();
            });
        }
    }
}

/// Start this thread's poller on the current single-threaded runtime. A zero `window`, or a
/// multi-threaded runtime (whose tasks move between threads, so the thread-local bookkeeping
/// would not describe them), starts nothing. Call once per worker thread, inside its runtime.
pub fn start(window: Duration) {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if window.is_zero() || flavor != tokio::runtime::RuntimeFlavor::CurrentThread {
        return;
    }
    let wake = STATE.with(|s| {
        s.enabled.set(true);
        s.wake.clone()
    });

    tokio::spawn(async move {
        loop {
            wake.notified().await;
            while STATE
                .with(|s| s.in_flight.get() <= MAX_IN_FLIGHT && s.last.get().elapsed() < window)
            {
                #[cfg(test)]
                STATE.with(|s| s.rounds.set(s.rounds.get() + 1));
                // Let any other runnable thread on this CPU go first.
                std::thread::yield_now();
                // Back to the runtime: with only this task ready, it polls its sockets without
                // blocking and runs whatever became ready before resuming this loop. This is how
                // tokio's current-thread scheduler treats a yielded task (`park_yield`, checked
                // in tokio 1.54) rather than a documented promise, so a test below checks it:
                // a socket event inside the window is handled without the thread parking.
                tokio::task::yield_now().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A thread without a poller records nothing: the guard on the hot path of a server that
    /// was not started with busy polling (`serve`, `--busy-poll-us 0`) stays a no-op.
    #[test]
    fn requests_without_a_poller_record_nothing() {
        let before = STATE.with(|s| s.last.get());
        let guard = request();
        assert_eq!(STATE.with(|s| s.in_flight.get()), 0);
        drop(guard);
        assert_eq!(STATE.with(|s| s.last.get()), before);
        assert!(!STATE.with(|s| s.enabled.get()));
    }

    /// The poller runs after activity and stops once the window has passed: an idle worker
    /// sleeps instead of spinning. Counted in poller rounds, not in time, so that a loaded
    /// machine cannot change the outcome.
    #[test]
    fn the_poller_runs_after_activity_and_stops_after_the_window() {
        on_a_worker_with_a_50ms_window(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(rounds(), 0, "the poller ran without any activity");
            let guard = request();
            // The timer can only fire after the runtime went through the poller at least once.
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(rounds() > 0, "the poller did not run after activity");
            // Past the window: the poller's next check ends its loop, and nothing re-arms it.
            tokio::time::sleep(Duration::from_millis(60)).await;
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            let settled = rounds();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                rounds(),
                settled,
                "the poller kept running after the window"
            );
            // The request ending (here: its future dropped) arms it again.
            drop(guard);
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(
                rounds() > settled,
                "the end of a request did not re-arm the poller"
            );
        });
    }

    /// With two requests in progress the thread is busy: the poller does not spin until one of
    /// them ends.
    #[test]
    fn the_poller_does_not_spin_while_several_requests_are_in_progress() {
        on_a_worker_with_a_50ms_window(async {
            let first = request();
            let second = request();
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(rounds(), 0, "the poller spun with two requests in progress");
            drop(second);
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(
                rounds() > 0,
                "the poller did not spin with one request in progress"
            );
            drop(first);
        });
    }

    /// What the poller is for: a socket event arriving inside the window is handled without the
    /// thread parking (sleeping in the kernel). The next test is the control: without a poller
    /// the same read parks.
    #[test]
    fn a_socket_event_inside_the_window_is_handled_without_parking() {
        let (parks, rt) = runtime_counting_parks(|| {});
        rt.block_on(async {
            // A long window: a slow machine cannot make it lapse before the byte arrives.
            start(Duration::from_secs(10));
            let (mut ours, mut theirs) = socket_pair();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                std::io::Write::write_all(&mut theirs, b"x").unwrap();
            });
            let _request = request();
            let before = parks.load(Ordering::SeqCst);
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut ours, &mut byte)
                .await
                .unwrap();
            assert_eq!(parks.load(Ordering::SeqCst), before, "the thread parked");
            writer.join().unwrap();
        });
    }

    #[test]
    fn without_a_poller_the_same_read_parks() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let tx = std::sync::Mutex::new(tx);
        // The byte is written only once the thread has started to park, so it must park.
        let (parks, rt) = runtime_counting_parks(move || {
            let _ = tx.lock().unwrap().send(());
        });
        rt.block_on(async {
            let (mut ours, mut theirs) = socket_pair();
            let writer = std::thread::spawn(move || {
                rx.recv().unwrap();
                std::io::Write::write_all(&mut theirs, b"x").unwrap();
            });
            let _request = request();
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut ours, &mut byte)
                .await
                .unwrap();
            assert!(parks.load(Ordering::SeqCst) > 0, "the thread never parked");
            writer.join().unwrap();
        });
    }

    /// A current-thread runtime that counts its parks and calls `on_park` at each.
    fn runtime_counting_parks(
        on_park: impl Fn() + Send + Sync + 'static,
    ) -> (Arc<AtomicUsize>, tokio::runtime::Runtime) {
        let parks = Arc::new(AtomicUsize::new(0));
        let counter = parks.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                on_park();
            })
            .build()
            .expect("a runtime");
        (parks, rt)
    }

    /// A connected pair of Unix sockets (no network): ours on the runtime, theirs blocking.
    fn socket_pair() -> (tokio::net::UnixStream, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (tokio::net::UnixStream::from_std(ours).unwrap(), theirs)
    }

    /// Run `test` on a single-threaded runtime whose thread runs a poller with a 50 ms window.
    fn on_a_worker_with_a_50ms_window(test: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            start(Duration::from_millis(50));
            test.await;
        });
    }

    fn rounds() -> u64 {
        STATE.with(|s| s.rounds.get())
    }
}
