#![allow(clippy::panic)] // test code: a failed setup should stop the test loudly
//! The scorer of the poisoning checks: every item of the labelled sets in
//! `tests/catalogue/` through the checks, precision and recall per check and
//! per item, and the floors they must not fall below.
//!
//! `cargo test --test catalogue_corpus -- --nocapture` prints the tables that
//! `docs/catalogue.md` reports, and every miss and false alarm by id.
//!
//! How an item is counted (as `../shared/dlp/score.py` counts DLP items):
//! each item lists the checks its content calls for (`expect`, written from
//! what the text is, not from what the checks can do). For a check, an item
//! that expects it and gets a finding of it is a true positive, one that
//! expects it and gets none a false negative, one that does not expect it
//! and gets one a false positive. Per item: a poisoned item with any finding
//! is detected; a benign item with any finding is a false alarm.

use mcp_firewall::catalogue::{Check, Finding, Inspector, OtherTools};
use mcp_firewall::config::Keyword;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

fn load(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/catalogue")
        .join(name);
    let raw = match std::fs::read_to_string(&path) {
        Ok(r) => r,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| match serde_json::from_str(l) {
            Ok(v) => v,
            Err(e) => panic!("{name} line {}: {e}", i + 1),
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: u32,
    fp: u32,
    fn_: u32,
}

impl Counts {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            return 1.0;
        }
        f64::from(self.tp) / f64::from(self.tp + self.fp)
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            return 1.0;
        }
        f64::from(self.tp) / f64::from(self.tp + self.fn_)
    }
}

struct Score {
    per_check: BTreeMap<Check, Counts>,
    items: Counts,
    per_class: BTreeMap<String, (u32, u32)>,
    misses: Vec<String>,
    alarms: Vec<String>,
}

