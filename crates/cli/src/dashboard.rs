//! The demo's live view on a terminal (ratatui): the pool's replicas over time, per tenant
//! class what it sent, what was refused and how fast it was answered, and the autoscaler's
//! last decision with its reason. [`View`] is plain data so the drawing is tested against a
//! golden file; [`Screen`] owns the terminal and gives it back on drop, panics included.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table, Wrap};

/// One tenant class's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRow {
    pub name: String,
    pub spiking: bool,
    pub requests: u64,
    pub rejected_429: u64,
    pub failed: u64,
    /// Queued at the pods now, all its tenants.
    pub queued: f64,
    /// p99 of the answers to requests sent in the last 10 s.
    pub recent_p99_ms: Option<f64>,
    /// The largest share of the pool one of its tenants has held so far, and its maxShare.
    pub max_share: f64,
    pub allowed_share: f64,
}

/// The autoscaler's last decision.
#[derive(Debug, Clone, PartialEq)]
pub struct LastDecision {
    /// Seconds since the run started.
    pub t: f64,
    pub current: i32,
    pub desired: i32,
    pub reason: String,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub scenario: String,
    /// Seconds since the run started, and the load's length.
    pub t: f64,
    pub total: f64,
    pub spike: Option<(f64, f64)>,
    pub replicas: usize,
    pub desired: i32,
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Replicas once a second, oldest first.
    pub replica_history: Vec<u64>,
    pub classes: Vec<ClassRow>,
    pub decision: Option<LastDecision>,
    /// Where the stack's logs go while the view has the terminal.
    pub log: String,
}

/// Draws `view` over the whole frame.
pub fn draw(frame: &mut Frame, view: &View) {
    let [head, replicas, classes, decision, foot] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Length(view.classes.len() as u16 + 3),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let phase = match view.spike {
        Some((start, _)) if view.t < start => format!("spike at {start:.0} s"),
        Some((_, end)) if view.t < end => format!("SPIKE until {end:.0} s"),
        Some(_) => "after the spike".to_string(),
        None => "no spike".to_string(),
    };
    let ratio = if view.total > 0.0 {
        (view.t / view.total).clamp(0.0, 1.0)
    } else {
        1.0
    };
    frame.render_widget(
        Gauge::default()
            .block(Block::bordered().title(format!(" tenantscale demo · {} ", view.scenario)))
            .gauge_style(Style::default().fg(Color::Cyan))
            .ratio(ratio)
            .label(format!(
                "{:.0} s / {:.0} s · {phase}",
                view.t.min(view.total),
                view.total
            )),
        head,
    );

    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(
                " replicas {} (desired {}, min {}, max {}) ",
                view.replicas, view.desired, view.min_replicas, view.max_replicas
            )))
            .data(tail(
                &view.replica_history,
                replicas.width.saturating_sub(2),
            ))
            .max(view.max_replicas.max(1) as u64)
            .style(Style::default().fg(Color::Green)),
        replicas,
    );

    let header = Row::new(
        [
            "class",
            "requests",
            "429",
            "failed",
            "queued",
            "p99 10 s",
            "max share",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let rows = view.classes.iter().map(|c| {
        let over = c.max_share > c.allowed_share + 1e-9;
        Row::new([
            Cell::from(format!("{}{}", c.name, if c.spiking { " *" } else { "" })),
            Cell::from(c.requests.to_string()),
            Cell::from(c.rejected_429.to_string()),
            Cell::from(c.failed.to_string()).style(if c.failed > 0 {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            }),
            Cell::from(format!("{:.0}", c.queued)),
            Cell::from(
                c.recent_p99_ms
                    .map_or_else(|| "-".to_string(), |p| format!("{p:.0} ms")),
            ),
            Cell::from(format!(
                "{:.1}% / {:.0}%",
                c.max_share * 100.0,
                c.allowed_share * 100.0
            ))
            .style(if over {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            }),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(10),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(13),
            ],
        )
        .header(header)
        .block(Block::bordered().title(" tenant classes (* spiking) ")),
        classes,
    );

    let text = match &view.decision {
        Some(d) => vec![Line::from(vec![
            Span::styled(
                format!("{:.1} s  {} → {}  ", d.t, d.current, d.desired),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(d.reason.clone()),
        ])],
        None => vec![Line::from("no decision yet")],
    };
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" the autoscaler's last decision ")),
        decision,
    );
    frame.render_widget(
        Paragraph::new(format!("Ctrl-C stops the demo · logs: {}", view.log))
            .style(Style::default().fg(Color::DarkGray)),
        foot,
    );
}

