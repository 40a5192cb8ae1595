//! Live streams over Server-Sent Events: one job's log and state
//! (`/api/jobs/{id}/events`) and the feed of job changes (`/api/events`).

pub mod sse;
