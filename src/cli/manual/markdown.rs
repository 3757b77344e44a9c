//! `mxgate.toml(5)` and `mxgate-cluster.toml(5)` from the configuration
//! reference: `docs/configuration.md` is read with pulldown-cmark into
//! sections of blocks (paragraphs, tables, lists, code), and each `##`
//! section goes to the page [`SECTIONS`] names; the text before the first
//! `##` opens both pages. Tables become `.TP` entries: the first column is
//! the tag, the others follow under their header.

use clap_mangen::roff::{Inline, Roff, bold, italic, line_break, roman};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::ManualError;

/// Which page a `##` section of `docs/configuration.md` belongs to, by the
/// start of its heading. A section missing here fails the generation.
const SECTIONS: &[(&str, Page)] = &[
    ("mxgate.toml", Page::Node),
    ("Descriptor budget", Page::Node),
    ("cluster.toml", Page::Policy),
    ("SMTP behaviour", Page::Policy),
    ("STARTTLS", Page::Policy),
];

/// The two configuration pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// `mxgate.toml(5)`.
    Node,
    /// `mxgate-cluster.toml(5)`.
    Policy,
}

impl Page {
    fn path(self) -> &'static str {
        match self {
            Page::Node => "packaging/man/mxgate.toml.5",
            Page::Policy => "packaging/man/mxgate-cluster.toml.5",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::Node => "MXGATE.TOML",
            Page::Policy => "MXGATE-CLUSTER.TOML",
        }
    }

    fn name_line(self) -> &'static str {
        match self {
            Page::Node => "mxgate.toml - node-local settings of mxgate(8), never replicated",
            Page::Policy => {
                "cluster.toml - the policy of mxgate(8): members, routing, health, upstream SMTP"
            }
        }
    }

    fn see_also(self) -> &'static str {
        match self {
            Page::Node => "mxgate(8), mxgate-cluster.toml(5)",
            Page::Policy => "mxgate(8), mxgate.toml(5)",
        }
    }
}

/// A rendered configuration page.
pub(super) struct ConfigPage {
    /// Where it is committed.
    pub path: &'static str,
    /// Its roff source.
    pub roff: String,
}

/// A block of the reference.
enum Block {
    Paragraph(Vec<Inline>),
    /// Header cells, then rows of cells.
    Table(Vec<Vec<Inline>>, Vec<Vec<Vec<Inline>>>),
    /// List items.
    List(Vec<Vec<Inline>>),
    /// A code block's lines.
    Code(Vec<String>),
    /// A `###` heading.
    Subheading(String),
}

/// A `##` section (`title` is `None` for the text before the first one).
struct Section {
    title: Option<String>,
    blocks: Vec<Block>,
}

/// Both pages from `markdown`, the text of `docs/configuration.md`.
pub(super) fn config_pages(markdown: &str, version: &str) -> Result<Vec<ConfigPage>, ManualError> {
    let sections = read(markdown);
    let mut pages = Vec::new();
    for page in [Page::Node, Page::Policy] {
        let mut roff = Roff::new();
        let source = format!("mxgate {version}");
        roff.control("TH", [page.title(), "5", "\"\"", &source, "File Formats"]);
        roff.control("SH", ["NAME"]);
        roff.text([roman(page.name_line())]);
        roff.control("SH", ["DESCRIPTION"]);
        let mut own = 0;
        for section in &sections {
            match &section.title {
                None => blocks(&mut roff, &section.blocks),
                Some(title) => {
                    if owner(title)? != page {
                        continue;
                    }
                    own += 1;
                    roff.control("SH", [title.to_uppercase().as_str()]);
                    blocks(&mut roff, &section.blocks);
                }
            }
        }
        if own == 0 {
            return Err(ManualError::EmptyPage(page.path()));
        }
        roff.control("SH", ["SEE ALSO"]);
        roff.text([roman(page.see_also())]);
        pages.push(ConfigPage {
            path: page.path(),
            roff: roff.render(),
        });
    }
    Ok(pages)
}

