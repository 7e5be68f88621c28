//! The tables of docs/architecture.md that restate declarations.

use crate::*;

/// The text of doc attributes (`doc = r" text"`, or `doc = r#" text
/// with "quotes""#`, as `stringify!` gives them, which may break a
/// line anywhere), joined.
fn doc_text(attrs: &[&str]) -> String {
    attrs
        .iter()
        .flat_map(|a| a.split("doc =").skip(1))
        .filter_map(|raw| {
            let raw = raw.trim().strip_prefix('r')?.trim_matches('#');
            Some(raw.strip_prefix('"')?.strip_suffix('"')?.trim())
        })
        .collect::<Vec<_>>()
        .join(" ")
        // An intra-doc link's target means nothing on the page.
        .split("]($crate::")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once(')').map_or(part, |(_, rest)| rest)
            }
        })
        .collect::<Vec<_>>()
        .join("]")
}

/// A declaration's tokens as the page shows them: no `$crate::`.
fn tokens(text: &str) -> String {
    text.replace("$crate ::", "")
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" (", "(")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace(" .", ".")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn maps_table() -> String {
    macro_rules! rows {
        ($( $(#[$doc:meta])* $name:ident / $field:ident : $kind:ident <$($ty:ty),+> [$cap:expr]; )*) => {
            vec![$( (
                stringify!($name),
                stringify!($kind),
                vec![$(stringify!($ty)),+],
                stringify!($cap),
                doc_text(&[$(stringify!($doc)),*]),
            ) ),*]
        };
    }
    let mut table = String::from(
        "| map | kind | key -> value | default capacity | what it holds |\n|---|---|---|---|---|\n",
    );
    for (name, kind, types, capacity, doc) in crate::program_maps!(rows) {
        let types: Vec<String> = types.iter().map(|t| tokens(t)).collect();
        let entry = match types.as_slice() {
            [value] => format!("index -> `{value}`"),
            [key, value] => format!("`{key}` -> `{value}`"),
            _ => unreachable!("a map has a key and a value, or a value"),
        };
        table += &format!(
            "| `{name}` | {kind} | {entry} | `{}` | {doc} |\n",
            tokens(capacity)
        );
    }
    table
}

fn counters_table() -> String {
    let mut table =
        String::from("| program | counter | action | what it counts |\n|---|---|---|---|\n");
    let xdp = Counter::ALL.iter().map(|c| {
        (
            "XDP",
            c.name(),
            c.action().name(),
            Counter::DOCS[*c as usize],
        )
    });
    let tc_action = |a: TcAction| match a {
        TcAction::Pass => "pass",
        TcAction::Drop => "drop",
        TcAction::Redirect => "redirect",
    };
    let gso = GsoCounter::ALL.iter().map(|c| {
        (
            "GSO (tc)",
            c.name(),
            tc_action(c.action()),
            GsoCounter::DOCS[*c as usize],
        )
    });
    let decap = DecapCounter::ALL.iter().map(|c| {
        (
            "agent decap (tc)",
            c.name(),
            tc_action(c.action()),
            DecapCounter::DOCS[*c as usize],
        )
    });
    for (program, name, action, doc) in xdp.chain(gso).chain(decap) {
        table += &format!(
            "| {program} | `{name}` | {action} | {} |\n",
            doc_text(&[doc])
        );
    }
    table
}

/// The tables of docs/architecture.md that restate declarations are
/// generated from them: `XDP_LB_WRITE_DOCS=1 cargo test -p lb-common`
/// writes them into the page; otherwise a difference fails.
#[test]
fn the_architecture_pages_tables_match_the_declarations() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md");
    let mut page = std::fs::read_to_string(path).expect("docs/architecture.md");
    for (name, table) in [("maps", maps_table()), ("counters", counters_table())] {
        let start = format!("<!-- generated: {name} -->\n");
        let from = page.find(&start).expect("the table's start marker") + start.len();
        let to = from
            + page[from..]
                .find("<!-- end -->")
                .expect("the table's end marker");
        if std::env::var_os("XDP_LB_WRITE_DOCS").is_some() {
            page.replace_range(from..to, &table);
        } else {
            assert_eq!(
                page[from..to],
                table,
                "docs/architecture.md: the {name} table differs from its declaration; XDP_LB_WRITE_DOCS=1 cargo test -p lb-common writes it"
            );
        }
    }
    if std::env::var_os("XDP_LB_WRITE_DOCS").is_some() {
        std::fs::write(path, page).expect("writing docs/architecture.md");
    }
}
