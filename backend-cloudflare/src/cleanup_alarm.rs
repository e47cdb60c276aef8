//! When a session object ([`SessionDO`](crate::sessions)) sets its cleanup alarm and what the
//! alarm does when it fires: pure decisions, so that they are tested natively (the object's
//! storage and alarm exist only in workerd). An object holds one item; its storage may be
//! emptied a grace period after the item is dead, and the alarm is what empties it.

/// Dead items are deleted this long after they died (by the real clock).
pub(crate) const GRACE_MS: u64 = 24 * 3600 * 1000;

/// When to set the alarm on writing an item whose storage may go at `cleanup_at`, given the
/// one this instance set (`alarm_at`, if any) and the time `now`; `None`: no new alarm.
///
/// - An alarm of this instance still to come, no later than needed, covers the write: it finds
///   the item alive and sets itself again ([`after_alarm`]).
/// - A `cleanup_at` already passed (the item's times come from the caller's clock, the alarm's
///   from the object's: a caller more than the grace period behind) still gets an alarm, since
///   nothing else may ever come to reclaim the item — one a grace period from now, not at
///   once, so an item the caller still uses (a counter, a single-use marker) is not emptied
///   the moment it is written (review of perf13b, I1).
///   That alarm replaces any pending one: an earlier one would find the cleanup time passed
///   and empty the item within the grace period.
pub(crate) fn alarm_for(alarm_at: Option<u64>, now: u64, cleanup_at: u64) -> Option<u64> {
    if cleanup_at <= now {
        return Some(now.saturating_add(GRACE_MS));
    }
    let pending = alarm_at.is_some_and(|at| at > now && at <= cleanup_at);
    (!pending).then_some(cleanup_at)
}

/// What a firing alarm does with the item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterAlarm {
    /// Still to be kept: the alarm is set again for this time.
    Rearm(u64),
    /// No item, or dead for the grace period: storage is emptied.
    Delete,
}

/// The alarm's decision at `now` for an item that may go at `cleanup_at` (`None`: no item).
pub(crate) fn after_alarm(cleanup_at: Option<u64>, now: u64) -> AfterAlarm {
    match cleanup_at {
        Some(at) if at > now => AfterAlarm::Rearm(at),
        _ => AfterAlarm::Delete,
    }
}

#[cfg(test)]
mod alarm_tests {
    use super::{after_alarm, alarm_for, AfterAlarm, GRACE_MS};

    /// One object as the runtime runs it: its stored item (the item's cleanup time), the one
    /// alarm storage holds (`setAlarm` replaces it), what the live instance remembers setting
    /// (lost when the runtime evicts the instance), and when the item was last written and
    /// emptied. Every step checks that an item is never emptied before its cleanup time, nor
    /// within a grace period of a write whose cleanup time had passed.
    #[derive(Default)]
    struct Object {
        stored: Option<u64>,
        alarm: Option<u64>,
        alarm_at: Option<u64>,
        written_at: u64,
        deleted_at: Option<u64>,
    }

    impl Object {
        /// The runtime fires every alarm due by `until`, in order.
        fn fire(&mut self, until: u64) {
            while let Some(at) = self.alarm.filter(|&at| at <= until) {
                self.alarm = None;
                self.alarm_at = None;
                match after_alarm(self.stored, at) {
                    AfterAlarm::Rearm(next) => {
                        assert!(next > at, "an alarm set again fires later");
                        self.alarm = Some(next);
                        self.alarm_at = Some(next);
                    }
                    AfterAlarm::Delete => {
                        if let Some(c) = self.stored {
                            let w = self.written_at;
                            assert!(c <= at, "emptied at {at}, before its cleanup time {c}");
                            assert!(
                                c > w || at >= w + GRACE_MS,
                                "written at {w} with its cleanup time {c} passed, emptied at \
                                 {at}, within the grace period"
                            );
                            self.deleted_at = Some(at);
                        }
                        self.stored = None;
                    }
                }
            }
        }

