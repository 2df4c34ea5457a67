//! What the live verbs built on tap print besides its lines: what a tap listens to, and
//! `top`'s table, redrawn in place on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::args::TopArgs;
use super::output;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::stat::Resource;
use crate::sandbox::model::tap::TapKind;
use crate::sandbox::model::top::{Top, TopRequest, TopRow};
use crate::sandbox::ops::tap::{self, TapOptions, Tapped};
use crate::sandbox::settings::SandboxSettings;

/// Shortest time between two redraws of `top`'s table.
const REDRAW: Duration = Duration::from_secs(1);
/// ANSI: cursor home, clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// What a tap listens to, for stderr: `tapping 1 waypoints`, `tapping 2 ztunnels`, or both.
pub fn tapping(tapped: Tapped) -> String {
    let waypoints = format!("{} waypoints", tapped.waypoints);
    let ztunnels = format!("{} ztunnels", tapped.ztunnels);
    match tapped.kind {
        TapKind::Request => format!("tapping {waypoints}"),
        TapKind::Connection => format!("tapping {ztunnels}"),
        TapKind::All => format!("tapping {waypoints} and {ztunnels}"),
    }
}

/// `deploy/NAME` or `svc/NAME` as a resource and a name.
pub fn target(resource: &str, verb: &str) -> Result<(Resource, String)> {
    let invalid = || SandboxError::Invalid(format!("{resource}: {verb} deploy/NAME or svc/NAME"));
    let (kind, name) = resource.split_once('/').ok_or_else(invalid)?;
    let kind = Resource::parse(kind).map_err(SandboxError::Invalid)?;
    if kind == Resource::Namespace || name.is_empty() {
        return Err(invalid());
    }
    Ok((kind, name.to_owned()))
}

/// `top`: counts the tapped requests into rows until `--max` of them or Ctrl-C, redrawing
/// on a terminal; prints the final table (or JSON array).
pub fn top(cfg: &SandboxSettings, a: TopArgs, json: bool) -> Result<()> {
    let (resource, name) = target(&a.resource, "top")?;
    let options = TapOptions {
        resource,
        name,
        namespace: a.namespace.clone(),
        method: a.method.clone(),
        path: a.path.clone(),
        kind: Some(TapKind::Request),
        until_interrupted: true,
        idle_tick: Some(REDRAW),
    };
    let live = !json && std::io::stdout().is_terminal();
    let mut top = Top::default();
    let mut drawn: Option<Instant> = None;
    // Requests counted since the table was last drawn.
    let mut pending = false;
    let ready = |tapped| eprintln!("{}", tapping(tapped));
    tap::run(cfg, &options, ready, |line| {
        // An empty line is the idle tick: nothing to count, maybe a table to draw.
        let event = serde_json::from_str::<serde_json::Value>(line).unwrap_or_default();
        if let Some(n) = event["dropped"].as_u64() {
            eprintln!("warning: a waypoint dropped {n} requests: the counts miss them");
        }
        if let Some(request) = TopRequest::from_event(&event) {
            top.add(&request);
            pending = true;
        }
        if live && pending && drawn.is_none_or(|at| at.elapsed() >= REDRAW) {
            print!("{CLEAR}{}", top_table(&top.rows()));
            let _ = std::io::stdout().flush();
            drawn = Some(Instant::now());
            pending = false;
        }
        a.max.is_none_or(|max| top.requests() < max)
    })?;
    let rows = top.rows();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        if live {
            print!("{CLEAR}");
        }
        print!("{}", top_table(&rows));
    }
    Ok(())
}

/// `top`'s table: a row per (source, method, path), most requested first.
pub fn top_table(rows: &[TopRow]) -> String {
    if rows.is_empty() {
        return "No requests seen.\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.source.clone(),
                r.method.clone(),
                r.path.clone(),
                r.count.to_string(),
                format!("{:.2}%", r.success_rate * 100.0),
                format!("{:.1}ms", r.latency_p50_ms),
                format!("{:.1}ms", r.latency_max_ms),
            ]
        })
        .collect();
    output::table(
        &["SOURCE", "METHOD", "PATH", "COUNT", "SUCCESS", "P50", "MAX"],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_key_and_says_when_empty() {
        let row = TopRow {
            source: "client".into(),
            method: "GET".into(),
            path: "/b".into(),
            count: 20,
            successes: 15,
            success_rate: 0.75,
            latency_p50_ms: 1.25,
            latency_max_ms: 9.0,
        };
        let text = top_table(&[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SOURCE"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            ["client", "GET", "/b", "20", "75.00%", "1.2ms", "9.0ms"]
        );
        assert_eq!(top_table(&[]), "No requests seen.\n");
    }

    #[test]
    fn targets_and_what_is_tapped_read_plainly() {
        assert_eq!(
            target("svc/orders", "top").unwrap(),
            (Resource::Service, "orders".to_owned())
        );
        assert!(target("ns/shop", "top").is_err());
        assert!(target("orders", "top").is_err());
        let tapped = |kind| Tapped {
            kind,
            waypoints: 1,
            ztunnels: 2,
        };
        assert_eq!(tapping(tapped(TapKind::Request)), "tapping 1 waypoints");
        assert_eq!(tapping(tapped(TapKind::Connection)), "tapping 2 ztunnels");
        assert_eq!(
            tapping(tapped(TapKind::All)),
            "tapping 1 waypoints and 2 ztunnels"
        );
    }
}
