//! The worker's audit sink: every audit event, as stored, is also logged as one line
//! `{"vultrino_audit": <event>}` (Workers Logs and Logpush collect it) and, when the Analytics
//! Engine binding `AUDIT_ANALYTICS` exists, written as a data point ([`crate::audit_point`]).
//! Both calls are synchronous and never fail a request. Counts are per isolate.

use std::sync::atomic::{AtomicU64, Ordering};

use vultrino_core::audit::AuditEvent;
use vultrino_core::ports::{AuditSink, SinkStatus};
use worker::{AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset, Env};

use crate::audit_point::{data_point, log_line};

/// The Analytics Engine binding's name.
pub const BINDING: &str = "AUDIT_ANALYTICS";

pub struct WorkerAuditSink {
    dataset: Option<AnalyticsEngineDataset>,
    logged: AtomicU64,
    points: AtomicU64,
    failed: AtomicU64,
}

impl WorkerAuditSink {
    pub fn new(env: &Env) -> WorkerAuditSink {
        WorkerAuditSink {
            dataset: env.analytics_engine(BINDING).ok(),
            logged: AtomicU64::new(0),
            points: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl AuditSink for WorkerAuditSink {
    fn emit(&self, event: &AuditEvent) {
        worker::console_log!("{}", log_line(event));
        self.logged.fetch_add(1, Ordering::Relaxed);
        let Some(dataset) = &self.dataset else {
            return;
        };
        let p = data_point(event);
        let written = AnalyticsEngineDataPointBuilder::new()
            .indexes([p.index.as_str()])
            .blobs(p.blobs)
            .doubles(p.doubles)
            .write_to(dataset);
        match written {
            Ok(()) => {
                self.points.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn status(&self) -> Vec<SinkStatus> {
        let mut out = vec![SinkStatus {
            name: "workers_log".into(),
            sent: self.logged.load(Ordering::Relaxed),
            ..SinkStatus::default()
        }];
        if self.dataset.is_some() {
            out.push(SinkStatus {
                name: "analytics_engine".into(),
                sent: self.points.load(Ordering::Relaxed),
                failed: self.failed.load(Ordering::Relaxed),
                ..SinkStatus::default()
            });
        }
        out
    }
}