/// The page a section heading belongs to.
fn owner(title: &str) -> Result<Page, ManualError> {
    SECTIONS
        .iter()
        .find(|(start, _)| title.starts_with(start))
        .map(|(_, page)| *page)
        .ok_or_else(|| ManualError::UnknownSection(title.to_owned()))
}

/// Renders blocks as roff.
fn blocks(roff: &mut Roff, blocks: &[Block]) {
    for block in blocks {
        match block {
            Block::Paragraph(inlines) => {
                roff.control("PP", []);
                roff.text(inlines.clone());
            }
            Block::Subheading(title) => {
                roff.control("SS", [title.as_str()]);
            }
            Block::List(items) => {
                for item in items {
                    roff.control("IP", ["\\(bu", "2"]);
                    roff.text(item.clone());
                }
            }
            Block::Code(lines) => {
                roff.control("PP", []);
                roff.control("RS", ["4"]);
                roff.control("nf", []);
                for line in lines {
                    roff.text([roman(line.as_str())]);
                }
                roff.control("fi", []);
                roff.control("RE", []);
            }
            Block::Table(head, rows) => table(roff, head, rows),
        }
    }
}

/// A table as `.TP` entries: the first cell is the tag; with two columns
/// the second is the text, with more each follows under its header.
fn table(roff: &mut Roff, head: &[Vec<Inline>], rows: &[Vec<Vec<Inline>>]) {
    for row in rows {
        let Some((tag, rest)) = row.split_first() else {
            continue;
        };
        roff.control("TP", []);
        roff.text(tag.clone());
        let mut body = Vec::new();
        for (index, cell) in rest.iter().enumerate() {
            if index > 0 {
                body.push(line_break());
            }
            if rest.len() > 1 {
                let header = head.get(index + 1).map(|h| plain(h)).unwrap_or_default();
                body.push(italic(format!("{header}: ")));
            }
            body.extend(cell.iter().cloned());
        }
        roff.text(body);
    }
}

/// The text of inlines, without fonts.
fn plain(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|inline| match inline {
            Inline::Roman(text) | Inline::Italic(text) | Inline::Bold(text) => text.as_str(),
            Inline::LineBreak => " ",
        })
        .collect()
}

/// What [`read`] is inside of.
#[derive(Default)]
struct Reader {
    sections: Vec<Section>,
    /// Inline text being collected (paragraph, cell, item, heading).
    inlines: Vec<Inline>,
    /// Nesting of bold (`**`, code) and italic (`*`) spans.
    bold: usize,
    italic: usize,
    head: Vec<Vec<Inline>>,
    rows: Vec<Vec<Vec<Inline>>>,
    row: Vec<Vec<Inline>>,
    items: Vec<Vec<Inline>>,
    /// Inside a list item: its paragraphs are the item's text.
    in_item: usize,
    code: Option<String>,
}

impl Reader {
    fn push_block(&mut self, block: Block) {
        if self.sections.is_empty() {
            self.sections.push(Section {
                title: None,
                blocks: Vec::new(),
            });
        }
        if let Some(section) = self.sections.last_mut() {
            section.blocks.push(block);
        }
    }

    fn text(&mut self, text: &str, code: bool) {
        if let Some(block) = self.code.as_mut() {
            block.push_str(text);
        } else if code || self.bold > 0 {
            self.inlines.push(bold(text));
        } else if self.italic > 0 {
            self.inlines.push(italic(text));
        } else {
            self.inlines.push(roman(text));
        }
    }

