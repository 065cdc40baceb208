//! What users see: messages and indicatif progress on stderr (bars only on a
//! terminal, one set per transfer in one shared `MultiProgress`), and with
//! `--json` one JSON object per line on stdout.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// Progress events are written at most this often (per the issue: 500 ms).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Where a run's messages go; shared by every transfer of the run.
pub struct Reporter {
    json: bool,
    quiet: bool,
    /// The bars of every transfer, when stderr is a terminal (not with -q).
    multi: Option<MultiProgress>,
    /// Transfers whose bars are drawn: lines go above them while any are.
    live: AtomicUsize,
}

/// One transfer's bars, timing and event tag.
pub struct TransferReport {
    /// Added to every event of this transfer (e.g. `from`), so concurrent
    /// transfers can be told apart.
    tag: Option<(&'static str, String)>,
    /// Prefix of the total bar.
    label: String,
    bars: Option<Bars>,
    last_progress: Option<Instant>,
    started: Instant,
}

struct Bars {
    total: ProgressBar,
    item: Option<ProgressBar>,
}

impl Reporter {
    pub fn new(json: bool, quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            json,
            quiet,
            multi,
            live: AtomicUsize::new(0),
        }
    }

    /// The multi-bar, while bars are drawn.
    fn drawing(&self) -> Option<&MultiProgress> {
        self.multi
            .as_ref()
            .filter(|_| self.live.load(Ordering::Relaxed) > 0)
    }

    /// A line for humans on stderr (not with -q).
    pub fn say(&self, text: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        match self.drawing() {
            Some(m) => {
                let _ = m.println(text.as_ref());
            }
            None => eprintln!("{}", text.as_ref()),
        }
    }

    /// A warning for humans: shown even with -q.
    pub fn warn(&self, text: impl AsRef<str>) {
        match self.drawing() {
            Some(m) => {
                let _ = m.println(format!("warning: {}", text.as_ref()));
            }
            None => eprintln!("gshare: warning: {}", text.as_ref()),
        }
    }

    /// One JSON event on stdout (with --json).
    pub fn event(&self, name: &str, mut fields: Value) {
        if !self.json {
            return;
        }
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), Value::String(name.into()));
        }
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &fields);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

impl TransferReport {
    /// A transfer whose events carry `tag` (`("from", jid)`), with bars
    /// prefixed by `label`.
    pub fn new(tag: Option<(&'static str, String)>, label: impl Into<String>) -> Self {
        Self {
            tag,
            label: label.into(),
            bars: None,
            last_progress: None,
            started: Instant::now(),
        }
    }

    /// One JSON event of this transfer.
    pub fn event(&self, r: &Reporter, name: &str, mut fields: Value) {
        if let (Some((key, value)), Value::Object(map)) = (&self.tag, &mut fields) {
            map.insert((*key).into(), Value::String(value.clone()));
        }
        r.event(name, fields);
    }

    /// Starts the clock, and the bars for `total` bytes (terminal only).
    pub fn start(&mut self, r: &Reporter, total: u64) {
        self.started = Instant::now();
        self.last_progress = None;
        let Some(multi) = &r.multi else { return };
        if self.bars.is_some() {
            return;
        }
        let style = ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = multi.add(
            ProgressBar::new(total)
                .with_style(style)
                .with_prefix(self.label.clone()),
        );
        r.live.fetch_add(1, Ordering::Relaxed);
        self.bars = Some(Bars {
            total: bar,
            item: None,
        });
    }

    /// A new item begins.
    pub fn item_started(&mut self, r: &Reporter, name: &str, size: Option<u64>) {
        let (Some(b), Some(multi)) = (&mut self.bars, &r.multi) else {
            return;
        };
        if let Some(old) = b.item.take() {
            old.finish_and_clear();
        }
        let style = ProgressStyle::with_template("{msg:.bold} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = multi.insert_before(
            &b.total,
            ProgressBar::new(size.unwrap_or(0)).with_style(style),
        );
        bar.set_message(name.to_string());
        b.item = Some(bar);
    }

    /// Bytes moved so far: `item` of the current item, `total` overall.
    pub fn progress(
        &mut self,
        r: &Reporter,
        name: &str,
        item: u64,
        item_size: Option<u64>,
        total: u64,
        total_size: u64,
    ) {
        if let Some(b) = &self.bars {
            b.total.set_position(total);
            if let Some(i) = &b.item {
                i.set_position(item);
            }
        }
        if r.json {
            let now = Instant::now();
            if self
                .last_progress
                .is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY)
            {
                return;
            }
            self.last_progress = Some(now);
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            self.event(
                r,
                "progress",
                json!({"name": name, "item_bytes": item, "item_size": item_size,
                       "bytes": total, "total": total_size,
                       "rate": (total as f64 / secs).round()}),
            );
        }
    }

    /// Time since [`TransferReport::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Removes the bars.
    pub fn finish(&mut self, r: &Reporter) {
        if let Some(b) = self.bars.take() {
            if let Some(i) = b.item {
                i.finish_and_clear();
            }
            b.total.finish_and_clear();
            if let Some(m) = &r.multi {
                m.remove(&b.total);
            }
            r.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `"a.txt"`, `"a.txt" and "b.txt"`, `3 items`.
pub fn describe_items(names: &[String]) -> String {
    match names {
        [one] => format!("{one:?}"),
        [a, b] => format!("{a:?} and {b:?}"),
        many => format!("{} items", many.len()),
    }
}

/// `23.3 MiB` style sizes for prompts and messages.
pub fn human_size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

/// `12.5 MB/s` style rates.
pub fn human_rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!("{}/s", indicatif::BinaryBytes((bytes as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_prompt_in_the_issue() {
        assert_eq!(human_size(24_410_321), "23.28 MiB");
        assert_eq!(human_size(0), "0 B");
    }

    #[test]
    fn items_are_described_by_name_or_count() {
        assert_eq!(describe_items(&["a.txt".into()]), "\"a.txt\"");
        assert_eq!(describe_items(&["a".into(), "b".into()]), "\"a\" and \"b\"");
        assert_eq!(
            describe_items(&["a".into(), "b".into(), "c".into()]),
            "3 items"
        );
    }
}