        /// The item written at `now`; afterwards an alarm is coming by the time it may go.
        fn write(&mut self, now: u64, cleanup_at: u64) {
            self.fire(now);
            self.stored = Some(cleanup_at);
            self.written_at = now;
            self.deleted_at = None;
            if let Some(at) = alarm_for(self.alarm_at, now, cleanup_at) {
                assert!(at > now, "an alarm set on a write is still to come");
                self.alarm = Some(at);
                self.alarm_at = Some(at);
            }
            let keep_until = if cleanup_at > now {
                cleanup_at
            } else {
                now + GRACE_MS
            };
            assert!(
                self.alarm.is_some_and(|a| a > now && a <= keep_until),
                "item kept until {keep_until} written at {now}: alarm {:?}",
                self.alarm
            );
        }
    }

    /// The writes `(time, cleanup time, instance evicted before it)` in order, then time runs
    /// on; returns when the last item's storage was emptied (it always is).
    fn run(writes: &[(u64, u64, bool)]) -> Option<u64> {
        let mut object = Object::default();
        for &(now, cleanup_at, evicted) in writes {
            if evicted {
                // A new instance: storage (the item, the alarm) stays, the memory goes.
                object.alarm_at = None;
            }
            object.write(now, cleanup_at);
        }
        object.fire(u64::MAX);
        assert_eq!(object.stored, None, "an item is reclaimed in the end");
        object.deleted_at
    }

    #[test]
    fn a_write_sets_an_alarm_only_when_none_of_this_instance_comes_early_enough() {
        assert_eq!(alarm_for(None, 10, 100), Some(100));
        assert_eq!(
            alarm_for(Some(50), 10, 100),
            None,
            "pending and early enough"
        );
        assert_eq!(
            alarm_for(Some(100), 10, 100),
            None,
            "pending, at the cleanup time"
        );
        assert_eq!(
            alarm_for(Some(150), 10, 100),
            Some(100),
            "pending but too late"
        );
        assert_eq!(
            alarm_for(Some(10), 10, 100),
            Some(100),
            "due: it may have fired"
        );
        assert_eq!(alarm_for(Some(5), 10, 100), Some(100), "past");
        // A cleanup time already passed: reclaimed a grace period from now, not at once.
        assert_eq!(alarm_for(None, 100, 100), Some(100 + GRACE_MS));
        assert_eq!(alarm_for(Some(100), 150, 100), Some(150 + GRACE_MS));
        assert_eq!(
            alarm_for(Some(200), 150, 100),
            Some(150 + GRACE_MS),
            "a pending alarm would empty it at once: replaced"
        );
        assert_eq!(after_alarm(Some(100), 50), AfterAlarm::Rearm(100));
        assert_eq!(after_alarm(Some(100), 100), AfterAlarm::Delete);
        assert_eq!(after_alarm(None, 100), AfterAlarm::Delete);
    }

    proptest::proptest! {
        /// Whatever the writes (in time order, each pushing the cleanup time later or earlier,
        /// some already past it, some to a new instance after an eviction), an item is never
        /// emptied before its cleanup time nor, when that had passed, within a grace period of
        /// its write; an item to keep always has an alarm coming by then; and the last item is
        /// reclaimed in the end.
        #[test]
        fn the_cleanup_alarm_never_empties_early_and_always_comes(
            steps in proptest::collection::vec((0u64..50, 0u64..300, proptest::bool::weighted(0.2)), 1..40),
        ) {
            let mut now = 0;
            let writes: Vec<(u64, u64, bool)> = steps
                .into_iter()
                .map(|(dt, keep, evicted)| {
                    now += dt;
                    // Some cleanup times already passed when written (a caller's clock behind).
                    (now, (now + keep).saturating_sub(100), evicted)
                })
                .collect();
            let last = writes.last().map(|w| w.1).unwrap_or_default();
            if let Some(at) = run(&writes) {
                proptest::prop_assert!(at >= last);
            }
        }
    }
}