/// The last `width` points.
fn tail(points: &[u64], width: u16) -> &[u64] {
    &points[points.len().saturating_sub(usize::from(width))..]
}

/// The terminal, in its alternate screen while the view is up. Raw mode stays off so Ctrl-C
/// still reaches the demo as SIGINT and stops it cleanly.
pub struct Screen {
    terminal: ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stderr>>,
}

impl Screen {
    pub fn enter() -> std::io::Result<Self> {
        use ratatui::crossterm::{cursor, execute, terminal};
        let mut stderr = std::io::stderr();
        // Not every terminal blanks its alternate screen; cells drawn as spaces would show
        // what was there.
        execute!(
            stderr,
            terminal::EnterAlternateScreen,
            terminal::Clear(terminal::ClearType::All),
            cursor::Hide
        )?;
        let terminal = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(stderr))?;
        Ok(Self { terminal })
    }

    pub fn show(&mut self, view: &View) {
        // A failed draw (the terminal went away) only costs the view.
        let _ = self.terminal.draw(|f| draw(f, view));
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        use ratatui::crossterm::{cursor, execute, terminal};
        let _ = execute!(
            self.terminal.backend_mut(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    fn view() -> View {
        View {
            scenario: "media-spike".into(),
            t: 83.4,
            total: 180.0,
            spike: Some((42.0, 122.0)),
            replicas: 14,
            desired: 16,
            min_replicas: 3,
            max_replicas: 20,
            replica_history: (0..84)
                .map(|s| if s < 43 { 3 } else { 3 + (s - 43) / 3 })
                .collect(),
            classes: vec![
                ClassRow {
                    name: "media".into(),
                    spiking: true,
                    requests: 20_412,
                    rejected_429: 311,
                    failed: 0,
                    queued: 37.0,
                    recent_p99_ms: Some(612.0),
                    max_share: 0.156,
                    allowed_share: 0.3,
                },
                ClassRow {
                    name: "finance".into(),
                    spiking: false,
                    requests: 4_130,
                    rejected_429: 0,
                    failed: 2,
                    queued: 0.0,
                    recent_p99_ms: Some(248.0),
                    max_share: 0.021,
                    allowed_share: 0.2,
                },
                ClassRow {
                    name: "retail".into(),
                    spiking: false,
                    requests: 0,
                    rejected_429: 0,
                    failed: 0,
                    queued: 0.0,
                    recent_p99_ms: None,
                    max_share: 0.0,
                    allowed_share: 0.1,
                },
            ],
            decision: Some(LastDecision {
                t: 82.9,
                current: 14,
                desired: 16,
                reason: "tenant-aware: demand 156.2 slots over 8 tenants (4 capped at their \
                         entitlement); panic (6 s window asks 2.3× current); behavior: \
                         ScaleUpLimit"
                    .into(),
            }),
            log: "demo-report/demo.log".into(),
        }
    }

    /// The frame as text, one line per row.
    fn render(view: &View, width: u16, height: u16) -> String {
        let mut terminal = ratatui::Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, view)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                let row: String = (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect();
                row.trim_end().to_string() + "\n"
            })
            .collect()
    }

    #[test]
    fn the_dashboard_draws_as_the_golden_file_shows() {
        let actual = render(&view(), 80, 24);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden/dashboard.txt");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            actual,
            expected,
            "{} differs: rerun with UPDATE_GOLDEN=1 if intended",
            path.display()
        );
    }

    #[test]
    fn the_phase_follows_the_clock_and_a_tiny_terminal_still_draws() {
        let mut v = view();
        v.t = 10.0;
        assert!(render(&v, 80, 24).contains("spike at 42 s"));
        v.t = 150.0;
        assert!(render(&v, 80, 24).contains("after the spike"));
        // Too small a terminal still draws (clipped), never panics.
        render(&v, 20, 5);
    }

    #[test]
    fn the_sparkline_keeps_the_newest_points() {
        assert_eq!(tail(&[1, 2, 3, 4], 2), &[3, 4]);
        assert_eq!(tail(&[1, 2], 5), &[1, 2]);
    }
}
