//! The job list pages: `/jobs` (what the caller may see) and `/admin/jobs`.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::auth::RequireAdmin;
use crate::jobs::filters::JobFilters;
use crate::jobs::table::{JobTable, TableSpec};

fn all_jobs(path: &str) -> TableSpec {
    TableSpec {
        fixed: Default::default(),
        filters: true,
        path: path.to_string(),
        limit: 50,
        empty: "No jobs match.",
    }
}

#[component]
pub fn JobsPage() -> impl IntoView {
    view! {
        <Title text="Jobs" />
        <h1>"Jobs"</h1>
        <JobFilters spec=all_jobs("/jobs") />
        <JobTable spec=all_jobs("/jobs") />
    }
}

#[component]
pub fn AdminJobsPage() -> impl IntoView {
    view! {
        <Title text="All jobs" />
        <RequireAdmin>
            <h1>"All jobs"</h1>
            <p class="muted">"Every job on this server, whoever launched it."</p>
            <JobFilters spec=all_jobs("/admin/jobs") />
            <JobTable spec=all_jobs("/admin/jobs") />
        </RequireAdmin>
    }
}
