//! Live data from the server (browser only): the page's feed and its job
//! stream are subscriptions of the browser's one `GET /api/live`
//! connection, shared by all its tabs (docs/live.md). The hub that holds it
//! (`public/live.mjs`) reconnects after any error with exponential backoff
//! (0.5 s up to 10 s, no retry limit) from each subscription's cursor, and
//! says "reconnecting" meanwhile. A `revoked` event (the session was signed
//! out, the user disabled, …) stops it for good: the state becomes
//! [`Conn::SignedOut`] and the banner says why.

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
    //! The tab's side of the browser's one live connection (docs/live.md):
    //! the feed and every job stream the page follows, each a numbered
    //! subscription with its own resume point, handed to the hub of
    //! `/live.mjs` (imported as `opsdeck-live`), which holds the
    //! connection in a shared worker, a leader tab or this tab, and hands
    //! back each event tagged with the subscription's number.

    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use leptos::prelude::*;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    use super::Conn;
    use crate::model::event::Revoked;
    use crate::model::live::{Ended, CONNECTION, ENDED, REFUSED};

    #[wasm_bindgen(module = "opsdeck-live")]
    extern "C" {
        /// The tab's way to the hub (`Client` in public/live.mjs).
        #[derive(Clone)]
        type Client;
        #[wasm_bindgen(js_name = open)]
        fn open_client(deliver: &js_sys::Function) -> Client;
        #[wasm_bindgen(method)]
        fn subscribe(this: &Client, id: u32, stream: &str, after: Option<f64>);
        #[wasm_bindgen(method)]
        fn unsubscribe(this: &Client, id: u32);
    }

    /// The hub's own event on a subscription: data `"live"`,
    /// `"reconnecting"` or `"connecting"`.
    const LINK: &str = "link";

    thread_local! {
        /// Why the server ended the page's streams (the first reason).
        pub static REVOKED: RefCell<Option<String>> = const { RefCell::new(None) };
        static MUX: RefCell<Mux> = RefCell::new(Mux::default());
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
                Stream::Feed => crate::model::live::Stream::Feed.to_string(),
                Stream::Job { id, .. } => crate::model::live::Stream::Job(*id).to_string(),
            }
        }
    }

    struct Sub {
        on: Handler,
        conn: RwSignal<Conn>,
        /// The last cursor received: an event at or before it is dropped
        /// (one sent again after a reconnect or a hand-over).
        cursor: Option<i64>,
    }

    struct Mux {
        subs: BTreeMap<u32, Sub>,
        next: u32,
        client: Option<Client>,
        revoked: bool,
    }

    impl Default for Mux {
        fn default() -> Mux {
            Mux {
                subs: BTreeMap::new(),
                next: 1,
                client: None,
                revoked: false,
            }
        }
    }

    /// A subscription of the tab, ended by [`Live::stop`].
    #[derive(Clone)]
    pub struct Live(u32);

    impl Live {
        pub fn stop(&self) {
            let client = MUX.with(|m| {
                let mut m = m.borrow_mut();
                m.subs.remove(&self.0).and(m.client.clone())
            });
            // N.B.: called with the tab's state released, as every call
            // into the hub: it may answer at once.
            if let Some(c) = client {
                c.unsubscribe(self.0);
            }
        }
    }

    /// Follows `stream`, calling `on(event, data)` with each of its events
    /// (named as the single streams name them).
    pub fn subscribe(stream: Stream, on: Handler, conn: RwSignal<Conn>) -> Live {
        let after = match &stream {
            Stream::Feed => None,
            Stream::Job { after, .. } => Some(after() as f64),
        };
        let added = MUX.with(|m| {
            let mut m = m.borrow_mut();
            if m.revoked {
                return None;
            }
            let n = m.next;
            m.next += 1;
            m.subs.insert(
                n,
                Sub {
                    on,
                    conn,
                    cursor: None,
                },
            );
            Some((n, m.client.clone()))
        });
        let Some((n, client)) = added else {
            conn.set(Conn::SignedOut);
            return Live(0);
        };
        conn.set(Conn::Connecting);
        let client = client.unwrap_or_else(|| {
            let deliver = Closure::<dyn Fn(JsValue)>::new(|data: JsValue| {
                if let Some(data) = data.as_string() {
                    receive(&data);
                }
            });
            let client = open_client(deliver.as_ref().unchecked_ref());
            // The hub calls it for the tab's whole life.
            deliver.forget();
            MUX.with(|m| m.borrow_mut().client = Some(client.clone()));
            client
        });
        client.subscribe(n, &stream.name(), after);
        Live(n)
    }

    /// One message from the hub: `<sub> <name> <cursor>` and its JSON.
    fn receive(data: &str) {
        let Some((head, json)) = data.split_once('\n') else {
            return;
        };
        let mut parts = head.split(' ');
        let (Some(sub), Some(name), Some(cursor)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(n) = sub.parse::<u32>() else { return };
        if n == CONNECTION {
            return control(name, json);
        }
        let cursor = cursor.parse::<i64>().ok();
        let (on, conn) = {
            let found = MUX.with(|m| {
                let mut m = m.borrow_mut();
                let s = m.subs.get_mut(&n)?;
                if name != LINK {
                    // Never an event twice.
                    if let (Some(c), Some(seen)) = (cursor, s.cursor) {
                        if c <= seen {
                            return None;
                        }
                    }
                    if cursor.is_some() {
                        s.cursor = cursor;
                    }
                }
                Some((s.on.clone(), s.conn))
            });
            let Some(found) = found else { return };
            found
        };
        match name {
            LINK => conn.set(match json.trim_matches('"') {
                "live" => Conn::Live,
                "reconnecting" => Conn::Reconnecting,
                _ => Conn::Connecting,
            }),
            REFUSED => forget(n),
            _ => {
                if !on(name, json) {
                    // Its job ended: the server ends the subscription itself.
                    forget(n);
                }
            }
        }
    }

    /// Drops subscription `n` without an unsubscribe: the server did.
    fn forget(n: u32) {
        let sub = MUX.with(|m| m.borrow_mut().subs.remove(&n));
        if let Some(sub) = sub {
            sub.conn.set(Conn::Closed);
        }
    }

    fn control(name: &str, json: &str) {
        match name {
            ENDED => {
                if let Ok(e) = serde_json::from_str::<Ended>(json) {
                    forget(e.sub);
                }
            }
            Revoked::NAME => {
                let reason = Revoked::decode(json)
                    .map(|r| r.reason)
                    .unwrap_or_else(|_| "signed out".to_string());
                REVOKED.with(|r| {
                    r.borrow_mut().get_or_insert(reason);
                });
                let conns: Vec<_> = MUX.with(|m| {
                    let mut m = m.borrow_mut();
                    m.revoked = true;
                    std::mem::take(&mut m.subs)
                        .into_values()
                        .map(|s| s.conn)
                        .collect()
                });
                for c in conns {
                    c.set(Conn::SignedOut);
                }
            }
            _ => {}
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
