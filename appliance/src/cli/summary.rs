//! The table printed after a run, then a warning line for each thing the user should know did
//! not work: frames of a link type not decoded, a protocol that saw traffic and made no record.

use pcap_parser::Linktype;

use crate::capture::xdp::QueueStats;
use crate::decode::link;
use crate::pipeline::Pipeline;
use crate::plugin_dir::Loaded;

pub fn print(pipeline: &Pipeline, loaded: &[Loaded], failures: &[String]) {
    let stats = pipeline.stats();
    let flows = pipeline.flow_stats();
    let mut rows: Vec<(String, String)> = vec![
        ("packets".into(), stats.packets.to_string()),
        ("bytes".into(), stats.bytes.to_string()),
        ("decoded".into(), stats.decoded.to_string()),
        ("flows started".into(), flows.started.to_string()),
        ("flows ended".into(), flows.ended.to_string()),
        ("flows evicted".into(), flows.evicted.to_string()),
        (
            "flows unsolicited (blamed on nobody)".into(),
            flows.unsolicited.to_string(),
        ),
        ("events".into(), stats.events.to_string()),
        ("breaches".into(), stats.breaches().to_string()),
        (
            "devices".into(),
            pipeline.devices().stats().devices.to_string(),
        ),
        (
            "packets blocked by responses".into(),
            stats.enforced.to_string(),
        ),
        ("tcp resets sent".into(), stats.resets_sent.to_string()),
    ];
    for (&link_type, n) in &stats.unsupported_link_types {
        rows.push((
            format!(
                "frames of unsupported link type {link_type} ({})",
                link::name(Linktype(link_type))
            ),
            n.to_string(),
        ));
    }
    let held = pipeline.held_stats();
    for (name, value) in [
        (
            "frames held until their flow's originator spoke, then parsed",
            held.released,
        ),
        (
            "frames held for flows nobody answered, dropped",
            held.dropped,
        ),
        ("packets put back in time order", stats.reorder.reordered),
        (
            "packets released early (reorder buffer full)",
            stats.reorder.forced,
        ),
        ("packets too late to put back in order", stats.reorder.late),
        (
            "packets stamped back in time (handled at the latest time)",
            stats.clock_clamped,
        ),
        (
            "packets whose events were shed (detection behind)",
            stats.shed.packets,
        ),
        ("events shed (detection behind)", stats.shed.events),
        (
            "protocol log lines shed (detection behind)",
            stats.shed.log_lines,
        ),
    ] {
        if value > 0 {
            rows.push((name.into(), value.to_string()));
        }
    }
    let devices = pipeline.devices().stats();
    let guard = pipeline.guard().stats();
    for (name, value) in [
        (
            "devices evicted (table full, least recently seen)",
            devices.evicted,
        ),
        (
            "sightings of unknown addresses without evidence",
            devices.unproven,
        ),
        ("actions held: protected device", guard.held_protected),
        ("actions held: evidence", guard.held_evidence),
        ("actions held: rate limit", guard.rate_limited),
        (
            "infrastructure devices protected",
            pipeline.guard().infrastructure_devices() as u64,
        ),
        ("dhcp messages", devices.dhcp_messages),
        ("dhcp datagrams not dhcp", devices.dhcp_malformed),
    ] {
        if value > 0 {
            rows.push((name.into(), value.to_string()));
        }
    }
    println!();
    print_table("capture", &rows);
    let models: Vec<(String, String)> = stats
        .breaches_by_model
        .iter()
        .map(|(model, n)| (model.clone(), n.to_string()))
        .collect();
    if !models.is_empty() {
        print_table("breaches by model", &models);
    }
    print_storage();
    let skipped: Vec<(String, String)> = stats
        .skipped
        .iter()
        .map(|(reason, n)| (reason.name().to_string(), n.to_string()))
        .collect();
    if !skipped.is_empty() {
        print_table("frames skipped, by reason", &skipped);
    }
    let fragments: Vec<(String, String)> = stats
        .fragments
        .rows()
        .map(|(name, n)| (name.to_string(), n.to_string()))
        .collect();
    if !fragments.is_empty() {
        print_table("ip fragments", &fragments);
    }
    let outcomes: Vec<(String, String)> = pipeline
        .analysis()
        .counts()
        .iter()
        .map(|((protocol, what), n)| (format!("{protocol}: {what}"), n.to_string()))
        .collect();
    if !outcomes.is_empty() {
        print_table("protocol outcomes", &outcomes);
    }
    let streams = pipeline.analysis().stream_stats();
    let mut parsing: Vec<(String, String)> = pipeline
        .analysis()
        .errors()
        .iter()
        .map(|((protocol, reason), n)| (format!("{protocol}: {reason}"), n.to_string()))
        .collect();
    for (name, value) in [
        ("tcp: out-of-order segments", streams.out_of_order),
        ("tcp: gaps", streams.gaps),
        ("tcp: overlapping bytes", streams.overlap_bytes),
        ("tcp: bytes dropped at bounds", streams.dropped_bytes),
        ("tcp: streams refused", streams.streams_refused),
    ] {
        if value > 0 {
            parsing.push((name.to_string(), value.to_string()));
        }
    }
    if !parsing.is_empty() {
        print_table("reassembly and parsing problems", &parsing);
    }
    let resyncs: Vec<(String, String)> = pipeline
        .analysis()
        .resyncs()
        .map(|(protocol, r)| {
            (
                format!("{}: message starts found", protocol.name()),
                format!("{} ({} bytes skipped)", r.found, r.skipped_bytes),
            )
        })
        .collect();
    if !resyncs.is_empty() {
        print_table(
            "resynchronised streams (picked up mid-connection, or after a gap)",
            &resyncs,
        );
    }
    let plugins: Vec<(String, String)> = pipeline
        .host()
        .plugins()
        .iter()
        .map(|p| {
            let state = if p.quarantined {
                format!(
                    "QUARANTINED ({})",
                    p.last_error.as_deref().unwrap_or("traps")
                )
            } else {
                "running".to_string()
            };
            (
                format!("{} {}", p.name, p.version),
                format!(
                    "{state}; {} events, {} breaches, {} traps",
                    p.stats.events, p.stats.breaches, p.stats.traps
                ),
            )
        })
        .collect();
    print_table("plugins", &plugins);
    let refused: Vec<(String, String)> = loaded
        .iter()
        .filter_map(|l| {
            l.result
                .as_ref()
                .err()
                .map(|e| (l.path.display().to_string(), e.clone()))
        })
        .collect();
    if !refused.is_empty() {
        print_table("plugins refused", &refused);
    }
    if !failures.is_empty() {
        let rows: Vec<(String, String)> = failures
            .iter()
            .enumerate()
            .map(|(i, f)| ((i + 1).to_string(), f.clone()))
            .collect();
        print_table("capture errors", &rows);
    }
    for warning in warnings(pipeline) {
        println!("warning: {warning}");
    }
}