    fn start(&mut self, tag: Tag) {
        match tag {
            Tag::Strong => self.bold += 1,
            Tag::Emphasis => self.italic += 1,
            Tag::CodeBlock(_) => self.code = Some(String::new()),
            Tag::Table(_) => {
                self.head.clear();
                self.rows.clear();
            }
            Tag::List(_) => self.items.clear(),
            Tag::Item => self.in_item += 1,
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Strong => self.bold = self.bold.saturating_sub(1),
            TagEnd::Emphasis => self.italic = self.italic.saturating_sub(1),
            TagEnd::Heading(level) => {
                let title = plain(&std::mem::take(&mut self.inlines));
                match level {
                    HeadingLevel::H1 => {}
                    HeadingLevel::H2 => self.sections.push(Section {
                        title: Some(title),
                        blocks: Vec::new(),
                    }),
                    _ => self.push_block(Block::Subheading(title)),
                }
            }
            TagEnd::Paragraph if self.in_item == 0 => {
                let inlines = std::mem::take(&mut self.inlines);
                self.push_block(Block::Paragraph(inlines));
            }
            TagEnd::TableCell => self.row.push(std::mem::take(&mut self.inlines)),
            TagEnd::TableHead => self.head = std::mem::take(&mut self.row),
            TagEnd::TableRow => {
                let row = std::mem::take(&mut self.row);
                self.rows.push(row);
            }
            TagEnd::Table => {
                let (head, rows) = (
                    std::mem::take(&mut self.head),
                    std::mem::take(&mut self.rows),
                );
                self.push_block(Block::Table(head, rows));
            }
            TagEnd::Item => {
                self.in_item = self.in_item.saturating_sub(1);
                self.items.push(std::mem::take(&mut self.inlines));
            }
            TagEnd::List(_) => {
                let items = std::mem::take(&mut self.items);
                self.push_block(Block::List(items));
            }
            TagEnd::CodeBlock => {
                let code = self.code.take().unwrap_or_default();
                let lines = code.lines().map(str::to_owned).collect();
                self.push_block(Block::Code(lines));
            }
            _ => {}
        }
    }
}

/// The sections of `markdown`.
fn read(markdown: &str) -> Vec<Section> {
    let mut reader = Reader::default();
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Start(tag) => reader.start(tag),
            Event::End(tag) => reader.end(tag),
            Event::Text(text) => reader.text(&text, false),
            Event::Code(text) => reader.text(&text, true),
            Event::SoftBreak => reader.text(" ", false),
            Event::HardBreak => reader.inlines.push(line_break()),
            _ => {}
        }
    }
    reader.sections
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = "# Configuration reference\n\nTwo `TOML` files.\n\n\
        ## mxgate.toml: node-local\n\n| key | default | meaning |\n| --- | --- | --- |\n\
        | `[node] name` | host name | unique; *used* in logs |\n\n\
        ## cluster.toml: the policy\n\n- **Routing.** by hash\n- Failover\n\n```\n.starts with a dot\n```\n";

    fn pages(markdown: &str) -> Vec<ConfigPage> {
        config_pages(markdown, "9.9.9").expect("pages")
    }

    #[test]
    fn each_section_goes_to_its_page_and_the_intro_to_both() {
        let pages = pages(REFERENCE);
        let node = &pages[0].roff;
        let policy = &pages[1].roff;
        assert_eq!(pages[0].path, "packaging/man/mxgate.toml.5");
        assert!(node.contains(".TH MXGATE.TOML 5 \"\" \"mxgate 9.9.9\" \"File Formats\""));
        for page in [node, policy] {
            assert!(page.contains("Two \\fBTOML\\fR files."), "{page}");
        }
        assert!(node.contains(".SH \"MXGATE.TOML: NODE-LOCAL\"\n"), "{node}");
        assert!(!node.contains("Routing."));
        assert!(
            policy.contains(".IP \\(bu 2\n\\fBRouting.\\fR by hash"),
            "{policy}"
        );
        // A code line starting with a dot is text, not a request.
        assert!(policy.contains("\\&.starts with a dot"), "{policy}");
    }

    #[test]
    fn a_table_row_is_a_tagged_paragraph_with_its_headers() {
        let node = &pages(REFERENCE)[0].roff;
        assert!(
            node.contains(
                ".TP\n\\fB[node] name\\fR\n\\fIdefault: \\fRhost name\n.br\n\\fImeaning: \\fRunique; \\fIused\\fR in logs"
            ),
            "{node}"
        );
    }

    #[test]
    fn a_section_no_page_takes_is_an_error() {
        let markdown = format!("{REFERENCE}\n## Something new\n\ntext\n");
        let error = config_pages(&markdown, "1").err();
        assert!(
            matches!(error, Some(ManualError::UnknownSection(ref s)) if s == "Something new"),
            "{error:?}"
        );
    }
}
