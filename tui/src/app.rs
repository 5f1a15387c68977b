//! Dashboard state: what the agent last said, what the user is looking at,
//! and every key's effect. Rendering reads this and nothing else.
use std::{collections::HashMap, time::Duration};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use kmesh_api::v1::Snapshot;

use crate::{
    calls::{self, CallRow},
    feed::Feed,
    fetch::Poll,
    history::History,
    rows::{self, BackendRow, Health, ServiceRow},
    sort::{Sort, SortKey},
    theme::Theme,
};

/// Rows PageUp/PageDown move; the table height is the renderer's business.
const PAGE: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Services,
    /// The backends of the selected service.
    Backends,
    Feed,
    /// Who calls whom: client workload → service.
    Calls,
}

/// A backend of a service: (service name, backend address).
type BackendKey = (String, String);

pub struct App {
    pub theme: Theme,
    pub interval: Duration,
    pub view: View,
    /// Where `c` goes back to from the feed.
    view_before_feed: View,
    /// Where `w` goes back to from the calls.
    view_before_calls: View,
    pub help: bool,
    pub quit: bool,
    /// The filter being typed after `/`; applied on Enter.
    pub typing: Option<String>,
    pub service_filter: String,
    pub feed_filter: String,
    pub calls_filter: String,
    pub sort: Sort,
    /// Selections follow a name, not a row number, so a re-sort on the next
    /// snapshot keeps the cursor on the same service.
    selected_service: Option<String>,
    selected_backend: Option<String>,
    selected_call: Option<String>,
    /// Row of the feed under the cursor, 0 the newest.
    pub feed_cursor: usize,
    snapshot: Option<Snapshot>,
    pub rows: Vec<ServiceRow>,
    pub calls: Vec<CallRow>,
    pub health: Health,
    session_opened: HashMap<BackendKey, u64>,
    history: HashMap<BackendKey, History>,
    pub feed: Feed,
    /// The last poll's failure, until a poll succeeds.
    pub error: Option<String>,
}

impl App {
    pub fn new(theme: Theme, interval: Duration) -> Self {
        App {
            theme,
            interval,
            view: View::Services,
            view_before_feed: View::Services,
            view_before_calls: View::Services,
            help: false,
            quit: false,
            typing: None,
            service_filter: String::new(),
            feed_filter: String::new(),
            calls_filter: String::new(),
            sort: Sort::default(),
            selected_service: None,
            selected_backend: None,
            selected_call: None,
            feed_cursor: 0,
            snapshot: None,
            rows: Vec::new(),
            calls: Vec::new(),
            health: Health::default(),
            session_opened: HashMap::new(),
            history: HashMap::new(),
            feed: Feed::default(),
            error: None,
        }
    }

    pub fn on_poll(&mut self, poll: Poll) {
        if let Some(snapshot) = poll.snapshot {
            self.on_snapshot(snapshot);
        }
        self.feed.push(poll.records, poll.missed);
        self.error = poll.error;
    }

    pub fn on_snapshot(&mut self, now: Snapshot) {
        // A restarted agent starts its counters over: no interval to compare.
        let before = self
            .snapshot
            .take()
            .filter(|b| b.uptime_seconds <= now.uptime_seconds);
        self.rows = rows::services(before.as_ref(), &now);
        self.health = rows::health(before.as_ref(), &now);
        self.calls = calls::rows(before.as_ref(), &now);
        for service in &self.rows {
            for backend in &service.backends {
                let key = (service.id(), backend.address.clone());
                if let Some(rates) = backend.stats.rates {
                    let history = self.history.entry(key.clone()).or_default();
                    history.push(rates.opened, backend.stats.interval_latency_p99);
                }
                if let Some(opened) = backend.opened_in_interval {
                    *self.session_opened.entry(key).or_default() += opened;
                }
            }
        }
        self.snapshot = Some(now);
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Services matching the filter, in the chosen order.
    pub fn visible_services(&self) -> Vec<&ServiceRow> {
        let needle = self.service_filter.to_lowercase();
        let mut rows: Vec<&ServiceRow> = self
            .rows
            .iter()
            .filter(|s| {
                s.name.to_lowercase().contains(&needle) || s.vip.to_lowercase().contains(&needle)
            })
            .collect();
        self.sort.services(&mut rows);
        rows
    }

    pub fn selected_service_index(&self, visible: &[&ServiceRow]) -> Option<usize> {
        cursor(self.selected_service.as_deref(), visible, |s| s.id())
    }

    /// The service whose backends the detail view shows.
    pub fn selected_service(&self) -> Option<&ServiceRow> {
        let visible = self.visible_services();
        let index = self.selected_service_index(&visible)?;
        let id = visible[index].id();
        self.rows.iter().find(|s| s.id() == id)
    }

    /// The service's backends (with their index in the service), in the
    /// chosen order.
    pub fn visible_backends<'a>(&self, service: &'a ServiceRow) -> Vec<(usize, &'a BackendRow)> {
        let mut rows: Vec<(usize, &BackendRow)> = service.backends.iter().enumerate().collect();
        self.sort.backends(&mut rows);
        rows
    }

