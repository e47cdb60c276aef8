//! When a session object ([`SessionDO`](crate::sessions)) sets its cleanup alarm and what the
//! alarm does when it fires: pure decisions, so that they are tested natively (the object's
//! storage and alarm exist only in workerd). An object holds one item; its storage may be
//! emptied a grace period after the item is dead, and the alarm is what empties it.

/// Whether writing an item whose storage may go at `cleanup_at` needs a new alarm, given the
/// one this instance set (`alarm_at`, if any) and the time `now`. Not when an alarm of this
/// instance is still to come and fires no later than `cleanup_at`: it finds the item alive and
/// sets itself again ([`after_alarm`]). A `cleanup_at` already passed (a caller's clock behind
/// the object's by more than the grace period) needs one too, due at once: nothing else may
/// ever come to reclaim the item.
pub(crate) fn alarm_needed(alarm_at: Option<u64>, now: u64, cleanup_at: u64) -> bool {
    !alarm_at.is_some_and(|at| at > now && at <= cleanup_at)
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
    use super::{after_alarm, alarm_needed, AfterAlarm};

    /// What an object goes through: writes of its item (each with the time its storage may go)
    /// and the runtime firing the one alarm storage holds (`setAlarm` replaces it) when its time
    /// comes. Returns the time the item's storage was emptied, if it was, and checks at every
    /// step that an item still to be kept has an alarm coming no later than its cleanup time.
    fn run(writes: &[(u64, u64)]) -> Option<u64> {
        let mut stored: Option<u64> = None; // the item's cleanup time, while stored
        let mut alarm: Option<u64> = None; // the runtime's alarm
        let mut alarm_at: Option<u64> = None; // what the instance remembers setting
        let mut deleted_at = None;
        let fire = |until: u64,
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
                            *deleted_at = Some(at);
                        }
                        *stored = None;
                    }
                }
            }
        };
        for &(now, cleanup_at) in writes {
            fire(now, &mut stored, &mut alarm, &mut alarm_at, &mut deleted_at);
            stored = Some(cleanup_at);
            deleted_at = None;
            if alarm_needed(alarm_at, now, cleanup_at) {
                // `setAlarm` with the offset the object computes (never negative).
                alarm = Some(now + cleanup_at.saturating_sub(now));
                alarm_at = Some(cleanup_at);
            }
            if cleanup_at > now {
                assert!(
                    alarm.is_some_and(|a| a > now && a <= cleanup_at),
                    "item kept until {cleanup_at} written at {now}: alarm {alarm:?}"
                );
            }
        }
        // Time runs on: every alarm left fires.
        fire(
            u64::MAX,
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
        assert!(alarm_needed(None, 10, 100));
        assert!(!alarm_needed(Some(50), 10, 100), "pending and early enough");
        assert!(
            !alarm_needed(Some(100), 10, 100),
            "pending, at the cleanup time"
        );
        assert!(alarm_needed(Some(150), 10, 100), "pending but too late");
        assert!(
            alarm_needed(Some(10), 10, 100),
            "already due: it may have fired"
        );
        assert!(alarm_needed(Some(5), 10, 100), "past");
        assert!(alarm_needed(None, 100, 100), "due now: reclaimed at once");
        assert!(
            alarm_needed(Some(100), 150, 100),
            "long dead: reclaimed at once"
        );
        assert_eq!(after_alarm(Some(100), 50), AfterAlarm::Rearm(100));
        assert_eq!(after_alarm(Some(100), 100), AfterAlarm::Delete);
        assert_eq!(after_alarm(None, 100), AfterAlarm::Delete);
    }

    proptest::proptest! {
        /// Whatever the writes (in time order, each pushing the cleanup time later or earlier),
        /// an item is never emptied before its cleanup time, an item to keep always has an
        /// alarm coming by then, and the last item is reclaimed at or after its cleanup time.
        #[test]
        fn the_cleanup_alarm_never_empties_early_and_always_comes(
            steps in proptest::collection::vec((0u64..50, 0u64..200), 1..40),
        ) {
            let mut now = 0;
            let writes: Vec<(u64, u64)> = steps
                .into_iter()
                .map(|(dt, keep)| {
                    now += dt;
                    (now, now + keep)
                })
                .collect();
            let last = writes.last().map(|w| w.1).unwrap_or_default();
            if let Some(at) = run(&writes) {
                proptest::prop_assert!(at >= last);
            }
        }
    }
}
