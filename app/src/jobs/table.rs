//! The one job table: newest first, filters by state, template and target
//! (a GET form, so every view has a URL and works without JavaScript),
//! paged by an `Older` cursor, and rows that update live from the feed.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::components::ErrorList;
use crate::error::AppError;
use crate::jobs::list_jobs;
use crate::jobs::live::Feed;
use crate::jobs::widgets::{JobDuration, StatePill, Time};
use crate::model::event::FeedEvent;
use crate::model::job::{Job, JobFilter, JobState, StateSet};

/// How a table is set up by the page that shows it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TableSpec {
    /// Filters the page fixes (the user cannot change them here).
    pub fixed: JobFilter,
    /// Filter and page by the URL query (`?state=…&before=…`). The page
    /// shows the form for it, [`crate::jobs::filters::JobFilters`], above
    /// the table.
    pub filters: bool,
    /// The page's path, for the filter form and paging links.
    pub path: String,
    pub limit: u64,
    /// Shown when there is nothing to list.
    pub empty: &'static str,
}

/// Whether a job belongs in a table with `filter`.
pub fn matches(job: &Job, filter: &JobFilter) -> bool {
    let states_ok = filter
        .state
        .as_ref()
        .filter(|s| !s.is_empty())
        .is_none_or(|s| s.contains(job.state));
    states_ok
        && filter
            .template
            .as_deref()
            .filter(|s| !s.is_empty())
            .is_none_or(|t| t == job.template)
        && filter
            .target
            .as_deref()
            .filter(|s| !s.is_empty())
            .is_none_or(|t| t == job.target)
}

/// How far a job has got: every state change moves it forward, never back.
fn stage(state: JobState) -> u8 {
    match state {
        JobState::Queued => 0,
        JobState::Running => 1,
        JobState::Cancelling => 2,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => 3,
    }
}

/// Applies one feed message to the rows. A message about a job the rows
/// already show at a later stage is older than the rows (they came from a
/// reload that read the database after it) and is skipped.
pub fn receive(
    rows: &mut Vec<Job>,
    msg: &FeedEvent,
    filter: &JobFilter,
    limit: usize,
    first_page: bool,
) {
    match msg {
        FeedEvent::Job(job) => {
            let older = rows
                .iter()
                .any(|r| r.id == job.id && stage(r.state) > stage(job.state));
            if !older {
                apply(rows, job, filter, limit, first_page);
            }
        }
        FeedEvent::Deleted(id) => rows.retain(|j| j.id != *id),
        FeedEvent::Resync | FeedEvent::Agent(_) | FeedEvent::Target(_) => {}
    }
}

/// Applies, in order, the feed messages that arrived while a reload's
/// request was out to the rows it answered. The answer may have been read
/// before or after any of them; [`receive`] skips those it had already
/// seen. A change the answer saw but whose message had not arrived yet
/// comes later over the feed, so the rows end right either way.
pub fn replay(
    rows: &mut Vec<Job>,
    missed: &[FeedEvent],
    filter: &JobFilter,
    limit: usize,
    first_page: bool,
) {
    for msg in missed {
        receive(rows, msg, filter, limit, first_page);
    }
}

/// Puts a changed job into (or out of) a newest-first list.
pub fn apply(rows: &mut Vec<Job>, job: &Job, filter: &JobFilter, limit: usize, first_page: bool) {
    let at = rows.iter().position(|r| r.id == job.id);
    match (at, matches(job, filter)) {
        (Some(i), true) => rows[i] = job.clone(),
        (Some(i), false) => {
            rows.remove(i);
        }
        (None, true) if first_page => {
            let pos = rows
                .iter()
                .position(|r| r.id < job.id)
                .unwrap_or(rows.len());
            rows.insert(pos, job.clone());
            rows.truncate(limit);
        }
        _ => {}
    }
}