    pub fn selected_backend_index(&self, visible: &[(usize, &BackendRow)]) -> Option<usize> {
        cursor(self.selected_backend.as_deref(), visible, |(_, b)| {
            b.address.clone()
        })
    }

    /// Backend `i`'s fraction of the service's new connections since
    /// kmesh-top started; `None` before any.
    pub fn observed_share(&self, service: &ServiceRow, i: usize) -> Option<f64> {
        let opened = |b: &BackendRow| {
            let key = (service.id(), b.address.clone());
            self.session_opened.get(&key).copied().unwrap_or(0)
        };
        let total: u64 = service.backends.iter().map(opened).sum();
        (total > 0).then(|| opened(&service.backends[i]) as f64 / total as f64)
    }

    /// Calls matching the filter, in the chosen order.
    pub fn visible_calls(&self) -> Vec<&CallRow> {
        let mut rows: Vec<&CallRow> = self
            .calls
            .iter()
            .filter(|c| c.matches(&self.calls_filter))
            .collect();
        self.sort.calls(&mut rows);
        rows
    }

    pub fn selected_call_index(&self, visible: &[&CallRow]) -> Option<usize> {
        cursor(self.selected_call.as_deref(), visible, |c| c.id())
    }

    /// The sparkline samples of a backend.
    pub fn history(&self, service_id: &str, backend: &str) -> Option<&History> {
        self.history
            .get(&(service_id.to_string(), backend.to_string()))
    }

