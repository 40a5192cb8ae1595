//! `/targets/{id}/console`: a shell on the target in xterm.js over the
//! terminal WebSocket. xterm.js (345 KB) loads only here: every page's wasm
//! imports the bare names `xterm` and `xterm-addon-fit`, which the import map
//! points at a tiny shim (`/xterm-lazy.mjs`) that fetches the real modules
//! when this page asks for them.

use leptos::prelude::*;
use leptos_meta::{Stylesheet, Title};
use leptos_router::hooks::use_params_map;

use crate::components::ErrorList;
use crate::jobs::list_targets;
use crate::model::template::TargetInfo;

/// What the console shows above the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Loading,
    Connected {
        resumed: bool,
    },
    /// The socket dropped; the shell lives on for the grace period.
    Reconnecting {
        in_secs: u32,
        /// Why the server closed the socket, when it said (a limit).
        why: Option<String>,
    },
    /// The shell exited, or the server ended the session.
    Ended(String),
}

impl Status {
    /// A stable name for tests and styles.
    fn key(&self) -> &'static str {
        match self {
            Status::Loading => "loading",
            Status::Connected { .. } => "connected",
            Status::Reconnecting { .. } => "reconnecting",
            Status::Ended(_) => "ended",
        }
    }

    fn text(&self) -> String {
        match self {
            Status::Loading => "Connecting…".into(),
            Status::Connected { resumed: false } => "Connected".into(),
            Status::Connected { resumed: true } => {
                "Reconnected to the same shell (recent output replayed)".into()
            }
            Status::Reconnecting { in_secs, why: None } => {
                format!("Disconnected: the shell keeps running; reconnecting in {in_secs} s…")
            }
            Status::Reconnecting {
                in_secs,
                why: Some(why),
            } => format!(
                "Disconnected by the server ({why}): the shell keeps running; reconnecting in {in_secs} s…"
            ),
            Status::Ended(why) => why.clone(),
        }
    }
}