#[component]
pub fn JobTable(spec: TableSpec) -> impl IntoView {
    let query = use_query_map();
    let spec = StoredValue::new(spec);
    // A bad filter in the URL (`?state=done`) is shown as the error the
    // server would give, without asking it.
    let filter = Memo::new(move |_| -> Result<JobFilter, AppError> {
        let s = spec.get_value();
        let q = query.get();
        let from_url = |key: &str| {
            if s.filters {
                q.get(key).filter(|v| !v.is_empty())
            } else {
                None
            }
        };
        let state = match (&s.fixed.state, from_url("state")) {
            (Some(fixed), _) => Some(fixed.clone()),
            (None, Some(text)) => Some(
                text.parse::<StateSet>()
                    .map_err(|e| AppError::field("state", e))?,
            ),
            (None, None) => None,
        };
        Ok(JobFilter {
            state,
            template: s.fixed.template.clone().or_else(|| from_url("template")),
            target: s.fixed.target.clone().or_else(|| from_url("target")),
            before: from_url("before").and_then(|b| b.parse().ok()),
            limit: Some(s.limit),
            mine: s.fixed.mine,
        })
    });
    let page = Resource::new(
        move || filter.get(),
        |f| async move {
            match f {
                Ok(f) => list_jobs(f).await,
                Err(e) => Err(e),
            }
        },
    );

    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading jobs…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    page.await.map(|p| {
                        view! {
                            <Rows
                                initial=p.jobs
                                next_before=p.next_before
                                filter=filter.get_untracked().unwrap_or_default()
                                spec=spec.get_value()
                            />
                        }
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn Rows(
    initial: Vec<Job>,
    next_before: Option<i64>,
    filter: JobFilter,
    spec: TableSpec,
) -> impl IntoView {
    let rows = RwSignal::new(initial);
    let next = RwSignal::new(next_before);
    let limit = spec.limit as usize;
    let first_page = filter.before.is_none();
    let live = LiveRows {
        rows,
        next,
        filter: filter.clone(),
        limit,
        first_page,
        latest: StoredValue::new(0),
        missed: StoredValue::new(None),
    };
    Feed::subscribe(move |msg| live.receive(msg));
    let older = {
        let (spec, filter) = (spec.clone(), filter.clone());
        move || {
            next.get().filter(|_| spec.filters).map(|before| {
                let mut url = format!("{}?before={before}", spec.path);
                for (k, v) in [
                    ("state", filter.state.as_ref().map(StateSet::to_string)),
                    ("template", filter.template.clone()),
                    ("target", filter.target.clone()),
                ] {
                    if let Some(v) = v.filter(|_| !spec.fixes(k)) {
                        url.push_str(&format!("&{k}={v}"));
                    }
                }
                view! { <a href=url class="button secondary small">"Older jobs"</a> }
            })
        }
    };
    let newest = (!first_page).then(|| spec.path.clone());
    let empty = spec.empty;
    let feed = use_context::<Feed>().map(|f| f.conn);
    let feed_state = move || feed.map(|c| c.get().as_str());

    view! {
        <div class="table-wrap" data-feed=feed_state>
            <table class="data jobs">
                <thead>
                    <tr>
                        <th scope="col">"Job"</th>
                        <th scope="col">"State"</th>
                        <th scope="col">"Template"</th>
                        <th scope="col">"Target"</th>
                        <th scope="col">"Owner"</th>
                        <th scope="col">"Created"</th>
                        <th scope="col">"Duration"</th>
                    </tr>
                </thead>
                <tbody>
                    <For each=move || rows.get() key=|j| (j.id, j.state, j.warnings, j.finished_at) let:job>
                        <JobRow job />
                    </For>
                </tbody>
            </table>
            {move || rows.with(Vec::is_empty).then(|| view! { <p class="muted empty">{empty}</p> })}
        </div>
        <nav class="pager" aria-label="Pages">
            {newest.map(|href| view! { <a href=href class="button secondary small">"Newest"</a> })}
            {older}
        </nav>
    }
}

/// A table's rows kept up to date from the feed. When the feed (re)opens,
/// the rows are reloaded in the background: the rows on screen stay while
/// the request runs, and stay as they were if it fails (the connection may
/// just have dropped again); it is tried again a few times, and every later
/// reopening reloads anyway. Only the newest reload's answer is applied,
/// with the feed messages that came meanwhile replayed onto it ([`replay`]).
#[derive(Clone)]
struct LiveRows {
    rows: RwSignal<Vec<Job>>,
    next: RwSignal<Option<i64>>,
    filter: JobFilter,
    limit: usize,
    first_page: bool,
    latest: StoredValue<u64>,
    /// The feed messages since the first unanswered reload started.
    missed: StoredValue<Option<Vec<FeedEvent>>>,
}

impl LiveRows {
    const TRIES: u32 = 5;
    const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

    fn receive(&self, msg: &FeedEvent) {
        if let FeedEvent::Resync = msg {
            return self.clone().reload();
        }
        let filter = &self.filter;
        self.rows
            .update(|r| receive(r, msg, filter, self.limit, self.first_page));
        // Kept for the reload under way, if one is.
        self.missed.update_value(|m| {
            if let Some(m) = m {
                m.push(msg.clone());
            }
        });
    }

    fn reload(self) {
        let generation = self.latest.get_value() + 1;
        self.latest.set_value(generation);
        self.missed.update_value(|m| {
            m.get_or_insert_with(Vec::new);
        });
        self.attempt(generation, 1);
    }

    fn attempt(self, generation: u64, try_no: u32) {
        leptos::task::spawn_local(async move {
            let answer = list_jobs(self.filter.clone()).await;
            // The table is gone, or a newer reload has started.
            if self.latest.try_get_value() != Some(generation) {
                return;
            }
            match answer {
                Ok(page) => {
                    let missed = self.missed.try_update_value(Option::take).flatten();
                    let mut jobs = page.jobs;
                    replay(
                        &mut jobs,
                        missed.as_deref().unwrap_or_default(),
                        &self.filter,
                        self.limit,
                        self.first_page,
                    );
                    self.rows.try_set(jobs);
                    self.next.try_set(page.next_before);
                }
                Err(_) if try_no < Self::TRIES => {
                    set_timeout(
                        move || self.attempt(generation, try_no + 1),
                        Self::RETRY_AFTER,
                    );
                }
                // The rows kept every message as it came.
                Err(_) => self.missed.set_value(None),
            }
        });
    }
}

impl TableSpec {
    /// Whether the page fixes the filter `key`.
    fn fixes(&self, key: &str) -> bool {
        match key {
            "state" => self.fixed.state.is_some(),
            "template" => self.fixed.template.is_some(),
            "target" => self.fixed.target.is_some(),
            _ => false,
        }
    }
}

#[component]
fn JobRow(job: Job) -> impl IntoView {
    let id = job.id;
    let sig = Signal::derive({
        let j = job.clone();
        move || j.clone()
    });
    view! {
        <tr data-job=id>
            <th scope="row">
                <a href=format!("/jobs/{id}")>{format!("#{id}")}</a>
            </th>
            <td>
                <StatePill state=job.state warnings=job.warnings />
            </td>
            <td>{job.template.clone()}</td>
            <td>
                <a href=format!("/targets/{}", job.target)>{job.target.clone()}</a>
            </td>
            <td>{job.owner.clone()}</td>
            <td>
                <Time at=job.created_at.into_some() short=true />
            </td>
            <td>
                <JobDuration job=sig />
            </td>
        </tr>
    }
}

trait IntoSome<T> {
    fn into_some(self) -> Option<T>;
}

impl<T> IntoSome<T> for T {
    fn into_some(self) -> Option<T> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn job(id: i64, state: JobState) -> Job {
        Job {
            id,
            template: "t".into(),
            target: "web-1".into(),
            params: Default::default(),
            state,
            owner: "a".into(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            warnings: false,
            progress: None,
            last_seq: 0,
            cancel_requested_by: None,
            node: None,
            rerun_of: None,
            agent: None,
            omitted: None,
            attempt: None,
        }
    }

    #[test]
    fn live_changes_move_jobs_in_and_out_of_a_filtered_list() {
        let active = JobFilter {
            state: Some(StateSet::new([JobState::Queued, JobState::Running])),
            ..Default::default()
        };
        let mut rows = vec![job(5, JobState::Running), job(3, JobState::Queued)];
        apply(&mut rows, &job(7, JobState::Queued), &active, 10, true);
        assert_eq!(rows.iter().map(|j| j.id).collect::<Vec<_>>(), [7, 5, 3]);
        apply(&mut rows, &job(5, JobState::Succeeded), &active, 10, true);
        assert_eq!(rows.iter().map(|j| j.id).collect::<Vec<_>>(), [7, 3]);
        apply(&mut rows, &job(4, JobState::Running), &active, 10, true);
        assert_eq!(rows.iter().map(|j| j.id).collect::<Vec<_>>(), [7, 4, 3]);
        apply(&mut rows, &job(9, JobState::Queued), &active, 2, true);
        assert_eq!(rows.iter().map(|j| j.id).collect::<Vec<_>>(), [9, 7]);
        // Older pages never gain new jobs.
        apply(&mut rows, &job(10, JobState::Queued), &active, 10, false);
        assert!(rows.iter().all(|j| j.id != 10));
    }

    fn ids(rows: &[Job]) -> Vec<(i64, JobState)> {
        rows.iter().map(|j| (j.id, j.state)).collect()
    }

    fn msg(id: i64, state: JobState) -> FeedEvent {
        FeedEvent::Job(std::sync::Arc::new(job(id, state)))
    }

    #[test]
    fn a_reload_answer_read_before_the_messages_gets_them_replayed() {
        let all = JobFilter::default();
        // Read while 4 was still running and before 5 existed.
        let mut rows = vec![job(4, JobState::Running), job(3, JobState::Succeeded)];
        let missed = [
            msg(5, JobState::Queued),
            msg(4, JobState::Succeeded),
            FeedEvent::Deleted(3),
        ];
        replay(&mut rows, &missed, &all, 10, true);
        assert_eq!(
            ids(&rows),
            [(5, JobState::Queued), (4, JobState::Succeeded)]
        );
    }

    #[test]
    fn a_reload_answer_read_after_the_messages_is_not_set_back() {
        let all = JobFilter::default();
        // Read after 4 had finished: its older messages change nothing.
        let mut rows = vec![job(4, JobState::Failed)];
        let missed = [msg(4, JobState::Running), msg(4, JobState::Cancelling)];
        replay(&mut rows, &missed, &all, 10, true);
        assert_eq!(ids(&rows), [(4, JobState::Failed)]);
    }

    #[test]
    fn a_filtered_answer_ends_right_whichever_messages_it_had_seen() {
        let active = JobFilter {
            state: Some(StateSet::active()),
            ..Default::default()
        };
        // Job 6 started and finished while the request was out; the
        // answer (read after it finished) rightly leaves it out.
        let mut rows = vec![];
        replay(
            &mut rows,
            &[msg(6, JobState::Running), msg(6, JobState::Succeeded)],
            &active,
            10,
            true,
        );
        assert!(rows.is_empty());
        // Only its start had come when the answer arrived: the row shows
        // until its end comes over the feed, as it will.
        let mut rows = vec![];
        replay(&mut rows, &[msg(6, JobState::Running)], &active, 10, true);
        assert_eq!(ids(&rows), [(6, JobState::Running)]);
        apply(&mut rows, &job(6, JobState::Succeeded), &active, 10, true);
        assert!(rows.is_empty());
    }
}