    /// The one function every key goes through, in the event loop and in
    /// tests alike.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.typing.is_some() {
            self.on_filter_key(key.code);
            return;
        }
        if self.help {
            match key.code {
                KeyCode::Char('q') => self.quit = true,
                KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => self.help = false,
                _ => {}
            }
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('c') => self.toggle_feed(),
            KeyCode::Char('w') => self.toggle_calls(),
            KeyCode::Char('/') if self.view != View::Backends => {
                self.typing = Some(self.filter().clone());
            }
            _ => match self.view {
                View::Services => self.on_services_key(key.code),
                View::Backends => self.on_backends_key(key.code),
                View::Feed => self.on_feed_key(key.code),
                View::Calls => self.on_calls_key(key.code),
            },
        }
    }

    fn filter(&mut self) -> &mut String {
        match self.view {
            View::Feed => &mut self.feed_filter,
            View::Calls => &mut self.calls_filter,
            _ => &mut self.service_filter,
        }
    }

    fn on_filter_key(&mut self, code: KeyCode) {
        let Some(typed) = self.typing.as_mut() else {
            return;
        };
        match code {
            KeyCode::Char(c) => typed.push(c),
            KeyCode::Backspace => {
                typed.pop();
            }
            KeyCode::Enter => {
                let typed = self.typing.take().unwrap_or_default();
                *self.filter() = typed;
                self.feed_cursor = 0;
            }
            KeyCode::Esc => {
                self.typing = None;
                self.filter().clear();
            }
            _ => {}
        }
    }

    fn toggle_feed(&mut self) {
        if self.view == View::Feed {
            self.view = self.view_before_feed;
        } else {
            self.view_before_feed = self.view;
            self.view = View::Feed;
        }
    }

    /// `w` from any view shows the calls; `w` again goes back.
    fn toggle_calls(&mut self) {
        match self.view {
            View::Calls => self.view = self.view_before_calls,
            View::Feed => {
                // Back from the calls to where the feed was opened from.
                self.view_before_calls = self.view_before_feed;
                self.view = View::Calls;
            }
            view => {
                self.view_before_calls = view;
                self.view = View::Calls;
            }
        }
    }

    fn on_calls_key(&mut self, code: KeyCode) {
        let visible = self.visible_calls();
        let current = self.selected_call_index(&visible);
        if let Some(index) = current.and_then(|i| moved(i, visible.len(), code)) {
            self.selected_call = Some(visible[index].id());
            return;
        }
        match code {
            KeyCode::Esc if !self.calls_filter.is_empty() => self.calls_filter.clear(),
            KeyCode::Esc | KeyCode::Backspace => self.toggle_calls(),
            KeyCode::Char(c) => self.press_sort(c),
            _ => {}
        }
    }

    fn on_services_key(&mut self, code: KeyCode) {
        let visible = self.visible_services();
        let current = self.selected_service_index(&visible);
        if let Some(index) = current.and_then(|i| moved(i, visible.len(), code)) {
            self.selected_service = Some(visible[index].id());
            return;
        }
        match (code, current) {
            (KeyCode::Enter, Some(index)) => {
                self.selected_service = Some(visible[index].id());
                self.selected_backend = None;
                self.view = View::Backends;
            }
            (KeyCode::Esc, _) => self.service_filter.clear(),
            (KeyCode::Char(c), _) => self.press_sort(c),
            _ => {}
        }
    }

    fn on_backends_key(&mut self, code: KeyCode) {
        let moved_to = self.selected_service().and_then(|service| {
            let visible = self.visible_backends(service);
            let index = self.selected_backend_index(&visible)?;
            moved(index, visible.len(), code).map(|i| visible[i].1.address.clone())
        });
        if moved_to.is_some() {
            self.selected_backend = moved_to;
            return;
        }
        match code {
            KeyCode::Esc | KeyCode::Backspace => self.view = View::Services,
            KeyCode::Char(c) => self.press_sort(c),
            _ => {}
        }
    }

    fn on_feed_key(&mut self, code: KeyCode) {
        let len = self.feed.visible(&self.feed_filter).count();
        if let Some(index) = moved(self.feed_cursor.min(len.saturating_sub(1)), len, code) {
            self.feed_cursor = index;
            return;
        }
        match code {
            KeyCode::Char(' ') => self.feed.toggle_pause(),
            KeyCode::Esc if !self.feed_filter.is_empty() => self.feed_filter.clear(),
            KeyCode::Esc | KeyCode::Backspace => self.toggle_feed(),
            _ => {}
        }
    }

    fn press_sort(&mut self, c: char) {
        if let Some(key) = SortKey::from_key(c) {
            self.sort.press(key);
        }
    }
}

/// The row of `visible` named `selected`, else the first, if any.
fn cursor<R>(selected: Option<&str>, visible: &[R], id: impl Fn(&R) -> String) -> Option<usize> {
    let found = selected.and_then(|s| visible.iter().position(|r| id(r) == s));
    found.or(if visible.is_empty() { None } else { Some(0) })
}

/// Where a navigation key moves a cursor at `index` in `len` rows; `None`
/// when `code` is not a navigation key.
fn moved(index: usize, len: usize, code: KeyCode) -> Option<usize> {
    let last = len.saturating_sub(1);
    let to = match code {
        KeyCode::Up | KeyCode::Char('k') => index.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => index + 1,
        KeyCode::PageUp => index.saturating_sub(PAGE),
        KeyCode::PageDown => index + PAGE,
        KeyCode::Home | KeyCode::Char('g') => 0,
        KeyCode::End | KeyCode::Char('G') => last,
        _ => return None,
    };
    Some(to.min(last))
}
