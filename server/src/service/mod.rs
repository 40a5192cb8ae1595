//! The use cases: what the pages (through the Leptos `Backend`), the REST
//! API, the terminal endpoint and the CLI's offline commands ask of the
//! server. The only code that calls `auth::policy`, and the only code a
//! request reaches the database through: each asks the policy first, then
//! reads or changes the database (changes to jobs through the engine's one
//! transition), and answers with the app's models or an `AppError` whose
//! status DESIGN.md assigns. Each validation of input (a parameter, a
//! resume cursor, a state filter) lives once, here or in `app::model`.
//!
//! - [`jobs`]: templates and targets, launch, list, read, cancel, rerun,
//!   logs and their streams;
//! - [`live`]: the one live connection a browser shares among its tabs;
//! - [`accounts`]: users and tokens by an actor (the web UI's admin, or the
//!   `opsdeck user`/`token` commands), with the audit entries;
//! - [`users`]: the same for a signed-in caller, with the policy applied;
//! - [`agents`]: enrolling and revoking agents, their status, an agent's
//!   authentication, "Mark failed" for a job whose agent is gone;
//! - [`signin`]: signing in (rate-limited) and out;
//! - [`terminals`]: who may open a console where, and its audit entries;
//! - [`journal`], [`audit`]: the journal notes and the audit log;
//! - [`history`]: the figures the charts show (a target's history per
//!   template, the recent load of the queue);
//! - [`webhooks`]: the delivery log of each `[[notify]]` hook;
//! - [`schedules`]: schedules' fires, pause and resume, "run now".

pub mod accounts;
pub mod agents;
pub mod audit;
pub mod history;
pub mod jobs;
pub mod journal;
pub mod live;
pub mod schedules;
pub mod signin;
pub mod terminals;
pub mod users;
pub mod webhooks;
