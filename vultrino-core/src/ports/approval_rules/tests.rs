#![allow(clippy::unwrap_used)]

use super::*;
use crate::approvals::Via;

const T0: u64 = 1_700_000_000_000;
const TTL: u64 = 600_000;

pub(crate) fn approval(id: &str, key: &str, now: u64) -> Approval {
    Approval {
        id: id.into(),
        status: Status::Pending,
        credential: "c".into(),
        method: "POST".into(),
        url: "https://h/".into(),
        headers: vec![],
        body_sha256: "00".into(),
        body_size: 0,
        body_preview: String::new(),
        body_truncated: false,
        reason: None,
        via: Via::Execute,
        requested_by: format!("key:{key}"),
        requested_by_key: key.into(),
        requested_by_token: None,
        binding: "b".into(),
        created_at: now,
        expires_at: now + TTL,
        decided_at: None,
        decided_by: None,
        note: None,
        executed_at: None,
    }
}

fn create(book: &mut Book, a: Approval) {
    let now_ms = a.created_at;
    let _ = book.apply(Op::Create {
        approval: Box::new(a),
        now_ms,
    });
}

fn decide(book: &mut Book, id: &str, approve: bool, now_ms: u64) -> Decided {
    match book
        .apply(Op::Decide {
            id: id.into(),
            approve,
            by: "admin:a".into(),
            note: None,
            ttl_ms: TTL,
            now_ms,
        })
        .1
    {
        Reply::Decided { decided, .. } => decided,
        r => panic!("{r:?}"),
    }
}

fn consume(book: &mut Book, id: &str, key: &str, binding: &str, now_ms: u64) -> Consumed {
    match book
        .apply(Op::Consume {
            id: id.into(),
            key: key.into(),
            token: None,
            binding: binding.into(),
            now_ms,
        })
        .1
    {
        Reply::Consumed { consumed, .. } => consumed,
        r => panic!("{r:?}"),
    }
}

#[test]
fn an_approved_approval_is_consumed_exactly_once_by_its_key_with_its_binding() {
    let mut book = Book::default();
    create(&mut book, approval("ap_1", "k1", T0));
    assert!(
        matches!(consume(&mut book, "ap_1", "k1", "b", T0 + 1), Consumed::NotApproved { approval } if approval.status == Status::Pending)
    );
    assert!(
        matches!(decide(&mut book, "ap_1", true, T0 + 2), Decided::Done { approval } if approval.expires_at == T0 + 2 + TTL)
    );
    assert_eq!(
        consume(&mut book, "ap_1", "k2", "b", T0 + 3),
        Consumed::NotFound,
        "another key"
    );
    assert!(
        matches!(consume(&mut book, "ap_1", "k1", "other", T0 + 3), Consumed::Mismatch { approval } if approval.status == Status::Approved)
    );
    assert!(
        matches!(consume(&mut book, "ap_1", "k1", "b", T0 + 4), Consumed::Run { approval } if approval.status == Status::Executed && approval.executed_at == Some(T0 + 4))
    );
    assert!(
        matches!(consume(&mut book, "ap_1", "k1", "b", T0 + 5), Consumed::NotApproved { approval } if approval.status == Status::Executed)
    );
    assert_eq!(
        consume(&mut book, "ap_9", "k1", "b", T0),
        Consumed::NotFound
    );
}

