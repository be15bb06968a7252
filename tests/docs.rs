//! The crate docs' links that rustdoc cannot check: links into the rendered source (from the
//! tour to crate-private code, and the lines of the functions they name), anchors of
//! `kernel-notes.md` sections, and the examples the docs name.
//! `RUSTDOCFLAGS="-D warnings" cargo doc --no-deps` checks the intra-doc links.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Markdown of every doc comment in `path` (`//!` and `///` lines, markers stripped).
fn docs_of(path: &str) -> String {
    read(path)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix("//!").or_else(|| l.strip_prefix("///"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The id rustdoc gives a Markdown heading: alphanumerics, `-` and `_` kept (lower-cased),
/// spaces become `-`, everything else goes.
fn heading_id(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

/// Every `prefix...` target in `text`, up to the first character that cannot be in a path.
fn targets<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || "/_.-#".contains(c)))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

const DOCUMENTED: &[&str] = &[
    "src/lib.rs",
    "src/backend/mod.rs",
    "src/backend/uring/mod.rs",
    "src/backend/uring/buf_ring.rs",
    "src/backend/uring/ops.rs",
    "src/protocol/mod.rs",
    "src/server.rs",
];

#[test]
fn source_links_name_files_that_exist() {
    let mut seen = 0;
    for file in DOCUMENTED {
        for target in targets(&docs_of(file), "../src/ringecho/") {
            let page = target.split('#').next().unwrap_or(target);
            let source = page
                .strip_suffix(".html")
                .unwrap_or_else(|| panic!("{file}: link {target:?} is not a source page"));
            assert!(
                Path::new(ROOT).join("src").join(source).is_file(),
                "{file} links to src/{source}, which does not exist"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no source links found: has the tour moved?");
}

/// Whether `text` defines `fn name` (outside comments).
fn defines_fn(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let code = line.trim_start();
        !code.starts_with("//")
            && [format!("fn {name}("), format!("fn {name}<")]
                .iter()
                .any(|f| code.starts_with(f.as_str()) || code.contains(&format!(" {f}")))
    })
}

/// A link into the rendered source that names a function in its title (the one the text
/// means) links a file that defines it: `[label]: ../src/ringecho/conn/mod.rs.html "Conn::next_send"`.
/// Links name files, not line ranges, so code can move without breaking them.
#[test]
fn source_links_name_functions_their_files_define() {
    let mut seen = 0;
    for file in DOCUMENTED {
        for line in docs_of(file).lines() {
            let Some((_, def)) = line.split_once("]: ../src/ringecho/") else {
                continue;
            };
            let (page, title) = def.split_once(' ').unwrap_or((def, ""));
            assert!(
                !page.contains('#'),
                "{file}: the link to src/{page} points at lines; link the file and name the \
                 function in the title"
            );
            let title = title.trim().trim_matches('"');
            if title.is_empty() {
                continue; // a link to the whole file
            }
            let name = title.rsplit("::").next().unwrap_or(title);
            let source = page.strip_suffix(".html").expect("a source page");
            assert!(
                defines_fn(&read(&format!("src/{source}")), name),
                "{file}: the link titled {title} points at src/{source}, which has no `fn {name}`"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 10,
        "the tour should link the functions it walks through ({seen} links)"
    );
}

#[test]
fn kernel_notes_anchors_name_sections_that_exist() {
    let notes = read("kernel-notes.md");
    let ids: Vec<String> = notes
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(heading_id)
        .collect();
    let mut seen = 0;
    for file in DOCUMENTED {
        for target in targets(&docs_of(file), "kernel_notes#") {
            assert!(
                ids.iter().any(|id| id == target),
                "{file} links to kernel_notes#{target}, but kernel-notes.md has no such section; \
                 its sections are {ids:#?}"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 9,
        "the tour should link a kernel-notes section per step ({seen} links)"
    );
}

#[test]
fn the_examples_the_docs_name_exist() {
    let docs = docs_of("src/lib.rs");
    let mut seen = 0;
    for line in docs.lines().filter(|l| l.trim_start().starts_with("| `")) {
        let name = line.trim_start()[3..]
            .split('`')
            .next()
            .expect("| `name` |");
        assert!(
            Path::new(ROOT)
                .join("examples")
                .join(format!("{name}.rs"))
                .is_file(),
            "src/lib.rs names example {name}, which does not exist"
        );
        seen += 1;
    }
    assert_eq!(seen, 4, "the crate docs' table of examples");
}

#[test]
fn heading_ids_are_rustdocs() {
    assert_eq!(
        heading_id("Cancellation and close (`IORING_ASYNC_CANCEL_FD | _FIXED | _ALL`, `X`)"),
        "cancellation-and-close-ioring_async_cancel_fd--_fixed--_all-x"
    );
    assert_eq!(
        heading_id("Ring set-up: `DEFER_TASKRUN`, plain"),
        "ring-set-up-defer_taskrun-plain"
    );
}

/// Every field `ringecho bench --json` writes is named in the README.
#[test]
fn readme_names_every_bench_json_field() {
    let readme = read("README.md");
    let missing: Vec<&str> = ringecho::loadgen::JSON_FIELDS
        .iter()
        .copied()
        .filter(|f| !readme.contains(&format!("`{f}`")))
        .collect();
    assert!(missing.is_empty(), "README does not name: {missing:?}");
}

/// Every field `ringecho report --json` writes is named in the README's "Load from several
/// machines" section.
#[test]
fn readme_names_every_report_json_field() {
    let readme = read("README.md");
    let from = readme
        .find("## Load from several machines")
        .expect("README has a \"Load from several machines\" section");
    let section = &readme[from..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let missing: Vec<&str> = ringecho::loadgen::hlog::REPORT_JSON_FIELDS
        .iter()
        .copied()
        .filter(|f| !section.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "the README section does not name: {missing:?}"
    );
}