fn expected(item: &Value) -> HashSet<Check> {
    item["expect"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| match s.parse::<Check>() {
                    Ok(c) => c,
                    Err(_) => panic!("{}: unknown check {s:?}", item["id"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn score(items: &[Value], findings_of: impl Fn(&Value) -> Vec<Finding>) -> Score {
    let mut s = Score {
        per_check: Check::ALL.iter().map(|&c| (c, Counts::default())).collect(),
        items: Counts::default(),
        per_class: BTreeMap::new(),
        misses: Vec::new(),
        alarms: Vec::new(),
    };
    for item in items {
        let id = item["id"].as_str().unwrap_or("?");
        let poisoned = item["label"] == "poisoned";
        let want = expected(item);
        assert_eq!(
            poisoned,
            !want.is_empty(),
            "{id}: a poisoned item expects checks, a benign one none"
        );
        let findings = findings_of(item);
        let got: HashSet<Check> = findings.iter().map(|f| f.check).collect();
        for &c in Check::ALL {
            let counts = s.per_check.entry(c).or_default();
            match (want.contains(&c), got.contains(&c)) {
                (true, true) => counts.tp += 1,
                (true, false) => {
                    counts.fn_ += 1;
                    s.misses
                        .push(format!("{id} {}: {}", item["class"], c.as_str()));
                }
                (false, true) => {
                    counts.fp += 1;
                    let f = findings.iter().find(|f| f.check == c);
                    s.alarms.push(format!(
                        "{id} {}: {} at {} ({})",
                        item["class"],
                        c.as_str(),
                        f.map_or("", |f| f.pointer.as_str()),
                        f.map_or("", |f| f.reason)
                    ));
                }
                (false, false) => {}
            }
        }
        match (poisoned, !got.is_empty()) {
            (true, true) => s.items.tp += 1,
            (true, false) => s.items.fn_ += 1,
            (false, true) => s.items.fp += 1,
            (false, false) => {}
        }
        if poisoned {
            let e = s
                .per_class
                .entry(item["class"].as_str().unwrap_or("?").to_owned())
                .or_default();
            e.0 += u32::from(!got.is_empty());
            e.1 += 1;
        }
    }
    s
}

fn print(title: &str, items: &[Value], s: &Score) {
    let benign = items.iter().filter(|i| i["label"] == "benign").count();
    println!(
        "\n{title}: {} items ({} benign, {} poisoned)",
        items.len(),
        benign,
        items.len() - benign
    );
    println!("| check | support | tp | fp | fn | precision | recall |");
    println!("|---|---|---|---|---|---|---|");
    for (c, k) in &s.per_check {
        if k.tp + k.fp + k.fn_ == 0 {
            continue;
        }
        println!(
            "| `{}` | {} | {} | {} | {} | {:.3} | {:.3} |",
            c.as_str(),
            k.tp + k.fn_,
            k.tp,
            k.fp,
            k.fn_,
            k.precision(),
            k.recall()
        );
    }
    let k = s.items;
    println!(
        "| any check (per item) | {} | {} | {} | {} | {:.3} | {:.3} |",
        k.tp + k.fn_,
        k.tp,
        k.fp,
        k.fn_,
        k.precision(),
        k.recall()
    );
    println!("\nper class (poisoned items with any finding / items)");
    for (class, (hit, n)) in &s.per_class {
        println!("  {class:<26} {hit:>3}/{n}");
    }
    println!("\nmisses (expected check, no finding):");
    for m in &s.misses {
        println!("  {m}");
    }
    println!("false alarms (finding of a check not expected):");
    for a in &s.alarms {
        println!("  {a}");
    }
}

fn descriptions(name: &str) -> (Vec<Value>, Score) {
    let items = load(name);
    // The other servers of a gateway: every benign server of the main set
    // (and of this one) but the item's own.
    let mut by_server: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let main = load("descriptions.jsonl");
    let mut benign: Vec<&Value> = main.iter().filter(|i| i["label"] == "benign").collect();
    if name != "descriptions.jsonl" {
        benign.extend(items.iter().filter(|i| i["label"] == "benign"));
    }
    for i in benign {
        if let (Some(server), Some(name)) = (i["server"].as_str(), i["tool"]["name"].as_str()) {
            by_server
                .entry(server.to_owned())
                .or_default()
                .push(name.to_owned());
        }
    }
    let inspector = Inspector::default();
    let s = score(&items, |item| {
        let own = item["server"].as_str().unwrap_or("");
        let others = OtherTools::new(
            by_server
                .iter()
                .filter(|(server, _)| server.as_str() != own)
                .flat_map(|(_, names)| names.iter().map(String::as_str)),
        );
        inspector.inspect_tool(&item["tool"], &others)
    });
    (items, s)
}

fn results() -> (Vec<Value>, Score) {
    let items = load("results.jsonl");
    let inspector = Inspector::default();
    let s = score(&items, |item| {
        let result = match item.get("result") {
            Some(r) => r.clone(),
            None => json!({"content": [{"type": "text", "text": item["text"]}]}),
        };
        inspector.inspect_result(&result)
    });
    (items, s)
}

fn floor(s: &Score, check: Check, precision: f64, recall: f64) {
    let k = s.per_check[&check];
    assert!(
        k.precision() >= precision && k.recall() >= recall,
        "{}: precision {:.3} (floor {precision}), recall {:.3} (floor {recall})",
        check.as_str(),
        k.precision(),
        k.recall()
    );
}

/// The floors sit a little under the figures measured when the sets were
/// written (docs/catalogue.md): a change to a check that loses more than an
/// item or two of either fails here.
#[test]
fn description_checks_meet_their_floors() {
    let (items, s) = descriptions("descriptions.jsonl");
    print(
        "tool definitions (tests/catalogue/descriptions.jsonl)",
        &items,
        &s,
    );
    assert!(items.iter().filter(|i| i["label"] == "benign").count() >= 150);
    assert!(items.iter().filter(|i| i["label"] == "poisoned").count() >= 80);
    floor(&s, Check::InvisibleUnicode, 1.0, 1.0);
    floor(&s, Check::ModelInstructions, 0.97, 0.85);
    floor(&s, Check::SecretReference, 0.82, 0.92);
    floor(&s, Check::Exfiltration, 0.94, 0.94);
    floor(&s, Check::EncodedBlob, 0.85, 0.88);
    floor(&s, Check::Html, 0.8, 0.8);
    floor(&s, Check::Shadowing, 0.66, 0.92);
    assert!(
        s.items.precision() >= 0.87 && s.items.recall() >= 0.92,
        "per item: precision {:.3}, recall {:.3}",
        s.items.precision(),
        s.items.recall()
    );
}

/// Items written after the checks were frozen (the main sets were read
/// while the checks were written): how the figures generalise. Printed, and
/// held to a loose floor only.
#[test]
fn held_out_descriptions_are_scored() {
    let (items, s) = descriptions("descriptions_heldout.jsonl");
    print(
        "held-out tool definitions (tests/catalogue/descriptions_heldout.jsonl)",
        &items,
        &s,
    );
    assert!(s.items.recall() >= 0.6 && s.items.precision() >= 0.6);
}

#[test]
fn result_checks_meet_their_floors() {
    let (items, s) = results();
    print("tool results (tests/catalogue/results.jsonl)", &items, &s);
    assert!(items.iter().filter(|i| i["label"] == "benign").count() >= 60);
    assert!(items.iter().filter(|i| i["label"] == "poisoned").count() >= 40);
    floor(&s, Check::InvisibleUnicode, 0.87, 0.85);
    floor(&s, Check::ModelInstructions, 0.93, 0.87);
    floor(&s, Check::Exfiltration, 0.92, 0.92);
    floor(&s, Check::Html, 0.63, 0.85);
    assert!(
        s.items.precision() >= 0.78 && s.items.recall() >= 0.93,
        "per item: precision {:.3}, recall {:.3}",
        s.items.precision(),
        s.items.recall()
    );
}

/// A result's texts are also read one after another (`Inspector::inspect_across`):
/// each injected text of the set cut in two, at the space nearest its middle
/// and inside the word nearest its middle, as two content items, against
/// the checks the whole text meets; every ordered pair of two different
/// benign texts as two items meets nothing the texts alone do not.
/// `--nocapture` prints the counts (docs/catalogue.md quotes them).
#[test]
fn texts_cut_over_two_items_are_read_as_one() {
    let items = load("results.jsonl");
    let inspector = Inspector::default();
    let checks = |texts: &[&str]| -> Vec<Check> {
        let content: Vec<Value> = texts
            .iter()
            .map(|t| json!({"type": "text", "text": t}))
            .collect();
        let mut c: Vec<Check> = inspector
            .inspect_result(&json!({"content": content}))
            .iter()
            .map(|f| f.check)
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let text = |i: &Value| i["text"].as_str().map(str::to_owned);
    let (injected, benign): (Vec<&Value>, Vec<&Value>) = items
        .iter()
        .filter(|i| i.get("text").is_some())
        .partition(|i| !expected(i).is_empty());
    // (where the cut falls, checks met whole, by the halves alone, read
    // across, the floor for the last: as measured when this was written;
    // what stays unmet is weak markers paired across the cut and encoded
    // runs cut in two, which the texts read together do not decode)
    let mut tally = [
        ("between words", 0, 0, 0, 66),
        ("inside a word", 0, 0, 0, 64),
    ];
    for t in injected.iter().filter_map(|i| text(i)) {
        let b = t.as_bytes();
        let nearest = |ok: &dyn Fn(usize) -> bool| {
            (1..b.len())
                .filter(|&i| ok(i))
                .min_by_key(|i| i.abs_diff(b.len() / 2))
        };
        let space = nearest(&|i| b[i] == b' ');
        let inside = nearest(&|i| b[i - 1].is_ascii_alphanumeric() && b[i].is_ascii_alphanumeric());
        let whole = checks(&[&t]);
        for (row, cut) in tally
            .iter_mut()
            .zip([space.map(|i| (i, i + 1)), inside.map(|i| (i, i))])
        {
            let Some((end, start)) = cut else { continue };
            let (x, y) = (&t[..end], &t[start..]);
            let halves = [checks(&[x]), checks(&[y])];
            let across = checks(&[x, y]);
            for c in &whole {
                row.1 += 1;
                row.2 += usize::from(halves.iter().any(|h| h.contains(c)));
                row.3 += usize::from(across.contains(c));
            }
        }
    }
    let benign: Vec<String> = benign.iter().filter_map(|i| text(i)).collect();
    let mut pairs = 0;
    for a in &benign {
        for b in benign.iter().filter(|b| *b != a) {
            pairs += 1;
            let own: Vec<Check> = [checks(&[a]), checks(&[b])].concat();
            let cut = checks(&[a, b]);
            assert!(
                cut.iter().all(|c| own.contains(c)),
                "benign {a:?} then {b:?}: {cut:?}"
            );
        }
    }
    for (cut, met, alone, across, floor) in tally {
        println!("injected texts cut {cut}: {met} checks met whole, {alone} by the halves alone, {across} read across");
        assert!(met > 60, "the set shrank: {met} checks");
        assert!(
            across >= floor && across > alone,
            "cut {cut}: {across} of {met} (alone {alone})"
        );
    }
    println!("{pairs} ordered pairs of benign texts: nothing new read across");
    assert!(pairs > 5000, "the set shrank: {pairs} pairs");
}

/// Every item has the fields the scorer and a reader need, ids are unique,
/// and an item names its source.
#[test]
fn labelled_sets_are_well_formed() {
    for name in [
        "descriptions.jsonl",
        "descriptions_heldout.jsonl",
        "results.jsonl",
    ] {
        let items = load(name);
        let mut ids = HashSet::new();
        for i in &items {
            let id = i["id"].as_str().unwrap_or_default();
            assert!(ids.insert(id.to_owned()), "{name}: duplicate id {id}");
            assert!(
                matches!(i["label"].as_str(), Some("benign" | "poisoned")),
                "{name} {id}: label"
            );
            assert!(
                i["class"].is_string() && i["source"].is_string(),
                "{name} {id}: class, source"
            );
            let _ = expected(i);
        }
    }
}