/// A token's approval is its own among the key's tokens: a sibling token cannot consume or
/// list it, nor can a token consume its key's; the key itself (the tokens' parent) lists and
/// consumes its tokens' (review of 2026-12-06, approvals and tokens, finding 1).
#[test]
fn only_the_token_that_asked_consumes_or_lists_its_approval() {
    let by = |id: &str, token: Option<&str>| Op::Consume {
        id: id.into(),
        key: "k1".into(),
        token: token.map(str::to_string),
        binding: "b".into(),
        now_ms: T0 + 3,
    };
    let consumed = |book: &mut Book, op| match book.apply(op).1 {
        Reply::Consumed { consumed, .. } => consumed,
        r => panic!("{r:?}"),
    };
    let mut book = Book::default();
    for id in ["ap_t", "ap_u"] {
        let mut a = approval(id, "k1", T0);
        a.requested_by_token = Some("t1".into());
        create(&mut book, a);
        let _ = decide(&mut book, id, true, T0 + 2);
    }
    create(&mut book, approval("ap_k", "k1", T0 + 1));
    let _ = decide(&mut book, "ap_k", true, T0 + 2);
    assert_eq!(
        consumed(&mut book, by("ap_t", Some("t2"))),
        Consumed::NotFound,
        "a sibling token"
    );
    assert_eq!(
        consumed(&mut book, by("ap_k", Some("t1"))),
        Consumed::NotFound,
        "a token, its key's approval"
    );
    assert!(matches!(
        consumed(&mut book, by("ap_t", Some("t1"))),
        Consumed::Run { .. }
    ));
    assert!(
        matches!(consumed(&mut book, by("ap_u", None)), Consumed::Run { .. }),
        "the key, its token's"
    );
    assert!(
        matches!(consumed(&mut book, by("ap_k", None)), Consumed::Run { .. }),
        "the key, its own"
    );
    let listed = |book: &mut Book, token: Option<&str>| match book
        .apply(Op::List {
            key: Some("k1".into()),
            token: token.map(str::to_string),
            status: None,
            before: None,
            limit: MAX_PAGE,
            now_ms: T0 + 4,
        })
        .1
    {
        Reply::List { approvals, .. } => approvals.into_iter().map(|a| a.id).collect::<Vec<_>>(),
        r => panic!("{r:?}"),
    };
    assert_eq!(listed(&mut book, Some("t2")), Vec::<String>::new());
    assert_eq!(listed(&mut book, Some("t1")), ["ap_u", "ap_t"]);
    assert_eq!(
        listed(&mut book, None),
        ["ap_k", "ap_u", "ap_t"],
        "the key sees its tokens' too"
    );
}

#[test]
fn only_a_pending_approval_is_decided() {
    let mut book = Book::default();
    create(&mut book, approval("ap_1", "k1", T0));
    assert!(
        matches!(decide(&mut book, "ap_1", false, T0 + 1), Decided::Done { approval } if approval.status == Status::Denied)
    );
    assert!(
        matches!(decide(&mut book, "ap_1", true, T0 + 2), Decided::NotPending { approval } if approval.status == Status::Denied)
    );
    assert_eq!(decide(&mut book, "ap_2", true, T0), Decided::NotFound);
}

#[test]
fn expiry_is_applied_when_read_and_reported_once() {
    let mut book = Book::default();
    create(&mut book, approval("ap_1", "k1", T0));
    let (w, r) = book.apply(Op::Get {
        id: "ap_1".into(),
        now_ms: T0 + TTL - 1,
    });
    assert!(w.put.is_empty() && r.expired().is_empty());
    let (w, r) = book.apply(Op::Get {
        id: "ap_1".into(),
        now_ms: T0 + TTL,
    });
    assert_eq!(w.put.len(), 1);
    assert_eq!(r.expired().len(), 1);
    let (_, r) = book.apply(Op::Get {
        id: "ap_1".into(),
        now_ms: T0 + TTL + 5,
    });
    assert!(r.expired().is_empty(), "reported once");
    assert!(matches!(
        decide(&mut book, "ap_1", true, T0 + TTL + 6),
        Decided::NotPending { .. }
    ));
    // An approved one expires TTL after its approval.
    create(&mut book, approval("ap_2", "k1", T0));
    let _ = decide(&mut book, "ap_2", true, T0 + 100);
    assert!(
        matches!(consume(&mut book, "ap_2", "k1", "b", T0 + 100 + TTL), Consumed::NotApproved { approval } if approval.status == Status::Expired)
    );
}

#[test]
fn listing_is_newest_first_filtered_and_paged() {
    let mut book = Book::default();
    for i in 0..5u64 {
        create(
            &mut book,
            approval(
                &format!("ap_{i}"),
                if i % 2 == 0 { "k1" } else { "k2" },
                T0 + i,
            ),
        );
    }
    let _ = decide(&mut book, "ap_4", false, T0 + 10);
    let list = |book: &mut Book, key: Option<&str>, status, before: Option<&str>, limit| match book
        .apply(Op::List {
            key: key.map(Into::into),
            token: None,
            status,
            before: before.map(Into::into),
            limit,
            now_ms: T0 + 20,
        })
        .1
    {
        Reply::List {
            approvals, next, ..
        } => (
            approvals.into_iter().map(|a| a.id).collect::<Vec<_>>(),
            next,
        ),
        r => panic!("{r:?}"),
    };
    assert_eq!(
        list(&mut book, None, None, None, 100).0,
        ["ap_4", "ap_3", "ap_2", "ap_1", "ap_0"]
    );
    assert_eq!(
        list(&mut book, Some("k1"), None, None, 100).0,
        ["ap_4", "ap_2", "ap_0"]
    );
    assert_eq!(
        list(&mut book, None, Some(Status::Pending), None, 100).0,
        ["ap_3", "ap_2", "ap_1", "ap_0"]
    );
    let (first, next) = list(&mut book, None, None, None, 2);
    assert_eq!(
        (first, next.as_deref()),
        (vec!["ap_4".to_string(), "ap_3".into()], Some("ap_3"))
    );
    let (second, _) = list(&mut book, None, None, Some("ap_3"), 2);
    assert_eq!(second, ["ap_2", "ap_1"]);
}

