//! Live data from the server over EventSource (browser only), with
//! reconnects: after any error the stream is closed, a "reconnecting"
//! state is shown, and it reopens with exponential backoff (0.5 s up to
//! 10 s) and no retry limit, from a URL built anew each time (so a job
//! stream resumes after the last line it rendered). A `revoked` event (the
//! session was signed out, the user disabled, …) stops it for good: the
//! state becomes [`Conn::SignedOut`] and the banner says why.

use leptos::prelude::*;

use crate::model::event::FeedEvent;
#[cfg(feature = "hydrate")]
use crate::model::event::FeedEventKind;

/// The state of a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Live,
    Reconnecting,
    /// Ended on purpose (the job finished).
    Closed,
    /// The server ended it: the credential was revoked ([`revoked_reason`]).
    SignedOut,
}

/// Why the server ended this page's streams, once it has (browser only).
pub fn revoked_reason() -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        browser::REVOKED.with(|r| r.borrow().clone())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        None
    }
}

impl Conn {
    /// The name pages show it by (`data-feed` on job tables).
    pub fn as_str(self) -> &'static str {
        match self {
            Conn::Connecting => "connecting",
            Conn::Live => "live",
            Conn::Reconnecting => "reconnecting",
            Conn::Closed => "closed",
            Conn::SignedOut => "signed-out",
        }
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::RefCell;
    use std::rc::Rc;

    use leptos::prelude::*;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{EventSource, MessageEvent};

    use super::Conn;
    use crate::model::event::Revoked;

    thread_local! {
        /// Why the server ended the page's streams (the first reason).
        pub static REVOKED: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// What a handler asks after an event.
    pub type Handler = Rc<dyn Fn(&str, &str) -> bool>;

    struct Inner {
        es: Option<EventSource>,
        closures: Vec<Closure<dyn FnMut(web_sys::Event)>>,
        stopped: bool,
        backoff_ms: i32,
    }

    /// A live EventSource that reconnects until stopped.
    #[derive(Clone)]
    pub struct Live(Rc<RefCell<Inner>>);

    impl Live {
        pub fn stop(&self) {
            let mut inner = self.0.borrow_mut();
            inner.stopped = true;
            if let Some(es) = inner.es.take() {
                es.close();
            }
            inner.closures.clear();
        }
    }

    /// Opens `url()` and calls `on(event, data)` for each of `events`;
    /// `on` returning false closes the stream for good.
    pub fn open(
        url: Rc<dyn Fn() -> String>,
        events: &'static [&'static str],
        on: Handler,
        conn: RwSignal<Conn>,
    ) -> Live {
        let live = Live(Rc::new(RefCell::new(Inner {
            es: None,
            closures: Vec::new(),
            stopped: false,
            backoff_ms: 500,
        })));
        connect(live.clone(), url, events, on, conn);
        live
    }

    fn connect(
        live: Live,
        url: Rc<dyn Fn() -> String>,
        events: &'static [&'static str],
        on: Handler,
        conn: RwSignal<Conn>,
    ) {
        if live.0.borrow().stopped {
            return;
        }
        let Ok(es) = EventSource::new(&url()) else {
            schedule(live, url, events, on, conn);
            return;
        };
        let mut closures = Vec::new();
        for name in events {
            let (on, live2) = (on.clone(), live.clone());
            let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |ev: web_sys::Event| {
                let Some(msg) = ev.dyn_ref::<MessageEvent>() else {
                    return;
                };
                let data = msg.data().as_string().unwrap_or_default();
                conn.set(Conn::Live);
                live2.0.borrow_mut().backoff_ms = 500;
                if !on(name, &data) {
                    live2.stop();
                    conn.set(Conn::Closed);
                }
            });
            let _ = es.add_event_listener_with_callback(name, cb.as_ref().unchecked_ref());
            closures.push(cb);
        }
        // The server ends every stream of a revoked credential with this:
        // reconnecting would only be refused.
        let live2 = live.clone();
        let on_revoked = Closure::<dyn FnMut(web_sys::Event)>::new(move |ev: web_sys::Event| {
            let data = ev
                .dyn_ref::<MessageEvent>()
                .and_then(|m| m.data().as_string())
                .unwrap_or_default();
            let reason = Revoked::decode(&data)
                .map(|r| r.reason)
                .unwrap_or_else(|_| "signed out".to_string());
            REVOKED.with(|r| {
                r.borrow_mut().get_or_insert(reason);
            });
            live2.stop();
            conn.set(Conn::SignedOut);
        });
        let _ =
            es.add_event_listener_with_callback(Revoked::NAME, on_revoked.as_ref().unchecked_ref());
        closures.push(on_revoked);
        let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| conn.set(Conn::Live));
        es.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        closures.push(on_open);
        let (live2, url2, on2) = (live.clone(), url.clone(), on.clone());
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            let es = live2.0.borrow_mut().es.take();
            if let Some(es) = es {
                es.close();
            }
            if live2.0.borrow().stopped {
                return;
            }
            conn.set(Conn::Reconnecting);
            schedule(live2.clone(), url2.clone(), events, on2.clone(), conn);
        });
        es.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        closures.push(on_error);
        let mut inner = live.0.borrow_mut();
        inner.es = Some(es);
        inner.closures = closures;
    }

    fn schedule(
        live: Live,
        url: Rc<dyn Fn() -> String>,
        events: &'static [&'static str],
        on: Handler,
        conn: RwSignal<Conn>,
    ) {
        let delay = {
            let mut inner = live.0.borrow_mut();
            let d = inner.backoff_ms;
            inner.backoff_ms = (d * 2).min(10_000);
            d
        };
        set_timeout(
            move || connect(live, url, events, on, conn),
            std::time::Duration::from_millis(delay as u64),
        );
    }
}

