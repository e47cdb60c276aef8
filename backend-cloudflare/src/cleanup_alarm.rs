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

    /// What an object goes through: writes of its item (each with the time its storage may go)
    /// and the runtime firing the one alarm storage holds (`setAlarm` replaces it) when its time
    /// comes. Returns the time the item's storage was emptied, if it was, and checks at every
    /// step that an item still to be kept has an alarm coming no later than its cleanup time.
    fn run(writes: &[(u64, u64)]) -> Option<u64> {
        let mut stored: Option<u64> = None; // the item's cleanup time, while stored
        let mut alarm: Option<u64> = None; // the runtime's alarm
        let mut alarm_at: Option<u64> = None; // what the instance remembers setting
        let mut deleted_at = None;
        let mut written_at = 0u64;
        let fire = |until: u64,
                    last_write: u64,
                    stored: &mut Option<u64>,
                    alarm: &mut Option<u64>,
                    alarm_at: &mut Option<u64>,
                    deleted_at: &mut Option<u64>| {
            while let Some(at) = alarm.filter(|&at| at <= until) {
                *alarm = None;
                *alarm_at = None;
                match after_alarm(*stored, at) {
                    AfterAlarm::Rearm(next) => {
                        assert!(next > at, "an alarm set again fires later");
                        *alarm = Some(next);
                        *alarm_at = Some(next);
                    }
                    AfterAlarm::Delete => {
                        if let Some(c) = *stored {
                            assert!(c <= at, "emptied at {at}, before its cleanup time {c}");
                            assert!(
                                c > last_write || at >= last_write + GRACE_MS,
                                "written at {last_write} with its cleanup time {c} passed, \
                                 emptied at {at}, within the grace period"
                            );
                            *deleted_at = Some(at);
                        }
                        *stored = None;
                    }
                }
            }
        };
        for &(now, cleanup_at) in writes {
            fire(
                now,
                written_at,
                &mut stored,
                &mut alarm,
                &mut alarm_at,
                &mut deleted_at,
            );
            stored = Some(cleanup_at);
            written_at = now;
            deleted_at = None;
            if let Some(at) = alarm_for(alarm_at, now, cleanup_at) {
                assert!(at > now, "an alarm set on a write is still to come");
                alarm = Some(at);
                alarm_at = Some(at);
            }
            let keep_until = if cleanup_at > now {
                cleanup_at
            } else {
                now + GRACE_MS
            };
            assert!(
                alarm.is_some_and(|a| a > now && a <= keep_until),
                "item kept until {keep_until} written at {now}: alarm {alarm:?}"
            );
        }
        // Time runs on: every alarm left fires.
        fire(
            u64::MAX,
            written_at,
            &mut stored,
            &mut alarm,
            &mut alarm_at,
            &mut deleted_at,
        );
        assert_eq!(stored, None, "an item is reclaimed in the end");
        deleted_at
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
        /// some already past it), an item is never emptied before its cleanup time nor, when
        /// that had passed, within a grace period of its write; an item to keep always has an
        /// alarm coming by then; and the last item is reclaimed in the end.
        #[test]
        fn the_cleanup_alarm_never_empties_early_and_always_comes(
            steps in proptest::collection::vec((0u64..50, 0u64..300), 1..40),
        ) {
            let mut now = 0;
            let writes: Vec<(u64, u64)> = steps
                .into_iter()
                .map(|(dt, keep)| {
                    now += dt;
                    // Some cleanup times already passed when written (a caller's clock behind).
                    (now, (now + keep).saturating_sub(100))
                })
                .collect();
            let last = writes.last().map(|w| w.1).unwrap_or_default();
            if let Some(at) = run(&writes) {
                proptest::prop_assert!(at >= last);
            }
        }
    }
}