#[test]
fn final_approvals_are_pruned_after_retention_when_one_is_created() {
    let mut book = Book::default();
    create(&mut book, approval("ap_old", "k1", T0));
    let _ = decide(&mut book, "ap_old", false, T0 + 1);
    create(&mut book, approval("ap_live", "k1", T0));
    let (w, _) = book.apply(Op::Create {
        approval: Box::new(approval("ap_new", "k1", T0 + 1 + RETENTION_MS)),
        now_ms: T0 + 1 + RETENTION_MS,
    });
    assert_eq!(w.delete, ["ap_old"]);
    assert_eq!(
        book.len(),
        2,
        "the expired live one is kept, the new one added"
    );
}

#[test]
fn ops_and_replies_keep_their_json() {
    let op = Op::Consume {
        id: "ap_1".into(),
        key: "k".into(),
        token: None,
        binding: "b".into(),
        now_ms: 1,
    };
    let json = serde_json::to_string(&op).unwrap();
    assert_eq!(
        json,
        r#"{"op":"consume","id":"ap_1","key":"k","binding":"b","now_ms":1}"#
    );
    assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
    let reply = Reply::Consumed {
        consumed: Consumed::NotFound,
        expired: vec![],
    };
    let json = serde_json::to_string(&reply).unwrap();
    assert_eq!(
        json,
        r#"{"reply":"consumed","consumed":{"outcome":"not_found"},"expired":[]}"#
    );
    assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), reply);
    let a = approval("ap_1", "k", 5);
    let stored = serde_json::to_string(&a).unwrap();
    assert_eq!(serde_json::from_str::<Approval>(&stored).unwrap(), a);
}

#[test]
fn a_key_has_at_most_100_pending_approvals() {
    let mut book = Book::default();
    for i in 0..MAX_PENDING_PER_KEY {
        create(&mut book, approval(&format!("ap_{i}"), "k1", T0));
    }
    let (w, r) = book.apply(Op::Create {
        approval: Box::new(approval("ap_more", "k1", T0)),
        now_ms: T0,
    });
    assert!(matches!(r, Reply::Created { refused: true, .. }) && w.put.is_empty());
    let (_, r) = book.apply(Op::Create {
        approval: Box::new(approval("ap_other", "k2", T0)),
        now_ms: T0,
    });
    assert!(
        matches!(r, Reply::Created { refused: false, .. }),
        "another key is not affected"
    );
    let _ = decide(&mut book, "ap_0", false, T0 + 1);
    let (_, r) = book.apply(Op::Create {
        approval: Box::new(approval("ap_more", "k1", T0 + 2)),
        now_ms: T0 + 2,
    });
    assert!(
        matches!(r, Reply::Created { refused: false, .. }),
        "a decision frees a place"
    );
}

/// A full book never evicts a pending or approved approval (another agent's re-send would find
/// it gone): the oldest final ones go, and when none is left the new one is refused (review of
/// 2026-12-06, finding 3).
#[test]
fn a_full_book_never_evicts_a_live_approval() {
    // Built whole (a create per record would prune 10 000 times): every key at its cap.
    let mut book = Book::from_records((0..MAX_APPROVALS).map(|n| {
        approval(
            &format!("ap_{n}"),
            &format!("k{}", n / MAX_PENDING_PER_KEY),
            T0,
        )
    }));
    let create_new = |book: &mut Book, now_ms: u64| {
        book.apply(Op::Create {
            approval: Box::new(approval("ap_new", "fresh", now_ms)),
            now_ms,
        })
        .1
    };
    let _ = decide(&mut book, "ap_0", true, T0 + 1);
    let r = create_new(&mut book, T0 + 2);
    assert!(matches!(r, Reply::Created { refused: true, .. }), "{r:?}");
    assert_eq!(book.len(), MAX_APPROVALS);
    assert!(matches!(
        consume(&mut book, "ap_0", "k0", "b", T0 + 3),
        Consumed::Run { .. }
    ));
    // A final one makes room: it goes, the new one is stored.
    let r = create_new(&mut book, T0 + 4);
    assert!(matches!(r, Reply::Created { refused: false, .. }), "{r:?}");
    assert_eq!(book.len(), MAX_APPROVALS);
}
