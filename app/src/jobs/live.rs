//! Live data from the server (browser only): one EventSource per tab on
//! `GET /api/live`, carrying the page's feed and its job stream as
//! subscriptions (docs/live.md), with reconnects: after any error the
//! connection is closed, a "reconnecting" state is shown, and it reopens
//! with exponential backoff (0.5 s up to 10 s) and no retry limit, from a
//! URL built anew each time (so a job stream resumes after the last line
//! it rendered). A `revoked` event (the session was signed out, the user
//! disabled, …) stops it for good: the state becomes [`Conn::SignedOut`]
//! and the banner says why.

use leptos::prelude::*;

use crate::model::event::FeedEvent;

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
    //! The tab's one connection: `GET /api/live` (docs/live.md) carrying
    //! the feed and every job stream the page follows, each a numbered
    //! subscription with its own resume point. Subscriptions come and go
    //! with the page's components (`POST /api/live/{conn}/subscribe`,
    //! `…/unsubscribe`); after any error the connection is closed, every
    //! subscription shows "reconnecting", and a new one is opened with
    //! backoff (0.5 s doubling to 10 s, no limit) whose URL names every
    //! subscription with where it stands.

    use std::cell::RefCell;
    use std::collections::BTreeMap;
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
        static MUX: Mux = Mux::default();
    }

    /// What a handler asks after an event: false ends its subscription.
    pub type Handler = Rc<dyn Fn(&str, &str) -> bool>;

    /// What a subscription follows.
    #[derive(Clone)]
    pub enum Stream {
        Feed,
        /// A job's stream, after the seq `after()` gives (what the page
        /// has rendered: it is the authority on where it stands).
        Job {
            id: i64,
            after: Rc<dyn Fn() -> i64>,
        },
    }

    impl Stream {
        fn name(&self) -> String {
            match self {
                Stream::Feed => "feed".into(),
                Stream::Job { id, .. } => format!("job:{id}"),
            }
        }
        fn after(&self) -> Option<i64> {
            match self {
                Stream::Feed => None,
                Stream::Job { after, .. } => Some(after()),
            }
        }
    }

    struct Sub {
        stream: Stream,
        on: Handler,
        conn: RwSignal<Conn>,
        /// The last cursor received: an event at or before it is dropped.
        cursor: Option<i64>,
        /// Carried by the open connection (in its URL, or subscribed).
        carried: bool,
    }

    impl Sub {
        /// Where it resumes: after what the page has and what came.
        fn after(&self) -> Option<i64> {
            self.stream.after().into_iter().chain(self.cursor).max()
        }

        /// The body of its `subscribe` request as number `n`.
        fn request(&self, n: u32) -> String {
            let name = self.stream.name();
            match self.after() {
                Some(a) => format!(r#"{{"sub":{n},"stream":"{name}","after":{a}}}"#),
                None => format!(r#"{{"sub":{n},"stream":"{name}"}}"#),
            }
        }
    }

    #[derive(Default)]
    struct Mux(Rc<RefCell<Inner>>);

    struct Inner {
        subs: BTreeMap<u32, Sub>,
        next: u32,
        es: Option<EventSource>,
        /// The open connection's id (from its `hello`).
        conn_id: Option<String>,
        closures: Vec<Closure<dyn FnMut(web_sys::Event)>>,
        backoff_ms: i32,
        /// A reconnect is scheduled.
        waiting: bool,
        revoked: bool,
    }

    impl Default for Inner {
        fn default() -> Inner {
            Inner {
                subs: BTreeMap::new(),
                next: 1,
                es: None,
                conn_id: None,
                closures: Vec::new(),
                backoff_ms: 500,
                waiting: false,
                revoked: false,
            }
        }
    }

    /// A subscription of the tab's connection, ended by [`Live::stop`].
    #[derive(Clone)]
    pub struct Live(u32);

    impl Live {
        pub fn stop(&self) {
            let n = self.0;
            MUX.with(|m| {
                let removed = m.0.borrow_mut().subs.remove(&n);
                if let Some(sub) = removed {
                    let conn_id = m.0.borrow().conn_id.clone();
                    if let (true, Some(conn_id)) = (sub.carried, conn_id) {
                        post(&conn_id, "unsubscribe", format!(r#"{{"sub":{n}}}"#), None);
                    }
                }
                if m.0.borrow().subs.is_empty() {
                    close(&m.0);
                }
            });
        }
    }

    /// Follows `stream` on the tab's connection, calling `on(event, data)`
    /// with each of its events (named as the single streams name them).
    pub fn subscribe(stream: Stream, on: Handler, conn: RwSignal<Conn>) -> Live {
        MUX.with(|m| {
            let mut inner = m.0.borrow_mut();
            if inner.revoked {
                conn.set(Conn::SignedOut);
                return Live(0);
            }
            let n = inner.next;
            inner.next += 1;
            let sub = Sub {
                stream,
                on,
                conn,
                cursor: None,
                carried: false,
            };
            let body = sub.request(n);
            inner.subs.insert(n, sub);
            let conn_id = inner.conn_id.clone();
            let open = inner.es.is_some() || inner.waiting;
            drop(inner);
            match (open, conn_id) {
                // Live: add it beside the others.
                (true, Some(conn_id)) => {
                    conn.set(Conn::Connecting);
                    post(&conn_id, "subscribe", body, Some(n));
                }
                // Opening: its `hello` subscribes what is not in the URL.
                (true, None) => conn.set(Conn::Connecting),
                (false, _) => connect(m.0.clone()),
            }
            Live(n)
        })
    }

    /// The connection's URL: every subscription with where it stands.
    fn url(inner: &mut Inner) -> String {
        let mut url = String::from("/api/live");
        for (i, (n, sub)) in inner.subs.iter_mut().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            match sub.after() {
                Some(a) => url.push_str(&format!("sub={n}:{}:{a}", sub.stream.name())),
                None => url.push_str(&format!("sub={n}:{}", sub.stream.name())),
            }
            sub.carried = true;
        }
        url
    }

    /// Closes the connection. Its handlers stay until the next one
    /// replaces them: this may run inside one of them.
    fn close(inner: &Rc<RefCell<Inner>>) {
        let mut i = inner.borrow_mut();
        if let Some(es) = i.es.take() {
            es.set_onmessage(None);
            es.set_onerror(None);
            es.close();
        }
        i.conn_id = None;
    }

    fn set_all(inner: &Rc<RefCell<Inner>>, state: Conn) {
        let conns: Vec<_> = inner.borrow().subs.values().map(|s| s.conn).collect();
        for c in conns {
            c.set(state);
        }
    }

    fn connect(inner: Rc<RefCell<Inner>>) {
        let url = {
            let mut i = inner.borrow_mut();
            i.waiting = false;
            if i.revoked || i.subs.is_empty() || i.es.is_some() {
                return;
            }
            url(&mut i)
        };
        let Ok(es) = EventSource::new(&url) else {
            schedule(inner);
            return;
        };
        let inner2 = inner.clone();
        let on_message = Closure::<dyn FnMut(web_sys::Event)>::new(move |ev: web_sys::Event| {
            let Some(data) = ev
                .dyn_ref::<MessageEvent>()
                .and_then(|m| m.data().as_string())
            else {
                return;
            };
            receive(&inner2, &data);
        });
        es.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let inner2 = inner.clone();
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            close(&inner2);
            if inner2.borrow().revoked {
                return;
            }
            set_all(&inner2, Conn::Reconnecting);
            schedule(inner2.clone());
        });
        es.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let mut i = inner.borrow_mut();
        i.es = Some(es);
        let old = std::mem::replace(&mut i.closures, vec![on_message, on_error]);
        // N.B.: dropped later, never while one of them runs (a subscribe
        // from inside a handler may open the connection).
        if !old.is_empty() {
            set_timeout(move || drop(old), std::time::Duration::ZERO);
        }
    }

    fn schedule(inner: Rc<RefCell<Inner>>) {
        let delay = {
            let mut i = inner.borrow_mut();
            if i.waiting {
                return;
            }
            i.waiting = true;
            let d = i.backoff_ms;
            i.backoff_ms = (d * 2).min(10_000);
            d
        };
        set_timeout(
            move || connect(inner),
            std::time::Duration::from_millis(delay as u64),
        );
    }

    /// One event of the connection: `<sub> <name> <cursor>` and its JSON.
    fn receive(inner: &Rc<RefCell<Inner>>, data: &str) {
        let Some((head, json)) = data.split_once('\n') else {
            return;
        };
        let mut parts = head.split(' ');
        let (Some(sub), Some(name), Some(cursor)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(n) = sub.parse::<u32>() else { return };
        if n == 0 {
            return control(inner, name, json);
        }
        let cursor = cursor.parse::<i64>().ok();
        let (on, conn) = {
            let mut i = inner.borrow_mut();
            let Some(s) = i.subs.get_mut(&n) else { return };
            // Never an event twice (one already had before a reconnect).
            if let (Some(c), Some(seen)) = (cursor, s.cursor) {
                if c <= seen {
                    return;
                }
            }
            if cursor.is_some() {
                s.cursor = cursor;
            }
            (s.on.clone(), s.conn)
        };
        if name == "refused" {
            inner.borrow_mut().subs.remove(&n);
            conn.set(Conn::Closed);
            return;
        }
        if !on(name, json) {
            // Its job ended: the server ends the subscription itself.
            inner.borrow_mut().subs.remove(&n);
            conn.set(Conn::Closed);
        }
    }

    fn control(inner: &Rc<RefCell<Inner>>, name: &str, json: &str) {
        match name {
            "hello" => {
                let id = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .and_then(|v| v["conn"].as_str().map(str::to_string));
                let pending: Vec<(u32, String)> = {
                    let mut i = inner.borrow_mut();
                    i.conn_id = id.clone();
                    i.backoff_ms = 500;
                    i.subs
                        .iter()
                        .filter(|(_, s)| !s.carried)
                        .map(|(n, s)| (*n, s.request(*n)))
                        .collect()
                };
                let carried: Vec<_> = inner
                    .borrow()
                    .subs
                    .values()
                    .filter(|s| s.carried)
                    .map(|s| s.conn)
                    .collect();
                for c in carried {
                    c.set(Conn::Live);
                }
                if let Some(id) = id {
                    for (n, body) in pending {
                        post(&id, "subscribe", body, Some(n));
                    }
                }
            }
            "ended" => {
                let n = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .and_then(|v| v["sub"].as_u64());
                if let Some(n) = n {
                    let sub = inner.borrow_mut().subs.remove(&(n as u32));
                    if let Some(sub) = sub {
                        sub.conn.set(Conn::Closed);
                    }
                }
            }
            "revoked" => {
                let reason = Revoked::decode(json)
                    .map(|r| r.reason)
                    .unwrap_or_else(|_| "signed out".to_string());
                REVOKED.with(|r| {
                    r.borrow_mut().get_or_insert(reason);
                });
                inner.borrow_mut().revoked = true;
                close(inner);
                set_all(inner, Conn::SignedOut);
            }
            _ => {}
        }
    }

    /// `POST /api/live/{conn}/{what}` with `body`; a failed subscribe
    /// (the connection ended, or is held by another replica) reopens the
    /// connection, whose URL then carries subscription `sub`.
    fn post(conn_id: &str, what: &'static str, body: String, sub: Option<u32>) {
        let url = format!("/api/live/{conn_id}/{what}");
        let conn_id = conn_id.to_string();
        leptos::task::spawn_local(async move {
            let ok = send(&url, body).await;
            if what != "subscribe" {
                return;
            }
            MUX.with(|m| {
                let mut i = m.0.borrow_mut();
                // N.B.: an answer for a connection that is gone already.
                if i.conn_id.as_deref() != Some(&conn_id) {
                    return;
                }
                let Some(s) = sub.and_then(|n| i.subs.get_mut(&n)) else {
                    return;
                };
                if ok {
                    s.carried = true;
                    let c = s.conn;
                    drop(i);
                    c.set(Conn::Live);
                } else {
                    drop(i);
                    close(&m.0);
                    set_all(&m.0, Conn::Reconnecting);
                    schedule(m.0.clone());
                }
            });
        });
    }

    async fn send(url: &str, body: String) -> bool {
        use wasm_bindgen_futures::JsFuture;
        let Some(window) = web_sys::window() else {
            return false;
        };
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_body(&JsValue::from_str(&body));
        let Ok(headers) = web_sys::Headers::new() else {
            return false;
        };
        let _ = headers.set("content-type", "application/json");
        init.set_headers(&headers);
        let Ok(req) = web_sys::Request::new_with_str_and_init(url, &init) else {
            return false;
        };
        match JsFuture::from(window.fetch_with_request(&req)).await {
            Ok(res) => res
                .dyn_into::<web_sys::Response>()
                .map(|r| r.ok())
                .unwrap_or(false),
            Err(_) => false,
        }
    }
}

#[cfg(feature = "hydrate")]
pub use browser::{subscribe, Handler, Live, Stream};

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
                let _ = subscribe(Stream::Feed, on, feed.conn);
            }
        }
    }
}