#[component]
pub fn ConsolePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id")).unwrap_or_default();
    let targets = Resource::new(id, |_| list_targets());
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    let want = id();
                    targets.await.map(|ts| match ts.into_iter().find(|t| t.id == want) {
                        Some(t) if t.terminal => view! { <Console target=t /> }.into_any(),
                        Some(t) => view! { <NoConsole target=t /> }.into_any(),
                        None => view! { <crate::targets::NoTarget id=want /> }.into_any(),
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn NoConsole(target: TargetInfo) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::backend::set_status(403);
    view! {
        <Title text="No console" />
        <section class="panel">
            <h1>"No console on " {target.title.clone()}</h1>
            <p>
                "This target does not open a terminal for you: its configuration needs "
                <code>"terminal = true"</code> " and your role in " <code>"terminal_roles"</code>
                ". Ask an admin. " <a href=format!("/targets/{}", target.id)>"Back to the target"</a>
            </p>
        </section>
    }
}

#[component]
fn Console(target: TargetInfo) -> impl IntoView {
    let status = RwSignal::new(Status::Loading);
    let reconnect = RwSignal::new(0u32);
    let host = NodeRef::<leptos::html::Div>::new();
    let ended = move || matches!(status.get(), Status::Ended(_) | Status::Reconnecting { .. });
    #[cfg(feature = "hydrate")]
    {
        let id = target.id.clone();
        Effect::new(move |_| {
            if let Some(el) = host.get() {
                browser::start(el, id.clone(), status, reconnect);
            }
        });
    }
    view! {
        <Title text=format!("Console · {}", target.title) />
        <Stylesheet id="xterm-css" href="/vendor/xterm/xterm.css" />
        <div class="page-head">
            <h1>
                "Console " <span class="muted small">{target.title.clone()} " (" {target.id.clone()} ")"</span>
            </h1>
            <a href=format!("/targets/{}", target.id) class="button secondary">"Back to the target"</a>
        </div>
        <p class="console-status" role="status" aria-live="polite">
            <span data-status=move || status.get().key()>
                {move || status.get().text()}
            </span>
            <Show when=ended>
                " "
                <button type="button" class="small" on:click=move |_| reconnect.update(|n| *n += 1)>
                    "Reconnect now"
                </button>
            </Show>
        </p>
        <div class="terminal-box" node_ref=host aria-label="Terminal"></div>
        <noscript><p class="field-error">"The console needs JavaScript."</p></noscript>
        <p class="muted small">
            "Copy: select, then Ctrl+Shift+C. Paste: Ctrl+Shift+V or the browser's menu. "
            "Closing this tab does not stop what runs: the shell waits for you to come back for a while."
        </p>
    }
}

#[cfg(feature = "hydrate")]
pub(crate) use browser::load_xterm;

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::RefCell;
    use std::rc::Rc;

    use leptos::prelude::*;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{CloseEvent, KeyboardEvent, MessageEvent, WebSocket};
    use xterm_js_rs::addons::fit::FitAddon;
    use xterm_js_rs::{Terminal, TerminalAddon, TerminalOptions, Theme};

    use super::Status;
    use crate::model::terminal::{ClientFrame, ServerFrame};

    // The lazy loader of `/xterm-lazy.mjs`.
    #[wasm_bindgen(module = "xterm")]
    extern "C" {
        #[wasm_bindgen(js_name = loadXterm)]
        pub(crate) fn load_xterm() -> js_sys::Promise;
    }

    // xterm 6 members that xterm-js-rs (written for xterm 4) does not bind,
    // on a view of the same object (`unchecked_ref`, never `dyn_into`: no
    // instanceof check against a class name the module does not export).
    #[wasm_bindgen]
    extern "C" {
        type TerminalExt;
        #[wasm_bindgen(method, js_name = getSelection)]
        fn get_selection(this: &TerminalExt) -> String;
        #[wasm_bindgen(method, js_name = attachCustomKeyEventHandler)]
        fn attach_custom_key_event_handler(this: &TerminalExt, f: &js_sys::Function);
    }

    struct Conn {
        term: Rc<Terminal>,
        fit: FitAddon,
        ws: Option<WebSocket>,
        target: String,
        session: Option<String>,
        /// The server ended the session or the shell exited: no auto-reconnect.
        over: bool,
        backoff: u32,
        closures: Vec<Box<dyn std::any::Any>>,
        socket_closures: Vec<Box<dyn std::any::Any>>,
    }

    type Shared = Rc<RefCell<Conn>>;

    fn storage_key(target: &str) -> String {
        format!("opsdeck.console.{target}")
    }

    fn session_storage() -> Option<web_sys::Storage> {
        web_sys::window()?.session_storage().ok()?
    }

    pub fn start(
        el: web_sys::HtmlDivElement,
        target: String,
        status: RwSignal<Status>,
        reconnect: RwSignal<u32>,
    ) {
        // Filled once xterm.js has loaded; read by the reconnect button and
        // emptied when the page goes away (closing the socket).
        let slot: Rc<RefCell<Option<Shared>>> = Rc::default();
        let s = slot.clone();
        Effect::new(move |prev: Option<()>| {
            reconnect.track();
            let conn = s.borrow().clone();
            if let (Some(()), Some(c)) = (prev, conn) {
                c.borrow_mut().over = false;
                c.borrow_mut().backoff = 1;
                connect(&c, status);
                c.borrow().term.focus();
            }
        });
        let s = send_wrapper::SendWrapper::new(slot.clone());
        on_cleanup(move || {
            if let Some(c) = s.borrow_mut().take() {
                if let Ok(mut c) = c.try_borrow_mut() {
                    c.over = true;
                    if let Some(ws) = c.ws.take() {
                        let _ = ws.close();
                    }
                    c.term.dispose();
                }
            }
        });
        leptos::task::spawn_local(async move {
            if wasm_bindgen_futures::JsFuture::from(load_xterm())
                .await
                .is_err()
            {
                status.set(Status::Ended(
                    "Could not load xterm.js: reload the page.".into(),
                ));
                return;
            }
            let opts: TerminalOptions = js_sys::Object::new().unchecked_into();
            opts.set_cursor_blink(true);
            opts.set_font_size(14);
            opts.set_scrollback(5000);
            opts.set_font_family("ui-monospace, SFMono-Regular, Menlo, Consolas, monospace");
            let theme: Theme = js_sys::Object::new().unchecked_into();
            theme.set_background("#111418");
            theme.set_foreground("#e6e6e6");
            opts.set_theme(&theme);
            let term = Rc::new(Terminal::construct(Some(&opts)));
            term.open(el.unchecked_into());
            let fit = FitAddon::new();
            term.load_addon(JsValue::clone(&fit).unchecked_into::<TerminalAddon>());
            fit.fit();
            let session =
                session_storage().and_then(|s| s.get_item(&storage_key(&target)).ok().flatten());
            let conn: Shared = Rc::new(RefCell::new(Conn {
                term: term.clone(),
                fit,
                ws: None,
                target,
                session,
                over: false,
                backoff: 1,
                closures: Vec::new(),
                socket_closures: Vec::new(),
            }));
            wire_terminal(&conn, status);
            connect(&conn, status);
            term.focus();
            *slot.borrow_mut() = Some(conn);
        });
    }

    fn send(conn: &Shared, frame: &ClientFrame) {
        if let Some(ws) = conn.borrow().ws.as_ref() {
            if ws.ready_state() == WebSocket::OPEN {
                if let Ok(text) = serde_json::to_string(frame) {
                    let _ = ws.send_with_str(&text);
                }
            }
        }
    }

    /// Keystrokes, resizes, copy.
    fn wire_terminal(conn: &Shared, _status: RwSignal<Status>) {
        let term = conn.borrow().term.clone();
        let c = conn.clone();
        let on_data = Closure::<dyn FnMut(String)>::new(move |data: String| {
            send(&c, &ClientFrame::Input { data });
        });
        term.on_data(on_data.as_ref().unchecked_ref());
        let c = conn.clone();
        let on_resize = Closure::<dyn FnMut(JsValue)>::new(move |size: JsValue| {
            let get = |k: &str| {
                js_sys::Reflect::get(&size, &k.into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0) as u16
            };
            send(
                &c,
                &ClientFrame::Resize {
                    cols: get("cols"),
                    rows: get("rows"),
                },
            );
        });
        term.on_resize(on_resize.as_ref().unchecked_ref());
        // Ctrl+Shift+C copies the selection; Ctrl+Shift+V is left to the
        // browser, whose paste event xterm.js turns into input.
        let t = term.clone();
        let on_key = Closure::<dyn FnMut(KeyboardEvent) -> bool>::new(move |e: KeyboardEvent| {
            if e.ctrl_key() && e.shift_key() && (e.code() == "KeyC" || e.code() == "KeyV") {
                if e.type_() == "keydown" && e.code() == "KeyC" {
                    let text = t.unchecked_ref::<TerminalExt>().get_selection();
                    if let Some(w) = web_sys::window() {
                        let _ = w.navigator().clipboard().write_text(&text);
                    }
                    e.prevent_default();
                }
                return false;
            }
            true
        });
        term.unchecked_ref::<TerminalExt>()
            .attach_custom_key_event_handler(on_key.as_ref().unchecked_ref());
        let c = conn.clone();
        let on_window_resize = Closure::<dyn FnMut()>::new(move || c.borrow().fit.fit());
        if let Some(w) = web_sys::window() {
            let _ = w.add_event_listener_with_callback(
                "resize",
                on_window_resize.as_ref().unchecked_ref(),
            );
        }
        let mut c = conn.borrow_mut();
        c.closures.push(Box::new(on_data));
        c.closures.push(Box::new(on_resize));
        c.closures.push(Box::new(on_key));
        c.closures.push(Box::new(on_window_resize));
    }

    fn url(conn: &Conn) -> Option<String> {
        let loc = web_sys::window()?.location();
        let scheme = if loc.protocol().ok()? == "https:" {
            "wss"
        } else {
            "ws"
        };
        let mut url = format!(
            "{scheme}://{}/api/targets/{}/terminal?cols={}&rows={}",
            loc.host().ok()?,
            conn.target,
            conn.term.get_cols(),
            conn.term.get_rows()
        );
        if let Some(s) = &conn.session {
            url.push_str("&session=");
            url.push_str(s);
        }
        Some(url)
    }

    fn connect(conn: &Shared, status: RwSignal<Status>) {
        if let Some(old) = conn.borrow_mut().ws.take() {
            let _ = old.close();
        }
        let Some(ws) = url(&conn.borrow()).and_then(|u| WebSocket::new(&u).ok()) else {
            status.set(Status::Ended(
                "Could not open the connection: reload the page.".into(),
            ));
            return;
        };
        status.set(Status::Loading);
        let c = conn.clone();
        let me = ws.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let Some(text) = e.data().as_string() else {
                return;
            };
            let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else {
                return;
            };
            match frame {
                ServerFrame::Session { id, resumed } => {
                    if let Some(s) = session_storage() {
                        let _ = s.set_item(&storage_key(&c.borrow().target), &id);
                    }
                    let mut cm = c.borrow_mut();
                    cm.session = Some(id);
                    cm.backoff = 1;
                    // A reattach replays the recent screen: start from clean.
                    cm.term.reset();
                    status.set(Status::Connected { resumed });
                }
                ServerFrame::Output { data } => c.borrow().term.write(&data),
                ServerFrame::Exit { code } => {
                    let mut cm = c.borrow_mut();
                    // A `closed` frame came first when the server ended the
                    // session (signed out, idle, shutdown): keep its reason.
                    let said_why = cm.over;
                    cm.over = true;
                    cm.session = None;
                    if let Some(s) = session_storage() {
                        let _ = s.remove_item(&storage_key(&cm.target));
                    }
                    if !said_why {
                        status.set(Status::Ended(format!(
                            "The shell exited with code {code}. Reconnect to start a new one."
                        )));
                    }
                }
                ServerFrame::Closed { reason } => {
                    c.borrow_mut().over = true;
                    status.set(Status::Ended(format!("Session closed: {reason}.")));
                }
            }
        });
        let c = conn.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            let (over, current, delay) = {
                let cm = c.borrow();
                let current = cm.ws.as_ref().is_some_and(|w| w == &me);
                (cm.over, current, cm.backoff)
            };
            if over || !current {
                return;
            }
            // 1008 and 1009: the server refused input over a limit, and
            // says which in the reason.
            let why =
                (matches!(e.code(), 1008 | 1009) && !e.reason().is_empty()).then(|| e.reason());
            status.set(Status::Reconnecting {
                in_secs: delay,
                why,
            });
            c.borrow_mut().backoff = (delay * 2).min(10);
            let c2 = c.clone();
            set_timeout(
                move || {
                    let again = !c2.borrow().over
                        && matches!(status.get_untracked(), Status::Reconnecting { .. });
                    if again {
                        connect(&c2, status);
                    }
                },
                std::time::Duration::from_secs(delay.into()),
            );
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let mut cm = conn.borrow_mut();
        cm.ws = Some(ws);
        cm.socket_closures = vec![Box::new(on_message), Box::new(on_close)];
    }
}
