//! What users see: messages and indicatif progress on stderr (bars only on a
//! terminal), and with `--json` one JSON object per line on stdout.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// Progress events are written at most this often (per the issue: 500 ms).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Where a run's messages go.
pub struct Reporter {
    json: bool,
    quiet: bool,
    bars: Option<Bars>,
    last_progress: Option<Instant>,
    started: Instant,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    item: Option<ProgressBar>,
}

impl Reporter {
    pub fn new(json: bool, quiet: bool) -> Self {
        Self {
            json,
            quiet,
            bars: None,
            last_progress: None,
            started: Instant::now(),
        }
    }

    /// A line for humans on stderr (not with -q).
    pub fn say(&self, text: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(b) => {
                let _ = b.multi.println(text.as_ref());
            }
            None => eprintln!("{}", text.as_ref()),
        }
    }

    /// A warning for humans: shown even with -q.
    pub fn warn(&self, text: impl AsRef<str>) {
        match &self.bars {
            Some(b) => {
                let _ = b.multi.println(format!("warning: {}", text.as_ref()));
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

    /// Starts the bars for a transfer of `total` bytes (terminal only).
    pub fn start(&mut self, total: u64) {
        self.started = Instant::now();
        self.last_progress = None;
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = multi.add(
            ProgressBar::new(total)
                .with_style(style)
                .with_prefix("total"),
        );
        self.bars = Some(Bars {
            multi,
            total: bar,
            item: None,
        });
    }

    /// A new item begins.
    pub fn item_started(&mut self, name: &str, size: Option<u64>) {
        if let Some(b) = &mut self.bars {
            if let Some(old) = b.item.take() {
                old.finish_and_clear();
            }
            let style = ProgressStyle::with_template("{msg:.bold} {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = b
                .multi
                .insert(0, ProgressBar::new(size.unwrap_or(0)).with_style(style));
            bar.set_message(name.to_string());
            b.item = Some(bar);
        }
    }

    /// Bytes moved so far: `item` of the current item, `total` overall.
    pub fn progress(
        &mut self,
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
        if self.json {
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
                "progress",
                json!({"name": name, "item_bytes": item, "item_size": item_size,
                       "bytes": total, "total": total_size,
                       "rate": (total as f64 / secs).round()}),
            );
        }
    }

    /// Seconds since [`Reporter::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Removes the bars.
    pub fn finish(&mut self) {
        if let Some(b) = self.bars.take() {
            if let Some(i) = b.item {
                i.finish_and_clear();
            }
            b.total.finish_and_clear();
        }
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
}