#[cfg(feature = "hydrate")]
pub use browser::{open, Handler, Live};

/// The "reconnecting…" banner, or why live updates stopped for good.
#[component]
pub fn ConnBanner(conn: RwSignal<Conn>) -> impl IntoView {
    move || match conn.get() {
        Conn::Reconnecting => Some(
            view! {
                <div class="banner warn" role="status">
                    "Connection lost: reconnecting… (the job keeps running on the server)"
                </div>
            }
            .into_any(),
        ),
        Conn::SignedOut => Some(view! { <SignedOutBanner /> }.into_any()),
        _ => None,
    }
}

/// The page's feed was ended because its credential was revoked: says so
/// once, above the page (every job table on it depends on that feed).
#[component]
pub fn FeedBanner() -> impl IntoView {
    let feed = use_context::<Feed>().map(|f| f.conn);
    move || {
        feed.is_some_and(|c| c.get() == Conn::SignedOut)
            .then(|| view! { <SignedOutBanner /> })
    }
}

/// "Signed out": the server ended this page's live updates because the
/// credential was revoked; says why and where to sign in again.
#[component]
pub fn SignedOutBanner() -> impl IntoView {
    let reason = revoked_reason().unwrap_or_else(|| "signed out".to_string());
    view! {
        <div class="banner warn signed-out" role="alert">
            {format!("Live updates stopped: {reason}. ")}
            <a href="/login">"Sign in again"</a>
        </div>
    }
}

/// Who listens to the feed: (id, callback).
#[cfg(feature = "hydrate")]
type Subscribers = std::rc::Rc<std::cell::RefCell<Vec<(u64, std::rc::Rc<dyn Fn(&FeedEvent)>)>>>;

/// The page's one connection to `/api/events`, shared by every job table
/// on it (browser only; on the server it carries nothing).
#[derive(Clone, Copy)]
pub struct Feed {
    #[cfg(feature = "hydrate")]
    subscribers: StoredValue<Subscribers, leptos::prelude::LocalStorage>,
    #[cfg(feature = "hydrate")]
    started: StoredValue<bool>,
    pub conn: RwSignal<Conn>,
}

impl Feed {
    /// Creates the feed context (once, in `App`).
    pub fn provide() {
        let feed = Feed {
            #[cfg(feature = "hydrate")]
            subscribers: StoredValue::new_local(Default::default()),
            #[cfg(feature = "hydrate")]
            started: StoredValue::new(false),
            conn: RwSignal::new(Conn::Connecting),
        };
        // Each time the feed (re)opens, every subscriber is told to resync:
        // what changed between the page's render and the first connection,
        // or while the connection was down, came over no feed.
        #[cfg(feature = "hydrate")]
        {
            let (subs, conn) = (feed.subscribers, feed.conn);
            Effect::new(move |prev: Option<Conn>| {
                let now = conn.get();
                if now == Conn::Live && prev.is_some_and(|p| p != Conn::Live) {
                    let list: Vec<_> =
                        subs.with_value(|s| s.borrow().iter().map(|(_, f)| f.clone()).collect());
                    for f in list {
                        f(&FeedEvent::Resync);
                    }
                }
                now
            });
        }
        provide_context(feed);
    }

    /// Calls `f` for every job change until the calling component goes away.
    #[allow(unused_variables)]
    pub fn subscribe(f: impl Fn(&FeedEvent) + 'static) {
        #[cfg(feature = "hydrate")]
        {
            let Some(feed) = use_context::<Feed>() else {
                return;
            };
            let id = js_sys::Math::random().to_bits();
            feed.subscribers
                .with_value(|s| s.borrow_mut().push((id, std::rc::Rc::new(f))));
            let subs = feed.subscribers;
            on_cleanup(move || {
                subs.try_with_value(|s| s.borrow_mut().retain(|(i, _)| *i != id));
            });
            if !feed.started.get_value() {
                feed.started.set_value(true);
                let subs = feed.subscribers.get_value();
                let on: Handler = std::rc::Rc::new(move |event: &str, data: &str| {
                    let msg = match FeedEvent::decode(event, data) {
                        Ok(msg) => msg,
                        Err(e) => {
                            leptos::logging::warn!("{e}");
                            None
                        }
                    };
                    if let Some(msg) = msg {
                        let list: Vec<_> = subs.borrow().iter().map(|(_, f)| f.clone()).collect();
                        for f in list {
                            f(&msg);
                        }
                    }
                    true
                });
                // The page's feed lives as long as the page.
                let live = open(
                    std::rc::Rc::new(|| "/api/events".to_string()),
                    FeedEventKind::names(),
                    on,
                    feed.conn,
                );
                std::mem::forget(live);
            }
        }
    }
}