/// What the run could not read, one line each: unsupported link types, then protocols that
/// were given flows and produced no record (with their parse errors, which say why).
pub fn warnings(pipeline: &Pipeline) -> Vec<String> {
    let stats = pipeline.stats();
    let mut warnings: Vec<String> = stats
        .unsupported_link_types
        .iter()
        .map(|(&link_type, n)| {
            format!(
                "{n} frames of link type {link_type} ({}) were not decoded: the link type is not supported",
                link::name(Linktype(link_type))
            )
        })
        .collect();
    let analysis = pipeline.analysis();
    let errors = analysis.errors();
    for (protocol, traffic) in analysis.silent_protocols() {
        let name = protocol.name();
        let reasons: Vec<String> = errors
            .iter()
            .filter(|((p, _), _)| *p == name)
            .map(|((_, reason), n)| format!("{reason} {n}"))
            .collect();
        let why = if reasons.is_empty() {
            String::new()
        } else {
            format!(" (parse errors: {})", reasons.join(", "))
        };
        warnings.push(format!(
            "{name}: {} flows on its ports or recognised by content, and no {name} record{why}",
            traffic.flows
        ));
    }
    warnings
}

/// Per RX queue of a live port: what it received, and what the kernel lost or refused.
pub fn print_queues(port: &str, queues: &[QueueStats]) {
    let mut rows: Vec<(String, String)> = Vec::new();
    for q in queues {
        for (what, value) in [
            ("packets", q.packets),
            ("bytes", q.bytes),
            ("rx_dropped", q.rx_dropped),
            ("rx_ring_full", q.rx_ring_full),
            ("rx_fill_ring_empty_descs", q.rx_fill_ring_empty_descs),
            ("rx_invalid_descs", q.rx_invalid_descs),
        ] {
            rows.push((format!("queue {} {what}", q.queue), value.to_string()));
        }
    }
    print_table(&format!("queues of {port}"), &rows);
}

pub fn print_table(title: &str, rows: &[(String, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0)
        .max(title.len());
    println!("{title}");
    println!(
        "{}",
        "-".repeat(width + 2 + rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0))
    );
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
    println!();
}

/// What the data dir cost the run: records dropped, files rotated out or moved aside, repairs.
fn print_storage() {
    let health = crate::store::health::snapshot();
    let mut rows: Vec<(String, String)> = Vec::new();
    for (name, value) in [
        ("checkpoints of learned state", health.checkpoints),
        ("records dropped (write failed)", health.dropped()),
        (
            "log lines dropped (space reserved)",
            health.dropped_for_reserve,
        ),
        ("rotated log files deleted (budget)", health.rotated_out),
        (
            "cut last lines repaired at start",
            health.cut_lines_repaired,
        ),
        (
            "stale temporaries removed",
            health.stale_temporaries_removed,
        ),
    ] {
        if value > 0 {
            rows.push((name.into(), value.to_string()));
        }
    }
    for (path, failures) in &health.write_failures {
        rows.push((
            format!("failed writes of {}", path.display()),
            format!("{} ({})", failures.failures, failures.last_error),
        ));
    }
    for aside in &health.moved_aside {
        rows.push((
            format!("damaged, moved aside: {}", aside.path.display()),
            aside
                .kept_as
                .as_ref()
                .map_or("(could not be moved)".into(), |p| p.display().to_string()),
        ));
    }
    if !rows.is_empty() {
        print_table("storage", &rows);
    }
}
